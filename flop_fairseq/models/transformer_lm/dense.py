"""fairseq's dense ``transformer_lm`` (adaptive input/softmax) seen from ``flop_transformer_lm``:
which archs convert, old layouts of its weights, where its bands are, and the SVD initialisation
from its weights."""

import re
from typing import List

import torch

from ...core import GatedLowRankLinear
from ...core.svd import factor_shared_embedding, factor_tied_band

DENSE_ARCHS = {
    "transformer_lm": "flop_transformer_lm",
    "transformer_lm_wiki103": "flop_transformer_lm_wiki103",
    "transformer_lm_baevski_wiki103": "flop_transformer_lm_wiki103",
    "transformer_lm_gbw": "flop_transformer_lm_gbw",
    "transformer_lm_baevski_gbw": "flop_transformer_lm_gbw",
}
BAND_PREFIXES = ("decoder.embed_tokens.", "decoder.adaptive_softmax.")
_INPUT_BAND = re.compile(r"^decoder\.embed_tokens\.(embeddings\.\d+\.0\.weight|bands\.\d+\.emb)$")


def vocab_size_from_state(model_state) -> int:
    """Vocabulary size from the adaptive input bands of a dense or FLOP state dict."""
    sizes = [v.shape[0] for k, v in model_state.items() if _INPUT_BAND.match(k)]
    if not sizes:
        raise ValueError("the model has no adaptive input (decoder.embed_tokens.embeddings.*): "
                         "FLOP prunes adaptive input/softmax bands, train with --adaptive-input")
    return int(sum(sizes))


def upgrade_dense_state(cfg_model, model_state) -> None:
    """What fairseq's loader infers from an old state dict's layout, made explicit in ``cfg_model``
    (a mutable mapping) and ``model_state`` (in place), so that a FLOP model built from the config
    has the dense model's structure. fairseq's own ``upgrade_state_dict`` renames the keys of
    0.6.1 to 0.12 (``layer_norms.N``, fused ``in_proj_weight``, ``embed_positions._float_tensor``)
    when the weights are loaded; what it decides from ``decoder.version`` is here: at version 2
    or below (fairseq < 0.7) the decoder had no final layer norm. ``ValueError`` for an adaptive
    softmax saved before fairseq 0.6 (no ``decoder.adaptive_softmax.version``), whose head
    indexing fairseq no longer reads."""
    if any(k.startswith("decoder.adaptive_softmax.") for k in model_state) and \
            "decoder.adaptive_softmax.version" not in model_state:
        raise ValueError("its adaptive softmax was saved by fairseq before 0.6 (no decoder.adaptive_softmax.version), "
                         "a layout fairseq no longer reads")
    version = model_state.get("decoder.version")
    if version is None or float(version.flatten()[0]) <= 2:
        cfg_model["no_decoder_final_norm"] = True
        model_state["decoder.version"] = torch.Tensor([3])


def band_tensors(dense_model) -> List[torch.Tensor]:
    """The dense model's band matrices (embeddings and projections of the adaptive input and
    softmax, shared ones once): what FLOP prunes, and what AGP prunes for comparison. The
    softmax's ``class_proj`` (the head's cluster logits) is pruned by neither."""
    tensors = []
    for name, p in dense_model.named_parameters():
        if not name.startswith(BAND_PREFIXES) or p.dim() != 2 or "class_proj" in name:
            continue
        if name == "decoder.adaptive_softmax.head.weight":
            # an untied head scores the c_0 head words and, in its last rows, the clusters (the
            # cluster rows are class_proj's in the FLOP model): the band is the word rows, a view
            p = p[: dense_model.decoder.adaptive_softmax.cutoff[0]]
        tensors.append(p)
    return tensors


def _copy(param: torch.Tensor, value: torch.Tensor) -> None:
    param.data.copy_(value.to(param.dtype))


@torch.no_grad()
def init_bands(flop_model, dense_model, tied: bool) -> None:
    """Fills every FLOP band with the SVD factors of the dense band it replaces."""
    f_in = flop_model.decoder.embed_tokens.bands
    f_out = flop_model.decoder.adaptive_softmax.bands
    d_in = dense_model.decoder.embed_tokens
    d_sm = dense_model.decoder.adaptive_softmax
    if tied:
        for i, band in enumerate(f_in):
            emb, proj = d_in.weights_for_band(i)
            if i == 0:  # head: output scores E_0 h with no projection
                a, b_in, b_out = factor_shared_embedding(emb, proj, None, band.rank, identity_output=True)
            elif band.tie_proj:
                a, b_in = factor_tied_band(emb, proj, band.rank)
                b_out = None
            else:  # tail with its own softmax projection Q (d_i x d)
                q = d_sm.tail[i - 1][0].weight
                a, b_in, b_out = factor_shared_embedding(emb, proj, q, band.rank)
            _copy(band.emb, a)
            _copy(band.in_proj, b_in)
            if b_out is not None:
                _copy(band.out_proj, b_out)
        _copy(flop_model.decoder.adaptive_softmax.class_proj.weight, d_sm.head.class_proj.weight)
        return
    for i, band in enumerate(f_in):
        emb, proj = d_in.weights_for_band(i)
        a, b_in = factor_tied_band(emb, proj, band.rank)
        _copy(band.emb, a)
        _copy(band.in_proj, b_in)
    head = d_sm.head.weight
    v0 = f_out[0].num_words
    a, _, b_out = factor_shared_embedding(head[:v0], None, None, f_out[0].rank, identity_output=True)
    _copy(f_out[0].emb, a)
    _copy(f_out[0].out_proj, b_out)
    _copy(flop_model.decoder.adaptive_softmax.class_proj.weight, head[v0:])
    for i in range(1, len(f_out)):
        w1, w2 = d_sm.tail[i - 1][0].weight, d_sm.tail[i - 1][2].weight  # (d_i, d), (V_i, d_i)
        a, b_out = factor_tied_band(w2, w1.t(), f_out[i].rank)
        _copy(f_out[i].emb, a)
        _copy(f_out[i].out_proj, b_out)


@torch.no_grad()
def init_from_dense(flop_model, dense_model, tied: bool) -> dict:
    """Bands from their SVDs, layer matrices (with ``--flop-decoder-layers``) from theirs, every
    other weight copied. Returns ``{"max_truncation_error": e}``: the largest relative Frobenius
    error of a layer matrix's truncation (0 at full rank)."""
    init_bands(flop_model, dense_model, tied)
    dense_modules = dict(dense_model.named_modules())
    worst = 0.0
    for name, module in flop_model.named_modules():
        if isinstance(module, GatedLowRankLinear):
            ref = dense_modules[name]
            worst = max(worst, module.init_from_dense(ref.weight, ref.bias))
    dense_state = dense_model.state_dict()
    for key, value in flop_model.state_dict().items():
        if key in dense_state and not key.startswith(BAND_PREFIXES):
            if dense_state[key].shape != value.shape:
                raise ValueError(f"parameter {key}: dense shape {tuple(dense_state[key].shape)} does not fit "
                                 f"{tuple(value.shape)}")
            value.copy_(dense_state[key])
    return {"max_truncation_error": worst}
