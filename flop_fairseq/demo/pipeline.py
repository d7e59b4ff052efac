"""``make demo``: the whole FLOP pipeline, offline, on a generated corpus (or your data).

Steps: generate a Zipfian corpus with sequential structure -> fairseq-preprocess ->
fairseq-train a small dense adaptive-input/softmax transformer_lm -> flop-convert ->
fairseq-train --criterion flop_adaptive_loss to the target sparsity (with --distill-weight,
distilled from the dense model) -> flop-compact --target-sparsity (the exact budget) -> (with --finetune-updates) a
fairseq-train of the compact model -> fairseq-eval-lm on the dense and the pruned model. Ends with a table
and a PNG of the kept rank per band and of the expected/target sparsity over updates.

``python -m flop_fairseq.demo [--data DATA_BIN] [--workdir demo_run] [--target 0.5]`` (or ``flop-demo``)
"""

import argparse
import json
import os
import re
import shutil
import statistics
import time

from ..core.target import check_target_sparsity
from ..plugin import user_dir_path
from ..tools.fairseq_log import log_fields, parse_eval_lm
from ..tools.report import draw_kept_ranks, save_figure
from ..tools.runner import run_process, tool
from .small_model import small_model_flags

TOKENS_PER_SAMPLE = 128


def run(step: str, cmd, log_path: str, show=None) -> str:
    """Runs ``cmd``, its output to ``log_path``, printing the lines ``show`` selects; on failure
    the log's tail and a one-line error."""
    cmd = [str(c) for c in cmd]
    print(f"\n== {step}\n$ {' '.join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd))}",
          flush=True)
    with open(log_path, "w") as log:
        res = run_process(cmd, log=log, env=dict(os.environ, PYTHONUNBUFFERED="1"), show=show)
    if res["rc"] != 0:
        print("".join(res["output"].splitlines(keepends=True)[-30:]), end="")
        raise SystemExit(f"demo: step '{step}' failed (exit {res['rc']}); full log: {log_path}")
    print(f"   done in {res['wall_s']:.0f}s", flush=True)
    return res["output"]


def show_train(line: str):
    if "train_inner" in line:
        f = log_fields(line)
        text = f"update {f.get('num_updates', '?'):>5}  loss {f.get('loss', '?')}  ppl {f.get('ppl', '?')}"
        if "expected_sparsity" in f:
            text += (f"  target {float(f['target']):.3f}  expected {float(f['expected_sparsity']):.3f}"
                     f"  hard {float(f['hard_sparsity']):.3f}  lambda1 {float(f['lambda1']):.2f}")
        return text + f"  ({f.get('wps', '?')} tok/s)"
    if "valid on" in line:
        m = re.search(r"loss ([0-9.]+) \| ppl ([0-9.]+)", line)
        return f"validation: loss {m.group(1)}, ppl {m.group(2)}" if m else None
    return None


def eval_lm(data_bin: str, path: str, log_path: str, tokens_per_sample: int):
    out = run(f"fairseq-eval-lm {os.path.basename(path)}",
              [tool("fairseq-eval-lm"), data_bin, "--user-dir", user_dir_path(), "--path", path,
               "--gen-subset", "test", "--tokens-per-sample", tokens_per_sample, "--max-tokens", 4096,
               "--context-window", tokens_per_sample // 2, "--cpu"],
              log_path, show=lambda l: l.split("| ")[-1].strip() if "Perplexity" in l or "tokens/s" in l else None)
    res = parse_eval_lm(out)
    if res is None:
        raise SystemExit(f"demo: fairseq-eval-lm printed no perplexity / tokens/s line; full log: {log_path}")
    return res["ppl"], res["tokens_per_s"]


def cutoffs_for(vocab: int):
    """Adaptive cutoffs for a vocabulary: fairseq's WikiText-103 ones when they fit."""
    if vocab > 80_000:
        return [20_000, 60_000]
    return [max(2, round(vocab * 0.08)), max(3, round(vocab * 0.4))]


def parse_schedule(log: str):
    rows = []
    for line in log.splitlines():
        if "train_inner" in line and "expected_sparsity" in line:
            f = log_fields(line)
            rows.append((int(f["num_updates"]), float(f["target"]), float(f["expected_sparsity"]),
                         float(f["hard_sparsity"])))
    return rows


def plot(report: dict, schedule, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    draw_kept_ranks(a, report["bands"])
    a.set_title("kept rank per band")
    if schedule:
        u, t, e, h = zip(*schedule)
        b.plot(u, t, "k--", label="target t")
        b.plot(u, e, color="#2f6db5", label="expected sparsity s")
        b.plot(u, h, color="#d9822b", label="hard (eval-mask) sparsity")
    b.set_xlabel("update")
    b.set_ylabel("sparsity of the prunable parameters")
    b.set_title("FLOP sparsity over training")
    b.legend(fontsize=8)
    save_figure(fig, path)


def dictionary_size(data_bin: str) -> int:
    with open(os.path.join(data_bin, "dict.txt"), encoding="utf-8") as f:
        return 4 + sum(1 for _ in f)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="flop-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a fairseq-preprocessed language-modeling directory (default: generate one)")
    p.add_argument("--workdir", default="demo_run", help="where everything is written (default ./demo_run)")
    p.add_argument("--target", type=float, default=0.5, help="target sparsity of the band parameters")
    p.add_argument("--dense-updates", type=int, default=350, help="dense pre-training updates")
    p.add_argument("--prune-updates", type=int, default=300,
                   help="FLOP pruning updates (the target reached at 80%% of them)")
    p.add_argument("--finetune-updates", type=int, default=0,
                   help="fine-tuning updates of the compact model in a second run (default 0: the WikiText-2 "
                        "benchmark found pruning for the whole budget better)")
    p.add_argument("--distill-weight", type=float, default=0.0,
                   help="weight of distillation from the dense model in pruning and fine-tuning (default 0: "
                        "at this scale it did not help and doubled the pruning time; 0.5 is the criterion's)")
    p.add_argument("--eval-repeats", type=int, default=3, help="fairseq-eval-lm passes per model (median tokens/s)")
    p.add_argument("--types", type=int, default=20000, help="vocabulary of the generated corpus")
    p.add_argument("--train-tokens", type=int, default=800_000, help="training tokens of the generated corpus")
    args = p.parse_args(argv)
    if args.data and not os.path.isfile(os.path.join(args.data, "dict.txt")):
        p.error(f"--data {args.data}: not a fairseq-preprocessed directory (no dict.txt); "
                "binarize your text with fairseq-preprocess --only-source first")
    try:
        check_target_sparsity(args.target, "--target")
    except ValueError as e:
        p.error(str(e))
    for flag in ("dense_updates", "prune_updates", "eval_repeats"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.finetune_updates < 0:
        p.error("--finetune-updates must be at least 0")
    if not 0.0 <= args.distill_weight <= 1.0:
        p.error("--distill-weight must be in [0, 1]")
    work = os.path.abspath(args.workdir)
    if os.path.exists(work) and (not os.path.isdir(work) or (os.listdir(work) and not os.path.exists(
            os.path.join(work, ".flop_demo")))):  # only a directory an earlier demo made is wiped
        p.error(f"--workdir {args.workdir} exists and was not made by the demo; pass a new or empty directory")
    return args


def fresh_workdir(workdir: str) -> (str, str):
    """``(work, logs)``: the work directory emptied (it is the demo's own, parse_args checked)."""
    work = os.path.abspath(workdir)
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    open(os.path.join(work, ".flop_demo"), "w").close()
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    print(f"FLOP demo: everything goes to {work}", flush=True)
    return work, logs


def make_corpus(args, work: str, logs: str) -> str:
    """A generated Zipfian corpus, binarized: its data-bin."""
    from .corpus import generate_corpus

    print("\n== generating a Zipfian corpus with sequential structure", flush=True)
    held_out = min(60_000, max(2_000, args.train_tokens // 10))
    raw = os.path.join(work, "raw")
    stats = generate_corpus(raw, num_types=args.types, train_tokens=args.train_tokens,
                            valid_tokens=held_out, test_tokens=held_out, seed=1)
    print(f"   {stats['num_types']} types, {stats['train_tokens']:,} training tokens; reference test ppl: "
          f"unigram {stats['unigram_ppl']:.0f}, generating process {stats['model_ppl']:.0f}", flush=True)
    data_bin = os.path.join(work, "data-bin")
    run("fairseq-preprocess", [tool("fairseq-preprocess"), "--only-source", "--trainpref",
                               os.path.join(raw, "train.txt"), "--validpref", os.path.join(raw, "valid.txt"),
                               "--testpref", os.path.join(raw, "test.txt"), "--destdir", data_bin,
                               "--workers", 1], os.path.join(logs, "preprocess.log"),
        show=lambda l: l.split("| ")[-1].strip() if "[None]" in l and "types" in l else None)
    return data_bin


class Pipeline:
    """The demo's fairseq runs on one data-bin, each a named step; the paths they write."""

    def __init__(self, args, work: str, logs: str, data_bin: str):
        self.args, self.work, self.logs, self.data_bin = args, work, logs, data_bin
        cut = ",".join(map(str, cutoffs_for(dictionary_size(data_bin))))
        self.model = small_model_flags(cut) + ["--dropout", 0.1]
        self.common = [data_bin, "--task", "language_modeling", "--ddp-backend", "legacy_ddp", "--optimizer", "adam",
                       "--lr", 0.003, "--tokens-per-sample", TOKENS_PER_SAMPLE, "--max-tokens", 2048,
                       "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", 25, "--cpu", "--seed", 1,
                       "--num-workers", 0]
        self.flop = ["--user-dir", user_dir_path(), "--arch", "flop_transformer_lm", *self.model]

    def log(self, name: str) -> str:
        return os.path.join(self.logs, name)

    def train(self, what: str, log: str, flags) -> str:
        return run(f"fairseq-train: {what}", [tool("fairseq-train"), *self.common, *flags], self.log(log),
                   show=show_train)

    def dense(self) -> (str, str):
        """One dense run of all the demo's updates, saved at ``--dense-updates``: FLOP starts from
        that checkpoint, and the last one is the dense model with as many updates as the pruned
        one, so the table separates the cost of pruning from the extra training. Returns
        ``(dense, dense with the same updates)``."""
        a, dense_dir = self.args, os.path.join(self.work, "dense")
        total = a.dense_updates + a.prune_updates + a.finetune_updates
        self.train("dense transformer_lm with adaptive input/softmax", "train_dense.log",
                   ["--arch", "transformer_lm", *self.model, "--criterion", "adaptive_loss", "--max-update", total,
                    "--save-interval-updates", a.dense_updates, "--save-dir", dense_dir])
        saved = [f for f in os.listdir(dense_dir) if re.fullmatch(rf"checkpoint_\d+_{a.dense_updates}\.pt", f)]
        if not saved:
            raise SystemExit(f"demo: fairseq-train saved no checkpoint at update {a.dense_updates} in {dense_dir}")
        dense = os.path.join(dense_dir, f"checkpoint_dense{a.dense_updates}.pt")
        os.replace(os.path.join(dense_dir, saved[0]), dense)
        return dense, os.path.join(dense_dir, "checkpoint_last.pt")

    def distill(self, dense: str) -> list:
        # the dense model FLOP starts from teaches every phase: the full next-token distribution
        # gives every band's gates a signal at every token, not only at its own rare words
        w = self.args.distill_weight
        return ["--distill-teacher", dense, "--distill-weight", w] if w else []

    def prune(self, dense: str) -> (str, str):
        """flop-convert, FLOP training, flop-compact to the exact budget: ``(compact, prune log)``."""
        a = self.args
        flop_init = os.path.join(self.work, "flop_init.pt")
        run("flop-convert", [tool("flop-convert"), dense, flop_init, "--init-keep-prob", 0.8],
            self.log("convert.log"), show=lambda l: l.strip())
        prune_log = self.train(f"FLOP pruning to sparsity {a.target}", "train_flop.log", [
            *self.flop, "--criterion", "flop_adaptive_loss", "--target-sparsity", a.target,
            "--sparsity-warmup-updates", a.prune_updates * 4 // 5, *self.distill(dense),
            "--finetune-from-model", flop_init, "--max-update", a.prune_updates,
            "--save-dir", os.path.join(self.work, "flop")])
        compact = os.path.join(self.work, "compact.pt")
        # the exact budget: the gates' log_alpha rank the components, the cheapest are dropped first
        run("flop-compact", [tool("flop-compact"), os.path.join(self.work, "flop", "checkpoint_last.pt"), compact,
                             "--target-sparsity", a.target], self.log("compact.log"), show=lambda l: l.rstrip())
        return compact, prune_log

    def finetune(self, compact: str, dense: str) -> str:
        """The compact model fine-tuned ``--finetune-updates`` (itself when 0)."""
        if not self.args.finetune_updates:
            return compact
        distill = self.distill(dense)
        ft_dir = os.path.join(self.work, "finetune")
        self.train("fine-tuning the compact model", "train_finetune.log", [
            *self.flop, *(["--criterion", "distill_adaptive_loss", *distill] if distill else
                          ["--criterion", "adaptive_loss"]),
            "--finetune-from-model", compact, "--max-update", self.args.finetune_updates, "--save-dir", ft_dir])
        return os.path.join(ft_dir, "checkpoint_last.pt")

    def evaluate(self, models: dict) -> dict:
        """``{name: (test ppl, median tokens/s)}``: eval-lm's tokens/s moves by +-10% from pass to
        pass on a shared CPU, so the models' passes alternate and the median is reported."""
        runs = {name: [] for name in models}
        for i in range(self.args.eval_repeats):
            for name, path in models.items():
                runs[name].append(eval_lm(self.data_bin, path, self.log(f"eval_{name}_{i + 1}.log"),
                                          TOKENS_PER_SAMPLE))
        return {name: (r[0][0], statistics.median(s for _, s in r)) for name, r in runs.items()}


def summarize(args, work: str, report: dict, evals: dict, counts: dict) -> None:
    """The table on stdout and ``result.json``."""
    n, m = args.dense_updates, args.prune_updates + args.finetune_updates
    (dense_ppl, dense_speed), (compact_ppl, compact_speed) = evals["dense"], evals["compact"]
    dense_long_ppl = evals["dense_long"][0]
    d_total, d_band = counts["dense"]["total_params"], counts["dense"]["remaining_band_params"]
    c_total, c_band = counts["compact"]["total_params"], counts["compact"]["remaining_band_params"]
    done = f"{n} + {args.prune_updates} FLOP" + (f" + {args.finetune_updates} FT" if args.finetune_updates else "")
    rows = [("", "dense", "FLOP compact", "dense"),
            ("updates", f"{n}", done, f"{n + m}"),
            ("parameters (total_params)", f"{d_total:,}", f"{c_total:,}", f"{d_total:,}"),
            ("band parameters", f"{d_band:,}", f"{c_band:,}", f"{d_band:,}"),
            ("test perplexity", f"{dense_ppl:.2f}", f"{compact_ppl:.2f}", f"{dense_long_ppl:.2f}"),
            (f"eval tokens/s (median of {args.eval_repeats})", f"{dense_speed:,.0f}", f"{compact_speed:,.0f}", "")]
    print(f"\n== result (target sparsity {args.target}, hard sparsity {report['sparsity']:.3f}, "
          f"kept ranks {[b['kept'] for b in report['bands']]} of {[b['rank'] for b in report['bands']]})")
    for r in rows:
        print(f"   {r[0]:<31} {r[1]:>12} {r[2]:>22} {r[3]:>12}")
    with open(os.path.join(work, "result.json"), "w") as f:
        json.dump({"target": args.target, "hard_sparsity": report["sparsity"], "distill_weight": args.distill_weight,
                   "kept_ranks": [b["kept"] for b in report["bands"]], "ranks": [b["rank"] for b in report["bands"]],
                   "dense": {"updates": n, "total_params": d_total, "band_params": d_band, "test_ppl": dense_ppl,
                             "eval_tokens_per_s": dense_speed},
                   "compact": {"updates": n + m, "prune_updates": args.prune_updates,
                               "finetune_updates": args.finetune_updates, "total_params": c_total,
                               "band_params": c_band, "test_ppl": compact_ppl, "eval_tokens_per_s": compact_speed},
                   "dense_same_updates": {"updates": n + m, "test_ppl": dense_long_ppl}}, f, indent=1)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    work, logs = fresh_workdir(args.workdir)
    data_bin = args.data or make_corpus(args, work, logs)
    pipe = Pipeline(args, work, logs, data_bin)
    dense, dense_long = pipe.dense()
    compact, prune_log = pipe.prune(dense)
    rep_out = run("flop-report --json", [tool("flop-report"), compact, "--json"], pipe.log("report.log"))
    report = json.loads(rep_out[rep_out.index("{"):])
    pruned = pipe.finetune(compact, dense)
    evals = pipe.evaluate({"dense": dense, "compact": pruned})
    evals["dense_long"] = eval_lm(data_bin, dense_long, pipe.log("eval_dense_long.log"), TOKENS_PER_SAMPLE)

    from ..tools.checkpoint import quiet_logging
    from ..tools.checkpoint_counts import checkpoint_counts

    quiet_logging()
    counts = {"dense": checkpoint_counts(dense), "compact": checkpoint_counts(compact)}
    png = os.path.join(work, "flop_demo.png")
    plot(report, parse_schedule(prune_log), png)
    summarize(args, work, report, evals, counts)
    print(f"\npicture: {png}")
    print(f"demo finished in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
