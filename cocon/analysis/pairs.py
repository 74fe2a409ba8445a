"""All-pairs computations on video features in bounded memory.

UCF101's split 1 has 3,783 test videos: 7.2 million pairs. Their feature vectors side by
side would take about 29 GB, so nothing here holds more than a chunk of rows of one
similarity matrix at a time: ``memory_mb`` (the config key ``analysis.memory_mb``) bounds
each chunk, whatever the number of videos.

Two kinds of cosine similarity (``analysis.center``):

- ``raw``: the cosine of the features as the encoder gives them, the paper's quantity
  (Fig. 10, appendix C.1; the class means of Tables 4/7);
- ``centred``: the features first centred by the mean of the videos compared, then
  L2-normalised, as retrieval compares them (CoCLR's protocol). An offset common to all
  features (a ReLU's or a tanh's output) pushes every raw cosine towards 1, so flow features
  can sit at 0.999 for every pair; centring spreads them out again.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

VARIANTS = ("raw", "centred")
DEFAULT_MEMORY_MB = 256
# bytes of working memory per similarity cell of a chunk: the float64 cosines, the masks,
# the selected values and their bin indices, with room for numpy's temporaries
BYTES_PER_CELL = 48
# each display bin is counted in this many fine bins, from which the AUC is computed
FINE_BINS_PER_BIN = 4096
NORM_EPS = 1e-8


def variants_of(center) -> tuple[str, ...]:
    """The variants that ``analysis.center`` asks for: false -> raw, true -> centred, both."""
    if center == "both":
        return VARIANTS
    if isinstance(center, bool):
        return ("centred",) if center else ("raw",)
    raise ValueError(f"analysis.center: {center!r}; expected false (raw cosine, the paper's), true (centred) or both")


def variant_label(variant: str) -> str:
    """How tables and captions name a variant."""
    return {"raw": "raw cosine (the paper's)", "centred": "mean-centred cosine"}[variant]


def unit_rows(features: np.ndarray, variant: str) -> np.ndarray:
    """``features`` ``[N, D]`` as float64 unit rows ``[N, D]``; ``centred`` subtracts their mean first."""
    assert features.ndim == 2, features.shape
    if variant not in VARIANTS:
        raise ValueError(f"unknown cosine variant {variant!r}; expected one of {VARIANTS}")
    rows = features.astype(np.float64)
    if variant == "centred":
        rows = rows - rows.mean(axis=0, keepdims=True)
    return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + NORM_EPS)


def chunk_rows(columns: int, memory_mb: float, bytes_per_cell: int = BYTES_PER_CELL) -> int:
    """Rows of a ``[rows, columns]`` similarity chunk that fit in ``memory_mb`` (at least one)."""
    if memory_mb <= 0:
        raise ValueError(f"analysis.memory_mb: {memory_mb}; it must be positive")
    return max(1, int(memory_mb * 2 ** 20 // (bytes_per_cell * max(columns, 1))))


def upper_triangle_chunks(unit: np.ndarray, labels: np.ndarray, memory_mb: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The cosine of every unordered pair (i < j) of the unit rows ``unit`` ``[N, D]``, and
    whether the pair shares its label (``labels`` ``[N]``), as flat arrays, one chunk of rows
    of the upper triangle at a time."""
    count = len(unit)
    assert labels.shape == (count,), (labels.shape, count)
    rows = chunk_rows(count, memory_mb)
    for start in range(0, count - 1, rows):
        stop = min(start + rows, count - 1)
        block = unit[start:stop] @ unit[start + 1:].T  # [r, N - start - 1]: row i against j = start + 1 + c
        upper = np.arange(block.shape[1])[None, :] >= np.arange(stop - start)[:, None]  # j > i
        same = labels[start:stop, None] == labels[None, start + 1:]
        yield block[upper], same[upper]


@dataclass
class PairHistogram:
    """Same-class against other-class cosines of all pairs of a set of videos."""

    edges: np.ndarray          # [bins + 1], from the smallest to the largest cosine
    same_counts: np.ndarray    # [bins]
    other_counts: np.ndarray   # [bins]
    same_mean: float | None
    other_mean: float | None
    auc: float | None          # ROC AUC of telling same-class from other-class pairs by the cosine
    auc_error_bound: float | None  # |auc - exact AUC| is at most this (pairs sharing a fine bin)

    @property
    def same_pairs(self) -> int:
        return int(self.same_counts.sum())

    @property
    def other_pairs(self) -> int:
        return int(self.other_counts.sum())


def pair_histogram(features: np.ndarray, labels: np.ndarray, variant: str = "raw", bins: int = 50,
                   memory_mb: float = DEFAULT_MEMORY_MB) -> PairHistogram:
    """The histogram of the cosines of all pairs of ``features`` ``[N, D]`` (labels ``[N]``),
    same class against other class, over ``bins`` equal bins from the smallest cosine to the
    largest, in two passes over the chunks of upper_triangle_chunks.

    The AUC is the Mann-Whitney statistic over ``bins * FINE_BINS_PER_BIN`` fine bins, a
    pair of the two kinds in the same fine bin counting one half, as a tie does. It differs
    from the exact AUC only through such pairs, which ``auc_error_bound`` bounds."""
    if len(features) < 2:
        raise ValueError(f"{len(features)} videos: at least 2 are needed for a pair")
    unit = unit_rows(features, variant)
    low, high = np.inf, -np.inf
    sums, counts = np.zeros(2), np.zeros(2, dtype=np.int64)  # [other, same]
    for cosine, same in upper_triangle_chunks(unit, labels, memory_mb):
        low, high = min(low, float(cosine.min())), max(high, float(cosine.max()))
        for kind in (0, 1):
            chosen = cosine[same == bool(kind)]
            sums[kind] += chosen.sum()
            counts[kind] += len(chosen)
    if high == low:  # one value: numpy's convention for a histogram of a constant
        low, high = low - 0.5, high + 0.5
    fine = bins * FINE_BINS_PER_BIN
    scale = fine / (high - low)
    fine_counts = np.zeros((2, fine), dtype=np.int64)  # [other, same]
    for cosine, same in upper_triangle_chunks(unit, labels, memory_mb):
        index = np.clip(((cosine - low) * scale).astype(np.int64), 0, fine - 1)
        fine_counts[1] += np.bincount(index[same], minlength=fine)
        fine_counts[0] += np.bincount(index[~same], minlength=fine)
    other, same = fine_counts
    auc = bound = None
    if counts[0] and counts[1]:
        below = np.cumsum(other) - other  # other-class pairs in lower fine bins
        pairs = float(counts[0]) * float(counts[1])
        auc = float((same * (below + 0.5 * other)).sum() / pairs)
        bound = float(0.5 * (same * other).sum() / pairs)
    return PairHistogram(edges=np.linspace(low, high, bins + 1),
                         same_counts=same.reshape(bins, FINE_BINS_PER_BIN).sum(axis=1),
                         other_counts=other.reshape(bins, FINE_BINS_PER_BIN).sum(axis=1),
                         same_mean=float(sums[1] / counts[1]) if counts[1] else None,
                         other_mean=float(sums[0] / counts[0]) if counts[0] else None, auc=auc,
                         auc_error_bound=bound)
