"""Quantile couplings of a distribution with itself: the sparse Markov kernels of the synthetic
corpus that leave the unigram distribution stationary. Plain numpy."""

from typing import Tuple

import numpy as np


def intervals(p: np.ndarray, order: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Lay the masses ``p`` out on [0, 1) in ``order``; each item's ``[lo, hi)``."""
    hi_sorted = np.cumsum(p[order])
    hi_sorted /= hi_sorted[-1]
    lo_sorted = np.concatenate([[0.0], hi_sorted[:-1]])
    lo, hi = np.empty_like(p), np.empty_like(p)
    lo[order], hi[order] = lo_sorted, hi_sorted
    return lo, hi


def second_order(p, lo_a, hi_a, rng, tries: int = 16):
    """The second order of a quantile coupling: of a few random candidates, the
    one with the least self-transition mass (frequent words would otherwise
    repeat themselves: "to to to"). Returns ``(order, lo, hi)``."""
    best = None
    for _ in range(tries):
        order = rng.permutation(p.size)
        lo, hi = intervals(p, order)
        loops = np.clip(np.minimum(hi, hi_a) - np.maximum(lo, lo_a), 0, None).sum()
        if best is None or loops < best[0]:
            best = (loops, order, lo, hi)
    return best[1:]
