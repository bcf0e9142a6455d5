"""Client identities a log cannot reverse (an HMAC under a per-deployment secret, made once in the data dir), and
client addresses a host cannot multiply (IPv6 by its /64, IPv4-mapped IPv6 as IPv4)."""

from __future__ import annotations

import hashlib
import ipaddress
import stat
from pathlib import Path

import pytest

from serving.auth import Guard, Principal, client_address
from serving.security import IDENTITY_SECRET_ENV, IDENTITY_SECRET_NAME, SecurityConfig, identity_secret


def _identity(secret: bytes | None, name: str = "web", client: str = "198.51.100.7") -> str:
    if secret is None:
        return Principal(name, frozenset({"search"}), None, None, client).identity
    return Principal(name, frozenset({"search"}), None, None, client, secret).identity


def test_identity_is_an_hmac_not_a_plain_digest() -> None:
    secret = b"s" * 32
    plain = "c-" + hashlib.sha256(b"web|198.51.100.7").hexdigest()[:16]
    assert _identity(secret) != plain  # the old, reversible form (key names are in the config, IPv4 is 2^32)
    assert _identity(secret) == _identity(secret)  # stable for the same key and address
    assert _identity(secret) != _identity(b"t" * 32)  # another deployment's secret: another identity
    assert _identity(secret) != _identity(secret, client="198.51.100.8")
    assert _identity(secret) != _identity(secret, name="other")
    # no secret (a Principal built directly): a per-process key, still stable and still not the plain digest
    assert _identity(None) == _identity(None) != plain


def test_the_secret_is_made_once_in_the_data_dir_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IDENTITY_SECRET_ENV, raising=False)
    first = identity_secret(SecurityConfig(), tmp_path / "data")
    path = tmp_path / "data" / IDENTITY_SECRET_NAME
    assert first is not None and len(first) >= 32 and path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert identity_secret(SecurityConfig(), tmp_path / "data") == first  # a second replica on this machine
    assert [p.name for p in path.parent.iterdir()] == [IDENTITY_SECRET_NAME]  # no temporary file left
    other = identity_secret(SecurityConfig(), tmp_path / "elsewhere")
    assert other is not None and other != first  # random per deployment
    # a configured file wins, then the environment; a short secret is refused at start
    given = tmp_path / "given"
    given.write_text("g" * 40 + "\n")
    assert identity_secret(SecurityConfig(identity_secret_file=given), tmp_path / "data") == b"g" * 40
    monkeypatch.setenv(IDENTITY_SECRET_ENV, "e" * 20)
    assert identity_secret(SecurityConfig(), tmp_path / "data") == b"e" * 20
    monkeypatch.setenv(IDENTITY_SECRET_ENV, "short")
    with pytest.raises(ValueError, match="shorter"):
        identity_secret(SecurityConfig(), tmp_path / "data")
    monkeypatch.delenv(IDENTITY_SECRET_ENV)
    given.write_text("short")
    with pytest.raises(ValueError, match="shorter"):
        identity_secret(SecurityConfig(identity_secret_file=given), None)
    assert identity_secret(SecurityConfig(), None) is None  # no data dir: the caller keeps a per-process key


def test_the_guard_keys_identities_with_its_secret() -> None:
    open_config = SecurityConfig()
    a = Guard(open_config, b"a" * 32).authenticate(None, "search", "198.51.100.7")
    b = Guard(open_config, b"b" * 32).authenticate(None, "search", "198.51.100.7")
    again = Guard(open_config, b"a" * 32).authenticate(None, "search", "198.51.100.7")
    assert a.identity == again.identity != b.identity


def test_an_ipv6_host_counts_as_its_64() -> None:
    assert client_address("2001:db8:1:2:aaaa::1", [], []) == "2001:db8:1:2::/64"
    assert client_address("2001:db8:1:2:ffff:ffff:ffff:fffe", [], []) == "2001:db8:1:2::/64"  # same host
    assert client_address("2001:db8:1:3::1", [], []) == "2001:db8:1:3::/64"  # another /64: another client
    assert client_address("fe80::1%eth0", [], []) == "fe80::/64"
    # IPv4-mapped IPv6 (a dual-stack socket) is the IPv4 address, for quotas and for the trusted-proxy check
    assert client_address("::ffff:203.0.113.9", [], []) == "203.0.113.9"
    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address("::ffff:10.1.2.3", ["2001:db8:9:9::42"], trusted) == "2001:db8:9:9::/64"
    assert client_address("10.1.2.3", ["::ffff:198.51.100.7"], trusted) == "198.51.100.7"
    assert client_address("testclient", [], []) == "testclient"  # not an address: as it is
    # so the identity (and every per-client quota) of a host is one, whichever of its addresses it uses
    ids = {Principal("web", frozenset(), None, None, client_address(f"2001:db8::{i:x}", [], [])).identity
           for i in range(1, 50)}  # fmt: skip
    assert len(ids) == 1
