"""Damaged view shards are errors that name the shard, the video and the frames: through the
reader, `cocon verify`, the views index, the flow stage and training; never silent data."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cocon.cli import main
from cocon.config import load_schema, validate
from cocon.data.clips import ClipDataset, ClipSpec, VideoRef
from cocon.data.manifest import read_manifest
from cocon.data.shards import ShardError, ShardReader, ShardWriter, encode_jpeg, verify_shard
from cocon.views import write_views_index
from cocon.views.flow import extract_flow
from tests.conftest import build_demo_views

COCON = str(Path(sys.executable).with_name("cocon"))
DAMAGED_VIDEO_INDEX = 1  # the second video of shard 00000
DAMAGED_FRAME = 20


def small_demo(root: Path) -> dict:
    # 112-px frames make JPEGs of a few kB, so a video spans several 64-kB checksummed chunks
    dataset = validate({"layout": "demo", "root": str(root / "videos"), "test_fraction": 0.25,
                        "demo": {"num_classes": 2, "videos_per_class": 2, "num_frames": 40, "width": 160,
                                 "height": 120},
                        "frames": {"short_side": 112}, "flow": {"method": "farneback"}},
                       load_schema("dataset.schema.yaml"), "small")
    dataset["name"] = "small"
    return dataset


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """rgb and flow shards of four demo videos, through the real stages."""
    root = tmp_path_factory.mktemp("integrity")
    return build_demo_views(root, small_demo(root))


@pytest.fixture
def work(built, tmp_path):
    """A copy of the built views and the manifest, for one test to damage."""
    shutil.copytree(built / "views", tmp_path / "views")
    shutil.copy(built / "manifest.tsv", tmp_path / "manifest.tsv")
    return tmp_path


def invert_bytes(path: Path, position: int, count: int = 64) -> None:
    """Invert ``count`` stored bytes of the file from ``position``, as a bad sector would."""
    with open(path, "r+b") as handle:
        handle.seek(position)
        damaged = bytes(255 - byte for byte in handle.read(count))
        handle.seek(position)
        handle.write(damaged)


def chunk_in_file(dataset: h5py.Dataset, row: int):
    """HDF5's record of the stored chunk that holds row ``row``: its file position and size."""
    first_row = row - row % dataset.chunks[0]
    return dataset.id.get_chunk_info_by_coord((first_row,) + (0,) * (dataset.ndim - 1))


def damage_jpeg(work: Path) -> tuple[Path, str, str]:
    """64 bytes in the middle of one stored JPEG, inside one checksummed chunk."""
    path = work / "views" / "rgb" / "00000.h5"
    with h5py.File(path) as handle:
        video_id = sorted(handle["videos"])[DAMAGED_VIDEO_INDEX]
        group = handle["videos"][video_id]
        offsets, frames = group["offsets"][:], group["frames"]
        chunk = frames.chunks[0]
        start = int(offsets[DAMAGED_FRAME] + offsets[DAMAGED_FRAME + 1]) // 2 - 32
        if start // chunk != (start + 63) // chunk:
            start = (start + 63) // chunk * chunk  # the next chunk's first bytes, still this frame's
        assert offsets[DAMAGED_FRAME] <= start and start + 64 <= offsets[DAMAGED_FRAME + 1]
        position = chunk_in_file(frames, start).byte_offset + start % chunk
    invert_bytes(path, position)
    return path, video_id, "rgb"


def damage_flow_chunk(work: Path) -> tuple[Path, str, str]:
    """64 bytes inside the gzip-compressed chunk of one flow frame."""
    path = work / "views" / "flow" / "00000.h5"
    with h5py.File(path) as handle:
        video_id = sorted(handle["videos"])[DAMAGED_VIDEO_INDEX]
        info = chunk_in_file(handle["videos"][video_id]["frames"], DAMAGED_FRAME)
    invert_bytes(path, info.byte_offset + info.size // 2 - 32)
    return path, video_id, "flow"


def damage_offsets(work: Path) -> tuple[Path, str, str]:
    """64 bytes of the frame index (offsets) of one rgb video."""
    path = work / "views" / "rgb" / "00000.h5"
    with h5py.File(path) as handle:
        video_id = sorted(handle["videos"])[DAMAGED_VIDEO_INDEX]
        info = chunk_in_file(handle["videos"][video_id]["offsets"], 0)
    invert_bytes(path, info.byte_offset + info.size // 2 - 32)
    return path, video_id, "rgb"


DAMAGE = {"jpeg": damage_jpeg, "flow_chunk": damage_flow_chunk, "offsets": damage_offsets}


def named_frames(message: str, path: Path, video_id: str) -> set[int] | str:
    """The frames an error names for ``video_id`` of the shard ``path`` ('frame 3', 'frames
    3..7, 9'), or what it names instead."""
    match = re.search(rf"{re.escape(str(path))}: video '{re.escape(video_id)}', "
                      r"(frames? [\d., ]+|its frame index \(offsets\)): damaged", message)
    assert match, message
    if not match.group(1).startswith("frame"):
        return match.group(1)
    frames = set()
    for part in match.group(1).split(" ", 1)[1].split(", "):
        first, _, last = part.partition("..")
        frames.update(range(int(first), int(last or first) + 1))
    return frames


def assert_names_the_damage(message: str, kind: str, path: Path, video_id: str) -> None:
    named = named_frames(message, path, video_id)
    if kind == "offsets":
        assert named == "its frame index (offsets)"
    elif kind == "flow_chunk":
        assert named == {DAMAGED_FRAME}  # one chunk per flow frame
    else:
        # the frames sharing the damaged 64-kB chunk: the damaged one and a few neighbours
        assert DAMAGED_FRAME in named and len(named) < 40, named


@pytest.mark.parametrize("kind", DAMAGE)
def test_reader_names_the_damaged_frames(work, kind):
    path, video_id, _ = DAMAGE[kind](work)
    with ShardReader(path) as reader, pytest.raises(ShardError) as error:
        reader.read(video_id)
    assert_names_the_damage(str(error.value), kind, path, video_id)
    with ShardReader(path) as reader:
        # the other videos of the shard still read
        assert all(len(reader.read(other)) for other in reader.video_ids if other != video_id)


@pytest.mark.parametrize("kind", DAMAGE)
def test_verify_exits_1_naming_the_damage(work, kind, capsys):
    path, video_id, _ = DAMAGE[kind](work)
    assert main(["verify", str(work / "views")]) == 1
    message = capsys.readouterr().err
    assert message.startswith("cocon verify: error: 1 of 2 shards damaged (8 videos, 316 frames checked):")
    assert_names_the_damage(message, kind, path, video_id)


def test_verify_of_whole_shards_counts_what_it_checked(work):
    result = subprocess.run([COCON, "verify", str(work / "views"), "--threads", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # 4 videos of 40 frames in the rgb shard, 39 flow frames each in the flow shard
    assert result.stdout == "2 shards, 8 videos, 316 frames checked: no damage\n"


def test_verify_in_parallel_names_every_damaged_shard(work):
    jpeg_path, jpeg_video, _ = damage_jpeg(work)
    flow_path, flow_video, _ = damage_flow_chunk(work)
    result = subprocess.run([COCON, "verify", str(jpeg_path), str(flow_path), "--threads", "2"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert_names_the_damage(result.stderr, "jpeg", jpeg_path, jpeg_video)
    assert_names_the_damage(result.stderr, "flow_chunk", flow_path, flow_video)


@pytest.mark.parametrize("kind", DAMAGE)
def test_views_index_refuses_damaged_shards(work, kind):
    path, video_id, _ = DAMAGE[kind](work)
    shards = [work / "views" / "rgb" / "00000.h5", work / "views" / "flow" / "00000.h5"]
    with pytest.raises(ShardError) as error:
        write_views_index(work / "manifest.tsv", shards, work / "views.tsv")
    assert_names_the_damage(str(error.value), kind, path, video_id)
    assert not (work / "views.tsv").exists()


@pytest.mark.parametrize("kind", ["jpeg", "offsets"])
def test_flow_stage_stops_on_damaged_rgb(work, kind):
    path, video_id, _ = DAMAGE[kind](work)
    out = work / "flow_again.h5"
    with pytest.raises(ShardError) as error:
        extract_flow(small_demo(work), path, out)
    assert_names_the_damage(str(error.value), kind, path, video_id)
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()


@pytest.mark.parametrize("kind", DAMAGE)
def test_training_stops_on_damaged_clip(work, kind):
    path, video_id, view = DAMAGE[kind](work)
    row = next(row for row in read_manifest(work / "manifest.tsv") if row.video_id == video_id)
    video = VideoRef(video_id, row.shard, row.num_frames, row.label_index)
    # test windows cover every usable frame, so one of them reads the damaged chunk
    dataset = ClipDataset([video], work / "views", [view], {view: 32}, ClipSpec(2, 2, 3), train=False)
    with pytest.raises(ShardError) as error:
        for item in range(len(dataset)):
            dataset[item]
    assert_names_the_damage(str(error.value), kind, path, video_id)


def whole_contents(path: Path) -> dict:
    """Everything a reader gets from a shard: attributes, videos, stored frames."""
    with ShardReader(path) as reader:
        contents = {"attrs": repr(reader.attrs)}
        for video_id in reader.video_ids:
            raw = reader.read_raw(video_id)
            frames = b"".join(bytes(item) for item in raw) if reader.view == "rgb" else raw.tobytes()
            contents[video_id] = (repr(reader.video_attrs(video_id)), frames)
    return contents


def tiny_rgb_shard(path: Path) -> Path:
    """Ten videos of one tiny frame: more than HDF5 keeps in an object header (8 links, 8
    attributes), so the shard holds HDF5's dense link and attribute storage too."""
    rng = np.random.default_rng(0)
    attrs = {"label": "walk", "label_index": 3, "fps": 25.0, "num_frames": 1, "orig_width": 8, "orig_height": 8,
             "width": 8, "height": 8, "source_path": "walk/walk_0.avi"}
    with ShardWriter(path, "rgb", {"dataset": "tiny", "shard": "00000", "short_side": 8}) as writer:
        for index in range(10):
            writer.add_video(f"walk_{index}", [encode_jpeg(rng.integers(0, 255, (8, 8, 3), np.uint8), 90)], attrs)
    return path


def test_a_flipped_byte_anywhere_is_reported_or_changes_nothing(tmp_path):
    # a sample of positions over the whole file: data, indexes, headers and attributes,
    # the text ones too (h5py would otherwise keep them in HDF5's unchecksummed global heap)
    path = tiny_rgb_shard(tmp_path / "tiny.h5")
    original, stored = whole_contents(path), path.read_bytes()
    damaged_path = tmp_path / "damaged.h5"
    for position in range(0, len(stored), 131):
        damaged = bytearray(stored)
        damaged[position] ^= 0xFF
        damaged_path.write_bytes(damaged)
        if not verify_shard(damaged_path).damage:
            assert whole_contents(damaged_path) == original, f"byte {position} changed what is read, unnoticed"
