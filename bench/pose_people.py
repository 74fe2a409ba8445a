"""How many people MediaPipe draws per frame in real scenes of several people, with
``pose.people: one`` (the legacy tracker, the baseline) and ``all`` (the Tasks
PoseLandmarker), and what ``all`` costs per frame. Prints JSON.

The clips are the re-encoded UCF101 ones of ../shared/data with two or more people
(Fencing, IceDancing, SalsaSpin, Basketball), their first ``--frames`` frames at the stored
frames' short side (240, DPC's). Each setting counts the people that the stage's own model
(``cocon.views.pose.pose_model``, a fresh one per clip as the stage makes) returns for each
frame; ``all`` is also run at ``min_detection_confidence`` 0.2, where the PoseLandmarker's
detector finds the second person far more often.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.common import SHARED_DATA
from cocon.config import load_schema, validate
from cocon.data.video import iter_frames
from cocon.views.pose import pose_model

CLIPS = ("Fencing/v_Fencing_g01_c06.mp4", "IceDancing/v_IceDancing_g02_c05.mp4", "SalsaSpin/v_SalsaSpin_g03_c01.mp4",
         "Basketball/v_Basketball_g01_c02.mp4", "Basketball/v_Basketball_g07_c04.mp4")
SETTINGS = {"one": {"people": "one"}, "all": {"people": "all"},
            "all_detection_0.2": {"people": "all", "min_detection_confidence": 0.2}}
FRAMES_SHORT_SIDE = 240


def people_counts(frames: list[np.ndarray], pose: dict) -> tuple[list[int], float]:
    """People per frame, and seconds per frame, of a fresh pose model with ``pose`` settings."""
    settings = validate({"layout": "folder", "root": ".", "pose": pose}, load_schema("dataset.schema.yaml"),
                        "bench")["pose"]
    model = pose_model(settings)
    try:
        start = time.perf_counter()
        counts = [len(model.people(frame)) for frame in frames]
        return counts, (time.perf_counter() - start) / len(frames)
    finally:
        model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="first frames of each clip")
    args = parser.parse_args()
    clips, seconds = {}, {name: [] for name in SETTINGS}
    for clip in CLIPS:
        path = SHARED_DATA / "videos" / "ucf101_24_reencoded" / clip
        frames = [np.ascontiguousarray(frame[..., ::-1])
                  for _, frame in zip(range(args.frames), iter_frames(path, FRAMES_SHORT_SIDE))]
        clips[clip] = {}
        for name, pose in SETTINGS.items():
            counts, per_frame = people_counts(frames, pose)
            seconds[name].append(per_frame)
            clips[clip][name] = {"share_of_frames_with": {f"{people} people": round(counts.count(people) / len(counts), 3)
                                                          for people in sorted(set(counts))},
                                 "two_or_more": round(float(np.mean(np.array(counts) >= 2)), 3)}
    ms = {name: round(1000 * float(np.mean(values)), 1) for name, values in seconds.items()}
    print(json.dumps({"frames_per_clip": args.frames, "short_side": FRAMES_SHORT_SIDE, "clips": clips,
                      "ms_per_frame": ms, "all_over_one_time_ratio": round(ms["all"] / ms["one"], 2)}, indent=2))


if __name__ == "__main__":
    main()
