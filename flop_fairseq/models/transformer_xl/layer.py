"""A Transformer-XL decoder layer (relative attention + position-wise FFN) and the sinusoid
relative position encodings. Plain PyTorch, time-major shapes ``(length, batch, d)``."""

from typing import Optional

import torch
from torch import nn

from ...core import GatedLowRankLinear
from .attention import RelMultiHeadAttention


class PositionalEmbedding(nn.Module):
    """Sinusoid encodings ``R`` of relative distances: ``pos`` ``(klen,)`` -> ``(klen, 1, d)``,
    ``[sin(pos * f), cos(pos * f)]`` with ``f_k = 10000^(-2k/d)`` (Transformer-XL's order)."""

    def __init__(self, d: int):
        super().__init__()
        self.d = d

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        # computed here in pos's dtype (float32), not kept as a buffer that .half() would round
        inv_freq = 1.0 / (10000 ** (torch.arange(0.0, self.d, 2.0, device=pos.device, dtype=pos.dtype) / self.d))
        sinusoid = torch.outer(pos, inv_freq)
        return torch.cat([sinusoid.sin(), sinusoid.cos()], dim=-1)[:, None, :]


class PositionwiseFF(nn.Module):
    """``LN(h + W_2 ReLU(W_1 h + b_1) + b_2)`` (post-norm) or ``h + FF(LN(h))`` (``pre_lnorm``);
    ``fc1`` (``d -> d_inner``) and ``fc2`` are :class:`GatedLowRankLinear`."""

    def __init__(self, d_model: int, d_inner: int, dropout: float, pre_lnorm: bool = False,
                 layer_norm_eps: float = 1e-5, **gate_kw):
        super().__init__()
        self.fc1 = GatedLowRankLinear(d_model, d_inner, **gate_kw)
        self.fc2 = GatedLowRankLinear(d_inner, d_model, **gate_kw)
        self.drop = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.pre_lnorm = pre_lnorm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(h) if self.pre_lnorm else h
        out = self.drop(self.fc2(self.drop(torch.relu(self.fc1(x)))))
        return h + out if self.pre_lnorm else self.layer_norm(h + out)


class TransformerXLLayer(nn.Module):
    """One decoder layer: :class:`RelMultiHeadAttention` over ``[memory; h]`` then :class:`PositionwiseFF`."""

    def __init__(self, n_head: int, d_model: int, d_head: int, d_inner: int, dropout: float, dropatt: float,
                 pre_lnorm: bool, own_biases: bool, layer_norm_eps: float = 1e-5, **gate_kw):
        super().__init__()
        self.dec_attn = RelMultiHeadAttention(n_head, d_model, d_head, dropout, dropatt, pre_lnorm, own_biases,
                                              layer_norm_eps, **gate_kw)
        self.pos_ff = PositionwiseFF(d_model, d_inner, dropout, pre_lnorm, layer_norm_eps, **gate_kw)

    def forward(self, h: torch.Tensor, r: torch.Tensor, attn_mask: Optional[torch.Tensor],
                mems: Optional[torch.Tensor], r_w_bias=None, r_r_bias=None) -> torch.Tensor:
        """``h`` ``(qlen, B, d)``, ``mems`` ``(mlen, B, d)`` (this layer's input at earlier steps) -> ``(qlen, B, d)``."""
        return self.pos_ff(self.dec_attn(h, r, attn_mask, mems, r_w_bias, r_r_bias))

    def forward_cached(self, h: torch.Tensor, r_k: torch.Tensor, attn_mask: Optional[torch.Tensor], cache: dict,
                       r_w_bias=None, r_r_bias=None) -> torch.Tensor:
        """:meth:`forward` of new positions given the cached keys and values of earlier ones
        (:meth:`RelMultiHeadAttention.forward_cached`)."""
        return self.pos_ff(self.dec_attn.forward_cached(h, r_k, attn_mask, cache, r_w_bias, r_r_bias))

    def matrices(self):
        return self.dec_attn.matrices() + [("fc1", self.pos_ff.fc1), ("fc2", self.pos_ff.fc2)]
