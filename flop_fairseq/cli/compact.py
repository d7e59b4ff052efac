"""``flop-compact IN.pt OUT.pt``: a physically smaller model with every pruned rank
component removed, the eval-mode gates folded into the weights, and no gates or
Lagrange multipliers left. It loads with ``fairseq-eval-lm --user-dir user_dir``."""

import argparse
import copy
import os
import sys

import torch

from ..compaction import compact_model
from ..sparsity import gated_modules
from .checkpoint_io import CheckpointError, load_flop_model, quiet_logging, save_checkpoint_atomic
from .convert import max_logprob_difference
from .report import report


def _band_label(row) -> str:
    return f"{row['side']} {row['band']} [{row['vocab'][0]}, {row['vocab'][1]})"


def compact(in_path: str, out_path: str, tolerance: float = 1e-4, log=print) -> dict:
    state, model = load_flop_model(in_path)
    if not gated_modules(model):
        raise CheckpointError(f"{in_path}: already compact (no gates left); nothing to do")
    cfg_model = state["cfg"]["model"]
    params_before = sum(p.numel() for p in model.parameters())
    rep = report(model, cfg_model)
    gated = copy.deepcopy(model)
    compact_model(model)
    num_words = model.decoder.adaptive_softmax.vocab_size
    diff = max_logprob_difference(gated, model, num_words)
    if not diff <= tolerance:
        raise CheckpointError(f"compaction changed the function (max log-prob difference {diff:.2e}); "
                              "please report this checkpoint")
    params_after = sum(p.numel() for p in model.parameters())
    state["model"] = model.state_dict()
    state["criterion"] = None
    state.pop("last_optimizer_state", None)
    size_before = os.path.getsize(in_path)
    size_after = save_checkpoint_atomic(state, out_path, in_path)

    rows = [f"{'band':<28} {'rank':>6} {'kept':>6} {'params before':>14} {'params after':>13}"]
    for r, band in zip(rep["bands"], unique_bands(gated)):
        before = band.rank * band.params_per_component()
        rows.append(f"{_band_label(r):<28} {r['rank']:>6} {r['kept']:>6} {before:>14,} {r['params_after']:>13,}")
    if "layers" in rep:
        lay = rep["layers"]
        rows.append(f"{'decoder layer matrices':<28} {lay['rank']:>6} {lay['kept']:>6} "
                    f"{_layer_params(gated, rep):>14,} {lay['params_after']:>13,}")
    rows.append(f"{'model parameters':<28} {'':>6} {'':>6} {params_before:>14,} {params_after:>13,}")
    rows.append(f"{'file size (MiB)':<28} {'':>6} {'':>6} {size_before / 2**20:>14.2f} {size_after / 2**20:>13.2f}")
    log("\n".join(rows))
    log(f"flop-compact: hard sparsity {rep['sparsity']:.4f} of {rep['prunable_params']:,} prunable parameters; "
        f"max |log p(gated) - log p(compact)| = {diff:.1e}; wrote {out_path}")
    return {"params_before": params_before, "params_after": params_after, "size_before": size_before,
            "size_after": size_after, "max_logprob_diff": diff, "sparsity": rep["sparsity"]}


def unique_bands(model):
    """The model's bands in input-then-softmax order, a band shared by both once."""
    seen = []
    for bands in (model.decoder.embed_tokens.bands, model.decoder.adaptive_softmax.bands):
        for b in bands:
            if all(b is not s for s in seen):
                seen.append(b)
    return seen


def _layer_params(model, rep) -> int:
    names = [r["layer"] for r in rep["layers"]["per_matrix"]]
    return sum(p.numel() for n in names for p in model.get_submodule(n).parameters()
               if p.dim() == 2)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="flop-compact",
        description="Remove pruned rank components from a FLOP checkpoint, fold the gates into the weights "
                    "and drop gates and lambdas: a smaller, faster model for fairseq-eval-lm.",
    )
    parser.add_argument("input", help="gated FLOP checkpoint (fairseq-train with flop_adaptive_loss)")
    parser.add_argument("output", help="compact checkpoint to write (never the input)")
    args = parser.parse_args(argv)
    quiet_logging()
    try:
        with torch.no_grad():
            compact(args.input, args.output)
    except CheckpointError as e:
        sys.exit(f"flop-compact: error: {e}")


if __name__ == "__main__":
    main()
