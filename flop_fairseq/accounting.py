"""Per-band and per-layer parameter accounting of a FLOP model, gated or compacted."""

import copy
from typing import Dict, List

import torch
from torch import nn

from .compaction import compact_model
from .factorized_band import LowRankBand
from .factorized_linear import FactorizedLinear
from .gated_module import GatedModule


def band_rows(model: nn.Module, cutoffs: Dict[str, List[int]]) -> List[Dict]:
    """One row per band (a band shared by input and softmax once).

    ``cutoffs`` maps a band list's name (``decoder.embed_tokens.bands``) to its
    cutoffs. Each row: ``band`` (index), ``side`` (``tied``, ``input`` or
    ``output``), ``vocab`` (``[lo, hi)``), ``rank`` (before pruning), ``kept``,
    ``params_before`` (the dense model's count) and ``params_after``.
    """
    rows, seen = [], set()
    for list_name, cut in cutoffs.items():
        bands = model.get_submodule(list_name)
        lo = 0
        for i, (band, hi) in enumerate(zip(bands, cut)):
            if id(band) not in seen:
                seen.add(id(band))
                kept = band.kept_rank() if isinstance(band, GatedModule) else band.rank
                side = "tied" if band.in_proj is not None and band.has_output else (
                    "input" if band.in_proj is not None else "output")
                rows.append({
                    "band": i, "side": side, "vocab": [lo, hi], "rank": int(band.full_rank), "kept": kept,
                    "params_before": band.dense_params(), "params_after": kept * band.params_per_component(),
                })
            lo = hi
    return rows


def layer_rows(model: nn.Module, names: List[str]) -> List[Dict]:
    """One row per prunable layer matrix named in ``names``: a :class:`FactorizedLinear`
    or its compact form (``nn.Linear``, or a low-rank ``Sequential``)."""
    rows = []
    for name in names:
        m = model.get_submodule(name)
        if isinstance(m, FactorizedLinear):
            rank, kept, dense = m.rank, m.kept_rank(), m.dense_params()
            after = m.remaining_prunable_params()
        elif isinstance(m, nn.Linear):
            dense = after = m.in_features * m.out_features
            rank = kept = min(m.in_features, m.out_features)
        else:
            dense = m[0].in_features * m[1].out_features
            rank, kept = min(m[0].in_features, m[1].out_features), m[0].out_features
            after = kept * (m[0].in_features + m[1].out_features)
        rows.append({"layer": name, "rank": rank, "kept": kept, "params_before": dense, "params_after": after})
    return rows


@torch.no_grad()
def compacted_param_count(model: nn.Module) -> int:
    """Parameters the model would have once compacted now (shared tensors once)."""
    if not any(isinstance(m, GatedModule) for m in model.modules()):
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in compact_model(copy.deepcopy(model)).parameters())
