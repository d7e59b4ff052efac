"""Parameter counts the users'-regime benchmark needs beyond the counter's: the decoder layers'
attention/FFN matrices, the set ``--flop-decoder-layers`` adds to the bands, so that a
whole-model budget ("all prunable parameters") is counted the same way for every model --
dense, AGP (non-zero weights), gated or compact FLOP, SVD, small."""

import torch


@torch.no_grad()
def layer_matrix_counts(model) -> dict:
    """``layer_matrix_params`` (the dense ``in x out`` of every attention/FFN matrix: what a
    whole-model budget adds), ``remaining_layer_matrix_params`` (what each keeps in its compact
    form: the gated module's compact cost, a low-rank pair's ``k (in + out)``, a plain matrix's
    ``in x out``) and ``nonzero_layer_matrix_params`` (the same, but a plain matrix counts its
    non-zero weights: AGP's count). Biases are pruned by no method and counted by neither."""
    from ..core.linear import GatedLowRankLinear, LowRankLinear
    from ..models.transformer_lm.model import LAYER_MATRICES

    dense = remaining = nonzero = 0
    for layer in model.decoder.layers:
        for path in LAYER_MATRICES:
            m = layer.get_submodule(path)
            dense += m.in_features * m.out_features
            if isinstance(m, GatedLowRankLinear):
                kept = int(m.remaining_prunable_params())
                remaining, nonzero = remaining + kept, nonzero + kept
            elif isinstance(m, LowRankLinear):
                kept = m.rank * (m.in_features + m.out_features)
                remaining, nonzero = remaining + kept, nonzero + kept
            else:
                remaining += m.weight.numel()
                nonzero += int(torch.count_nonzero(m.weight))
    return {"layer_matrix_params": dense, "remaining_layer_matrix_params": remaining,
            "nonzero_layer_matrix_params": nonzero}


def model_counts(path: str) -> dict:
    """The counter's counts of a checkpoint (:func:`checkpoint_counts`) plus :func:`layer_matrix_counts`."""
    from ..tools.checkpoint import load_any_model
    from ..tools.checkpoint_counts import checkpoint_counts

    out = checkpoint_counts(path)
    out.update(layer_matrix_counts(load_any_model(path)[1]))
    return out
