"""TV-L1 seconds per frame pair at the default frame resolution (short side 240: 320x240 for
UCF101) against the old default (short side 128: 171x128), in the same run, one process,
OpenCV's DualTVL1 at its default parameters; and what that costs for all of UCF101 and
HMDB51 in core-hours. Prints JSON.

Frames are the real clip's, stored as the frames stage stores them (resized to the short
side, JPEG quality 90, decoded again, grey), so the timed work is exactly the flow stage's
``calc``. The stage also times ``compute_flow`` at 240 stored at 128 (``flow.short_side``:
TV-L1 plus resize and quantize) to show that storing smaller costs nothing measurable.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import cv2
import numpy as np

from bench.common import SHARED_DATA, best_time, source_clip
from cocon.config import load_schema, validate
from cocon.data.shards import decode_jpeg, encode_jpeg
from cocon.data.video import iter_frames, probe_video
from cocon.views.flow import compute_flow, to_gray

# UCF101: 13,320 videos of about 186 frames each (the dataset's published statistics)
UCF101_PAIRS = 2_480_000
HMDB51_VIDEOS = 6_766


def stored_frames(clip: Path, short_side: int, count: int) -> np.ndarray:
    """RGB frames ``[count, H, W, 3]`` as the frames stage stores and the flow stage reads them."""
    frames = [decode_jpeg(np.frombuffer(encode_jpeg(frame, 90), np.uint8), str(clip))
              for _, frame in zip(range(count), iter_frames(clip, short_side))]
    return np.stack(frames)


def hmdb51_pairs() -> tuple[int, str]:
    """Frame pairs of HMDB51 estimated from the mean frame count of the real HMDB51 clips here."""
    clips = sorted((SHARED_DATA / "videos" / "hmdb51_reencoded").glob("*/*"))
    counts = [probe_video(clip).num_frames for clip in clips]
    counts = [count for count in counts if count]
    if not counts:
        # no real clips: HMDB51 clips are 1 to about 10 s at 30 fps; assume 3.5 s
        return HMDB51_VIDEOS * 104, "assumed 105 frames per video (no real HMDB51 clip found)"
    mean = float(np.mean(counts))
    return round(HMDB51_VIDEOS * (mean - 1)), (
        f"{HMDB51_VIDEOS} videos x (mean frames - 1) of the {len(counts)} real HMDB51 clips here "
        f"(frames {min(counts)}-{max(counts)}, mean {mean:.1f}); HMDB51's real mean may differ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8, help="frame pairs timed at each resolution")
    parser.add_argument("--short-sides", type=int, nargs=2, default=[240, 128], metavar=("DEFAULT", "OLD"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        clip, source = source_clip(Path(tmp))
        frames = {side: stored_frames(clip, side, args.pairs + 1) for side in args.short_sides}
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    seconds, sizes = {}, {}
    for side, rgb in frames.items():
        gray = to_gray(rgb)
        sizes[side] = f"{gray[0].shape[1]}x{gray[0].shape[0]}"

        def loop(gray=gray):
            for index in range(len(gray) - 1):
                tvl1.calc(gray[index], gray[index + 1], None)

        seconds[side] = best_time(loop) / args.pairs
    default, old = args.short_sides
    dataset = validate({"layout": "folder", "root": ".", "flow": {"short_side": old}},
                       load_schema("dataset.schema.yaml"), "bench")
    stage = best_time(lambda: compute_flow(frames[default], dataset["flow"])) / args.pairs
    hmdb_pairs, hmdb_basis = hmdb51_pairs()

    def core_hours(pairs: int, per_pair: float) -> float:
        return round(pairs * per_pair / 3600, 0)

    print(json.dumps({
        "benchmark": "flow_cost", "method": "tvl1 (cv2.optflow.DualTVL1OpticalFlow_create(), defaults)",
        "source": source, "pairs_timed": args.pairs, "processes": 1, "opencv_threads": 1,
        "machine": platform.processor() or platform.machine(), "timing": "best of 2 runs",
        "seconds_per_pair": {sizes[side]: round(seconds[side], 3) for side in args.short_sides},
        f"ratio_{sizes[default]}_to_{sizes[old]}": round(seconds[default] / seconds[old], 2),
        "pixel_ratio": round(np.prod([int(v) for v in sizes[default].split("x")])
                             / np.prod([int(v) for v in sizes[old].split("x")]), 2),
        f"stage_seconds_per_pair_{sizes[default]}_stored_at_{old}": round(stage, 3),
        "estimate": {
            "ucf101": {"pairs": UCF101_PAIRS, "basis": "13,320 videos x ~186 frames",
                       **{f"core_hours_{sizes[side]}": core_hours(UCF101_PAIRS, seconds[side])
                          for side in args.short_sides}},
            "hmdb51": {"pairs": hmdb_pairs, "basis": hmdb_basis,
                       "note": f"timed on UCF101's {sizes[default]}; HMDB51 frames at short side {default} "
                               "are about as large (320x240 originals)",
                       **{f"core_hours_{sizes[side]}": core_hours(hmdb_pairs, seconds[side])
                          for side in args.short_sides}},
        },
    }, indent=2))


if __name__ == "__main__":
    main()
