"""The evidence benchmark: the motion classes, the summary's statistics and conclusion, and
a tiny version of `make evidence`'s target through the real DAG (two training seeds
reading one set of views)."""
import json

import numpy as np
import pytest
from scipy import stats

from cocon.data.demo import MOTION_CLASSES, demo_video_names, render_video
from cocon.evidence import conclusion, init_kind, interval95, loss_terms, summarize
from tests.conftest import run_snakemake, workflow_config, write_yaml
from tests.test_workflow import TINY_PRETRAIN


def person_track(class_name: str, index: int, frames: int = 60) -> np.ndarray:
    """The centre of the person's mask per frame ``[T, 2]`` (x, y)."""
    track = []
    for _, alpha in render_video(class_name, index, frames, 128, 96):
        rows, cols = np.nonzero(alpha > 0.5)
        track.append((cols.mean(), rows.mean()))
    return np.array(track)


def test_motion_classes_differ_in_timing_not_in_direction():
    assert len(MOTION_CLASSES) == 10 and len(set(MOTION_CLASSES)) == 10
    assert [name for name, _ in demo_video_names(2, 1, "motion")] == ["glide", "accelerate"]
    with pytest.raises(ValueError, match="between 1 and 10 for the 'motion' classes"):
        demo_video_names(11, 1, "motion")
    # the direction of travel is drawn per video: two glides go different ways
    directions = []
    for index in range(4):
        track = person_track("glide", index)
        step = track[-1] - track[0]
        directions.append(np.arctan2(step[1], step[0]))
    assert np.ptp(np.unwrap(directions)) > 1.0
    # accelerate starts slow and ends fast; decelerate the other way round
    speeds = {name: np.linalg.norm(np.diff(person_track(name, 0), axis=0), axis=1) for name in ("accelerate", "decelerate")}
    assert speeds["accelerate"][:10].mean() < 0.3 * speeds["accelerate"][-10:].mean()
    assert speeds["decelerate"][-10:].mean() < 0.3 * speeds["decelerate"][:10].mean()
    # stop_and_go rests between its moves
    assert (np.linalg.norm(np.diff(person_track("stop_and_go", 0), axis=0), axis=1) < 0.05).mean() > 0.3


def test_summary_means_spreads_and_paired_intervals():
    per_seed = [{"random": {"rgb": {"probe_top1": 20.0}}, "cpc": {"rgb": {"probe_top1": 30.0 + delta}},
                 "cocon": {"rgb": {"probe_top1": 34.0 + 2 * delta}}} for delta in (0.0, 1.0, 2.0)]
    document = summarize([0, 1, 2], per_seed, test_videos=250, wall_seconds=60.0)
    cell = document["cells"]["cocon"]["rgb"]["probe_top1"]
    assert cell["per_seed"] == [34.0, 36.0, 38.0] and cell["mean"] == 36.0 and cell["std"] == pytest.approx(2.0)
    paired = document["paired"]["cocon-cpc"]["rgb"]["probe_top1"]
    assert paired["per_seed"] == [4.0, 5.0, 6.0] and paired["mean"] == 5.0
    half = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)
    assert paired["ci95"] == pytest.approx([5.0 - half, 5.0 + half])
    assert "probe top-1 +5.0: holds" in document["conclusion"]
    assert "at most 3 points everywhere" in document["conclusion"]
    assert set(document) == {"seeds", "test_videos", "wall_seconds", "cells", "paired", "conclusion"}


def test_conclusion_says_when_an_interval_includes_zero_and_when_spread_is_too_large():
    per_seed = [{"cpc": {"rgb": {"probe_top1": value, "retrieval_r1": 40.0}},
                 "cocon": {"rgb": {"probe_top1": value + delta, "retrieval_r1": 40.0 - 3}}}
                for value, delta in ((30.0, 4.0), (40.0, -3.0), (50.0, 1.0))]
    document = summarize([0, 1, 2], per_seed, 250, None)
    text = conclusion(document)
    assert "probe top-1 +0.7: not shown (the interval includes 0)" in text
    assert "R@1 -3.0" in text and "above 3 points for cpc rgb probe top-1 10.0" in text
    assert interval95([1.0]) == [None, None]


def test_init_kinds_are_the_same_across_seed_datasets():
    assert init_kind("random") == "random"
    assert init_kind("evidence_seed2/cpc") == "cpc"
    assert init_kind("evidence_seed1/cocon/rgb+flow") == "cocon"
    assert init_kind("evidence/cocon/rgb+flow+pose+seg") == "cocon (rgb+flow+pose+seg)"


def test_loss_terms_and_the_cross_view_share(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss,cpc/flow,cpc/rgb,sync/flow-rgb,sim/flow-rgb\n"
                    "0,12.0,3.0,3.0,0.1,0.5\n"
                    "1,7.0,1.0,1.0,0.0,0.5\n")
    terms = loss_terms(path, lambda_=10.0, alpha=1.0)
    assert terms["epochs"] == 2 and terms["first"]["sim/flow-rgb"] == 0.5
    assert terms["cross_view_share"] == pytest.approx([6.0 / 12.0, 5.0 / 7.0])


@pytest.mark.e2e
def test_tiny_evidence_through_the_dag(tmp_path):
    """Two training seeds on one set of views: the views are extracted once, each seed trains
    its own random, CPC and CoCon encoders, and evidence.json has the documented shape."""
    write_yaml(tmp_path / "tiny.yaml", """
        layout: demo
        root: results/tiny/videos
        test_fraction: 0.5
        shard_size: 8
        strict: true
        views: [rgb, flow]
        demo: {classes: motion, num_classes: 3, videos_per_class: 4, num_frames: 20, width: 64, height: 48}
        frames: {short_side: 48}
        flow: {method: farneback}
        pretrain: TINY_PRETRAIN
        finetune: {inits: [random, cpc, cocon], view_set: [rgb, flow], gpus: 0, val_fraction: 0.34}
        paper: {tables: []}
        analysis: {probe_cs: [1.0]}
    """.replace("TINY_PRETRAIN", TINY_PRETRAIN))
    write_yaml(tmp_path / "tiny_seed1.yaml", """
        base: tiny.yaml
        views_from: tiny
        seeds_of: tiny
        pretrain: {seed: 1}
        finetune: {seed: 1}
    """)
    config = workflow_config(tmp_path, {"tiny": "tiny.yaml", "tiny_seed1": "tiny_seed1.yaml"}, ["tiny"])
    run_snakemake(tmp_path, "results/tiny/evidence.json", "--configfile", str(config),
                  "--set-threads", "pretrain_cpc=1", "pretrain_cocon=1")
    results = tmp_path / "results"
    assert not (results / "tiny_seed1" / "views").exists() and not (results / "tiny_seed1" / "manifest.tsv").exists()
    assert (results / "tiny_seed1" / "split1" / "pretrain" / "cocon" / "rgb+flow" / "joint.pt").is_file()
    document = json.loads((results / "tiny" / "evidence.json").read_text())
    assert document["seeds"] == [0, 1] and document["test_videos"] == 6 and document["wall_seconds"] > 0
    assert set(document["cells"]) == {"random", "cpc", "cocon"}
    for view in ("rgb", "flow"):
        metrics = document["cells"]["cocon"][view]
        assert set(metrics) == {"retrieval_r1", "retrieval_r5", "probe_top1", "auc"}
        assert len(metrics["probe_top1"]["per_seed"]) == 2 and 0.0 <= metrics["auc"]["mean"] <= 1.0
        assert len(document["paired"]["cocon-cpc"][view]["retrieval_r1"]["ci95"]) == 2
    assert "CoCon − CPC over 2 seeds" in document["conclusion"]
    assert set(document["loss_terms"]) == {"cocon, seed 0", "cocon, seed 1"}
    assert "Paired difference cocon − cpc" in (results / "tiny" / "evidence.md").read_text()
