"""Unstructured magnitude pruning with the AGP schedule (Zhu & Gupta 2017, "To prune, or not
to prune") of the band matrices of a dense fairseq model: the unstructured baseline's
plain-PyTorch part (schedule, mask, finalisation); its criterion ``agp_adaptive_loss`` is
:mod:`benchmarks.agp_plugin` (``fairseq-train --user-dir benchmarks/agp_plugin``).

    python -m benchmarks.baselines.agp finalize TRAINED.pt OUT.pt --sparsity S [--layers] [--json]

The prunable weights are the dense model's band matrices as its FLOP model lists them
(:func:`flop_fairseq.models.dense_prunable_tensors`: the adaptive input/softmax embeddings and projections, a tied
one once; the softmax's ``class_proj`` is pruned by neither), the set FLOP prunes; with
``--agp-layers`` also the weight matrices of every decoder layer's attention and FFN (the
set ``--flop-decoder-layers`` adds; biases are pruned by neither).

Before every training forward the criterion sets the target sparsity

    s_t = s_f * (1 - (1 - (t - t_0) / (T - t_0))^3)     for t_0 <= t <= T, s_f after T

(``t`` counts updates of this run, ``t_0`` = ``--agp-begin-update``, ``T`` =
``--agp-end-update``) and, in each matrix separately (Zhu & Gupta prune every layer to the
same ``s_t``), zeroes the ``round(s_t * numel)`` weights of smallest magnitude among those
not yet pruned, so a pruned weight stays pruned. The mask is re-applied before every
forward; the optimizer step after the last forward can give masked weights a tiny value
again (Adam's momentum), which :func:`finalize` removes. The tensors stay dense: no fewer
FLOPs, no speed-up; the parameter count is the number of non-zero weights. Needs
``--update-freq 1`` (one forward per update). ``--distill-teacher`` etc. add the distillation
term of ``distill_adaptive_loss`` (the criterion extends it), so AGP gets the same option as
FLOP and the structured baselines.
"""

import argparse
import json

import torch


def agp_sparsity(step: int, final: float, begin: int, end: int) -> float:
    """Zhu & Gupta's cubic schedule ``s_t``."""
    if step < begin:
        return 0.0
    if end <= begin or step >= end:
        return final
    return final * (1.0 - (1.0 - (step - begin) / (end - begin)) ** 3)


@torch.no_grad()
def magnitude_mask(weight: torch.Tensor, sparsity: float, mask: torch.Tensor = None) -> torch.Tensor:
    """Boolean keep-mask zeroing the ``round(sparsity * numel)`` smallest ``|weight|``
    (already-masked entries count as 0, so they are pruned first)."""
    w = weight.detach().abs().flatten().float()
    if mask is not None:
        w = w * mask.flatten()
    k = int(round(sparsity * w.numel()))
    keep = torch.ones_like(w, dtype=torch.bool)
    if k > 0:
        # stable: ties (e.g. the zeros of already-pruned weights) resolved by index
        order = torch.sort(w, stable=True).indices
        keep[order[:k]] = False
    return keep.view_as(weight)


def agp_prunable(model, layers: bool) -> list:
    """What AGP prunes: the band matrices FLOP would prune, and with ``layers`` the weights of
    the layer matrices ``--flop-decoder-layers`` factorizes (the models' own lists)."""
    from flop_fairseq.models import dense_prunable_tensors, layer_matrices

    bands = dense_prunable_tensors(model)
    if not bands:
        raise SystemExit(f"agp: {type(model).__name__} has no band matrices a FLOP model knows to prune")
    return bands + ([m.weight for m in layer_matrices(model)] if layers else [])


@torch.no_grad()
def finalize(in_path: str, out_path: str, sparsity: float, layers: bool = False) -> dict:
    """Zeroes exactly ``round(sparsity * numel)`` smallest weights of every band matrix (and
    with ``layers`` every layer matrix) of a trained checkpoint, writes it without the
    optimizer state and returns the counts."""
    from flop_fairseq.core import count_params
    from flop_fairseq.tools.checkpoint import load_any_model, save_checkpoint_atomic

    state, model, _ = load_any_model(in_path)
    prunable = agp_prunable(model, layers)
    changed = 0
    max_zeroed, min_kept = 0.0, float("inf")
    for w in prunable:
        keep = magnitude_mask(w, sparsity)
        changed += int(((w != 0) & ~keep).sum())
        if (~keep).any():
            max_zeroed = max(max_zeroed, float(w[~keep].abs().max()))
        if keep.any():
            min_kept = min(min_kept, float(w[keep].abs().min()))
        w.mul_(keep.to(w.dtype))
    # write the masked values into the checkpoint's own tensors (tied names share one), so the
    # file keeps fairseq's layout
    ids = {id(p) for p in prunable}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in ids:
            state["model"][name].copy_(p)
    counts = count_params(model, prunable)
    state.pop("last_optimizer_state", None)
    save_checkpoint_atomic(state, out_path, in_path)
    return {"matrices": names, "prunable_params": counts.prunable_params,
            "nonzero_prunable_params": counts.nonzero_prunable_params,
            "sparsity": 1.0 - counts.nonzero_prunable_params / counts.prunable_params,
            "weights_zeroed_by_finalize": changed, "max_abs_zeroed": max_zeroed, "min_abs_kept": min_kept}


def main(argv=None) -> None:
    """``finalize IN OUT --sparsity S [--layers] [--json]``."""
    from . import run_tool

    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.agp")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("finalize", help="zero exactly the target fraction of every pruned matrix")
    f.add_argument("input")
    f.add_argument("output")
    f.add_argument("--sparsity", type=float, required=True)
    f.add_argument("--layers", action="store_true", help="the layer matrices too (--agp-layers)")
    f.add_argument("--json", action="store_true")
    args, result = run_tool(parser, argv, lambda a: finalize(a.input, a.output, a.sparsity, a.layers))
    print(json.dumps(result, indent=2) if args.json else
          f"agp finalize: {result['nonzero_prunable_params']:,} of {result['prunable_params']:,} weights of the "
          f"pruned matrices non-zero (sparsity {result['sparsity']:.4f}); "
          f"{result['weights_zeroed_by_finalize']} re-zeroed "
          f"(largest |w| {result['max_abs_zeroed']:.2e}; smallest kept {result['min_abs_kept']:.2e}); "
          f"wrote {args.output}")


if __name__ == "__main__":
    main()
