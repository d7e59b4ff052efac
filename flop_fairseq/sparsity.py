"""Sparsity accounting over a whole model: every gated group, counted once."""

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
from torch import nn

from .gated_module import GatedModule


def gated_modules(model: nn.Module) -> List[Tuple[str, GatedModule]]:
    """Every :class:`GatedModule` in ``model`` with its first name.

    A module reachable under two names (a band shared by the adaptive input and
    the adaptive softmax) is listed once, so its parameters count once.
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, GatedModule)]


def prunable_params(model: nn.Module) -> int:
    """Dense parameter count of all prunable matrices (the denominator of sparsity)."""
    return sum(m.dense_params() for _, m in gated_modules(model))


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
    """Exact (eval-mask) counts over a model, and the expected ones."""

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

    def as_dict(self) -> Dict:
        return {
            "sparsity": self.sparsity,
            "expected_sparsity": self.expected_sparsity,
            "prunable_params": self.prunable_params,
            "remaining_prunable_params": self.remaining_prunable_params,
            "groups": [vars(g) for g in self.groups],
        }


@torch.no_grad()
def sparsity_stats(model: nn.Module) -> SparsityStats:
    groups = [
        GroupStats(name, m.rank, m.kept_rank(), m.dense_params(), m.remaining_prunable_params())
        for name, m in gated_modules(model)
    ]
    expected = sum(float(m.expected_prunable_params()) for _, m in gated_modules(model))
    return SparsityStats(
        prunable_params=sum(g.dense_params for g in groups),
        remaining_prunable_params=sum(g.remaining_params for g in groups),
        expected_remaining_params=expected,
        groups=groups,
    )


def unique_param_count(model: nn.Module) -> int:
    """Parameters of ``model``, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters())


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
