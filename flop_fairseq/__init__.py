"""FLOP: Factorized Low-rank Pruning (Wang, Wohlwend & Lei, EMNLP 2020).

The core (gates, factorized layers and bands, sparsity accounting, the Lagrangian,
compaction) is plain PyTorch and imports no fairseq. The fairseq glue sits on top:
``flop_fairseq.models`` and ``flop_fairseq.criterions`` (imported by the ``--user-dir``)
and the command-line tools in ``flop_fairseq.cli``.
"""

from .factorized_band import FactorizedBand, LowRankBand
from .factorized_linear import FactorizedLinear, low_rank_linear
from .gated_module import GatedModule
from .compaction import compact_model, match_structure
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
    "compact_model",
    "match_structure",
    "expected_sparsity",
    "gated_modules",
    "gates_bypassed",
    "low_rank_linear",
    "prunable_params",
    "sparsity_stats",
    "unique_param_count",
]
