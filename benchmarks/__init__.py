"""The benchmarks of flop-fairseq, beside the package (``pip install`` does not ship them):
run from a checkout, as modules (``python -m benchmarks.wikitext2``), with the checkout's
environment.

- :mod:`benchmarks.wikitext2`: FLOP against SVD truncation, AGP and small dense models on
  WikiText-2 (``make bench`` / ``make bench-full``); its records under ``wikitext2/``;
- :mod:`benchmarks.full_scale`: speed, memory and size at the WikiText-103 shapes (random
  weights); its record ``full_scale/runs.jsonl``;
- :mod:`benchmarks.baselines`: the methods FLOP is compared with (SVD truncation, small
  models, AGP), and :mod:`benchmarks.agp_plugin` the fairseq user dir of AGP's criterion;
- :mod:`benchmarks.speed` / :mod:`benchmarks.layer_speed`: in-process evaluation timings of
  checkpoints; training-step time of one layer's matrices, dense, gated, compact.

Every step runs as its own process through :class:`flop_fairseq.tools.runner.Runner`.
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = os.path.dirname(os.path.abspath(__file__))  # the committed records live beside the code
