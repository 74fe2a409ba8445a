"""The HDF5 view-shard format (docs/FORMAT.md): one file per (dataset, view, shard).

Layout, readable with plain h5py or ``h5ls -r``::

    /                       attrs: format, format_version, view, dataset, shard, + view params
    /videos/<video_id>/     attrs: label, label_index, fps, num_frames, orig_width, orig_height
    /videos/<video_id>/frames   the per-frame data of the view (see VIEW_LAYOUTS)

Every stored byte is checked by HDF5 itself: each chunk of every dataset carries a
Fletcher-32 checksum (the ``fletcher32`` filter), and the metadata (object headers with
their attributes, group and chunk indexes) is written in the HDF5 1.10 format, whose
structures carry checksums too. HDF5 fails a read of damaged bytes; the reader turns that
failure into a ShardError naming the shard, the video and the frames.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import cv2
import h5py
import numpy as np

from cocon.parallel import process_pool

FORMAT_NAME = "cocon-view-shard"
# 2: every dataset chunked with Fletcher-32 checksums, metadata in the checksummed 1.10 format
FORMAT_VERSION = 2
# the oldest HDF5 file format whose metadata structures carry checksums
LIBVER = ("v110", "latest")
# rgb bytes are checksummed in chunks of this size: a damaged chunk names the few frames it
# holds, and a clip's read checks at most two partial chunks beyond its own bytes
RGB_CHUNK_BYTES = 64 * 1024
# what h5py raises when HDF5 finds damage: OSError reading data, KeyError opening an object
# (its header), RuntimeError iterating over attributes
HDF5_DAMAGE = (OSError, KeyError, RuntimeError)
# verification reads a video in blocks of about this size, so that a long pose video
# never has to fit in memory at once
VERIFY_BLOCK_BYTES = 64 * 1024 * 1024
REBUILD_HINT = "Rebuild the shard with snakemake's --forcerun; `cocon verify` lists all damage (docs/FORMAT.md)"

# What /videos/<id>/frames holds for each view; index t is always frame t of the video.
VIEW_LAYOUTS = {
    "rgb": "uint8 [total bytes]: the JPEG files of all frames back to back, with "
           "offsets int64 [T+1]: frame t is frames[offsets[t]:offsets[t+1]]",
    "flow": "uint8 [T-1, H, W, 2]: (u, v) from frame t to t+1, quantized over [-bound, bound]",
    "pose": "uint8 [T, 17, H, W]: COCO keypoint confidence heatmaps, 255 = 1.0",
    "seg": "uint8 [T, H, W]: person-segmentation confidence, 255 = 1.0",
}


class ShardError(ValueError):
    """A view shard is missing, unreadable, damaged, or not in the format this code reads."""


def _store_attr(attrs: h5py.AttributeManager, key: str, value) -> None:
    """Text as fixed-length UTF-8, which HDF5 keeps inside the checksummed object header:
    h5py's default, variable-length text, lives in HDF5's global heap, which has no
    checksum (a damaged byte there changes the text silently, or hangs the reader)."""
    if value is None:
        value = "none"
    is_text = isinstance(value, str) or (
        isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value))
    if is_text:
        encoded = np.char.encode(np.array(value), "utf-8")
        attrs.create(key, encoded, dtype=h5py.string_dtype("utf-8", max(encoded.dtype.itemsize, 1)))
    else:
        attrs[key] = np.asarray(value) if isinstance(value, (list, tuple)) else value


def _read_attrs(attrs: h5py.AttributeManager) -> dict:
    """Attributes with text as ``str`` (h5py reads fixed-length text as bytes)."""
    def decoded(value):
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, np.ndarray) and value.dtype.kind == "S":
            return [item.decode() for item in value]
        return value
    return {key: decoded(value) for key, value in attrs.items()}


def _create_checksummed(group: h5py.Group, name: str, data: np.ndarray, **options) -> None:
    """A dataset whose every chunk carries a Fletcher-32 checksum, which HDF5 checks on each
    read. An empty one is left unchunked: it stores no bytes, and HDF5 cannot chunk a
    zero-length dimension."""
    if data.size == 0:
        group.create_dataset(name, data=data)
    else:
        group.create_dataset(name, data=data, fletcher32=True, **options)


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
        self._file = h5py.File(self.tmp_path, "w", libver=LIBVER)
        for key, value in {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "view": view, **attrs}.items():
            _store_attr(self._file.attrs, key, value)
        self._videos = self._file.create_group("videos")

    def add_video(self, video_id: str, frames, attrs: Mapping[str, object], **dataset_options) -> None:
        """Store one video's ``frames`` (JPEG bytes per frame for rgb, an array otherwise, with
        h5py's ``dataset_options`` such as chunks and compression); every dataset is checksummed."""
        if "/" in video_id:
            raise ValueError(f"video id {video_id!r} contains '/', which HDF5 reads as a subgroup")
        group = self._videos.create_group(video_id)
        for key, value in attrs.items():
            _store_attr(group.attrs, key, value)
        if self.view == "rgb":
            # one contiguous byte array plus offsets: a clip is one read, not one per frame
            offsets = np.zeros(len(frames) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(encoded) for encoded in frames])
            data = np.frombuffer(b"".join(frames), dtype=np.uint8)
            _create_checksummed(group, "frames", data, chunks=(min(RGB_CHUNK_BYTES, len(data)),))
            _create_checksummed(group, "offsets", offsets, chunks=offsets.shape)
        else:
            _create_checksummed(group, "frames", np.asarray(frames), **dataset_options)

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
    """Reads any frame range of any video of one view shard.

    HDF5 checks the checksums of every chunk it reads; damage is a ShardError that names
    the shard, the video and the frames, never wrong data and never a bare h5py OSError.
    """

    def __init__(self, path: str | os.PathLike, view: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise ShardError(f"{self.path}: view shard not found")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise ShardError(f"{self.path}: not a readable HDF5 file ({error})") from error
        self._groups: dict[str, h5py.Group] = {}
        try:
            with self._damage_is_an_error("its HDF5 header"):
                self.view = self._check_header(view)
        except ShardError:
            self._file.close()
            raise

    def _check_header(self, view: str | None) -> str:
        """The view this shard holds, once its format, version and view are the expected ones."""
        attrs = _read_attrs(self._file.attrs)
        if attrs.get("format") != FORMAT_NAME or "videos" not in self._file:
            raise ShardError(f"{self.path}: not a {FORMAT_NAME} file")
        version = int(attrs["format_version"])
        if version != FORMAT_VERSION:
            raise ShardError(
                f"{self.path}: format version {version}; this code reads version {FORMAT_VERSION}, whose every byte "
                "carries a checksum: rebuild the view shards (snakemake <target> --forcerun frames)"
            )
        stored_view = str(attrs["view"])
        if view is not None and view != stored_view:
            raise ShardError(f"{self.path}: holds the {stored_view!r} view, expected {view!r}")
        return stored_view

    @contextmanager
    def _damage_is_an_error(self, what: str):
        """h5py raises a bare OSError, KeyError or RuntimeError when HDF5 finds a metadata
        checksum wrong: name ``what`` it was reading."""
        try:
            yield
        except HDF5_DAMAGE as error:
            raise ShardError(f"{self.path}: {what}: damaged (HDF5: {error}). {REBUILD_HINT}") from error

    @property
    def attrs(self) -> dict:
        with self._damage_is_an_error("the shard's attributes"):
            return _read_attrs(self._file.attrs)

    @property
    def video_ids(self) -> list[str]:
        with self._damage_is_an_error("the list of videos"):
            return list(self._file["videos"].keys())

    def __contains__(self, video_id: str) -> bool:
        with self._damage_is_an_error("the list of videos"):
            return video_id in self._file["videos"]

    def video_attrs(self, video_id: str) -> dict:
        group = self._group(video_id)
        with self._damage_is_an_error(f"video {video_id!r}, its attributes"):
            return _read_attrs(group.attrs)

    def num_frames(self, video_id: str) -> int:
        if self.view == "rgb":
            return int(self._dataset(video_id, "offsets").shape[0] - 1)
        return int(self._dataset(video_id, "frames").shape[0])

    def _group(self, video_id: str) -> h5py.Group:
        # opened once: training reads the same videos over and over, and each read opens
        # the group's datasets
        if video_id not in self._groups:
            if video_id not in self:
                raise ShardError(f"{self.path}: no video {video_id!r} in this shard")
            with self._damage_is_an_error(f"video {video_id!r}, its HDF5 metadata"):
                self._groups[video_id] = self._file["videos"][video_id]
        return self._groups[video_id]

    def _dataset(self, video_id: str, name: str) -> h5py.Dataset:
        group = self._group(video_id)
        with self._damage_is_an_error(f"video {video_id!r}, the HDF5 metadata of its {name}"):
            return group[name]

    def _read_rows(self, video_id: str, name: str, rows: slice, frames: range) -> np.ndarray:
        """``videos/<video_id>/<name>[rows]``, read for ``frames``. h5py fails the read of a
        chunk whose checksum is wrong with a bare OSError; this finds which chunks fail and
        raises a ShardError naming the frames they hold."""
        dataset = self._dataset(video_id, name)
        try:
            return dataset[rows]
        except HDF5_DAMAGE as error:
            damaged = self._damaged_frames(video_id, name, _failing_chunk_rows(dataset, rows)) or _in_words(frames)
            raise ShardError(f"{self.path}: video {video_id!r}, {damaged}: damaged (HDF5: {error}). "
                             f"{REBUILD_HINT}") from error

    def _damaged_frames(self, video_id: str, name: str, failing_rows: list[range]) -> str:
        """The frames that the failing rows of dataset ``name`` store, in words ('' for none)."""
        if not failing_rows:
            return ""
        if self.view != "rgb":
            return _in_words(row for rows in failing_rows for row in rows)
        if name == "offsets":
            return "its frame index (offsets)"
        offsets = self._read_rows(video_id, "offsets", slice(None), range(self.num_frames(video_id)))
        # frame t is bytes offsets[t]:offsets[t+1]; those overlapping a failing byte range are damaged
        return _in_words(frame for rows in failing_rows
                         for frame in range(np.searchsorted(offsets, rows.start, "right") - 1,
                                            np.searchsorted(offsets, rows.stop, "left")))

    def read_raw(self, video_id: str, start: int = 0, stop: int | None = None, step: int = 1):
        """The stored frames as they are on disk: for rgb, a list of JPEG byte arrays."""
        frames = range(*slice(start, stop, step).indices(self.num_frames(video_id)))
        if self.view != "rgb":
            return self._read_rows(video_id, "frames", slice(start, stop, step), frames)
        if not frames:
            return []
        first, last = frames[0], frames[-1]
        offsets = self._read_rows(video_id, "offsets", slice(first, last + 2), frames)
        data = self._read_rows(video_id, "frames", slice(offsets[0], offsets[-1]), frames)
        base = offsets[0]
        return [data[offsets[index - first] - base:offsets[index - first + 1] - base] for index in frames]

    def read(self, video_id: str, start: int = 0, stop: int | None = None, step: int = 1) -> np.ndarray:
        """Frames ``start:stop:step`` decoded: rgb as RGB uint8 ``[T, H, W, 3]``, other views as stored."""
        raw = self.read_raw(video_id, start, stop, step)
        if self.view != "rgb":
            return np.asarray(raw)
        if not raw:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        frames = range(*slice(start, stop, step).indices(self.num_frames(video_id)))
        return np.stack([decode_jpeg(encoded, self._where(video_id, index)) for index, encoded in zip(frames, raw)])

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
        decoded = {index: decode_jpeg(raw[index - first], self._where(video_id, index)) for index in np.unique(indices)}
        return np.stack([decoded[index] for index in indices])

    def _where(self, video_id: str, frame: int) -> str:
        return f"{self.path}: video {video_id!r}, frame {frame}"

    def verify_video(self, video_id: str) -> tuple[int, list[str]]:
        """Read every stored byte of ``video_id``, so that HDF5 checks every checksum: its
        frame count and the damage found, one line each (none when the video is whole)."""
        try:
            self.video_attrs(video_id)
            count = self.num_frames(video_id)
            bytes_per_frame = self._dataset(video_id, "frames").nbytes // max(count, 1)
        except ShardError as error:
            return 0, [str(error)]
        frames_per_block = max(1, VERIFY_BLOCK_BYTES // max(bytes_per_frame, 1))
        damage = []
        for start in range(0, count, frames_per_block):
            try:
                self.read_raw(video_id, start, start + frames_per_block)
            except ShardError as error:
                # damaged offsets fail every block alike: say so once
                if str(error) not in damage:
                    damage.append(str(error))
        return count, damage

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _failing_chunk_rows(dataset: h5py.Dataset, rows: slice) -> list[range]:
    """The rows (along axis 0) of each chunk under ``rows`` that HDF5 fails to read: every
    dataset with stored bytes is chunked (the writer checksums chunks), and reading the
    rows of one chunk checks the chunks of those rows only."""
    start, stop, _ = rows.indices(dataset.shape[0])
    rows_per_chunk = dataset.chunks[0]
    failing = []
    for first in range(start - start % rows_per_chunk, stop, rows_per_chunk):
        chunk_rows = range(first, min(first + rows_per_chunk, dataset.shape[0]))
        try:
            dataset[chunk_rows.start:chunk_rows.stop]
        except HDF5_DAMAGE:
            failing.append(chunk_rows)
    return failing


def _in_words(frames) -> str:
    """'frame 3', 'frames 3..7' or 'frames 3, 9..12'."""
    frames = sorted(set(int(frame) for frame in frames))
    runs: list[list[int]] = []
    for frame in frames:
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    text = ", ".join(str(first) if first == last else f"{first}..{last}" for first, last in runs)
    return f"frame {text}" if len(frames) == 1 else f"frames {text}"


@dataclass
class Verification:
    """What ``verify_shards`` read, and the damage it found: one line per damaged part."""
    shards: int = 0
    videos: int = 0
    frames: int = 0
    damaged_shards: int = 0
    damage: list[str] = field(default_factory=list)

    def __add__(self, other: "Verification") -> "Verification":
        return Verification(self.shards + other.shards, self.videos + other.videos, self.frames + other.frames,
                            self.damaged_shards + other.damaged_shards, self.damage + other.damage)

    def summary(self) -> str:
        return f"{self.shards} shards, {self.videos} videos, {self.frames} frames checked"

    def raise_on_damage(self) -> None:
        if self.damage:
            raise ShardError(f"{self.damaged_shards} of {self.shards} shards damaged ({self.videos} videos, "
                             f"{self.frames} frames checked):\n" + "\n".join(self.damage))


def verify_shard(path: str | os.PathLike) -> Verification:
    """Read every stored byte of one view shard (every attribute, index and frame)."""
    result = Verification(shards=1)
    try:
        with ShardReader(path) as reader:
            reader.attrs  # reading them checks their checksum
            for video_id in reader.video_ids:
                frames, damage = reader.verify_video(video_id)
                result.videos += 1
                result.frames += frames
                result.damage += damage
    except ShardError as error:
        result.damage.append(str(error))
    result.damaged_shards = int(bool(result.damage))
    return result


def verify_shards(paths, threads: int = 1) -> Verification:
    """``verify_shard`` of every path, ``threads`` shards at a time."""
    paths = [str(path) for path in paths]
    if threads > 1 and len(paths) > 1:
        with process_pool(threads) as pool:
            results = list(pool.map(verify_shard, paths))
    else:
        results = [verify_shard(path) for path in paths]
    return sum(results, Verification())


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
