"""``flop-convert DENSE.pt OUT.pt``: a dense fairseq ``transformer_lm`` with adaptive
input/softmax becomes a FLOP checkpoint of the matching ``flop_transformer_lm`` arch
that computes the same function (gates start at exactly 1 in eval mode)."""

import argparse
import sys

from ..tools.checkpoint import CheckpointError, quiet_logging


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="flop-convert",
        description="Convert a dense fairseq transformer_lm checkpoint with adaptive input/softmax into a "
                    "FLOP checkpoint (flop_transformer_lm*) computing the same function.",
    )
    parser.add_argument("dense", help="dense fairseq checkpoint (e.g. checkpoints/checkpoint_best.pt)")
    parser.add_argument("output", help="path of the FLOP checkpoint to write")
    parser.add_argument("--flop-decoder-layers", action="store_true",
                        help="also factorize the attention and FFN matrices of every decoder layer")
    parser.add_argument("--init-keep-prob", type=float, default=None,
                        help="initial keep probability P(z > 0) of each gate (default max(0.99, 1 - 0.45/rank): "
                             "the eval mask starts at exactly 1; lower values start pruning sooner)")
    args = parser.parse_args(argv)
    quiet_logging()
    if args.init_keep_prob is not None and not 0.0 < args.init_keep_prob < 1.0:
        parser.error("--init-keep-prob must be in (0, 1)")
    from ..tools.convert import convert

    try:
        res = convert(args.dense, args.output, args.flop_decoder_layers, args.init_keep_prob)
    except CheckpointError as e:
        sys.exit(f"flop-convert: error: {e}")
    c = res["counts"]
    print(f"flop-convert: function check: max |log p(dense) - log p(FLOP, gates bypassed)| = "
          f"{res['max_logprob_diff']:.2e}")
    print(f"flop-convert: wrote {args.output} ({res['file_bytes'] / 2**20:.1f} MiB): arch {res['arch']}, "
          f"{res['groups']} gated groups, prunable_params {c.prunable_params:,} (band_params {c.band_params:,}), "
          f"total_params {c.total_params:,}, stored_params {c.stored_params:,} (with full-rank factors and gates)")


if __name__ == "__main__":
    main()
