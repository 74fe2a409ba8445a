"""End-to-end: the real Snakemake DAG on tiny configs (the demo generator and real clips)."""
import contextlib
import csv
import importlib.util
import json
import re
import shutil
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
TINY_PRETRAIN = ("{width: 0.125, val_fraction: 0.34, num_blocks: 4, pred_steps: 1, block_length: 2, frame_stride: 2, "
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
        official_splits: [1, 2]
        demo: {num_classes: 3, videos_per_class: 3, num_frames: 12, width: 128, height: 96}
        frames: {short_side: 96}
        flow: {method: farneback}
        pose: {short_side: 24, sigma: 1.0}
        seg: {short_side: 24}
        pretrain: TINY_PRETRAIN
        finetune: {epochs: 1, milestones: [1], batch_size: 2, workers: 0, gpus: 0, val_fraction: 0.34}
        paper: {tables: [3, 5, 6]}
    """.replace("TINY_PRETRAIN", TINY_PRETRAIN))
    config = workflow_config(workdir, {"tiny": "tiny.yaml"}, ["tiny"])
    run_snakemake(workdir, "results/tiny/views.tsv", "--configfile", str(config))
    return workdir, config


def test_demo_pipeline_builds_every_shard(demo_run):
    workdir, _ = demo_run
    results = workdir / "results" / "tiny"
    rows = read_manifest(results / "manifest.tsv")
    assert len(rows) == 9 and all(row.ok for row in rows)
    # each split holds out another video of every class
    assert [sorted(row.video_id for row in rows if row.role(split) == "test") for split in (1, 2, 3)] == \
        [sorted(row.video_id for row in rows if row.splits.split(",")[split - 1] == "test") for split in (1, 2, 3)]
    assert len({row.video_id for row in rows if "test" in row.splits}) == 9
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


FOUR = "rgb+flow+pose+seg"


def test_demo_pretraining_cpc_per_view_then_cocon(demo_run):
    workdir, config = demo_run
    target = f"results/tiny/split1/pretrain/cocon/{FOUR}/joint.pt"
    plan = run_snakemake(workdir, target, "--configfile", str(config), "-n")
    assert planned_jobs(plan.stdout) == {"pretrain_cpc": 4, "pretrain_cocon": 1, "total": 5}
    run_snakemake(workdir, target, "--configfile", str(config))
    pretrain = workdir / "results" / "tiny" / "split1" / "pretrain"
    for view in VIEWS:
        model, state = load_pretrained(pretrain / "cocon" / FOUR / "joint.pt", view)
        assert state["views"] == list(VIEWS) and state["model_config"]["input_size"] in (16, 32)
        assert load_pretrained(pretrain / "cpc" / f"{view}.pt")[1]["epoch"] == 1
    assert (pretrain / "cocon" / FOUR / "joint.state" / "metrics.csv").is_file()
    log = (workdir / "results" / "tiny" / "logs" / "split1" / "pretrain" / "cocon" / f"{FOUR}.log").read_text()
    assert "initialised from results/tiny/split1/pretrain/cpc/pose.pt" in log
    plan = run_snakemake(workdir, target, "--configfile", str(config), "-n", "--forcerun", "pretrain_cocon")
    assert planned_jobs(plan.stdout) == {"pretrain_cocon": 1, "total": 1}


def test_the_device_loader_pretrains_four_views_as_the_cpu_loader_does(demo_run, tmp_path):
    """pretrain.loader: device through the DAG, CPC on each view then CoCon on all four,
    against the cpu loader's run of the same config and seed: every epoch's loss terms
    within 2% (the decoders may differ by a few grey levels: nvJPEG on a GPU; on this CPU
    the two decoders agree)."""
    workdir, config = demo_run
    target = f"results/tiny/split1/pretrain/cocon/{FOUR}/joint.pt"
    run_snakemake(workdir, target, "--configfile", str(config))  # the cpu loader's (built already by an earlier test)
    # the same views in a second working directory, whose dataset file asks for the device loader
    device = tmp_path / "device"
    shutil.copytree(workdir / "results" / "tiny", device / "results" / "tiny",
                    ignore=shutil.ignore_patterns("split*", "logs", "benchmarks"))
    dataset = (workdir / "tiny.yaml").read_text()
    assert "workers: 0, gpus: 0" in dataset
    (device / "tiny.yaml").write_text(dataset.replace("workers: 0, gpus: 0", "workers: 0, loader: device, gpus: 0", 1))
    device_config = workflow_config(device, {"tiny": "tiny.yaml"}, ["tiny"])
    plan = run_snakemake(device, target, "--configfile", str(device_config), "-n")
    assert planned_jobs(plan.stdout) == {"pretrain_cpc": 4, "pretrain_cocon": 1, "total": 5}, "views are reused"
    run_snakemake(device, target, "--configfile", str(device_config))
    log = (device / "results" / "tiny" / "logs" / "split1" / "pretrain" / "cocon" / f"{FOUR}.log").read_text()
    assert "initialised from results/tiny/split1/pretrain/cpc/pose.pt" in log
    states = [f"cpc/{view}.state" for view in VIEWS] + [f"cocon/{FOUR}/joint.state"]
    for state in states:
        rows = {}
        for name, root in (("cpu", workdir), ("device", device)):
            with open(root / "results" / "tiny" / "split1" / "pretrain" / state / "metrics.csv") as handle:
                rows[name] = list(csv.DictReader(handle))
        assert len(rows["device"]) == len(rows["cpu"]) >= 1, state
        losses = [column for column in rows["cpu"][0] if column.endswith("loss") or "/" in column]
        assert {"loss", "val_loss"} <= set(losses), state
        for cpu_row, device_row in zip(rows["cpu"], rows["device"]):
            for column in losses:
                if column.startswith(("top1/", "val_top1/")):
                    continue  # accuracies: a share of a handful of predictions, not a loss
                expected = float(cpu_row[column])
                assert float(device_row[column]) == pytest.approx(expected, rel=0.02), (state, column)


def test_demo_to_paper_md_with_two_view_sets_and_two_splits(demo_run):
    workdir, config = demo_run
    run_snakemake(workdir, "results/tiny/finetune.json", "results/tiny/paper.md", "--configfile", str(config))
    results = workdir / "results" / "tiny"
    for split in (1, 2):
        document = json.loads((results / f"split{split}" / "finetune.json").read_text())
        jsonschema.validate(document, load_schema("finetune.schema.json"))
        rows = {(row["init"], row["view"]): row for row in document["results"]}
        assert set(rows) == {(init, view) for init in ("random", "tiny/cpc", f"tiny/cocon/{FOUR}")
                             for view in (*VIEWS, "ensemble")}
        assert rows[(f"tiny/cocon/{FOUR}", "rgb")]["checkpoint"] == \
            f"results/tiny/split{split}/pretrain/cocon/{FOUR}/joint.pt"
        assert rows[("random", "flow")]["checkpoint"] is None
        assert all(row["num_test_videos"] == 3 for row in document["results"])
        assert len(json.loads((results / f"split{split}" / "finetune_details.json").read_text())[
            f"tiny/cocon/{FOUR}/ensemble"]["confusion"]) == 3
    summary = json.loads((results / "finetune.json").read_text())
    jsonschema.validate(summary, load_schema("finetune.schema.json"))
    assert summary["splits"] == [1, 2]
    for row in summary["results"]:
        values = [entry["top1"] for entry in row["per_split"]]
        assert [entry["split"] for entry in row["per_split"]] == [1, 2]
        assert row["top1"] == pytest.approx(np.mean(values)) and row["top1_std"] == pytest.approx(np.std(values, ddof=1))
    assert "| Random |" in (results / "finetune.md").read_text()

    paper = json.loads((results / "paper.json").read_text())
    jsonschema.validate(paper, load_schema("paper.schema.json"))
    tables = {table["table"]: table for table in paper["tables"]}
    assert set(tables) == {1, 2, 3, 5, 6}
    # Table 5: CoCon on 2 views against 4 views, both run on the UCF columns
    two, four = tables[5]["rows"]
    assert [cell["run"] for cell in two["cells"]] == [True, False, True, False]
    assert two["cells"][0]["init"] == "tiny/cocon/rgb+flow" and four["cells"][0]["init"] == f"tiny/cocon/{FOUR}"
    assert two["cells"][1]["reason"] == "paper.hmdb51 is null"
    # Table 6: means over both splits, the ensemble of the four views
    ensemble = next(row for row in tables[6]["rows"] if row["label"] == "CoCon ensemble, 4 views, UCF101")
    assert [entry["split"] for entry in ensemble["cells"][0]["per_split"]] == [1, 2]
    assert ensemble["cells"][0]["top1"] == pytest.approx(
        next(row["top1"] for row in summary["results"] if (row["init"], row["view"]) == (f"tiny/cocon/{FOUR}",
                                                                                         "ensemble")))
    assert all(not cell["run"] for row in tables[1]["rows"] for cell in row["cells"])
    markdown = (results / "paper.md").read_text()
    assert "## Table 5" in markdown and "(71.0)" in markdown and "not run: table 1 is not in paper.tables" in markdown
    assert (results / "split1" / "pretrain" / "cocon" / "rgb+flow" / "joint.pt").is_file()


def test_demo_report_holds_every_analysis_and_loads_in_chromium(demo_run):
    workdir, config = demo_run
    run_snakemake(workdir, "results/tiny/report.html", "--configfile", str(config))
    results = workdir / "results" / "tiny"
    analysis = results / "split1" / "analysis"
    inits = ("random", "tiny/cpc", f"tiny/cocon/{FOUR}")
    for init in inits:
        for view in VIEWS:
            assert (results / "split1" / "features" / init / f"{view}.npz").is_file()
    assert not (results / "split2" / "features").exists(), "the analyses run on the first official split only"
    retrieval = json.loads((analysis / "retrieval.json").read_text())
    rows = {(row["init"], row["view"]) for row in retrieval["rows"]}
    assert rows == {(init, view) for init in inits for view in (*VIEWS, "fused")}
    probe = json.loads((analysis / "probe.json").read_text())
    assert {(row["init"], row["view"]) for row in probe["rows"]} == {(init, view) for init in inits for view in VIEWS}
    assert "CPC" in (analysis / "consistency.md").read_text()
    index = json.loads((analysis / "figures" / "index.json").read_text())
    drawn = [entry for entry in index if entry["png"]]
    assert {entry["section"] for entry in drawn} == {"t-SNE (Fig. 3/8)", "Cosine similarities (Fig. 10)",
                                                     "Per-class gains (Fig. 4)", "Nearest neighbours (Fig. 11)",
                                                     "Training curves"}
    # one test video per class: no same-class pair to align, and the report says so in the figure's place
    assert {entry["section"] for entry in index if not entry["png"]} == {"Soft alignment (Fig. 5/9)"}
    for entry in drawn:
        assert (analysis / "figures" / entry["png"]).stat().st_size > 1000
        assert (analysis / "figures" / entry["data"]).stat().st_size > 0

    html = results / "report.html"
    text = html.read_text()
    assert "no two of the 3 test videos share a class" in text
    # the paper's quantities by default, and named as such
    assert "the raw cosine of the pooled context features, as the paper&#39;s Fig. 10" in text
    consistency = (analysis / "consistency.md").read_text()
    assert "the mean of the raw features (the paper's)" in consistency and "centred" not in consistency
    for heading in ("The paper&#39;s tables", "Fine-tuning", "Nearest-neighbour retrieval", "Linear probe",
                    "Class consistency", "Dataset", "Views of a few test videos"):
        assert heading in text, heading
    from tests.browser import check_page, chromium_executable
    if chromium_executable() is None:
        pytest.skip("no chromium here and none installable (needs root and apt-get): the page was not opened")
    page = check_page(html, results / "report_screenshot.png")
    # every figure of the index, and a contact sheet of each of the 3 classes' test videos
    assert page.images == len(drawn) + 3 and page.broken == [] and page.console_errors == []
    assert page.screenshot.stat().st_size > 10_000

    # the analyses run without Snakemake on any checkpoint the workflow wrote
    cli = workdir / "cli"
    joint = results / "split1" / "pretrain" / "cocon" / FOUR / "joint.pt"
    for view in ("rgb", "flow"):
        subprocess.run([str(SNAKEMAKE.with_name("cocon")), "features", "--dataset", str(workdir / "tiny.yaml"),
                        "--init", f"tiny/cocon/{FOUR}", "--view", view, "--views-dir", str(results / "views"),
                        "--manifest", str(results / "manifest.tsv"), "--pretrained", str(joint),
                        "--out", str(cli / f"{view}.npz")], check=True, capture_output=True)
    np.testing.assert_allclose(np.load(cli / "rgb.npz")["context"],
                               np.load(results / "split1" / "features" / "tiny" / "cocon" / FOUR / "rgb.npz")["context"],
                               rtol=1e-5, atol=1e-6)
    subprocess.run([str(SNAKEMAKE.with_name("cocon")), "retrieval", str(cli / "rgb.npz"), str(cli / "flow.npz"),
                    "--json", str(cli / "retrieval.json"), "--markdown", str(cli / "retrieval.md")], check=True,
                   capture_output=True)
    assert [row["view"] for row in json.loads((cli / "retrieval.json").read_text())["rows"]] == ["rgb", "flow", "fused"]

    # snakemake's own report gathers the same outputs, with their captions
    run_snakemake(workdir, "results/tiny/report.html", "--configfile", str(config),
                  "--report", str(workdir / "snakemake_report.zip"))
    assert (workdir / "snakemake_report.zip").stat().st_size > 10_000


def test_changing_a_finetune_setting_reruns_finetuning_and_tables_only(demo_run):
    workdir, config = demo_run
    targets = ("results/tiny/finetune.json", "results/tiny/paper.md")
    # built already when the test before this one ran; alone, this builds it
    run_snakemake(workdir, *targets, "--configfile", str(config))
    with edited(workdir / "tiny.yaml", "finetune: {epochs: 1,", "finetune: {epochs: 1, lr: 0.01,"):
        plan = run_snakemake(workdir, *targets, "--configfile", str(config), "-n")
        # split 1: 3 inits x 4 views + the 2-view CoCon's rgb and flow; split 2: 12
        assert planned_jobs(plan.stdout) == {"finetune": 26, "finetune_report": 2, "finetune_splits": 1, "paper": 1,
                                             "total": 30}
    plan = run_snakemake(workdir, *targets, "--configfile", str(config), "-n", "--forcerun", "pretrain_cocon")
    assert planned_jobs(plan.stdout) == {"pretrain_cocon": 3, "finetune": 10, "finetune_report": 2,
                                         "finetune_splits": 1, "paper": 1, "total": 17}


def test_adding_a_split_reruns_no_extraction(demo_run):
    workdir, config = demo_run
    with edited(workdir / "tiny.yaml", "official_splits: [1, 2]", "official_splits: [1, 2, 3]"):
        plan = run_snakemake(workdir, "results/tiny/finetune.json", "--configfile", str(config), "-n")
    jobs = planned_jobs(plan.stdout)
    assert not {"manifest", "frames", "flow", "pose", "seg", "views"} & set(jobs)
    # split 3 pretrains and fine-tunes from scratch; splits 1 and 2 are only summarized again
    assert jobs["pretrain_cpc"] == 4 and jobs["pretrain_cocon"] == 1 and jobs["finetune"] == 12
    assert jobs["finetune_report"] == 1 and jobs["finetune_splits"] == 1


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
        official_splits: [3]
        min_usable_fraction: 0.0   # a handful of each class's clips are on disk
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
        min_usable_fraction: 0.0
        shard_size: 1000
        frames: {{short_side: 48}}
        flow: {{method: farneback}}
        finetune: {{pretrained_on: ucf}}
        analysis: {{inits: [cpc, cocon]}}
    """)
    config = workflow_config(tmp_path, {"ucf": "ucf.yaml", "hmdb": "hmdb.yaml"}, ["ucf", "hmdb"])
    # every analysis on UCF101's split 3; retrieval and the probe on HMDB51 with the UCF101 encoders
    ucf_analysis, hmdb_analysis = "results/ucf/split3/analysis", "results/hmdb/split1/analysis"
    run_snakemake(tmp_path, "results/hmdb/views.tsv", "results/ucf/finetune.json", f"{ucf_analysis}/retrieval.json",
                  f"{ucf_analysis}/probe.json", f"{ucf_analysis}/consistency.md", f"{hmdb_analysis}/retrieval.json",
                  f"{hmdb_analysis}/probe.json", "--configfile", str(config))
    for analysis, queries, gallery in ((ucf_analysis, 1, 4), (hmdb_analysis, 1, 2)):
        retrieval = json.loads((tmp_path / analysis / "retrieval.json").read_text())
        assert {(row["num_queries"], row["num_gallery"]) for row in retrieval["rows"]} == {(queries, gallery)}
        # one query: R@k is 0 or 1, and 1 once k covers the gallery's same-class video (if any)
        assert all(value in (0.0, 1.0, None) for row in retrieval["rows"] for value in row["recall"].values())
        probe = json.loads((tmp_path / analysis / "probe.json").read_text())
        assert all(0 <= row["top1"] <= 1 and (row["top5"] is None or row["top1"] <= row["top5"] <= 1)
                   for row in probe["rows"])
    hmdb_rows = json.loads((tmp_path / hmdb_analysis / "retrieval.json").read_text())["rows"]
    assert {row["init"] for row in hmdb_rows} == {"ucf/cpc", f"ucf/cocon/{FOUR}"}
    # the only test class (PlayingGuitar) has nothing to be consistent with, and says so
    assert "only 1 class has test videos" in (tmp_path / ucf_analysis / "consistency.md").read_text()
    index = json.loads((tmp_path / ucf_analysis / "figures" / "index.json").read_text())
    drawn = {entry["section"] for entry in index if entry["png"]}
    assert {"Per-class gains (Fig. 4)", "Nearest neighbours (Fig. 11)", "Training curves"} <= drawn
    skipped = {entry["section"]: entry["caption"] for entry in index if not entry["png"]}
    assert skipped["t-SNE (Fig. 3/8)"].startswith("not drawn: 1 test videos")
    assert skipped["Soft alignment (Fig. 5/9)"] == "not drawn: no two of the 1 test videos share a class"
    _, state = load_pretrained(tmp_path / "results" / "ucf" / "split3" / "pretrain" / "cocon" / FOUR / "joint.pt",
                               "rgb")
    assert state["dataset"] == "ucf" and state["split"] == 3 and len(state["history"]) == 1
    # split 3: PlayingGuitar is the test video, the other four train (one of them validates)
    document = json.loads((tmp_path / "results" / "ucf" / "finetune.json").read_text())
    # labels keep their official numbers (Shotput is 78), so the classifier has 79 outputs
    assert document["splits"] == [3] and document["num_classes"] == 79
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
        pose: {backend: mmpose, mmpose: {config: absent.py, checkpoint: absent.pth}}
    """)
    config = workflow_config(tmp_path, {"mm": "mm.yaml"}, ["mm"])
    result = run_snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    assert result.returncode != 0
    # without `make mm` the package is missing; with it, the model files
    problem = ("pose.mmpose.config: file not found: absent.py" if importlib.util.find_spec("mmpose")
               else "pose.backend: mmpose is selected but cannot be imported")
    assert f"mm.yaml: {problem}" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_lint_is_clean():
    result = subprocess.run([str(SNAKEMAKE), "--lint"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def full_scale_configs(workdir, ucf_splits, hmdb_splits, kinetics_classes=4, kinetics_per_class=17):
    """The shipped ucf101, hmdb51 and kinetics400 configs over the full official split
    lists (none of the videos on disk, empty root folders) and a Kinetics annotation file
    of made-up names: one test clip per class, the rest train (a batch of 16 x 4 GPUs)."""
    rows = ["label,youtube_id,time_start,time_end,split"] + [
        f"class {label},y{label}v{index:04d},10,20,{'test' if index == 0 else 'train'}"
        for label in range(kinetics_classes) for index in range(kinetics_per_class)]
    for root in ("UCF-101", "hmdb51", "k400"):
        (workdir / root).mkdir()
    (workdir / "k400.csv").write_text("\n".join(rows) + "\n")
    write_yaml(workdir / "ucf101.yaml", f"""
        base: {REPO / 'config' / 'datasets' / 'ucf101.yaml'}
        root: {workdir / 'UCF-101'}
        splits: {ucf_splits}
    """)
    write_yaml(workdir / "hmdb51.yaml", f"""
        base: {REPO / 'config' / 'datasets' / 'hmdb51.yaml'}
        root: {workdir / 'hmdb51'}
        splits: {hmdb_splits}
    """)
    write_yaml(workdir / "kinetics400.yaml", f"""
        base: {REPO / 'config' / 'datasets' / 'kinetics400.yaml'}
        root: {workdir / 'k400'}
        annotations: [{workdir / 'k400.csv'}]
    """)
    return workflow_config(workdir, {"ucf101": "ucf101.yaml", "hmdb51": "hmdb51.yaml",
                                     "kinetics400": "kinetics400.yaml"}, ["ucf101"])


def test_ucf101_paper_dry_run_plans_the_full_protocol(tmp_path, ucf_splits, hmdb_splits):
    """Planning needs only the split files: no video is opened, none needs to exist."""
    config = full_scale_configs(tmp_path, ucf_splits, hmdb_splits)
    plan = run_snakemake(tmp_path, "results/ucf101/paper.md", "--configfile", str(config), "-n")
    jobs = planned_jobs(plan.stdout)
    # 13,320 UCF101 videos and 6,766 HMDB51 videos in shards of 100, four views each; Kinetics rgb and flow
    assert jobs["frames"] == 134 + 68 + 1 and jobs["flow"] == 134 + 68 + 1
    assert jobs["pose"] == jobs["seg"] == 134 + 68
    for split in (1, 2, 3):
        # every split pretrains CPC on UCF101 and the 4-view CoCon (Table 6)
        assert f"results/ucf101/split{split}/pretrain/cocon/{FOUR}/joint.pt" in plan.stdout
        assert f"results/ucf101/split{split}/finetune.json" not in plan.stdout  # paper.md needs no finetune.json
        assert f"results/hmdb51/split{split}/finetune/ucf101/cocon/{FOUR}/rgb.scores.npz" in plan.stdout
    # Table 1's ablations and Tables 2 and 5's 2-view CoCon, on split 1
    for method in ("cocon", "cpc+sim", "cpc+sync"):
        assert f"results/ucf101/split1/pretrain/{method}/rgb+flow/joint.pt" in plan.stdout
        assert f"results/ucf101/split2/pretrain/{method}/rgb+flow/joint.pt" not in plan.stdout
    assert "results/kinetics400/split1/pretrain/cocon/rgb+flow/joint.pt" in plan.stdout
    # UCF101: 4 views x 3 splits of CPC, Kinetics rgb and flow; joint: 4 on split 1, one per other split, K400's
    assert jobs["pretrain_cpc"] == 14 and jobs["pretrain_cocon"] == 7
    assert jobs["paper"] == 1 and jobs["total"] <= 2500

    # report.html adds the analyses of split 1 (the paper's): 3 initialisations x 4 views of features
    plan = run_snakemake(tmp_path, "results/ucf101/report.html", "--configfile", str(config), "-n")
    report_jobs = planned_jobs(plan.stdout)
    assert report_jobs["features"] == 12 and "results/ucf101/split2/features" not in plan.stdout
    assert all(report_jobs[rule] == 1 for rule in ("retrieval", "probe", "analyse", "report", "finetune_splits"))


def test_kinetics_plans_no_pose_or_seg_job(tmp_path, ucf_splits, hmdb_splits):
    config = full_scale_configs(tmp_path, ucf_splits, hmdb_splits)
    plan = run_snakemake(tmp_path, "results/kinetics400/finetune.json", "--configfile", str(config), "-n")
    jobs = planned_jobs(plan.stdout)
    assert "pose" not in jobs and "seg" not in jobs
    assert jobs["frames"] == jobs["flow"] == 1 and jobs["pretrain_cpc"] == 2 and jobs["pretrain_cocon"] == 1
    assert "results/kinetics400/split1/pretrain/cocon/rgb+flow/joint.pt" in plan.stdout
    assert jobs["finetune"] == 6  # random, cpc and cocon on rgb and flow
    # a view Kinetics does not extract is refused at planning, naming the file and key
    result = run_snakemake(tmp_path, "results/kinetics400/split1/pretrain/cpc/pose.pt", "--configfile", str(config),
                           "-n", check=False)
    assert result.returncode != 0 and "kinetics400.yaml: views: 'pose' is not extracted" in result.stdout + result.stderr


def test_hmdb51_finetuning_pulls_ucf101_pretraining(tmp_path, ucf_splits, hmdb_splits):
    """The paper's Tables 3 and 5: HMDB51 fine-tunes UCF101-pretrained encoders by default."""
    config = full_scale_configs(tmp_path, ucf_splits, hmdb_splits)
    plan = run_snakemake(tmp_path, "results/hmdb51/finetune.json", "--configfile", str(config), "-n")
    jobs = planned_jobs(plan.stdout)
    for split in (1, 2, 3):
        assert f"results/hmdb51/split{split}/finetune/ucf101/cocon/{FOUR}/rgb.scores.npz" in plan.stdout
    # every HMDB51 split starts from UCF101's split-1 pretraining
    assert f"results/ucf101/split1/pretrain/cocon/{FOUR}/joint.pt" in plan.stdout
    assert "results/ucf101/split2/pretrain" not in plan.stdout and "results/hmdb51/split1/pretrain" not in plan.stdout
    assert jobs["pretrain_cpc"] == 4 and jobs["pretrain_cocon"] == 1
    assert jobs["finetune"] == 3 * 12 and jobs["finetune_report"] == 3 and jobs["finetune_splits"] == 1
