"""The batched pretraining jitter (one op over a clip's frames) against the per-frame path:
the same draws, in the same order, give the same output."""
import torch

from cocon.data import clips
from cocon.data.clips import apply_frame_jitter, draw_frame_jitter, jitter_frames, jitter_frames_per_frame


def test_batched_jitter_equals_per_frame_path_for_the_same_draws():
    clip = torch.rand(40, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    clip[0, :, :4] = 0.5  # grey pixels (zero chroma) and pure colours: the hue's edge cases
    clip[1, 0], clip[1, 1:] = 1.0, 0.0
    for seed in range(4):
        batched_generator, frame_generator = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        batched = jitter_frames(clip, batched_generator)
        per_frame = jitter_frames_per_frame(clip, frame_generator)
        assert batched.shape == per_frame.shape == clip.shape
        torch.testing.assert_close(batched, per_frame, atol=1e-5, rtol=0)
        # both consumed the same draws: the generators are in the same state afterwards
        assert torch.equal(batched_generator.get_state(), frame_generator.get_state())


def test_draws_follow_the_per_frame_order_and_distributions():
    factors = draw_frame_jitter(2000, torch.Generator().manual_seed(0))
    assert factors.shape == (2000, 5)
    for column, (low, high) in enumerate([(0.5, 1.5)] * 3 + [(-0.25, 0.25)]):
        assert factors[:, column].min() >= low and factors[:, column].max() <= high
        assert abs(factors[:, column].mean().item() - (low + high) / 2) < 0.03
    assert set(factors[:, 4].tolist()) == {0.0, 1.0} and abs(factors[:, 4].mean().item() - 0.5) < 0.05
    generator = torch.Generator().manual_seed(3)
    first = [clips._uniform(generator, 0.5, 1.5) for _ in range(3)] + [clips._uniform(generator, -0.25, 0.25)]
    assert torch.allclose(draw_frame_jitter(1, torch.Generator().manual_seed(3))[0, :4],
                          torch.tensor(first, dtype=torch.float64))


def test_greyed_frames_are_grey():
    clip = torch.rand(4, 3, 8, 8)
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.1, 1.0], [1.0, 1.0, 1.0, 0.1, 0.0]] * 2, dtype=torch.float64)
    out = apply_frame_jitter(clip, factors)
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 1], out[0, 2])
    assert not torch.equal(out[1, 0], out[1, 1])
