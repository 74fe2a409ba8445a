"""Frames per second of importing a frame and flow tree (manifest probe, rgb and flow shards)
against computing the same views from the videos (frames decoded, OpenCV TV-L1), on the
same real clips, in one run. Prints JSON.

The clips are the first ``--frames`` frames of the real UCF101 clips in ../shared/data, at
``--short-side`` (240, the UCF101 default). The computed flow is written as each layout's
tree (tests/trees.py writes them as the tools do), which is then imported."""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2

from bench.common import SHARED_DATA
from cocon.config import load_schema, validate
from cocon.data.manifest import run_manifest
from cocon.data.shards import ShardReader
from cocon.data.trees import LAYOUTS
from cocon.data.video import iter_frames
from cocon.views.flow import dequantize_flow, extract_flow
from cocon.views.frames import extract_frames
from tests.trees import write_tree


def short_copies(folder: Path, count: int, frames: int) -> list[Path]:
    """The first ``frames`` frames of ``count`` real UCF101 clips, as MJPG AVIs."""
    sources = sorted((SHARED_DATA / "videos" / "ucf101").glob("*/*.avi"))[:count]
    if not sources:
        raise SystemExit(f"needs the real clips in {SHARED_DATA / 'videos' / 'ucf101'}")
    copies = []
    for source in sources:
        target = folder / "videos" / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        capture, writer = cv2.VideoCapture(str(source)), None
        for _ in range(frames):
            ok, frame = capture.read()
            if not ok:
                break
            if writer is None:
                writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), 25, frame.shape[1::-1])
            writer.write(frame)
        writer.release()
        capture.release()
        copies.append(target)
    return copies


def dataset(root: Path, name: str, short_side: int, imports: dict | None = None) -> dict:
    config = {"layout": "folder", "root": str(root), "test_fraction": 0, "shard_size": 1000,
              "frames": {"short_side": short_side}, "flow": {"method": "tvl1"}, "views": ["rgb", "flow"]}
    if imports:
        config["frames"]["import"] = imports["frames"]
        config["flow"]["import"] = imports["flow"]
    config = validate(config, load_schema("dataset.schema.yaml"), "bench")
    config["name"] = name
    return config


def stages(config: dict, out: Path) -> float:
    """Seconds for the manifest, frames and flow stages of ``config`` into ``out``, one process."""
    start = time.perf_counter()
    run_manifest(config, out / "manifest.tsv", out / "excluded.tsv")
    extract_frames(config, out / "manifest.tsv", "00000", out / "rgb.h5")
    extract_flow(config, out / "rgb.h5", out / "flow.h5", threads=1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=3, help="real UCF101 clips")
    parser.add_argument("--frames", type=int, default=12, help="frames of each clip")
    parser.add_argument("--short-side", type=int, default=240)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        copies = short_copies(workdir, args.clips, args.frames)
        computed = dataset(workdir / "videos", "computed", args.short_side)
        computed_seconds = stages(computed, workdir / "computed")
        videos = {}
        with ShardReader(workdir / "computed" / "flow.h5") as flow:
            for copy in copies:
                frames = list(iter_frames(copy, args.short_side))
                videos[copy.stem] = (copy.parent.name, frames, dequantize_flow(flow.read(copy.stem), 20))
            total = sum(len(frames) for _, frames, _ in videos.values())
        imported = {}
        for layout in LAYOUTS:
            imports = write_tree(layout, workdir / "trees" / layout, videos)
            seconds = stages(dataset(workdir / "videos", layout, args.short_side, imports), workdir / layout)
            with ShardReader(workdir / layout / "rgb.h5") as rgb:
                # a TSN tree holds one frame fewer per video (it never writes frame 0)
                stored = sum(rgb.num_frames(video_id) for video_id in rgb.video_ids)
            imported[layout] = {"seconds": round(seconds, 3), "frames": stored,
                                "frames_per_s": round(stored / seconds, 1),
                                "speedup_per_frame": round((stored / seconds) / (total / computed_seconds), 1)}
    print(json.dumps({
        "benchmark": "import_views", "machine": platform.processor() or platform.machine(),
        "clips": len(copies), "frames": total, "frame_size": list(frames[0].shape[1::-1]),
        "computed": {"what": "manifest probe of the videos, frames decoded, OpenCV TV-L1 (default parameters), "
                             "1 process", "seconds": round(computed_seconds, 3),
                     "frames_per_s": round(total / computed_seconds, 2)},
        "imported": {"what": "manifest probe of the tree (every JPEG checked), rgb and flow shards, 1 process",
                     **imported},
    }, indent=2))


if __name__ == "__main__":
    main()
