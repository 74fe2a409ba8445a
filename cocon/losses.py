"""Losses of DPC and CoCon (DESIGN.md section 5).

Shapes: predictions and targets `[B, P, D, S, S]` (P predicted steps, S x S
locations); block features `[B, N, D]` (z pooled over locations, see `pool_blocks`).
"""

from itertools import combinations

import torch
import torch.nn.functional as F

COSINE_EPS = 1e-5


def _dense_rows(x, name):
    if x.dim() != 5:
        raise ValueError(f"{name} must be [B, P, D, S, S], got shape {tuple(x.shape)}")
    batch, steps, depth, rows, cols = x.shape
    return x.permute(0, 1, 3, 4, 2).reshape(batch * steps * rows * cols, depth)


def _dense_scores(pred, gt, temperature):
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ")
    return _dense_rows(pred, "pred") @ _dense_rows(gt, "gt").T / temperature


def dense_nce(pred, gt, temperature=1.0):
    """InfoNCE over every (video, step, location): each prediction must pick its own
    target among all targets of the batch. No normalisation here: the model does it."""
    scores = _dense_scores(pred, gt, temperature)
    targets = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, targets)


def dense_nce_accuracy(pred, gt):
    """Top-1 accuracy of the `dense_nce` score matrix (a positive temperature does not
    change the ranking)."""
    scores = _dense_scores(pred, gt, 1.0)
    targets = torch.arange(scores.shape[0], device=scores.device)
    return (scores.argmax(dim=1) == targets).float().mean()


def _block_rows(h, name):
    if h.dim() != 3:
        raise ValueError(f"{name} must be [B, N, D], got shape {tuple(h.shape)}")
    rows = h.reshape(-1, h.shape[-1])
    return rows / (rows.norm(dim=1, keepdim=True) + COSINE_EPS)


def _check_same_blocks(h_a, h_b):
    if h_a.shape[:2] != h_b.shape[:2]:
        raise ValueError(
            f"views must have the same [B, N], got {tuple(h_a.shape)} and {tuple(h_b.shape)}"
        )


def sync_loss(h_a, h_b, p=1):
    """Mean |C_a - C_b|^p, where C_v holds the cosines between all B*N blocks of view
    v: the views should agree on which blocks are alike. D may differ between views."""
    _check_same_blocks(h_a, h_b)
    rows_a = _block_rows(h_a, "h_a")
    rows_b = _block_rows(h_b, "h_b")
    return (rows_a @ rows_a.T - rows_b @ rows_b.T).abs().pow(p).mean()


def sim_loss(h_a, h_b, margin=1.0):
    """Contrastive loss on cross-view cosines: the same block of the same video should
    match across views (distance d = 1 - cosine near 0), other blocks should be at least
    `margin` apart. Positives and negatives weigh half each."""
    _check_same_blocks(h_a, h_b)
    if h_a.shape[0] * h_a.shape[1] < 2:
        raise ValueError("sim_loss needs at least two blocks for negatives")
    distance = 1 - _block_rows(h_a, "h_a") @ _block_rows(h_b, "h_b").T
    positive = torch.eye(distance.shape[0], dtype=torch.bool, device=distance.device)
    return 0.5 * distance[positive].mean() + 0.5 * F.relu(margin - distance[~positive]).mean()


def pool_blocks(z):
    """Block features `[B, N, D]` from z `[B, N, D, S, S]`: mean over locations, after a
    2x2 max-pool when S = 4 (the authors' pooling for 128 px inputs)."""
    if z.dim() != 5:
        raise ValueError(f"z must be [B, N, D, S, S], got shape {tuple(z.shape)}")
    batch, num_blocks, depth, rows, cols = z.shape
    if (rows, cols) == (4, 4):
        z = F.max_pool2d(z.reshape(batch * num_blocks, depth, rows, cols), kernel_size=2)
        z = z.reshape(batch, num_blocks, depth, 2, 2)
    return z.mean(dim=(-2, -1))


def cocon_loss(
    preds,
    gts,
    block_feats,
    lambda_=10.0,
    alpha=1.0,
    temperature=0.07**2,
    sync_p=1,
    use_sync=True,
    use_sim=True,
):
    """Lcocon = sum over views of Lcpc + lambda_ * sum over view pairs of
    (sync + alpha * sim).

    `preds`, `gts` and `block_feats` are dicts keyed by view name. Returns the total
    and a dict of every term computed: "cpc/{view}", and for each pair of views a < b
    (sorted by name) "sync/{a}-{b}" and "sim/{a}-{b}" unless switched off.
    """
    views = sorted(preds)
    if sorted(gts) != views or sorted(block_feats) != views:
        raise ValueError(
            f"preds, gts and block_feats must share views, got {sorted(preds)}, "
            f"{sorted(gts)} and {sorted(block_feats)}"
        )
    if not views:
        raise ValueError("cocon_loss needs at least one view")

    terms = {}
    total = 0
    for view in views:
        terms[f"cpc/{view}"] = dense_nce(preds[view], gts[view], temperature)
        total = total + terms[f"cpc/{view}"]
    for view_a, view_b in combinations(views, 2):
        pair = f"{view_a}-{view_b}"
        h_a, h_b = block_feats[view_a], block_feats[view_b]
        if use_sync:
            terms[f"sync/{pair}"] = sync_loss(h_a, h_b, p=sync_p)
            total = total + lambda_ * terms[f"sync/{pair}"]
        if use_sim:
            terms[f"sim/{pair}"] = sim_loss(h_a, h_b)
            total = total + lambda_ * alpha * terms[f"sim/{pair}"]
    return total, terms
