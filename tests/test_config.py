import pytest

from cocon.config import ConfigError, load_dataset_config
from tests.conftest import REPO, write_yaml


@pytest.mark.parametrize("name", ["demo", "ucf101", "hmdb51", "kinetics400"])
def test_shipped_dataset_configs_validate(name):
    config = load_dataset_config(REPO / "config" / "datasets" / f"{name}.yaml")
    assert config["name"] == name
    assert config["frames"]["short_side"] >= 16
    assert config["flow"]["bound"] == 20


def test_defaults_are_filled(tmp_path):
    path = write_yaml(tmp_path / "mine.yaml", "layout: folder\nroot: videos\n")
    config = load_dataset_config(path)
    assert config["shard_size"] == 100
    assert config["flow"]["method"] == "tvl1"
    assert config["flow"]["tvl1"]["warps"] == 5
    assert config["strict"] is False


def test_bad_key_is_named_with_the_file(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "layout: folder\nroot: videos\nflow: {method: magic}\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*flow\.method"):
        load_dataset_config(path)


def test_missing_required_key(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "layout: ucf101\nroot: videos\n")
    with pytest.raises(ConfigError, match="'splits' is a required property"):
        load_dataset_config(path)
