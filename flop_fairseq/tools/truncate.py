"""Truncation by losses across groups (``flop-truncate``): the cheapest rank components of all groups
go first, where a component's price is its relative loss per parameter it costs (the global rule of
SVD-LLM v2 and Dobi-SVD).

Input: a checkpoint from ``flop-convert --calibration``, which stores each gated group's losses
``l_i = w s_i^2 / sum s^2`` of its whitened factorization (components largest first), ``w`` the
group's share (a band: the fraction of the calibration tokens that are its words, so that a band
of rare words, whose relative losses also sum to 1, does not outbid the head band; a layer
matrix: 1). Each gate
gets ``log_alpha = log(l_i / c_m)`` (``c_m`` the group's parameters per component), then the exact
global budget allocation (:func:`~flop_fairseq.core.budget.allocate`, which keeps components by
decreasing ``log_alpha`` while their marginal cost fits) and its pinning, with every kept value 1:
the eval mask keeps a prefix of each group's components, the most expensive to lose first, and the
whole model stays within the budget. (The per-group shares rule is the benchmark's ``svd-truncate``,
which applied to the same conversion truncates in the whitened basis.)"""

import math

import torch

from ..core import allocate, apply_allocation, gated_modules, sparsity_stats
from .calibration import LOSSES_KEY
from .checkpoint import CheckpointError, load_flop_model, save_checkpoint_atomic


@torch.no_grad()
def rank_by_losses(model, losses: dict) -> None:
    """Sets every gate's ``log_alpha`` to ``log(l_i / c_m)`` from ``losses`` (group name -> ``(rank,)``)."""
    for name, m in gated_modules(model):
        if name not in losses or losses[name].numel() != m.rank:
            raise CheckpointError(f"{name}: no component losses of rank {m.rank} in the checkpoint: convert "
                                  "it again with flop-convert --calibration")
        priority = (losses[name].double().clamp_min(1e-30) / m.params_per_component()).log()
        # strictly decreasing within a group, so that equal (zero) losses keep the factorization's order
        priority = priority - torch.arange(m.rank, dtype=torch.float64) * 1e-9
        gate = m.gate
        gate.log_alpha_raw.copy_(((priority.to(gate.log_alpha_raw) - gate.log_alpha_offset) / gate.lr_scale))


def truncate_by_losses(input_path: str, output_path: str, sparsity: float) -> dict:
    """Writes ``input_path``'s model truncated to ``(1 - sparsity)`` of its prunable parameters by the
    global rule; returns the kept rank per group and the counts."""
    state, model = load_flop_model(input_path)
    losses = state.get(LOSSES_KEY)
    if not losses:
        raise CheckpointError(f"{input_path}: no component losses: convert the dense model with "
                              "flop-convert --calibration DATA-BIN first")
    if not 0.0 <= sparsity < 1.0 or math.isnan(sparsity):
        raise CheckpointError(f"--sparsity must be in [0, 1), got {sparsity}")
    rank_by_losses(model, losses)
    # log_alpha holds the losses' order here, not liveness: every component may be kept
    allocation = allocate(model, target_sparsity=sparsity, min_value=0.0)
    for g in allocation.groups:
        g.values = torch.ones_like(g.values)  # truncation keeps components whole
    apply_allocation(model, allocation)
    stats = sparsity_stats(model)
    state["model"] = model.state_dict()
    save_checkpoint_atomic(state, output_path, input_path)
    return {"target_sparsity": sparsity, "sparsity": stats.sparsity,
            "kept_params": stats.remaining_prunable_params, "prunable_params": stats.prunable_params,
            "ranks": {g.name: g.kept for g in allocation.groups},
            "full_ranks": {g.name: g.rank for g in allocation.groups}}
