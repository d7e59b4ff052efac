"""The Transformer-XL network (Dai et al. 2019) with FLOP bands and factorized layers, in plain
PyTorch: adaptive embedding, ``n_layer`` relative-attention layers with segment memory, projected
adaptive softmax. The fairseq model (:mod:`.model`) wraps it."""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ...core import complete_cutoff
from .adaptive import TxlAdaptiveInput, TxlAdaptiveSoftmax
from .bands import build_bands
from .layer import PositionalEmbedding, TransformerXLLayer
from .memory import SegmentMemory, attention_mask, update_memory


@dataclass
class TxlSpec:
    """Hyper-parameters, with Transformer-XL's (and HuggingFace's ``TransfoXLConfig``) names."""

    vocab_size: int
    cutoffs: List[int] = field(default_factory=lambda: [20000, 40000, 200000])
    d_model: int = 410
    d_embed: Optional[int] = None  # None: d_model
    n_head: int = 10
    d_head: int = 41
    d_inner: int = 2100
    n_layer: int = 16
    div_val: int = 1
    tie_weight: bool = True
    tie_projs: List[bool] = field(default_factory=lambda: [False, True, True, True])
    untie_r: bool = False
    pre_lnorm: bool = False
    mem_len: int = 0
    clamp_len: int = -1
    same_length: bool = False
    dropout: float = 0.1
    dropatt: float = 0.0
    layer_norm_eps: float = 1e-5
    padding_idx: int = 1
    init_keep_prob: Optional[float] = None
    temperature: float = 2.0 / 3.0
    init_zero_mems: bool = False  # a stream starts with mem_len zero vectors (HF), not an empty memory

    def check(self) -> None:
        """Raises ``ValueError`` naming the first setting that cannot build a network."""
        for name in ("d_model", "n_head", "d_head", "d_inner", "n_layer", "div_val"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.mem_len < 0:
            raise ValueError(f"--mem-len must be >= 0, got {self.mem_len}")
        self.band_cutoff  # noqa: B018  (raises for cutoffs that do not increase)

    @property
    def band_cutoff(self) -> List[int]:
        return complete_cutoff([c for c in self.cutoffs if c < self.vocab_size] or [self.vocab_size],
                               self.vocab_size)


class TransformerXLNetwork(nn.Module):
    """Token ids ``(B, T)`` -> last hidden states ``(B, T, d_model)``; ``adaptive_softmax`` scores them.

    :meth:`forward_segment` is the pure function of one segment given a memory; :meth:`forward`
    also reads and updates the memory it carries (``mem_len`` positions per layer, per batch row).
    """

    def __init__(self, spec: TxlSpec):
        super().__init__()
        self.spec = spec
        self.mem_len, self.clamp_len, self.same_length = spec.mem_len, spec.clamp_len, spec.same_length
        gate_kw = dict(init_keep_prob=spec.init_keep_prob, temperature=spec.temperature)
        d_embed = spec.d_embed or spec.d_model
        cutoff = spec.band_cutoff
        tie_projs = list(spec.tie_projs) + [spec.tie_projs[-1] if spec.tie_projs else True] * len(cutoff)
        inputs, outputs = build_bands(cutoff, spec.d_model, d_embed, spec.div_val, spec.tie_weight,
                                      tie_projs[:len(cutoff)], spec.padding_idx, **gate_kw)
        self.embed_tokens = TxlAdaptiveInput(inputs, cutoff, spec.d_model, spec.padding_idx)
        self.adaptive_softmax = TxlAdaptiveSoftmax(outputs, cutoff, spec.d_model)
        if not spec.untie_r:
            self.r_w_bias = nn.Parameter(torch.empty(spec.n_head, spec.d_head).normal_(0.0, 0.02))
            self.r_r_bias = nn.Parameter(torch.empty(spec.n_head, spec.d_head).normal_(0.0, 0.02))
        else:
            self.r_w_bias = self.r_r_bias = None
        self.layers = nn.ModuleList(
            TransformerXLLayer(spec.n_head, spec.d_model, spec.d_head, spec.d_inner, spec.dropout, spec.dropatt,
                               spec.pre_lnorm, spec.untie_r, spec.layer_norm_eps, **gate_kw)
            for _ in range(spec.n_layer))
        self.pos_emb = PositionalEmbedding(spec.d_model)
        self.drop = nn.Dropout(spec.dropout)
        self.memory = SegmentMemory()

    def train(self, mode: bool = True):
        # a switch between training and evaluation starts a new stream (fairseq calls train()
        # before every update and eval() before every validation step: only a switch resets)
        if mode != self.training:
            self.memory.reset()
        return super().train(mode)

    def forward_segment(self, tokens: torch.Tensor, mems: Optional[List[torch.Tensor]] = None
                        ) -> Tuple[torch.Tensor, Optional[List[torch.Tensor]]]:
        """``tokens`` ``(qlen, B)`` time-major, ``mems`` (one ``(mlen, B, d)`` per layer, or None) ->
        (last hidden states ``(qlen, B, d)``, the next memory or None when ``mem_len`` is 0)."""
        qlen = tokens.size(0)
        word_emb = self.embed_tokens(tokens)
        mlen = 0 if mems is None else mems[0].size(0)
        klen = mlen + qlen
        mask = attention_mask(qlen, mlen, self.mem_len, self.same_length, tokens.device)
        r = self.drop(self.relative_encodings(klen, word_emb))
        h = self.drop(word_emb)
        hids = []
        for i, layer in enumerate(self.layers):
            hids.append(h)
            h = layer(h, r, mask, None if mems is None else mems[i], self.r_w_bias, self.r_r_bias)
        return self.drop(h), update_memory(hids, mems, self.mem_len)

    def initial_memory(self, bsz: int, like: torch.Tensor, zeros: Optional[bool] = None
                       ) -> Optional[List[torch.Tensor]]:
        """The memory a stream starts with: none (Transformer-XL's code), or with ``init_zero_mems``
        (``zeros``, when given, instead) ``mem_len`` zero vectors per layer, what HuggingFace's port
        uses when called without ``mems`` (its ``init_mems``); the first ``mem_len`` positions'
        log-probabilities differ between the two."""
        if not (self.spec.init_zero_mems if zeros is None else zeros) or self.mem_len <= 0:
            return None
        return [like.new_zeros(self.mem_len, bsz, self.spec.d_model) for _ in self.layers]

    def relative_encodings(self, klen: int, like: torch.Tensor) -> torch.Tensor:
        """``(klen, 1, d)``: the sinusoids of distances ``klen-1 .. 0`` (clamped to ``clamp_len``)."""
        # distances and their sinusoids in float32: fp16/bf16 cannot tell 2048 from 2049
        pos = torch.arange(klen - 1, -1, -1.0, device=like.device, dtype=torch.float32)
        if self.clamp_len > 0:
            pos = pos.clamp(max=self.clamp_len)
        return self.pos_emb(pos).to(like.dtype)

    def forward_step(self, tokens: torch.Tensor, state: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Incremental decoding: ``tokens`` ``(qlen, B)`` (usually one position) continuing the positions
        ``state`` has seen -> their last hidden states ``(qlen, B, d)``; ``state`` (a dict, empty at the
        start) is updated in place. Equals :meth:`forward_segment` of one segment per step with the
        memory of ``mem_len`` positions, but holds each layer's projected keys and values (``k.l``,
        ``v.l``: ``(mlen, B, n_head * d_head)``) instead of its inputs, so that a step computes the new
        positions only, and each layer's position keys ``W_r R`` once (``r.l``, by distance)."""
        qlen = tokens.size(0)
        mlen = state["k.0"].size(0) if "k.0" in state else 0
        klen = mlen + qlen
        mask = attention_mask(qlen, mlen, self.mem_len, self.same_length, tokens.device)
        h = self.drop(self.embed_tokens(tokens))
        if "r.0" not in state or state["r.0"].size(0) < klen:
            # distances 0 .. n-1, n at least mem_len + 1: every later step of one token finds them here
            r = self.relative_encodings(max(klen, self.mem_len + 1), h).flip(0)
            for i, layer in enumerate(self.layers):
                state[f"r.{i}"] = layer.dec_attn.position_keys(r)
        for i, layer in enumerate(self.layers):
            cache = {k: state[f"{k}.{i}"] for k in ("k", "v") if f"{k}.{i}" in state}
            h = layer.forward_cached(h, state[f"r.{i}"][:klen].flip(0), mask, cache, self.r_w_bias, self.r_r_bias)
            for k in ("k", "v"):  # the memory: the last mem_len positions
                state[f"{k}.{i}"] = cache[k][-self.mem_len:] if self.mem_len > 0 else cache[k][:0]
        return self.drop(h)

    @staticmethod
    def reorder_state(state: Dict[str, torch.Tensor], new_order: torch.Tensor) -> None:
        """In place: batch row ``b`` of ``state``'s memory becomes its row ``new_order[b]`` (beam search)."""
        for key, value in state.items():
            if key[0] in "kv":
                state[key] = value.index_select(1, new_order)

    def forward(self, src_tokens: torch.Tensor) -> torch.Tensor:
        """``src_tokens`` ``(B, T)`` -> ``(B, T, d_model)``, continuing each row from its memory."""
        like = self.embed_tokens.bands[0].emb
        mems = self.memory.get(src_tokens.size(0), like)
        if mems is None:
            mems = self.initial_memory(src_tokens.size(0), like)
        out, new_mems = self.forward_segment(src_tokens.t(), mems)
        self.memory.set(new_mems)
        return out.transpose(0, 1)

    def layer_matrices(self) -> List[Tuple[str, nn.Module]]:
        return [(f"layers.{i}.{'dec_attn.' if n not in ('fc1', 'fc2') else 'pos_ff.'}{n}", m)
                for i, layer in enumerate(self.layers) for n, m in layer.matrices()]
