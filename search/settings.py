"""Process-wide settings (environment / .env), one object for URLs, paths and secrets."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    from models.references import sift_cache_dir

    return sift_cache_dir()


class Settings(BaseSettings):
    """Read from `SIFT_*` variables (and `ELASTICSEARCH_URL`), so containers configure Sift without files."""

    model_config = SettingsConfigDict(env_prefix="SIFT_", env_file=".env", extra="ignore")

    elasticsearch_url: str | None = Field(
        default=None,
        validation_alias="ELASTICSEARCH_URL",
        description="An existing cluster; when unset, `sift es start` runs a local node.",
    )
    elasticsearch_username: str | None = Field(default=None, description="Basic-auth user, if any.")
    elasticsearch_password: SecretStr | None = Field(default=None, description="Basic-auth password.")
    elasticsearch_api_key: SecretStr | None = Field(default=None, description="API key, if any.")
    elasticsearch_ca_certs: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("SIFT_ELASTICSEARCH_CA_CERTS", "ELASTICSEARCH_CA_CERTS"),
        description="PEM file of the CA that signed the cluster's HTTP certificate (ECK: the `ca.crt` of "
        "`<name>-es-http-certs-public`), for https URLs with a private CA; unset: the system's CAs.",
    )
    es_port: int = Field(default=9200, description="HTTP port of the local development node.")
    es_heap: str = Field(default="512m", description="JVM heap of the local node (-Xms/-Xmx).")
    data_dir: Path = Field(default=Path(".data"), description="Embedded store data and dead-letter files.")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Models, ES distribution, embedding cache.")
    device: str | None = Field(default=None, description="Force a torch device (cpu, cuda, cuda:1, mps).")
    registry_dir: Path | None = Field(
        default=None, description="Model registry root (models.registry); default: <data_dir>/registry."
    )

    def registry_root(self) -> Path:
        return self.registry_dir or self.data_dir / "registry"

    def es_url(self) -> str:
        return self.elasticsearch_url or f"http://127.0.0.1:{self.es_port}"
