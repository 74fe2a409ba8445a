"""The analyses' cost on the demo (run `make demo` first): the features stage's time per
video against one forward pass of the same encoder per video (the least any feature
extraction can cost), and the share of the demo's job time that the analysis stages
(features, retrieval, probe, analyse, report) took, from Snakemake's benchmark files.
Prints JSON."""
from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench.common import REPO, best_time
from cocon.analysis.features import FeaturesJob, compute_features, load_encoder
from cocon.config import load_dataset_config
from cocon.data.clips import ClipDataset, split_videos

ANALYSIS_STAGES = ("features", "retrieval", "probe", "analyse", "report")


def forward_per_video(dataset: dict, view: str, views_dir: Path, manifest: Path) -> tuple[float, int]:
    """Seconds per video of one forward pass (one dense window, batch 1, already in memory)."""
    model, geometry = load_encoder(dataset, view, None)
    train, val, test = split_videos(manifest, 1, dataset["finetune"]["val_fraction"], dataset["finetune"]["seed"])
    videos = train + val + test
    clips = ClipDataset(videos, views_dir, [view], {view: geometry["size"]}, geometry["spec"], train=False,
                        center_crop=dataset["finetune"]["center_crop"])
    windows = [clips[index][view][None] for index in range(len(videos))]

    @torch.no_grad()
    def run():
        for window in windows:
            model.context(window)

    return best_time(run) / len(videos), len(videos)


def stage_seconds(benchmarks: Path) -> dict[str, float]:
    """Wall seconds per stage over the dataset's Snakemake benchmark files."""
    totals: dict[str, float] = {}
    for path in benchmarks.rglob("*.tsv"):
        # <stage>.tsv, <stage>/<shard>.tsv, split<k>/<stage>.tsv or split<k>/<stage>/...
        parts = [part.removesuffix(".tsv") for part in path.relative_to(benchmarks).parts]
        stage = parts[1] if parts[0].startswith("split") else parts[0]
        with open(path) as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        totals[stage] = totals.get(stage, 0.0) + sum(float(row["s"]) for row in rows)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(REPO / "results" / "demo"), help="the demo's results folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results = Path(args.results)
    manifest = results / "manifest.tsv"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} not found: run `make demo` first")
    torch.set_num_threads(args.threads)
    dataset = load_dataset_config(REPO / "config" / "datasets" / "demo.yaml", "demo")
    per_view = {}
    for view in dataset["views"]:
        with tempfile.TemporaryDirectory() as folder:
            job = FeaturesJob(dataset, "random", view, str(results / "views"), str(manifest), None,
                              str(Path(folder) / "features.npz"), threads=args.threads)
            started = time.perf_counter()
            features = compute_features(job)
            stage = (time.perf_counter() - started) / len(features.video_ids)
        forward, videos = forward_per_video(dataset, view, results / "views", manifest)
        per_view[view] = {"videos": videos, "features_s_per_video": round(stage, 4),
                          "forward_s_per_video": round(forward, 4), "ratio": round(stage / forward, 2)}
    stages = stage_seconds(results / "benchmarks")
    analysis = sum(seconds for stage, seconds in stages.items() if stage in ANALYSIS_STAGES)
    total = sum(stages.values())
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
        "features_against_one_forward_pass": per_view,
        "note": "features: dense windows of every video plus 18 block features per test video, shard reads "
                "included; forward: one window per video, in memory",
        "demo_job_seconds": {stage: round(seconds, 1) for stage, seconds in sorted(stages.items())},
        "analysis_share_of_job_time": round(analysis / total, 3) if total else None,
    }, indent=2))


if __name__ == "__main__":
    main()
