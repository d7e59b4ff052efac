"""Gated FLOP checkpoint -> physically smaller checkpoint (``flop-compact``)."""

import copy
import os

from ..core import band_rows, compact_model, count_params, gated_modules, layer_rows
from .checkpoint import CheckpointError, load_flop_model, save_checkpoint_atomic
from .equivalence import max_logprob_difference


def compact(in_path: str, out_path: str, tolerance: float = 1e-4) -> dict:
    """Writes the compact checkpoint after checking it computes the gated model's eval-mode
    function; returns the counts before and after, per band and in total."""
    state, model = load_flop_model(in_path)
    if not gated_modules(model):
        raise CheckpointError(f"{in_path}: already compact (no gates left); nothing to do")
    before, bands, layers = count_params(model), band_rows(model), layer_rows(model)
    gated = copy.deepcopy(model)
    compact_model(model)
    diff = max_logprob_difference(gated, model, len(model.decoder.dictionary))
    if not diff <= tolerance:
        raise CheckpointError(f"compaction changed the function (max log-prob difference {diff:.2e}); "
                              "please report this checkpoint")
    after = count_params(model)
    if after.total_params != before.total_params:
        raise CheckpointError(f"compaction left {after.total_params:,} parameters, not the {before.total_params:,} "
                              "counted; please report this checkpoint")
    state["model"] = model.state_dict()
    state["criterion"] = None
    state.pop("last_optimizer_state", None)
    size_before = os.path.getsize(in_path)
    size_after = save_checkpoint_atomic(state, out_path, in_path)
    return {"bands": bands, "layers": layers, "before": before, "after": after, "size_before": size_before,
            "size_after": size_after, "max_logprob_diff": diff}
