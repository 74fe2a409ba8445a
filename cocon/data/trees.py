"""Frame and flow trees that other tools wrote, read where they lie.

Five layouts, each OpenCV TV-L1 from decoded frame ``t`` to ``t + 1`` (x positive right,
y positive down), stored as JPEG, quantised ``round(255 (f + b) / 2b)`` over a bound ``b``:

- ``denseflow`` (mmaction2's ``build_rawframes.py``, which runs open-mmlab/denseflow):
  ``<video>/img_%05d.jpg`` from 0 (from 1 when mmaction2 decoded them with ``--use-opencv``),
  ``flow_x_%05d.jpg`` / ``flow_y_%05d.jpg`` (or ``x_`` / ``y_``) from 0, flow ``i`` is frame
  ``i`` to ``i + 1``: N frames, N - 1 flows; mmaction2 calls it with ``-b=20``.
- ``tsn`` (yjxiong/dense_flow): ``img_%05d.jpg`` and ``flow_x_%05d.jpg`` from 1; ``img_k`` is
  decoded frame ``k`` (frame 0 is never written) and ``flow_k`` goes from frame ``k - 1`` to
  ``k``: N - 1 images and N - 1 flows, so the first flow has no image of its start.
- ``twostream`` (the two-stream TV-L1 zips, feichtenhofer/gpu_flow): ``jpegs_256/<video>/
  frame%06d.jpg`` from 1 (image ``k`` is decoded frame ``k - 1``), ``tvl1_flow/{u,v}/<video>/
  frame%06d.jpg`` from 1 (flow ``k`` goes from image ``k`` to ``k + 1``); +-20, or min-max per
  flow with 4 float32 per flow (min_u, max_u, min_v, max_v) in ``<video>.bin``.
- ``memdpc`` (DPC/MemDPC's ``extract_ff.py``): ``frame/<class>/<video>/image_%05d.jpg`` from 1
  (decoded frame ``k - 1``), ``flow/<class>/<video>/flow_%05d.jpg`` from 1 (image ``k`` to
  ``k + 1``), one 3-channel JPEG per flow holding (u, v, 128) in OpenCV's BGR order; +-20.
- ``coclr_lmdb`` (CoCLR's ``convert_video_to_lmdb.py`` over memdpc folders): one LMDB per
  modality, one value per video, a msgpack list of the JPEG files of its folder in sorted
  order, keyed ``'%09d'`` by the video's place in ``__order__``; item ``i`` is decoded frame
  ``i`` (the flow from frame ``i`` to ``i + 1``).

A video's folder is found under the layout's folder by the video's name, with or without
a class folder above it. Each image of a video is mapped to the decoded frame it holds, so
that frames and flows are checked against each other and stored aligned by index; nothing
is shifted or filled in. What does not fit gives the video a status that excludes it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import lmdb
import msgpack
import numpy as np

LAYOUTS = ("denseflow", "tsn", "twostream", "memdpc", "coclr_lmdb")
# the bound every layout's own scripts use (mmaction2 and TSN pass -b=20, MemDPC hard-codes 20)
DEFAULT_BOUND = 20
# layouts whose scripts hard-code the bound: a `bound` key there is refused
FIXED_BOUND_LAYOUTS = ("memdpc", "coclr_lmdb")
MINMAX = "minmax"


class TreeError(ValueError):
    """An import tree as a whole cannot be read (a missing root, an LMDB that does not open)."""


@dataclass(frozen=True)
class FolderLayout:
    """Where one layout keeps a video's images, relative to the import root."""

    frames_dir: str                 # folder of the video folders ('' = the root itself)
    frame_pattern: str              # regex of a frame file, group 1 the index
    frame_bases: tuple[int, ...]    # the index the first frame may have
    frame_offset: str               # decoded frame of index k: 'base' = k - first index, 'k', 'k-1'
    flow_dirs: tuple[str, ...]      # one folder (both components in it) or two (u, v)
    flow_patterns: tuple[str, ...]  # regex per component (one for a 3-channel flow)
    flow_base: int                  # the index of the first flow
    flow_start_offset: int          # flow k starts at decoded frame k - offset
    frame_format: str = ""          # names of absent files in messages
    flow_formats: tuple[str, ...] = ()


FOLDER_LAYOUTS = {
    "denseflow": FolderLayout("", r"img_(\d+)\.jpg", (0, 1), "base", ("",),
                              (r"(?:flow_)?x_(\d+)\.jpg", r"(?:flow_)?y_(\d+)\.jpg"), 0, 0,
                              "img_{:05d}.jpg", ("flow_x_{:05d}.jpg", "flow_y_{:05d}.jpg")),
    "tsn": FolderLayout("", r"img_(\d+)\.jpg", (1,), "k", ("",),
                        (r"(?:flow_)?x_(\d+)\.jpg", r"(?:flow_)?y_(\d+)\.jpg"), 1, 1,
                        "img_{:05d}.jpg", ("flow_x_{:05d}.jpg", "flow_y_{:05d}.jpg")),
    "twostream": FolderLayout("jpegs_256", r"frame(\d+)\.jpg", (1,), "k-1", ("tvl1_flow/u", "tvl1_flow/v"),
                              (r"frame(\d+)\.jpg", r"frame(\d+)\.jpg"), 1, 1,
                              "frame{:06d}.jpg", ("frame{:06d}.jpg", "frame{:06d}.jpg")),
    "memdpc": FolderLayout("frame", r"image_(\d+)\.jpg", (1,), "k-1", ("flow",), (r"flow_(\d+)\.jpg",), 1, 1,
                           "image_{:05d}.jpg", ("flow_{:05d}.jpg",)),
}
# the flows of these layouts are one 3-channel JPEG, u and v in OpenCV's channels 0 and 1
THREE_CHANNEL_FLOW = ("memdpc", "coclr_lmdb")
# frames that a layout never writes: TSN's dense_flow writes each image with the flow that
# ends at it, so decoded frame 0 has no image and the flow from it no frame to align with
UNWRITTEN_FIRST_FRAME = ("tsn",)


@dataclass(frozen=True)
class FrameSeries:
    """One video's frames in a tree: image ``j`` is decoded frame ``first + j``."""

    where: str                      # the video's folder, or 'lmdb#key'
    first: int
    names: tuple[str, ...]          # per image, for messages
    files: tuple[str, ...] = ()     # folder layouts: the image files
    lmdb: tuple[str, str] | None = None

    @property
    def count(self) -> int:
        return len(self.names)

    def read(self) -> list[bytes]:
        if self.lmdb is not None:
            return read_lmdb_value(*self.lmdb)
        return [Path(path).read_bytes() for path in self.files]


@dataclass(frozen=True)
class FlowSeries:
    """One video's flows in a tree: flow ``j`` goes from decoded frame ``first + j`` to the next.

    ``files`` holds one tuple per flow: (u file, v file), or (the 3-channel file,)."""

    layout: str
    where: str
    first: int
    names: tuple[str, ...]
    files: tuple[tuple[str, ...], ...] = ()
    lmdb: tuple[str, str] | None = None
    bin_path: str | None = None
    formats: tuple[str, ...] = ()
    base: int = 0

    @property
    def count(self) -> int:
        return len(self.names)

    def name_of(self, start: int) -> str:
        """The name the flow from decoded frame ``start`` has (or would have) in this tree."""
        if self.lmdb is not None:
            return f"item {start - self.first + self.base}"
        index = start - self.first + self.base
        return self.formats[0].format(index)

    def read(self) -> list[tuple[bytes, ...]]:
        """Per flow, its encoded image(s): (u, v) for two-file layouts, (3-channel,) otherwise."""
        if self.lmdb is not None:
            return [(item,) for item in read_lmdb_value(*self.lmdb)]
        return [tuple(Path(path).read_bytes() for path in paths) for paths in self.files]

    def read_minmax(self) -> np.ndarray:
        """float32 ``[count, 4]``: (min_u, max_u, min_v, max_v) of each flow, from its ``.bin``."""
        values = np.fromfile(self.bin_path, dtype="<f4")
        return values.reshape(-1, 4)


# ---------------------------------------------------------------------------------------
# JPEG checks: cheap enough to run on every image of a dataset at planning's next step


SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, None when it has none."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill bytes
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if marker in SOF_MARKERS and position + 9 <= len(data):
            height = int.from_bytes(data[position + 5:position + 7], "big")
            width = int.from_bytes(data[position + 7:position + 9], "big")
            return width, height
        position += 2 + length
    return None


def check_jpeg(data: bytes, name: str) -> tuple[int, int] | str:
    """(width, height) of a whole, decodable JPEG; else the status that excludes its video."""
    if not data:
        return f"empty: {name} is a zero-byte file"
    if data[:2] != b"\xff\xd8":
        return f"unreadable: {name} is not a JPEG file"
    # a cut-off copy or download ends without the end-of-image marker (some writers pad with zeros)
    if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return f"unreadable: {name} is a truncated JPEG (no end-of-image marker)"
    size = jpeg_size(data)
    if size is None or cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
        return f"unreadable: {name} does not decode as a JPEG image"
    return size


def check_images(images: list[bytes], names, what: str) -> tuple[int, int] | str:
    """The one (width, height) of a video's images, or the status of the first bad one."""
    first_size = None
    for data, name in zip(images, names):
        size = check_jpeg(data, name)
        if isinstance(size, str):
            return size
        if first_size is None:
            first_size = size
        elif size != first_size:
            return (f"misaligned: {name} is {size[0]}x{size[1]} where the video's first {what} "
                    f"{names[0]} is {first_size[0]}x{first_size[1]}")
    if first_size is None:
        return f"empty: no {what}"
    return first_size


# ---------------------------------------------------------------------------------------
# Finding a video's folder


def layout_folder(root: Path, sub: str) -> Path:
    """The layout's folder ``sub`` under ``root``, also when ``root`` is itself a folder of that
    path (``tvl1_flow`` for ``tvl1_flow/u``, or ``jpegs_256`` for ``jpegs_256``)."""
    if not sub:
        return root
    if (root / sub).is_dir():
        return root / sub
    parts = Path(sub).parts
    for position, part in enumerate(parts):
        if part == root.name and root.joinpath(*parts[position + 1:]).is_dir():
            return root.joinpath(*parts[position + 1:])
    return root / sub


@lru_cache(maxsize=64)
def _folder_index(base: str) -> dict[str, list[str]]:
    """Lower-cased folder name -> the folders of that name in ``base`` and in its subfolders."""
    index: dict[str, list[str]] = {}
    try:
        children = sorted(os.scandir(base), key=lambda entry: entry.name)
    except OSError:
        return index
    for child in children:
        if not child.is_dir():
            continue
        index.setdefault(child.name.lower(), []).append(child.path)
        try:
            grandchildren = sorted(os.scandir(child.path), key=lambda entry: entry.name)
        except OSError:
            continue
        for grandchild in grandchildren:
            if grandchild.is_dir():
                index.setdefault(grandchild.name.lower(), []).append(grandchild.path)
    return index


def find_video_folder(base: Path, video_id: str, label: str) -> Path | str:
    """The folder of ``video_id`` under ``base``: ``base/<label>/<video>``, ``base/<video>``, or the
    one folder of that name (any letter case) one level down; a status when there is none."""
    for candidate in (base / label / video_id, base / label.replace(" ", "_") / video_id, base / video_id):
        if candidate.is_dir():
            return candidate
    found = _folder_index(str(base)).get(video_id.lower(), [])
    if len(found) == 1:
        return Path(found[0])
    if found:
        return f"missing: {len(found)} folders named {video_id} under {base} ({', '.join(found[:3])}), none in {label}/"
    return f"missing: no folder {video_id} under {base} (nor in a class folder)"


def _indexed_files(folder: Path, pattern: str) -> dict[int, str]:
    regex = re.compile(pattern)
    files = {}
    for entry in os.scandir(folder):
        match = regex.fullmatch(entry.name)
        if match:
            files[int(match.group(1))] = entry.path
    return files


def _gap(indices: list[int], formatter: str) -> str | None:
    """The first index missing from a run of ``indices``, in words."""
    expected = range(indices[0], indices[0] + len(indices))
    if indices == list(expected):
        return None
    present = set(indices)
    missing = next(index for index in range(indices[0], indices[-1]) if index not in present)
    return (f"{formatter.format(missing)} missing ({formatter.format(indices[0])}..{formatter.format(indices[-1])} "
            "otherwise present)")


# ---------------------------------------------------------------------------------------
# LMDB (CoCLR), opened once per process


@lru_cache(maxsize=8)
def _lmdb_env(path: str):
    if not Path(path).exists():
        raise TreeError(f"{path}: LMDB not found")
    try:
        return lmdb.open(path, subdir=os.path.isdir(path), readonly=True, lock=False, readahead=False,
                         meminit=False)
    except lmdb.Error as error:
        raise TreeError(f"{path}: not a readable LMDB ({error})") from None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _unpack(raw: bytes, what: str):
    # written with msgpack 0.6, which packs bytes and text alike as "raw": keep them bytes
    try:
        return msgpack.unpackb(raw, raw=True)
    except Exception as error:  # msgpack raises several unrelated types for bad bytes
        raise TreeError(f"{what}: not a msgpack value ({error})") from None


@lru_cache(maxsize=8)
def lmdb_catalogue(path: str) -> tuple[dict[str, str], dict[str, int]]:
    """A CoCLR LMDB's video name -> key ('%09d' of its place in ``__order__``) and key -> the
    length ``__vlen__`` records for it (``__vlen__`` runs in the order of ``__keys__``)."""
    env = _lmdb_env(path)
    with env.begin(write=False) as txn:
        order_raw, keys_raw, vlen_raw = txn.get(b"__order__"), txn.get(b"__keys__"), txn.get(b"__vlen__")
    if order_raw is None:
        raise TreeError(f"{path}: no __order__ key: not an LMDB of CoCLR's convert_video_to_lmdb.py")
    order = [_text(name) for name in _unpack(order_raw, f"{path}: __order__")]
    keys = {name.rsplit("/", 1)[-1]: "%09d" % position for position, name in enumerate(order)}
    lengths = {}
    if keys_raw is not None and vlen_raw is not None:
        lengths = dict(zip((_text(key) for key in _unpack(keys_raw, f"{path}: __keys__")),
                           (int(length) for length in _unpack(vlen_raw, f"{path}: __vlen__"))))
    return keys, lengths


def read_lmdb_value(path: str, key: str) -> list[bytes]:
    env = _lmdb_env(path)
    with env.begin(write=False) as txn:
        raw = txn.get(key.encode("ascii"))
    if raw is None:
        raise TreeError(f"{path}: key {key} absent")
    items = _unpack(raw, f"{path}: key {key}")
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, bytes) for item in items):
        raise TreeError(f"{path}: key {key} does not hold a list of JPEG bytes")
    return list(items)


def lmdb_series_where(path: str, video_id: str) -> tuple[str, int | None] | str:
    """The key of ``video_id`` in the LMDB at ``path`` and its recorded length, or a status."""
    keys, lengths = lmdb_catalogue(path)
    key = keys.get(video_id)
    if key is None:
        return f"missing: {video_id} is not in the __order__ of {path}"
    env = _lmdb_env(path)
    with env.begin(write=False) as txn:
        present = txn.get(key.encode("ascii")) is not None
    if not present:
        return f"missing: key {key} ({video_id}'s place in __order__) is absent from {path}"
    return key, lengths.get(key)


# ---------------------------------------------------------------------------------------
# The series of a video


def import_bound(settings: dict):
    """The bound of a flow import: its ``bound`` key, else the layout's 20 (or 'minmax')."""
    return settings.get("bound", DEFAULT_BOUND)


def frame_series(settings: dict, video_id: str, label: str) -> FrameSeries | str:
    """The frames of ``video_id`` in the tree ``settings`` (``frames.import``), or a status."""
    layout, root = settings["layout"], Path(settings["root"])
    if layout == "coclr_lmdb":
        where = lmdb_series_where(str(root), video_id)
        if isinstance(where, str):
            return where
        key, recorded = where
        try:
            items = read_lmdb_value(str(root), key)
        except TreeError as error:
            return f"unreadable: {error}"
        if recorded is not None and recorded != len(items):
            return f"misaligned: __vlen__ of {root} says {recorded} frames for key {key}, its value holds {len(items)}"
        return FrameSeries(f"{root}#{key}", 0, tuple(f"{key} item {index}" for index in range(len(items))),
                           lmdb=(str(root), key))
    spec = FOLDER_LAYOUTS[layout]
    folder = find_video_folder(layout_folder(root, spec.frames_dir), video_id, label)
    if isinstance(folder, str):
        return folder
    try:
        files = _indexed_files(folder, spec.frame_pattern)
    except OSError as error:
        return f"unreadable: {folder}: {error.strerror or error}"
    if not files:
        return f"empty: no frames ({spec.frame_format.format(1).replace('00001', '*')}) in {folder}"
    indices = sorted(files)
    if indices[0] not in spec.frame_bases:
        extra = (": TSN's dense_flow never writes frame 0; is this a denseflow tree?"
                 if layout == "tsn" and indices[0] == 0 else "")
        return (f"misaligned: {folder}: the first frame is {spec.frame_format.format(indices[0])}, a {layout} tree "
                f"starts at {' or '.join(spec.frame_format.format(base) for base in spec.frame_bases)}{extra}")
    gap = _gap(indices, spec.frame_format)
    if gap:
        return f"misaligned: {folder}: {gap}"
    first = {"base": 0, "k": indices[0], "k-1": indices[0] - 1}[spec.frame_offset]
    return FrameSeries(str(folder), first, tuple(Path(files[index]).name for index in indices),
                       files=tuple(files[index] for index in indices))


def flow_series(settings: dict, video_id: str, label: str) -> FlowSeries | str:
    """The flows of ``video_id`` in the tree ``settings`` (``flow.import``), or a status."""
    layout, root = settings["layout"], Path(settings["root"])
    if layout == "coclr_lmdb":
        where = lmdb_series_where(str(root), video_id)
        if isinstance(where, str):
            return where
        key, recorded = where
        try:
            items = read_lmdb_value(str(root), key)
        except TreeError as error:
            return f"unreadable: {error}"
        if recorded is not None and recorded != len(items):
            return f"misaligned: __vlen__ of {root} says {recorded} flows for key {key}, its value holds {len(items)}"
        return FlowSeries(layout, f"{root}#{key}", 0, tuple(f"{key} item {index}" for index in range(len(items))),
                          lmdb=(str(root), key))
    spec = FOLDER_LAYOUTS[layout]
    folders = []
    for sub in spec.flow_dirs:
        folder = find_video_folder(layout_folder(root, sub), video_id, label)
        if isinstance(folder, str):
            return folder
        folders.append(folder)
    if len(folders) == 1:
        folders *= len(spec.flow_patterns)
    try:
        components = [_indexed_files(folder, pattern) for folder, pattern in zip(folders, spec.flow_patterns)]
    except OSError as error:
        return f"unreadable: {error.filename}: {error.strerror or error}"
    where = str(folders[0].parent if len(spec.flow_dirs) > 1 else folders[0])
    if not any(components):
        return f"empty: no flows ({spec.flow_formats[0].format(1).replace('00001', '*')}) in {folders[0]}"
    for files, folder, formatter in zip(components[1:], folders[1:], spec.flow_formats[1:]):
        difference = sorted(set(components[0]) ^ set(files))
        if difference:
            index = difference[0]
            absent, present = ((formatter, spec.flow_formats[0]) if index in components[0]
                               else (spec.flow_formats[0], formatter))
            return (f"misaligned: {where}: {absent.format(index)} missing "
                    f"({present.format(index)} present)")
    indices = sorted(components[0])
    if indices[0] != spec.flow_base:
        return (f"misaligned: {folders[0]}: the first flow is {spec.flow_formats[0].format(indices[0])}, a {layout} "
                f"tree starts at {spec.flow_formats[0].format(spec.flow_base)}")
    gap = _gap(indices, spec.flow_formats[0])
    if gap:
        return f"misaligned: {folders[0]}: {gap}"
    names = tuple(Path(components[0][index]).name for index in indices)
    files = tuple(tuple(component[index] for component in components) for index in indices)
    bin_path = None
    if layout == "twostream" and import_bound(settings) == MINMAX:
        bin_path = _minmax_file(root, video_id, folders, len(indices))
        if bin_path.startswith(("unconvertible:", "misaligned:")):
            return bin_path
    return FlowSeries(layout, where, indices[0] - spec.flow_start_offset, names, files=files, bin_path=bin_path,
                      formats=spec.flow_formats, base=spec.flow_base)


def _minmax_file(root: Path, video_id: str, folders: list[Path], count: int) -> str:
    """The ``.bin`` of a min-max two-stream video (beside its u and v folders, or in
    ``tvl1_flow/bins/``), or the status that it cannot be converted without it."""
    flow_root = folders[0].parent
    candidates = [folder.parent / f"{folder.name}.bin" for folder in folders]
    candidates.append(flow_root.parent / "bins" / f"{video_id}.bin")
    found = [path for path in dict.fromkeys(candidates) if path.is_file()]
    if not found:
        return (f"unconvertible: {candidates[0]} not found: min-max flow (flow.import.bound: minmax) cannot be "
                "converted without the per-flow minima and maxima of its .bin")
    contents = {path: path.read_bytes() for path in found}
    if len(set(contents.values())) > 1:
        return f"misaligned: {found[0]} and {found[1]} differ"
    size = len(contents[found[0]])
    if size != 16 * count:
        return (f"misaligned: {found[0]} holds {size // 4} float32 values; {count} flows need {4 * count} "
                "(min_u, max_u, min_v, max_v per flow)")
    return str(found[0])


def series_inputs(settings: dict, kind: str, video_id: str, label: str) -> list[str]:
    """The folders (or files) of ``video_id`` that a stage reading ``settings`` depends on,
    those that exist: the rule's inputs, so that the DAG tracks the tree."""
    layout, root = settings["layout"], Path(settings["root"])
    if layout == "coclr_lmdb":
        data = root / "data.mdb" if root.is_dir() else root
        return [str(data)] if data.exists() else []
    spec = FOLDER_LAYOUTS[layout]
    subs = (spec.frames_dir,) if kind == "frames" else spec.flow_dirs
    paths = []
    for sub in subs:
        folder = find_video_folder(layout_folder(root, sub), video_id, label)
        if not isinstance(folder, str):
            paths.append(str(folder))
    if kind == "flow" and layout == "twostream" and import_bound(settings) == MINMAX and paths:
        folders = [Path(path) for path in paths]
        for candidate in [folder.parent / f"{folder.name}.bin" for folder in folders] + [
                folders[0].parent.parent / "bins" / f"{video_id}.bin"]:
            if candidate.is_file():
                paths.append(str(candidate))
    return sorted(set(paths))


def check_root(settings: dict, key: str) -> None:
    """The tree ``settings`` names exists, with its layout's folders; a TreeError names ``key``."""
    layout, root = settings["layout"], Path(settings["root"])
    if layout == "coclr_lmdb":
        if not root.exists():
            raise TreeError(f"{key}.root: {root}: LMDB not found")
        if root.is_dir() and not (root / "data.mdb").is_file():
            raise TreeError(f"{key}.root: {root}: a folder without data.mdb is not an LMDB")
        return
    if not root.is_dir():
        raise TreeError(f"{key}.root: {root}: folder not found")
    spec = FOLDER_LAYOUTS[layout]
    subs = (spec.frames_dir,) if key.startswith("frames") else spec.flow_dirs
    for sub in subs:
        if sub and not layout_folder(root, sub).is_dir():
            raise TreeError(f"{key}.root: {root} holds no {sub}/ folder, which the {layout} layout keeps its "
                            f"{'frames' if key.startswith('frames') else 'flow'} in")


# ---------------------------------------------------------------------------------------
# Alignment of a video's flows with its frames


@dataclass(frozen=True)
class Alignment:
    """Which flows of a series a video's T frames (decoded ``first`` onwards) store: flows
    ``skip .. skip + T - 2`` of the series, and why any others were left out."""

    skip: int
    dropped: list[str] = field(default_factory=list)


def align_flows(series: FlowSeries, first: int, count: int, frames_layout: str | None) -> Alignment | str:
    """Check that ``series`` holds exactly the flows of frames ``first .. first + count - 1``:
    from each frame but the last to the next. The one flow allowed beyond them is the flow into
    the first frame where the frames' layout never writes the frame it starts at (TSN's frame 0)."""
    needed = max(count - 1, 0)
    start, stop = first, first + needed
    have_start, have_stop = series.first, series.first + series.count
    frames_in_words = f"{count} frames (decoded {first}..{first + count - 1})"
    dropped = []
    if have_start < start:
        if have_start == start - 1 and first == 1 and frames_layout in UNWRITTEN_FIRST_FRAME:
            dropped.append(f"{series.name_of(have_start)} (frame {have_start} to {start}: the tree has no image of "
                           f"frame {have_start})")
        else:
            return (f"misaligned: {series.where}: {series.name_of(have_start)} is the flow from decoded frame "
                    f"{have_start}, before the first of the {frames_in_words}")
    if have_start > start:
        return (f"misaligned: {series.where}: {series.name_of(start)} missing: the {frames_in_words} need the flow "
                f"from frame {start}, and the first flow starts at frame {have_start}")
    if have_stop < stop:
        return (f"misaligned: {series.where}: {series.name_of(have_stop)} missing: {frames_in_words} need "
                f"{needed} flows, {series.name_of(start)}..{series.name_of(stop - 1)}; the last is "
                f"{series.name_of(have_stop - 1)}")
    if have_stop > stop:
        extra = have_stop - stop
        return (f"misaligned: {series.where}: {extra} flow{'s' if extra > 1 else ''} too many: {frames_in_words} "
                f"have {needed} flows, {series.name_of(start)}..{series.name_of(stop - 1)}, and the tree goes on to "
                f"{series.name_of(have_stop - 1)}")
    return Alignment(start - have_start, dropped)


# ---------------------------------------------------------------------------------------
# The manifest's probe of an imported video


def imports_of(dataset: dict) -> tuple[dict | None, dict | None]:
    """The dataset's ``frames.import`` and ``flow.import`` (None where not set)."""
    return (dataset.get("frames", {}).get("import"), dataset.get("flow", {}).get("import"))


def _video_fps(path: Path | None) -> float:
    """The frame rate a video file announces (0 when there is no video): frames imported
    without their video have no other source for it."""
    if path is None or not path.is_file():
        return 0.0
    capture = cv2.VideoCapture(str(path))
    try:
        return float(capture.get(cv2.CAP_PROP_FPS) or 0.0) if capture.isOpened() else 0.0
    finally:
        capture.release()


def _read(series) -> list | str:
    try:
        return series.read()
    except OSError as error:
        return f"unreadable: {error.filename}: {(error.strerror or str(error)).lower()}"
    except TreeError as error:
        return f"unreadable: {error}"


def check_flow_images(series: FlowSeries) -> tuple[int, int] | str:
    """The one size of every flow image of ``series`` (u and v alike), or the status of the first bad one."""
    encoded = _read(series)
    if isinstance(encoded, str):
        return encoded
    size = None
    for component in range(len(encoded[0]) if encoded else 0):
        if series.lmdb is not None:
            names = series.names
        else:
            names = [Path(paths[component]).name for paths in series.files]
        component_size = check_images([images[component] for images in encoded], names, "flow")
        if isinstance(component_size, str):
            return component_size
        if size is not None and component_size != size:
            return f"misaligned: {series.where}: the y flows are {component_size}, the x flows {size}"
        size = component_size
    return size if size is not None else f"empty: no flows in {series.where}"


def expected_location(settings: dict, video_id: str, label: str) -> str:
    """Where the frames of a video that a tree lacks would be (the manifest's path of it, so
    that excluded.tsv names each video's place, not the tree's root again and again)."""
    layout, root = settings["layout"], Path(settings["root"])
    if layout == "coclr_lmdb":
        return f"{root}#{video_id}"
    return str(layout_folder(root, FOLDER_LAYOUTS[layout].frames_dir) / label / video_id)


def probe_imported(dataset: dict, entry, video_path: Path | None):
    """The manifest's probe of a video whose frames (or flows) come from an import tree: the
    frames are counted and every image checked instead of decoding the video, and imported
    flows are checked against the frames they belong to. Returns (VideoProbe, path), the
    path being the video's frame folder (or LMDB and key), else its video file."""
    from cocon.data.video import VideoProbe, probe_video

    frames_import, flow_import = imports_of(dataset)
    if frames_import:
        frames = frame_series(frames_import, entry.video_id, entry.label)
        if isinstance(frames, str):
            return VideoProbe(frames), str(video_path or expected_location(frames_import, entry.video_id, entry.label))
        path = frames.where
        images = _read(frames)
        if isinstance(images, str):
            return VideoProbe(images, frames.count), path
        size = check_images(images, frames.names, "frame")
        if isinstance(size, str):
            return VideoProbe(size, frames.count), path
        first, count, fps, (width, height) = frames.first, frames.count, _video_fps(video_path), size
    else:
        probe = probe_video(video_path)
        path = str(video_path)
        if not probe.ok:
            return probe, path
        first, count, fps, width, height = 0, probe.num_frames, probe.fps, probe.width, probe.height
    if flow_import:
        flows = flow_series(flow_import, entry.video_id, entry.label)
        status = flows if isinstance(flows, str) else None
        if status is None:
            alignment = align_flows(flows, first, count, frames_import["layout"] if frames_import else None)
            status = alignment if isinstance(alignment, str) else None
        if status is None:
            flow_size = check_flow_images(flows)
            status = flow_size if isinstance(flow_size, str) else None
        if status is not None:
            return VideoProbe(status, count, fps, width, height), path
    return VideoProbe("ok", count, fps, width, height), path
