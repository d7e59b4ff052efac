"""The structured baselines FLOP is compared with: SVD truncation and small models from scratch.

    python -m benchmarks.baselines.svd truncate IN OUT --sparsity S                        > alloc.json
    python -m benchmarks.baselines.svd scratch-init --data BIN --sparsity S --seed N --output OUT \
        -- FAIRSEQ-TRAIN ARGS                                                               > alloc.json

Both keep ``budget_ranks`` components per band. ``flop-convert`` initialises every band from
the SVD of the dense band with its components ordered by singular value, largest first, so
truncating to rank ``r`` is opening the gates of the first ``r`` components and closing the
others, then ``flop-compact``. The small model has the same ranks, freshly initialised.
A whole model (``--flop-decoder-layers``: attention/FFN matrices factorized too, also from
their SVDs) keeps ``matrix_ranks`` components per matrix as well. (AGP, the unstructured
baseline, is :mod:`.agp`.)
"""

import argparse
import json
from typing import List, Sequence

import torch

# log_alpha of a gate set open / closed: the hard-concrete eval mask is then exactly 1 / 0
OPEN, CLOSED = 30.0, -30.0


def budget_ranks(bands: Sequence, sparsity: float) -> List[int]:
    """Per-band ranks for a budget of ``(1 - sparsity)`` of the dense band parameters.

    Every band keeps ``round((1 - s) * dense_i / cost_i)`` components (its own share of the
    budget, the analogue of scaling every band dim by one factor; ``cost_i`` is the band's
    parameters per component); then the head band's rank is lowered or raised by whole
    components so the total is as large as fits. ``bands`` need ``dense_params()``,
    ``params_per_component()`` and ``rank`` (the full rank). (Not a global greedy choice by
    ``sigma^2 / cost``: the band maps' singular values are not on a common scale, and at the
    10% budget that choice gives the most frequent words rank 0.)
    """
    dense = [b.dense_params() for b in bands]
    costs = [b.params_per_component() for b in bands]
    full = [b.rank for b in bands]
    budget = (1.0 - sparsity) * sum(dense)
    ranks = [min(r, int(round((1.0 - sparsity) * d / c))) for r, d, c in zip(full, dense, costs)]

    def used():
        return sum(r * c for r, c in zip(ranks, costs))

    while used() > budget and ranks[0] > 0:
        ranks[0] -= 1
    while ranks[0] < full[0] and used() + costs[0] <= budget:
        ranks[0] += 1
    if used() > budget:
        raise SystemExit(f"benchmark: no allocation of ranks fits the budget {budget:.0f}")
    return ranks


def matrix_ranks(matrices: Sequence, sparsity: float) -> List[int]:
    """Per layer matrix, the largest rank whose factors cost at most ``(1 - sparsity)`` of the
    dense matrix (``k (in + out) <= (1 - s) in out``): every matrix keeps the same fraction of
    its parameters, the layers' analogue of ``budget_ranks``' per-band shares. The rest of the
    budget (under one component per matrix) is left unused rather than moved between groups:
    which group deserves it is what a pruning method decides, not this baseline."""
    if sparsity <= 0.0:  # the dense matrix itself fits (a factorized form costs more at high rank)
        return [m.rank for m in matrices]
    return [min(m.rank, int((1.0 - sparsity) * m.dense_params() // m.params_per_component())) for m in matrices]


@torch.no_grad()
def keep_leading(bands: Sequence, ranks: Sequence[int]) -> None:
    """Opens the gates of the first ``ranks[i]`` components of band ``i``, closes the others."""
    for band, r in zip(bands, ranks):
        gate = band.gate
        la = torch.full((band.rank,), CLOSED)
        la[:r] = OPEN
        gate.log_alpha_raw.copy_((la - gate.log_alpha_offset) / gate.lr_scale)


def _allocation(sparsity, stats, ranks, full, layer_ranks=(), layer_full=()) -> dict:
    out = {"target_sparsity": sparsity, "sparsity": stats.sparsity, "ranks": ranks, "full_ranks": full,
           "kept_params": stats.remaining_prunable_params, "prunable_params": stats.prunable_params}
    if layer_ranks:
        out.update(layer_ranks=list(layer_ranks), layer_full_ranks=list(layer_full))
    return out


def _truncate_matrices(model, sparsity: float) -> tuple:
    """``(kept ranks, full ranks)`` of the layer matrices of a whole (``--flop-decoder-layers``)
    model, their gates set to keep the ``matrix_ranks`` leading components; ``((), ())`` for a
    bands-only model."""
    matrices = [m for _, m in model.flop_layer_matrices()]
    if not matrices:
        return (), ()
    ranks = matrix_ranks(matrices, sparsity)
    keep_leading(matrices, ranks)
    return ranks, [m.rank for m in matrices]


def svd_truncate(input_path: str, output_path: str, sparsity: float) -> dict:
    """Keeps the ``budget_ranks`` top singular components of every band of a converted (gated)
    checkpoint (and ``matrix_ranks`` of every layer matrix). Returns the allocation."""
    from flop_fairseq.core import sparsity_stats
    from flop_fairseq.tools.checkpoint import load_flop_model, save_checkpoint_atomic

    state, model = load_flop_model(input_path)
    bands = [slot.module for slot in model.flop_bands()]
    ranks = budget_ranks(bands, sparsity)
    keep_leading(bands, ranks)
    layer_ranks, layer_full = _truncate_matrices(model, sparsity)
    stats = sparsity_stats(model)
    state["model"] = model.state_dict()
    save_checkpoint_atomic(state, output_path, input_path)
    return _allocation(sparsity, stats, ranks, [b.rank for b in bands], layer_ranks, layer_full)


def _fresh_checkpoint(cfg, model) -> dict:
    """A checkpoint fairseq-train's ``--finetune-from-model`` accepts, at update 0."""
    from omegaconf import OmegaConf

    return {
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "args": None,
        "model": model.state_dict(), "criterion": None, "last_optimizer_state": None,
        "optimizer_history": [{"criterion_name": "AdaptiveLoss", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "extra_state": {"train_iterator": {"epoch": 1, "version": 2, "iterations_in_epoch": 0, "shuffle": True},
                        "previous_training_time": 0.0},
    }


def scratch_init(data: str, sparsity: float, seed: int, output_path: str, fairseq_args: List[str]) -> dict:
    """A randomly initialised compact FLOP model (the fairseq-train arguments ``fairseq_args``
    describe it) with the ``budget_ranks`` band ranks. Returns the allocation."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from flop_fairseq.core import compact_model, sparsity_stats
    from flop_fairseq.tools.checkpoint import save_checkpoint_atomic

    parser = options.get_training_parser()
    targs = options.parse_args_and_arch(parser, input_args=[data] + fairseq_args)
    cfg = convert_namespace_to_omegaconf(targs)
    utils.import_user_module(cfg.common)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    model = task.build_model(cfg.model)
    bands = [slot.module for slot in model.flop_bands()]
    full = [b.rank for b in bands]
    ranks = budget_ranks(bands, sparsity)
    keep_leading(bands, ranks)
    layer_ranks, layer_full = _truncate_matrices(model, sparsity)
    stats = sparsity_stats(model)
    compact_model(model)
    with torch.no_grad():  # fresh initialisation at the new rank (as fairseq's AdaptiveInput: std dim^-0.5)
        for slot in model.flop_bands():
            b = slot.module
            torch.nn.init.normal_(b.emb, std=max(b.rank, 1) ** -0.5)
            for p in (b.in_proj, b.out_proj):
                if p is not None and p.numel():
                    torch.nn.init.xavier_uniform_(p)
            if b.padding_idx is not None:
                b.emb[b.padding_idx].zero_()
        for _, m in model.flop_layer_matrices():
            _fresh_matrix(m)
    save_checkpoint_atomic(_fresh_checkpoint(cfg, model), output_path, data)
    return _allocation(sparsity, stats, ranks, full, layer_ranks, layer_full)


@torch.no_grad()
def _fresh_matrix(m) -> None:
    """A compact layer matrix freshly initialised: an ``nn.Linear`` as PyTorch does, the two
    factors of a ``LowRankLinear`` of rank ``k`` with std ``(3k)^-1/4 in^-1/4`` each, so that
    their product has a default ``nn.Linear``'s variance ``1 / (3 in)`` (the rule
    ``GatedLowRankLinear`` initialises by; the gated factors before compaction had it at full
    rank, so only ``k / rank`` of it is left)."""
    from flop_fairseq.core.linear import LowRankLinear

    if isinstance(m, LowRankLinear):
        std = (1.0 / (3.0 * max(m.rank, 1))) ** 0.25 / m.in_features ** 0.25
        torch.nn.init.normal_(m[0].weight, std=std)
        torch.nn.init.normal_(m[1].weight, std=std)
    elif isinstance(m, torch.nn.Linear):
        m.reset_parameters()


def main(argv=None) -> None:
    """``truncate`` or ``scratch-init``; the allocation as JSON on stdout, a bad checkpoint or
    sparsity in one line."""
    from . import run_tool

    p = argparse.ArgumentParser(prog="python -m benchmarks.baselines.svd")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("truncate", help="keep the top singular components of a converted checkpoint")
    t.add_argument("input")
    t.add_argument("output")
    s = sub.add_parser("scratch-init", help="a freshly initialised compact model of the same ranks")
    s.add_argument("--data", required=True)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--output", required=True)
    s.add_argument("fairseq_args", nargs=argparse.REMAINDER, help="-- then fairseq-train's arguments")
    for q in (t, s):
        q.add_argument("--sparsity", type=float, required=True, help="keep (1 - s) of the prunable parameters")
    _, alloc = run_tool(p, argv, lambda a: svd_truncate(a.input, a.output, a.sparsity) if a.cmd == "truncate" else
                        scratch_init(a.data, a.sparsity, a.seed, a.output, [x for x in a.fairseq_args if x != "--"]))
    print(json.dumps(alloc, indent=2))


if __name__ == "__main__":
    main()
