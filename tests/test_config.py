import pytest

from cocon.config import ConfigError, check_seeds_of, check_training_inputs, check_views_from, load_dataset_config
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
    assert {key for key in demo if demo[key] != seeded[key]} == {"name", "views_from", "pretrain", "finetune"}
    assert check_views_from("demo_seed1", {"demo": demo, "demo_seed1": seeded}) is None


def test_views_from_must_name_a_dataset_with_the_same_views():
    demo = load_dataset_config(REPO / "config" / "datasets" / "demo.yaml")
    seeded = {**demo, "name": "seeded", "views_from": "demo"}
    assert check_views_from("seeded", {"seeded": seeded}).startswith("views_from: 'demo' is not one of the datasets")
    other_frames = {**seeded, "frames": {**demo["frames"], "short_side": 64}}
    assert "frames differ from demo's" in check_views_from("seeded", {"demo": demo, "seeded": other_frames})
    fewer = {**demo, "views": ["rgb", "flow"]}
    assert "does not extract pose, seg" in check_views_from("seeded", {"demo": fewer, "seeded": {**seeded, "views": demo["views"]}})
    chained = {**seeded, "name": "chained", "views_from": "seeded"}
    assert "name that one" in check_views_from("chained", {"demo": demo, "seeded": seeded, "chained": chained})


def test_the_evidence_summaries_group_their_seeds_by_seeds_of():
    datasets = {name: load_dataset_config(REPO / "config" / "datasets" / f"{name}.yaml", name)
                for name in ("evidence", *(f"evidence_seed{seed}" for seed in range(1, 6)))}
    assert all(check_seeds_of(name, datasets) is None for name in datasets)
    summaries = {name: [other for other, dataset in datasets.items() if dataset["seeds_of"] == name] for name in datasets}
    # make evidence's seeds 0-2 and make evidence-confirm's 3-5: never one summary of six
    assert summaries["evidence"] == ["evidence_seed1", "evidence_seed2"]
    assert summaries["evidence_seed3"] == ["evidence_seed4", "evidence_seed5"]


def test_seeds_of_must_name_a_summary_on_the_same_views_with_other_seeds_only():
    evidence = load_dataset_config(REPO / "config" / "datasets" / "evidence.yaml")
    seed = load_dataset_config(REPO / "config" / "datasets" / "evidence_seed1.yaml", "evidence_seed1")
    assert "is not one of the other datasets" in check_seeds_of("evidence_seed1", {"evidence_seed1": seed})
    assert "is not one of the other datasets" in check_seeds_of("self", {"self": {**seed, "seeds_of": "self"}})
    chained = {**seed, "name": "chained", "seeds_of": "evidence_seed1"}
    assert "name that one" in check_seeds_of("chained", {"evidence": evidence, "evidence_seed1": seed, "chained": chained})
    own_views = {**seed, "views_from": None}
    assert "the seeds of a summary train on the same views" in check_seeds_of(
        "evidence_seed1", {"evidence": evidence, "evidence_seed1": own_views})
    longer = {**seed, "pretrain": {**seed["pretrain"], "cpc_epochs": 10}}
    assert "pretrain: cpc_epochs differ from evidence's" in check_seeds_of(
        "evidence_seed1", {"evidence": evidence, "evidence_seed1": longer})


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = write_yaml(tmp_path / "broken.yaml", "layout: folder\nroot: videos\n  shard_size: 3\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml, line 3, column \d+: invalid YAML: mapping values"):
        load_dataset_config(path)
    # in a base file, the base file is named
    write_yaml(tmp_path / "child.yaml", "base: broken.yaml\nshard_size: 4\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml, line 3"):
        load_dataset_config(tmp_path / "child.yaml")


def test_prediction_steps_must_leave_blocks_to_predict_from(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "layout: folder\nroot: videos\npretrain: {num_blocks: 3, pred_steps: 3}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: pretrain\.pred_steps: 3 must be less than "
                                          r"pretrain\.num_blocks \(3\)"):
        load_dataset_config(path)


def test_ensemble_weights_of_every_view_zero_is_refused(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "layout: folder\nroot: videos\nviews: [pose, seg]\n"
                                             "finetune: {ensemble_weights: {pose: 0, seg: 0}}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: finetune\.ensemble_weights: every view"):
        load_dataset_config(path)


def test_finetune_batch_needs_two_clips_for_batchnorm(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "layout: folder\nroot: videos\nfinetune: {batch_size: 1}\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*finetune\.batch_size: 1 is less than the minimum of 2"):
        load_dataset_config(path)


def test_unknown_view_is_named_with_the_file(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "layout: folder\nroot: videos\nviews: [rgb, depth]\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml: invalid config.*views\.1: 'depth' is not one of"):
        load_dataset_config(path)


def test_min_usable_fraction_defaults_to_half(tmp_path):
    assert load_dataset_config(write_yaml(tmp_path / "mine.yaml", "layout: folder\nroot: videos\n"))[
        "min_usable_fraction"] == 0.5


def test_crop_larger_than_the_stored_frames_is_refused_for_training(tmp_path):
    path = write_yaml(tmp_path / "small.yaml", "layout: folder\nroot: videos\nframes: {short_side: 64}\n"
                                               "pose: {short_side: 32}\n")
    config = load_dataset_config(path)  # storing small frames alone is fine
    with pytest.raises(ConfigError) as error:
        check_training_inputs(config, ["rgb", "flow", "pose", "seg"], str(path))
    lines = str(error.value).splitlines()
    assert [line.split(" px")[0] for line in lines] == [
        f"{path}: pretrain.input_size.rgb: 128", f"{path}: pretrain.input_size.flow: 128",
        f"{path}: pretrain.input_size.pose: 64"]
    assert lines[0].endswith("larger than the 64 px short side rgb is stored at (frames.short_side), so every clip "
                             "would be upsampled; lower pretrain.input_size.rgb or raise frames.short_side")
    assert "(frames.short_side)" in lines[1] and "(pose.short_side)" in lines[2]
    check_training_inputs(config, ["seg"], str(path))
