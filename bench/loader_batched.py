"""Pretraining clips per second of one loader process (cocon.data.clips.ClipDataset, rgb, 8x5
frames at 128 px, pretraining augmentation), side by side in one run: the code path before
issue 12 (frames made float, then cropped and resized; the per-frame colour jitter and
greying, a Python loop of torchvision calls per frame) against today's (the crop resized on
uint8 frames, then one batched jitter op over the clip's frames with per-frame factors, the
same draws). Also the time of each step of a sample, both ways. Builds its own rgb shard from
real clips (frames at short side 128, the project's default) unless --views names a views
folder. Prints JSON.

    .venv/bin/python -m bench.loader_batched [--videos ../shared/data/videos] [--clips 40]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
import torchvision.transforms.v2.functional as TF

import cocon.data.clips as clips
from cocon.data.clips import ClipDataset, ClipSpec, VideoRef
from cocon.data.shards import ShardReader, ShardWriter, encode_jpeg
from cocon.data.video import iter_frames

VIDEO_SUFFIXES = {".mp4", ".avi"}


def build_shard(videos_dir: Path, out: Path, count: int, short_side: int = 128, max_frames: int = 130) -> list[VideoRef]:
    paths = sorted(p for p in videos_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)[:count]
    refs = []
    attrs = dict(label="x", label_index=0, fps=25.0, num_frames=0, orig_width=0, orig_height=0, width=0,
                 height=0, source_path="x")
    with ShardWriter(out / "rgb" / "00000.h5", "rgb", {"shard": "00000", "short_side": short_side}) as writer:
        for index, path in enumerate(paths):
            frames = []
            for frame in iter_frames(path, short_side):
                frames.append(encode_jpeg(frame, 90))
                if len(frames) == max_frames:
                    break
            video_id = f"v{index:03d}"
            writer.add_video(video_id, frames, {**attrs, "num_frames": len(frames)})
            refs.append(VideoRef(video_id, "00000", len(frames), 0))
    return refs


def clips_per_second(dataset: ClipDataset, clips_count: int, repeats: int) -> float:
    best = float("inf")
    for repeat in range(repeats):
        start = time.perf_counter()
        for item in range(clips_count):
            dataset[(repeat, item % len(dataset))]
        best = min(best, time.perf_counter() - start)
    return clips_count / best


def apply_frame_jitter_per_frame(clip: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """The jitter path before issue 12 for the same drawn factors: torchvision's per-image
    functions in a Python loop over the frames (clips.jitter_frames_per_frame, given the draws)."""
    frames = []
    for frame, (brightness, contrast, saturation, hue, grey) in zip(clip, factors.tolist()):
        frame = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(
            frame, brightness), contrast), saturation), hue)
        frames.append(TF.rgb_to_grayscale(frame, num_output_channels=3) if grey else frame)
    return torch.stack(frames).clamp(0, 1)


def step_times(views: Path, refs: list[VideoRef], spec: ClipSpec, repeats: int = 20) -> dict:
    """Milliseconds of each step of one rgb sample (the same video and window)."""
    reader = ShardReader(views / "rgb" / "00000.h5", view="rgb")
    indices = clips.window_indices(refs[0].num_frames, spec, 0)
    out = {}

    def timed(name, fn):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            result = fn()
        out[name] = 1000 * (time.perf_counter() - start) / repeats
        return result

    frames = timed("read_and_decode_jpeg", lambda: reader.read_frames(refs[0].video_id, indices))
    tensor = timed("to_float_tensor_before", lambda: clips.to_view_tensor("rgb", frames))
    crop = timed("resized_crop_float_before", lambda: TF.resized_crop(tensor, 0, 0, 100, 120, [128, 128],
                                                                      antialias=True))
    stored = timed("to_uint8_tensor", lambda: clips.clip_tensor("rgb", frames))
    timed("resized_crop_uint8", lambda: TF.resize(stored[..., :100, :120].contiguous(
        memory_format=torch.channels_last), [128, 128], antialias=True).float().div_(255).contiguous())
    timed("jitter_per_frame_before", lambda: clips.jitter_frames_per_frame(crop, torch.Generator().manual_seed(0)))
    timed("jitter_batched", lambda: clips.jitter_frames(crop, torch.Generator().manual_seed(0)))
    timed("normalize", lambda: clips.normalize("rgb", crop))
    reader.close()
    return out


def rgb_shard_refs(videos_dir: Path, views: Path, count: int, build: bool) -> list[VideoRef]:
    """The videos of ``views``' rgb shard 00000 that have at least 2 frames, the shard first
    built from ``count`` real clips of ``videos_dir`` when ``build``."""
    if build:
        refs = build_shard(videos_dir, views, count)
    else:
        with ShardReader(views / "rgb" / "00000.h5", view="rgb") as reader:
            refs = [VideoRef(video, "00000", reader.num_frames(video), 0) for video in reader.video_ids]
    return [ref for ref in refs if ref.num_frames >= 2]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos")
    parser.add_argument("--views", type=Path, default=None, help="a views folder with rgb/00000.h5 (else built)")
    parser.add_argument("--num-videos", type=int, default=8)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a loader worker uses 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = ClipSpec(8, 5, 3)
    with tempfile.TemporaryDirectory() as tmp:
        views = args.views or Path(tmp)
        refs = rgb_shard_refs(args.videos, views, args.num_videos, build=args.views is None)
        dataset = ClipDataset(refs, views, ["rgb"], {"rgb": 128}, spec, train=True, seed=0)
        result = {"device": "cpu", "torch_threads": args.threads, "clips": args.clips, "videos": len(refs),
                  "clip": "8 blocks x 5 frames, 128 px, rgb, pretraining augmentation"}
        # the path before issue 12: float frames into the crop, per-frame jitter
        with mock.patch.object(clips, "apply_frame_jitter", apply_frame_jitter_per_frame), \
                mock.patch.object(clips, "clip_tensor", clips.to_view_tensor):
            result["before_clips_per_s"] = clips_per_second(dataset, args.clips, args.repeats)
        with mock.patch.object(clips, "clip_tensor", clips.to_view_tensor):
            result["batched_jitter_only_clips_per_s"] = clips_per_second(dataset, args.clips, args.repeats)
        result["today_clips_per_s"] = clips_per_second(dataset, args.clips, args.repeats)
        result["speedup"] = result["today_clips_per_s"] / result["before_clips_per_s"]
        result["step_ms"] = step_times(views, refs, spec)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
