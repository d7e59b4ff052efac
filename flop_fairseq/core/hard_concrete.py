"""Hard-concrete gates (Louizos, Welling & Kingma 2018, "Learning Sparse Neural
Networks through L0 Regularization"), the ``z`` of FLOP's ``P diag(z) Q``."""

import math
from typing import Optional

import torch
from torch import nn


class HardConcrete(nn.Module):
    """``n`` stochastic gates ``z`` in [0, 1] with learnable ``log_alpha`` (shape ``(n,)``).

    Training mode samples, for ``u ~ U(0, 1)``::

        z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) * (r - l) + l, 0, 1)

    with temperature ``beta`` and stretch limits ``l < 0 < 1 < r``, so that ``z`` is
    exactly 0 or 1 with non-zero probability and the expected L0 norm
    ``E[L0] = sum sigmoid(log_alpha - beta * log(-l / r))`` is differentiable.

    Eval mode is deterministic: exactly ``round(n - E[L0])`` gates, those with the
    smallest ``log_alpha``, are 0 (ties go to the higher index: factorizations order
    components by importance, so the least important ones go first). The others take the distribution's median,
    ``clamp(sigmoid(log_alpha / beta) * (r - l) + l, 0, 1)`` (the sample at u = 1/2),
    where that median is at least 1/2, and the unstretched median
    ``sigmoid(log_alpha / beta)`` below that. The two agree at 1/2, so the value is
    continuous in ``log_alpha``; it is never 0 for a kept gate (so the number of
    zeros is exactly the stated one), and it saturates at exactly 1 once
    ``log_alpha >= beta * log(11)``, so confident gates leave the weights they
    multiply untouched. (CoFi/FLOP use ``sigmoid(0.8 * log_alpha / beta)``, which
    never reaches 1 and so rescales every kept component a little.)

    ``lr_scale`` reparametrises ``log_alpha = lr_scale * log_alpha_raw + offset``
    where ``log_alpha_raw`` is the trained parameter: with Adam-type optimizers the
    gates then move ``lr_scale`` times faster than the other weights while the
    whole model still uses one optimizer (fairseq's training loop has one).
    Changing the scale moves the ``offset`` buffer, never the parameter, so an
    optimizer's copies of the parameters (fp16 master weights) stay valid.
    """

    def __init__(
        self,
        n: int,
        init_keep_prob: Optional[float] = None,
        temperature: float = 2.0 / 3.0,
        limit_l: float = -0.1,
        limit_r: float = 1.1,
        lr_scale: float = 1.0,
    ):
        super().__init__()
        if init_keep_prob is not None and not 0.0 < init_keep_prob < 1.0:
            raise ValueError(f"init_keep_prob must be in (0, 1), got {init_keep_prob}")
        if not (limit_l < 0.0 and limit_r > 1.0):
            raise ValueError(f"stretch limits need l < 0 < 1 < r, got l={limit_l}, r={limit_r}")
        self.n = int(n)
        self.temperature = float(temperature)
        self.limit_l = float(limit_l)
        self.limit_r = float(limit_r)
        # log(-l/r): shift between log_alpha and the logit of P(z > 0)
        self._log_ratio = math.log(-self.limit_l / self.limit_r)
        self.register_buffer("lr_scale", torch.tensor(float(lr_scale)))
        self.register_buffer("log_alpha_offset", torch.zeros(self.n))
        self.log_alpha_raw = nn.Parameter(torch.zeros(self.n))
        self.bypass = False  # when True the gates are exactly 1 (dense function)
        self.reset_parameters(init_keep_prob)

    @staticmethod
    def dense_keep_prob(n: int) -> float:
        """The default initial keep probability: ``max(0.99, 1 - 0.45 / n)``, the smallest
        (so the fastest to prune) with which the eval mask of ``n`` gates is exactly 1
        (``round(n - E[L0]) = 0`` zeros, every kept gate saturated)."""
        return max(0.99, 1.0 - 0.45 / max(n, 1))

    def reset_parameters(self, init_keep_prob: Optional[float] = None) -> None:
        """Sets every gate's keep probability ``P(z > 0)`` to ``init_keep_prob``
        (default :meth:`dense_keep_prob`: the gated module starts as the dense one)."""
        if init_keep_prob is None:
            init_keep_prob = self.dense_keep_prob(self.n)
        logit = math.log(init_keep_prob) - math.log1p(-init_keep_prob)
        with torch.no_grad():
            # log_alpha = lr_scale * raw: a tensor division, so that a model built on the meta
            # device (shapes only, no values to read) builds too
            self.log_alpha_raw.copy_(torch.full_like(self.log_alpha_raw, logit + self.temperature * self._log_ratio)
                                     / self.lr_scale)
            self.log_alpha_offset.zero_()

    @property
    def log_alpha(self) -> torch.Tensor:
        """The gates' ``log_alpha``, shape ``(n,)``."""
        return self.log_alpha_raw * self.lr_scale + self.log_alpha_offset

    def set_lr_scale(self, lr_scale: float) -> None:
        """Changes the learning-rate scale, keeping ``log_alpha`` (and so the function) unchanged."""
        with torch.no_grad():
            self.log_alpha_offset.add_(self.log_alpha_raw.detach() * (self.lr_scale - lr_scale))
            self.lr_scale.fill_(lr_scale)

    def keep_prob(self) -> torch.Tensor:
        """``P(z_i > 0)``, shape ``(n,)``, differentiable; in float32 at least, so that ``E[L0]``
        (a sum over thousands of gates) and the sparsity the Lagrangian drives keep their
        precision in an fp16/bf16 model."""
        log_alpha = self.log_alpha
        if log_alpha.dtype in (torch.float16, torch.bfloat16):
            log_alpha = log_alpha.float()
        return torch.sigmoid(log_alpha - self.temperature * self._log_ratio)

    def l0_norm(self) -> torch.Tensor:
        """Expected number of non-zero gates ``E[L0]`` (a differentiable scalar)."""
        return self.keep_prob().sum()

    def num_zeros(self) -> int:
        """Number of gates that are exactly 0 in eval mode: ``round(n - E[L0])``."""
        return int(round(self.n - self.l0_norm().item()))

    def sample(self) -> torch.Tensor:
        """One training-mode sample of ``z``, shape ``(n,)``."""
        log_alpha = self.log_alpha
        u = torch.rand_like(log_alpha).clamp_(1e-6, 1.0 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / self.temperature)
        return (s * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)

    @torch.no_grad()
    def deterministic(self) -> torch.Tensor:
        """The eval-mode mask, shape ``(n,)`` (see the class docstring)."""
        log_alpha = self.log_alpha.detach()
        median = torch.sigmoid(log_alpha / self.temperature)
        stretched = (median * (self.limit_r - self.limit_l) + self.limit_l).clamp(0.0, 1.0)
        z = torch.where(median >= 0.5, stretched, median)
        k = self.num_zeros()
        if k > 0:
            # stable sort of the reversed vector: among equal log_alpha the higher index goes first
            order = torch.argsort(log_alpha.flip(0), stable=True)[:k]
            z[self.n - 1 - order] = 0.0
        return z

    def forward(self) -> torch.Tensor:
        """``z``, shape ``(n,)``: sampled in training mode, deterministic in eval mode."""
        if self.bypass:
            return torch.ones_like(self.log_alpha_raw)
        if self.training:
            return self.sample()
        return self.deterministic()

    def extra_repr(self) -> str:
        return f"n={self.n}, temperature={self.temperature:.3g}, l={self.limit_l}, r={self.limit_r}"
