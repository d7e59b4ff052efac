"""The storage order of the matrices a one-token decoding step reads.

At batch 1 a product ``F.linear(x, W)`` with ``W`` of shape ``(out, in)`` reads every weight once,
and how fast depends on the order they are stored in: a row-major ``W`` with short rows (the second
factor of a low-rank product, ``(out, k)``; a band's word factor, ``(|V_i|, k)``) is read at a
fraction of the speed of the same matrix stored transposed, as ``k`` long rows. In eval mode
compact modules store such matrices transposed (a ``(k, out)`` contiguous tensor seen as ``(out,
k)``: same shape, same values, same state-dict entry); in training mode row-major, as every other
parameter, since fairseq's optimizers flatten parameters with ``view(-1)``."""

from typing import Iterable, Optional

import torch


def set_decoding_layout(params: Iterable[Optional[torch.Tensor]], decoding: bool) -> None:
    """In place on each 2-D tensor of ``params`` (None skipped): stored transposed if ``decoding``,
    else row-major. Idempotent (a band shared by two owners is switched twice)."""
    with torch.no_grad():
        for p in params:
            if p is None or p.dim() != 2 or p.is_contiguous() == p.t().is_contiguous():
                continue  # a vector in disguise (a dimension of 1) is both
            if decoding and p.is_contiguous():
                p.data = p.data.t().contiguous().t()
            elif not decoding and not p.is_contiguous():
                p.data = p.data.contiguous()
