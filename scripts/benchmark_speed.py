#!/usr/bin/env python
"""Evaluation speed, size and perplexity of dense, gated FLOP and compact FLOP checkpoints
(:mod:`flop_fairseq.bench.speed`)::

    python scripts/benchmark_speed.py DATA_BIN --dense DENSE.pt --gated FLOP.pt --compact COMPACT.pt
        [--model LABEL=CKPT ...] [--subset valid] [--num-shards K] [--repeats 3] [--threads 1]
        [--tokens-per-sample 128] [--max-tokens 4096] [--method inprocess|eval-lm|both] [--json]
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("flop_fairseq") is None:  # not installed, no PYTHONPATH snapshot
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flop_fairseq.bench.speed import main  # noqa: E402

if __name__ == "__main__":
    main()
