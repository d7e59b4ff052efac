"""The short regime's section of BENCHMARKS.md, frozen: the earlier WikiText-2 regime (dense
D = 1,000 updates, F = 250 pruning updates, FLOP over all of F, bands only) and the FLOP
settings sweep run on its dense model, rendered from their committed records
(``short/results.json``, ``sweep.tsv``, and ``short/sweep_notes.md``, the sweep's reading as
written when it ran). No code runs this regime any more: its numbers are data.
"""

import csv
import datetime
import os
from collections import OrderedDict
from typing import Dict, List

from benchmarks import RECORDS

SHORT = os.path.join(RECORDS, "wikitext2", "short")
SWEEP_TSV = os.path.join(RECORDS, "wikitext2", "sweep.tsv")
METHOD_LABEL = {"dense": "dense (unpruned)", "dense+ft": "dense, F more updates (unpruned reference)",
                "flop": "FLOP", "svd": "SVD truncation (no fine-tuning)", "svd+ft": "SVD truncation + fine-tuning",
                "agp": "AGP magnitude pruning (unstructured)", "small": "small dense from scratch"}
PRUNED = ("flop", "svd", "svd+ft", "agp", "small")


def _pct(s: float) -> str:
    return f"{1 - s:.0%}"


def ranks_text(values) -> str:
    return "/".join(str(v) for v in values)


def _words(n) -> str:
    """Small counts in words, as prose writes them: ``2`` -> ``"two"``."""
    return {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six"}.get(str(n), str(n))


def read_sweep(path: str = SWEEP_TSV) -> List[Dict[str, str]]:
    """The sweep's rows (every column a string, empty when unknown)."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f, delimiter="\t"))
    except OSError as e:
        raise SystemExit(f"sweep: cannot read {path}: {e.strerror}")


def _num(text: str) -> float:
    return float(text) if text else None


def flop_settings_table(rows: List[Dict[str, str]]) -> List[str]:
    """Markdown table: one line per FLOP setting (in the grid's order) with a column per target,
    each cell ``valid ppl (hard sparsity)``; the chosen setting (note ``chosen``) in bold."""
    runs = [r for r in rows if r["kind"] == "flop" and r["valid_ppl"]]
    targets = sorted({float(r["target"]) for r in runs})
    settings = OrderedDict()
    for r in runs:
        key = (_num(r["lambda_lr_scale"]), _num(r["gate_lr_scale"]), int(r["warmup"]), _num(r["lambda2_init"]))
        entry = settings.setdefault(key, {"note": "", "cells": {}})
        entry["note"] = entry["note"] or r["note"]
        entry["cells"][float(r["target"])] = f"{float(r['valid_ppl']):.1f} ({float(r['sparsity']):.3f})"
    lines = ["| setting | " + " | ".join(f"valid ppl {1 - t:.0%} (sparsity)" for t in targets) + " |",
             "|---|" + "---:|" * len(targets)]
    for (ll, gl, w, l2), entry in settings.items():
        label = f"ll {ll:g}, gl {gl:g}, W {w}, l2 {l2:g}" + (f" ({entry['note']})" if entry["note"] else "")
        if "chosen" in entry["note"]:
            label = f"**{label}**"
        cells = [entry["cells"].get(t, "") for t in targets]
        lines.append(f"| {label} |" + "".join(f" {c} |" if c else " |" for c in cells))
    return lines


def flop_updates(rows: List[Dict[str, str]]) -> str:
    """The FLOP runs' update budget(s), e.g. ``"250"``."""
    return "/".join(sorted({r["updates"] for r in rows if r["kind"] == "flop"}, key=int))


def results_table(res: dict, by: dict) -> list:
    """The results table of a short-regime record: the unpruned models, then every budget's methods."""
    budgets = res["setup"]["budgets"]
    full_ranks = [b["rank"] for b in res["model_facts"]["bands"]]
    dense = by[("dense", None)]
    L = ["| budget (band params kept) | method | band params | % of dense bands | total params | ranks "
         "| valid ppl | test ppl | eval tok/s |",
         "|---|---|---:|---:|---:|---|---:|---:|---:|"]

    def line(x, budget_label):
        ranks = ranks_text(x["ranks"]) if x.get("ranks") else (
            ranks_text(full_ranks) if x["method"] in ("dense", "dense+ft") else "dense, sparse")
        tok = f"{x['eval_tokens_per_s']:,.0f}" + (" (no speed-up)" if x["method"] == "agp" else "")
        return (f"| {budget_label} | {METHOD_LABEL[x['method']]} | {x['band_params']:,} | "
                f"{x['band_fraction']:.1%} | {x['total_params']:,} | {ranks} | {x['valid_ppl']:.1f} | "
                f"{x['test_ppl']:.1f} | {tok} |")

    L.append(line(dense, "100% (unpruned)"))
    if ("dense+ft", None) in by:
        L.append(line(by[("dense+ft", None)], "100% (unpruned)"))
    L += [line(by[(m, s)], _pct(s)) for s in budgets for m in PRUNED]
    return L


def section(short_dir: str = SHORT, sweep_tsv: str = SWEEP_TSV) -> list:
    """The short regime's headline rows, from its committed record, and the settings sweep."""
    L = ["## Short regime (previous benchmark)\n"]
    path = os.path.join(short_dir, "results.json")
    if not os.path.isfile(path):
        return L + ["`benchmarks/wikitext2/short/results.json` is not in this checkout.\n"]
    import json

    short = json.load(open(path))
    cfg = short["config"]
    when = datetime.datetime.fromtimestamp(short["timing"]["began"]).strftime("%Y-%m-%d")
    by = {(x["method"], x["budget"]): x for x in short["rows"]}
    winners = []
    for s in short["setup"]["budgets"]:
        best = min((x for x in short["rows"] if x["budget"] == s), key=lambda x: x["test_ppl"])
        winners.append(f"{METHOD_LABEL[best['method']]} at {_pct(s)}")
    L += [f"The benchmark before this one ({when}; record `benchmarks/wikitext2/short/results.json`): the same "
          f"model and data, dense pre-training D = {cfg['dense_updates']} updates, pruning budget F = "
          f"{cfg['finetune_updates']}, FLOP over all of F without fine-tuning phase, distillation or exact "
          "budget (its hard count lands near the target), budgets of the band parameters only. Lowest test "
          f"perplexity: {'; '.join(winners)}.\n"]
    L += results_table(short, by) + ["", "The FLOP settings this benchmark uses were chosen by the sweep "
                                      "below, on the short regime's dense model (validation perplexity):\n"]
    rows = read_sweep(sweep_tsv)
    targets = sorted({r["target"] for r in rows if r["kind"] == "flop"})
    L += [f"""How FLOP's settings were chosen: a sweep (its grid and results are the table below,
`benchmarks/wikitext2/sweep.tsv`) pruned the short regime's dense model with F = {flop_updates(rows)} updates
per setting and picked on validation perplexity, one setting for all {_words(len(targets))} targets. The sweep
ran on {when} on the same dense model and data as the table above (1 thread per run, two runs at a time).
ll = `--lambda-lr-scale` (multiplier step `lambda += lr * ll * (s - t)`), gl = `--gate-lr-scale`,
W = `--sparsity-warmup-updates`, l2 = `--lambda2-init`:
"""] + flop_settings_table(rows)
    with open(os.path.join(short_dir, "sweep_notes.md")) as f:
        return L + ["", f.read(), ""]
