"""FLOP's generic factorization of a linear layer: ``W = P diag(z) Q``."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .gated_module import Count, GatedModule
from .hard_concrete import HardConcrete


def low_rank_linear(in_features: int, out_features: int, rank: int, bias: bool) -> nn.Sequential:
    """The compact form of a factorized layer: ``Linear(in, rank)`` then ``Linear(rank, out)``."""
    return nn.Sequential(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))


class FactorizedLinear(GatedModule):
    """``y = x Q^T diag(z) P^T + b``: a linear layer as a product of rank ``r`` with a gate per component.

    Shapes: ``P`` (``left``) is ``(out_features, r)``, ``Q`` (``right``) is
    ``(r, in_features)``, ``z`` is ``(r,)``, ``b`` is ``(out_features,)``; the input
    is ``(..., in_features)`` and the output ``(..., out_features)``.

    Its compact form is whichever of the dense ``out x in`` matrix or the two
    factors of the kept rank ``k`` is smaller, so it costs
    ``min((in + out) * k, in * out)`` parameters plus the bias. The expected count
    used by the Lagrangian takes that value, but its gradient is the factorized
    one, ``(in + out) * dE[L0]``, even while the dense form is smaller: otherwise a
    layer at full rank (where the dense form is cheaper) would feel no pressure.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: Optional[int] = None,
        bias: bool = True,
        init_keep_prob: Optional[float] = None,
        temperature: float = 2.0 / 3.0,
        gate_lr_scale: float = 1.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        rank = min(in_features, out_features) if rank is None else int(rank)
        self.left = nn.Parameter(torch.empty(out_features, rank))
        self.right = nn.Parameter(torch.empty(rank, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.gate = HardConcrete(rank, init_keep_prob, temperature, lr_scale=gate_lr_scale)
        # random init whose product has the variance of a default nn.Linear
        nn.init.normal_(self.left, std=(1.0 / (3.0 * max(rank, 1))) ** 0.25 / in_features ** 0.25)
        nn.init.normal_(self.right, std=(1.0 / (3.0 * max(rank, 1))) ** 0.25 / in_features ** 0.25)

    @classmethod
    def from_dense(cls, linear: nn.Linear, rank: Optional[int] = None, **kwargs) -> "FactorizedLinear":
        """SVD initialisation ``W = U S V^T``, ``P = U S^1/2``, ``Q = S^1/2 V^T``.

        Components are ordered by singular value; at full rank (the default,
        ``min(in, out)``) ``P Q`` reconstructs ``W`` exactly (to float precision).
        """
        weight = linear.weight.detach()
        module = cls(linear.in_features, linear.out_features, rank, linear.bias is not None, **kwargs)
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
        r = module.rank
        root = s[:r].sqrt()
        with torch.no_grad():
            module.left.copy_(u[:, :r] * root)
            module.right.copy_(root[:, None] * vh[:r])
            if linear.bias is not None:
                module.bias.copy_(linear.bias.detach())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.gate()
        return F.linear(F.linear(x, self.right * z[:, None]), self.left, self.bias)

    def dense_params(self) -> int:
        return self.in_features * self.out_features

    def params_per_component(self) -> int:
        return self.in_features + self.out_features

    def compact_cost(self, kept: Count) -> Count:
        factorized = kept * self.params_per_component()
        dense = self.dense_params()
        if torch.is_tensor(factorized):
            return factorized + (factorized.detach().clamp(max=dense) - factorized.detach())
        return min(factorized, dense)

    def _bias_params(self) -> int:
        return 0 if self.bias is None else self.bias.numel()

    def expected_params(self) -> torch.Tensor:
        """Expected parameter count of the compact form, bias included (differentiable)."""
        return self.expected_prunable_params() + self._bias_params()

    def exact_params(self) -> int:
        """Parameter count of :meth:`compact`'s result, bias included."""
        return self.remaining_prunable_params() + self._bias_params()

    @torch.no_grad()
    def compact(self) -> nn.Module:
        """Plain modules computing the eval-mode function with pruned components removed.

        Returns an ``nn.Linear`` when the dense matrix is smaller, else
        ``Sequential(Linear(in, k, bias=False), Linear(k, out))``.
        """
        z = self.gate.deterministic()
        keep = torch.nonzero(z, as_tuple=True)[0]
        right = self.right[keep] * z[keep, None]
        left = self.left[:, keep]
        has_bias = self.bias is not None
        if len(keep) * self.params_per_component() >= self.dense_params():
            out = nn.Linear(self.in_features, self.out_features, bias=has_bias)
            out.weight.copy_(left @ right)
        else:
            out = low_rank_linear(self.in_features, self.out_features, len(keep), has_bias)
            out[0].weight.copy_(right)
            out[1].weight.copy_(left)
        if has_bias:
            (out if isinstance(out, nn.Linear) else out[1]).bias.copy_(self.bias)
        return out.to(self.left.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
