"""API keys, scopes and quotas: the `security:` section of AppConfig, the key ring and the bind check.

Keys are stored as SHA-256 digests only (config, key file, memory), so a config dump or a log line never holds
one that works. A key is random and long (`python -m serving.security new`), so a plain digest is enough: there
is nothing to brute-force as there would be for a password. Without any key the API is open, and then it may
only listen on loopback: `check_bind` refuses any other address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Literal

from limits import parse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from search.configfile import load_config

log = logging.getLogger("sift.security")

Scope = Literal["search", "suggest", "summarize", "events", "admin"]
SCOPES: tuple[Scope, ...] = ("search", "suggest", "summarize", "events", "admin")
KEY_PREFIX = "sk_"
IDENTITY_SECRET_ENV = "SIFT_IDENTITY_SECRET"
IDENTITY_SECRET_NAME = ".identity-secret"
MIN_SECRET_BYTES = 16
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def hash_key(key: str) -> str:
    """The digest a key is stored and looked up by."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKey(BaseModel):
    """One key: who holds it, its digest, what it may do and on which indices."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Who holds the key (logs name it, never the key).")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 hex digest of the key (`python -m serving.security new`)."
    )
    scopes: list[Scope] = Field(
        min_length=1,
        description="What the key may call: search, suggest (and related), summarize, events, admin (everything, "
        "/metrics included). A key for a web page (the widget) gets search, suggest and events only.",
    )
    indices: list[str] | None = Field(
        default=None, description="Index names (aliases) the key may read; null: every index."
    )


class KeyFile(BaseModel):
    """A key file (`security.key_file`): the same entries as `security.keys`, kept out of the app config."""

    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(default_factory=list, description="API keys, by digest.")


class RateLimits(BaseModel):
    """Moving-window limits (the `limits` library's notation: "600/minute", "10/second;300/minute")."""

    model_config = ConfigDict(extra="forbid")

    per_key: str = Field(
        default="1200/minute",
        description="Requests per API key, all routes together. Checked after per_client, and a request refused "
        "by any limit counts against none: one address cannot spend a shared key's budget.",
    )
    per_client: str = Field(default="600/minute", description="Requests per client address, all routes together.")
    summarize: str = Field(
        default="20/minute", description="Summaries (an LM generation each) per key, on top of per_key."
    )
    per_client_summarize: str = Field(
        default="10/minute",
        description="Summaries per client address, on top of per_client, checked before the key's `summarize`: "
        "one address cannot spend a shared key's summaries.",
    )
    suggest_lm: str = Field(
        default="300/minute",
        description="Suggest and related calls per key where an LM completes them (each may start a generation), "
        "on top of per_key.",
    )
    per_client_suggest_lm: str = Field(
        default="100/minute",
        description="Suggest and related calls per client address where an LM completes them, checked before the "
        "key's `suggest_lm`: one address cannot spend a shared key's generations.",
    )

    unauthenticated: str = Field(
        default="60/minute",
        description="Requests per client address that carry no API key or an unknown one, on routes that need "
        "one: they get 401 below this and 429 (with Retry-After) beyond it, so key guessing is bounded.",
    )

    @field_validator(
        "per_key",
        "per_client",
        "summarize",
        "per_client_summarize",
        "suggest_lm",
        "per_client_suggest_lm",
        "unauthenticated",
    )
    @classmethod
    def _parses(cls, v: str) -> str:
        parse(v)  # raises ValueError on a malformed limit
        return v


class SecurityConfig(BaseModel):
    """Who may call what, how often, and how large a request body may be."""

    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(
        default_factory=list, description="API keys by SHA-256 digest; none (and no key file): open, loopback only."
    )
    key_file: Path | None = Field(default=None, description="YAML file with more keys (`keys: [...]`), read at start.")
    rate_limits: RateLimits | None = Field(
        default_factory=RateLimits,
        description="Quotas per key and per client address (429), applied where keys are configured; null disables.",
    )
    indices: list[str] | None = Field(
        default=None,
        description="The indices (aliases, with their versions) this API serves; others answer 404. null: any.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Request bodies larger than this get 413 before they are parsed."
    )
    body_read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A request body (all of it) must arrive within this many seconds of the request's headers, "
        "else 408 and the connection is closed: slow senders cannot hold connections open.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDRs of the reverse proxies / load balancers in front of the API. Only when the "
        "socket peer is one of them is the client address (per-client quotas) read from X-Forwarded-For, right to "
        "left past the trusted hops; anyone else's X-Forwarded-For is ignored (a client could name any address).",
    )
    identity_secret_file: Path | None = Field(
        default=None,
        description="File holding the secret (16+ bytes) that keys the client identities logged with searches and "
        "events (an HMAC of key name and address, so a log cannot be reversed to an address). Unset: the "
        f"`{IDENTITY_SECRET_ENV}` variable, else `<data_dir>/{IDENTITY_SECRET_NAME}`, made once (mode 0600) and "
        "shared by the replicas of one machine; replicas on several machines must share one (a mounted Secret).",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for cidr in v:
            ipaddress.ip_network(cidr, strict=False)  # raises ValueError on a malformed address
        return v


class KeyRing:
    """The configured keys by digest, read once at start (config keys plus the key file's)."""

    def __init__(self, config: SecurityConfig) -> None:
        keys = list(config.keys)
        if config.key_file is not None:
            keys += load_config(config.key_file, KeyFile).keys
        self.by_digest = {k.sha256: k for k in keys}
        if len(self.by_digest) < len(keys):
            raise ValueError("two API keys share a digest; give each holder its own key")

    @property
    def enabled(self) -> bool:
        return bool(self.by_digest)

    def lookup(self, key: str) -> ApiKey | None:
        return self.by_digest.get(hash_key(key))


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the identity secret in {path} is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def _made_secret(path: Path) -> bytes:
    """`path`'s secret, written first if there is none: a temporary file (0600) linked into place, so two
    replicas starting at once both end up with the one that got there first, never a half-written one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_bytes(32).hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another replica made it first: use that one
        finally:
            tmp.unlink(missing_ok=True)
    return _read_secret(path)


def identity_secret(config: SecurityConfig, data_dir: Path | None) -> bytes | None:
    """The key of `Principal.identity`: `security.identity_secret_file`, else `$SIFT_IDENTITY_SECRET`, else
    `<data_dir>/.identity-secret` (made once). None without any of them (a bare app: a per-process key)."""
    if config.identity_secret_file is not None:
        return _read_secret(config.identity_secret_file)
    if env := os.environ.get(IDENTITY_SECRET_ENV, "").strip():
        if len(env.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"{IDENTITY_SECRET_ENV} is shorter than {MIN_SECRET_BYTES} bytes")
        return env.encode()
    return _made_secret(data_dir / IDENTITY_SECRET_NAME) if data_dir is not None else None


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class InsecureBind(RuntimeError):
    """The server would be reachable from other machines with no API key to check."""


def check_bind(host: str, config: SecurityConfig) -> None:
    """Refuse to serve an open API beyond this machine; say so when it is open on loopback."""
    if KeyRing(config).enabled:
        return
    if not is_loopback(host):
        raise InsecureBind(
            f"refusing to listen on {host!r} without API keys: configure security.keys or security.key_file "
            "(python -m serving.security new --scopes search), or bind to 127.0.0.1"
        )
    log.warning("no API keys configured: the API is open to local clients and listens on %s only", host)


def new_key(scopes: list[Scope], name: str, indices: list[str] | None = None) -> tuple[str, ApiKey]:
    """A fresh random key and its config entry (the only time the plaintext exists)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, ApiKey(name=name, sha256=hash_key(key), scopes=scopes, indices=indices)


def main(argv: list[str]) -> int:
    """`python -m serving.security new [--scopes search,suggest] [--name NAME] [--indices a,b]`."""
    import argparse

    import yaml

    p = argparse.ArgumentParser(prog="python -m serving.security")
    p.add_argument("command", choices=["new"])
    p.add_argument("--scopes", default="search", help=f"comma-separated, of {', '.join(SCOPES)}")
    p.add_argument("--name", default="default")
    p.add_argument("--indices", default=None, help="comma-separated index names (default: all)")
    args = p.parse_args(argv)
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    indices = [i.strip() for i in args.indices.split(",")] if args.indices else None
    key, entry = new_key(scopes, args.name, indices)  # type: ignore[arg-type]  # validated by ApiKey
    print(f"key (give it to the client; it is not stored): {key}")
    print("config entry (security.keys or the key file):")
    print(yaml.safe_dump([entry.model_dump(exclude_none=True)], sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
