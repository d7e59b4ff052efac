"""FLOP: Factorized Low-rank Pruning (Wang, Wohlwend & Lei, EMNLP 2020), for fairseq.

Layout, from the bottom up:

- ``flop_fairseq.core``: gates, low-rank layers and bands, the Lagrangian, the parameter
  counter, compaction. Plain PyTorch: nothing below it imports fairseq.
- ``flop_fairseq.models`` and ``flop_fairseq.criterions``: what ``--user-dir`` registers
  with fairseq (``flop_fairseq.user_dir`` is that directory; ``flop-user-dir`` prints it).
- ``flop_fairseq.tools``: fairseq-aware work shared by the CLIs, the demo and the
  benchmarks (checkpoints, conversion, compaction, the report, fairseq's log lines, the
  process runner).
- ``flop_fairseq.cli``: the console scripts (argument parsing and printing only).
- ``flop_fairseq.demo``: ``make demo``. The benchmarks sit beside the package, in the
  checkout's ``benchmarks/`` (not installed).
"""

__version__ = "0.2.0"
