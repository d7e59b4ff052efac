"""Loading a compact checkpoint into a freshly built (gated) network: each band becomes the form
the checkpoint holds. The core's ``match_structure`` rebuilds layers and factorized bands; a band
compacted to its dense, projection-free form (:class:`ProjectionFreeBand`) is rebuilt here."""

from typing import Mapping

import torch

from ...core import GatedLowRankBand, LowRankBand
from .bands import ProjectionFreeBand


def _form(band: LowRankBand, state: Mapping[str, torch.Tensor], prefix: str):
    """The module ``state`` holds under ``prefix`` for ``band``, or None if ``band`` already fits."""
    emb = state.get(prefix + "emb")
    if emb is None or f"{prefix}gate.log_alpha_raw" in state:
        return None  # gated checkpoints hold full-rank gated bands, as built
    if isinstance(band, LowRankBand) and not isinstance(band, GatedLowRankBand) and band.rank == emb.shape[1]:
        return None
    has_input, has_output = band.in_proj is not None, band.has_output
    if prefix + "in_proj" not in state and prefix + "out_proj" not in state:
        new = ProjectionFreeBand(band.num_words, band.dim, has_input, has_output, band.padding_idx)
    else:
        new = LowRankBand(band.num_words, emb.shape[1], band.dim, has_input=has_input, has_output=has_output,
                          tie_proj=band.tie_proj, padding_idx=band.padding_idx, output_dim=band.output_dim)
    return new.to(band.emb.device, band.emb.dtype)  # where the model already is (GPU, fp16)


@torch.no_grad()
def restructure_bands(net, state: Mapping[str, torch.Tensor], prefix: str) -> None:
    """In place on ``net`` (a :class:`TransformerXLNetwork`): every band takes the form under
    ``{prefix}embed_tokens.bands.i`` / ``{prefix}adaptive_softmax.bands.i``; a band shared by
    input and softmax stays shared."""
    done = {}
    for owner in ("embed_tokens", "adaptive_softmax"):
        bands = getattr(net, owner).bands
        for i, band in enumerate(bands):
            if id(band) not in done:
                done[id(band)] = _form(band, state, f"{prefix}{owner}.bands.{i}.") or band
            bands[i] = done[id(band)]
