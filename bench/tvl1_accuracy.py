"""TV-L1 in PyTorch (cocon.views.tvl1) against OpenCV's DualTVL1OpticalFlow on frames of every
real clip: per clip, the mean end-point error and the fraction of values within one level
after the +-bound uint8 quantisation, at the default parameters and the project's default
frame size (short side 240). Then pairs/s of both at 1 and 2 threads on the same frames.
Prints JSON.

    .venv/bin/python -m bench.tvl1_accuracy [--videos ../shared/data/videos] [--pairs 3]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cocon.data.video import iter_frames
from cocon.views.flow import quantize_flow
from cocon.views.tvl1 import tvl1_flow

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov"}


def default_videos() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def clip_pairs(path: Path, pairs: int, short_side: int = 240, gap: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """``pairs`` consecutive grey frame pairs of ``path``, starting every ``gap`` frames."""
    grey = []
    need = (pairs - 1) * gap + 2
    for index, frame in enumerate(iter_frames(path, short_side)):
        grey.append(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        if index + 1 >= need:
            break
    if len(grey) < 2:
        return []
    starts = [s for s in range(0, len(grey) - 1, gap)][:pairs]
    return [(grey[s], grey[s + 1]) for s in starts]


def opencv_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return cv2.optflow.DualTVL1OpticalFlow_create().calc(first, second, None)


def torch_flow(pairs, device: str = "cpu") -> np.ndarray:
    first = torch.from_numpy(np.stack([a for a, _ in pairs])).float().to(device)
    second = torch.from_numpy(np.stack([b for _, b in pairs])).float().to(device)
    return tvl1_flow(first, second).permute(0, 2, 3, 1).cpu().numpy()


def compare(ours: np.ndarray, ref: np.ndarray, bound: float = 20.0) -> dict:
    """EPE and quantised agreement of flows ``[N, H, W, 2]``."""
    epe = np.sqrt(((ours - ref) ** 2).sum(-1))
    levels = np.abs(quantize_flow(ours, bound).astype(np.int16) - quantize_flow(ref, bound).astype(np.int16))
    return {"epe": float(epe.mean()), "epe_p99": float(np.percentile(epe, 99)),
            "within_1_level": float((levels <= 1).mean()), "exact_level": float((levels == 0).mean()),
            "mean_ref_magnitude": float(np.sqrt((ref ** 2).sum(-1)).mean())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=Path, default=default_videos())
    parser.add_argument("--pairs", type=int, default=3, help="pairs per clip")
    parser.add_argument("--short-side", type=int, default=240)
    parser.add_argument("--speed-pairs", type=int, default=4, help="pairs timed at 1 and 2 threads (0: skip)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    clips = sorted(p for p in args.videos.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    per_clip, all_ours, all_ref, speed_pairs = [], [], [], []
    for path in clips:
        pairs = clip_pairs(path, args.pairs, args.short_side)
        if not pairs:
            per_clip.append({"clip": str(path.relative_to(args.videos)), "error": "fewer than 2 frames"})
            continue
        ref = np.stack([opencv_flow(a, b) for a, b in pairs])
        ours = torch_flow(pairs, args.device)
        row = {"clip": str(path.relative_to(args.videos)), "size": list(pairs[0][0].shape[::-1]),
               "pairs": len(pairs), **compare(ours, ref)}
        row["goal_met"] = row["epe"] <= 0.3 and row["within_1_level"] >= 0.95
        per_clip.append(row)
        print(json.dumps(row), flush=True)
        all_ours.append(ours.reshape(-1, 2))
        all_ref.append(ref.reshape(-1, 2))
        if len(speed_pairs) < args.speed_pairs and pairs[0][0].shape == (240, 320):
            speed_pairs.extend(pairs[: args.speed_pairs - len(speed_pairs)])
    result = {"clips": per_clip, "all_goal_met": all(r.get("goal_met", False) for r in per_clip)}
    if all_ours:
        result["overall"] = compare(np.concatenate(all_ours)[None], np.concatenate(all_ref)[None])
    if speed_pairs:
        speed = {"frame_size": list(speed_pairs[0][0].shape[::-1]), "pairs": len(speed_pairs)}
        for threads in (1, 2):
            cv2.setNumThreads(threads)
            torch.set_num_threads(threads)
            start = time.perf_counter()
            for a, b in speed_pairs:
                opencv_flow(a, b)
            speed[f"opencv_pairs_per_s_{threads}_threads"] = len(speed_pairs) / (time.perf_counter() - start)
            start = time.perf_counter()
            torch_flow(speed_pairs, "cpu")
            speed[f"torch_batched_pairs_per_s_{threads}_threads"] = len(speed_pairs) / (time.perf_counter() - start)
        result["speed_cpu"] = speed
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
