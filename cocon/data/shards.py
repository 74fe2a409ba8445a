"""The HDF5 view-shard format (docs/FORMAT.md): one file per (dataset, view, shard).

Layout, readable with plain h5py or ``h5ls -r``::

    /                       attrs: format, format_version, view, dataset, shard, + view params
    /videos/<video_id>/     attrs: label, label_index, fps, num_frames, orig_width, orig_height
    /videos/<video_id>/frames   the per-frame data of the view (see VIEW_LAYOUTS)
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import cv2
import h5py
import numpy as np

FORMAT_NAME = "cocon-view-shard"
FORMAT_VERSION = 1

# What /videos/<id>/frames holds for each view; index t is always frame t of the video.
VIEW_LAYOUTS = {
    "rgb": "uint8 [total bytes]: the JPEG files of all frames back to back, with "
           "offsets int64 [T+1]: frame t is frames[offsets[t]:offsets[t+1]]",
    "flow": "uint8 [T-1, H, W, 2]: (u, v) from frame t to t+1, quantized over [-bound, bound]",
    "pose": "uint8 [T, 17, H, W]: COCO keypoint confidence heatmaps, 255 = 1.0",
    "seg": "uint8 [T, H, W]: person-segmentation confidence, 255 = 1.0",
}


class ShardError(ValueError):
    """A view shard is missing, unreadable, or not in the format this code reads."""


def _attr_value(value):
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        if all(isinstance(item, str) for item in value):
            return np.array(value, dtype=h5py.string_dtype())
        return np.asarray(value)
    return value


class ShardWriter:
    """Writes one view shard atomically: into ``<path>.tmp``, renamed on a clean ``close``.

    A killed job therefore leaves at most a ``.tmp`` file, never a file that looks finished.
    """

    def __init__(self, path: str | os.PathLike, view: str, attrs: Mapping[str, object]):
        if view not in VIEW_LAYOUTS:
            raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEW_LAYOUTS)}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.view = view
        self._file = h5py.File(self.tmp_path, "w")
        self._file.attrs["format"] = FORMAT_NAME
        self._file.attrs["format_version"] = FORMAT_VERSION
        self._file.attrs["view"] = view
        for key, value in attrs.items():
            self._file.attrs[key] = _attr_value(value)
        self._videos = self._file.create_group("videos")

    def add_video(self, video_id: str, frames, attrs: Mapping[str, object], **dataset_options) -> None:
        if "/" in video_id:
            raise ValueError(f"video id {video_id!r} contains '/', which HDF5 reads as a subgroup")
        group = self._videos.create_group(video_id)
        for key, value in attrs.items():
            group.attrs[key] = _attr_value(value)
        if self.view == "rgb":
            # one contiguous byte array plus offsets: a clip is one read, not one per frame
            offsets = np.zeros(len(frames) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(encoded) for encoded in frames])
            data = np.frombuffer(b"".join(frames), dtype=np.uint8)
            group.create_dataset("frames", data=data)
            group.create_dataset("offsets", data=offsets)
        else:
            group.create_dataset("frames", data=frames, **dataset_options)

    def close(self) -> None:
        self._file.close()
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        self._file.close()
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ShardReader:
    """Reads any frame range of any video of one view shard."""

    def __init__(self, path: str | os.PathLike, view: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise ShardError(f"{self.path}: view shard not found")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise ShardError(f"{self.path}: not a readable HDF5 file ({error})") from error
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT_NAME or "videos" not in self._file:
            self._file.close()
            raise ShardError(f"{self.path}: not a {FORMAT_NAME} file")
        if int(attrs["format_version"]) != FORMAT_VERSION:
            self._file.close()
            raise ShardError(
                f"{self.path}: format version {attrs['format_version']}, this code reads {FORMAT_VERSION}"
            )
        self.view = str(attrs["view"])
        if view is not None and view != self.view:
            self._file.close()
            raise ShardError(f"{self.path}: holds the {self.view!r} view, expected {view!r}")

    @property
    def attrs(self) -> dict:
        return dict(self._file.attrs)

    @property
    def video_ids(self) -> list[str]:
        return list(self._file["videos"].keys())

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._file["videos"]

    def video_attrs(self, video_id: str) -> dict:
        return dict(self._group(video_id).attrs)

    def num_frames(self, video_id: str) -> int:
        group = self._group(video_id)
        if self.view == "rgb":
            return int(group["offsets"].shape[0] - 1)
        return int(group["frames"].shape[0])

    def _group(self, video_id: str) -> h5py.Group:
        try:
            return self._file["videos"][video_id]
        except KeyError:
            raise ShardError(f"{self.path}: no video {video_id!r} in this shard") from None

    def read_raw(self, video_id: str, start: int = 0, stop: int | None = None, step: int = 1):
        """The stored frames as they are on disk: for rgb, a list of JPEG byte arrays."""
        group = self._group(video_id)
        if self.view != "rgb":
            return group["frames"][start:stop:step]
        indices = range(*slice(start, stop, step).indices(self.num_frames(video_id)))
        if not indices:
            return []
        first, last = indices[0], indices[-1]
        offsets = group["offsets"][first:last + 2]
        data = group["frames"][offsets[0]:offsets[-1]]
        base = offsets[0]
        return [data[offsets[index - first] - base:offsets[index - first + 1] - base] for index in indices]

    def read(self, video_id: str, start: int = 0, stop: int | None = None, step: int = 1) -> np.ndarray:
        """Frames ``start:stop:step`` decoded: rgb as RGB uint8 ``[T, H, W, 3]``, other views as stored."""
        raw = self.read_raw(video_id, start, stop, step)
        if self.view != "rgb":
            return np.asarray(raw)
        if not raw:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        return np.stack([decode_jpeg(encoded, f"{self.path}:{video_id}") for encoded in raw])

    def read_frames(self, video_id: str, indices) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed), decoded as ``read`` does, with
        one contiguous read from the smallest to the largest index."""
        indices = np.asarray(indices, dtype=np.int64)
        first, last = int(indices.min()), int(indices.max())
        if first < 0 or last >= self.num_frames(video_id):
            raise ShardError(f"{self.path}: frames {first}..{last} requested, {video_id!r} has {self.num_frames(video_id)}")
        raw = self.read_raw(video_id, first, last + 1)
        if self.view != "rgb":
            return np.asarray(raw)[indices - first]
        where = f"{self.path}:{video_id}"
        decoded = {index: decode_jpeg(raw[index - first], where) for index in np.unique(indices)}
        return np.stack([decoded[index] for index in indices])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encode_jpeg(frame_bgr: np.ndarray, quality: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {frame_bgr.shape}")
    return encoded.tobytes()


def decode_jpeg(encoded: np.ndarray, where: str) -> np.ndarray:
    """JPEG bytes to an RGB uint8 image."""
    frame = cv2.imdecode(np.asarray(encoded, dtype=np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise ShardError(f"{where}: a stored frame is not a decodable JPEG")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


@contextmanager
def open_shards(paths) -> Iterator[list[ShardReader]]:
    readers = [ShardReader(path) for path in paths]
    try:
        yield readers
    finally:
        for reader in readers:
            reader.close()
