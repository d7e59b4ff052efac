"""The baselines FLOP is compared with: SVD truncation and small models from scratch
(:mod:`.svd`), AGP magnitude pruning's schedule, mask and finalisation (:mod:`.agp`; its
fairseq criterion is :mod:`benchmarks.agp_plugin`)."""


def run_tool(parser, argv, run):
    """A baseline's command line: ``argv`` parsed, its ``--sparsity`` range checked (one line and
    exit status 2 if out of it), then ``run(args)`` with fairseq's logging quiet and a bad
    checkpoint as one line; returns ``(args, what run returned)``."""
    from flop_fairseq.core import check_target_sparsity
    from flop_fairseq.tools.checkpoint import CheckpointError, quiet_logging

    args = parser.parse_args(argv)
    try:
        check_target_sparsity(args.sparsity, "--sparsity")
    except ValueError as e:
        parser.error(str(e))
    quiet_logging()
    try:
        return args, run(args)
    except CheckpointError as e:
        raise SystemExit(f"{parser.prog} {args.cmd}: {e}")
