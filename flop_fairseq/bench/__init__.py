"""The WikiText-2 benchmark (``make bench`` / ``make bench-full``): FLOP against SVD truncation,
AGP magnitude pruning and small dense models trained from scratch.

- :mod:`.settings`: modes, model / training / evaluation flags, FLOP's settings;
- :mod:`.settings_users`: the users'-regime benchmark's budgets, recipe split, distillation, ablation;
- :mod:`.runner`: the cached, resumable step runner and its cache key;
- :mod:`.estimate`: the cost model of a step and the simulated schedule (the run's time estimate);
- :mod:`.experiments_users`: the step graph of ``--mode quick|full`` (the users' regime: the FLOP
  recipe, SVD + fine-tuning, AGP, each with and without distillation where asked, small models,
  bands-only and whole-model budgets, the ablation, evaluations, counts, speed runs);
- :mod:`.experiments`: the previous benchmark's graph (``--mode short``);
- :mod:`.baselines`: SVD truncation to ``budget_ranks`` / ``matrix_ranks`` and the small models'
  initialisation;
- :mod:`.agp`: AGP's schedule, magnitude mask, criterion (with distillation) and finalisation;
- :mod:`.counts`: the layer matrices' parameter counts (whole-model budgets);
- :mod:`.subcommands`: the in-process helpers the steps run as processes;
- :mod:`.logs`: what is read from fairseq's logs;
- :mod:`.collect` / :mod:`.collect_users`: the results record of a run (committed under
  ``benchmarks/wikitext2/MODE``);
- :mod:`.report`, :mod:`.report_users` (+ :mod:`.report_users_sections`) and :mod:`.plot`:
  BENCHMARKS.md and its figure, from the record;
- :mod:`.sweep`: the FLOP settings sweep's grid and results (``benchmarks/wikitext2/sweep.tsv``);
- :mod:`.speed`: in-process evaluation timings (``scripts/benchmark_speed.py``);
- :mod:`.layer_speed`: training-step time of one transformer layer's matrices, dense, gated, compact;
- :mod:`.cli`: ``scripts/benchmark_wikitext2.py`` (``python -m flop_fairseq.bench``).

Nothing here is imported by the plugin: importing the package imports neither fairseq nor torch.
"""
