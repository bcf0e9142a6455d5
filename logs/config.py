"""LogsConfig: where the query log and click log live, readable without the server's AppConfig.

The keys are the ones a server's YAML already has at its top level (`store`, `data_dir`, `elasticsearch_url`,
`query_log`, `click_log`), so one file serves both: `sift serve --config app.yaml` reads all of it, and a
training job or a notebook reads only these keys with `LogsConfig.load("app.yaml")`, never importing serving/.
A file holding only these keys works as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from logs.clicklog import ClickLogConfig
from logs.querylog import QueryLogConfig
from search.configfile import load_config


class LogsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: Literal["embedded", "es"] = Field(
        default="embedded",
        description="The deployment's index store: logs whose backend is `auto` follow it (es: Elasticsearch "
        "indices through the store's client, embedded: daily JSONL files under data_dir).",
    )
    data_dir: Path | None = Field(
        default=None, description="Data directory of the JSONL logs (default: SIFT_DATA_DIR, else .data)."
    )
    elasticsearch_url: str | None = Field(
        default=None, description="Cluster URL of Elasticsearch logs (default: ELASTICSEARCH_URL / local node)."
    )
    query_log: QueryLogConfig = Field(
        default_factory=QueryLogConfig, description="Where searches and suggestions (impressions) are logged."
    )
    click_log: ClickLogConfig = Field(
        default_factory=ClickLogConfig, description="Where POST /v1/events stores clicks, conversions and views."
    )

    @property
    def retention_days(self) -> float:
        """The shorter of the two logs' retention: an import keeps nothing older (one side would be purged)."""
        return min(self.query_log.retention_days, self.click_log.retention_days)

    @classmethod
    def load(cls, path: Path | str) -> LogsConfig:
        """Read the logs' keys from a YAML file (an app config or a logs-only file; the server's other keys are
        not read); ConfigError names the file and the field."""
        return load_config(path, cls, keys=cls.model_fields)
