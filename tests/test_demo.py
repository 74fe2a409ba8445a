"""The embedded demo dataset: deterministic, decodable, and learnable by each view."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cocon.data import demo
from cocon.data.demo import DEMO_CLASSES, demo_video_names, generate_demo, render_video

NUM_FRAMES = 16
WIDTH, HEIGHT = 160, 120


@pytest.fixture(scope="module")
def demo_videos(tmp_path_factory) -> dict[str, Path]:
    """Two short videos per class, keyed by file stem."""
    out_dir = tmp_path_factory.mktemp("demo")
    paths = generate_demo(out_dir, videos_per_class=2, num_frames=NUM_FRAMES, width=WIDTH, height=HEIGHT)
    return {path.stem: path for path in paths}


def decode(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def farneback_flows(path: Path) -> np.ndarray:
    """[T-1, H, W, 2] dense flow (u, v) between consecutive frames."""
    grey = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in decode(path)]
    return np.stack([
        cv2.calcOpticalFlowFarneback(previous, following, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        for previous, following in zip(grey, grey[1:])
    ])


def test_names_are_deterministic_and_match_the_files_written(tmp_path):
    names = demo_video_names(3, 2)
    assert names == demo_video_names(3, 2)
    assert [class_name for class_name, _ in names] == [c for c in DEMO_CLASSES[:3] for _ in range(2)]
    assert len({stem for _, stem in names}) == len(names)

    paths = generate_demo(tmp_path, num_classes=3, videos_per_class=2, num_frames=4)

    assert paths == [tmp_path / class_name / f"{stem}.avi" for class_name, stem in names]
    assert sorted(tmp_path.rglob("*")) == sorted(paths + [tmp_path / c for c in DEMO_CLASSES[:3]])


@pytest.mark.parametrize(
    ("num_classes", "videos_per_class"), [(0, 1), (len(DEMO_CLASSES) + 1, 1), (1, 0)]
)
def test_impossible_counts_are_refused(num_classes, videos_per_class):
    with pytest.raises(ValueError):
        demo_video_names(num_classes, videos_per_class)


def test_same_seed_gives_the_same_bytes_and_another_seed_differs(tmp_path):
    def generate(name, seed):
        paths = generate_demo(tmp_path / name, num_classes=2, videos_per_class=2, num_frames=6, seed=seed)
        return [path.read_bytes() for path in paths]

    first = generate("first", seed=0)
    assert generate("again", seed=0) == first
    other = generate("other", seed=1)
    assert all(theirs != ours for theirs, ours in zip(other, first))


def test_every_video_decodes_to_the_requested_frames_and_size(demo_videos, tmp_path):
    for path in demo_videos.values():
        frames = decode(path)
        assert len(frames) == NUM_FRAMES, path
        assert all(frame.shape == (HEIGHT, WIDTH, 3) for frame in frames), path

    (odd_size,) = generate_demo(tmp_path, num_classes=1, videos_per_class=1, num_frames=5, width=96, height=72)
    assert [frame.shape for frame in decode(odd_size)] == [(72, 96, 3)] * 5


def test_an_unopenable_writer_is_reported(tmp_path, monkeypatch):
    class ClosedWriter:
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False

    monkeypatch.setattr(demo.cv2, "VideoWriter", ClosedWriter)
    with pytest.raises(RuntimeError, match="MJPG video writer"):
        generate_demo(tmp_path, num_classes=1, videos_per_class=1, num_frames=3)


@pytest.mark.parametrize("stem", ["slide_left_to_right_000", "slide_left_to_right_001"])
def test_left_to_right_flows_right(demo_videos, stem):
    assert farneback_flows(demo_videos[stem])[..., 0].mean() > 0.3


@pytest.mark.parametrize("stem", ["slide_right_to_left_000", "slide_right_to_left_001"])
def test_right_to_left_flows_left(demo_videos, stem):
    assert farneback_flows(demo_videos[stem])[..., 0].mean() < -0.3


@pytest.mark.parametrize("stem", ["bounce_up_down_000", "bounce_up_down_001"])
def test_bounce_flows_vertically(demo_videos, stem):
    flows = farneback_flows(demo_videos[stem])
    assert np.abs(flows[..., 1]).mean() > 3 * np.abs(flows[..., 0]).mean()


@pytest.mark.parametrize("stem", ["zoom_in_000", "zoom_in_001"])
def test_zoom_in_flows_outwards(demo_videos, stem):
    flows = farneback_flows(demo_videos[stem])
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    outward = []
    for flow in flows:
        # About the centre of the motion, so that a plain translation would score zero.
        magnitude = np.hypot(flow[..., 0], flow[..., 1])
        centre_x = (magnitude * columns).sum() / magnitude.sum()
        centre_y = (magnitude * rows).sum() / magnitude.sum()
        outward.append((flow[..., 0] * (columns - centre_x) + flow[..., 1] * (rows - centre_y)).mean())
    assert np.mean(outward) > 2.0


def test_mediapipe_finds_and_segments_the_person(demo_videos):
    import mediapipe

    found, frames_seen, overlaps = 0, 0, []
    for class_name in DEMO_CLASSES:
        alphas = [alpha for _, alpha in render_video(class_name, 0, NUM_FRAMES, WIDTH, HEIGHT)]
        pose = mediapipe.solutions.pose.Pose(static_image_mode=False, model_complexity=1)
        segmentation = mediapipe.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        with pose, segmentation:
            for frame, alpha in zip(decode(demo_videos[f"{class_name}_000"]), alphas):
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                found += pose.process(rgb).pose_landmarks is not None
                frames_seen += 1
                mask = segmentation.process(rgb).segmentation_mask > 0.5
                person = alpha > 0.5
                overlaps.append((mask & person).sum() / (mask | person).sum())
    assert frames_seen == len(DEMO_CLASSES) * NUM_FRAMES
    assert found / frames_seen >= 0.7
    assert np.mean(overlaps) >= 0.6
