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


def shape_section(rows, shape) -> List[str]:
    rs = [r for r in rows if r.get("shape") == shape]
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
        dense = {r["repeat"]: r["tokens_per_s"] for r in by["dense"] if r["measure"] == measure and "tokens_per_s" in r}
        ratios = [r["tokens_per_s"] / dense[r["repeat"]] for r in by[n]
                  if r["measure"] == measure and "tokens_per_s" in r and dense.get(r.get("repeat"))]
        return f"{statistics.median(ratios):.2f}x" if ratios else ""

    def train_wps(n):
        runs = [r for r in by[n] if r["measure"] == "train"]
        if not runs:
            return None
        per = runs[-1]["wps_per_update"][1:] or runs[-1]["wps_per_update"]
        return statistics.median(per) if per else None

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

    ref_train = train_wps("dense")
    L = [f"### {SHAPE_TITLES[shape]}", "",
         "| model | params (total_params) | file MiB | eval-lm tok/s | vs dense | sampling tok/s | vs dense "
         "| eval-lm peak MiB | training wps | vs dense | training peak MiB |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
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
                 f"| {_fmt(stat(n, 'eval_lm', 'peak_rss_mib'))} | {_fmt(tr, ',.1f')} | {_ratio(tr, ref_train)} "
                 f"| {_fmt(train_peak[-1] if train_peak else None)} |")
    makes = [r for r in rs if r["measure"] == "make"]
    if makes:
        L += ["", "Making the checkpoints (one process each; wall time and peak resident memory):", "",
              "| checkpoint | made by | wall s | peak MiB |", "|---|---|---:|---:|"]
        L += [f"| {label(r['model'])} | {r['what']} | {r['wall_s']:.0f} | {r['peak_rss_mib']:,} |" for r in makes]
    curve = [n for n in ("gated_whole_0", "gated_whole_50", "gated_whole_80", "gated_whole_90") if train_wps(n)]
    if curve and ref_train:
        L += ["", "Training speed along a whole-model pruning run (`flop_adaptive_loss`, fast path on; "
              "dense `adaptive_loss` = 1.00x): " + ", ".join(
                  f"{'0' if n.endswith('_0') else n.rsplit('_', 1)[1]}% pruned {train_wps(n) / ref_train:.2f}x"
                  for n in curve) + "."]
    failed = sorted({f"{label(r['model'])}: {r['error']}" for r in rs if r["measure"] == "generate" and "error" in r})
    if failed:
        L += ["", "Sampling failed (no figure): " + "; ".join(failed) + "."]
    loads = [r["load"] for r in rs if r["measure"] in ("eval_lm", "generate", "train")]
    if loads:
        L += ["", f"1-minute load average at the end of each measurement: median {statistics.median(loads):.1f}, "
              f"range {min(loads):.1f}-{max(loads):.1f} (2 cores; other work shared the machine when above ~2)."]
    return L + [""]


def render(rows) -> str:
    machine = next((r for r in rows if r.get("measure") == "machine"), {})
    threads = sorted({r["threads"] for r in rows if "threads" in r})
    evals = [r for r in rows if r.get("measure") == "eval_lm"]
    gens = [r for r in rows if r.get("measure") == "generate"]
    eval_tokens = f"{evals[0]['tokens']:,}" if evals else "?"
    L = [START, "## Full scale: speed, memory and size at the WikiText-103 shapes", "",
         "Generated by `python -m benchmarks.full_scale` from `benchmarks/full_scale/runs.jsonl` "
         "(`--report-only` regenerates it). **Random weights** at the full 267,735-type vocabulary: speed, memory "
         "and size do not depend on the values, perplexities would be meaningless and are not shown. A pruned "
         "structure closes gates so that every group (each band; with the whole model, each attention/FFN "
         "matrix too) keeps the same fraction of its dense parameters, as a pruning run ending at that sparsity "
         "would, spread evenly. Gated = the training-time model (gates, full-rank factors; eval uses the "
         "deterministic mask and the fast path); compact = `flop-compact`'s output.", "",
         f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, no GPU; torch "
         f"{machine.get('torch', '?')}; {', '.join(map(str, threads))} thread(s) per process (OMP_NUM_THREADS). "
         f"`fairseq-eval-lm`: validation text, {eval_tokens} tokens, median of "
         f"{len({r.get('repeat') for r in evals}) or '?'} rounds with the models in a rotated order; sampling: "
         f"the hub interface's `generate(sampling=True)` without top-k (the full distribution at every step), "
         f"{gens[0]['generated_tokens'] if gens else '?'} new tokens after an 8-word prompt (tokens/s counts every decoder step: fairseq feeds the prompt one token a step too), median of "
         f"{len({r.get('repeat') for r in gens}) or '?'} rounds; \"vs dense\" = the median over rounds of the "
         "ratio to the dense model's figure in the same round; training: one `fairseq-train` run per model, "
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
