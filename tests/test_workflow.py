"""End-to-end: the real Snakemake DAG on tiny configs (the demo generator and real clips)."""
import contextlib
import json
import re
import subprocess

import jsonschema

import numpy as np
import pytest

from cocon.config import load_schema
from cocon.data.manifest import read_manifest
from cocon.data.shards import ShardReader
from cocon.train.pretrain import load_pretrained
from tests.conftest import REPO, SNAKEMAKE, run_snakemake, workflow_config, write_yaml

pytestmark = pytest.mark.e2e

# a narrow encoder on small clips: seconds per epoch on 2 CPU cores
TINY_PRETRAIN = ("{width: 0.125, num_blocks: 4, pred_steps: 1, block_length: 2, frame_stride: 2, "
                 "input_size: {rgb: 32, flow: 32, pose: 16, seg: 16}, batch_size: 2, workers: 0, gpus: 0, "
                 "cpc_epochs: 2, cocon_epochs: 1}")
VIEWS = ("rgb", "flow", "pose", "seg")


@contextlib.contextmanager
def edited(path, old: str, new: str):
    """``path`` with ``old`` replaced by ``new`` for the duration of the block."""
    original = path.read_text()
    assert old in original
    path.write_text(original.replace(old, new))
    try:
        yield
    finally:
        path.write_text(original)


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    write_yaml(workdir / "tiny.yaml", """
        layout: demo
        root: results/tiny/videos
        test_fraction: 0.34
        shard_size: 4
        strict: true
        demo: {num_classes: 3, videos_per_class: 3, num_frames: 12, width: 128, height: 96}
        frames: {short_side: 96}
        flow: {method: farneback}
        pose: {short_side: 24, sigma: 1.0}
        seg: {short_side: 24}
        pretrain: TINY_PRETRAIN
        finetune: {epochs: 1, milestones: [1], batch_size: 2, workers: 0, gpus: 0, val_fraction: 0.34}
    """.replace("TINY_PRETRAIN", TINY_PRETRAIN))
    config = workflow_config(workdir, {"tiny": "tiny.yaml"}, ["tiny"])
    run_snakemake(workdir, "results/tiny/views.tsv", "--configfile", str(config))
    return workdir, config


def test_demo_pipeline_builds_every_shard(demo_run):
    workdir, _ = demo_run
    results = workdir / "results" / "tiny"
    rows = read_manifest(results / "manifest.tsv")
    assert len(rows) == 9 and all(row.ok for row in rows)
    assert read_manifest(results / "excluded.tsv") == []
    index = (results / "views.tsv").read_text().splitlines()
    assert len(index) == 1 + 4 * 3  # header, 3 shards of 4 + 4 + 1 videos, 4 views
    found, coverage = [], []
    for shard in ("00000", "00001", "00002"):
        views = {view: ShardReader(results / "views" / view / f"{shard}.h5", view=view)
                 for view in ("rgb", "flow", "pose", "seg")}
        try:
            for reader in views.values():
                assert reader.video_ids == views["rgb"].video_ids
            for video in views["rgb"].video_ids:
                assert views["rgb"].read(video).shape == (12, 96, 128, 3)
                flow = views["flow"].read(video)
                assert flow.shape == (11, 96, 128, 2)
                # the demo's motion shows in the flow: not all zero-motion (128)
                assert np.abs(flow.astype(int) - 128).mean() > 0.5
                pose = views["pose"].read(video)
                assert pose.shape == (12, 17, 24, 32)
                found.append((pose.reshape(12, -1).max(axis=1) >= 128).mean())
                seg = views["seg"].read(video)
                assert seg.shape == (12, 24, 32)
                coverage.append((seg >= 128).mean())
        finally:
            for reader in views.values():
                reader.close()
    # the demo's person is found by the real pose and segmentation models
    assert np.mean(found) >= 0.8
    assert 0.1 < np.mean(coverage) < 0.9
    for log in ("demo.log", "manifest.log", "views.log", "frames/00000.log", "flow/00002.log"):
        assert (results / "logs" / log).is_file()
    assert (results / "benchmarks" / "flow" / "00000.tsv").is_file()


def test_forcerun_flow_recomputes_flow_and_nothing_upstream(demo_run):
    workdir, config = demo_run
    plan = run_snakemake(workdir, "results/tiny/views.tsv", "--configfile", str(config), "-n", "--forcerun", "flow")
    assert planned_jobs(plan.stdout) == {"flow": 3, "views": 1, "total": 4}
    rgb = workdir / "results" / "tiny" / "views" / "rgb" / "00000.h5"
    flow = workdir / "results" / "tiny" / "views" / "flow" / "00000.h5"
    rgb_time, flow_time = rgb.stat().st_mtime_ns, flow.stat().st_mtime_ns
    run_snakemake(workdir, "results/tiny/views.tsv", "--configfile", str(config), "--forcerun", "flow")
    assert rgb.stat().st_mtime_ns == rgb_time
    assert flow.stat().st_mtime_ns > flow_time


def test_forcerun_pose_recomputes_pose_only(demo_run):
    workdir, config = demo_run
    plan = run_snakemake(workdir, "results/tiny/views.tsv", "--configfile", str(config), "-n", "--forcerun", "pose")
    assert planned_jobs(plan.stdout) == {"pose": 3, "views": 1, "total": 4}


def test_demo_pretraining_cpc_per_view_then_cocon(demo_run):
    workdir, config = demo_run
    targets = [f"results/tiny/pretrain/cocon/{view}.pt" for view in VIEWS]
    plan = run_snakemake(workdir, *targets, "--configfile", str(config), "-n")
    assert planned_jobs(plan.stdout) == {"pretrain_cpc": 4, "pretrain_cocon": 1, "total": 5}
    run_snakemake(workdir, *targets, "--configfile", str(config))
    pretrain = workdir / "results" / "tiny" / "pretrain"
    for view in VIEWS:
        model, state = load_pretrained(pretrain / "cocon" / f"{view}.pt")
        assert state["views"] == list(VIEWS) and state["model_config"]["input_size"] in (16, 32)
        assert load_pretrained(pretrain / "cpc" / f"{view}.pt")[1]["epoch"] == 1
    assert (pretrain / "cocon" / "joint.state" / "metrics.csv").is_file()
    log = (workdir / "results" / "tiny" / "logs" / "pretrain" / "cocon" / "joint.log").read_text()
    assert "initialised from results/tiny/pretrain/cpc/pose.pt" in log
    plan = run_snakemake(workdir, *targets, "--configfile", str(config), "-n", "--forcerun", "pretrain_cocon")
    assert planned_jobs(plan.stdout) == {"pretrain_cocon": 1, "total": 1}


def test_demo_to_finetune_json(demo_run):
    workdir, config = demo_run
    run_snakemake(workdir, "results/tiny/finetune.json", "--configfile", str(config))
    results = workdir / "results" / "tiny"
    document = json.loads((results / "finetune.json").read_text())
    jsonschema.validate(document, load_schema("finetune.schema.json"))
    rows = {(row["method"], row["view"]): row for row in document["results"]}
    assert set(rows) == {(init, view) for init in ("random", "cpc", "cocon") for view in (*VIEWS, "ensemble")}
    assert rows[("cocon", "rgb")]["checkpoint"] == "results/tiny/pretrain/cocon/rgb.pt"
    assert rows[("random", "flow")]["checkpoint"] is None
    assert all(row["num_test_videos"] == 3 for row in document["results"])
    table = (results / "finetune.md").read_text()
    assert "| Random |" in table and "| CoCon |" in table and "71.0" in table
    details = json.loads((results / "finetune_details.json").read_text())
    assert len(details["cocon/ensemble"]["confusion"]) == 3


def test_changing_a_finetune_setting_reruns_finetuning_only(demo_run):
    workdir, config = demo_run
    # built already when the test before this one ran; alone, this builds it
    run_snakemake(workdir, "results/tiny/finetune.json", "--configfile", str(config))
    with edited(workdir / "tiny.yaml", "finetune: {epochs: 1,", "finetune: {epochs: 1, lr: 0.01,"):
        plan = run_snakemake(workdir, "results/tiny/finetune.json", "--configfile", str(config), "-n")
        assert planned_jobs(plan.stdout) == {"finetune": 12, "finetune_report": 1, "total": 13}
    plan = run_snakemake(workdir, "results/tiny/finetune.json", "--configfile", str(config), "-n",
                         "--forcerun", "pretrain_cocon")
    assert planned_jobs(plan.stdout) == {"pretrain_cocon": 1, "finetune": 4, "finetune_report": 1, "total": 6}


def test_changing_a_flow_setting_reruns_flow_only(demo_run):
    workdir, config = demo_run
    with edited(workdir / "tiny.yaml", "method: farneback", "method: farneback, bound: 10"):
        plan = run_snakemake(workdir, "results/tiny/views.tsv", "--configfile", str(config), "-n")
        assert planned_jobs(plan.stdout) == {"flow": 3, "views": 1, "total": 4}


def test_real_clips_in_official_layouts(tmp_path, ucf_splits, hmdb_splits, videos_dir):
    write_yaml(tmp_path / "ucf.yaml", f"""
        layout: ucf101
        root: {videos_dir / 'ucf101'}
        splits: {ucf_splits}
        classes: [PushUps, Shotput, HeadMassage, PlayingGuitar, ApplyEyeMakeup]
        split: 3
        shard_size: 1000
        frames: {{short_side: 48}}
        flow: {{method: tvl1, tvl1: {{warps: 2, nscales: 3}}}}
        pretrain: {TINY_PRETRAIN}
        finetune: {{epochs: 1, milestones: [1], batch_size: 2, workers: 0, gpus: 0}}
    """)
    write_yaml(tmp_path / "hmdb.yaml", f"""
        layout: hmdb51
        root: {videos_dir / 'hmdb51_reencoded'}
        splits: {hmdb_splits}
        classes: [handstand, swing_baseball, jump]
        shard_size: 1000
        frames: {{short_side: 48}}
        flow: {{method: farneback}}
    """)
    config = workflow_config(tmp_path, {"ucf": "ucf.yaml", "hmdb": "hmdb.yaml"}, ["ucf", "hmdb"])
    run_snakemake(tmp_path, "results/hmdb/views.tsv", "results/ucf/finetune.json", "--configfile", str(config))
    _, state = load_pretrained(tmp_path / "results" / "ucf" / "pretrain" / "cocon" / "rgb.pt")
    assert state["dataset"] == "ucf" and len(state["history"]) == 1
    # split 3: PlayingGuitar is the test video, the other four train (one of them validates)
    document = json.loads((tmp_path / "results" / "ucf" / "finetune.json").read_text())
    # labels keep their official numbers (Shotput is 78), so the classifier has 79 outputs
    assert document["split"] == 3 and document["num_classes"] == 79
    assert {row["num_test_videos"] for row in document["results"]} == {1}
    ucf_usable = {"v_PushUps_g02_c03", "v_Shotput_g05_c02", "v_HeadMassage_g02_c05", "v_PlayingGuitar_g16_c02",
                  "v_ApplyEyeMakeup_g01_c01"}
    for name, expected in (("ucf", ucf_usable), ("hmdb", None)):
        rows = read_manifest(tmp_path / "results" / name / "manifest.tsv")
        usable = {row.video_id for row in rows if row.ok}
        if expected is not None:
            assert usable == expected
        else:
            assert len(usable) == 3
        # every other listed video is missing on disk, and reported as such
        excluded = read_manifest(tmp_path / "results" / name / "excluded.tsv")
        assert len(excluded) == len(rows) - len(usable)
        assert {row.status for row in excluded} == {"missing: file not found on disk"}
        with ShardReader(tmp_path / "results" / name / "views" / "flow" / "00000.h5") as flow, \
                ShardReader(tmp_path / "results" / name / "views" / "rgb" / "00000.h5") as rgb:
            assert set(flow.video_ids) == usable
            for video in usable:
                assert flow.num_frames(video) == rgb.num_frames(video) - 1
                assert rgb.read(video, 0, 1).shape[1] == 48


def test_missing_mm_backend_fails_before_any_job(tmp_path):
    write_yaml(tmp_path / "mm.yaml", """
        layout: demo
        root: results/mm/videos
        pose: {backend: mmpose}
    """)
    config = workflow_config(tmp_path, {"mm": "mm.yaml"}, ["mm"])
    result = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    assert result.returncode != 0
    assert "mm.yaml: pose.backend: mmpose is selected" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_lint_is_clean():
    result = subprocess.run([str(SNAKEMAKE), "--lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_ucf101_scale_dry_run_plans_under_1000_jobs(tmp_path, ucf_splits):
    """Planning needs only the split files: no video is opened, none needs to exist."""
    write_yaml(tmp_path / "ucf101.yaml", f"""
        layout: ucf101
        root: {tmp_path / 'UCF-101'}
        splits: {ucf_splits}
    """)
    config = workflow_config(tmp_path, {"ucf101": "ucf101.yaml"}, ["ucf101"])
    plan = run_snakemake(tmp_path, "results/ucf101/finetune.json", "--configfile", str(config), "-n")
    jobs = planned_jobs(plan.stdout)
    assert jobs["frames"] == jobs["flow"] == jobs["pose"] == jobs["seg"] == 134  # 13,320 videos in shards of 100
    assert jobs["pretrain_cpc"] == 4 and jobs["pretrain_cocon"] == 1
    assert jobs["finetune"] == 12 and jobs["finetune_report"] == 1
    assert jobs["total"] <= 1000


def test_cross_dataset_finetuning_uses_the_other_datasets_encoders(tmp_path, ucf_splits, hmdb_splits):
    """The paper's Table 2 as one config key: fine-tune on one dataset what another pretrained."""
    write_yaml(tmp_path / "ucf101.yaml", f"""
        layout: ucf101
        root: {tmp_path / 'UCF-101'}
        splits: {ucf_splits}
        finetune: {{pretrained_on: hmdb51}}
    """)
    write_yaml(tmp_path / "hmdb51.yaml", f"""
        layout: hmdb51
        root: {tmp_path / 'hmdb51'}
        splits: {hmdb_splits}
    """)
    config = workflow_config(tmp_path, {"ucf101": "ucf101.yaml", "hmdb51": "hmdb51.yaml"}, ["ucf101"])
    plan = run_snakemake(tmp_path, "results/ucf101/finetune.json", "--configfile", str(config), "-n")
    assert "results/hmdb51/pretrain/cocon/rgb.pt" in plan.stdout
    assert "results/ucf101/pretrain/" not in plan.stdout
    assert planned_jobs(plan.stdout)["pretrain_cocon"] == 1
