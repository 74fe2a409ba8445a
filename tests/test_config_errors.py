"""Config errors stop the workflow before any job runs, naming the file and the key (or line).

Each test plans (or, for the manifest, runs) the real Snakefile on a small config."""
import pytest
import yaml

from tests.conftest import run_snakemake, workflow_config, write_yaml

def demo(**keys) -> str:
    """A demo dataset config that plans quickly (2 classes of 4 videos), with ``keys`` set."""
    config = {"layout": "demo", "root": "results/tiny/videos", "demo": {"num_classes": 2, "videos_per_class": 4},
              "pretrain": {"batch_size": 2, "gpus": 0}, "finetune": {"batch_size": 2, "gpus": 0}}
    for key, value in keys.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    return yaml.safe_dump(config, sort_keys=False)


def plan_fails(workdir, target: str, dataset: str, *, expected: str) -> str:
    """Write ``dataset`` as tiny.yaml, dry-run ``target``, and check that planning fails
    with ``expected`` in the output and that nothing was made."""
    write_yaml(workdir / "tiny.yaml", dataset)
    config = workflow_config(workdir, {"tiny": "tiny.yaml"}, ["tiny"])
    result = run_snakemake(workdir, target, "--configfile", str(config), "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert expected in output, output
    assert not (workdir / "results").exists()
    return output


def test_yaml_error_in_a_dataset_file_names_file_and_line(tmp_path):
    plan_fails(tmp_path, "results/tiny/manifest.tsv", demo() + "shard_size: 3: 4\n",
               expected="tiny.yaml, line 12, column 14: invalid YAML: mapping values are not allowed here")


def test_yaml_error_in_config_yaml_names_file_and_line(tmp_path):
    write_yaml(tmp_path / "config" / "config.yaml", "datasets:\n  tiny: tiny.yaml\n targets: [tiny]\n")
    result = run_snakemake(tmp_path, "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "config/config.yaml, line 3, column 2: invalid YAML" in output, output


def test_prediction_steps_beyond_the_blocks_fail_planning(tmp_path):
    plan_fails(tmp_path, "results/tiny/split1/pretrain/cpc/rgb.pt",
               demo(pretrain={"num_blocks": 3, "pred_steps": 3}),
               expected="tiny.yaml: pretrain.pred_steps: 3 must be less than pretrain.num_blocks (3)")


@pytest.mark.parametrize("key", ["root", "splits"])
def test_a_folder_that_does_not_exist_is_named_with_file_and_key(tmp_path, ucf_splits, key):
    folders = {"root": tmp_path, "splits": ucf_splits, key: tmp_path / "nowhere"}
    plan_fails(tmp_path, "results/tiny/manifest.tsv",
               f"layout: ucf101\nroot: {folders['root']}\nsplits: {folders['splits']}\nclasses: [PushUps]\n",
               expected=f"The dataset 'tiny' is not where tiny.yaml says:\n  {key}: {tmp_path / 'nowhere'}   <- ")


def test_a_stray_views_key_in_config_yaml_names_config_yaml(tmp_path):
    write_yaml(tmp_path / "tiny.yaml", demo())
    config = write_yaml(tmp_path / "config.yaml", "datasets: {tiny: tiny.yaml}\nviews: [rgb, flow]\n")
    result = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{config}: views: each dataset file sets its own views now" in output, output
    # any other key the schema refuses is named with the file too
    write_yaml(config, "datasets: {tiny: tiny.yaml}\nthreds: {flow: 2}\n")
    result = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{config}: invalid config\n  (top level): Additional properties are not allowed ('threds'" in output, output


def test_an_unknown_view_in_a_dataset_file_names_file_and_key(tmp_path):
    plan_fails(tmp_path, "results/tiny/manifest.tsv", demo(views=["rgb", "depth"]),
               expected="tiny.yaml: invalid config\n  views.1: 'depth' is not one of")


def test_classes_too_small_for_a_test_video_fail_before_finetuning(tmp_path):
    # 4 videos per class: split 1 tests the 4th of each under test_fraction 0.2 (every 5th)
    plan_fails(tmp_path, "results/tiny/finetune.json", demo(test_fraction=0.2),
               expected="tiny.yaml: test_fraction: 0.2 holds out video 5 (in name order) of each class in split 1")


def test_a_crop_larger_than_the_stored_frames_fails_before_pretraining(tmp_path):
    plan_fails(tmp_path, "results/tiny/split1/pretrain/cpc/rgb.pt", demo(frames={"short_side": 48}),
               expected="tiny.yaml: pretrain.input_size.rgb: 128 px is larger than the 48 px")


def test_a_batch_larger_than_the_train_videos_fails_before_pretraining(tmp_path):
    plan_fails(tmp_path, "results/tiny/split1/pretrain/cpc/flow.pt",
               demo(pretrain={"batch_size": 16}),
               expected="tiny.yaml: pretrain.batch_size: one batch of 16 needs more train videos than the 6")


def test_a_wrong_root_fails_the_manifest_naming_root_and_counts(tmp_path, ucf_splits, videos_dir):
    """Valid split files, but a root one level above the class folders: the manifest job
    fails, and nothing after it runs."""
    write_yaml(tmp_path / "ucf.yaml", f"""
        layout: ucf101
        root: {videos_dir}
        splits: {ucf_splits}
        classes: [PushUps, Shotput]
    """)
    config = workflow_config(tmp_path, {"ucf": "ucf.yaml"}, ["ucf"])
    result = run_snakemake(tmp_path, "results/ucf/views.tsv", "--configfile", str(config), check=False)
    assert result.returncode != 0
    log = (tmp_path / "results" / "ucf" / "logs" / "manifest.log").read_text()
    assert f"root: {videos_dir}: 0 of the " in log and "listed videos are usable (0%)" in log, log
    assert not (tmp_path / "results" / "ucf" / "manifest.tsv").exists()
    assert not (tmp_path / "results" / "ucf" / "views").exists()
