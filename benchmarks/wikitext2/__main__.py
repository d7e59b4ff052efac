"""FLOP against SVD truncation + fine-tuning, AGP magnitude pruning and small dense models on
WikiText-2 (``make bench`` / ``make bench-full``).

    python -m benchmarks.wikitext2 --mode quick|full [--data DIR] [--workdir DIR] [--out BENCHMARKS.md]
                                   [--plot PNG] [--jobs N] [--threads N] [--report-only]

One dense fairseq ``transformer_lm`` (tied adaptive input/softmax) is trained once; then,
for every budget, every method of the table (:data:`.settings.METHODS`) makes its model from
it, and every model is evaluated with ``fairseq-eval-lm`` on the validation and test splits
(:mod:`.graph`). ``--mode full`` is the benchmark; ``--mode quick`` the same graph with small
D and F, a pipeline check. Writes ``--out`` (BENCHMARKS.md), a PNG of perplexity against
parameters (``--plot``, default ``docs/bench_wikitext2.png`` next to ``--out``) and the run's
results record (``benchmarks/wikitext2/MODE/results.json``, committed: ``--report-only``
renders the report from it when the work directory holds no finished run, and says so in one
line, exit status 1, when there is none).

Every step prints its commands before running them and caches its results in
``WORKDIR/MODE/STEP/`` (:class:`flop_fairseq.tools.runner.Runner`): a rerun skips finished
steps and reruns a step whose commands, inputs or code changed, or that did not finish;
``flop_fairseq/``, ``user_dir/`` and ``benchmarks/`` are copied to ``WORKDIR/MODE/code/`` and
put first on the children's ``PYTHONPATH``, so edits to the working tree during a run do not
reach it. ``--jobs`` processes go in parallel (default 2: the two cores); the speed runs go one
at a time with nothing else of this benchmark running. Every process gets ``--threads`` torch
threads (default 1: on this shared 2-core machine two OpenMP threads competing with other
processes ran ~5x slower than one).
"""

import argparse
import json
import os
import signal
import time

from benchmarks import REPO
from flop_fairseq.tools.runner import Runner

from . import settings
from .collect import collect, load_results, results_dir, save_results
from .estimate import simulate
from .graph import build_steps

# copied into the code snapshot; the benchmark's own modules are not hashed (its report and
# collection run in this process; the steps name the modules they run, Step.files)
SNAPSHOT = ("flop_fairseq", "user_dir", "benchmarks")
UNHASHED = ("benchmarks",)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wikitext2", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(settings.MODES), default="quick")
    parser.add_argument("--data", default=settings.DATA,
                        help="directory with wiki.{train,valid,test}.tokens (default ../shared/data/wikitext-2)")
    parser.add_argument("--workdir", default=settings.WORKDIR,
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
    """Runs the graph; SIGINT/SIGTERM stop its running processes (a background job, make bench &,
    ignores SIGINT) instead of orphaning them."""
    def _stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    left, whole = simulate(runner), simulate(runner, pending_only=False)
    if whole["summed_s"] > 0:
        print(f"benchmark: estimate on a machine doing nothing else (estimate.py): {left['steps']} steps left, "
              f"~{left['wall_s'] / 60:.0f} min wall-clock with --jobs {runner.jobs} ({left['summed_s'] / 60:.0f} min "
              f"of step time); the whole graph ~{whole['wall_s'] / 60:.0f} min", flush=True)
    runner.run()


def _finished(runner: Runner, models: dict) -> bool:
    """Whether the work directory holds a finished run of this graph: the parameter counts of
    every one of its models."""
    path = os.path.join(runner.dir("params"), "params.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        return set(models) <= set(json.load(f))


def _results(args, runner: Runner, mode_name: str, cfg: dict, data: str, data_root: str) -> dict:
    """Runs (unless --report-only) and collects the record; --report-only without a finished run
    in the work directory reads the committed record instead."""
    models = build_steps(runner, data, cfg, data_root)
    # preprocess writes into workdir/data/bin, outside its step directory: cached by dict.txt
    if os.path.isfile(os.path.join(data_root, "bin", "dict.txt")) and not runner.done(runner.steps["preprocess"]):
        runner.mark_done(runner.steps["preprocess"])
    committed = results_dir(mode_name, args.results, runner.root)
    if args.report_only:
        if not _finished(runner, models):
            print(f"benchmark: no finished run in {runner.root}: reporting the committed results", flush=True)
            return load_results(committed)
        for n in runner.order:
            runner.load_timing(n)
    else:
        _run(runner)
    results = collect(runner, models, args.mode, cfg, data, data_root, args.jobs, args.threads)
    with open(os.path.join(runner.root, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"benchmark: results {save_results(results, committed)}", flush=True)
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    from flop_fairseq.tools.checkpoint import quiet_logging

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
    runner = Runner(os.path.join(workdir, mode_name), args.jobs, args.threads, repo=REPO)
    if args.report_only:  # nothing runs: the children's code snapshot is not refreshed
        runner.code_dir = os.path.join(runner.root, "code")
        if os.path.exists(os.path.join(runner.root, "code_hash.txt")):
            runner.code_hash = open(os.path.join(runner.root, "code_hash.txt")).read().strip()
    else:
        _check_data(data)
        os.makedirs(runner.root, exist_ok=True)
        runner.snapshot_code(SNAPSHOT, UNHASHED)
    print(f"benchmark: mode {args.mode} (D={cfg['dense_updates']} dense updates, F={cfg['finetune_updates']} "
          f"pruning/fine-tuning updates), work directory {runner.root}", flush=True)
    start = time.time()
    results = _results(args, runner, mode_name, cfg, data, data_root)
    os.makedirs(os.path.dirname(out), exist_ok=True)  # WORKDIR/MODE/ of a report-only run that never ran
    from .plot import plot
    from .report import write_report

    plot(results, png)
    write_report(results, out, png)
    print(f"benchmark: wrote {out}\nbenchmark: plot {png}\nbenchmark: wall time {(time.time() - start) / 60:.1f} min",
          flush=True)


if __name__ == "__main__":
    main()
