"""``flop-compact IN.pt OUT.pt``: a physically smaller model with every pruned rank
component removed, the eval-mode gates folded into the weights, and no gates or
Lagrange multipliers left. It loads with ``fairseq-eval-lm --user-dir "$(flop-user-dir)"``."""

import argparse
import sys

import torch

from ..core import layer_totals
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
    from ..tools.compact import compact

    try:
        with torch.no_grad():
            res = compact(args.input, args.output)
    except CheckpointError as e:
        sys.exit(f"flop-compact: error: {e}")
    a = res["after"]
    print(format_table(res))
    print(f"flop-compact: hard sparsity {res['before'].sparsity:.4f} of prunable_params {a.prunable_params:,}; "
          f"total_params {a.total_params:,}; max |log p(gated) - log p(compact)| = {res['max_logprob_diff']:.1e}; "
          f"wrote {args.output}")


if __name__ == "__main__":
    main()
