"""Pinned gates: a gate whose ``log_alpha`` sits at ``+PIN`` or ``-PIN`` is a fixed 1 or 0, in
training and in eval, and counts 1 or 0 in ``E[L0]``.

Two uses: the exact-budget mask (:func:`~flop_fairseq.core.budget.apply_allocation`, and
:func:`repin` while such a mask trains), and dead gates (:func:`pin_dead_gates`): a gate whose
keep probability ``P(z > 0)`` has fallen below a small ``p`` is shut for good. Such a gate is
already 0 in the eval mask's value (its median ``sigmoid(log_alpha / beta)`` is below 0.01 for
``p`` = 0.1), but unpinned it still adds ``P(z > 0)`` to ``E[L0]``: a few dozen of them sum
to whole components that the Lagrangian counts as kept and the eval rule (``round(E[L0])``
kept) then keeps, near 0, at their full parameter cost. Pinned, they count nothing, and the
Lagrangian hands that budget to the live components.
"""

from typing import Optional

import torch
from torch import nn

from .counting import gated_modules
from .hard_concrete import HardConcrete

# |log_alpha| of a pinned gate: sigmoid(PIN / beta) and P(z > 0) = sigmoid(PIN - beta log(-l/r))
# round to exactly 1 in float32 (and the dropped gates' P(z > 0) to < 1e-12), so the eval mask
# is exactly 1 on the kept components and 0 elsewhere, with round(n - E[L0]) zeros.
PIN = 30.0


@torch.no_grad()
def pin(gate: HardConcrete, is_open: torch.Tensor, where: Optional[torch.Tensor] = None) -> None:
    """``log_alpha = +PIN`` where ``is_open`` (shape ``(n,)``, bool), ``-PIN`` elsewhere, through
    the gate's reparametrization ``log_alpha = lr_scale * log_alpha_raw + offset``; with ``where``
    (bool, ``(n,)``) only those entries are written, the others stay bit for bit."""
    log_alpha = torch.where(is_open, PIN, -PIN).to(gate.log_alpha_raw.dtype)
    raw = (log_alpha - gate.log_alpha_offset) / gate.lr_scale
    if where is None:
        gate.log_alpha_raw.copy_(raw)
    else:
        gate.log_alpha_raw[where] = raw[where]


@torch.no_grad()
def repin(model: nn.Module) -> None:
    """In place: every gate of ``model`` back to ``+PIN`` or ``-PIN``, on the side it is on. Pinned
    gates get no gradient (a sampled ``z`` is clamped to exactly 0 or 1), but an optimizer's
    momentum still moves them a little after :func:`apply_allocation`; re-pinning before every
    update keeps a training run's state independent of when it was interrupted and resumed."""
    for _, m in gated_modules(model):
        pin(m.gate, m.gate.log_alpha.detach() > 0)


def check_dead_gate_prob(p: float) -> float:
    """``p`` if it is a dead-gate keep probability (in [0, 0.5): a gate below 1/2 is not yet decided
    off), else a :class:`ValueError` naming the range."""
    if not 0.0 <= p < 0.5:  # also refuses NaN
        raise ValueError(f"the dead-gate keep probability must be in [0, 0.5), got {p}")
    return p


@torch.no_grad()
def pin_dead_gates(model: nn.Module, min_keep_prob: float) -> int:
    """In place: every gate of ``model`` with ``P(z > 0) < min_keep_prob`` pinned shut (``-PIN``);
    returns how many gates are shut so (those pinned before included). Idempotent, so calling it
    before every update re-pins what an optimizer's momentum moved, and a resumed run pins
    exactly what an uninterrupted one did."""
    check_dead_gate_prob(min_keep_prob)
    shut = 0
    for _, m in gated_modules(model):
        gate = m.gate
        dead = gate.keep_prob().detach() < min_keep_prob
        if bool(dead.any()):
            pin(gate, torch.zeros_like(dead), where=dead)
            shut += int(dead.sum())
    return shut
