"""FLOP against post-hoc SVD, AGP magnitude pruning and small dense models on WikiText-2.

    python scripts/benchmark_wikitext2.py --mode quick|full|short [--data DIR] [--workdir DIR]
                                          [--out BENCHMARKS.md] [--plot PNG] [--jobs N] [--threads N]
                                          [--report-only]

One dense fairseq ``transformer_lm`` (tied adaptive input/softmax) is trained once; then,
for every budget, FLOP and the baselines are made from it and evaluated with
``fairseq-eval-lm`` on the validation and test splits. ``--mode full`` is the users'-regime
benchmark (:mod:`flop_fairseq.bench.experiments_users`: longer pre-training, the FLOP recipe
with fine-tuning, exact budgets and distillation, whole-model budgets, an ablation);
``--mode quick`` the same graph with small D and F, a pipeline check; ``--mode short`` the
previous benchmark (:mod:`flop_fairseq.bench.experiments`, D = 1000, F = 250, bands only),
whose record ``benchmarks/wikitext2/short/results.json`` the full report quotes. Writes
``--out`` (BENCHMARKS.md), a PNG of perplexity against parameters (``--plot``, default
``docs/bench_wikitext2.png`` next to ``--out``) and the run's results record
(``benchmarks/wikitext2/MODE/results.json``, committed: ``--report-only`` renders the report
from it when the work directory holds no finished run, and says so in one line, exit status
1, when there is none).

Every step prints its commands before running them and caches its results in
``WORKDIR/MODE/STEP/``: a rerun skips finished steps and reruns a step whose commands, inputs
or code changed, or that did not finish; ``flop_fairseq/`` and ``user_dir/`` are copied to
``WORKDIR/MODE/code/`` and put first on the children's ``PYTHONPATH``, so edits to the
working tree during a run do not reach it. ``--jobs`` processes go in parallel (default 2:
the two cores); the speed runs go one at a time with nothing else of this script running.
Every process gets ``--threads`` torch threads (default 1: on this shared 2-core machine two
OpenMP threads competing with other processes ran ~5x slower than one).
"""

import argparse
import json
import os
import sys
import time

from . import settings
from .collect import RESULTS_FILE, collect, load_results, results_dir, save_results
from .collect_users import collect_users, is_users_record
from .estimate import simulate
from .experiments import build_steps
from .experiments_users import build_users_steps
from .runner import Runner
from .settings import REPO

# the step graph and the record of each mode: the previous benchmark's, or the users' regime
GRAPHS = {"short": (build_steps, collect)}
USERS_GRAPH = (build_users_steps, collect_users)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="benchmark_wikitext2.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(settings.MODES), default="quick")
    parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "wikitext-2"),
                        help="directory with wiki.{train,valid,test}.tokens (default ../shared/data/wikitext-2)")
    parser.add_argument("--workdir", default=os.path.join(REPO, "bench_run"),
                        help="where every step's outputs are cached (default bench_run/)")
    parser.add_argument("--out", default=None,
                        help="report (default: BENCHMARKS.md for --mode full, WORKDIR/MODE/BENCHMARKS.md otherwise, "
                             "so a quick run does not replace the full-mode results)")
    parser.add_argument("--plot", default=None, help="PNG (default docs/bench_wikitext2.png next to --out)")
    parser.add_argument("--jobs", type=int, default=2, help="training runs in parallel (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--updates-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--eval-shards", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results", default=None, help=argparse.SUPPRESS)  # where the results record goes
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite --out and the plot: from the finished steps in the work directory, "
                             "else from the committed results (benchmarks/wikitext2/MODE/results.json)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be >= 1")
    if args.updates_scale <= 0 or (args.eval_shards is not None and args.eval_shards < 1):
        parser.error("--updates-scale must be > 0 and --eval-shards >= 1")
    return args


def _check_data(data: str) -> None:
    for split in ("train", "valid", "test"):
        if not os.path.isfile(os.path.join(data, f"wiki.{split}.tokens")):
            raise SystemExit(f"benchmark: {data} has no wiki.{split}.tokens (give the WikiText-2 directory "
                             f"with --data)")


def _run(runner: Runner) -> None:
    # a background job (make bench &) ignores SIGINT; make SIGINT/SIGTERM stop the running
    # steps' processes (Runner.run terminates them on any exception) instead of orphaning them
    import signal

    def _stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    runner.run()


def _committed(args, committed: str) -> dict:
    """The committed record of the mode; for the users' regime, a record of the previous
    benchmark (the file it replaces) counts as none."""
    res = load_results(committed)
    if args.mode != "short" and not is_users_record(res):
        raise SystemExit(f"benchmark: no results to report from: {os.path.join(committed, RESULTS_FILE)} holds the "
                         f"previous (short-regime) benchmark's record, not this one's; run --mode {args.mode} first")
    return res


def _finished(runner: Runner, models: dict) -> bool:
    """Whether the work directory holds a finished run of this graph: the parameter counts of
    every one of its models (a work directory of the other benchmark has other models)."""
    path = os.path.join(runner.dir("params"), "params.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        return set(models) <= set(json.load(f))


def _print_estimate(runner: Runner) -> None:
    """What estimate.py's cost model expects of the steps left (and of the whole graph)."""
    left, whole = simulate(runner), simulate(runner, pending_only=False)
    if whole["summed_s"] > 0:
        print(f"benchmark: estimate on a machine doing nothing else (estimate.py): {left['steps']} steps left, "
              f"~{left['wall_s'] / 60:.0f} min wall-clock with --jobs {runner.jobs} ({left['summed_s'] / 60:.0f} min "
              f"of step time); the whole graph ~{whole['wall_s'] / 60:.0f} min", flush=True)


def _results(args, runner: Runner, mode_name: str, cfg: dict, data: str, data_root: str) -> dict:
    """Runs (unless --report-only) and collects the record; --report-only without a finished run
    in the work directory reads the committed record instead."""
    build, gather = GRAPHS.get(args.mode, USERS_GRAPH)
    models = build(runner, data, cfg, data_root)
    # preprocess writes into workdir/data/bin, outside its step directory: cached by dict.txt
    if os.path.isfile(os.path.join(data_root, "bin", "dict.txt")) and not runner.done(runner.steps["preprocess"]):
        runner.mark_done(runner.steps["preprocess"])
    committed = results_dir(mode_name, args.results, runner.root)
    if args.report_only:
        if not _finished(runner, models):
            print(f"benchmark: no finished run in {runner.root}: reporting the committed results", flush=True)
            return _committed(args, committed)
        for n in runner.order:
            runner.load_timing(n)
    else:
        _print_estimate(runner)
        _run(runner)
    results = gather(runner, models, args.mode, cfg, data, data_root, args.jobs, args.threads)
    with open(os.path.join(runner.root, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"benchmark: results {save_results(results, committed)}", flush=True)
    return results


def _short_record():
    """The previous benchmark's committed record (the users' report quotes it), or None."""
    path = os.path.join(results_dir("short", None, ""), RESULTS_FILE)
    return load_results(os.path.dirname(path)) if os.path.isfile(path) else None


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .subcommands import NAMES, main as subcommand

    if argv and argv[0] in NAMES:
        return subcommand(argv)
    args = parse_args(argv)
    from ..tools.checkpoint import quiet_logging

    quiet_logging()  # the counts and the plot import fairseq and matplotlib, which log at INFO/DEBUG
    data = os.path.abspath(args.data)
    mode_name, cfg = settings.mode_config(args.mode, args.updates_scale, args.eval_shards)
    workdir = os.path.abspath(args.workdir)
    if args.out is None:
        out = (os.path.join(REPO, "BENCHMARKS.md") if mode_name == "full"
               else os.path.join(workdir, mode_name, "BENCHMARKS.md"))
    out = os.path.abspath(args.out or out)
    png = os.path.abspath(args.plot or os.path.join(os.path.dirname(out), "docs", "bench_wikitext2.png"))
    data_root = os.path.join(workdir, "data")  # the binarized corpus, shared by the modes
    runner = Runner(os.path.join(workdir, mode_name), args.jobs, args.threads)
    if args.report_only:  # nothing runs: the children's code snapshot is not refreshed
        runner.code_dir = os.path.join(runner.root, "code")
        if os.path.exists(os.path.join(runner.root, "code_hash.txt")):
            runner.code_hash = open(os.path.join(runner.root, "code_hash.txt")).read().strip()
    else:
        _check_data(data)
        os.makedirs(runner.root, exist_ok=True)
        runner.snapshot_code()
    print(f"benchmark: mode {args.mode} (D={cfg['dense_updates']} dense updates, F={cfg['finetune_updates']} "
          f"pruning/fine-tuning updates), work directory {runner.root}", flush=True)
    start = time.time()
    results = _results(args, runner, mode_name, cfg, data, data_root)
    os.makedirs(os.path.dirname(out), exist_ok=True)  # WORKDIR/MODE/ of a report-only run that never ran
    if args.mode == "short":
        from .plot import plot
        from .report import write_report

        plot(results, png)
        write_report(results, out, png)
    else:
        from .plot import plot_users
        from .report_users import write_users_report

        plot_users(results, png)
        write_users_report(results, _short_record(), out, png)
    print(f"benchmark: wrote {out}\nbenchmark: plot {png}\nbenchmark: wall time {(time.time() - start) / 60:.1f} min",
          flush=True)
