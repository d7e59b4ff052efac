"""FLOP's generic factorization of a linear layer, ``W = P diag(z) Q``: the gated form
trained with the Lagrangian and the compact form it becomes."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .gated_module import Count, GatedModule, cheaper_form_cost
from .hard_concrete import HardConcrete
from .layout import set_decoding_layout


class LowRankLinear(nn.Sequential):
    """The compact form of a pruned :class:`GatedLowRankLinear`: ``Linear(in, k, bias=False)``
    then ``Linear(k, out)``, ``k`` the kept rank. A ``Sequential`` so that its state-dict
    keys (``0.weight``, ``1.weight``, ``1.bias``) are those of every earlier compact checkpoint."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))

    @property
    def in_features(self) -> int:
        return self[0].in_features

    @property
    def out_features(self) -> int:
        return self[1].out_features

    @property
    def rank(self) -> int:
        return self[0].out_features

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self[1].bias

    def train(self, mode: bool = True):
        super().train(mode)
        set_decoding_layout([self[1].weight], decoding=not mode)  # (out, k): short rows
        return self


class GatedLowRankLinear(GatedModule):
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
    def from_dense(cls, linear: nn.Linear, rank: Optional[int] = None, **kwargs) -> "GatedLowRankLinear":
        """SVD initialisation ``W = U S V^T``, ``P = U S^1/2``, ``Q = S^1/2 V^T``.

        Components are ordered by singular value; at full rank (the default,
        ``min(in, out)``) ``P Q`` reconstructs ``W`` exactly (to float precision).
        """
        module = cls(linear.in_features, linear.out_features, rank, linear.bias is not None, **kwargs)
        module.init_from_dense(linear.weight, linear.bias)
        return module

    @torch.no_grad()
    def init_from_dense(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> float:
        """Sets ``P``, ``Q`` (and ``b``) from the SVD of ``weight`` (``(out, in)``), in place.

        Returns the relative Frobenius error of the truncation to this module's rank
        (0 at full rank).
        """
        u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
        r = self.rank
        root = s[:r].sqrt()
        self.left.copy_((u[:, :r] * root).to(self.left.dtype))
        self.right.copy_((root[:, None] * vh[:r]).to(self.right.dtype))
        if bias is not None and self.bias is not None:
            self.bias.copy_(bias.detach())
        total = s.pow(2).sum()
        return float((s[r:].pow(2).sum() / total).sqrt()) if total > 0 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_eval_view():
            return self.eval_view()(x)
        z = self.gate()
        active = self.active_components(z)
        if active is None:
            return F.linear(F.linear(x, self.right * z[:, None]), self.left, self.bias)
        # training gets cheaper as it prunes: only the components whose sampled gate is non-zero
        right = self.right.index_select(0, active) * z.index_select(0, active)[:, None]
        return F.linear(F.linear(x, right), self.left.index_select(1, active), self.bias)

    def dense_params(self) -> int:
        return self.in_features * self.out_features

    def params_per_component(self) -> int:
        return self.in_features + self.out_features

    def compact_cost(self, kept: Count) -> Count:
        return cheaper_form_cost(kept * self.params_per_component(), self.dense_params())

    def unpruned_params(self) -> int:
        return 0 if self.bias is None else self.bias.numel()

    @torch.no_grad()
    def compact(self) -> nn.Module:
        """Plain modules computing the eval-mode function with pruned components removed:
        an ``nn.Linear`` when the dense matrix is smaller, else a :class:`LowRankLinear`."""
        z = self.gate.deterministic()
        keep = torch.nonzero(z, as_tuple=True)[0]
        right = self.right[keep] * z[keep, None]
        left = self.left[:, keep]
        has_bias = self.bias is not None
        if len(keep) * self.params_per_component() >= self.dense_params():
            out = nn.Linear(self.in_features, self.out_features, bias=has_bias)
            out.weight.copy_(left @ right)
        else:
            out = LowRankLinear(self.in_features, self.out_features, len(keep), has_bias)
            out[0].weight.copy_(right)
            out[1].weight.copy_(left)
        if has_bias:
            out.bias.copy_(self.bias)
        return out.to(self.left.device, self.left.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
