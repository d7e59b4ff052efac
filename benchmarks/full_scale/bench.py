"""Full-scale speed benchmark: dense vs gated vs compact FLOP models at the shapes users run.

    python -m benchmarks.full_scale [--shapes wiki103,txl_base] [--repeats 3] [--threads 2]
        [--workdir bench_run/full_scale] [--runs benchmarks/full_scale/runs.jsonl] [--report-only]

Models have **random weights** (speed, memory and size do not depend on the values) at the
WikiText-103 vocabulary of 267,735 types: ``transformer_lm_wiki103`` (fairseq's dense model,
built by fairseq, then ``flop-convert`` with and without ``--flop-decoder-layers``) and the
``flop_transformer_xl_wt103_base`` preset. A pruned structure is made by closing gates so
that every group keeps the same fraction of its dense parameters (:func:`keep_fraction`),
for the bands only or for the whole model, at 50% and 80% sparsity; ``flop-compact`` makes
its compact form. Text: the WikiText-103 validation split (prompts, evaluation) and test
split (training batches), under a dictionary of their words by frequency padded with
pseudo-words to 267,735 types, so each band gets the share of tokens it gets in real text.

Each measurement is one process (its peak resident memory is its own, ``os.wait4``):
``fairseq-eval-lm`` tokens/s, sampling tokens/s through the hub interface (full
distribution at every step), ``fairseq-train`` words/s (median over updates, the first
dropped). Eval and generation take ``--repeats`` rounds, the models in a rotated order each
round, so load from other processes hits them alike; training one run per model. Every
step's output is kept in ``--workdir`` and every measurement appended to ``--runs`` (small,
committed), so a stopped run resumes where it was and the report regenerates anywhere.
"""

import argparse
import collections
import json
import os
import platform
import time

import sys

from benchmarks import RECORDS, REPO
from flop_fairseq.tools.fairseq_log import log_fields, parse_eval_lm
from flop_fairseq.tools.runner import run_process, tool

PY = sys.executable

TYPES = 267_735
DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "wikitext-103")
RUNS = os.path.join(RECORDS, "full_scale", "runs.jsonl")
SPARSITIES = (0.5, 0.8)
TRAIN_SPARSITIES = (0.5, 0.8, 0.9)  # the training curve also has 0 (fresh convert) and 90%


def tag(sparsity: float) -> str:
    """A sparsity as a model-name part, in percent: ``0.5`` -> ``"50"``."""
    return f"{int(round(sparsity * 100))}"

SHAPES = {
    "wiki103": dict(
        title="transformer_lm_wiki103 (246,932,928 parameters dense)",
        dense_arch="transformer_lm_wiki103", flop_arch="flop_transformer_lm_wiki103",
        task=["--task", "language_modeling"], whole_flags=["--flop-decoder-layers"],
        eval=["--tokens-per-sample", "512", "--max-tokens", "2048", "--context-window", "0"],
        train=["--tokens-per-sample", "512", "--max-tokens", "512"]),
    "txl_base": dict(
        title="flop_transformer_xl_wt103_base (151,119,838 parameters dense)",
        dense_arch=None, flop_arch="flop_transformer_xl_wt103_base",
        task=["--task", "truncated_bptt_lm"], whole_flags=[],
        eval=["--tokens-per-sample", "150", "--batch-size", "1"],
        train=["--tokens-per-sample", "150", "--batch-size", "2"],
        # the second shape gets the headline models only: the 2-core budget of one session
        eval_models=["dense", "gated_whole_50", "compact_bands_50", "compact_whole_50", "compact_whole_80"],
        generate_models=["dense", "gated_whole_50", "compact_whole_50", "compact_whole_80"],
        train_models=["dense", "gated_whole_0", "gated_whole_50", "gated_whole_90", "compact_whole_50"]),
}


def models(shape: str):
    """``{name: (arch, flags, criterion)}`` of every checkpoint measured at ``shape``."""
    sh = SHAPES[shape]
    out = {}
    if sh["dense_arch"]:
        out["dense"] = (sh["dense_arch"], [], "adaptive_loss")
    else:  # no working dense fairseq Transformer-XL: the compact form of the unpruned gated model
        out["dense"] = (sh["flop_arch"], [], "adaptive_loss")
    out["gated_whole_0"] = (sh["flop_arch"], sh["whole_flags"], "flop_adaptive_loss")
    for scope in ("bands", "whole"):
        flags = sh["whole_flags"] if scope == "whole" else []
        for s in SPARSITIES + ((0.9,) if scope == "whole" else ()):
            out[f"gated_{scope}_{tag(s)}"] = (sh["flop_arch"], flags, "flop_adaptive_loss")
            if s in SPARSITIES:
                out[f"compact_{scope}_{tag(s)}"] = (sh["flop_arch"], flags, "adaptive_loss")
    return out


EVAL_MODELS = ["dense"] + [f"{k}_{sc}_{tag(s)}" for sc in ("bands", "whole") for s in SPARSITIES
                           for k in ("gated", "compact")]
GENERATE_MODELS = ["dense", "gated_whole_50"] + [f"compact_{sc}_{tag(s)}" for sc in ("bands", "whole")
                                                for s in SPARSITIES]
TRAIN_MODELS = (["dense", "gated_whole_0"] + [f"gated_whole_{tag(s)}" for s in TRAIN_SPARSITIES]
                + ["gated_bands_50"] + [f"compact_whole_{tag(s)}" for s in SPARSITIES] + ["compact_bands_50"])


class Runs:
    """The append-only record of measurements (one JSON object a line)."""

    def __init__(self, path: str):
        self.path = path
        self.rows = []
        if os.path.exists(path):
            with open(path) as f:
                self.rows = [json.loads(line) for line in f if line.strip()]

    def find(self, **key):
        return [r for r in self.rows if all(r.get(k) == v for k, v in key.items())]

    def add(self, row: dict):
        row = dict(row, time=time.strftime("%Y-%m-%d %H:%M:%S"), load=os.getloadavg()[0])
        self.rows.append(row)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[full-scale] {json.dumps(row)[:300]}", flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.workdir)
        self.runs = Runs(args.runs)
        self.env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        self.user_dir = os.path.join(REPO, "user_dir")
        self.series = args.series

    def record(self, row: dict):
        """Adds a measurement of the series this run measures (``--series``)."""
        self.runs.add(dict(row, series=self.series) if self.series else row)

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def run(self, cmd, what):
        res = run_process(cmd, env=self.env)
        if res["rc"] != 0:
            raise SystemExit(f"full-scale benchmark: {what} failed (exit {res['rc']}):\n{res['output'][-3000:]}")
        return res

    def result_of(self, res) -> dict:
        line = [ln for ln in res["output"].splitlines() if ln.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT "):])

    # ---- data and checkpoints ---------------------------------------------------------------
    def data(self) -> str:
        out = self.path("data", "bin")
        if os.path.exists(os.path.join(out, "valid.bin")):
            return out
        from flop_fairseq.demo.pseudo_words import make_words
        import numpy as np

        raw = self.path("data", "raw")
        os.makedirs(raw, exist_ok=True)
        texts = {}
        for split, src, n_words in (("valid", "wiki.valid.tokens", 2048), ("train", "wiki.test.tokens", 20000)):
            lines, count = [], 0
            with open(os.path.join(self.args.data, src)) as f:
                for line in f:
                    if line.strip():
                        lines.append(line.strip())
                        count += len(line.split()) + 1
                    if count >= n_words:
                        break
            texts[split] = lines
        counts = collections.Counter()
        for name in ("wiki.valid.tokens", "wiki.test.tokens"):
            with open(os.path.join(self.args.data, name)) as f:
                counts.update(w for line in f for w in line.split())
        words = [w for w, _ in counts.most_common() if w not in ("<unk>", "<s>", "</s>", "<pad>")]  # fairseq's specials
        known = set(words)
        pad = [w for w in make_words(TYPES, np.random.default_rng(0)) if w not in known][:TYPES - 4 - len(words)]
        with open(os.path.join(raw, "dict.txt"), "w") as f:
            top = len(words) + len(pad) + 1
            f.writelines(f"{w} {top - i}\n" for i, w in enumerate(words + pad))
        for split, lines in texts.items():
            with open(os.path.join(raw, f"{split}.txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
        tmp = out + ".tmp"
        self.run([tool("fairseq-preprocess"), "--only-source", "--srcdict",
                  os.path.join(raw, "dict.txt"), "--trainpref", os.path.join(raw, "train.txt"),
                  "--validpref", os.path.join(raw, "valid.txt"), "--destdir", tmp, "--workers", "1"], "preprocess")
        os.rename(tmp, out)
        return out

    def step(self, shape, name, cmd, what):
        """Runs a checkpoint-making command once, recording its wall time and peak memory."""
        out = self.path(shape, f"{name}.pt")
        if not os.path.exists(out):
            os.makedirs(self.path(shape), exist_ok=True)
            res = self.run(cmd, what)
            extra = self.result_of(res) if "RESULT " in res["output"] else {}
            self.runs.add({"shape": shape, "model": name, "measure": "make", "what": what,
                           "wall_s": round(res["wall_s"], 1), "peak_rss_mib": round(res["peak_rss_mib"]),
                           **extra})
        if not self.runs.find(shape=shape, model=name, measure="size"):
            self.runs.add({"shape": shape, "model": name, "measure": "size", "file_bytes": os.path.getsize(out)})
        return out

    def checkpoints(self, shape, data):
        sh = SHAPES[shape]
        m = [PY, "-m", "benchmarks.full_scale.measure"]
        make = m + ["make-model"]
        ck = {}
        if shape == "wiki103":
            ck["dense"] = self.step(shape, "dense", make + [self.path(shape, "dense.pt"), "--", data, *sh["task"],
                                    "--arch", sh["dense_arch"], "--criterion", "adaptive_loss", "--cpu",
                                    "--tokens-per-sample", "512"], "random dense transformer_lm_wiki103")
            conv = tool("flop-convert")
            ck["gated_bands_0"] = self.step(shape, "gated_bands_0", [conv, ck["dense"], self.path(shape, "gated_bands_0.pt")],
                                            "flop-convert (bands)")
            ck["gated_whole_0"] = self.step(shape, "gated_whole_0", [conv, ck["dense"], self.path(shape, "gated_whole_0.pt"),
                                                                      "--flop-decoder-layers"],
                                            "flop-convert --flop-decoder-layers")
        else:
            ck["gated_whole_0"] = self.step(shape, "gated_whole_0", make + [
                self.path(shape, "gated_whole_0.pt"), "--", data, *sh["task"], "--arch", sh["flop_arch"],
                "--user-dir", self.user_dir, "--criterion", "flop_adaptive_loss", "--cpu", "--tokens-per-sample", "150",
                "--batch-size", "2"],  # truncated_bptt_lm's config needs a batch size to compose
                "random gated flop_transformer_xl_wt103_base")
            ck["gated_bands_0"] = ck["gated_whole_0"]
            ck["dense"] = self.step(shape, "dense", [tool("flop-compact"), ck["gated_whole_0"],
                                                     self.path(shape, "dense.pt")], "flop-compact of the unpruned model")
        for scope in ("bands", "whole"):
            for s in SPARSITIES + ((0.9,) if scope == "whole" else ()):
                g = f"gated_{scope}_{tag(s)}"
                ck[g] = self.step(shape, g, m + ["keep-fraction", ck[f"gated_{scope}_0"], self.path(shape, f"{g}.pt"),
                                                 "--scope", scope, "--sparsity", str(s)], f"gates closed to {s}")
                if s in SPARSITIES:
                    c = f"compact_{scope}_{tag(s)}"
                    ck[c] = self.step(shape, c, [tool("flop-compact"), ck[g],
                                                 self.path(shape, f"{c}.pt")], "flop-compact")
        return ck

    # ---- measurements -------------------------------------------------------------------------
    def eval_lm(self, shape, data, name, ckpt, repeat):
        sh = SHAPES[shape]
        res = self.run([tool("fairseq-eval-lm"), data, "--path", ckpt, "--user-dir", self.user_dir,
                        *sh["task"], *sh["eval"], "--cpu", "--gen-subset", "valid"], f"eval-lm {name}")
        parsed = parse_eval_lm(res["output"])
        self.record({"shape": shape, "model": name, "measure": "eval_lm", "repeat": repeat,
                     "tokens_per_s": parsed["tokens_per_s"], "tokens": parsed["tokens"],
                     "peak_rss_mib": round(res["peak_rss_mib"]), "threads": self.args.threads})

    def generate(self, shape, data, name, ckpt, repeat):
        cmd = [PY, "-m", "benchmarks.full_scale.measure", "generate", data, ckpt,
               "--new-tokens", str(self.args.new_tokens)]
        if shape != "wiki103":
            cmd += ["--task", SHAPES[shape]["task"][1]]
        res = run_process(cmd, env=self.env)
        if res["rc"] != 0:  # recorded, not fatal: a model without incremental decoding cannot sample
            error = res["output"].strip().splitlines()[-1][:300]
            self.record({"shape": shape, "model": name, "measure": "generate", "repeat": repeat, "error": error})
            return
        self.record({"shape": shape, "model": name, "measure": "generate", "repeat": repeat,
                     **self.result_of(res), "peak_rss_mib": round(res["peak_rss_mib"]),
                     "threads": self.args.threads})

    def train(self, shape, data, name, ckpt):
        arch, flags, criterion = models(shape)[name]
        sh = SHAPES[shape]
        cmd = [tool("fairseq-train"), data, *sh["task"], *sh["train"], "--arch", arch, *flags,
               "--user-dir", self.user_dir, "--criterion", criterion, "--finetune-from-model", ckpt,
               "--optimizer", "adam", "--lr", "1e-5", "--max-update", str(self.args.train_updates), "--cpu",
               "--log-format", "simple", "--log-interval", "1", "--disable-validation", "--no-save",
               "--ddp-backend", "legacy_ddp", "--num-workers", "0", "--seed", "1"]
        if criterion == "flop_adaptive_loss":
            sparsity = int(name.rsplit("_", 1)[1]) / 100
            cmd += ["--target-sparsity", str(sparsity)]
        res = self.run(cmd, f"train {name}")
        wps = [float(log_fields(ln)["wps"]) for ln in res["output"].splitlines()
               if "| train_inner |" in ln and "wps" in log_fields(ln)]
        self.record({"shape": shape, "model": name, "measure": "train", "wps_per_update": wps,
                     "peak_rss_mib": round(res["peak_rss_mib"]), "threads": self.args.threads,
                     "criterion": criterion})

    def shape(self, shape):
        data = self.data()
        ck = self.checkpoints(shape, data)
        sh = SHAPES[shape]
        series = self.series
        measures = self.args.measures.split(",")

        def chosen(wanted):
            return [n for n in wanted if n in ck and (not self.args.models or n in self.args.models.split(","))]

        for measure, fn, wanted in (("eval_lm", self.eval_lm, sh.get("eval_models", EVAL_MODELS)),
                                    ("generate", self.generate, sh.get("generate_models", GENERATE_MODELS))):
            names = chosen(wanted) if measure in measures else []
            for r in range(self.args.repeats if names else 0):
                order = names[r % len(names):] + names[:r % len(names)]  # rotated: drifting load hits all alike
                for name in order:
                    done = self.runs.find(shape=shape, model=name, measure=measure, series=series)
                    if not any("error" in x for x in done) and not [x for x in done if x.get("repeat") == r]:
                        fn(shape, data, name, ck[name], r)
        for name in chosen(sh.get("train_models", TRAIN_MODELS)) if "train" in measures else []:
            if not self.runs.find(shape=shape, model=name, measure="train", series=series):
                self.train(shape, data, name, ck[name])


def machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "gpu": "none"}


def main(argv=None):
    from .report import write_section

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="wiki103,txl_base", help="comma-separated: wiki103, txl_base")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds of eval-lm and sampling")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every measured process")
    p.add_argument("--train-updates", type=int, default=3, help="fairseq-train updates per training-speed run")
    p.add_argument("--new-tokens", type=int, default=24, help="tokens sampled per generation run")
    p.add_argument("--data", default=DATA, help="WikiText-103 text (wiki.valid.tokens, wiki.test.tokens)")
    p.add_argument("--workdir", default=os.path.join(REPO, "bench_run", "full_scale"))
    p.add_argument("--runs", default=RUNS, help="the measurement record (JSON lines; committed)")
    p.add_argument("--out", default=os.path.join(REPO, "BENCHMARKS.md"))
    p.add_argument("--report-only", action="store_true", help="regenerate the report from --runs; run nothing")
    p.add_argument("--series", default=None,
                   help="re-measure under this label: rows of other series do not count as done, and the report "
                        "shows each row's latest series (the record keeps them all); a stopped run resumes with "
                        "the same label")
    p.add_argument("--measures", default="eval_lm,generate,train", help="comma-separated: eval_lm, generate, train")
    p.add_argument("--models", default="", help="comma-separated model names to measure (default: every one)")
    args = p.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {unknown}; choose from {sorted(SHAPES)}")
    if not args.report_only:
        if not os.path.isfile(os.path.join(args.data, "wiki.valid.tokens")):
            raise SystemExit(f"full-scale benchmark: no WikiText-103 text in {args.data}; "
                             "give --data DIR with wiki.valid.tokens and wiki.test.tokens")
        bench = Bench(args)
        if not bench.runs.find(measure="machine"):
            bench.runs.add({"measure": "machine", **machine()})
        for shape in shapes:
            bench.shape(shape)
    write_section(Runs(args.runs).rows, args.out)
    print(f"full-scale benchmark: wrote the full-scale section of {args.out}")

