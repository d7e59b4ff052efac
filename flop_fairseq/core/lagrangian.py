"""The augmented Lagrangian that drives expected sparsity to a target (FLOP, Sec. 3.3)."""

import torch
from torch import nn

from .target import check_target_sparsity


class AugmentedLagrangian(nn.Module):
    """``penalty = lambda_1 (s - t) + lambda_2 (s - t)^2``.

    ``s`` is the model's expected sparsity and ``t`` the target, which warms up
    linearly from ``s_0`` to ``target_sparsity`` over ``warmup_updates`` updates, ``s_0``
    being the expected sparsity of the model at its first training pass (recorded then):
    the schedule starts where the model is, so the first updates do not prune by accident
    (a converted model starts slightly below 0: its full-rank head band costs more than the
    dense one, and its gates' keep probability is just under 1). The
    model minimises the penalty (gradients reach ``s`` only) while the multipliers
    are maximised by gradient ascent, ``lambda_1 += lr * (s - t)`` and
    ``lambda_2 += lr * (s - t)^2`` (their exact partial derivatives), applied once
    per update with the mean over the update's forward passes. The ascent is done
    here, not by the model's optimizer, so the model keeps one optimizer and one
    backward pass, and the multipliers move in proportion to the constraint
    violation whatever that optimizer is. (Through Adam, whose steps have a
    fixed size whatever the violation, the multipliers wind up while the gates
    are still moving and the sparsity overshoots its target.)

    ``lambda_2_init`` > 0 starts the quadratic term as the classic augmented
    Lagrangian's penalty weight: it pulls ``s`` back towards ``t`` in proportion to
    the distance from the first update on, so the sparsity follows the warm-up
    closely and settles on the target instead of overshooting it (components
    pruned past the target hardly come back: a gate stuck at 0 gets no gradient
    from the task loss). ``lambda_1`` does the remaining, integral, part.

    In control terms the gates see the price ``dpenalty/ds = lambda_1 + 2 lambda_2 (s - t)``:
    a proportional term (gain ``2 lambda_2``) and an integral one (``lambda_1``, gain ``lr``).
    The integral settles at the price the task needs at the target (a few hundredths per
    token on the WikiText-2 benchmark's model: with Adam the gates react to the sign of the
    balance, not its size), so a small ``lambda_1`` is that price, not a stalled multiplier.
    The proportional term is what keeps the loop stable: the gates integrate the price (Adam
    keeps moving them while it lasts), and an integral-only controller on an integrating plant
    oscillates. Measured: ``lambda_2`` from 0 with ``lr`` = 10 swung the sparsity from 0.39 back
    to -0.02 within 50 updates of the warm-up, ``lambda_1`` from +27 to -75.
    Call :meth:`set_num_updates` with the update count before each update's
    forward passes (fairseq does, through the model): a larger count first
    applies the ascent step of the passes since the last one. State (the
    multipliers, the pending violation and ``num_updates``, the position in the
    target schedule) is in ``state_dict()``, so it is saved and restored with the
    model it belongs to, and a resumed run continues exactly.
    """

    def __init__(self, target_sparsity: float = 0.0, warmup_updates: int = 0, lr: float = 0.01,
                 lambda_2_init: float = 0.0):
        super().__init__()
        self.register_buffer("lambdas", torch.tensor([0.0, float(lambda_2_init)], dtype=torch.float64))
        # sum of (s - t), sum of (s - t)^2 and the number of passes since the last ascent step
        self.register_buffer("pending", torch.zeros(3, dtype=torch.float64))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))
        # the ascent step size is state too: a resumed run applies the pending step before
        # the training flags reach the controller again
        self.register_buffer("lr", torch.tensor(float(lr), dtype=torch.float64))
        # s_0, the schedule's start, recorded by the first training pass (``started``)
        self.register_buffer("start_sparsity", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("started", torch.tensor(False))
        self.start_from_model = True
        self.configure(target_sparsity, warmup_updates)

    def _apply(self, fn, *args, **kwargs):
        # .half()/.bfloat16() of the model must not reach the controller: ascent steps of
        # 1e-4 vanish in 16-bit floats. Devices follow; the dtype stays float64.
        super()._apply(fn, *args, **kwargs)
        for name in ("lambdas", "pending", "lr", "start_sparsity"):
            self._buffers[name] = self._buffers[name].double()
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the schedule recorded its start began at s_0 = 0
        if prefix + "start_sparsity" not in state_dict and prefix + "lambdas" in state_dict:
            state_dict[prefix + "start_sparsity"] = torch.tensor(0.0, dtype=torch.float64)
            state_dict[prefix + "started"] = torch.tensor(True)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fresh(self) -> bool:
        """True before the first update: no ascent step taken, nothing pending."""
        return int(self.num_updates) == 0 and float(self.lambdas[0]) == 0.0 and float(self.pending[2]) == 0.0

    def configure(self, target_sparsity: float, warmup_updates: int, lr: float = None,
                  lambda_2_init: float = None, start_from_model: bool = True) -> None:
        """Sets the schedule and step size; ``lambda_2_init`` sets ``lambda_2`` only on a
        :meth:`fresh` controller (a resumed one keeps its multipliers); ``start_from_model=False``
        starts the schedule at ``s_0 = 0`` whatever the model's expected sparsity."""
        self.start_from_model = bool(start_from_model)
        check_target_sparsity(target_sparsity)
        if warmup_updates < 0:
            raise ValueError(f"sparsity warm-up must be >= 0 updates, got {warmup_updates}")
        self.target_sparsity = float(target_sparsity)
        self.warmup_updates = int(warmup_updates)
        if lr is not None:
            if lr <= 0:
                raise ValueError(f"the multipliers' learning rate must be > 0, got {lr}")
            self.lr.fill_(float(lr))
        if lambda_2_init is not None:
            if lambda_2_init < 0:
                raise ValueError(f"lambda_2 must start >= 0, got {lambda_2_init}")
            if self.fresh():
                self.lambdas[1] = float(lambda_2_init)

    @property
    def lambda_1(self) -> torch.Tensor:
        return self.lambdas[0]

    @property
    def lambda_2(self) -> torch.Tensor:
        return self.lambdas[1]

    @torch.no_grad()
    def step(self) -> None:
        """One gradient-ascent step on the multipliers with the pending mean violation."""
        count = float(self.pending[2])
        if count > 0:
            self.lambdas.add_(float(self.lr) * self.pending[:2] / count)
            self.pending.zero_()

    def set_num_updates(self, num_updates: int) -> None:
        if int(num_updates) > int(self.num_updates):
            self.step()
        self.num_updates.fill_(int(num_updates))

    def target(self, num_updates: int = None) -> float:
        """``t`` at ``num_updates`` (default: the current position)."""
        n = int(self.num_updates) if num_updates is None else num_updates
        if self.warmup_updates <= 0:
            return self.target_sparsity
        start = float(self.start_sparsity)  # 0 until recorded
        return start + (self.target_sparsity - start) * min(1.0, n / self.warmup_updates)

    def forward(self, expected_sparsity: torch.Tensor) -> torch.Tensor:
        """The penalty (a scalar) for the differentiable expected sparsity ``s``.

        In training mode the violation is recorded for the next ascent step.
        """
        if self.training and not bool(self.started) and self.fresh():
            self.start_sparsity.fill_(float(expected_sparsity.detach()) if self.start_from_model else 0.0)
            self.started.fill_(True)
        diff = expected_sparsity - self.target()
        if self.training:
            d = diff.detach().double()
            self.pending.add_(torch.stack([d, d * d, torch.ones_like(d)]))
        lambda_1, lambda_2 = self.lambdas.to(diff.dtype)
        return lambda_1 * diff + lambda_2 * diff * diff
