"""Shared bits of the benchmarks: where the real clip is, and a timer."""
from __future__ import annotations

import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_CLIP = SHARED_DATA / "videos" / "ucf101" / "PushUps" / "v_PushUps_g02_c03.avi"


def source_clip(workdir: Path) -> tuple[Path, str]:
    """The real UCF101 clip when ../shared/data is here, else a generated demo video."""
    if REAL_CLIP.exists():
        return REAL_CLIP, "real UCF101 clip v_PushUps_g02_c03 (320x240)"
    from cocon.data.demo import generate_demo

    paths = generate_demo(workdir / "demo", num_classes=2, videos_per_class=2, num_frames=48, width=320, height=240)
    return paths[0], "generated demo video (320x240), ../shared/data absent"


def best_time(function, repeats: int = 2) -> float:
    """The fastest of ``repeats`` runs, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)
