"""Video decoding with OpenCV, and the probe that decides whether a video is usable."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

# A container may announce a few frames more than the stream holds (B-frame padding,
# rounding in the AVI header); only a larger shortfall means the file was cut off.
TRUNCATION_TOLERANCE = 0.9


@dataclass(frozen=True)
class VideoProbe:
    """What decoding a whole video told us; ``status`` is ``ok`` or the reason to exclude it."""

    status: str
    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _describe_header(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head[4:8] == b"ftyp":
        # an MP4 keeps its index (moov) at the end unless written for streaming, so a cut-off
        # download has a valid header and no index
        return "an MP4/MOV container without a readable index: likely truncated"
    if head[:4] == b"RIFF":
        return "an AVI container whose headers do not parse: likely truncated or corrupt"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    if head and printable == len(head):
        return "a text file, not a video"
    return f"unrecognised header bytes {head[:8].hex()}"


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Decode every frame of ``path`` and report whether it is a usable video.

    Decoding everything (``grab`` skips colour conversion, so it is cheap) is the only
    way to catch a truncated file whose header still announces the full length.
    """
    path = Path(path)
    try:
        # a link whose target is gone is on disk but cannot be read: not "missing"
        if path.is_symlink() and not path.exists():
            return VideoProbe(f"unreadable: a broken symbolic link to {os.readlink(path)}")
        if not path.exists():
            return VideoProbe("missing: file not found on disk")
        if not path.is_file():
            return VideoProbe("unreadable: not a regular file")
        with open(path, "rb") as handle:
            first = handle.read(1)
    except OSError as error:
        return VideoProbe(f"unreadable: {error.strerror.lower() if error.strerror else error}")
    if not first:
        return VideoProbe("empty: zero-byte file")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return VideoProbe(f"undecodable: OpenCV cannot open it as a video ({_describe_header(path)})")
        announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        decoded = 0
        while capture.grab():
            decoded += 1
    finally:
        capture.release()
    if decoded == 0:
        return VideoProbe("no frames: the container opens but no frame decodes", fps=fps, width=width, height=height)
    if announced > 0 and decoded < TRUNCATION_TOLERANCE * announced:
        return VideoProbe(
            f"truncated: decoded {decoded} of the {announced} frames the container announces",
            decoded, fps, width, height,
        )
    return VideoProbe("ok", decoded, fps, width, height)


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) scaled so that the shorter side is ``short_side``, aspect kept."""
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def iter_frames(path: str | os.PathLike, short_side: int | None = None) -> Iterator[np.ndarray]:
    """Yield the BGR frames of a video (uint8 ``[H, W, 3]``), resized to ``short_side`` if given."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open it as a video")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if short_side is not None:
                height, width = frame.shape[:2]
                size = resized_size(width, height, short_side)
                if size != (width, height):
                    frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            yield frame
    finally:
        capture.release()
