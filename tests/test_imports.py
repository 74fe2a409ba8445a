"""Frames and flow imported from the trees other tools write, compared with our own stages.

One module fixture runs the real manifest, frames and flow stages (TV-L1 with fewer warps and
scales, for time) on short copies of the five real UCF101 clips (their first 10 frames) and computes their TV-L1 flow once; each test
writes those frames and flows as one tool would (tests/trees.py), imports the tree, and checks
the shards frame by frame against what the tree holds at that decoded frame, and against the
flow stage's own shards."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cocon.config import ConfigError, load_dataset_config
from cocon.data.datasets import DatasetError, list_videos
from cocon.data.manifest import read_manifest, run_manifest
from cocon.data.shards import ShardReader, verify_shards
from cocon.data.trees import LAYOUTS
from cocon.data.video import iter_frames
from cocon.views.flow import dequantize_flow, extract_flow, make_flow_estimator, quantize_flow, resize_flow, to_gray
from cocon.views.frames import extract_frames
from tests.conftest import run_snakemake, workflow_config, write_yaml
from tests.trees import quantize, write_tree

FRAMES = 10
SHORT_SIDE = 48
COCON = str(Path(sys.executable).with_name("cocon"))
# the JPEG settings each tool writes its images with (cv2.imencode's default quality is 95)
JPEG_PARAMS = {"denseflow": [], "tsn": [], "twostream": [], "memdpc": [cv2.IMWRITE_JPEG_QUALITY, 100],
               "coclr_lmdb": [cv2.IMWRITE_JPEG_QUALITY, 100]}


def jpeg(image, layout) -> bytes:
    return cv2.imencode(".jpg", image, JPEG_PARAMS[layout])[1].tobytes()


def dataset_yaml(folder: Path, name: str, ucf_splits: Path, frames: str = "", flow: str = "", extra: str = "") -> Path:
    return write_yaml(folder / f"{name}.yaml", textwrap.dedent(f"""
        layout: ucf101
        splits: {ucf_splits}
        classes: [ApplyEyeMakeup, HeadMassage, PlayingGuitar, PushUps, Shotput]
        min_usable_fraction: 0.0   # five of the listed clips are here
        shard_size: 1000
        frames: {{short_side: {SHORT_SIDE}{frames}}}
        flow: {{method: tvl1, tvl1: {{warps: 2, nscales: 3}}{flow}}}
    """) + extra)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, videos_dir, ucf_splits):
    """The real stages on the short clips, and each clip's decoded frames and float TV-L1 flows."""
    folder = tmp_path_factory.mktemp("imports")
    for source in sorted((videos_dir / "ucf101").glob("*/*.avi")):
        target = folder / "videos" / source.parent.name / source.name
        target.parent.mkdir(parents=True)
        capture, writer = cv2.VideoCapture(str(source)), None
        for _ in range(FRAMES):
            ok, frame = capture.read()
            assert ok
            if writer is None:
                writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), 25, frame.shape[1::-1])
            writer.write(frame)
        writer.release()
        capture.release()
    config = load_dataset_config(dataset_yaml(folder, "computed", ucf_splits, extra=f"root: {folder / 'videos'}\n"))
    run_manifest(config, folder / "manifest.tsv", folder / "excluded.tsv")
    extract_frames(config, folder / "manifest.tsv", "00000", folder / "views" / "rgb" / "00000.h5")
    extract_flow(config, folder / "views" / "rgb" / "00000.h5", folder / "views" / "flow" / "00000.h5", 2)
    estimate = make_flow_estimator(config["flow"])
    videos, stage_flow = {}, {}
    with ShardReader(folder / "views" / "rgb" / "00000.h5") as rgb, \
            ShardReader(folder / "views" / "flow" / "00000.h5") as flow:
        for video_id in rgb.video_ids:
            gray = to_gray(rgb.read(video_id))
            flows = np.stack([estimate(gray[index], gray[index + 1]) for index in range(len(gray) - 1)])
            stage_flow[video_id] = flow.read(video_id)
            # the flow stage computes exactly this TV-L1 on the stored frames
            assert np.array_equal(quantize_flow(flows, 20), stage_flow[video_id])
            attrs = rgb.video_attrs(video_id)
            videos[video_id] = (attrs["label"], list(iter_frames(attrs["source_path"], SHORT_SIDE)), flows)
    assert len(videos) == 5 and all(len(frames) == FRAMES for _, frames, _ in videos.values())
    return SimpleNamespace(folder=folder, splits=ucf_splits, videos=videos, stage_flow=stage_flow)


def import_tree(reference, tmp_path, layout, name="imported", videos=None, **options):
    """Write ``videos`` (default: all) as ``layout``, then run the manifest, frames and flow
    stages on it without the videos. Returns the folder, the manifest rows and the settings."""
    imports = write_tree(layout, tmp_path / "tree", videos or reference.videos, **options)
    config = load_dataset_config(dataset_yaml(tmp_path, name, reference.splits, frames=f", import: {imports['frames']}",
                                              flow=f", import: {json.dumps(imports['flow'])}"))
    out = tmp_path / "out"
    rows = [row for row in run_manifest(config, out / "manifest.tsv", out / "excluded.tsv")
            if row.video_id in reference.videos]
    if any(row.ok for row in rows):
        extract_frames(config, out / "manifest.tsv", "00000", out / "views" / "rgb" / "00000.h5")
        extract_flow(config, out / "views" / "rgb" / "00000.h5", out / "views" / "flow" / "00000.h5")
    return out, rows, imports


def tree_flow(layout, flow, bound):
    """The quantised (u, v) a tool's tree holds for ``flow``, as read back from its JPEG(s)."""
    if layout in ("memdpc", "coclr_lmdb"):
        image = np.full((*flow.shape[:2], 3), 128, np.uint8)
        image[..., :2] = quantize(flow, bound)
        return cv2.imdecode(np.frombuffer(jpeg(image, layout), np.uint8), cv2.IMREAD_COLOR)[..., :2]
    return np.stack([cv2.imdecode(np.frombuffer(jpeg(quantize(flow[..., c], bound), layout), np.uint8),
                                  cv2.IMREAD_GRAYSCALE) for c in (0, 1)], axis=-1)


def minmax_tree_flow(flow):
    """The float flow a min-max two-stream tree gives back: each component mapped from its own
    [min, max] to [0, 255], stored as grey JPEG, read as min + q (max - min) / 255."""
    planes = []
    for component in (0, 1):
        values = flow[..., component]
        low, high = float(values.min()), float(values.max())
        stored = np.round(255 * (values - low) / (high - low)).astype(np.uint8)
        held = cv2.imdecode(np.frombuffer(jpeg(stored, "twostream"), np.uint8), cv2.IMREAD_GRAYSCALE)
        planes.append(np.float32(low) + held.astype(np.float32) * np.float32((high - low) / 255))
    return np.stack(planes, axis=-1)


CASES = [("denseflow", {}), ("tsn", {}), ("tsn", {"bound": 15}), ("twostream", {}), ("twostream", {"minmax": True}),
         ("memdpc", {}), ("coclr_lmdb", {})]


@pytest.mark.parametrize("layout, options", CASES, ids=[f"{layout}{''.join(f'-{k}' for k in o)}" for layout, o in CASES])
def test_an_imported_tree_is_the_flow_stage_at_the_same_moment(reference, tmp_path, layout, options):
    out, rows, _ = import_tree(reference, tmp_path, layout, **options)
    # TSN's trees lack decoded frame 0: 9 frames from frame 1; the others start at frame 0
    first = 1 if layout == "tsn" else 0
    assert [row.status for row in rows] == ["ok"] * 5
    assert {row.num_frames for row in rows} == {FRAMES - first} and {row.fps for row in rows} == {0.0}
    assert verify_shards(sorted((out / "views").rglob("*.h5"))).damage == []
    bound = options.get("bound", 20)
    with ShardReader(out / "views" / "rgb" / "00000.h5") as rgb, \
            ShardReader(out / "views" / "flow" / "00000.h5", view="flow") as flow:
        assert flow.attrs["bound"] == 20 and flow.attrs["computed_short_side"] == SHORT_SIDE
        aligned, shifted = [], []
        for video_id, (_, frames, flows) in reference.videos.items():
            assert rgb.video_attrs(video_id)["first_frame"] == first
            # rgb frame t is the tree's image of decoded frame first + t, byte for byte
            raw = rgb.read_raw(video_id)
            assert [bytes(data) for data in raw] == [jpeg(frame, layout) for frame in frames[first:]]
            imported = flow.read(video_id).astype(int)
            assert imported.shape == (FRAMES - first - 1, 48, 64, 2)
            for t, values in enumerate(imported):
                start = first + t
                # flow t is what the tree holds for the flow from decoded frame first + t, converted
                if options.get("minmax"):
                    expected = quantize_flow(minmax_tree_flow(flows[start]), 20)
                else:
                    held = tree_flow(layout, flows[start], bound)
                    expected = quantize_flow(dequantize_flow(held, bound), 20) if bound != 20 else held
                exact = bound == 20 and not options.get("minmax")
                assert np.abs(values - expected.astype(int)).max() <= (0 if exact else 1), (video_id, t)
            stage = reference.stage_flow[video_id].astype(int)[first:]
            aligned.append(np.abs(imported - stage))
            shifted.append(np.abs(imported[1:] - stage[:-1]))
    aligned = np.concatenate([error.ravel() for error in aligned])
    shifted = np.concatenate([error.ravel() for error in shifted])
    # against the flow stage's own shards: within the trees' JPEG error (MemDPC's 3-channel JPEGs
    # subsample u and v as chroma, the largest), and far from the same flows one frame off
    assert aligned.mean() < (0.5 if layout in ("memdpc", "coclr_lmdb") else 0.15)
    assert np.percentile(aligned, 99) <= 2 and aligned.mean() < shifted.mean() / 2


def test_a_tree_at_another_size_is_rescaled_per_axis(reference, tmp_path):
    """gpu_flow squashes flow to 224x224: values are rescaled by each axis's own ratio."""
    videos = {}
    for video_id in ("v_PushUps_g02_c03", "v_Shotput_g05_c02"):
        label, frames, flows = reference.videos[video_id]
        big = [cv2.resize(frame, (128, 96), interpolation=cv2.INTER_AREA) for frame in frames]
        squashed = np.stack([cv2.resize(flow, (96, 96), interpolation=cv2.INTER_LINEAR) for flow in flows])
        squashed[..., 0] *= 96 / 64
        squashed[..., 1] *= 96 / 48
        videos[video_id] = (label, big, squashed)
    out, rows, _ = import_tree(reference, tmp_path, "twostream", videos=videos)
    assert [row.status for row in rows if row.video_id in videos] == ["ok", "ok"]
    with ShardReader(out / "views" / "rgb" / "00000.h5") as rgb, \
            ShardReader(out / "views" / "flow" / "00000.h5", view="flow") as flow:
        for video_id, (_, big, squashed) in videos.items():
            # frames resized to the 48-px short side and re-encoded; flow stored at their 64x48
            assert rgb.read(video_id).shape == (FRAMES, 48, 64, 3)
            imported = flow.read(video_id)
            expected = []
            for values in squashed:
                held = dequantize_flow(tree_flow("twostream", values, 20), 20)
                held[..., 0] *= 64 / 96
                held[..., 1] *= 48 / 96
                expected.append(quantize_flow(resize_flow(held, 64, 48), 20))
            assert np.abs(imported.astype(int) - np.stack(expected).astype(int)).max() <= 1
            # and that is the flow stage's flow again, to resampling error
            assert np.abs(imported.astype(int) - reference.stage_flow[video_id].astype(int)).mean() < 1.0


def test_bad_trees_exclude_their_videos_with_the_reason(reference, tmp_path):
    tree = tmp_path / "tree"
    write_tree("denseflow", tree, reference.videos)

    def folder(video_id):
        return tree / reference.videos[video_id][0] / video_id

    (folder("v_PushUps_g02_c03") / "flow_x_00003.jpg").unlink()
    for name in ("flow_x_00009.jpg", "flow_y_00009.jpg"):
        (folder("v_Shotput_g05_c02") / name).write_bytes((folder("v_Shotput_g05_c02") / "flow_x_00008.jpg").read_bytes())
    image = folder("v_HeadMassage_g02_c05") / "img_00004.jpg"
    image.write_bytes(image.read_bytes()[:len(image.read_bytes()) // 2])
    (folder("v_ApplyEyeMakeup_g01_c01") / "flow_y_00002.jpg").write_bytes(b"")
    settings = f"{{layout: denseflow, root: {tree}}}"
    config = load_dataset_config(dataset_yaml(tmp_path, "bad", reference.splits, frames=f", import: {settings}",
                                              flow=f", import: {settings}"))
    run_manifest(config, tmp_path / "manifest.tsv", tmp_path / "excluded.tsv")
    excluded = {row.video_id: row.status for row in read_manifest(tmp_path / "excluded.tsv")
                if row.video_id in reference.videos}
    assert excluded == {
        "v_PushUps_g02_c03": f"misaligned: {folder('v_PushUps_g02_c03')}: flow_x_00003.jpg missing "
                             "(flow_y_00003.jpg present)",
        "v_Shotput_g05_c02": f"misaligned: {folder('v_Shotput_g05_c02')}: 1 flow too many: 10 frames (decoded 0..9) "
                             "have 9 flows, flow_x_00000.jpg..flow_x_00008.jpg, and the tree goes on to "
                             "flow_x_00009.jpg",
        "v_HeadMassage_g02_c05": "unreadable: img_00004.jpg is a truncated JPEG (no end-of-image marker)",
        "v_ApplyEyeMakeup_g01_c01": "empty: flow_y_00002.jpg is a zero-byte file",
    }
    # the one whole video goes on
    extract_frames(config, tmp_path / "manifest.tsv", "00000", tmp_path / "rgb.h5")
    extract_flow(config, tmp_path / "rgb.h5", tmp_path / "flow.h5")
    with ShardReader(tmp_path / "flow.h5") as flow:
        assert flow.video_ids == ["v_PlayingGuitar_g16_c02"]


def _statuses(tmp_path, reference, frames_settings, flow_settings, name, only=None):
    """The manifest's status of each of the clips (or of those ``only`` names) in the trees given."""
    config = load_dataset_config(dataset_yaml(tmp_path, name, reference.splits, frames=f", import: {frames_settings}",
                                              flow=f", import: {flow_settings}"))
    rows = run_manifest(config, tmp_path / f"{name}.tsv", tmp_path / f"{name}_excluded.tsv")
    return {row.video_id: row.status for row in rows if row.video_id in (only or reference.videos)}


def test_a_tree_read_as_another_layout_is_refused_not_shifted(reference, tmp_path):
    two = {video_id: reference.videos[video_id] for video_id in ("v_PushUps_g02_c03", "v_Shotput_g05_c02")}
    write_tree("tsn", tmp_path / "tsn", two)
    write_tree("denseflow", tmp_path / "dense", two, class_folder=False)
    as_denseflow = _statuses(tmp_path, reference, f"{{layout: denseflow, root: {tmp_path / 'tsn'}}}",
                             f"{{layout: denseflow, root: {tmp_path / 'tsn'}}}", "tsn_as_denseflow")
    assert as_denseflow["v_PushUps_g02_c03"] == (
        f"misaligned: {tmp_path / 'tsn' / 'v_PushUps_g02_c03'}: the first flow is flow_x_00001.jpg, a denseflow tree "
        "starts at flow_x_00000.jpg")
    as_tsn = _statuses(tmp_path, reference, f"{{layout: tsn, root: {tmp_path / 'dense'}}}",
                       f"{{layout: tsn, root: {tmp_path / 'dense'}}}", "denseflow_as_tsn")
    assert as_tsn["v_Shotput_g05_c02"].startswith("misaligned: ") and \
        as_tsn["v_Shotput_g05_c02"].endswith("TSN's dense_flow never writes frame 0; is this a denseflow tree?")
    # denseflow frames with TSN's flows: the flow from frame 0 is TSN's flow_00001, and lines up
    mixed = _statuses(tmp_path, reference, f"{{layout: denseflow, root: {tmp_path / 'dense'}}}",
                      f"{{layout: tsn, root: {tmp_path / 'tsn'}}}", "mixed")
    assert mixed["v_PushUps_g02_c03"] == "ok"


def test_min_max_without_its_bin_and_an_absent_lmdb_key(reference, tmp_path):
    one = {"v_PushUps_g02_c03": reference.videos["v_PushUps_g02_c03"]}
    imports = write_tree("twostream", tmp_path / "two", one, minmax=True)
    (tmp_path / "two" / "tvl1_flow" / "u" / "v_PushUps_g02_c03.bin").unlink()
    status = _statuses(tmp_path, reference, imports["frames"], json.dumps(imports["flow"]), "nobin")
    assert status["v_PushUps_g02_c03"] == (
        f"unconvertible: {tmp_path / 'two' / 'tvl1_flow' / 'u' / 'v_PushUps_g02_c03.bin'} not found: min-max flow "
        "(flow.import.bound: minmax) cannot be converted without the per-flow minima and maxima of its .bin")

    import lmdb
    imports = write_tree("coclr_lmdb", tmp_path / "lmdb", {video_id: reference.videos[video_id] for video_id in
                                                             ("v_PushUps_g02_c03", "v_Shotput_g05_c02")})
    env = lmdb.open(imports["flow"]["root"])
    with env.begin(write=True) as txn:
        order = [name.decode() for name in __import__("msgpack").unpackb(txn.get(b"__order__"), raw=True)]
        key = "%09d" % order.index("Shotput/v_Shotput_g05_c02")
        assert txn.delete(key.encode())
    env.close()
    statuses = _statuses(tmp_path, reference, imports["frames"], imports["flow"], "nokey")
    assert statuses["v_Shotput_g05_c02"] == (f"missing: key {key} (v_Shotput_g05_c02's place in __order__) is absent "
                                             f"from {imports['flow']['root']}")
    assert statuses["v_PushUps_g02_c03"] == "ok"
    assert statuses["v_HeadMassage_g02_c05"] == f"missing: v_HeadMassage_g02_c05 is not in the __order__ of " \
                                                f"{imports['frames']['root']}"


def test_the_variants_and_checks_the_readme_names_per_layout(reference, tmp_path):
    """Names and places the README accepts (x_/y_ flows, frames from 1, any letter case, a
    twostream root given as jpegs_256 and tvl1_flow themselves), and the checks it promises (a
    gap in the numbering, a .bin of the wrong length, a value that is not its __vlen__)."""
    two = {video_id: reference.videos[video_id] for video_id in ("v_PushUps_g02_c03", "v_Shotput_g05_c02")}
    three = {**two, "v_HeadMassage_g02_c05": reference.videos["v_HeadMassage_g02_c05"]}
    dense = tmp_path / "dense"
    write_tree("denseflow", dense, three)
    # mmaction2 --use-opencv frames from img_00001 and a config's x_/y_ names, in upper case folders
    pushups = dense / "PushUps" / "v_PushUps_g02_c03"
    for path in sorted(pushups.glob("img_*.jpg"), reverse=True):
        path.rename(pushups / f"img_{int(path.stem[4:]) + 1:05d}.jpg")
    for path in pushups.glob("flow_*.jpg"):
        path.rename(pushups / path.name[len("flow_"):])
    pushups.rename(dense / "PushUps" / "V_PUSHUPS_G02_C03")
    (dense / "PushUps").rename(dense / "PUSHUPS")
    shotput = dense / "Shotput" / "v_Shotput_g05_c02"
    for name in ("flow_x_00003.jpg", "flow_y_00003.jpg"):
        (shotput / name).unlink()
    settings = f"{{layout: denseflow, root: {dense}}}"
    assert _statuses(tmp_path, reference, settings, settings, "variants", only=three) == {
        "v_PushUps_g02_c03": "ok", "v_HeadMassage_g02_c05": "ok",
        "v_Shotput_g05_c02": f"misaligned: {shotput}: flow_x_00003.jpg missing (flow_x_00000.jpg..flow_x_00008.jpg "
                             "otherwise present)"}
    # a video the tree lacks is listed at the place it was looked for
    paths = {row.video_id: row.path for row in read_manifest(tmp_path / "variants_excluded.tsv")}
    assert paths["v_ApplyEyeMakeup_g01_c01"] == str(dense / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01")

    imports = write_tree("twostream", tmp_path / "two", two, minmax=True)
    shotput_bin = tmp_path / "two" / "tvl1_flow" / "u" / "v_Shotput_g05_c02.bin"
    shotput_bin.write_bytes(shotput_bin.read_bytes()[:-4])
    flow = {**imports["flow"], "root": str(tmp_path / "two" / "tvl1_flow")}
    assert _statuses(tmp_path, reference, f"{{layout: twostream, root: {tmp_path / 'two' / 'jpegs_256'}}}",
                     json.dumps(flow), "roots_inside", only=two) == {
        "v_PushUps_g02_c03": "ok",
        "v_Shotput_g05_c02": f"misaligned: {shotput_bin} holds 35 float32 values; 9 flows need 36 "
                             "(min_u, max_u, min_v, max_v per flow)"}

    import lmdb
    import msgpack
    imports = write_tree("coclr_lmdb", tmp_path / "lmdb", two)
    env = lmdb.open(imports["frames"]["root"])
    with env.begin(write=True) as txn:
        order = [name.decode() for name in msgpack.unpackb(txn.get(b"__order__"), raw=True)]
        keys = [key.decode() for key in msgpack.unpackb(txn.get(b"__keys__"), raw=True)]
        key = "%09d" % order.index("Shotput/v_Shotput_g05_c02")
        lengths = msgpack.unpackb(txn.get(b"__vlen__"))
        lengths[keys.index(key)] -= 1
        txn.put(b"__vlen__", msgpack.packb(lengths, use_bin_type=False))
    env.close()
    assert _statuses(tmp_path, reference, imports["frames"], imports["flow"], "vlen", only=two) == {
        "v_PushUps_g02_c03": "ok",
        "v_Shotput_g05_c02": f"misaligned: __vlen__ of {imports['frames']['root']} says {FRAMES - 1} frames for key "
                             f"{key}, its value holds {FRAMES}"}


def test_import_settings_are_checked_before_any_job(tmp_path, reference):
    for layout, bound, message in (
            ("memdpc", 15, "flow.import.bound: 15: the memdpc layout's script quantises with a fixed bound of 20"),
            ("denseflow", "minmax", "flow.import.bound: minmax: only the twostream layout stores per-flow min-max")):
        path = dataset_yaml(tmp_path, f"bad_{layout}", reference.splits,
                            flow=f", import: {{layout: {layout}, root: {tmp_path}, bound: {bound}}}",
                            extra=f"root: {tmp_path}\n")
        with pytest.raises(ConfigError, match=message):
            load_dataset_config(path)
    # no videos: root may be left out when the frames are imported, and the tree must then exist
    with pytest.raises(ConfigError, match="'root' is a required property"):
        load_dataset_config(dataset_yaml(tmp_path, "no_root", reference.splits))
    with pytest.raises(ConfigError, match="root: None is not of type 'string'"):
        load_dataset_config(dataset_yaml(tmp_path, "null_root", reference.splits, extra="root: null\n"))
    config = load_dataset_config(dataset_yaml(tmp_path, "no_tree", reference.splits, extra="root: null\n",
                                              frames=f", import: {{layout: memdpc, root: {tmp_path / 'none'}}}"))
    with pytest.raises(DatasetError, match=f"frames.import.root: {tmp_path / 'none'}: folder not found"):
        list_videos(config)
    (tmp_path / "memdpc").mkdir()
    config = load_dataset_config(dataset_yaml(tmp_path, "no_frame_dir", reference.splits,
                                              frames=f", import: {{layout: memdpc, root: {tmp_path / 'memdpc'}}}"))
    with pytest.raises(DatasetError, match="holds no frame/ folder, which the memdpc layout keeps its frames in"):
        list_videos(config)


def test_import_views_and_show_beside_without_snakemake(reference, tmp_path):
    imports = write_tree("memdpc", tmp_path / "tree", reference.videos)
    config = dataset_yaml(tmp_path, "cli", reference.splits, frames=f", import: {imports['frames']}",
                          flow=f", import: {imports['flow']}", extra="views: [rgb, flow]\n")
    result = subprocess.run([COCON, "import-views", "--dataset", str(config), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "5 of " in result.stdout
    verification = verify_shards(sorted((tmp_path / "out" / "views").rglob("*.h5")))
    assert verification.damage == [] and (verification.shards, verification.videos) == (2, 10)
    sheet = tmp_path / "beside.png"
    result = subprocess.run([COCON, "show", "--views", str(tmp_path / "out" / "views"), "--manifest",
                             str(tmp_path / "out" / "manifest.tsv"), "--video", "v_PushUps_g02_c03", "--out", str(sheet),
                             "--rows", "3", "--beside", str(reference.folder / "views"),
                             "--titles", "imported", "computed"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    image = cv2.imread(str(sheet))
    # two sheets of rgb and flow tiles (66 px wide each) side by side, three rows of 50 px under an 18-px title
    assert image.shape == (18 + 3 * 50, 2 * 2 * 66 + 6, 3)
    left, right = image[18:, :132].astype(int), image[18:, 138:].astype(int)
    assert np.abs(left - right).mean() < 3  # the same moments: only the JPEG and flow errors differ


@pytest.mark.e2e
def test_dag_from_each_layout_to_finetune_json(reference, tmp_path):
    """A dataset per layout, given as trees only (no videos), through the DAG to finetune.json
    (fine-tuning its flow view); and pose and seg computed from a tree's imported frames."""
    tiny = ("pretrain: {width: 0.125, num_blocks: 4, pred_steps: 1, block_length: 2, frame_stride: 2, "
            "input_size: {rgb: 32, flow: 32, pose: 16, seg: 16}}\n"
            "finetune: {inits: [random], epochs: 1, milestones: [1], batch_size: 2, workers: 0, gpus: 0, "
            "val_fraction: 0.34, bn_batches: 1}\nofficial_splits: [3]\npose: {short_side: 24}\nseg: {short_side: 24}\n")
    files = {}
    for layout in LAYOUTS:
        imports = write_tree(layout, tmp_path / "trees" / layout, reference.videos)
        files[layout] = dataset_yaml(tmp_path, layout, reference.splits, frames=f", import: {imports['frames']}",
                                     flow=f", import: {imports['flow']}", extra=tiny + "views: [flow]\n").name
        if layout == "memdpc":
            files["all_views"] = dataset_yaml(tmp_path, "all_views", reference.splits,
                                              frames=f", import: {imports['frames']}", flow=f", import: {imports['flow']}",
                                              extra=tiny).name
    config = workflow_config(tmp_path, files, list(LAYOUTS))
    targets = [f"results/{layout}/finetune.json" for layout in LAYOUTS]
    run_snakemake(tmp_path, *targets, "results/all_views/views.tsv", "--configfile", str(config))
    for layout in LAYOUTS:
        document = json.loads((tmp_path / "results" / layout / "finetune.json").read_text())
        assert {(row["view"], row["num_test_videos"]) for row in document["results"]} == {("flow", 1), ("ensemble", 1)}
    views = (tmp_path / "results" / "all_views" / "views.tsv").read_text()
    assert all(f"{view}\t00000\t5\t" in views for view in ("rgb", "flow", "pose", "seg"))
    with ShardReader(tmp_path / "results" / "all_views" / "views" / "pose" / "00000.h5") as pose:
        assert pose.read("v_PushUps_g02_c03").shape == (FRAMES, 17, 24, 32)
    # the DAG tracks each shard's tree folders: a folder that changes reruns the shard's frames and flow
    plan = run_snakemake(tmp_path, *targets, "--configfile", str(config), "-n")
    assert "Nothing to be done" in plan.stdout + plan.stderr
    (tmp_path / "trees" / "denseflow" / "PushUps" / "v_PushUps_g02_c03" / "notes.txt").write_text("")
    plan = run_snakemake(tmp_path, *targets, "--configfile", str(config), "-n")
    assert "rule frames:" in plan.stdout and "rule flow:" in plan.stdout and "wildcards: dataset=denseflow" in plan.stdout
