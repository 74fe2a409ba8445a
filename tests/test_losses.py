import math

import pytest
import torch

from cocon.losses import (
    cocon_loss,
    dense_nce,
    dense_nce_accuracy,
    pool_blocks,
    sim_loss,
    sync_loss,
)

# Two videos, one step, one location, D = 2. Scores <pred_i, gt_j> = [[2, 0], [3, 1]]:
# video 0 ranks its own target first, video 1 ranks the other video's target first.
HAND_PRED = torch.tensor([[2.0, 0.0], [3.0, 1.0]]).reshape(2, 1, 2, 1, 1)
HAND_GT = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 2, 1, 1)

# Block features of two videos with one block each, D = 2.
ORTHOGONAL_BLOCKS = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 2)
SKEWED_BLOCKS = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).reshape(2, 1, 2)


def random_dense(seed, shape=(3, 2, 8, 2, 2)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)


def random_blocks(seed, shape=(3, 4, 16)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)


def dense_nce_by_loops(pred, gt, temperature):
    batch, steps, _, rows, cols = pred.shape
    keys = [
        (b, t, y, x)
        for b in range(batch)
        for t in range(steps)
        for y in range(rows)
        for x in range(cols)
    ]
    total = 0.0
    for b, t, y, x in keys:
        scores = torch.stack(
            [pred[b, t, :, y, x].dot(gt[b2, t2, :, y2, x2]) for b2, t2, y2, x2 in keys]
        )
        total += -torch.log_softmax(scores / temperature, dim=0)[keys.index((b, t, y, x))]
    return total / len(keys)


# dense_nce


@pytest.mark.parametrize(
    "temperature, expected",
    [
        (1.0, (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2),
        (0.5, (math.log(1 + math.exp(-4)) + math.log(1 + math.exp(4))) / 2),
    ],
)
def test_dense_nce_by_hand(temperature, expected):
    loss = dense_nce(HAND_PRED, HAND_GT, temperature=temperature)

    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_dense_nce_accuracy_by_hand():
    assert dense_nce_accuracy(HAND_PRED, HAND_GT).item() == 0.5
    assert dense_nce_accuracy(HAND_GT * 5, HAND_GT).item() == 1.0


def test_dense_nce_pairs_every_video_step_and_location():
    pred, gt = random_dense(0), random_dense(1)

    loss = dense_nce(pred, gt, temperature=2.0)

    assert loss.item() == pytest.approx(dense_nce_by_loops(pred, gt, 2.0).item(), rel=1e-5)


def test_dense_nce_is_invariant_to_a_consistent_permutation_of_videos():
    pred, gt = random_dense(0), random_dense(1)
    order = torch.tensor([2, 0, 1])

    loss = dense_nce(pred, gt)

    assert dense_nce(pred[order], gt[order]).item() == pytest.approx(loss.item(), rel=1e-6)
    assert dense_nce(pred, gt[order]).item() != pytest.approx(loss.item(), rel=1e-3)


def test_dense_nce_sends_gradient_to_predictions_and_targets():
    pred = random_dense(0).requires_grad_()
    gt = random_dense(1).requires_grad_()

    dense_nce(pred, gt, temperature=0.07**2).backward()

    assert (pred.grad.abs().sum(dim=2) > 0).all()
    assert (gt.grad.abs().sum(dim=2) > 0).all()


def test_dense_nce_refuses_mismatched_shapes():
    with pytest.raises(ValueError):
        dense_nce(random_dense(0), random_dense(1, shape=(3, 1, 8, 2, 2)))
    with pytest.raises(ValueError):
        dense_nce(torch.zeros(3, 8, 2, 2), torch.zeros(3, 8, 2, 2))


# sync_loss


@pytest.mark.parametrize("p, expected", [(1, 0.5 / math.sqrt(2)), (2, 0.25)])
def test_sync_loss_by_hand(p, expected):
    # cosines within a view: [[1, 0], [0, 1]] against [[1, 1/sqrt2], [1/sqrt2, 1]]
    loss = sync_loss(ORTHOGONAL_BLOCKS, SKEWED_BLOCKS, p=p)

    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, abs=1e-4)


def test_cosines_add_1e_5_to_the_norm():
    tiny = torch.tensor([[[1e-5, 0.0]]])
    unit = torch.tensor([[[1.0, 0.0]]])

    loss = sync_loss(tiny, unit)

    assert loss.item() == pytest.approx(1 / (1 + 1e-5) ** 2 - 0.25, abs=1e-7)


def test_sync_loss_is_zero_when_views_agree_on_block_similarities():
    h = random_blocks(0)
    rescaled = h * (random_blocks(3, shape=(3, 4, 1)).abs() + 0.1)
    rotation, _ = torch.linalg.qr(random_blocks(1, shape=(16, 16)))
    wider = torch.cat([h @ rotation, torch.zeros(3, 4, 8)], dim=2)

    assert sync_loss(h, h).item() == 0
    assert sync_loss(h, rescaled).item() == pytest.approx(0, abs=1e-5)
    assert sync_loss(h, wider).item() == pytest.approx(0, abs=1e-5)
    assert sync_loss(h, random_blocks(2)).item() > 0.1


def test_sync_loss_is_invariant_to_a_consistent_permutation_of_videos_and_blocks():
    h_a, h_b = random_blocks(0), random_blocks(1)
    videos, blocks = torch.tensor([2, 0, 1]), torch.tensor([3, 1, 0, 2])

    loss = sync_loss(h_a, h_b)
    permuted = sync_loss(h_a[videos][:, blocks], h_b[videos][:, blocks])

    assert permuted.item() == pytest.approx(loss.item(), rel=1e-6)
    assert sync_loss(h_a, h_b[videos]).item() != pytest.approx(loss.item(), rel=1e-3)


@pytest.mark.parametrize("p", [1, 2])
def test_sync_loss_sends_gradient_to_both_views(p):
    h_a = random_blocks(0).requires_grad_()
    h_b = random_blocks(1).requires_grad_()

    sync_loss(h_a, h_b, p=p).backward()

    assert (h_a.grad.abs().sum(dim=2) > 0).all()
    assert (h_b.grad.abs().sum(dim=2) > 0).all()


def test_sync_loss_refuses_different_block_counts():
    with pytest.raises(ValueError):
        sync_loss(random_blocks(0), random_blocks(1, shape=(3, 5, 16)))


# sim_loss


@pytest.mark.parametrize("margin, expected", [(1.0, 0.25), (2.0, 0.75)])
def test_sim_loss_by_hand(margin, expected):
    # X = [[1, 1/sqrt2], [0, 1/sqrt2]], d = 1 - X; positives on the diagonal
    loss = sim_loss(ORTHOGONAL_BLOCKS, SKEWED_BLOCKS, margin=margin)

    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, abs=1e-4)


def test_sim_loss_is_zero_for_identical_orthogonal_blocks():
    assert sim_loss(ORTHOGONAL_BLOCKS, ORTHOGONAL_BLOCKS).item() == pytest.approx(0, abs=1e-4)


@pytest.mark.parametrize("cosine", [0.0, 0.3, 0.951, 1.0])
def test_sim_loss_is_one_half_whenever_every_cross_view_cosine_is_equal(cosine):
    # Collapsed block features (every block of a view the same vector) put sim on a plateau:
    # 0.5 (1 - c) + 0.5 max(0, c) = 0.5 for any c >= 0, so 0.5 does not mean orthogonal
    # (README "Evidence": sim stays at 0.5000 while the features are collapsed)
    u = torch.tensor([1.0, 0.0])
    v = torch.tensor([cosine, math.sqrt(1 - cosine ** 2)])
    loss = sim_loss(u.expand(2, 3, 2), v.expand(2, 3, 2))

    assert loss.item() == pytest.approx(0.5, abs=1e-4)


def test_sim_loss_prefers_aligned_views_to_shuffled_ones():
    h = random_blocks(0)
    other_view = h + 0.1 * random_blocks(1)
    shuffled = other_view.reshape(12, 16)[torch.randperm(12)].reshape(3, 4, 16)

    aligned_loss = sim_loss(h, other_view)
    shuffled_loss = sim_loss(h, shuffled)

    assert aligned_loss.item() < 0.1
    assert shuffled_loss.item() > aligned_loss.item() + 0.3


def test_other_blocks_of_the_same_video_are_negatives():
    same_in_every_block = random_blocks(0, shape=(2, 1, 16)).expand(2, 3, 16)
    distinct_blocks = random_blocks(1, shape=(2, 3, 16))

    assert sim_loss(same_in_every_block, same_in_every_block).item() > sim_loss(
        distinct_blocks, distinct_blocks
    ).item()


def test_sim_loss_is_invariant_to_a_consistent_permutation_of_videos():
    h_a, h_b = random_blocks(0), random_blocks(1)
    videos = torch.tensor([2, 0, 1])

    loss = sim_loss(h_a, h_b)

    assert sim_loss(h_a[videos], h_b[videos]).item() == pytest.approx(loss.item(), rel=1e-6)
    assert sim_loss(h_a, h_b[videos]).item() != pytest.approx(loss.item(), rel=1e-3)


def test_sim_loss_sends_gradient_to_both_views():
    h_a = random_blocks(0).requires_grad_()
    h_b = random_blocks(1).requires_grad_()

    sim_loss(h_a, h_b, margin=2.0).backward()

    assert (h_a.grad.abs().sum(dim=2) > 0).all()
    assert (h_b.grad.abs().sum(dim=2) > 0).all()


def test_sim_loss_needs_a_negative():
    with pytest.raises(ValueError):
        sim_loss(random_blocks(0, shape=(1, 1, 4)), random_blocks(1, shape=(1, 1, 4)))


# pool_blocks


def test_pool_blocks_max_pools_4x4_locations_before_the_mean():
    z = torch.arange(16.0).reshape(1, 1, 1, 4, 4).repeat(2, 3, 1, 1, 1)
    z = torch.cat([z, -z], dim=2)

    h = pool_blocks(z)

    # 2x2 maxima of 0..15 are 5, 7, 13, 15; of -(0..15) they are 0, -2, -8, -10
    assert h.shape == (2, 3, 2)
    assert torch.equal(h[..., 0], torch.full((2, 3), 10.0))
    assert torch.equal(h[..., 1], torch.full((2, 3), -5.0))


@pytest.mark.parametrize("size", [1, 2, 3])
def test_pool_blocks_averages_other_sizes(size):
    z = random_dense(0, shape=(2, 3, 5, size, size))

    assert torch.allclose(pool_blocks(z), z.mean(dim=(3, 4)))


# cocon_loss


def views_inputs(names, seed=0):
    preds, gts, block_feats = {}, {}, {}
    for offset, name in enumerate(names):
        preds[name] = random_dense(seed + 3 * offset).requires_grad_()
        gts[name] = random_dense(seed + 3 * offset + 1).requires_grad_()
        block_feats[name] = random_blocks(seed + 3 * offset + 2).requires_grad_()
    return preds, gts, block_feats


def test_one_view_is_cpc():
    preds, gts, block_feats = views_inputs(["rgb"])

    total, terms = cocon_loss(preds, gts, block_feats)

    assert set(terms) == {"cpc/rgb"}
    assert total.item() == pytest.approx(
        dense_nce(preds["rgb"], gts["rgb"], temperature=0.07**2).item(), rel=1e-6
    )


def test_two_views_add_weighted_sync_and_sim():
    preds, gts, block_feats = views_inputs(["rgb", "flow"])

    total, terms = cocon_loss(preds, gts, block_feats, lambda_=10.0, alpha=0.5, sync_p=2)

    cpc = sum(dense_nce(preds[v], gts[v], temperature=0.07**2) for v in ("rgb", "flow"))
    sync = sync_loss(block_feats["flow"], block_feats["rgb"], p=2)
    sim = sim_loss(block_feats["flow"], block_feats["rgb"])
    assert set(terms) == {"cpc/flow", "cpc/rgb", "sync/flow-rgb", "sim/flow-rgb"}
    assert terms["sync/flow-rgb"].item() == pytest.approx(sync.item(), rel=1e-6)
    assert terms["sim/flow-rgb"].item() == pytest.approx(sim.item(), rel=1e-6)
    assert total.item() == pytest.approx((cpc + 10.0 * (sync + 0.5 * sim)).item(), rel=1e-6)


@pytest.mark.parametrize(
    "switches, expected_pair_terms",
    [
        ({"use_sync": False}, {"sim/flow-rgb"}),
        ({"use_sim": False}, {"sync/flow-rgb"}),
        ({"use_sync": False, "use_sim": False}, set()),
    ],
)
def test_ablations_switch_terms_off(switches, expected_pair_terms):
    preds, gts, block_feats = views_inputs(["rgb", "flow"])

    total, terms = cocon_loss(preds, gts, block_feats, **switches)

    assert set(terms) == {"cpc/flow", "cpc/rgb"} | expected_pair_terms
    weighted = sum(value * (1 if name.startswith("cpc/") else 10.0) for name, value in terms.items())
    assert total.item() == pytest.approx(weighted.item(), rel=1e-6)


def test_lambda_zero_reports_but_does_not_add_the_pair_terms():
    preds, gts, block_feats = views_inputs(["rgb", "flow"])

    total, terms = cocon_loss(preds, gts, block_feats, lambda_=0.0)

    assert terms["sync/flow-rgb"].item() > 0 and terms["sim/flow-rgb"].item() > 0
    assert total.item() == pytest.approx((terms["cpc/flow"] + terms["cpc/rgb"]).item(), rel=1e-6)


def test_four_views_have_six_pairs_and_send_gradient_to_every_input():
    names = ["rgb", "flow", "pose", "seg"]
    preds, gts, block_feats = views_inputs(names)

    total, terms = cocon_loss(preds, gts, block_feats)
    total.backward()

    assert len([name for name in terms if name.startswith("sync/")]) == 6
    assert len([name for name in terms if name.startswith("sim/")]) == 6
    assert all(value.shape == () for value in terms.values())
    for inputs in (preds, gts, block_feats):
        for name in names:
            assert inputs[name].grad is not None and inputs[name].grad.abs().sum() > 0


def test_view_order_does_not_matter():
    preds, gts, block_feats = views_inputs(["rgb", "flow"])
    reversed_feats = dict(reversed(list(block_feats.items())))

    total, terms = cocon_loss(preds, gts, block_feats)
    total_reversed, terms_reversed = cocon_loss(preds, gts, reversed_feats)

    assert total.item() == total_reversed.item()
    assert terms.keys() == terms_reversed.keys()


def test_cocon_loss_refuses_mismatched_views():
    preds, gts, block_feats = views_inputs(["rgb", "flow"])
    del gts["flow"]

    with pytest.raises(ValueError):
        cocon_loss(preds, gts, block_feats)
