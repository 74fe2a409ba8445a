"""bf16 against fp32: the same CoCon training run in both precisions, step by step.

Joint CoCon pretraining (rgb + flow, dense NCE + lambda (sync + alpha sim)) with the demo
config's model and loss settings (config/datasets/demo.yaml: 6 blocks of 4 frames, 2
predicted, temperature 0.0049, lambda 10, Adam at lr 1e-3, batch 8), from the same seed,
the same initial weights and the same few batches (cycled), once with
``pretrain.precision: fp32`` and once with ``bf16`` (torch's autocast, on the CPU too): the
training step of cocon.train.pretrain (training_step). Prints JSON with both loss
curves and how far apart they are (``compare``); tests/test_pretrain.py and
bench/gpu_check.py run it.

    .venv/bin/python -m bench.precision [--device cuda] [--steps 300] [--seeds 5] [--threads 1]

Builds its own demo views (12 generated videos, rgb and Farneback flow) in a temporary
folder unless --views names a views folder with its manifest.tsv beside it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from cocon.config import load_dataset_config, load_schema, validate
from cocon.data.clips import ClipDataset, ClipSpec, EpochSampler, split_videos
from cocon.data.loader import ClipBatches
from cocon.train.distributed import Runtime
from cocon.train.pretrain import METHODS, MultiViewDPC, build_model, training_step

REPO = Path(__file__).resolve().parents[1]
VIEWS = ["rgb", "flow"]


def demo_settings(width: float, size: int) -> dict:
    """The demo config's pretraining settings at encoder ``width`` and ``size``-px crops."""
    demo = load_dataset_config(REPO / "config" / "datasets" / "demo.yaml", "demo")["pretrain"]
    return {**demo, "width": width, "input_size": {**demo["input_size"], "rgb": size, "flow": size}}


def build_demo_views(root: Path) -> Path:
    """12 generated demo videos (64 x 48, 20 frames) with rgb and flow shards under ``root``."""
    from cocon.data.demo import generate_demo
    from cocon.data.manifest import run_manifest
    from cocon.views.flow import extract_flow
    from cocon.views.frames import extract_frames

    dataset = validate({"layout": "demo", "root": str(root / "videos"), "test_fraction": 0.25,
                        "demo": {"num_classes": 3, "videos_per_class": 4, "num_frames": 20, "width": 64, "height": 48},
                        "frames": {"short_side": 48}, "flow": {"method": "farneback"}},
                       load_schema("dataset.schema.yaml"), "precision")
    dataset["name"] = "precision"
    generate_demo(root / "videos", **dataset["demo"])
    run_manifest(dataset, root / "manifest.tsv", root / "excluded.tsv")
    extract_frames(dataset, root / "manifest.tsv", "00000", root / "views" / "rgb" / "00000.h5")
    extract_flow(dataset, root / "views" / "rgb" / "00000.h5", root / "views" / "flow" / "00000.h5")
    return root / "views"


def fixed_batches(views_dir: Path, manifest: Path, settings: dict, count: int = 4) -> list[dict]:
    """``count`` training batches of split 1's train videos (epochs 0, 1, ... of the sampler:
    other windows and augmentations), made once: both precisions train on the same clips."""
    spec = ClipSpec(settings["num_blocks"], settings["block_length"], settings["frame_stride"])
    videos, _, _ = split_videos(manifest, 1, settings["val_fraction"], settings["seed"])
    dataset = ClipDataset(videos, views_dir, VIEWS, settings["input_size"], spec, train=True, seed=settings["seed"])
    batch_size = min(settings["batch_size"], len(dataset))
    sampler = EpochSampler(len(dataset), batch_size, settings["seed"])
    batches = []
    for epoch in range(count):
        sampler.set_epoch(epoch)
        batches.append(next(iter(ClipBatches(dataset, "cpu", torch.device("cpu"), batch_size=batch_size,
                                             sampler=sampler, drop_last=True))))
    return batches


def loss_curve(batches: list[dict], settings: dict, precision: str, device: torch.device, steps: int,
               seed: int = 0) -> tuple[list[float], torch.Tensor]:
    """The loss of each of ``steps`` CoCon training steps in ``precision``, cycling over
    ``batches``, from the weights that ``seed`` initialises; and the first step's gradient."""
    settings = {**settings, "precision": precision}
    batches = [{view: batch[view].to(device) for view in VIEWS} for batch in batches]
    torch.manual_seed(seed)
    model = MultiViewDPC({view: build_model(settings, view) for view in VIEWS}).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    runtime, method = Runtime(0, 1, device), METHODS["cocon"]
    losses, first_gradient = [], None
    for step in range(steps):
        total, _, _ = training_step(model, batches[step % len(batches)], optimizer, runtime, settings, method)
        if first_gradient is None:
            first_gradient = torch.cat([param.grad.flatten() for param in model.parameters()]).cpu()
        losses.append(total.detach())
    return torch.stack(losses).tolist(), first_gradient


def last_mean(curve: list[float], span: int = 10) -> float:
    return sum(curve[-span:]) / len(curve[-span:])


def compare(views_dir: Path, manifest: Path, device: torch.device, steps: int, width: float = 0.125,
            size: int = 32, seeds: int = 1) -> dict:
    """Both loss curves from seed 0 and how far apart they are:
    - at the first step (the same weights and clips: bfloat16's rounding alone), the
      relative difference of the losses and the cosine between the gradients;
    - at the end, the mean loss over the last 10 steps, its difference between precisions
      as a share of the fp32 run's progress (its first loss less that mean);
    - with ``seeds`` > 1, the yardstick: the same share between fp32 runs from other seeds."""
    settings = demo_settings(width, size)
    batches = fixed_batches(views_dir, manifest, settings)
    started = time.perf_counter()
    fp32, fp32_gradient = loss_curve(batches, settings, "fp32", device, steps)
    fp32_seconds = time.perf_counter() - started
    bf16, bf16_gradient = loss_curve(batches, settings, "bf16", device, steps)
    bf16_seconds = time.perf_counter() - started - fp32_seconds
    progress = fp32[0] - last_mean(fp32)
    result = {"device": str(device), "steps": steps, "width": width, "size": size, "views": VIEWS,
              "batches": f"{len(batches)} fixed batches of {len(batches[0]['video'])} clips, cycled",
              "settings": "config/datasets/demo.yaml pretrain, method cocon",
              "first_step_relative_difference": abs(bf16[0] - fp32[0]) / fp32[0],
              "first_step_gradient_cosine": float(torch.nn.functional.cosine_similarity(
                  fp32_gradient.double(), bf16_gradient.double(), dim=0)),
              "fp32_first_last10": [fp32[0], last_mean(fp32)], "bf16_first_last10": [bf16[0], last_mean(bf16)],
              "last10_difference_share_of_progress": abs(last_mean(bf16) - last_mean(fp32)) / progress,
              "fp32_seconds": fp32_seconds, "bf16_seconds": bf16_seconds, "fp32": fp32, "bf16": bf16}
    if seeds > 1:
        others = [last_mean(loss_curve(batches, settings, "fp32", device, steps, seed)[0]) for seed in range(1, seeds)]
        result["fp32_other_seeds_last10"] = others
        result["fp32_seed_difference_share_of_progress"] = max(abs(other - last_mean(fp32)) for other in others) / progress
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--size", type=int, default=32, help="crop size of rgb and flow")
    parser.add_argument("--seeds", type=int, default=1, help="fp32 runs from this many seeds: the yardstick")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--views", type=Path, default=None, help="a views folder, manifest.tsv beside it")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        views = args.views or build_demo_views(Path(tmp))
        result = compare(views, views.parent / "manifest.tsv", device, args.steps, args.width, args.size,
                         args.seeds)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
