"""Transformer-XL's relative multi-head attention (Dai et al. 2019, section 3.3) with FLOP-factorized
projections. Plain PyTorch. Shapes are time-major, as in Transformer-XL: ``(length, batch, ...)``."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...core import GatedLowRankLinear


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """Transformer-XL's relative shift of ``BD`` (shape ``(qlen, klen, ...)``).

    Column ``j`` of ``x`` holds the score for relative distance ``klen - 1 - j``; after the shift
    row ``i`` holds at column ``j`` the score of distance ``i + mlen - j`` (``mlen = klen - qlen``),
    for every ``j <= i + mlen`` (the entries past that are garbage, and masked by the causal mask).
    Done by padding one zero column, reshaping and dropping the first row: O(1) extra memory.
    """
    zero_pad = x.new_zeros((x.size(0), 1) + x.shape[2:])
    padded = torch.cat([zero_pad, x], dim=1).view((x.size(1) + 1, x.size(0)) + x.shape[2:])
    return padded[1:].view_as(x)


class RelMultiHeadAttention(nn.Module):
    """Relative positional attention with global content bias ``u`` (``r_w_bias``) and position bias
    ``v`` (``r_r_bias``), ``n_head`` heads of ``d_head``:

    ``score(i, j) = (W_q h_i + u)^T W_k h_j + (W_q h_i + v)^T W_r R_{i-j}``, scaled by ``d_head^-1/2``.

    ``q_proj``, ``k_proj``, ``v_proj``, ``r_net`` (``W_r``) and ``o_net`` are :class:`GatedLowRankLinear`
    (no bias, as in Transformer-XL). Post-norm by default (``LN(h + attn)``); ``pre_lnorm`` normalises the
    input (memory included) instead. The biases are the layer's own when ``own_biases`` (``untie_r``),
    else passed to :meth:`forward` (shared by all layers).
    """

    def __init__(self, n_head: int, d_model: int, d_head: int, dropout: float, dropatt: float = 0.0,
                 pre_lnorm: bool = False, own_biases: bool = False, layer_norm_eps: float = 1e-5, **gate_kw):
        super().__init__()
        self.n_head, self.d_head, self.pre_lnorm = n_head, d_head, pre_lnorm
        inner = n_head * d_head
        self.q_proj = GatedLowRankLinear(d_model, inner, bias=False, **gate_kw)
        self.k_proj = GatedLowRankLinear(d_model, inner, bias=False, **gate_kw)
        self.v_proj = GatedLowRankLinear(d_model, inner, bias=False, **gate_kw)
        self.r_net = GatedLowRankLinear(d_model, inner, bias=False, **gate_kw)
        self.o_net = GatedLowRankLinear(inner, d_model, bias=False, **gate_kw)
        self.layer_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.drop = nn.Dropout(dropout)
        self.dropatt = nn.Dropout(dropatt)
        self.scale = d_head ** -0.5
        if own_biases:
            self.r_w_bias = nn.Parameter(torch.empty(n_head, d_head).normal_(0.0, 0.02))
            self.r_r_bias = nn.Parameter(torch.empty(n_head, d_head).normal_(0.0, 0.02))
        else:
            self.r_w_bias = self.r_r_bias = None

    def forward(self, w: torch.Tensor, r: torch.Tensor, attn_mask: Optional[torch.Tensor],
                mems: Optional[torch.Tensor] = None, r_w_bias: Optional[torch.Tensor] = None,
                r_r_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``w`` ``(qlen, B, d)``; ``r`` ``(klen, 1, d)`` sinusoid encodings of distances ``klen-1 .. 0``;
        ``attn_mask`` ``(qlen, klen)`` bool, True where attention is forbidden; ``mems`` ``(mlen, B, d)``.
        Returns ``(qlen, B, d)``."""
        qlen = w.size(0)
        cat = w if mems is None or mems.size(0) == 0 else torch.cat([mems, w], 0)
        if self.pre_lnorm:
            cat = self.layer_norm(cat)
        q, k, v = self.q_proj(cat[-qlen:]), self.k_proj(cat), self.v_proj(cat)
        return self.attend(w, q, k, v, self.r_net(r), attn_mask, r_w_bias, r_r_bias)

    def forward_cached(self, w: torch.Tensor, r_k: torch.Tensor, attn_mask: Optional[torch.Tensor], cache: dict,
                       r_w_bias: Optional[torch.Tensor] = None, r_r_bias: Optional[torch.Tensor] = None
                       ) -> torch.Tensor:
        """:meth:`forward` for new positions ``w`` ``(qlen, B, d)`` after those whose projected keys and
        values ``cache`` holds (``cache["k"]``, ``cache["v"]``: ``(mlen, B, n_head * d_head)``, absent at
        the start), so that a step costs the new positions only; ``cache`` then holds all ``mlen + qlen``.
        ``r_k`` ``(klen, n_head * d_head)``: ``W_r R`` of distances ``klen-1 .. 0`` (:meth:`position_keys`)."""
        x = self.layer_norm(w) if self.pre_lnorm else w
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if "k" in cache:  # keys and values depend on their own position only: computed once each
            k, v = torch.cat([cache["k"], k], 0), torch.cat([cache["v"], v], 0)
        cache["k"], cache["v"] = k, v
        return self.attend(w, q, k, v, r_k, attn_mask, r_w_bias, r_r_bias)

    def position_keys(self, r: torch.Tensor) -> torch.Tensor:
        """``W_r R``: ``r`` ``(n, 1, d)`` sinusoid encodings -> ``(n, n_head * d_head)``."""
        return self.r_net(r)[:, 0]

    def attend(self, w, q, k, v, r_k, attn_mask, r_w_bias, r_r_bias) -> torch.Tensor:
        """The attention of queries ``q`` ``(qlen, B, H*D)`` over keys/values ``(klen, B, H*D)`` with
        position keys ``r_k`` (``klen`` rows, distances ``klen-1 .. 0``), added to the input ``w``."""
        qlen, bsz, klen = w.size(0), w.size(1), k.size(0)
        r_w_bias = self.r_w_bias if self.r_w_bias is not None else r_w_bias
        r_r_bias = self.r_r_bias if self.r_r_bias is not None else r_r_bias
        q = q.view(qlen, bsz, self.n_head, self.d_head)
        k = k.view(klen, bsz, self.n_head, self.d_head)
        v = v.view(klen, bsz, self.n_head, self.d_head)
        r_k = r_k.reshape(klen, self.n_head, self.d_head)
        ac = torch.einsum("ibnd,jbnd->ijbn", q + r_w_bias, k)  # content: (qlen, klen, B, H)
        bd = rel_shift(torch.einsum("ibnd,jnd->ijbn", q + r_r_bias, r_k))  # position
        score = (ac + bd) * self.scale
        if attn_mask is not None:
            score = score.float().masked_fill(attn_mask[:, :, None, None], torch.finfo(torch.float32).min)
        prob = self.dropatt(F.softmax(score, dim=1).type_as(w))
        vec = torch.einsum("ijbn,jbnd->ibnd", prob, v).reshape(qlen, bsz, self.n_head * self.d_head)
        out = self.drop(self.o_net(vec))
        return w + out if self.pre_lnorm else self.layer_norm(w + out)

    def matrices(self):
        """``(name, module)`` of the factorized matrices."""
        return [(n, getattr(self, n)) for n in ("q_proj", "k_proj", "v_proj", "r_net", "o_net")]
