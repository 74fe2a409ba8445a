"""Pose detection rate per real clip at the stored frames' resolution against MediaPipe on
the original decoded frames. Prints JSON.

Every clip of ../shared/data/videos (UCF101, UCF101 re-encoded, HMDB51, Kinetics) goes
through the real stages: the manifest, the frames stage (decode, resize to the short side,
JPEG quality 90 into an rgb shard), then the pose stage (cocon.views.pose, the defaults:
MediaPipe, min_tracking_confidence 0.2, heatmaps at 64 px) on that shard. The baseline is the same pose computation
(``compute_pose``, same model and settings) on the frames as decoded, at their own size,
with no resize and no JPEG. Both are measured at the default short side (240, that of the
UCF101/HMDB51 configs) and at 128 (the old default).

A frame counts as "person found" when any heatmap of the frame reaches confidence 0.5
(uint8 128, the criterion of tests/test_pose_seg.py). ``original_jpeg_rate`` is the
baseline's frames through a JPEG quality 90 round trip only (no resize): MediaPipe tracks
its person from frame to frame, so on clips where it barely holds the person such a small
change alone moves the rate, and the gap between the two baselines shows how much. Only
the first ``--frames`` frames of each clip are used, to keep the run to a few minutes.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from bench.common import SHARED_DATA
from cocon.config import load_schema, validate
from cocon.data.datasets import VIDEO_EXTENSIONS
from cocon.data.manifest import run_manifest
from cocon.data.shards import ShardReader, ShardWriter, decode_jpeg, encode_jpeg
from cocon.data.video import iter_frames
from cocon.parallel import process_pool
from cocon.views.frames import extract_frames
from cocon.views.pose import DEFAULT_MIN_TRACKING_CONFIDENCE, compute_pose, extract_pose

VIDEOS = SHARED_DATA / "videos"
CONFIDENT = 128  # uint8 heatmap value of confidence 0.5
GOAL = 0.9


def real_clips() -> list[Path]:
    """Every clip of ../shared/data/videos: <collection>/<class>/<file>."""
    return sorted(path for path in VIDEOS.glob("*/*/*") if path.suffix.lower() in VIDEO_EXTENSIONS)


def rate(heatmaps: np.ndarray) -> float:
    """Share of frames whose strongest heatmap value is confidence >= 0.5."""
    return float((heatmaps.reshape(len(heatmaps), -1).max(axis=1) >= CONFIDENT).mean())


def original_rates(path: str, frames: int, settings: dict) -> tuple[float, float, list[int]]:
    """Pose on the clip's frames as decoded (no resize, no JPEG), and on the same frames after a
    JPEG quality 90 round trip; also their (width, height)."""
    cv2.setNumThreads(1)
    decoded = [frame for _, frame in zip(range(frames), iter_frames(path))]
    plain = np.stack([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in decoded])
    jpeg = np.stack([decode_jpeg(np.frombuffer(encode_jpeg(frame, 90), np.uint8), path) for frame in decoded])
    return rate(compute_pose(plain, settings)), rate(compute_pose(jpeg, settings)), [plain.shape[2], plain.shape[1]]


def first_frames(rgb_path: Path, out_path: Path, frames: int) -> None:
    """Copy the rgb shard keeping each video's first ``frames`` JPEG files byte for byte."""
    with ShardReader(rgb_path, view="rgb") as reader:
        # the writer sets format, format_version and view itself
        attrs = {key: value for key, value in reader.attrs.items() if key not in ("format", "format_version", "view")}
        with ShardWriter(out_path, "rgb", attrs) as writer:
            for video_id in reader.video_ids:
                raw = reader.read_raw(video_id, 0, frames)
                writer.add_video(video_id, [bytes(encoded) for encoded in raw],
                                 {**reader.video_attrs(video_id), "num_frames": len(raw)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=150, help="first frames of each clip (0: all)")
    parser.add_argument("--short-sides", type=int, nargs="+", default=[240, 128])
    parser.add_argument("--threads", type=int, default=2, help="processes (videos in parallel)")
    args = parser.parse_args()
    if not VIDEOS.is_dir():
        raise SystemExit(f"needs the real clips in {VIDEOS} (../shared/data beside the repository)")
    frames = args.frames or 10 ** 9
    clips = real_clips()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # one class folder per <collection>/<class>, so that the folder layout lists every clip
        for clip in clips:
            folder = workdir / "videos" / f"{clip.parts[-3]}__{clip.parts[-2]}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / clip.name).symlink_to(clip)
        per_side = {}
        for short_side in args.short_sides:
            dataset = validate({"layout": "folder", "root": str(workdir / "videos"), "test_fraction": 0,
                                "shard_size": 1000, "frames": {"short_side": short_side, "jpeg_quality": 90}},
                               load_schema("dataset.schema.yaml"), "bench")
            dataset["name"] = "bench"
            manifest = workdir / "manifest.tsv"
            rows = run_manifest(dataset, manifest, workdir / "excluded.tsv")
            if not all(row.ok for row in rows):
                raise SystemExit(f"unusable clips: {[(row.path, row.status) for row in rows if not row.ok]}")
            shard = rows[0].shard
            extract_frames(dataset, manifest, shard, workdir / f"rgb_{short_side}_all.h5")
            first_frames(workdir / f"rgb_{short_side}_all.h5", workdir / f"rgb_{short_side}.h5", frames)
            extract_pose(dataset, workdir / f"rgb_{short_side}.h5", workdir / f"pose_{short_side}.h5", args.threads)
            with ShardReader(workdir / f"pose_{short_side}.h5", view="pose") as pose, \
                    ShardReader(workdir / f"rgb_{short_side}.h5", view="rgb") as rgb:
                per_side[short_side] = {}
                for row in rows:
                    video = rgb.video_attrs(row.video_id)
                    per_side[short_side][row.video_id] = (rate(pose.read(row.video_id)),
                                                          [int(video["width"]), int(video["height"])],
                                                          int(video["num_frames"]))
        settings = dataset["pose"]
        ids = list(per_side[args.short_sides[0]])
        sources = {clip.stem: clip for clip in clips}
        paths = [str(sources[video_id]) for video_id in ids]
        with process_pool(args.threads) as pool:
            original = dict(zip(ids, pool.map(partial(original_rates, frames=frames, settings=settings), paths)))
    default = args.short_sides[0]
    results = {}
    for video_id in ids:
        orig_rate, orig_jpeg_rate, orig_size = original[video_id]
        used = per_side[default][video_id][2]
        entry = {"clip": str(sources[video_id].relative_to(VIDEOS)), "frames_used": used,
                 "original_size": "x".join(map(str, orig_size)), "original_rate": round(orig_rate, 3),
                 "original_jpeg_rate": round(orig_jpeg_rate, 3)}
        for short_side in args.short_sides:
            confident, size, _ = per_side[short_side][video_id]
            entry[f"size_{short_side}"] = "x".join(map(str, size))
            entry[f"rate_{short_side}"] = round(confident, 3)
            entry[f"ratio_{short_side}_to_original"] = round(confident / orig_rate, 3) if orig_rate else None
        results[video_id] = entry
    ratios = {video_id: entry[f"ratio_{default}_to_original"] for video_id, entry in results.items()}
    measured = [ratio for ratio in ratios.values() if ratio is not None]
    print(json.dumps({
        "benchmark": "pose_resolution",
        "criterion": "share of frames with a heatmap >= 0.5 (uint8 128); pose stage defaults (MediaPipe, 64 px heatmaps)",
        "min_tracking_confidence": settings.get("min_tracking_confidence", DEFAULT_MIN_TRACKING_CONFIDENCE),
        "frames_per_clip": f"first {args.frames} frames of each clip" if args.frames else "all frames",
        "default_short_side": default, "short_sides": args.short_sides, "jpeg_quality": 90,
        "goal": f"rate_{default} / original_rate >= {GOAL} on every clip",
        "clips": len(results),
        "clips_meeting_goal": sum(ratio >= GOAL for ratio in measured),
        "clips_without_detection_on_original": sorted(video_id for video_id, ratio in ratios.items() if ratio is None),
        "min_ratio": min(measured) if measured else None,
        "clips_below_goal": {video_id: ratio for video_id, ratio in ratios.items()
                             if ratio is not None and ratio < GOAL},
        "mean_rate": {name: round(float(np.mean([entry[key] for entry in results.values()])), 3) for name, key in (
            ("original", "original_rate"), ("original_jpeg", "original_jpeg_rate"),
            *((str(side), f"rate_{side}") for side in args.short_sides))},
        "seconds": round(time.perf_counter() - started, 1),
        "per_clip": results,
    }, indent=2))


if __name__ == "__main__":
    main()
