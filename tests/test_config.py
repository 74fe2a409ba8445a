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


def test_base_file_keys_are_merged_under_the_files_own(tmp_path):
    write_yaml(tmp_path / "base.yaml", "layout: folder\nroot: videos\nflow: {method: farneback, bound: 10}\n")
    path = write_yaml(tmp_path / "child.yaml", "base: base.yaml\nflow: {bound: 15}\nshard_size: 7\n")
    config = load_dataset_config(path)
    assert config["name"] == "child" and config["root"] == "videos" and config["shard_size"] == 7
    assert config["flow"]["method"] == "farneback" and config["flow"]["bound"] == 15
    write_yaml(tmp_path / "loop.yaml", "base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_dataset_config(tmp_path / "loop.yaml")


def test_seed_variants_of_the_demo_differ_only_in_seeds():
    demo = load_dataset_config(REPO / "config" / "datasets" / "demo.yaml")
    seeded = load_dataset_config(REPO / "config" / "datasets" / "demo_seed1.yaml")
    assert seeded["pretrain"] == {**demo["pretrain"], "seed": 1}
    assert seeded["finetune"] == {**demo["finetune"], "seed": 1}
    assert {key for key in demo if demo[key] != seeded[key]} == {"name", "root", "pretrain", "finetune"}
