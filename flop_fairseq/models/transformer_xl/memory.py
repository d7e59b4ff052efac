"""Segment-level recurrence: the hidden states Transformer-XL caches from one segment to the next,
and the attention mask over ``[memory; segment]``. Plain PyTorch.

The memory of layer ``l`` is ``(mlen, B, d)``: the inputs of layer ``l`` at the last ``mlen <= mem_len``
positions before the current segment, row ``b`` continuing row ``b`` of the previous batch (fairseq's
``truncated_bptt_lm`` task feeds each batch row a contiguous stream). It is detached: no gradient
flows into earlier segments (Dai et al. 2019, eq. 1, ``SG``)."""

from typing import List, Optional

import torch


def update_memory(hids: List[torch.Tensor], mems: Optional[List[torch.Tensor]], mem_len: int) -> Optional[List[torch.Tensor]]:
    """The last ``mem_len`` positions of ``[mems_l; hids_l]`` for each layer ``l``, detached; None when
    ``mem_len`` is 0. ``hids[l]`` is layer ``l``'s input for the segment, ``(qlen, B, d)``."""
    if mem_len <= 0:
        return None
    with torch.no_grad():
        out = []
        for i, h in enumerate(hids):
            cat = h if mems is None else torch.cat([mems[i], h], dim=0)
            out.append(cat[-mem_len:].detach())
    return out


def attention_mask(qlen: int, mlen: int, mem_len: int, same_length: bool, device) -> torch.Tensor:
    """``(qlen, mlen + qlen)`` bool, True where query ``i`` may not attend to key ``j``: future keys
    (``j > i + mlen``) and, with ``same_length``, keys further back than ``mem_len`` so that every query
    sees the same number of keys (Transformer-XL's evaluation setting)."""
    klen = mlen + qlen
    ones = torch.ones(qlen, klen, dtype=torch.bool, device=device)
    mask = torch.triu(ones, diagonal=1 + mlen)
    if same_length:
        mask_len = klen - mem_len
        shift = qlen - mask_len if mask_len > 0 else qlen
        mask = mask | torch.tril(ones, diagonal=-shift)
    return mask


class SegmentMemory:
    """The memory a model carries between calls (not a parameter or buffer: never saved).

    :meth:`get` forgets it when the batch size, dtype or device changes (a new stream);
    the model also forgets it when it switches between training and evaluation."""

    def __init__(self):
        self.mems: Optional[List[torch.Tensor]] = None

    def reset(self) -> None:
        self.mems = None

    def get(self, bsz: int, like: torch.Tensor) -> Optional[List[torch.Tensor]]:
        m = self.mems
        if m is None or m[0].size(1) != bsz or m[0].dtype != like.dtype or m[0].device != like.device:
            self.mems = None
        return self.mems

    def set(self, mems: Optional[List[torch.Tensor]]) -> None:
        self.mems = mems

    def __deepcopy__(self, memo):
        return SegmentMemory()
