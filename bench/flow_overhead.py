"""Flow frame pairs per second: our flow stage (HDF5 in, JPEG decode, TV-L1, quantize, gzip
HDF5 out) against a bare OpenCV loop over the same decoded frames. Prints JSON."""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import cv2

from bench.common import best_time, source_clip
from cocon.data.shards import ShardReader, ShardWriter
from cocon.views.flow import extract_flow, to_gray
from cocon.views.frames import encode_jpeg
from cocon.data.video import iter_frames
from cocon.config import validate, load_schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=16, help="frame pairs per video")
    parser.add_argument("--short-side", type=int, default=128)
    parser.add_argument("--method", choices=["tvl1", "farneback"], default="tvl1")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip, source = source_clip(workdir)
        frames = [encode_jpeg(frame, 90) for _, frame in zip(range(args.pairs + 1), iter_frames(clip, args.short_side))]
        with ShardWriter(workdir / "rgb.h5", "rgb", {"shard": "00000"}) as writer:
            for copy in range(2):
                writer.add_video(f"clip_{copy}", frames, {"label": "x", "label_index": 0, "fps": 25.0,
                                 "num_frames": len(frames), "orig_width": 320, "orig_height": 240, "width": 0,
                                 "height": 0, "source_path": str(clip)})
        dataset = validate({"layout": "folder", "root": ".", "flow": {"method": args.method}},
                           load_schema("dataset.schema.yaml"), "bench")
        dataset["name"] = "bench"
        with ShardReader(workdir / "rgb.h5") as reader:
            gray = to_gray(reader.read("clip_0"))
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()

        def bare_loop():
            for _ in range(2):
                for index in range(len(gray) - 1):
                    if args.method == "tvl1":
                        tvl1.calc(gray[index], gray[index + 1], None)
                    else:
                        cv2.calcOpticalFlowFarneback(gray[index], gray[index + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)

        pairs = 2 * args.pairs
        bare = best_time(bare_loop)
        ours = best_time(lambda: extract_flow(dataset, workdir / "rgb.h5", workdir / "flow.h5", threads=1))
        ours_parallel = best_time(lambda: extract_flow(dataset, workdir / "rgb.h5", workdir / "flow.h5", threads=2))
    print(json.dumps({
        "benchmark": "flow_overhead", "method": args.method, "source": source,
        "frame_size": list(gray[0].shape[::-1]), "pairs": pairs, "machine": platform.processor() or platform.machine(),
        "bare_opencv_pairs_per_s": round(pairs / bare, 3),
        "stage_pairs_per_s_1_process": round(pairs / ours, 3),
        "stage_pairs_per_s_2_processes": round(pairs / ours_parallel, 3),
        "overhead_ratio_1_process": round(ours / bare, 3),
        "speedup_2_processes": round(ours / ours_parallel, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
