"""``flop-compact IN.pt OUT.pt [--target-sparsity S | --target-params N]``: a physically smaller
model with every pruned rank component removed, the eval-mode gates folded into the weights, and
no gates or Lagrange multipliers left. It loads with ``fairseq-eval-lm --user-dir "$(flop-user-dir)"``.
With a target, the kept components are chosen again for exactly that budget
(:mod:`flop_fairseq.core.budget`) instead of the eval mask as trained."""

import argparse
import sys

import torch

from ..core import layer_totals
from ..core.budget import LIVE_VALUE
from ..core.target import check_target_sparsity
from ..tools.checkpoint import CheckpointError, quiet_logging


def format_table(res: dict) -> str:
    """Per band and in total: the dense model's count before, the compact count after."""
    b, a = res["before"], res["after"]
    rows = [f"{'group':<28} {'rank':>6} {'kept':>6} {'params before':>14} {'params after':>13}"]
    for r in res["bands"]:
        label = f"{r['side']} {r['band']} [{r['vocab'][0]}, {r['vocab'][1]})"
        rows.append(f"{label:<28} {r['rank']:>6} {r['kept']:>6} {r['params_before']:>14,} {r['params_after']:>13,}")
    if res["layers"]:
        t = layer_totals(res["layers"])
        label = f"layer matrices ({t['matrices']})"
        rows.append(f"{label:<28} {t['rank']:>6} {t['kept']:>6} "
                    f"{t['params_before']:>14,} {t['params_after']:>13,}")
    rows.append(f"{'prunable (dense -> kept)':<28} {'':>6} {'':>6} {b.prunable_params:>14,} "
                f"{a.remaining_prunable_params:>13,}")
    rows.append(f"{'stored parameters':<28} {'':>6} {'':>6} {b.stored_params:>14,} {a.stored_params:>13,}")
    rows.append(f"{'file size (MiB)':<28} {'':>6} {'':>6} {res['size_before'] / 2**20:>14.2f} "
                f"{res['size_after'] / 2**20:>13.2f}")
    return "\n".join(rows)


def add_target_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--target-sparsity S`` / ``--target-params N`` (one or neither) for flop-compact and flop-report."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--target-sparsity", type=float, metavar="S",
                       help=f"{what} for exactly this sparsity, in [0, 1), of the dense prunable parameters "
                            "(to within one rank component), choosing the kept components globally by their "
                            "gates' log_alpha (default: the eval mask as trained)")
    group.add_argument("--target-params", type=int, metavar="N",
                       help=f"{what} for exactly N remaining prunable parameters (0 <= N <= the dense count)")
    parser.add_argument("--min-gate-value", type=float, default=LIVE_VALUE, metavar="V",
                        help="with a target: keep only rank components whose eval gate value would be at least V "
                             f"(default {LIVE_VALUE}: a component its gate has nearly switched off gets no "
                             "budget; 0 admits every component)")


def check_target_arguments(prog: str, args) -> None:
    """One line and exit status 1 for a target out of range, before any checkpoint is read."""
    s, n = args.target_sparsity, args.target_params
    if s is not None:
        try:
            check_target_sparsity(s, "--target-sparsity")
        except ValueError as e:
            sys.exit(f"{prog}: error: {e}")
    if n is not None and n < 0:
        sys.exit(f"{prog}: error: --target-params must be >= 0, got {n}")
    if not 0.0 <= args.min_gate_value <= 1.0:
        sys.exit(f"{prog}: error: --min-gate-value must be in [0, 1], got {args.min_gate_value}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="flop-compact",
        description="Remove pruned rank components from a FLOP checkpoint, fold the gates into the weights "
                    "and drop gates and lambdas: a smaller, faster model for fairseq-eval-lm.",
    )
    parser.add_argument("input", help="gated FLOP checkpoint (fairseq-train with flop_adaptive_loss)")
    parser.add_argument("output", help="compact checkpoint to write (never the input)")
    add_target_arguments(parser, "compact")
    args = parser.parse_args(argv)
    check_target_arguments("flop-compact", args)
    quiet_logging()
    from ..tools.compact import compact
    from ..tools.report import budget_lines

    try:
        with torch.no_grad():
            res = compact(args.input, args.output, target_params=args.target_params,
                          target_sparsity=args.target_sparsity, min_value=args.min_gate_value)
    except CheckpointError as e:
        sys.exit(f"flop-compact: error: {e}")
    a = res["after"]
    print(format_table(res))
    if res["budget"] is not None:
        print("\n".join(budget_lines(res["budget"].summary(), res["budget_logprob_diff"])))
    print(f"flop-compact: hard sparsity {res['before'].sparsity:.4f} of prunable_params {a.prunable_params:,}; "
          f"total_params {a.total_params:,}; max |log p(gated) - log p(compact)| = {res['max_logprob_diff']:.1e}; "
          f"wrote {args.output}")


if __name__ == "__main__":
    main()
