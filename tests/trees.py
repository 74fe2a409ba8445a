"""Frame and flow trees written the way each tool writes them, from decoded frames and float
TV-L1 flows: the index bases and offsets, bounds, JPEG settings, channel order and files of
mmaction2/denseflow, TSN's dense_flow, the two-stream zips (gpu_flow), DPC/MemDPC's
extract_ff.py and CoCLR's convert_video_to_lmdb.py (cocon.data.trees states each)."""
from __future__ import annotations

import glob
import os
import random
from pathlib import Path

import cv2
import numpy as np


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """The tools' CAST: 0 below -bound, 255 above, else round(255 (f + bound) / 2 bound)."""
    return np.round((np.clip(flow, -bound, bound) + bound) * (255.0 / (2 * bound))).astype(np.uint8)


def _write(path: Path, image: np.ndarray, params=()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".jpg", image, list(params))
    assert ok
    path.write_bytes(encoded.tobytes())


def write_denseflow(root: Path, video: str, label: str, frames, flows, bound=20, class_folder=True):
    """denseflow -s=0 / -s=1 (imencode's default quality 95): img_ from 0, flow_x_/flow_y_ from 0."""
    folder = root / label / video if class_folder else root / video
    for index, frame in enumerate(frames):
        _write(folder / f"img_{index:05d}.jpg", frame)
    for index, flow in enumerate(flows):
        _write(folder / f"flow_x_{index:05d}.jpg", quantize(flow[..., 0], bound))
        _write(folder / f"flow_y_{index:05d}.jpg", quantize(flow[..., 1], bound))
    return folder


def write_tsn(root: Path, video: str, label: str, frames, flows, bound=20):
    """dense_flow's extract_gpu -o=dir: the i-th output is the flow from frame i to i + 1 and the
    image of frame i + 1, both written as _%05d of i + 1; frame 0 is never written."""
    folder = root / video
    for index, flow in enumerate(flows):
        _write(folder / f"img_{index + 1:05d}.jpg", frames[index + 1])
        _write(folder / f"flow_x_{index + 1:05d}.jpg", quantize(flow[..., 0], bound))
        _write(folder / f"flow_y_{index + 1:05d}.jpg", quantize(flow[..., 1], bound))
    return folder


def write_twostream(root: Path, video: str, label: str, frames, flows, bound=20, minmax=False):
    """gpu_flow's compute_flow: rgb frame%06d from 1 (frame k - 1), flow frame%06d from 1 (frame
    k - 1 to k) in u/ and v/; min-max mode maps each flow's [min, max] to [0, 255] and writes
    (min_u, max_u, min_v, max_v) as float32 per flow to <video>.bin."""
    for index, frame in enumerate(frames):
        _write(root / "jpegs_256" / video / f"frame{index + 1:06d}.jpg", frame)
    scales = []
    for index, flow in enumerate(flows):
        planes = []
        for component in (0, 1):
            values = flow[..., component]
            if minmax:
                low, high = float(values.min()), float(values.max())
                planes.append(np.round(255 * (values - low) / ((high - low) or 1.0)).astype(np.uint8))
                scales += [low, high]
            else:
                planes.append(quantize(values, bound))
        _write(root / "tvl1_flow" / "u" / video / f"frame{index + 1:06d}.jpg", planes[0])
        _write(root / "tvl1_flow" / "v" / video / f"frame{index + 1:06d}.jpg", planes[1])
    if minmax:
        np.asarray(scales, dtype="<f4").tofile(root / "tvl1_flow" / "u" / f"{video}.bin")
    return root / "jpegs_256" / video


def write_memdpc(root: Path, video: str, label: str, frames, flows, bound=20):
    """extract_ff.py: image_%05d from 1 and flow_%05d from 1, quality 100; a flow image is
    128 * ones(h, w, 3) with channels 0:2 set to the quantised (u, v), written by cv2.imwrite."""
    for index, frame in enumerate(frames):
        _write(root / "frame" / label / video / f"image_{index + 1:05d}.jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 100])
    for index, flow in enumerate(flows):
        image = np.full((*flow.shape[:2], 3), 128, np.uint8)
        image[..., 0:2] = quantize(flow, bound)
        _write(root / "flow" / label / video / f"flow_{index + 1:05d}.jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 100])
    return root / "frame" / label / video


def pack_lmdb(folder: Path, lmdb_path: Path) -> Path:
    """CoCLR's make_dataset_lmdb over ``folder``/<class>/<video>/*.jpg, with msgpack packing as
    0.6.2 did (bytes and text both as raw): order shuffled with seed 0, keys '%09d'."""
    import lmdb
    import msgpack

    def dumps(value):
        return msgpack.packb(value, use_bin_type=False)

    env = lmdb.open(str(lmdb_path), subdir=True, map_size=1 << 30, readonly=False, meminit=False, map_async=True)
    txn = env.begin(write=True)
    random.seed(0)
    video_list = ["/".join(path.split("/")[-2:]) for path in sorted(glob.glob(os.path.join(folder, "*", "*")))]
    random.shuffle(video_list)
    video_id = dict(zip(video_list, range(len(video_list))))
    keys, lengths = [], []
    for action in sorted(glob.glob(os.path.join(folder, "*"))):
        for video_path in sorted(glob.glob(os.path.join(action, "*"))):
            name = os.path.join(os.path.basename(action), os.path.basename(video_path))
            raw = [Path(path).read_bytes() for path in sorted(glob.glob(os.path.join(video_path, "*.jpg")))]
            key = "%09d" % video_id[name]
            assert txn.put(key.encode("ascii"), dumps(raw))
            keys.append(key.encode("ascii"))
            lengths.append(len(raw))
        txn.commit()
        txn = env.begin(write=True)
    txn.put(b"__keys__", dumps(keys))
    txn.put(b"__len__", dumps(len(keys)))
    txn.put(b"__order__", dumps(video_list))
    txn.put(b"__vlen__", dumps(lengths))
    txn.commit()
    env.sync()
    env.close()
    return lmdb_path


WRITERS = {"denseflow": write_denseflow, "tsn": write_tsn, "twostream": write_twostream, "memdpc": write_memdpc}


def write_tree(layout: str, root: Path, videos: dict, **options) -> dict:
    """Write ``videos`` (id -> (label, BGR frames of the decoded video, float flows [T-1, H, W, 2]))
    as ``layout``; returns the frames and flow ``import`` settings that read it."""
    if layout == "coclr_lmdb":
        memdpc = root / "memdpc"
        for video, (label, frames, flows) in videos.items():
            write_memdpc(memdpc, video, label, frames, flows, **options)
        return {"frames": {"layout": layout, "root": str(pack_lmdb(memdpc / "frame", root / "frame.lmdb"))},
                "flow": {"layout": layout, "root": str(pack_lmdb(memdpc / "flow", root / "flow.lmdb"))}}
    for video, (label, frames, flows) in videos.items():
        WRITERS[layout](root, video, label, frames, flows, **options)
    flow = {"layout": layout, "root": str(root)}
    if options.get("minmax"):
        flow["bound"] = "minmax"
    elif "bound" in options:
        flow["bound"] = options["bound"]
    return {"frames": {"layout": layout, "root": str(root)}, "flow": flow}
