"""FLOP: Factorized Low-rank Pruning (Wang, Wohlwend & Lei, EMNLP 2020).

The core (gates, factorized layers, sparsity accounting, the Lagrangian) is plain
PyTorch; the fairseq models, criterion and command-line tools live in
``flop_fairseq.fairseq`` and are imported only by fairseq's ``--user-dir``.
"""

from .factorized_band import FactorizedBand, LowRankBand
from .factorized_linear import FactorizedLinear, low_rank_linear
from .gated_module import GatedModule
from .hard_concrete import HardConcrete
from .lagrangian import AugmentedLagrangian
from .sparsity import (
    SparsityStats,
    expected_sparsity,
    gated_modules,
    gates_bypassed,
    prunable_params,
    sparsity_stats,
    unique_param_count,
)

__version__ = "0.1.0"

__all__ = [
    "AugmentedLagrangian",
    "FactorizedBand",
    "FactorizedLinear",
    "GatedModule",
    "HardConcrete",
    "LowRankBand",
    "SparsityStats",
    "expected_sparsity",
    "gated_modules",
    "gates_bypassed",
    "low_rank_linear",
    "prunable_params",
    "sparsity_stats",
    "unique_param_count",
]
