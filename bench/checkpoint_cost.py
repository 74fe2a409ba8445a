"""What step checkpoints cost (issue 21): seconds and bytes of one step checkpoint of the
full ResNet18 model (UCF101's pretraining settings: model, Adam's moments, scheduler, RNG
states), and the overhead of ``checkpoint_minutes: 10`` as a share of a CPU epoch of the
demo (CPC on rgb, the demo's own settings and views, built here through the real stages).

The overhead per epoch is the check after every step (is a signal pending, is a save due)
plus the saves that fall in the epoch, epoch_seconds / 600 of them on average; the ratio
compares the epoch with them to the baseline, the same epoch without step checkpoints
(``checkpoint_minutes: 0``): a demo epoch lasts seconds, so the difference is far below
run-to-run noise and is computed from the measured parts. The worst case is measured
directly: the same epoch with a step checkpoint after every step. Prints JSON."""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench.common import REPO
from cocon.config import load_dataset_config
from cocon.data.clips import split_videos
from cocon.train import checkpoints
from cocon.train.distributed import Runtime
from cocon.train.preemption import StepCheckpoints, StopSignals
from cocon.train.pretrain import MultiViewDPC, PretrainJob, build_model, run_pretraining

ALONE = Runtime(0, 1, torch.device("cpu"))
MINUTES = 10


def save_cost(settings: dict, folder: Path, repeats: int) -> dict:
    """Seconds (the fastest of ``repeats``) and bytes of one step checkpoint of the rgb model
    of ``settings``, with Adam's moments in place as after a step."""
    torch.manual_seed(0)
    model = MultiViewDPC({"rgb": build_model(settings, "rgb")})
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    path = folder / "last.pt"
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        checkpoints.save_training_state(path, "bench", -1, 1, model, optimizer, scheduler, [], ALONE,
                                        {"sums": {"loss": 1.0}, "steps": 1, "seconds": 1.0})
        times.append(time.perf_counter() - started)
    return {"parameters": sum(parameter.numel() for parameter in model.parameters()),
            "save_seconds": round(min(times), 4), "bytes": path.stat().st_size}


def check_seconds(calls: int = 10000) -> float:
    """Seconds of one check after a step when no save is due and no signal came."""
    with StopSignals() as signals:
        steps = StepCheckpoints(signals, ALONE, MINUTES, "unused")
        started = time.perf_counter()
        for step in range(calls):
            steps.after_step(lambda: None, 0, step, calls)
        return (time.perf_counter() - started) / calls


def demo_views(folder: Path, dataset: dict) -> None:
    """The demo's videos, manifest and rgb shards, through the real stages."""
    from cocon.data.demo import generate_demo
    from cocon.data.manifest import read_manifest, run_manifest
    from cocon.views.frames import extract_frames

    generate_demo(folder / "videos", **dataset["demo"])
    run_manifest(dataset, folder / "manifest.tsv", folder / "excluded.tsv")
    shards = sorted({video.shard for video in read_manifest(folder / "manifest.tsv")})
    for shard in shards:
        extract_frames(dataset, folder / "manifest.tsv", shard, folder / "views" / "rgb" / f"{shard}.h5")


def demo_epoch(folder: Path, dataset: dict, minutes: float, threads: int, run: str) -> dict:
    """One CPC epoch on the demo's rgb: its training seconds and steps."""
    dataset = {**dataset, "pretrain": {**dataset["pretrain"], "checkpoint_minutes": minutes}}
    run = folder / run
    job = PretrainJob(dataset, "cpc", ["rgb"], str(folder / "views"), str(folder / "manifest.tsv"),
                      str(run / "rgb.pt"), str(run / "rgb.state"), epochs=1, threads=threads)
    run_pretraining(job)
    videos, _, _ = split_videos(job.manifest, job.split, dataset["pretrain"]["val_fraction"], dataset["pretrain"]["seed"])
    return {"seconds": checkpoints.load(job.output)["history"][0]["seconds"],
            "steps": len(videos) // dataset["pretrain"]["batch_size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="saves timed per model (the fastest counts)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the demo epoch")
    parser.add_argument("--epochs", type=int, default=2, help="demo epochs timed per variant (the fastest counts)")
    args = parser.parse_args()
    ucf101 = load_dataset_config(REPO / "config/datasets/ucf101.yaml")
    demo = load_dataset_config(REPO / "config/datasets/demo.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "ucf101").mkdir()
        (folder / "demo-state").mkdir()
        full = save_cost(ucf101["pretrain"], folder / "ucf101", args.repeats)
        small = save_cost(demo["pretrain"], folder / "demo-state", args.repeats)
        demo = {**demo, "root": str(folder / "videos")}
        demo_views(folder, demo)
        # alternated, the fastest of each: the least disturbed by other load and warm-up
        epochs = {"baseline": [], "every_step": []}
        for repeat in range(args.epochs):
            for variant, minutes in (("baseline", 0), ("every_step", 1e-6)):
                epochs[variant].append(demo_epoch(folder, demo, minutes, args.threads, f"{variant}-{repeat}"))
        baseline = min(epochs["baseline"], key=lambda row: row["seconds"])
        every_step = min(epochs["every_step"], key=lambda row: row["seconds"])
    check = check_seconds()
    epoch, steps = baseline["seconds"], baseline["steps"]
    saves = epoch / (MINUTES * 60)
    overhead = steps * check + saves * small["save_seconds"]
    print(json.dumps({
        "benchmark": "checkpoint_cost", "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "resnet18_step_checkpoint": full,
        "demo_step_checkpoint": small,
        "demo_epoch": {**baseline, "checkpoint_minutes": 0,
                       "all_seconds": [row["seconds"] for row in epochs["baseline"]]},
        "demo_epoch_checkpoint_every_step": {"seconds": every_step["seconds"],
                                             "all_seconds": [row["seconds"] for row in epochs["every_step"]],
                                             "ratio_vs_baseline": every_step["seconds"] / epoch},
        f"checkpoint_minutes_{MINUTES}": {
            "check_seconds_per_step": check, "saves_per_epoch": round(saves, 5),
            "overhead_seconds_per_epoch": overhead, "share_of_demo_epoch": overhead / epoch,
            "epoch_ratio_vs_baseline": (epoch + overhead) / epoch,
            # a long epoch (UCF101 or Kinetics on GPUs): one ResNet18 save every 10 minutes of training
            "resnet18_share_of_training_time": full["save_seconds"] / (MINUTES * 60),
        },
    }, indent=2))


if __name__ == "__main__":
    main()
