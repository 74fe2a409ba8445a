"""The two training loaders on this machine's CPU, side by side in one run:
``pretrain.loader: cpu`` (ClipDataset's clips made one by one, then collated) against
``device`` (the stored bytes read and the draws made per clip, then the batch decoded and
augmented at once by DeviceClips; run here on the CPU), through cocon.data.loader.ClipBatches
with the same keys: batches of 16 rgb clips of 8x5 frames at 128 px with pretraining's
augmentation, in one process and one thread (as one loader worker runs). Builds its own
rgb shard from the real clips (frames at short side 128) unless --views names a views
folder. Prints JSON. The GPU figure, where the device path is meant to run, is
bench.gpu_check's.

    .venv/bin/python -m bench.loader_device [--batches 6] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.loader_batched import rgb_shard_refs
from cocon.data.clips import ClipDataset, ClipSpec, EpochSampler
from cocon.data.loader import ClipBatches


def clips_per_second(dataset: ClipDataset, loader: str, batch_size: int, repeats: int) -> float:
    """The best of ``repeats`` epochs (each with its own draws) of ``dataset`` in batches."""
    sampler = EpochSampler(len(dataset), batch_size, seed=0)
    batches = ClipBatches(dataset, loader, torch.device("cpu"), batch_size=batch_size, sampler=sampler,
                          drop_last=True)
    best = float("inf")
    for epoch in range(repeats):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        clips = sum(len(batch["video"]) for batch in batches)
        best = min(best, time.perf_counter() - start)
    return clips / best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos")
    parser.add_argument("--views", type=Path, default=None, help="a views folder with rgb/00000.h5 (else built)")
    parser.add_argument("--num-videos", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=6, help="batches per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        views = args.views or Path(tmp)
        refs = rgb_shard_refs(args.videos, views, args.num_videos, build=args.views is None)
        items = args.batch_size * args.batches
        dataset = ClipDataset((refs * -(-items // len(refs)))[:items], views, ["rgb"], {"rgb": 128}, ClipSpec(8, 5, 3),
                              train=True, seed=0)
        result = {"device": "cpu", "torch_threads": args.threads, "videos": len(refs), "batch_size": args.batch_size,
                  "batches": args.batches, "clip": "8 blocks x 5 frames, 128 px, rgb, pretraining augmentation"}
        for loader in ("cpu", "device"):
            result[f"{loader}_loader_clips_per_s"] = clips_per_second(dataset, loader, args.batch_size, args.repeats)
        result["device_over_cpu"] = result["device_loader_clips_per_s"] / result["cpu_loader_clips_per_s"]
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
