"""Our flow stage gives OpenCV's own flow on frames of a real clip."""
import cv2
import numpy as np
import pytest

from cocon.config import load_dataset_config
from cocon.data.manifest import run_manifest
from cocon.data.shards import ShardReader, ShardWriter, encode_jpeg
from cocon.views.flow import (compute_flow, dequantize_flow, extract_flow, frames_short_side, make_flow_estimator,
                              quantize_flow, to_gray)
from cocon.views.frames import extract_frames
from tests.conftest import write_yaml


@pytest.fixture(scope="module")
def real_shards(tmp_path_factory, real_clip):
    """rgb and TV-L1 flow shards of one real UCF101 clip at 64 px, through the real stages."""
    folder = tmp_path_factory.mktemp("flow")
    videos = folder / "videos" / "PushUps"
    videos.mkdir(parents=True)
    (videos / real_clip.name).symlink_to(real_clip)
    config = load_dataset_config(write_yaml(folder / "clip.yaml", f"""
        layout: folder
        root: {folder / 'videos'}
        test_fraction: 0
        frames: {{short_side: 64}}
        flow: {{method: tvl1}}
    """))
    run_manifest(config, folder / "manifest.tsv", folder / "excluded.tsv")
    extract_frames(config, folder / "manifest.tsv", "00000", folder / "rgb.h5")
    # only the first frames, to keep TV-L1 fast: truncate the stored video to 6 frames
    with ShardReader(folder / "rgb.h5") as reader:
        frames = reader.read(real_clip.stem, 0, 6)
    return config, frames, folder


def test_tvl1_is_exactly_opencv(real_shards):
    config, frames, _ = real_shards
    gray = to_gray(frames)
    ours = make_flow_estimator(config["flow"])(gray[0], gray[1])
    reference = cv2.optflow.DualTVL1OpticalFlow_create().calc(gray[0], gray[1], None)
    assert ours.dtype == np.float32 and ours.shape == (*gray[0].shape, 2)
    assert np.array_equal(ours, reference)
    assert np.abs(reference).max() > 0.5, "the clip moves"


def test_farneback_is_exactly_opencv(real_shards):
    config, frames, _ = real_shards
    gray = to_gray(frames)
    ours = make_flow_estimator({**config["flow"], "method": "farneback"})(gray[2], gray[3])
    reference = cv2.calcOpticalFlowFarneback(gray[2], gray[3], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    assert np.array_equal(ours, reference)


def test_quantized_flow_within_one_level(real_shards):
    config, frames, _ = real_shards
    gray = to_gray(frames)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    reference = np.stack([tvl1.calc(gray[i], gray[i + 1], None) for i in range(len(gray) - 1)])
    ours = compute_flow(frames, config["flow"])
    assert ours.shape == (len(frames) - 1, *gray[0].shape, 2) and ours.dtype == np.uint8
    expected = np.clip(np.round((np.clip(reference, -20, 20) + 20) * 255 / 40), 0, 255)
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    # dequantizing recovers the clipped flow to within half a quantization step
    step = 40 / 255
    assert np.abs(dequantize_flow(ours, 20) - np.clip(reference, -20, 20)).max() <= step / 2 + 1e-4


def test_flow_stage_is_aligned_with_frames(real_shards, real_clip):
    config, _, folder = real_shards
    config = {**config, "flow": {**config["flow"], "method": "farneback"}}
    extract_flow(config, folder / "rgb.h5", folder / "flow.h5", threads=2)
    with ShardReader(folder / "rgb.h5") as rgb, ShardReader(folder / "flow.h5", view="flow") as flow:
        video = real_clip.stem
        assert flow.num_frames(video) == rgb.num_frames(video) - 1
        assert flow.video_attrs(video)["num_frames"] == rgb.num_frames(video)
        assert flow.attrs["bound"] == 20
        frames = rgb.read(video, 10, 12)
        gray = to_gray(frames)
        expected = quantize_flow(make_flow_estimator(config["flow"])(gray[0], gray[1]), 20)
        assert np.abs(flow.read(video, 10, 11)[0].astype(int) - expected.astype(int)).max() <= 1


def test_flow_stored_at_short_side_is_resized_full_resolution_flow(real_shards):
    """flow.short_side: TV-L1 at the frames' 85x64, stored at 42x32 with the values kept in
    pixels of the 64-px frames (resized like an image, as DPC's flow JPEGs were)."""
    config, frames, _ = real_shards
    gray = to_gray(frames)
    assert gray[0].shape == (64, 85)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    full = [tvl1.calc(gray[i], gray[i + 1], None) for i in range(len(gray) - 1)]
    ours = compute_flow(frames, {**config["flow"], "short_side": 32})
    width = round(gray[0].shape[1] * 32 / 64)
    assert ours.shape == (len(frames) - 1, 32, width, 2) and ours.dtype == np.uint8
    expected = np.stack([quantize_flow(cv2.resize(flow, (width, 32), interpolation=cv2.INTER_AREA), 20)
                         for flow in full])
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    # not rescaled: the mean motion is that of the full-resolution flow, in its pixels
    assert np.abs(dequantize_flow(ours, 20).mean(axis=(1, 2)) - np.stack(full).mean(axis=(1, 2))).max() < 0.05
    assert np.abs(np.stack(full)).max() > 0.5, "the clip moves"
    # null: the frames' own size, today's behaviour
    assert compute_flow(frames[:2], {**config["flow"], "short_side": None}).shape == (1, *gray[0].shape, 2)


@pytest.mark.parametrize("short_side", [None, 32])
def test_flow_shard_says_computed_and_stored_size(real_shards, real_clip, short_side):
    config, _, folder = real_shards
    config = {**config, "flow": {**config["flow"], "method": "farneback", "short_side": short_side}}
    out = folder / f"flow_{short_side}.h5"
    extract_flow(config, folder / "rgb.h5", out)
    with ShardReader(folder / "rgb.h5") as rgb, ShardReader(out, view="flow") as flow:
        video = real_clip.stem
        height, width = rgb.read(video, 0, 1).shape[1:3]
        stored = flow.read(video, 0, 2)
        assert flow.attrs["computed_short_side"] == 64 == min(height, width)
        if short_side is None:
            assert flow.attrs["short_side"] == 64
            assert stored.shape == (2, height, width, 2)
        else:
            assert flow.attrs["short_side"] == 32
            assert stored.shape == (2, 32, round(width * 32 / 64), 2)
        assert flow.num_frames(video) == rgb.num_frames(video) - 1


def test_frames_short_side_without_the_attribute(tmp_path, real_shards):
    """An rgb shard written without ``short_side`` (e.g. by a benchmark): the first frame tells."""
    _, frames, _ = real_shards
    with ShardWriter(tmp_path / "rgb.h5", "rgb", {"shard": "00000"}) as writer:
        writer.add_video("clip", [encode_jpeg(frame[..., ::-1], 90) for frame in frames[:2]], {"num_frames": 2})
    assert frames_short_side(tmp_path / "rgb.h5") == min(frames.shape[1:3])


def test_quantize_round_trip_and_clipping():
    flow = np.array([[[-30.0, 30.0], [0.0, 5.0]]], dtype=np.float32)
    quantized = quantize_flow(flow, 20)
    assert quantized.tolist() == [[[0, 255], [128, 159]]]
    assert np.allclose(dequantize_flow(quantized, 20), [[[-20, 20], [0.078, 4.94]]], atol=0.01)
