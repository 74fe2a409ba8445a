"""Clip sampling: windows, looping, dense test windows, augmentation and determinism."""
import numpy as np
import pytest
import torch

from cocon.data.clips import (
    POSE_FLIP_ORDER, ClipDataset, ClipSpec, EpochSampler, VideoRef, augment, dense_starts, window_indices,
)
from cocon.data.shards import ShardWriter, encode_jpeg


def test_window_takes_one_frame_in_stride():
    spec = ClipSpec(num_blocks=8, block_length=5, stride=3)
    assert spec.span == 118
    indices = window_indices(200, spec, start=10)
    assert indices.tolist() == list(range(10, 10 + 40 * 3, 3))


def test_short_video_loops_instead_of_padding():
    spec = ClipSpec(num_blocks=2, block_length=3, stride=2)
    # 5 frames -> 4 usable (the flow view has one fewer)
    assert window_indices(5, spec, 0).tolist() == [0, 2, 0, 2, 0, 2]


def test_dense_windows_overlap_by_half_and_cover_the_video():
    spec = ClipSpec(num_blocks=8, block_length=5, stride=3)
    starts = dense_starts(301, spec)  # 300 usable frames
    assert starts[:3] == [0, 60, 120]  # half of 8 blocks = 4 blocks x 5 frames x stride 3
    assert starts[-1] + spec.span == 300  # the last window ends at the last usable frame
    assert dense_starts(50, spec) == [0]


def test_sampler_gives_each_process_its_own_whole_batches():
    shards = [list(EpochSampler(22, 4, seed=1, rank=rank, world_size=2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 8  # 22 // (4 * 2) = 2 batches each
    items = [item for shard in shards for _, item in shard]
    assert len(set(items)) == 16
    sampler = EpochSampler(22, 4, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert [item for _, item in first] != [item for _, item in sampler]
    with pytest.raises(ValueError, match="no whole batch"):
        EpochSampler(3, 4, seed=0)


def test_pose_flip_swaps_left_and_right():
    clip = torch.zeros(2, 17, 8, 8)
    for channel in range(17):
        clip[:, channel] = channel
    for seed in range(20):
        out = augment("pose", clip, 8, torch.Generator().manual_seed(seed))
        values = out[0, :, 4, 4].round().int().tolist()
        if values != list(range(17)):
            assert values == list(POSE_FLIP_ORDER)
            return
    pytest.fail("no flip drawn in 20 seeds")


@pytest.fixture
def tiny_views(tmp_path):
    """rgb and seg shards of two short videos with frame-numbered content."""
    rng = np.random.default_rng(0)
    videos = {"a": 30, "b": 9}
    attrs = {key: 0 for key in ("label", "label_index", "fps", "num_frames", "orig_width", "orig_height",
                                "width", "height", "source_path")}
    with ShardWriter(tmp_path / "rgb" / "00000.h5", "rgb", {"shard": "00000"}) as rgb, \
            ShardWriter(tmp_path / "seg" / "00000.h5", "seg", {"shard": "00000"}) as seg:
        for video, count in videos.items():
            rgb.add_video(video, [encode_jpeg(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), 95)
                                  for _ in range(count)], attrs)
            # the seg value of frame t is 8 * t: the sampled indices can be read back
            seg.add_video(video, np.stack([np.full((12, 16), 8 * t, np.uint8) for t in range(count)]), attrs)
    refs = [VideoRef(video, "00000", count, index) for index, (video, count) in enumerate(videos.items())]
    return tmp_path, refs


def test_samples_are_deterministic_and_views_share_the_window(tiny_views):
    views_dir, refs = tiny_views
    spec = ClipSpec(num_blocks=2, block_length=2, stride=2)
    dataset = ClipDataset(refs, views_dir, ["rgb", "seg"], {"rgb": 16, "seg": 8}, spec, train=True, seed=3)
    first, again, other_epoch = dataset[(0, 0)], dataset[(0, 0)], dataset[(1, 0)]
    assert first["rgb"].shape == (2, 3, 2, 16, 16)
    assert first["seg"].shape == (2, 1, 2, 8, 8)
    assert torch.equal(first["rgb"], again["rgb"]) and torch.equal(first["seg"], again["seg"])
    assert not torch.equal(first["rgb"], other_epoch["rgb"])
    # seg frames are constant images of value 8 t: they give back the window's frame indices
    sampled = (first["seg"][:, 0, :, 4, 4].flatten() * 255 / 8).round().int().tolist()
    assert sampled == window_indices(30, spec, first["start"]).tolist()


def test_test_windows_are_dense_and_unaugmented(tiny_views):
    views_dir, refs = tiny_views
    spec = ClipSpec(num_blocks=2, block_length=2, stride=2)
    dataset = ClipDataset(refs, views_dir, ["seg"], {"seg": 8}, spec, train=False)
    # 29 usable frames, windows of 7 spanned frames every 4 (2 of 4 blocks), the last one
    # moved back to end on the last usable frame
    assert [(item["video"], item["start"]) for item in dataset] == [(0, 0), (0, 4), (0, 8), (0, 12), (0, 16),
                                                                    (0, 20), (0, 22), (1, 0), (1, 1)]
    short = dataset[7]["seg"][:, 0, :, 4, 4].flatten() * 255 / 8
    assert short.round().int().tolist() == [0, 2, 4, 6]  # 8 usable frames: two windows fit
