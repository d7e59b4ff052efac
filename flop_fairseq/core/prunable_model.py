"""How a model tells FLOP's tools what it prunes, so that no tool knows module paths.

A model (fairseq's or any ``nn.Module``) inherits :class:`PrunableModel` and lists its
adaptive bands and its factorized layer matrices. Report, compaction, the criterion's
logging, the parameter counter and the benchmarks read these lists only.
"""

from dataclasses import dataclass
from typing import List, Tuple

from torch import nn

from .band import LowRankBand


@dataclass
class BandSlot:
    """One band of the adaptive input/softmax, listed once even when input and softmax share it.

    ``index``: the band's position in its band list; ``side``: ``tied`` (embeds inputs and
    scores outputs), ``input`` or ``output``; ``vocab``: its word range ``[lo, hi)``;
    ``label``: a short name for logs (``b0``, ``out2``); ``module``: the band, gated
    (:class:`GatedLowRankBand`) or compact (:class:`LowRankBand`).
    """

    index: int
    side: str
    vocab: Tuple[int, int]
    label: str
    module: LowRankBand


def band_slots(bands, cutoff, seen: set, label_prefix: str) -> List[BandSlot]:
    """The :class:`BandSlot` of every band in ``bands`` (a band list with its ``cutoff``)
    not already in ``seen`` (a set of ids, updated)."""
    slots, lo = [], 0
    for i, (band, hi) in enumerate(zip(bands, cutoff)):
        if id(band) not in seen:
            seen.add(id(band))
            side = "tied" if band.in_proj is not None and band.has_output else (
                "input" if band.in_proj is not None else "output")
            slots.append(BandSlot(i, side, (lo, hi), f"{label_prefix}{i}", band))
        lo = hi
    return slots


def adaptive_band_slots(adaptive_input, adaptive_softmax) -> List[BandSlot]:
    """The slots of an adaptive input and softmax (each with ``bands`` and ``cutoff``): input
    bands ``b0, b1, ...`` first, then the softmax's own bands ``out0, ...``, a tied band once."""
    seen: set = set()
    return (band_slots(adaptive_input.bands, adaptive_input.cutoff, seen, "b")
            + band_slots(adaptive_softmax.bands, adaptive_softmax.cutoff, seen, "out"))


class PrunableModel:
    """Mixin of every FLOP model: what it prunes, listed in a fixed order."""

    def flop_bands(self) -> List[BandSlot]:
        """Every adaptive band once: input (or tied) bands first, then untied softmax bands."""
        raise NotImplementedError

    def flop_layer_matrices(self) -> List[Tuple[str, nn.Module]]:
        """``(name, module)`` of every factorized layer matrix: a :class:`GatedLowRankLinear`,
        or its compact form (``nn.Linear`` or :class:`LowRankLinear`). Empty when only the
        bands are pruned."""
        return []
