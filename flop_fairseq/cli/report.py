"""``flop-report CKPT [--json] [--plot FILE.png] [--target-sparsity S | --target-params N]``: kept
rank and parameters per band; with a target, those the exact-budget allocation would keep."""

import argparse
import json
import os
import sys

from ..tools.checkpoint import CheckpointError, quiet_logging
from ..tools.report import budget_lines
from .compact import add_target_arguments, check_target_arguments


def format_table(path: str, rep: dict) -> str:
    budget = rep.get("budget")
    kind = "gated FLOP model" if rep["gated"] else "compact FLOP model"
    lines = [f"{path}: {kind}" + (" with the exact-budget allocation (kept: allocated; trained: the eval mask "
                                  "as trained)" if budget else ""),
             f"{'band':>6} {'side':>6} {'vocabulary':>17} {'rank':>6} {'kept':>6} {'params before':>14} "
             f"{'params after':>13}" + (f" {'trained':>8}" if budget else "")]
    for r in rep["bands"]:
        vocab = f"[{r['vocab'][0]}, {r['vocab'][1]})"
        lines.append(f"{r['band']:>6} {r['side']:>6} {vocab:>17} {r['rank']:>6} {r['kept']:>6} "
                     f"{r['params_before']:>14,} {r['params_after']:>13,}"
                     + (f" {r['trained_kept']:>8}" if budget else ""))
    if "layers" in rep:
        lay = rep["layers"]
        lines.append(f"{'layers':>6} {lay['matrices']:>6} {'matrices':>17} {lay['rank']:>6} {lay['kept']:>6} "
                     f"{lay['params_before']:>14,} {lay['params_after']:>13,}")
    lines.append(f"{'total':>6} {'':>6} {'':>17} {'':>6} {'':>6} {rep['prunable_params']:>14,} "
                 f"{rep['remaining_prunable_params']:>13,}")
    lines.append(f"hard sparsity {rep['sparsity']:.4f}" + (
        f", expected sparsity {rep['expected_sparsity']:.4f}" if rep["expected_sparsity"] is not None else ""))
    lines.append(f"total_params (the model once compacted): {rep['total_params']:,}")
    if rep.get("weak_components"):
        share = rep["weak_params"] / max(rep["remaining_prunable_params"], 1)
        lines.append(f"weak: {rep['weak_components']} kept rank components have an eval gate value below 0.1 "
                     f"({rep['weak_params']:,} params, {share:.1%} of the kept prunable parameters)")
    if budget:
        lines += budget_lines(budget)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="flop-report",
                                     description="Kept rank and parameter counts per band of a FLOP checkpoint "
                                                 "(gated or compact).")
    parser.add_argument("checkpoint", help="FLOP checkpoint (flop-convert, fairseq-train or flop-compact output)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the kept rank per band into this PNG")
    add_target_arguments(parser, "report what would be kept")
    args = parser.parse_args(argv)
    check_target_arguments("flop-report", args)
    quiet_logging()
    if args.plot and not args.plot.lower().endswith(".png"):
        parser.error("--plot takes a .png file name")
    from ..tools.checkpoint import load_flop_model
    from ..tools.compact import budget_allocation
    from ..tools.report import plot, report

    try:
        state, model = load_flop_model(args.checkpoint)
        allocation = budget_allocation(model, args.checkpoint, args.target_params, args.target_sparsity,
                                       args.min_gate_value)
    except CheckpointError as e:
        sys.exit(f"flop-report: error: {e}")
    history = state.get("optimizer_history") or [{}]
    rep = report(model, history[-1].get("num_updates"), allocation)
    try:
        print(json.dumps(rep, indent=2) if args.json else format_table(args.checkpoint, rep), flush=True)
    except BrokenPipeError:  # `flop-report ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if args.plot:
        plot(rep, args.plot)
        if not args.json:
            print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
