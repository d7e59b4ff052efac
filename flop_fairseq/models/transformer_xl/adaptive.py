"""Transformer-XL's adaptive embedding and projected adaptive softmax over FLOP bands.

They extend the core's :class:`LowRankAdaptiveInput` / :class:`LowRankAdaptiveSoftmax` (whose
interfaces are fairseq's, so ``adaptive_loss`` and the sequence scorer use them) with what
Transformer-XL adds: the ``sqrt(d_model)`` embedding scale, a bias per output word (each band's
``out_layers[i].bias``) and a bias on the cluster logits (``cluster_bias``)."""

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...core import LowRankAdaptiveInput, LowRankAdaptiveSoftmax


class TxlAdaptiveInput(LowRankAdaptiveInput):
    """Token ids ``(..., )`` -> ``sqrt(d_model) * P_i E_i[w]``, shape ``(..., d_model)``."""

    def __init__(self, bands, cutoff, d_model: int, padding_idx: int):
        super().__init__(bands, cutoff, d_model, padding_idx)
        self.scale = d_model ** 0.5

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return super().forward(tokens) * self.scale


class TxlAdaptiveSoftmax(LowRankAdaptiveSoftmax):
    """Projected adaptive softmax: head logits ``[A_0 diag(z) B_0^T h + b_0 ; C h + c]``, tail cluster
    ``i`` logits ``A_i diag(z) B_i^T h + b_i``.

    ``biases[i]`` (``|V_i|``) is band ``i``'s output bias; ``class_proj`` (``Linear(d, n_clusters)``
    with bias) scores the clusters. Transformer-XL scores clusters as ``cluster_weight Q_0^T h``, the
    head projection ``Q_0`` folded in here (``C = cluster_weight Q_0^T``), so pruning the head band
    leaves the cluster logits untouched. No dropout inside: Transformer-XL drops out its last hidden
    state before the softmax (the decoder does)."""

    def __init__(self, bands: Sequence, cutoff: Sequence[int], d_model: int):
        n_clusters = len(cutoff) - 1
        class_proj = nn.Linear(d_model, n_clusters)
        nn.init.normal_(class_proj.weight, 0.0, 0.02)
        nn.init.zeros_(class_proj.bias)
        super().__init__(bands, cutoff, d_model, dropout=0.0, class_proj=class_proj)
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(b.num_words)) for b in bands])

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(N, d)`` -> ``(N, c_0 + n_clusters)``."""
        return torch.cat([self.bands[0].logits(x) + self.biases[0], self.class_proj(x)], dim=-1)

    def tail(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Logits of tail cluster ``i`` (band ``i + 1``), ``(N, |V_{i+1}|)``."""
        code, words = self.bands[i + 1].code_and_words(x)
        return F.linear(code, words, self.biases[i + 1])
