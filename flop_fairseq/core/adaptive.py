"""Adaptive input (Baevski & Auli 2019) and adaptive softmax (Grave et al. 2017)
whose frequency bands are low-rank products, gated (:class:`GatedLowRankBand`) or
compact (:class:`LowRankBand`). Plain PyTorch; the interfaces match fairseq's
``AdaptiveInput`` and ``AdaptiveSoftmax`` so fairseq's decoder, ``adaptive_loss``
criterion and sequence scorer use them unchanged."""

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .band import LowRankBand


def band_slices(cutoff: Sequence[int]) -> List[range]:
    """Vocabulary slice of each band for ``cutoff = [c_0, ..., c_n = |V|]``."""
    return [range(lo, hi) for lo, hi in zip([0] + list(cutoff[:-1]), cutoff)]


def complete_cutoff(cutoff: Sequence[int], vocab_size: int) -> List[int]:
    """fairseq's rule: append ``|V|`` to the cutoffs unless the last one already is ``|V|``."""
    cutoff = [int(c) for c in cutoff]
    if any(b <= a for a, b in zip(cutoff, cutoff[1:])) or cutoff[0] <= 0:
        raise ValueError(f"adaptive cutoffs must be increasing and positive, got {cutoff}")
    if vocab_size > cutoff[-1]:
        return cutoff + [vocab_size]
    if vocab_size < cutoff[-1]:
        raise ValueError(
            f"adaptive cutoff {cutoff[-1]} is larger than the vocabulary ({vocab_size} types): "
            "lower --adaptive-input-cutoff / --adaptive-softmax-cutoff"
        )
    return cutoff


class LowRankAdaptiveInput(nn.Module):
    """Token ids ``(B, T)`` -> embeddings ``(B, T, d)``, band ``i`` embedding the ids in its slice."""

    def __init__(self, bands: Sequence[LowRankBand], cutoff: Sequence[int], embedding_dim: int, padding_idx: int):
        super().__init__()
        if len(bands) != len(cutoff):
            raise ValueError(f"{len(bands)} bands for {len(cutoff)} cutoffs")
        self.bands = nn.ModuleList(bands)
        self.cutoff = list(cutoff)
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        dtype = self.bands[0].emb.dtype
        result = torch.zeros(tokens.shape + (self.embedding_dim,), dtype=dtype, device=tokens.device)
        lo = 0
        for band, hi in zip(self.bands, self.cutoff):
            mask = (tokens >= lo) & (tokens < hi)
            if mask.any():
                result[mask] = band.embed(tokens[mask] - lo).to(dtype)
            lo = hi
        return result


class LowRankAdaptiveSoftmax(nn.Module):
    """Adaptive softmax over factorized bands.

    The head scores the words of band 0 with ``bands[0].logits`` and the tail
    clusters with ``class_proj`` (``Linear(d, n_clusters)``, dense); tail cluster
    ``i`` scores its words with ``bands[i]``, with dropout on the band's rank-``r``
    code (where fairseq applies it, between the cluster's two projections).
    ``forward`` and ``get_log_prob`` behave as fairseq's ``AdaptiveSoftmax``.
    """

    def __init__(self, bands: Sequence[LowRankBand], cutoff: Sequence[int], input_dim: int, dropout: float,
                 class_proj: Optional[nn.Linear] = None):
        super().__init__()
        self.bands = nn.ModuleList(bands)
        self.cutoff = list(cutoff)
        self.vocab_size = self.cutoff[-1]
        self.input_dim = input_dim
        n_clusters = len(self.cutoff) - 1
        self.class_proj = class_proj if class_proj is not None else nn.Linear(input_dim, n_clusters, bias=False)
        if class_proj is None:
            nn.init.xavier_uniform_(self.class_proj.weight)
        self.dropout = nn.Dropout(dropout)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(N, d)`` -> head logits ``(N, c_0 + n_clusters)``."""
        return torch.cat([self.bands[0].logits(x), self.class_proj(x)], dim=-1)

    def tail(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Logits of tail cluster ``i`` (band ``i + 1``) for ``x`` ``(N, d)``."""
        code, words = self.bands[i + 1].code_and_words(x)
        return F.linear(self.dropout(code), words)

    def adapt_target(self, target: torch.Tensor):
        target = target.view(-1)
        new_target = [target.clone()]
        target_idxs = []
        for i in range(len(self.cutoff) - 1):
            mask = (target >= self.cutoff[i]) & (target < self.cutoff[i + 1])
            new_target[0][mask] = self.cutoff[0] + i
            if mask.any():
                target_idxs.append(mask.nonzero(as_tuple=False).squeeze(1))
                new_target.append(target[mask] - self.cutoff[i])
            else:
                target_idxs.append(None)
                new_target.append(None)
        return new_target, target_idxs

    def forward(self, input: torch.Tensor, target: torch.Tensor):
        """``input`` ``(B, T, d)``, ``target`` ``(B, T)`` -> (logits per cluster, targets per cluster)."""
        input = self.dropout(input.contiguous().view(-1, input.size(-1)))
        new_target, target_idxs = self.adapt_target(target)
        output = [self.head(input)]
        for i, idxs in enumerate(target_idxs):
            output.append(None if idxs is None else self.tail(i, input.index_select(0, idxs)))
        return output, new_target

    def get_log_prob(self, input: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
        """Log-probabilities ``(B, T, |V|)``; with ``target``, tail clusters only where a target falls."""
        bsz, length, dim = input.size()
        input = input.contiguous().view(-1, dim)
        target_idxs = self.adapt_target(target)[1] if target is not None else None
        head_y = self.head(input)
        # the full distribution (sampling) writes every entry: no need to clear it first
        log_probs = (head_y.new_empty if target_idxs is None else head_y.new_zeros)(input.size(0), self.vocab_size)
        head_sz = self.cutoff[0] + len(self.cutoff) - 1
        log_probs[:, :head_sz] = F.log_softmax(head_y, dim=1)
        tail_priors = log_probs[:, self.cutoff[0]:head_sz].clone()
        for i in range(len(self.cutoff) - 1):
            start, end = self.cutoff[i], self.cutoff[i + 1]
            if target_idxs is None:
                torch.add(F.log_softmax(self.tail(i, input), dim=1), tail_priors[:, i, None],
                          out=log_probs[:, start:end])
            elif target_idxs[i] is not None:
                idxs = target_idxs[i]
                # in place: at eval-lm's 2048 tokens a band of 207,735 words makes 200 MB temporaries
                log_probs[idxs, start:end] = F.log_softmax(self.tail(i, input[idxs]), dim=1).add_(
                    tail_priors[idxs, i, None])
        return log_probs.view(bsz, length, -1)
