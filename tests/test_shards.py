import h5py
import numpy as np
import pytest

from cocon.data.shards import FORMAT_VERSION, ShardError, ShardReader, ShardWriter, decode_jpeg, encode_jpeg


def frames_bgr(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return [np.roll(base, shift, axis=1) for shift in range(count)]


def test_rgb_round_trip_returns_the_stored_frames(tmp_path):
    encoded = [encode_jpeg(frame, 90) for frame in frames_bgr(10)]
    with ShardWriter(tmp_path / "rgb.h5", "rgb", {"shard": "00000"}) as writer:
        writer.add_video("clip_a", encoded, {"label": "a", "num_frames": 10})
        writer.add_video("clip_b", encoded[:3], {"label": "b", "num_frames": 3})
    with ShardReader(tmp_path / "rgb.h5", view="rgb") as reader:
        assert reader.video_ids == ["clip_a", "clip_b"]
        assert reader.num_frames("clip_a") == 10
        assert reader.video_attrs("clip_b")["label"] == "b"
        raw = reader.read_raw("clip_a", 2, 8, 2)
        assert [bytes(item) for item in raw] == [encoded[index] for index in (2, 4, 6)]
        decoded = reader.read("clip_a", 3, 5)
        expected = np.stack([decode_jpeg(np.frombuffer(encoded[index], np.uint8), "x") for index in (3, 4)])
        assert decoded.shape == (2, 24, 32, 3)
        assert np.array_equal(decoded, expected)
        assert reader.attrs["format_version"] == FORMAT_VERSION


def test_array_view_round_trip_is_exact(tmp_path):
    flow = np.random.default_rng(0).integers(0, 255, (7, 12, 16, 2), dtype=np.uint8)
    with ShardWriter(tmp_path / "flow.h5", "flow", {"bound": 20}) as writer:
        writer.add_video("clip", flow, {"num_frames": 8}, compression="gzip", chunks=(1, 12, 16, 2))
    with ShardReader(tmp_path / "flow.h5") as reader:
        assert reader.view == "flow"
        assert np.array_equal(reader.read("clip"), flow)
        assert np.array_equal(reader.read("clip", 1, 6, 2), flow[1:6:2])


def test_read_frames_returns_the_frames_asked_for_in_their_order(tmp_path):
    flow = np.random.default_rng(1).integers(0, 255, (20, 6, 8, 2), dtype=np.uint8)
    with ShardWriter(tmp_path / "flow.h5", "flow", {"bound": 20}) as writer:
        writer.add_video("clip", flow, {"num_frames": 21}, compression="gzip", chunks=(1, 6, 8, 2))
    with ShardReader(tmp_path / "flow.h5") as reader:
        # evenly spaced (a clip's 1 frame in 3: one strided read), shuffled and repeated,
        # unevenly spaced (one contiguous read), and a single frame
        for indices in ([2, 5, 8, 11, 14], [14, 2, 8, 8, 5, 11], [0, 1, 4, 19], [7], [3, 3]):
            assert np.array_equal(reader.read_frames("clip", indices), flow[indices]), indices


def test_failed_write_leaves_nothing_that_looks_finished(tmp_path):
    target = tmp_path / "rgb.h5"
    with pytest.raises(RuntimeError):
        with ShardWriter(target, "rgb", {}) as writer:
            writer.add_video("clip", [encode_jpeg(frames_bgr(1)[0], 90)], {})
            raise RuntimeError("killed")
    assert not target.exists()
    assert not (tmp_path / "rgb.h5.tmp").exists()


def test_reader_errors_name_the_shard(tmp_path):
    with pytest.raises(ShardError, match="missing.h5: view shard not found"):
        ShardReader(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ShardError, match="junk.h5: not a readable HDF5 file"):
        ShardReader(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle.attrs["something"] = 1
    with pytest.raises(ShardError, match="other.h5: not a cocon-view-shard file"):
        ShardReader(tmp_path / "other.h5")
    with ShardWriter(tmp_path / "flow.h5", "flow", {}) as writer:
        writer.add_video("clip", np.zeros((1, 2, 2, 2), np.uint8), {})
    with pytest.raises(ShardError, match="holds the 'flow' view, expected 'rgb'"):
        ShardReader(tmp_path / "flow.h5", view="rgb")
    with ShardReader(tmp_path / "flow.h5") as reader, pytest.raises(ShardError, match="no video 'absent'"):
        reader.read("absent")


def test_every_stored_byte_is_checksummed(tmp_path):
    encoded = [encode_jpeg(frame, 90) for frame in frames_bgr(4)]
    with ShardWriter(tmp_path / "rgb.h5", "rgb", {"shard": "00000"}) as writer:
        writer.add_video("clip", encoded, {"num_frames": 4})
    with ShardWriter(tmp_path / "flow.h5", "flow", {"shard": "00000"}) as writer:
        writer.add_video("clip", np.zeros((3, 12, 16, 2), np.uint8), {"num_frames": 4}, compression="gzip",
                         chunks=(1, 12, 16, 2))
        writer.add_video("still", np.zeros((0, 12, 16, 2), np.uint8), {"num_frames": 1})
    stored = {}
    for name in ("rgb.h5", "flow.h5"):
        with h5py.File(tmp_path / name) as handle:
            handle.visititems(lambda path, item: stored.update(
                {f"{name}/{path}": item.fletcher32} if isinstance(item, h5py.Dataset) and item.size else {}))
    assert stored == {"rgb.h5/videos/clip/frames": True, "rgb.h5/videos/clip/offsets": True,
                      "flow.h5/videos/clip/frames": True}
    with ShardReader(tmp_path / "flow.h5") as reader:
        assert reader.read("still").shape == (0, 12, 16, 2)


def test_shards_without_checksums_are_refused_with_how_to_rebuild_them(tmp_path):
    with ShardWriter(tmp_path / "old.h5", "flow", {}) as writer:
        writer.add_video("clip", np.zeros((1, 2, 2, 2), np.uint8), {})
    with h5py.File(tmp_path / "old.h5", "r+") as handle:
        handle.attrs["format_version"] = 1
    with pytest.raises(ShardError, match=r"old\.h5: format version 1; this code reads version 2, whose every byte "
                                         r"carries a checksum: rebuild the view shards .*--forcerun frames"):
        ShardReader(tmp_path / "old.h5")
