"""Transformer-XL's adaptive bands as FLOP bands.

Band ``i`` of Transformer-XL's adaptive embedding is ``E_i`` (``|V_i| x d_i``, ``d_i = d_embed /
div_val^i``) with an input projection ``P_i`` (``d x d_i``) and an output projection ``Q_i``; FLOP
holds ``A`` (``|V_i| x d_i``) and ``B_in``/``B_out`` (``d x d_i``) with one gate vector (see
:func:`factor_band`). With ``div_val = 1`` and ``d_embed = d_model`` Transformer-XL has no
projections at all (the WT103 base model): the band is ``E_i`` alone, whose factorized form at full
rank costs ``d_i^2`` more than ``E_i``. :class:`TxlGatedBand` then counts, and compacts to, whichever
of the two is smaller (as :class:`GatedLowRankLinear` does), the dense form being a
:class:`ProjectionFreeBand`.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ...core import GatedLowRankBand, LowRankBand
from ...core.gated_module import cheaper_form_cost
from ...core.svd import _pad, svd_of_product


class ProjectionFreeBand(LowRankBand):
    """The dense band ``E`` (``|V_i| x d``) with no projection: ``embed(w) = E[w]``, ``logits(h) = E h``.

    A :class:`LowRankBand` of rank ``d`` whose projections are the identity, held as a buffer that
    is not saved: it costs ``|V_i|`` parameters per component."""

    def __init__(self, num_words: int, dim: int, has_input: bool = True, has_output: bool = True,
                 padding_idx: Optional[int] = None, dense_count: Optional[int] = None):
        super().__init__(num_words, dim, dim, has_input, has_output, tie_proj=True, padding_idx=padding_idx,
                         dense_count=dense_count)
        for name in ("in_proj", "out_proj"):
            if getattr(self, name) is not None:
                delattr(self, name)
                self.register_buffer(name, torch.eye(dim), persistent=False)

    def params_per_component(self) -> int:
        return self.num_words

    def embed(self, words: torch.Tensor) -> torch.Tensor:
        return F.embedding(words, self.emb, self.padding_idx)  # the identity projection, not multiplied

    def code_and_words(self, h: torch.Tensor):
        return h, self.emb

    def decoding_matrices(self):
        return [self.emb]


class TxlGatedBand(GatedLowRankBand):
    """A :class:`GatedLowRankBand`; with ``projection_free`` (the dense band had no projection) its
    cost is ``min(k (|V_i| + d), |V_i| d)`` for ``k`` kept components, and :meth:`compact` returns
    a :class:`ProjectionFreeBand` where that is the smaller form."""

    def __init__(self, *args, projection_free: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.projection_free = projection_free

    def compact_cost(self, kept):
        factorized = kept * self.params_per_component()
        return cheaper_form_cost(factorized, self.dense_params()) if self.projection_free else factorized

    @torch.no_grad()
    def compact(self) -> LowRankBand:
        z = self.gate.deterministic()
        keep = torch.nonzero(z, as_tuple=True)[0]
        if not self.projection_free or len(keep) * self.params_per_component() < self.dense_params():
            return super().compact()
        out = ProjectionFreeBand(self.num_words, self.dim, self.in_proj is not None, self.has_output,
                                 self.padding_idx, self.dense_params()).to(self.emb.device, self.emb.dtype)
        proj = self.in_proj if self.in_proj is not None else self.out_proj
        out.emb.copy_((self.emb[:, keep] * z[keep]) @ proj[:, keep].t())
        return out


def band_dims(d_embed: int, div_val: int, n_bands: int) -> List[int]:
    return [d_embed // div_val ** i for i in range(n_bands)]


def build_bands(cutoff: List[int], d_model: int, d_embed: int, div_val: int, tie_weight: bool,
                tie_projs: List[bool], padding_idx: int, **gate_kw) -> Tuple[list, list]:
    """``(input_bands, output_bands)`` for the completed ``cutoff`` (the same objects when ``tie_weight``).

    ``dense_count`` of each band is the dense Transformer-XL's count: ``|V_i| d_i`` plus each projection
    it has (with ``div_val = 1`` and a projection, the one shared input projection counts in band 0)."""
    n = len(cutoff)
    dims = band_dims(d_embed, div_val, n)
    sizes = [hi - lo for lo, hi in zip([0] + cutoff[:-1], cutoff)]
    has_proj = div_val > 1 or d_model != d_embed
    free = not has_proj

    def in_proj_count(i):
        return d_model * dims[i] if has_proj and (div_val > 1 or i == 0) else 0

    def out_proj_count(i):
        return d_model * dims[i] if has_proj else 0

    def band(i, has_input, has_output, tie_proj, dense):
        return TxlGatedBand(sizes[i], dims[i], d_model, has_input=has_input, has_output=has_output,
                            tie_proj=tie_proj, padding_idx=padding_idx if i == 0 and has_input else None,
                            dense_count=dense, projection_free=free, **gate_kw)

    if tie_weight:
        bands = []
        for i in range(n):
            tied = free or tie_projs[i]
            dense = sizes[i] * dims[i] + in_proj_count(i) + (0 if tied else out_proj_count(i))
            bands.append(band(i, True, True, tied, dense))
        return bands, bands
    inputs = [band(i, True, False, True, sizes[i] * dims[i] + in_proj_count(i)) for i in range(n)]
    # an output projection tied to an input one (tie_projs) is the input band's: counted there
    outputs = [band(i, False, True, True, sizes[i] * dims[i] + (0 if tie_projs[i] else out_proj_count(i)))
               for i in range(n)]
    return inputs, outputs


@torch.no_grad()
def factor_band(emb: torch.Tensor, in_proj: Optional[torch.Tensor], out_proj: Optional[torch.Tensor],
                rank: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``E`` (``|V_i| x d_i``), ``P`` (input projection ``d x d_i``, None for the identity), ``Q``
    (output projection) -> ``A``, ``B_in``, ``B_out`` of ``rank`` columns with
    ``B_in A[w]^T = P E[w]^T`` and ``A B_out^T = E Q^T``: from ``E = U S V^T``,
    ``A = U S^1/2``, ``B_in = P V S^1/2``, ``B_out = Q V S^1/2`` (components by singular value)."""
    u, s, v = svd_of_product(emb)
    root = s.sqrt()
    vs = v * root
    a = _pad(u * root, rank)
    b_in = _pad(vs if in_proj is None else in_proj.double() @ vs, rank)
    b_out = _pad(vs if out_proj is None else out_proj.double() @ vs, rank)
    return a, b_in, b_out
