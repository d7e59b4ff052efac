"""The augmented Lagrangian that drives expected sparsity to a target (FLOP, Sec. 3.3)."""

import torch
from torch import nn


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-1``."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def reverse_gradient(x: torch.Tensor) -> torch.Tensor:
    return _GradientReversal.apply(x)


class AugmentedLagrangian(nn.Module):
    """``penalty = lambda_1 (s - t) + lambda_2 (s - t)^2``.

    ``s`` is the model's expected sparsity and ``t`` the target, which warms up
    linearly from 0 to ``target_sparsity`` over ``warmup_updates`` updates. The
    model minimises the penalty while ``lambda_1``, ``lambda_2`` are maximised:
    their gradients are reversed, so one standard optimizer and one backward pass
    perform the min-max (gradient descent on the model, ascent on the lambdas).

    ``lambda_i = lr_scale * lambda_i_raw + offset_i``: with Adam-type optimizers the
    lambdas then move ``lr_scale`` times faster than the model's weights (changing
    the scale moves the offsets, never the parameters).

    State (the lambdas, ``lr_scale`` and ``num_updates``, the position in the
    target schedule) is in ``state_dict()``, so it is saved and restored with
    the model it belongs to.
    """

    def __init__(self, target_sparsity: float = 0.0, warmup_updates: int = 0, lr_scale: float = 1.0):
        super().__init__()
        self.lambda_1_raw = nn.Parameter(torch.zeros(()))
        self.lambda_2_raw = nn.Parameter(torch.zeros(()))
        self.register_buffer("lr_scale", torch.tensor(float(lr_scale)))
        self.register_buffer("lambda_offsets", torch.zeros(2))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))
        self.configure(target_sparsity, warmup_updates)

    def configure(self, target_sparsity: float, warmup_updates: int, lr_scale: float = None) -> None:
        if not 0.0 <= target_sparsity < 1.0:
            raise ValueError(f"target sparsity must be in [0, 1), got {target_sparsity}")
        if warmup_updates < 0:
            raise ValueError(f"sparsity warm-up must be >= 0 updates, got {warmup_updates}")
        self.target_sparsity = float(target_sparsity)
        self.warmup_updates = int(warmup_updates)
        if lr_scale is not None:
            self.set_lr_scale(lr_scale)

    @torch.no_grad()
    def set_lr_scale(self, lr_scale: float) -> None:
        """Changes the learning-rate scale, keeping the lambdas' values."""
        raw = torch.stack([self.lambda_1_raw.detach(), self.lambda_2_raw.detach()])
        self.lambda_offsets.add_(raw * (self.lr_scale - lr_scale))
        self.lr_scale.fill_(lr_scale)

    @property
    def lambda_1(self) -> torch.Tensor:
        return self.lambda_1_raw * self.lr_scale + self.lambda_offsets[0]

    @property
    def lambda_2(self) -> torch.Tensor:
        return self.lambda_2_raw * self.lr_scale + self.lambda_offsets[1]

    def set_num_updates(self, num_updates: int) -> None:
        self.num_updates.fill_(int(num_updates))

    def target(self, num_updates: int = None) -> float:
        """``t`` at ``num_updates`` (default: the current position)."""
        n = int(self.num_updates) if num_updates is None else num_updates
        if self.warmup_updates <= 0:
            return self.target_sparsity
        return self.target_sparsity * min(1.0, n / self.warmup_updates)

    def forward(self, expected_sparsity: torch.Tensor) -> torch.Tensor:
        """The penalty (a scalar) for the differentiable expected sparsity ``s``."""
        diff = expected_sparsity - self.target()
        lambda_1 = reverse_gradient(self.lambda_1_raw) * self.lr_scale + self.lambda_offsets[0]
        lambda_2 = reverse_gradient(self.lambda_2_raw) * self.lr_scale + self.lambda_offsets[1]
        return lambda_1 * diff + lambda_2 * diff * diff
