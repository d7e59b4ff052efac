"""``flop-truncate IN.pt OUT.pt --sparsity S``: the converted model (``flop-convert --calibration``)
truncated by losses across groups (the cheapest components of all groups first); prints the
allocation as JSON. ``flop-compact OUT.pt`` then makes it small; fine-tune it as any model."""

import argparse
import json
import sys

from ..tools.checkpoint import CheckpointError, quiet_logging


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="flop-truncate",
        description="Keep the rank components whose removal would cost most, across all groups, within a "
                    "parameter budget (input: a flop-convert --calibration checkpoint).")
    parser.add_argument("input", help="FLOP checkpoint written by flop-convert --calibration")
    parser.add_argument("output", help="where to write the truncated (gated, pinned) checkpoint")
    parser.add_argument("--sparsity", type=float, required=True,
                        help="fraction of the prunable parameters to remove, in [0, 1)")
    args = parser.parse_args(argv)
    quiet_logging()
    if not 0.0 <= args.sparsity < 1.0:
        parser.error("--sparsity must be in [0, 1)")
    from ..tools.truncate import truncate_by_losses

    try:
        res = truncate_by_losses(args.input, args.output, args.sparsity)
    except CheckpointError as e:
        sys.exit(f"flop-truncate: error: {e}")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
