"""The example configs in configs/ load with the models they are for, and the CPU pair agrees on its encoder
(an index must be queried with the encoder it was built with)."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexing.pipeline import IndexingConfig
from search.configfile import ConfigError, load_config
from serving.config import AppConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_validates(path: Path) -> None:
    if path.stem.endswith("-indexing"):
        assert isinstance(load_config(path, IndexingConfig), IndexingConfig)
    else:
        assert isinstance(AppConfig.load(path), AppConfig)


def test_the_cpu_serving_config_queries_with_the_encoder_its_index_is_built_with() -> None:
    served = AppConfig.load(CONFIGS / "cpu.yaml")
    built = load_config(CONFIGS / "cpu-indexing.yaml", IndexingConfig)
    assert served.embedder == built.embedder
    assert served.embedder.encoder_tag == "onnx-int8" and served.encoder_placement == "ingress"


def test_a_misspelt_key_in_a_config_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "cpu.yaml"
    bad.write_text((CONFIGS / "cpu.yaml").read_text().replace("encoder_placement:", "encoder_placment:"))
    with pytest.raises(ConfigError, match="encoder_placment"):
        AppConfig.load(bad)
