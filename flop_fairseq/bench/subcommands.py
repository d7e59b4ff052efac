"""The benchmark's hidden subcommands, each run by a step (or the sweep) as its own process:

    benchmark_wikitext2.py svd-truncate IN OUT (--sparsity S | --ranks R0,R1,...)   > alloc.json
    benchmark_wikitext2.py scratch-init --data BIN --sparsity S --seed N --output OUT -- FAIRSEQ-TRAIN ARGS
    benchmark_wikitext2.py count-params [--layers] LABEL=CKPT ...                  > params.json
    benchmark_wikitext2.py flags model|train N|eval SPLIT     (one flag per line, for the sweep)
"""

import argparse
import json

from . import settings

NAMES = ("svd-truncate", "scratch-init", "count-params", "flags")


def _flags(argv) -> None:
    p = argparse.ArgumentParser(prog="benchmark_wikitext2.py flags")
    p.add_argument("kind", choices=("model", "train", "eval"))
    p.add_argument("arg", nargs="?", default="", help="train: --max-update; eval: the split")
    a = p.parse_args(argv)
    if a.kind == "train" and not a.arg.isdigit():
        p.error("train needs the number of updates")
    if a.kind == "eval" and a.arg not in ("train", "valid", "test"):
        p.error("eval needs the split (train, valid or test)")
    flags = {"model": lambda: settings.MODEL_FLAGS, "train": lambda: settings.train_flags(int(a.arg)),
             "eval": lambda: settings.eval_flags(a.arg)}[a.kind]()
    print("\n".join(flags))


def _svd_truncate(argv) -> None:
    from .baselines import print_allocation, svd_truncate

    p = argparse.ArgumentParser(prog="benchmark_wikitext2.py svd-truncate")
    p.add_argument("input")
    p.add_argument("output")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--sparsity", type=float, help="budget: keep (1 - s) of the band parameters")
    g.add_argument("--ranks", help="explicit kept rank per band, e.g. 91,15,1")
    a = p.parse_args(argv)
    if a.sparsity is not None and not 0.0 <= a.sparsity < 1.0:
        p.error("--sparsity must be in [0, 1)")
    print_allocation(svd_truncate(a.input, a.output, a.sparsity, a.ranks))


def _scratch_init(argv) -> None:
    from .baselines import print_allocation, scratch_init

    if "--" not in argv:
        raise SystemExit("scratch-init: fairseq-train arguments after --")
    i = argv.index("--")
    p = argparse.ArgumentParser(prog="benchmark_wikitext2.py scratch-init")
    p.add_argument("--data", required=True)
    p.add_argument("--sparsity", type=float, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output", required=True)
    a = p.parse_args(argv[:i])
    if not 0.0 <= a.sparsity < 1.0:
        p.error("--sparsity must be in [0, 1)")
    print_allocation(scratch_init(a.data, a.sparsity, a.seed, a.output, argv[i + 1:]))


def _count_params(argv) -> None:
    """The counter's named counts of every checkpoint (:func:`checkpoint_counts`), plus the
    layer matrices' (:func:`.counts.layer_matrix_counts`) with ``--layers``."""
    from ..tools.checkpoint_counts import checkpoint_counts
    from .counts import model_counts

    p = argparse.ArgumentParser(prog="benchmark_wikitext2.py count-params")
    p.add_argument("models", nargs="+", help="LABEL=CHECKPOINT")
    p.add_argument("--layers", action="store_true", help="also count the decoder layers' attention/FFN matrices")
    a = p.parse_args(argv)
    bad = [m for m in a.models if "=" not in m]
    if bad:
        p.error(f"models are LABEL=CHECKPOINT, got {bad[0]!r}")
    count = model_counts if a.layers else checkpoint_counts
    print(json.dumps({label: count(path) for label, path in (m.split("=", 1) for m in a.models)}, indent=2))


def main(argv) -> None:
    """Runs subcommand ``argv[0]`` with ``argv[1:]``; a bad checkpoint is a one-line error."""
    sub, rest = argv[0], argv[1:]
    if sub == "flags":
        return _flags(rest)
    from ..tools.checkpoint import CheckpointError, quiet_logging

    quiet_logging()
    run = {"svd-truncate": _svd_truncate, "scratch-init": _scratch_init, "count-params": _count_params}[sub]
    try:
        run(rest)
    except CheckpointError as e:
        raise SystemExit(f"benchmark_wikitext2.py {sub}: {e}")
