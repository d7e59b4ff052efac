"""The "Full scale" section of BENCHMARKS.md, rendered from the full-scale benchmark's
measurement record (:mod:`benchmarks.full_scale`), and spliced between two markers so the WikiText-2
report and this one each regenerate their own part of the file."""

import collections
import os
import statistics
from typing import List

START, END = "<!-- full-scale:start -->", "<!-- full-scale:end -->"
SHAPE_TITLES = {
    "wiki103": "`transformer_lm_wiki103` shape (dense 246,932,928 parameters; 16 layers, d 1024, FFN 4096)",
    "txl_base": "`flop_transformer_xl_wt103_base` shape (dense 151,119,838 parameters; 16 layers, d 410, FFN 2100)",
}
LABELS = {"dense": "dense", "gated_whole_0": "gated, full rank (fresh `flop-convert`)"}
DENSE_PARAMS = {"wiki103": 246_932_928, "txl_base": 151_119_838}


def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    kind, scope, s = name.split("_")
    what = "bands only" if scope == "bands" else "whole model"
    return f"{kind} {what}, {s}% pruned"


def _median(rows, key):
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else None


def _fmt(v, spec=",.0f"):
    return "" if v is None else format(v, spec)


def _ratio(v, ref):
    return "" if v is None or not ref else f"{v / ref:.2f}x"


def latest(rows) -> list:
    """Per shape, model and measure, the rows of the series measured last (``--series``: a re-measurement
    replaces the figures, the record keeps every row); of the checkpoints' making and size, the last."""
    def key(r):
        return r.get("shape"), r.get("model"), r.get("measure")

    last_series, last_row = {}, {}
    for i, r in enumerate(rows):  # the record is append-only: in time order
        last_series[key(r)], last_row[key(r)] = r.get("series"), i
    return [r for i, r in enumerate(rows) if (last_row[key(r)] == i if r.get("measure") in ("make", "size")
                                              else last_series[key(r)] == r.get("series"))]


def shape_section(rows, shape) -> List[str]:
    every = [r for r in rows if r.get("shape") == shape]
    rs = [r for r in latest(rows) if r.get("shape") == shape]
    if not rs:
        return []
    names = []
    for r in rs:
        if r["model"] not in names and r["measure"] in ("eval_lm", "generate", "train"):
            names.append(r["model"])
    def key(n):  # dense first; then by scope, sparsity, gated before compact
        if n in LABELS:
            return (0, list(LABELS).index(n))
        kind, scope, s = n.split("_")
        return (1, scope, int(s), kind != "gated")

    order = sorted(names, key=key)
    by = collections.defaultdict(list)
    for r in rs:
        by[r.get("model")].append(r)

    def stat(n, measure, key):
        return _median([r for r in by[n] if r["measure"] == measure], key)

    def vs_dense(n, measure):
        """The median over rounds of the model's speed over the dense model's in the same round:
        rounds are minutes apart, so the load of a shared machine drifts less within a round."""
        # the dense figure of the same series and round, whichever series the dense row shows
        dense = {(r.get("series"), r["repeat"]): r["tokens_per_s"] for r in every
                 if r["model"] == "dense" and r["measure"] == measure and "tokens_per_s" in r}
        ratios = [r["tokens_per_s"] / dense[r.get("series"), r["repeat"]] for r in by[n]
                  if r["measure"] == measure and "tokens_per_s" in r and dense.get((r.get("series"), r.get("repeat")))]
        return f"{statistics.median(ratios):.2f}x" if ratios else ""

    def wps(runs):
        if not runs:
            return None
        per = runs[-1]["wps_per_update"][1:] or runs[-1]["wps_per_update"]
        return statistics.median(per) if per else None

    def train_wps(n):
        return wps([r for r in by[n] if r["measure"] == "train"])

    def train_vs_dense(n):
        """The ratio to the dense run of the same series (training runs are single, minutes apart)."""
        runs = [r for r in by[n] if r["measure"] == "train"]
        ref = wps([r for r in every if r["model"] == "dense" and r["measure"] == "train"
                   and runs and r.get("series") == runs[-1].get("series")])
        return train_wps(n) / ref if ref and train_wps(n) else None

    def size(n):
        return _median([r for r in by[n] if r["measure"] == "size"], "file_bytes")

    def params(n):
        if n == "dense":
            return DENSE_PARAMS[shape]
        made = [r for r in by[n] if r["measure"] == "make" and "total_params" in r]
        if made:
            return made[-1]["total_params"]
        src = f"gated_{n.split('_', 1)[1]}" if n.startswith("compact_") else None
        made = [r for r in rs if r["model"] == src and r["measure"] == "make" and "total_params" in r]
        return made[-1]["total_params"] if made else None

    def series_of(n):
        """The series the row's figures come from, per measure where they differ (no label: the first)."""
        got = {m: next((r.get("series") for r in by[n] if r["measure"] == m), "")
               for m in ("eval_lm", "generate", "train")}
        labels = {v or "first" for m, v in got.items() if any(r["measure"] == m for r in by[n])}
        if len(labels) <= 1:
            return next(iter(labels), "")
        return ", ".join(f"{m.replace('_', '-')} {v or 'first'}" for m, v in got.items()
                         if any(r["measure"] == m for r in by[n]))

    ref_train = train_wps("dense")
    L = [f"### {SHAPE_TITLES[shape]}", "",
         "| model | params (total_params) | file MiB | eval-lm tok/s | vs dense | sampling tok/s | vs dense "
         "| eval-lm peak MiB | training wps | vs dense | training peak MiB | series |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n in order:
        if n not in by or not by[n]:
            continue
        ev, gen, tr = stat(n, "eval_lm", "tokens_per_s"), stat(n, "generate", "tokens_per_s"), train_wps(n)
        train_peak = [r["peak_rss_mib"] for r in by[n] if r["measure"] == "train"]
        sz = size(n)
        name = {("txl_base", "dense"): "dense (`flop-compact` of the unpruned model: fairseq's own "
                                       "Transformer-XL does not run)",
                ("txl_base", "gated_whole_0"): "gated, full rank (freshly built)"}.get((shape, n), label(n))
        L.append(f"| {name} | {_fmt(params(n))} | {_fmt(sz / 2**20 if sz else None)} | {_fmt(ev, ',.1f')} "
                 f"| {vs_dense(n, 'eval_lm')} | {_fmt(gen, ',.2f')} | {vs_dense(n, 'generate')} "
                 f"| {_fmt(stat(n, 'eval_lm', 'peak_rss_mib'))} | {_fmt(tr, ',.1f')} "
                 f"| {_ratio(train_vs_dense(n), 1.0)} "
                 f"| {_fmt(train_peak[-1] if train_peak else None)} | {series_of(n)} |")
    makes = [r for r in rs if r["measure"] == "make"]
    if makes:
        L += ["", "Making the checkpoints (one process each; wall time and peak resident memory):", "",
              "| checkpoint | made by | wall s | peak MiB |", "|---|---|---:|---:|"]
        L += [f"| {label(r['model'])} | {r['what']} | {r['wall_s']:.0f} | {r['peak_rss_mib']:,} |" for r in makes]
    curve = [n for n in ("gated_whole_0", "gated_whole_50", "gated_whole_80", "gated_whole_90") if train_wps(n)]
    if curve and ref_train:
        L += ["", "Training speed along a whole-model pruning run (`flop_adaptive_loss`, fast path on; "
              "dense `adaptive_loss` = 1.00x): " + ", ".join(
                  f"{'0' if n.endswith('_0') else n.rsplit('_', 1)[1]}% pruned {train_vs_dense(n):.2f}x"
                  for n in curve if train_vs_dense(n)) + "."]
    failed = sorted({f"{label(r['model'])}: {r['error']}" for r in rs if r["measure"] == "generate" and "error" in r})
    if failed:
        L += ["", "Sampling failed (no figure): " + "; ".join(failed) + "."]
    loads = [r["load"] for r in rs if r["measure"] in ("eval_lm", "generate", "train")]
    if loads:
        L += ["", f"1-minute load average at the end of each measurement: median {statistics.median(loads):.1f}, "
              f"range {min(loads):.1f}-{max(loads):.1f} (2 cores; other work shared the machine when above ~2)."]
    return L + [""]


def _rounds(rows) -> str:
    """How many rounds each series holds, e.g. ``3 (series 2026-12-04) or 5 (first series)``."""
    per = collections.defaultdict(set)
    for r in rows:
        per[r.get("series")].add(r.get("repeat"))
    if len(per) <= 1:
        return str(len(next(iter(per.values()), ())) or "?")
    return " or ".join(f"{len(v)} ({'series ' + k if k else 'first series'})" for k, v in per.items())


def render(rows) -> str:
    machine = next((r for r in rows if r.get("measure") == "machine"), {})
    threads = sorted({r["threads"] for r in rows if "threads" in r})
    evals = [r for r in latest(rows) if r.get("measure") == "eval_lm"]
    gens = [r for r in latest(rows) if r.get("measure") == "generate"]
    eval_tokens = f"{evals[0]['tokens']:,}" if evals else "?"
    L = [START, "## Full scale: speed, memory and size at the WikiText-103 shapes", "",
         "Generated by `python -m benchmarks.full_scale` from `benchmarks/full_scale/runs.jsonl` "
         "(`--report-only` regenerates it). **Random weights** at the full 267,735-type vocabulary: speed, memory "
         "and size do not depend on the values, perplexities would be meaningless and are not shown. A pruned "
         "structure closes gates so that every group (each band; with the whole model, each attention/FFN "
         "matrix too) keeps the same fraction of its dense parameters, as a pruning run ending at that sparsity "
         "would, spread evenly. Gated = the training-time model (gates, full-rank factors; eval without "
         "autograd computes with a cached compact view of the deterministic mask); compact = `flop-compact`'s "
         "output. A row re-measured under `--series` shows its latest series only.", "",
         f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, no GPU; torch "
         f"{machine.get('torch', '?')}; {', '.join(map(str, threads))} thread(s) per process (OMP_NUM_THREADS). "
         f"`fairseq-eval-lm`: validation text, {eval_tokens} tokens, median of "
         f"{_rounds(evals)} rounds with the models in a rotated order; sampling: "
         f"the hub interface's `generate(sampling=True)` without top-k (the full distribution at every step), "
         f"{gens[0]['generated_tokens'] if gens else '?'} new tokens after an 8-word prompt (tokens/s counts every decoder step: fairseq feeds the prompt one token a step too), median of "
         f"{_rounds(gens)} rounds; \"vs dense\" = the median over rounds of the "
         "ratio to the dense model's figure in the same round of the same series; training: one `fairseq-train` run per model, "
         "median words/s over its updates after the first (one 512-token sequence an update at the "
         "transformer_lm shape, two 150-token segments at the Transformer-XL shape). Peak memory = the "
         "process's maximum resident set.", "",
         "**GPU figures are missing**: no GPU machine was available for this benchmark (fp16/bf16 and "
         "large-batch throughput remain to be measured).", ""]
    for shape in SHAPE_TITLES:
        L += shape_section(rows, shape)
    return "\n".join(L + [END])


def splice(text: str, section: str) -> str:
    """``text`` with the part between the markers replaced by ``section`` (appended if absent)."""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        return head + section + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def keep_section(out: str, text: str) -> str:
    """``text`` (a regenerated report) with the full-scale section ``out`` already holds."""
    if not os.path.exists(out):
        return text
    old = open(out).read()
    if START not in old or END not in old:
        return text
    return splice(text, START + old.split(START, 1)[1].split(END, 1)[0] + END)


def write_section(rows, out: str) -> None:
    text = open(out).read() if os.path.exists(out) else ""
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(splice(text, render(rows)))
    os.replace(tmp, out)
