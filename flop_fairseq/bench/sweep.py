"""The FLOP settings sweep's grid and results: ``benchmarks/wikitext2/sweep.tsv``.

One row per run of ``scripts/sweep_flop_settings.sh``: its name and kind (``flop``, ``agp``,
``svdft``), its settings, and once it ran, its results (valid/test perplexity, hard sparsity,
kept ranks; ``ranks`` is the svdft setting, ``kept_ranks`` what a run kept). The script reads its grid from the file (``grid``) and records each finished
run into it (``record``); the report renders the ``flop`` rows as a table::

    python -m flop_fairseq.bench.sweep grid [TSV]            # the grid, one run per line
    python -m flop_fairseq.bench.sweep record TSV -- LINE    # LINE: the run's results line
"""

import csv
import os
import sys
from collections import OrderedDict
from typing import Dict, List

from .settings import REPO

SWEEP_TSV = os.path.join(REPO, "benchmarks", "wikitext2", "sweep.tsv")
COLUMNS = ("name", "kind", "target", "updates", "warmup", "lambda_lr_scale", "gate_lr_scale", "lambda2_init",
           "ramp_end", "ranks", "valid_ppl", "test_ppl", "sparsity", "kept_ranks", "note")
# the settings each kind's grid line gives, in the order sweep_flop_settings.sh reads them
GRID_ARGS = {"flop": ("target", "updates", "warmup", "lambda_lr_scale", "gate_lr_scale", "lambda2_init"),
             "agp": ("target", "updates", "ramp_end"), "svdft": ("updates", "ranks")}
# a results line's key=value names -> columns
RESULT_KEYS = {"target": "target", "updates": "updates", "warmup": "warmup", "lambda_lr_scale": "lambda_lr_scale",
               "gate_lr_scale": "gate_lr_scale", "lambda2_init": "lambda2_init", "ramp_end": "ramp_end",
               "svd_ranks": "ranks", "ranks": "kept_ranks", "sparsity": "sparsity", "valid": "valid_ppl", "test": "test_ppl"}


def read_sweep(path: str = SWEEP_TSV) -> List[Dict[str, str]]:
    """The rows (every column a string, empty when unknown)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as e:
        raise SystemExit(f"sweep: cannot read {path}: {e.strerror}")
    if rows and set(rows[0]) != set(COLUMNS):
        raise SystemExit(f"sweep: {path}: columns must be {', '.join(COLUMNS)}")
    for row in rows:
        if row["kind"] not in GRID_ARGS:
            raise SystemExit(f"sweep: {path}: run {row['name']} has unknown kind '{row['kind']}'")
    return rows


def write_sweep(rows: List[Dict[str, str]], path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({c: row.get(c, "") for c in COLUMNS})
    os.replace(tmp, path)


def grid_lines(rows: List[Dict[str, str]]) -> List[str]:
    """``NAME KIND ARGS...`` per run, as ``sweep_flop_settings.sh`` reads them."""
    lines = []
    for row in rows:
        args = [row[c] for c in GRID_ARGS[row["kind"]]]
        if any(not a for a in args):
            raise SystemExit(f"sweep: run {row['name']} lacks one of {', '.join(GRID_ARGS[row['kind']])}")
        lines.append(" ".join([row["name"], row["kind"]] + args))
    return lines


def record(path: str, line: str) -> None:
    """Stores a results line (``NAME KIND key=value ...``) in the run's row, adding the row if new."""
    words = line.split()
    if len(words) < 2 or words[1] not in GRID_ARGS:
        raise SystemExit(f"sweep: not a results line: {line!r}")
    rows = read_sweep(path) if os.path.exists(path) else []
    row = next((r for r in rows if r["name"] == words[0]), None)
    if row is None:
        row = {c: "" for c in COLUMNS}
        row.update(name=words[0], kind=words[1])
        rows.append(row)
    for word in words[2:]:
        key, _, value = word.partition("=")
        if key in RESULT_KEYS:
            row[RESULT_KEYS[key]] = value
    write_sweep(rows, path)


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


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["grid"] and len(argv) <= 2:
        print("\n".join(grid_lines(read_sweep(argv[1] if len(argv) > 1 else SWEEP_TSV))))
    elif argv[:1] == ["record"] and len(argv) >= 4 and argv[2] == "--":
        record(argv[1], " ".join(argv[3:]))
    else:
        raise SystemExit("usage: python -m flop_fairseq.bench.sweep grid [TSV] | record TSV -- RESULTS-LINE")


if __name__ == "__main__":
    main()
