"""``python -m flop_fairseq.bench``: the WikiText-2 benchmark (same as scripts/benchmark_wikitext2.py)."""

from .cli import main

main()
