"""TV-L1 in PyTorch (cocon.views.tvl1) against OpenCV's DualTVL1OpticalFlow on real frames,
and the flow stage's torch backend against its OpenCV backend."""
import cv2
import numpy as np
import pytest
import torch

from cocon.data.shards import ShardReader, ShardWriter, encode_jpeg
from cocon.data.video import iter_frames
from cocon.views.flow import dequantize_flow, extract_flow, quantize_flow
from cocon.views.tvl1 import tvl1_flow

CLIPS = ["ucf101/PushUps/v_PushUps_g02_c03.avi", "hmdb51_reencoded/dive/BASE_Jumping_Compilation_-_Brilliant_dive_f_cm_np1_le_bad_3.mp4"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One thread: torch's threads oversubscribe a busy 2-core machine (many times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _grey_frames(path, count, short_side, start=0):
    grey = []
    for index, frame in enumerate(iter_frames(path, short_side)):
        if index >= start:
            grey.append(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        if len(grey) == count:
            break
    return grey


def _ours(first, second, **params):
    a = torch.from_numpy(np.stack(first)).float()
    b = torch.from_numpy(np.stack(second)).float()
    return tvl1_flow(a, b, **params).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("clip", CLIPS)
def test_accuracy_goal_on_real_frames_at_240(videos_dir, clip):
    grey = _grey_frames(videos_dir / clip, 2, 240, start=10)
    reference = cv2.optflow.DualTVL1OpticalFlow_create().calc(grey[0], grey[1], None)
    ours = _ours([grey[0]], [grey[1]])[0]
    assert ours.shape == reference.shape and ours.dtype == np.float32
    assert np.sqrt((reference ** 2).sum(-1)).mean() > 0.1, "the frames move"
    epe = np.sqrt(((ours - reference) ** 2).sum(-1)).mean()
    levels = np.abs(quantize_flow(ours, 20).astype(int) - quantize_flow(reference, 20).astype(int))
    assert epe <= 0.3
    assert (levels <= 1).mean() >= 0.95


def test_batch_equals_pairs_one_by_one(videos_dir):
    grey = _grey_frames(videos_dir / CLIPS[0], 4, 64)
    batch = _ours(grey[:-1], grey[1:])
    for index in range(3):
        single = _ours([grey[index]], [grey[index + 1]])[0]
        np.testing.assert_allclose(batch[index], single, atol=1e-5)


def test_parameters_follow_opencv(videos_dir):
    grey = _grey_frames(videos_dir / CLIPS[0], 2, 64)
    params = dict(tau=0.2, lambda_=0.1, theta=0.4, nscales=3, warps=2, epsilon=0.02, inner_iterations=10,
                  outer_iterations=3, scale_step=0.6, gamma=0.1, median_filtering=3)
    reference = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=0.2, lambda_=0.1, theta=0.4, nscales=3, warps=2, epsilon=0.02, innnerIterations=10, outerIterations=3,
        scaleStep=0.6, gamma=0.1, medianFiltering=3).calc(grey[0], grey[1], None)
    ours = _ours([grey[0]], [grey[1]], **params)[0]
    assert np.sqrt(((ours - reference) ** 2).sum(-1)).mean() <= 0.3
    with pytest.raises(TypeError, match="unknown parameter"):
        _ours([grey[0]], [grey[1]], taux=1)


def test_flow_stage_torch_backend_writes_the_opencv_backends_shard(tmp_path, videos_dir):
    """Two videos of different frame sizes in one shard: pairs batched across videos and sizes."""
    videos = {}
    for clip in CLIPS:
        frames = []
        for index, frame in enumerate(iter_frames(videos_dir / clip, 72)):
            frames.append(frame)
            if index == 3:
                break
        videos[clip.split("/")[-1].rsplit(".", 1)[0]] = frames
    attrs = dict(label="x", label_index=0, fps=25.0, num_frames=4, orig_width=1, orig_height=1, width=1, height=1,
                 source_path="x")
    with ShardWriter(tmp_path / "rgb.h5", "rgb", {"shard": "00000", "short_side": 72}) as writer:
        for video_id, frames in videos.items():
            writer.add_video(video_id, [encode_jpeg(f, 90) for f in frames], attrs)
    from cocon.config import load_dataset_config
    from tests.conftest import write_yaml
    config = load_dataset_config(write_yaml(tmp_path / "d.yaml", f"""
        layout: folder
        root: {tmp_path}
        flow: {{method: tvl1}}
    """))
    assert config["flow"]["backend"] == "opencv" and config["flow"]["device"] == "cpu"
    extract_flow(config, tmp_path / "rgb.h5", tmp_path / "cv.h5")
    torch_config = {**config, "flow": {**config["flow"], "backend": "torch", "batch_pairs": 2}}
    extract_flow(torch_config, tmp_path / "rgb.h5", tmp_path / "torch.h5")
    with ShardReader(tmp_path / "cv.h5", view="flow") as cv, ShardReader(tmp_path / "torch.h5", view="flow") as ours:
        assert ours.video_ids == cv.video_ids == sorted(videos)
        assert ours.attrs["backend"] == "torch:cpu"
        for key in ("bound", "computed_short_side", "short_side", "method"):
            assert ours.attrs[key] == cv.attrs[key]
        for video_id in cv.video_ids:
            a, b = cv.read(video_id), ours.read(video_id)
            assert a.shape == b.shape == (3, *videos[video_id][0].shape[:2], 2) and b.dtype == np.uint8
            assert (np.abs(a.astype(int) - b.astype(int)) <= 1).mean() >= 0.95
            epe = np.sqrt(((dequantize_flow(a, 20) - dequantize_flow(b, 20)) ** 2).sum(-1)).mean()
            assert epe <= 0.3
            assert ours.video_attrs(video_id)["num_frames"] == cv.video_attrs(video_id)["num_frames"]
