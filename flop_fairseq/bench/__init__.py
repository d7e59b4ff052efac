"""The WikiText-2 benchmark (``make bench`` / ``make bench-full``): FLOP against SVD truncation,
AGP magnitude pruning and small dense models trained from scratch.

- :mod:`.settings`: modes, model / training / evaluation flags, FLOP's settings;
- :mod:`.runner`: the cached, resumable step runner and its cache key;
- :mod:`.experiments`: the step graph (dense, convert, flop, svd, svd+ft, agp, small,
  evaluations, parameter counts, speed runs);
- :mod:`.baselines`: SVD truncation to ``budget_ranks`` and the small models' initialisation;
- :mod:`.agp`: AGP's schedule, magnitude mask, criterion and finalisation;
- :mod:`.subcommands`: the in-process helpers the steps run as processes;
- :mod:`.logs`: what is read from fairseq's logs;
- :mod:`.collect`: the results record of a run (committed under ``benchmarks/wikitext2/MODE``);
- :mod:`.report` and :mod:`.plot`: BENCHMARKS.md and its figure, from the record;
- :mod:`.sweep`: the FLOP settings sweep's grid and results (``benchmarks/wikitext2/sweep.tsv``);
- :mod:`.speed`: in-process evaluation timings (``scripts/benchmark_speed.py``);
- :mod:`.layer_speed`: training-step time of one transformer layer's matrices, dense, gated, compact;
- :mod:`.cli`: ``scripts/benchmark_wikitext2.py`` (``python -m flop_fairseq.bench``).

Nothing here is imported by the plugin: importing the package imports neither fairseq nor torch.
"""
