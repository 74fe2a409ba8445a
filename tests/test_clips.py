"""Clip sampling: windows, looping, dense test windows, augmentation and determinism."""
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from cocon.data.clips import (
    IMAGENET_MEAN, IMAGENET_STD, POSE_FLIP_ORDER, ClipDataset, ClipSpec, EpochSampler, VideoRef, augment,
    clip_tensor, dense_starts, normalize, to_view_tensor, window_indices,
)
from cocon.data.shards import ShardReader, ShardWriter, encode_jpeg


def test_window_takes_one_frame_in_stride():
    spec = ClipSpec(num_blocks=8, block_length=5, stride=3)
    assert spec.span == 118
    indices = window_indices(200, spec, start=10)
    assert indices.tolist() == list(range(10, 10 + 40 * 3, 3))


def test_short_video_loops_instead_of_padding():
    spec = ClipSpec(num_blocks=2, block_length=3, stride=2)
    # 5 frames -> 4 usable (the flow view has one fewer)
    assert window_indices(5, spec, 0).tolist() == [0, 2, 0, 2, 0, 2]


def test_dense_windows_overlap_by_half_without_a_repeated_tail():
    spec = ClipSpec(num_blocks=8, block_length=5, stride=3)  # a window spans 118 frames
    # half of 8 blocks = 4 blocks x 5 frames x stride 3 = 60 frames between starts; the tail
    # after the last whole window is left out, as DPC's test does (no window at 121 or 181)
    assert dense_starts(240, spec) == [0, 60, 120]
    assert dense_starts(300, spec) == [0, 60, 120, 180]
    assert dense_starts(spec.span + 2, spec) == [0]  # just over one window: one window, not two
    assert dense_starts(50, spec) == [0]  # shorter than a window: one looped window
    # DPC: frames 0, 3, 6, ... in blocks of 5, windows of 8 blocks every 4 blocks
    for frames in range(spec.span, 400):
        blocks = len(range(0, frames - 1, 3)) // 5  # its frames, less the last (the flow view's length)
        dpc = [block * 15 for block in range(0, blocks + 1 - 8, 4)]
        assert dense_starts(frames, spec) == (dpc or [0]), frames


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


def identical_frames(count: int, size: int = 16) -> torch.Tensor:
    """An rgb clip ``[count, 3, size, size]`` of one random frame repeated: whatever differs
    between its augmented frames was drawn frame by frame."""
    frame = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    return frame.expand(count, 3, size, size).clone()


def is_grey(frame: torch.Tensor) -> bool:
    return torch.equal(frame[0], frame[1]) and torch.equal(frame[1], frame[2])


def test_finetuning_jitters_a_share_of_clips_with_one_draw_per_clip_and_never_greys():
    clip = identical_frames(4)
    seeds, jittered = 200, 0
    for seed in range(seeds):
        out = augment("rgb", clip, 16, torch.Generator().manual_seed(seed), augmentation="finetune",
                      color_jitter=0.3)
        assert out.shape == (4, 3, 16, 16)
        assert all(torch.equal(frame, out[0]) for frame in out[1:]), f"seed {seed}: frames jittered apart"
        assert not any(is_grey(frame) for frame in out), f"seed {seed}: a grey frame"
        # the same crop and flip without jitter: jitter is drawn after them
        plain = augment("rgb", clip, 16, torch.Generator().manual_seed(seed), augmentation="finetune",
                        color_jitter=0.0)
        jittered += not torch.equal(out, plain)
    assert 0.2 < jittered / seeds < 0.4, f"{jittered} of {seeds} clips jittered, expected about 30%"


def test_pretraining_jitters_and_greys_frame_by_frame():
    clip = identical_frames(8)
    seeds, grey = 10, 0
    for seed in range(seeds):
        out = augment("rgb", clip, 16, torch.Generator().manual_seed(seed))
        assert len({frame.numpy().tobytes() for frame in out}) > 1, f"seed {seed}: every frame jittered alike"
        grey += sum(is_grey(frame) for frame in out)
    assert 0.3 < grey / (seeds * len(clip)) < 0.7, f"{grey} of {seeds * len(clip)} frames grey, expected half"


def test_test_crop_is_the_central_square_of_a_share_of_the_short_side():
    clip = torch.rand(2, 3, 240, 320, generator=torch.Generator().manual_seed(0))
    # DPC: CenterCrop 224 of the 240-px frame, resized to 128
    out = augment("rgb", clip, 128, None, center_crop=0.9333)
    assert torch.equal(out, TF.resize(clip[..., 8:232, 48:272], [128, 128], antialias=True))
    full_square = augment("rgb", clip, 128, None)
    assert torch.equal(full_square, TF.resize(clip[..., :, 40:280], [128, 128], antialias=True))


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
    # 29 usable frames, windows of 7 spanned frames every 4 (2 of 4 blocks) while they fit;
    # 8 usable frames: one window
    assert [(item["video"], item["start"]) for item in dataset] == [(0, 0), (0, 4), (0, 8), (0, 12), (0, 16),
                                                                    (0, 20), (1, 0)]
    short = dataset[6]["seg"][:, 0, :, 4, 4].flatten() * 255 / 8
    assert short.round().int().tolist() == [0, 2, 4, 6]


def test_test_windows_take_the_configured_centre_crop(tiny_views):
    views_dir, refs = tiny_views
    spec = ClipSpec(num_blocks=2, block_length=2, stride=2)
    dataset = ClipDataset(refs, views_dir, ["rgb"], {"rgb": 16}, spec, train=False, center_crop=0.5)
    item = dataset[0]
    frames = ShardReader(views_dir / "rgb" / "00000.h5", view="rgb").read_frames("a", window_indices(30, spec, 0))
    # 24 x 32 frames: the central 12 x 12 square
    crop = TF.resize(to_view_tensor("rgb", frames)[..., 6:18, 10:22], [16, 16], antialias=True)
    expected = normalize("rgb", crop).reshape(2, 2, 3, 16, 16).transpose(1, 2)
    # rgb is resized as uint8: the same filter, rounded to whole levels (1/255 before normalising)
    torch.testing.assert_close(item["rgb"], expected, atol=1 / 255 / min(IMAGENET_STD) + 1e-6, rtol=0)


def test_rgb_is_cropped_and_resized_as_uint8_and_the_other_views_as_float():
    frames = np.random.default_rng(0).integers(0, 256, (6, 48, 64, 3), dtype=np.uint8)
    stored = clip_tensor("rgb", frames)
    assert stored.dtype == torch.uint8 and stored.shape == (6, 3, 48, 64)
    generator = torch.Generator().manual_seed(3)
    fast = augment("rgb", stored, 32, torch.Generator().manual_seed(3), augmentation="finetune", color_jitter=0.0)
    slow = augment("rgb", to_view_tensor("rgb", frames), 32, generator, augmentation="finetune", color_jitter=0.0)
    # the same crop and flip drawn, the same filter: within one level of rounding
    assert fast.dtype == torch.float32
    assert (fast - slow).abs().max() <= 1 / 255 + 1e-6 and (fast - slow).abs().mean() < 0.5 / 255
    for view, shape in (("flow", (6, 48, 64, 2)), ("seg", (6, 48, 64))):
        values = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
        assert torch.equal(clip_tensor(view, values), to_view_tensor(view, values))


def test_dataset_augments_as_it_is_told(tiny_views):
    views_dir, refs = tiny_views
    spec = ClipSpec(num_blocks=2, block_length=2, stride=2)

    def grey_frames(augmentation: str) -> int:
        dataset = ClipDataset(refs, views_dir, ["rgb"], {"rgb": 16}, spec, train=True, augmentation=augmentation,
                              color_jitter=1.0)
        clips = [dataset[(epoch, item)]["rgb"] for epoch in range(5) for item in range(len(dataset))]
        # [N, C, K, H, W] -> the N * K frames [C, H, W]
        frames = [frame for clip in clips for frame in clip.transpose(1, 2).flatten(0, 1)]
        assert len(frames) == 5 * len(refs) * spec.num_frames
        # frames are normalised per channel: undo it, so that a grey frame has equal channels
        std, mean = (torch.tensor(values)[:, None, None] for values in (IMAGENET_STD, IMAGENET_MEAN))
        return sum(torch.allclose((frame * std + mean)[0], (frame * std + mean)[1:], atol=1e-5) for frame in frames)

    assert grey_frames("pretrain") > 0
    assert grey_frames("finetune") == 0
    with pytest.raises(ValueError, match="augmentation 'test'"):
        ClipDataset(refs, views_dir, ["rgb"], {"rgb": 16}, spec, train=True, augmentation="test")
