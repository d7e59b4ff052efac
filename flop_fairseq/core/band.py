"""One frequency band of an adaptive input / adaptive softmax as a low-rank product:
:class:`LowRankBand` (compact, no gates) and :class:`GatedLowRankBand` (one gate per rank
component, what FLOP trains)."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .gated_module import GatedModule
from .hard_concrete import HardConcrete
from .layout import set_decoding_layout


class LowRankBand(nn.Module):
    """Band ``i`` of an adaptive embedding: ``|V_i|`` words, rank ``r``, model dimension ``d``.

    Parameters: ``emb`` (``A``, shape ``(|V_i|, r)``), ``in_proj`` (``B_in``,
    ``(d, r)``, present when the band embeds inputs) and ``out_proj`` (``B_out``,
    ``(d, r)``, present when it scores outputs). With ``tie_proj`` the output uses
    ``in_proj`` itself, so input and output share every factor.

    - input: ``embed(w) = B_in diag(z) A[w]^T``, shape ``(..., d)``;
    - output: ``logits(h) = A diag(z) B_out^T h``, ``h`` of shape ``(N, d)``, result ``(N, |V_i|)``.

    Here ``z`` is 1 (the compact form); :class:`GatedLowRankBand` adds the gates. A band of rank 0
    embeds every word to 0 and gives every word of the band the logit 0.
    """

    def __init__(
        self,
        num_words: int,
        rank: int,
        dim: int,
        has_input: bool = True,
        has_output: bool = True,
        tie_proj: bool = True,
        padding_idx: Optional[int] = None,
        dense_count: Optional[int] = None,
        output_dim: Optional[int] = None,
        full_rank: Optional[int] = None,
    ):
        super().__init__()
        if not (has_input or has_output):
            raise ValueError("a band must embed inputs, score outputs, or both")
        self.num_words, self.dim, self.padding_idx = num_words, dim, padding_idx
        self.output_dim = dim if output_dim is None else output_dim
        self.tie_proj = bool(tie_proj and has_input and has_output)
        if self.tie_proj and self.output_dim != dim:
            raise ValueError(f"tied projections need output_dim == dim, got {self.output_dim} != {dim}")
        self.emb = nn.Parameter(torch.empty(num_words, rank))
        self.in_proj = nn.Parameter(torch.empty(dim, rank)) if has_input else None
        self.out_proj = (
            nn.Parameter(torch.empty(self.output_dim, rank)) if has_output and not self.tie_proj else None
        )
        self.has_output = has_output
        # counts, not weights: kept on the CPU even when the model is built on the meta device
        self.register_buffer("full_rank", torch.tensor(rank if full_rank is None else full_rank, device="cpu"))
        self.register_buffer("dense_count", torch.tensor(-1 if dense_count is None else dense_count, device="cpu"))
        nn.init.normal_(self.emb, std=max(rank, 1) ** -0.5)
        for p in (self.in_proj, self.out_proj):
            if p is not None:
                nn.init.xavier_uniform_(p)
        if padding_idx is not None:
            with torch.no_grad():
                self.emb[padding_idx].zero_()

    @property
    def output_proj(self) -> Optional[torch.Tensor]:
        return self.in_proj if self.tie_proj else self.out_proj

    def gates_for_one_use(self):
        """``(z, active)`` for one use of the band: ``z`` the gate values, shape ``(r,)`` (None for
        a compact band: all 1), and ``active`` the indices of the components to compute (None: all)."""
        return None, None

    def embed(self, words: torch.Tensor) -> torch.Tensor:
        """``words`` (any shape, indices into the band) -> embeddings ``(*words.shape, d)``."""
        z, active = self.gates_for_one_use()
        codes = F.embedding(words, self.emb, self.padding_idx)
        proj = self.in_proj
        if active is not None:
            codes, proj, z = codes.index_select(-1, active), proj.index_select(1, active), z.index_select(0, active)
        return F.linear(codes, proj if z is None else proj * z)

    def code_and_words(self, h: torch.Tensor):
        """``h`` ``(N, d)`` -> ``(diag(z) B_out^T h, A)``: the band's hidden code ``(N, k)`` and the
        word factor ``A`` ``(|V_i|, k)`` that scores it, over the ``k`` computed components."""
        z, active = self.gates_for_one_use()
        proj, words = self.output_proj, self.emb
        if active is not None:
            proj, words, z = proj.index_select(1, active), words.index_select(1, active), z.index_select(0, active)
        return F.linear(h, (proj if z is None else proj * z).t()), words

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` ``(N, d)`` -> logits over the band's words ``(N, |V_i|)``."""
        code, words = self.code_and_words(h)
        return F.linear(code, words)

    def train(self, mode: bool = True):
        super().train(mode)
        set_decoding_layout(self.decoding_matrices(), decoding=not mode)
        return self

    def decoding_matrices(self):
        """The matrices stored transposed in eval mode (:mod:`.layout`): ``A`` is read as ``|V_i|``
        rows of ``k`` to score the band's words, each projection as ``d`` rows of ``k``."""
        return [self.emb, self.in_proj, self.out_proj]

    @property
    def rank(self) -> int:
        return self.emb.shape[1]

    def params_per_component(self) -> int:
        """``|V_i|`` plus the length of each distinct projection factor (a tied one counts once)."""
        return (
            self.num_words
            + (0 if self.in_proj is None else self.dim)
            + (0 if self.out_proj is None else self.output_dim)
        )

    def dense_params(self) -> int:
        """The dense model's count for this band (given at construction), else this form at full rank."""
        if int(self.dense_count) >= 0:
            return int(self.dense_count)
        return int(self.full_rank) * self.params_per_component()

    def extra_repr(self) -> str:
        return (
            f"num_words={self.num_words}, rank={self.rank}, dim={self.dim}, output_dim={self.output_dim}, "
            f"input={self.in_proj is not None}, output={self.has_output}, tie_proj={self.tie_proj}"
        )


class GatedLowRankBand(LowRankBand, GatedModule):
    """A :class:`LowRankBand` with one :class:`HardConcrete` gate per rank component.

    One gate vector serves the input and the output use (each use draws its own sample
    in training; eval uses the one deterministic mask), so a band shared by the
    adaptive input and the adaptive softmax is pruned as one, and its parameters
    count once (``|V_i| + d`` per component when tied, ``|V_i| + 2d`` when the
    output has its own projection).
    """

    def __init__(self, num_words: int, rank: int, dim: int, *, init_keep_prob: Optional[float] = None,
                 temperature: float = 2.0 / 3.0, gate_lr_scale: float = 1.0, **band_options):
        """``band_options``: those of :class:`LowRankBand` (``has_input``, ``tie_proj``, ...)."""
        super().__init__(num_words, rank, dim, **band_options)
        self.gate = HardConcrete(rank, init_keep_prob, temperature, lr_scale=gate_lr_scale)

    def gates_for_one_use(self):
        z = self.gate()
        return z, self.active_components(z)

    def decoding_matrices(self):
        return []  # in eval mode the compact view computes (GatedModule.eval_view)

    def embed(self, words: torch.Tensor) -> torch.Tensor:
        if self.uses_eval_view():
            return self.eval_view().embed(words)
        return super().embed(words)

    def code_and_words(self, h: torch.Tensor):
        if self.uses_eval_view():
            return self.eval_view().code_and_words(h)
        return super().code_and_words(h)

    @torch.no_grad()
    def compact(self) -> LowRankBand:
        """A :class:`LowRankBand` of the kept rank with the eval mask folded into ``emb``."""
        z = self.gate.deterministic()
        keep = torch.nonzero(z, as_tuple=True)[0]
        out = LowRankBand(
            self.num_words, len(keep), self.dim,
            has_input=self.in_proj is not None, has_output=self.has_output,
            tie_proj=self.tie_proj, padding_idx=self.padding_idx, dense_count=self.dense_params(),
            output_dim=self.output_dim, full_rank=self.rank,
        ).to(self.emb.device, self.emb.dtype)
        out.emb.copy_(self.emb[:, keep] * z[keep])
        for name in ("in_proj", "out_proj"):
            if getattr(self, name) is not None:
                getattr(out, name).copy_(getattr(self, name)[:, keep])
        return out
