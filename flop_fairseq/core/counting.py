"""The one parameter counter, and sparsity over a whole model: every gated group once.

Every figure the tools print (``flop-report``, ``flop-compact``, the demo, the benchmarks)
comes from :func:`count_params` or from the per-group rows below, under these names (the
criterion's per-update log reads the same per-module counts through :func:`sparsity_stats`,
which needs no :class:`PrunableModel` and copies nothing):

``total_params``
    the model as it would be compacted now: gated groups at their kept rank, gates and
    Lagrange multipliers dropped, shared tensors once (for a dense or compact model,
    every parameter);
``stored_params``
    the parameters the model holds as it is (a gated model's full-rank factors and gates);
``nonzero_params``
    the non-zero entries among ``stored_params`` (what unstructured pruning keeps);
``prunable_params``
    the dense model's count of the matrices FLOP prunes (the denominator of sparsity);
``remaining_prunable_params``
    their exact count once compacted (the eval-mode mask);
``expected_remaining_prunable_params``
    the expectation the Lagrangian drives (gated models only);
``band_params`` / ``remaining_band_params``
    the same two counts restricted to the adaptive bands;
``nonzero_prunable_params``
    the non-zero entries of the prunable tensors as stored;
``layer_matrix_params`` / ``remaining_layer_matrix_params`` / ``nonzero_layer_matrix_params``
    the attention/FFN matrices passed as ``layer_matrices`` (any model's, pruned or not):
    dense count, compact count, non-zero weights as stored (0 when none are passed).
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .gated_module import GatedModule
from .linear import GatedLowRankLinear, LowRankLinear


def gated_modules(model: nn.Module) -> List[Tuple[str, GatedModule]]:
    """Every :class:`GatedModule` in ``model`` with its first name.

    A module reachable under two names (a band shared by the adaptive input and
    the adaptive softmax) is listed once, so its parameters count once.
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, GatedModule)]


def expected_sparsity(model: nn.Module) -> torch.Tensor:
    """``s = 1 - E[remaining] / prunable``, a differentiable scalar."""
    modules = [m for _, m in gated_modules(model)]
    if not modules:
        raise ValueError("the model has no gated (FLOP) modules to prune")
    dense = sum(m.dense_params() for m in modules)
    remaining = torch.stack([m.expected_prunable_params() for m in modules]).sum()
    return 1.0 - remaining / dense


@dataclass
class GroupStats:
    name: str
    rank: int
    kept: int
    dense_params: int
    remaining_params: int


@dataclass
class SparsityStats:
    """Exact (eval-mask) counts over the gated groups of a model, and the expected ones."""

    prunable_params: int
    remaining_prunable_params: int
    expected_remaining_params: float
    groups: List[GroupStats] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Hard sparsity: fraction of the dense prunable parameters removed."""
        return 1.0 - self.remaining_prunable_params / max(self.prunable_params, 1)

    @property
    def expected_sparsity(self) -> float:
        return 1.0 - self.expected_remaining_params / max(self.prunable_params, 1)


@torch.no_grad()
def sparsity_stats(model: nn.Module) -> SparsityStats:
    """Cheap enough for every update: no copy of the model."""
    modules = gated_modules(model)
    groups = [GroupStats(name, m.rank, m.kept_rank(), m.dense_params(), m.remaining_prunable_params())
              for name, m in modules]
    return SparsityStats(
        prunable_params=sum(g.dense_params for g in groups),
        remaining_prunable_params=sum(g.remaining_params for g in groups),
        expected_remaining_params=sum(float(m.expected_prunable_params()) for _, m in modules),
        groups=groups,
    )


# An eval value below this leaves a kept component with under a tenth of its weight: it costs its
# whole parameter count and does almost nothing
WEAK_VALUE = 0.1


@torch.no_grad()
def weak_kept(model: nn.Module, below: float = WEAK_VALUE) -> Dict[str, int]:
    """The kept components of the gated groups whose eval-mode gate value is below ``below``:
    ``components`` (how many) and ``params`` (what they cost in the compact model: each group's
    ``compact_cost(kept) - compact_cost(kept - weak)``)."""
    components = params = 0
    for _, m in gated_modules(model):
        z = m.gate.deterministic()
        weak = int(((z > 0) & (z < below)).sum())
        kept = int((z > 0).sum())
        components += weak
        params += int(m.compact_cost(kept)) - int(m.compact_cost(kept - weak))
    return {"components": components, "params": params}


class gates_bypassed:
    """Context manager: every gate of ``model`` is exactly 1 (the dense function) inside."""

    def __init__(self, model: nn.Module):
        self.gates = [m.gate for _, m in gated_modules(model)]

    def __enter__(self):
        self.saved = [g.bypass for g in self.gates]
        for g in self.gates:
            g.bypass = True
        return self

    def __exit__(self, *exc):
        for g, b in zip(self.gates, self.saved):
            g.bypass = b
        return False


def band_rows(model) -> List[Dict]:
    """One row per band of a :class:`PrunableModel` (a shared band once): ``band`` (index),
    ``side``, ``vocab`` (``[lo, hi)``), ``label`` (``b0``, ``out1``: the criterion's log names),
    ``rank`` (before pruning), ``kept``, ``params_before`` (the dense model's count) and
    ``params_after`` (once compacted)."""
    rows = []
    for slot in model.flop_bands():
        band = slot.module
        if isinstance(band, GatedModule):  # its own compact cost (a band may compact to a dense form)
            kept, after = band.kept_rank(), band.remaining_prunable_params()
        else:
            kept, after = band.rank, band.rank * band.params_per_component()
        rows.append({"band": slot.index, "side": slot.side, "vocab": list(slot.vocab), "label": slot.label,
                     "rank": int(band.full_rank), "kept": int(kept), "params_before": band.dense_params(),
                     "params_after": int(after)})
    return rows


def matrix_row(m: nn.Module) -> Dict:
    """``rank``, ``kept``, ``params_before`` (dense ``in x out``), ``params_after`` (its compact
    cost) and ``nonzero`` (non-zero weights as stored) of a layer matrix: gated, low-rank, or a
    plain ``nn.Linear`` (a dense model's, or one compacted at or above the break-even rank)."""
    dense = m.in_features * m.out_features
    if isinstance(m, GatedLowRankLinear):
        rank, kept, after = m.rank, m.kept_rank(), m.remaining_prunable_params()
        nonzero = after
    elif isinstance(m, LowRankLinear):
        rank, kept = min(m.in_features, m.out_features), m.rank
        after = nonzero = kept * (m.in_features + m.out_features)
    else:
        rank = kept = min(m.in_features, m.out_features)
        after, nonzero = dense, int(torch.count_nonzero(m.weight))
    return {"rank": rank, "kept": kept, "params_before": dense, "params_after": after, "nonzero": nonzero}


def layer_rows(model) -> List[Dict]:
    """One row per factorized layer matrix of a :class:`PrunableModel`, gated or compact."""
    return [{"layer": name, **matrix_row(m)} for name, m in model.flop_layer_matrices()]


def layer_totals(rows: List[Dict]) -> Dict:
    """The :func:`layer_rows` of a model summed: ``matrices``, ``rank``, ``kept``, ``params_before``,
    ``params_after``."""
    return {"matrices": len(rows), **{k: sum(r[k] for r in rows)
                                      for k in ("rank", "kept", "params_before", "params_after")}}


@dataclass
class ParamCounts:
    """The named quantities of the module docstring."""

    total_params: int
    stored_params: int
    nonzero_params: int
    prunable_params: int
    remaining_prunable_params: int
    nonzero_prunable_params: int
    band_params: int
    remaining_band_params: int
    expected_remaining_prunable_params: Optional[float] = None
    layer_matrix_params: int = 0
    remaining_layer_matrix_params: int = 0
    nonzero_layer_matrix_params: int = 0

    @property
    def sparsity(self) -> float:
        """Hard sparsity of the prunable parameters."""
        return 1.0 - self.remaining_prunable_params / max(self.prunable_params, 1)


def _unique_params(model: nn.Module) -> List[torch.Tensor]:
    return list(model.parameters())  # nn.Module.parameters() yields a shared tensor once


@torch.no_grad()
def count_params(model: nn.Module, dense_prunable: Optional[Sequence[torch.Tensor]] = None,
                 layer_matrices: Sequence[nn.Module] = ()) -> ParamCounts:
    """Every named count of ``model``.

    A FLOP model (a :class:`PrunableModel`) says what is prunable; for a dense model pass
    the tensors that FLOP would prune (``dense_prunable``, e.g. the band matrices), which
    then count as ``prunable``, ``band`` and (all of them) ``remaining``. ``layer_matrices``
    (any model's attention/FFN matrices, whether FLOP prunes them or not) give the
    ``*layer_matrix_params`` counts of :func:`matrix_row`: what a budget of the whole model
    counts, the same way for every model.
    """
    layers = [matrix_row(m) for m in layer_matrices]
    layer_counts = {"layer_matrix_params": sum(r["params_before"] for r in layers),
                    "remaining_layer_matrix_params": sum(r["params_after"] for r in layers),
                    "nonzero_layer_matrix_params": sum(r["nonzero"] for r in layers)}
    params = _unique_params(model)
    stored = sum(p.numel() for p in params)
    nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    if dense_prunable is not None:
        seen, tensors = set(), []
        for t in dense_prunable:
            if id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)
        prunable = sum(t.numel() for t in tensors)
        return ParamCounts(stored, stored, nonzero, prunable, prunable,
                           sum(int(torch.count_nonzero(t)) for t in tensors), prunable, prunable, **layer_counts)
    bands, layers = band_rows(model), layer_rows(model)
    gated = [m for _, m in gated_modules(model)]
    # once compacted, a gated group keeps its remaining prunable count plus its bias; its
    # full-rank factors and gate go
    total = stored - sum(p.numel() for m in gated for p in m.parameters()) + sum(
        m.remaining_prunable_params() + m.unpruned_params() for m in gated)
    prunable_tensors = [p for slot in model.flop_bands() for p in slot.module.parameters()
                        if p.dim() == 2] + [p for _, m in model.flop_layer_matrices() for p in m.parameters()
                                            if p.dim() == 2]
    return ParamCounts(
        total_params=total,
        stored_params=stored,
        nonzero_params=nonzero,
        prunable_params=sum(r["params_before"] for r in bands + layers),
        remaining_prunable_params=sum(r["params_after"] for r in bands + layers),
        nonzero_prunable_params=sum(int(torch.count_nonzero(p)) for p in {id(p): p for p in prunable_tensors}.values()),
        band_params=sum(r["params_before"] for r in bands),
        remaining_band_params=sum(r["params_after"] for r in bands),
        expected_remaining_prunable_params=(
            sum(float(m.expected_prunable_params()) for m in gated) if gated else None),
        **layer_counts,
    )
