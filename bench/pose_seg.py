"""Frames per second on one core of the pose and seg stages (rgb shard in, JPEG decode,
model, heatmaps or mask, gzip HDF5 out) against a bare loop over the same MediaPipe
model on the same decoded frames. Prints JSON."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from bench.common import best_time, source_clip
from cocon.config import load_schema, validate
from cocon.data.shards import ShardReader, ShardWriter, encode_jpeg
from cocon.data.video import iter_frames
from cocon.views.pose import extract_pose
from cocon.views.seg import extract_seg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    from mediapipe.python.solutions.pose import Pose

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        clip, source = source_clip(workdir)
        encoded = [encode_jpeg(frame, 90) for _, frame in zip(range(args.frames), iter_frames(clip, 128))]
        with ShardWriter(workdir / "rgb.h5", "rgb", {"shard": "00000"}) as writer:
            writer.add_video("clip", encoded, {key: 0 for key in (
                "label", "label_index", "fps", "num_frames", "orig_width", "orig_height", "width", "height",
                "source_path")})
        with ShardReader(workdir / "rgb.h5") as reader:
            frames = reader.read("clip")
        dataset = validate({"layout": "folder", "root": "."}, load_schema("dataset.schema.yaml"), "bench")
        dataset["name"] = "bench"

        def bare(enable_segmentation: bool):
            def loop():
                with Pose(static_image_mode=False, model_complexity=1, enable_segmentation=enable_segmentation) as pose:
                    for frame in frames:
                        pose.process(frame)
            return loop

        results = {}
        for view, extract, segmentation in (("pose", extract_pose, False), ("seg", extract_seg, True)):
            bare_seconds = best_time(bare(segmentation))
            stage_seconds = best_time(lambda: extract(dataset, workdir / "rgb.h5", workdir / f"{view}.h5", threads=1))
            results[view] = {"bare_mediapipe_fps": round(len(frames) / bare_seconds, 1),
                             "stage_fps_1_process": round(len(frames) / stage_seconds, 1),
                             "overhead_ratio": round(stage_seconds / bare_seconds, 3)}
    print(json.dumps({"benchmark": "pose_seg", "source": source, "frames": len(frames),
                      "frame_size": list(np.asarray(frames).shape[1:3][::-1]), "seg_model": dataset["seg"]["model"],
                      **results}, indent=2))


if __name__ == "__main__":
    main()
