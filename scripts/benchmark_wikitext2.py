#!/usr/bin/env python
"""FLOP against post-hoc SVD, AGP magnitude pruning and small dense models on WikiText-2
(``make bench`` / ``make bench-full``): the entry point of :mod:`flop_fairseq.bench`.

    python scripts/benchmark_wikitext2.py --mode quick|full|short [--data DIR] [--workdir DIR]
        [--out BENCHMARKS.md] [--plot PNG] [--jobs N] [--threads N] [--report-only]

``full`` is the users'-regime benchmark, ``quick`` its pipeline check, ``short`` the previous
benchmark (whose committed record the full report quotes).

``--help`` lists the flags; ``flop_fairseq/bench/cli.py`` describes the run. The steps also
run this script's hidden subcommands (``svd-truncate``, ``scratch-init``, ``count-params``,
``flags``) as their own processes, whose ``PYTHONPATH`` puts the run's code snapshot first.
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("flop_fairseq") is None:  # not installed, no PYTHONPATH snapshot
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flop_fairseq.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
