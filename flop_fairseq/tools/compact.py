"""Gated FLOP checkpoint -> physically smaller checkpoint (``flop-compact``)."""

import copy
import os
from typing import Optional

from ..core import allocate, apply_allocation, band_rows, compact_model, count_params, gated_modules, layer_rows
from ..core.budget import LIVE_VALUE
from .checkpoint import CheckpointError, load_flop_model, save_checkpoint_atomic
from .equivalence import max_logprob_difference


def budget_allocation(model, path: str, target_params: Optional[int] = None,
                      target_sparsity: Optional[float] = None, min_value: float = LIVE_VALUE):
    """The :func:`~flop_fairseq.core.allocate` allocation of a gated model for the target, or None
    without one; a one-line :class:`CheckpointError` for a compact model or a target out of range."""
    if target_params is None and target_sparsity is None:
        return None
    if not gated_modules(model):
        raise CheckpointError(f"{path}: already compact (no gates left); a parameter budget needs a gated "
                              "FLOP checkpoint")
    try:
        return allocate(model, target_params, target_sparsity, min_value)
    except ValueError as e:
        raise CheckpointError(str(e))


def compact(in_path: str, out_path: str, tolerance: float = 1e-4, target_params: Optional[int] = None,
            target_sparsity: Optional[float] = None, min_value: float = LIVE_VALUE) -> dict:
    """Writes the compact checkpoint after checking it computes the gated model's eval-mode
    function; returns the counts before and after, per band and in total.

    With a target (``target_params`` remaining prunable parameters or ``target_sparsity``) the
    eval mask is first replaced by the exact-budget allocation (:mod:`flop_fairseq.core.budget`);
    ``budget`` then holds the allocation and ``budget_logprob_diff`` how much that changed the
    eval function (max log-prob difference vs the mask as trained), and "before" is the adjusted
    gated model. ``min_value``: the allocation keeps only components of at least this eval value
    (:func:`~flop_fairseq.core.allocate`)."""
    state, model = load_flop_model(in_path)
    if not gated_modules(model):
        raise CheckpointError(f"{in_path}: already compact (no gates left); nothing to do")
    num_words = len(model.decoder.dictionary)
    allocation = budget_allocation(model, in_path, target_params, target_sparsity, min_value)
    budget_diff = None
    if allocation is not None:
        trained = model
        model = copy.deepcopy(trained)
        apply_allocation(model, allocation)
        budget_diff = max_logprob_difference(trained, model, num_words)
        del trained  # at most two copies of the model at a time, as without a target
    before, bands, layers = count_params(model), band_rows(model), layer_rows(model)
    gated = copy.deepcopy(model)
    compact_model(model)
    diff = max_logprob_difference(gated, model, num_words)
    if not diff <= tolerance:
        raise CheckpointError(f"compaction changed the function (max log-prob difference {diff:.2e}); "
                              "please report this checkpoint")
    after = count_params(model)
    if after.total_params != before.total_params:
        raise CheckpointError(f"compaction left {after.total_params:,} parameters, not the {before.total_params:,} "
                              "counted; please report this checkpoint")
    if allocation is not None and after.remaining_prunable_params != allocation.remaining_prunable_params:
        raise CheckpointError(f"compaction left {after.remaining_prunable_params:,} prunable parameters, not the "
                              f"{allocation.remaining_prunable_params:,} allocated; please report this checkpoint")
    state["model"] = model.state_dict()
    state["criterion"] = None
    state.pop("last_optimizer_state", None)
    size_before = os.path.getsize(in_path)
    size_after = save_checkpoint_atomic(state, out_path, in_path)
    return {"bands": bands, "layers": layers, "before": before, "after": after, "size_before": size_before,
            "size_after": size_after, "max_logprob_diff": diff, "budget": allocation,
            "budget_logprob_diff": budget_diff}
