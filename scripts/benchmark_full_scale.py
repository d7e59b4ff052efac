#!/usr/bin/env python
"""Full-scale speed benchmark: dense vs gated vs compact FLOP models at the WikiText-103
shapes (:mod:`flop_fairseq.bench.full_scale`); writes the "Full scale" section of BENCHMARKS.md::

    python scripts/benchmark_full_scale.py [--shapes wiki103,txl_base] [--repeats 3] [--threads 2] [--report-only]
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("flop_fairseq") is None:  # not installed, no PYTHONPATH snapshot
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flop_fairseq.bench.full_scale import main  # noqa: E402

if __name__ == "__main__":
    main()
