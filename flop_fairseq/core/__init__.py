"""FLOP's core, plain PyTorch (no fairseq import anywhere below this folder).

- :mod:`.hard_concrete`: the gates ``z`` (L0 relaxation);
- :mod:`.gated_module`: the interface of a gated low-rank group;
- :mod:`.linear`: ``W = P diag(z) Q`` for a linear layer, gated and compact;
- :mod:`.band`: one adaptive band ``A diag(z) B^T``, gated and compact;
- :mod:`.svd`: SVD initialisation of bands from dense adaptive weights;
- :mod:`.adaptive`: adaptive input and adaptive softmax over bands;
- :mod:`.prunable_model`: how a model lists what it prunes;
- :mod:`.lagrangian`: the augmented Lagrangian driving expected sparsity to a target;
- :mod:`.counting`: the one parameter counter and sparsity statistics;
- :mod:`.target`: the range of a target sparsity;
- :mod:`.budget`: exact parameter budgets: a global choice of kept components for a target count;
- :mod:`.pinning`: gates pinned to exactly 0 or 1 (the exact-budget mask, dead gates);
- :mod:`.compaction`: gated model -> physically smaller model, and loading either;
- :mod:`.whitening`, :mod:`.data_aware`: factorizations ordered by what dropping a component costs on data;
- :mod:`.factor_scales`: a function-preserving rescaling of every group's two factors.
"""

from .adaptive import LowRankAdaptiveInput, LowRankAdaptiveSoftmax, band_slices, complete_cutoff
from .band import GatedLowRankBand, LowRankBand
from .budget import Allocation, GroupAllocation, allocate, apply_allocation, gate_median, target_params_for
from .compaction import compact_model, match_structure
from .counting import (
    ParamCounts,
    SparsityStats,
    band_rows,
    count_params,
    expected_sparsity,
    gated_modules,
    gates_bypassed,
    layer_rows,
    layer_totals,
    sparsity_stats,
    weak_kept,
)
from .gated_module import GatedModule
from .hard_concrete import HardConcrete
from .lagrangian import AugmentedLagrangian
from .linear import GatedLowRankLinear, LowRankLinear
from .pinning import PIN, pin_dead_gates, repin
from .prunable_model import BandSlot, PrunableModel, adaptive_band_slots, band_slots
from .target import check_target_sparsity

__all__ = [
    "Allocation", "GroupAllocation", "allocate", "apply_allocation", "gate_median", "repin", "pin_dead_gates", "PIN",
    "target_params_for",
    "AugmentedLagrangian", "BandSlot", "GatedLowRankBand", "GatedLowRankLinear", "GatedModule", "HardConcrete",
    "LowRankAdaptiveInput", "LowRankAdaptiveSoftmax", "LowRankBand", "LowRankLinear", "ParamCounts",
    "PrunableModel", "SparsityStats", "adaptive_band_slots", "band_rows", "band_slices", "band_slots", "compact_model",
    "check_target_sparsity", "complete_cutoff", "count_params", "expected_sparsity", "gated_modules", "gates_bypassed",
    "layer_rows", "layer_totals", "match_structure", "sparsity_stats", "weak_kept",
]
