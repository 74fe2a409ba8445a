"""The mission's command on a fresh clone: one paragraph saying what to set, no traceback, no job."""
import os
import subprocess

import pytest

from tests.conftest import REPO, SNAKEMAKE, workflow_config, write_yaml

MISSION = ["--cores", "4", "--use-conda", "results/ucf101/finetune.json"]


def snakemake_in_repo(*args, env=None):
    """The repository's own config, as a fresh clone has it (placeholder dataset paths)."""
    return subprocess.run([str(SNAKEMAKE), *args], cwd=REPO, capture_output=True, text=True, env=env)


def assert_guidance_only(result):
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output and "Exception" not in output and "Building DAG" not in output
    return output


def test_placeholder_paths_get_one_paragraph_and_no_job():
    result = snakemake_in_repo(*MISSION)
    output = assert_guidance_only(result)
    assert "The dataset 'ucf101' is not where config/datasets/ucf101.yaml says:" in output
    assert "root: /path/to/UCF-101" in output and "splits: /path/to/ucfTrainTestlist" in output
    assert "--config 'datasets={ucf101: my_ucf101.yaml}'" in output
    assert "base: config/datasets/ucf101.yaml" in output
    assert not (REPO / "results" / "ucf101").exists()


def test_paper_target_names_every_dataset_it_needs(tmp_path, ucf_splits):
    """paper.md needs HMDB51 too: with UCF101 in place, the paragraph is about HMDB51."""
    (tmp_path / "UCF-101").mkdir()
    own = write_yaml(tmp_path / "my_ucf101.yaml", f"""
        base: {REPO / 'config' / 'datasets' / 'ucf101.yaml'}
        root: {tmp_path / 'UCF-101'}
        splits: {ucf_splits}
    """)
    result = snakemake_in_repo("--cores", "1", "results/ucf101/paper.md", "--config", f"datasets={{ucf101: {own}}}")
    output = assert_guidance_only(result)
    assert "The dataset 'hmdb51' is not where config/datasets/hmdb51.yaml says:" in output


@pytest.mark.parametrize("missing", ["root", "splits"])
def test_a_missing_root_or_split_folder_is_named(tmp_path, ucf_splits, missing):
    paths = {"root": tmp_path / "UCF-101", "splits": ucf_splits}
    paths["root"].mkdir()
    paths[missing] = tmp_path / "nowhere"
    own = write_yaml(tmp_path / "mine.yaml", f"""
        base: {REPO / 'config' / 'datasets' / 'ucf101.yaml'}
        root: {paths['root']}
        splits: {paths['splits']}
    """)
    result = snakemake_in_repo(*MISSION, "--config", f"datasets={{ucf101: {own}}}")
    output = assert_guidance_only(result)
    assert f"The dataset 'ucf101' is not where {own} says:" in output
    assert f"  {missing}: {tmp_path / 'nowhere'}" in output
    other = {"root": "splits", "splits": "root"}[missing]
    assert f"  {other}:" not in output


def test_use_conda_without_conda_says_what_to_do(tmp_path):
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    assert subprocess.run(["sh", "-c", "command -v conda"], env=env, capture_output=True).returncode != 0, \
        "this test needs a machine without conda on /usr/bin:/bin"
    config = workflow_config(tmp_path, {"demo": str(REPO / "config" / "datasets" / "demo.yaml")}, ["demo"])
    result = subprocess.run([str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                             "--cores", "1", "--use-conda", "results/demo/videos", "--configfile", str(config)],
                            capture_output=True, text=True, env=env)
    output = assert_guidance_only(result)
    assert "--use-conda: conda is not on PATH. Install conda (24.7.1 or later), or drop --use-conda" in output
    assert not (tmp_path / "results").exists()
