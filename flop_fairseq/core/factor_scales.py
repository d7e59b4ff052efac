"""Factor scales for Adam: a function-preserving rescaling of every group's two factors.

Adam moves every weight by about the learning rate whatever its size, so a factor's relative step
is ``lr / rms(factor)``. The SVD split ``A = U S^1/2``, ``B = V S^1/2`` of a band gives a word
factor far smaller than the dense embedding it replaces (and a projection far larger), so ``A``
learns several times faster relative to its size than the dense model did and ``B`` slower.
``A B^T = (A c)(B / c)^T`` for any scalar ``c``: :func:`balance_factor_scales` picks, per group,
``c = (rms(B) / rms(A))^1/2`` so that both factors have the same rms (the same relative Adam step);
for a band ``B`` is all its projections together. The gates multiply components, so the gated
function is unchanged too.
"""

from typing import Dict

import torch


def _rms(tensors) -> float:
    total = sum(float(t.double().pow(2).sum()) for t in tensors)
    count = sum(t.numel() for t in tensors)
    return (total / count) ** 0.5 if count else 0.0


@torch.no_grad()
def _balance(first, others) -> float:
    a, b = _rms([first]), _rms(others)
    if a == 0.0 or b == 0.0:
        return 1.0
    c = (b / a) ** 0.5
    first.mul_(c)
    for t in others:
        t.div_(c)
    return c


def balance_factor_scales(model) -> Dict[str, float]:
    """Rescales every band (``A`` against its projections) and every layer matrix (``P`` against
    ``Q``) of ``model`` (a :class:`PrunableModel`) so that both factors have equal rms; returns
    the scale ``c`` applied to each group (by band label or matrix name)."""
    out = {}
    for slot in model.flop_bands():
        band = slot.module
        projs = [p for p in (band.in_proj, band.out_proj) if isinstance(p, torch.nn.Parameter)]
        out[slot.label] = _balance(band.emb, projs)
    for name, m in model.flop_layer_matrices():
        out[name] = _balance(m.left, [m.right])
    return out
