"""``flop-convert DENSE.pt OUT.pt``: a dense fairseq ``transformer_lm`` with adaptive
input/softmax becomes a FLOP checkpoint of the matching ``flop_transformer_lm`` arch, and
``flop-convert HF_DIR OUT.pt`` a HuggingFace Transformer-XL a ``flop_transformer_xl`` one
(plus its fairseq ``dict.txt``); both compute the same function (gates start at exactly 1).
With ``--calibration DATA-BIN`` the components are ordered by what dropping them costs on that data."""

import argparse
import sys

from ..tools.checkpoint import CheckpointError, quiet_logging


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="flop-convert",
        description="Convert a dense fairseq transformer_lm checkpoint with adaptive input/softmax, or a "
                    "HuggingFace Transformer-XL directory, into a FLOP checkpoint computing the same function.",
    )
    parser.add_argument("dense", help="dense fairseq checkpoint (e.g. checkpoints/checkpoint_best.pt), or a "
                                      "HuggingFace Transformer-XL directory (config.json + weights)")
    parser.add_argument("output", help="path of the FLOP checkpoint to write")
    parser.add_argument("--flop-decoder-layers", action="store_true",
                        help="also factorize the attention and FFN matrices of every decoder layer")
    parser.add_argument("--init-keep-prob", type=float, default=None,
                        help="initial keep probability P(z > 0) of each gate (default max(0.99, 1 - 0.45/rank): "
                             "the eval mask starts at exactly 1; lower values start pruning sooner)")
    parser.add_argument("--dict", default=None,
                        help="HuggingFace input only: where to write the fairseq dict.txt of its vocabulary "
                             "(default: dict.txt next to the output)")
    parser.add_argument("--layer-rank-ratio", type=float, default=1.0,
                        help="with --flop-decoder-layers: keep this fraction of each layer matrix's rank (the top "
                             "singular components; default 1, the exact dense function)")
    from ..tools.calibration import DEFAULT_TOKENS

    parser.add_argument("--calibration", metavar="DATA-BIN", default=None,
                        help="a fairseq-preprocessed directory (the model's dictionary): factorize every band and "
                             "layer matrix in the basis that orders its components by the output error their "
                             "removal causes on these tokens (whitened SVD), not by the weights' norm")
    parser.add_argument("--calibration-tokens", type=int, default=DEFAULT_TOKENS,
                        help=f"tokens of the calibration split to stream through the model (default {DEFAULT_TOKENS:,})")
    parser.add_argument("--calibration-subset", default="train", help="the split to calibrate on (default train)")
    parser.add_argument("--balance-factors", action=argparse.BooleanOptionalAction, default=True,
                        help="rescale each group's two factors to equal rms (the same function), so that Adam's "
                             "steps relate to their sizes alike (default on: on the WikiText-2 benchmark's b50 "
                             "FLOP reached valid ppl 190.5 with it against 199.3 without; --no-balance-factors "
                             "keeps the plain split A = U S^1/2, B = V S^1/2)")
    parser.add_argument("--gate-init-slope", type=float, default=None,
                        help="with --calibration: start each gate's keep probability from its component's loss "
                             "(logit slope per log of the loss; the expected size stays the dense one)")
    args = parser.parse_args(argv)
    quiet_logging()
    if args.gate_init_slope is not None and not args.gate_init_slope > 0:
        parser.error("--gate-init-slope must be positive")
    if args.init_keep_prob is not None and not 0.0 < args.init_keep_prob < 1.0:
        parser.error("--init-keep-prob must be in (0, 1)")
    if not 0.0 < args.layer_rank_ratio <= 1.0:
        parser.error("--layer-rank-ratio must be in (0, 1]")
    if args.layer_rank_ratio < 1.0 and not args.flop_decoder_layers:
        parser.error("--layer-rank-ratio needs --flop-decoder-layers")
    from ..tools.calibration import DataAwareOptions
    from ..tools.hf_transfo_xl import is_hf_directory

    args.data_aware = DataAwareOptions(args.calibration, args.calibration_tokens, args.calibration_subset,
                                       args.balance_factors, args.gate_init_slope)

    if is_hf_directory(args.dense):
        if args.flop_decoder_layers or args.layer_rank_ratio < 1.0:
            parser.error("a Transformer-XL's layer matrices are always factorized at full rank: drop "
                         "--flop-decoder-layers and --layer-rank-ratio")
        return _convert_hf(args)
    if args.dict is not None:
        parser.error("--dict is for a HuggingFace Transformer-XL directory; a fairseq checkpoint has its data-bin")
    from ..tools.convert import convert

    try:
        res = convert(args.dense, args.output, args.flop_decoder_layers, args.init_keep_prob,
                      layer_rank_ratio=args.layer_rank_ratio, data_aware=args.data_aware)
    except CheckpointError as e:
        sys.exit(f"flop-convert: error: {e}")
    c = res["counts"]
    print(f"flop-convert: function check: max |log p(dense) - log p(FLOP, gates bypassed)| = "
          f"{res['max_logprob_diff']:.2e}" + (
              f" (layer matrices truncated to rank ratio {args.layer_rank_ratio:g}: largest relative SVD "
              f"truncation error {res['max_truncation_error']:.3f})" if args.layer_rank_ratio < 1.0 else ""))
    print(f"flop-convert: wrote {args.output} ({res['file_bytes'] / 2**20:.1f} MiB): arch {res['arch']}, "
          f"{res['groups']} gated groups, prunable_params {c.prunable_params:,} (band_params {c.band_params:,}), "
          f"total_params {c.total_params:,}, stored_params {c.stored_params:,} (with full-rank factors and gates)")
    _print_data_aware(res)


def _print_data_aware(res):
    from ..tools.calibration import summary_lines

    if "reports" in res:
        gpu = "" if res["peak_gpu_bytes"] is None else f", peak GPU memory {res['peak_gpu_bytes'] / 2**30:.2f} GiB"
        print(f"flop-convert: data-aware basis from {res['tokens']:,} calibration tokens ({res['seconds']:.1f} s on "
              f"{res['device']}{gpu}); relative truncation error at half of each rank, plain SVD vs whitened:")
        print("\n".join(summary_lines(res["reports"])))
    if "scales" in res:
        print(f"flop-convert: factors rescaled to equal rms in {len(res['scales'])} groups")


def _convert_hf(args):
    """A HuggingFace Transformer-XL directory -> flop_transformer_xl checkpoint + fairseq dict.txt."""
    from ..tools.hf_transfo_xl import convert_hf

    try:
        res = convert_hf(args.dense, args.output, args.dict, args.init_keep_prob, data_aware=args.data_aware)
    except CheckpointError as e:
        sys.exit(f"flop-convert: error: {e}")
    c = res["counts"]
    diff = res["max_logprob_diff"]
    print("flop-convert: function check: " + (
        "skipped (transformers is not installed)" if diff is None else
        f"max |log p(HuggingFace) - log p(FLOP, gates bypassed)| = {diff:.2e} from an empty memory "
        f"(Transformer-XL's convention, the converted model's), {res['max_logprob_diff_zero_mems']:.2e} from "
        "mem_len zero vectors (HuggingFace's when called without mems: evaluate with --model-overrides "
        "'{\"init_zero_mems\": True}' to reproduce its numbers)"))
    print(f"flop-convert: wrote {args.output} ({res['file_bytes'] / 2**20:.1f} MiB): arch {res['arch']}, "
          f"{res['groups']} gated groups, prunable_params {c.prunable_params:,}, total_params {c.total_params:,}; "
          f"{res['dict']} ({res['num_words']:,} words with fairseq's specials, band cutoffs {res['cutoffs']})")
    _print_data_aware(res)


if __name__ == "__main__":
    main()
