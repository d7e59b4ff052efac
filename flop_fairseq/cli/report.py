"""``flop-report CKPT [--json] [--plot FILE.png]``: kept rank and parameters per band."""

import argparse
import json
import os
import sys

from ..tools.checkpoint import CheckpointError, quiet_logging


def format_table(path: str, rep: dict) -> str:
    lines = [f"{path}: {'gated FLOP model' if rep['gated'] else 'compact FLOP model'}",
             f"{'band':>6} {'side':>6} {'vocabulary':>17} {'rank':>6} {'kept':>6} {'params before':>14} "
             f"{'params after':>13}"]
    for r in rep["bands"]:
        vocab = f"[{r['vocab'][0]}, {r['vocab'][1]})"
        lines.append(f"{r['band']:>6} {r['side']:>6} {vocab:>17} {r['rank']:>6} {r['kept']:>6} "
                     f"{r['params_before']:>14,} {r['params_after']:>13,}")
    if "layers" in rep:
        lay = rep["layers"]
        lines.append(f"{'layers':>6} {lay['matrices']:>6} {'matrices':>17} {lay['rank']:>6} {lay['kept']:>6} "
                     f"{lay['params_before']:>14,} {lay['params_after']:>13,}")
    lines.append(f"{'total':>6} {'':>6} {'':>17} {'':>6} {'':>6} {rep['prunable_params']:>14,} "
                 f"{rep['remaining_prunable_params']:>13,}")
    lines.append(f"hard sparsity {rep['sparsity']:.4f}" + (
        f", expected sparsity {rep['expected_sparsity']:.4f}" if rep["expected_sparsity"] is not None else ""))
    lines.append(f"total_params (the model once compacted): {rep['total_params']:,}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="flop-report",
                                     description="Kept rank and parameter counts per band of a FLOP checkpoint "
                                                 "(gated or compact).")
    parser.add_argument("checkpoint", help="FLOP checkpoint (flop-convert, fairseq-train or flop-compact output)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the kept rank per band into this PNG")
    args = parser.parse_args(argv)
    quiet_logging()
    if args.plot and not args.plot.lower().endswith(".png"):
        parser.error("--plot takes a .png file name")
    from ..tools.checkpoint import load_flop_model
    from ..tools.report import plot, report

    try:
        state, model = load_flop_model(args.checkpoint)
    except CheckpointError as e:
        sys.exit(f"flop-report: error: {e}")
    history = state.get("optimizer_history") or [{}]
    rep = report(model, history[-1].get("num_updates"))
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
