"""The results record of a run, gathered from its step directories into one small JSON file:
every number and fact the report prints (no checkpoints, no logs).

It is written next to the cache (``WORKDIR/MODE/results.json``) and, for the real modes,
committed as ``benchmarks/wikitext2/MODE/results.json``, so that ``--report-only`` renders
BENCHMARKS.md on a fresh clone without the cache.
"""

import json
import os
import platform
import shlex
import statistics
from typing import Dict, Optional

from benchmarks import REPO, RECORDS
from flop_fairseq.tools.runner import Runner

from .estimate import simulate
from .logs import flop_trajectory, parse_train, valid_curve
from .settings import budget, setup_record

RESULTS_FILE = "results.json"
TRAIN_SPEED = ("dense", "flop", "flop_all", "compact_all")


def _load(path: str):
    with open(path) as f:
        return json.load(f)


def machine_info() -> dict:
    """CPU, cores, memory and the versions of Python, torch and fairseq of this machine."""
    import fairseq
    import torch

    cpu, mem = "unknown", ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "torch": torch.__version__, "fairseq": fairseq.__version__, "platform": platform.platform()}


def data_facts(bin_dir: str) -> dict:
    """Vocabulary size (``dict.txt`` plus fairseq's specials) and token count of every split."""
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(os.path.join(bin_dir, "dict.txt"))
    tokens = {}
    for split in ("train", "valid", "test"):
        ds = data_utils.load_indexed_dataset(os.path.join(bin_dir, split), d)
        if ds is None:
            raise SystemExit(f"benchmark: {bin_dir} has no binarized {split} split")
        tokens[split] = int(ds.sizes.sum())
    return {"vocab": len(d), "tokens": tokens}


def model_facts(flop_init: str, dense_ckpt: str, dense: dict) -> dict:
    """The bands of the converted model (``band_rows``: word range, full rank, ...), the dense
    model's dropout and its band and all-prunable counts (the denominators of every fraction)."""
    from flop_fairseq.core import band_rows
    from flop_fairseq.tools.checkpoint import load_checkpoint, load_flop_model

    _, model = load_flop_model(flop_init)
    dense_cfg = load_checkpoint(dense_ckpt)["cfg"]["model"]
    return {"bands": band_rows(model), "dropout": dense_cfg.get("dropout"), **dense_counts(dense)}


def timing_facts(r: Runner) -> dict:
    """When the run began, how long it took, and the machine's load while it ran."""
    spans = list(r.span.values())
    began = min(s for s, _ in spans) if spans else None
    out = {"began": began, "elapsed_s": r.elapsed(), "summed_step_s": sum(r.wall.values()), "load": None}
    load_file = os.path.join(r.root, "loadavg.txt")
    loads = []
    if os.path.exists(load_file):
        with open(load_file) as f:
            for line in f:
                t, load, n = line.split()
                if float(t) >= (began or 0):
                    loads.append((float(load), int(n)))
    if loads:
        ls = sorted(x[0] for x in loads)
        out["load"] = {"median": statistics.median(ls), "min": ls[0], "max": ls[-1],
                       "own_processes_median": statistics.median([x[1] for x in loads])}
    return out


def _rel(a: str) -> str:
    """A path in the checkout relative to it (also inside ``LABEL=PATH`` arguments)."""
    if os.path.isabs(a) and (a == REPO or a.startswith(REPO + os.sep)):
        return os.path.relpath(a, REPO)
    return a.replace(REPO + os.sep, "")


def commands(r: Runner) -> dict:
    """Every step's commands in the order the steps were defined, as the report prints them."""
    import sys

    shown = lambda c: " ".join(shlex.quote(_rel(a)) for a in c.argv) + (f" > {c.stdout}" if c.stdout else "")  # noqa
    return {"workdir": _rel(r.root), "bin": _rel(os.path.dirname(os.path.abspath(sys.executable))),
            "steps": [[n, shown(c)] for n in r.order for c in r.steps[n].cmds]}


def run_settings(r: Runner, jobs: int, threads: int) -> dict:
    """How the run ran (``run.json`` of the run; the report-only invocation's flags otherwise)."""
    path = os.path.join(r.root, "run.json")
    return _load(path) if os.path.exists(path) else {"jobs": jobs, "threads": threads}


def kept_counts(counts: dict, method: str) -> dict:
    """``band_params`` and ``all_params`` a model keeps (bands; bands plus layer matrices): the
    compact counts, or for AGP (unstructured, dense tensors) the non-zero weights."""
    if method.startswith("agp"):
        band = counts["nonzero_prunable_params"]
        return {"band_params": band, "all_params": band + counts["nonzero_layer_matrix_params"]}
    band = counts["remaining_band_params"]
    return {"band_params": band, "all_params": band + counts["remaining_layer_matrix_params"]}


def dense_counts(counts: dict) -> dict:
    """The dense model's band and all-prunable counts."""
    return {"band_params": counts["band_params"], "all_params": counts["band_params"] + counts["layer_matrix_params"]}


def structure(r: Runner, m: dict) -> dict:
    """What the model keeps, per kind: ``ranks`` (bands), ``layer_kept`` / ``layer_rank`` (sums
    over the layer matrices) and for FLOP ``budget`` (the exact-budget allocation against the
    eval mask as trained: components added / removed, the gap) and ``trained_ranks``."""
    out = {}
    if m.get("report_step"):  # flop-report of the gated model: with the allocation, or the eval mask (plain)
        rep = _load(os.path.join(r.dir(m["report_step"]), m["report_file"]))
        out["ranks"] = [b["kept"] for b in rep["bands"]]
        if "layers" in rep:
            out.update(layer_kept=rep["layers"]["kept"], layer_rank=rep["layers"]["rank"])
        if "budget" in rep:
            out.update(trained_ranks=[b["trained_kept"] for b in rep["bands"]], budget_alloc=rep["budget"])
    if m.get("alloc_step"):
        alloc = _load(os.path.join(r.dir(m["alloc_step"]), "alloc.json"))
        out["ranks"] = alloc["ranks"]
        if alloc.get("layer_ranks"):
            out.update(layer_kept=sum(alloc["layer_ranks"]), layer_rank=sum(alloc["layer_full_ranks"]))
    return out


def model_rows(r: Runner, models: dict, counts: Dict[str, dict]) -> list:
    """One row per evaluated model: perplexities, eval speed, kept counts and fractions, sizes,
    structure, training statistics of every training run it went through."""
    dense = dense_counts(counts["dense"])
    rows = []
    for name, m in models.items():
        ev = {split: _load(os.path.join(r.dir(f"eval_{name}_{split}"), "eval.json")) for split in ("valid", "test")}
        pc = counts[name]
        kept = kept_counts(pc, m["method"])
        b = budget(m["budget"]) if m["budget"] else None
        row = {"name": name, "method": m["method"], "budget": m["budget"], "scope": b.scope if b else None,
               "target_sparsity": b.sparsity if b else None, "valid_ppl": ev["valid"]["ppl"],
               "test_ppl": ev["test"]["ppl"], "eval_tokens_per_s": ev["test"]["tokens_per_s"],
               "eval_tokens": ev["test"]["tokens"], **kept, "band_fraction": kept["band_params"] / dense["band_params"],
               "all_fraction": kept["all_params"] / dense["all_params"],
               "total_params": pc["nonzero_params"] if m["method"].startswith("agp") else pc["total_params"],
               "stored_params": pc["stored_params"], "file_mib": pc["file_bytes"] / 2**20,
               "model_mib": pc["model_bytes"] / 2**20,
               "train": [dict(parse_train(os.path.join(r.dir(st), "log.txt")), step=st) for st in m["train_steps"]]}
        row.update(structure(r, m))
        if m.get("report_step"):
            row["trajectory"] = flop_trajectory(os.path.join(r.dir(m["report_step"]), "log.txt"))
        rows.append(row)
    return rows


def _relative_paths(speed: dict) -> dict:
    """The speed record with the checkpoint and data paths relative to the checkout."""
    for m in speed.get("models", []):
        m["path"] = _rel(m["path"])
    if "data" in speed.get("config", {}):
        speed["config"]["data"] = _rel(speed["config"]["data"])
    return speed


def collect(r: Runner, models: dict, mode: str, cfg: dict, data: str, data_root: str, jobs: int,
            threads: int) -> dict:
    """The results record of a finished run in ``r``'s directory."""
    for n, out in (("params", "params.json"), ("evalspeed", "speed.json")):
        if not os.path.isfile(os.path.join(r.dir(n), out)):
            raise SystemExit(f"benchmark: {r.root} has no finished '{n}' step to report from")
    counts = _load(os.path.join(r.dir("params"), "params.json"))
    est = simulate(r, pending_only=False)
    return {
        "mode": mode, "config": cfg, "setup": setup_record(cfg), "data": data,
        "data_facts": data_facts(os.path.join(data_root, "bin")),
        "model_facts": model_facts(os.path.join(r.dir("convert_bands"), "flop_init.pt"), models["dense"]["ckpt"],
                                   counts["dense"]),
        "machine": machine_info(), "run": run_settings(r, jobs, threads), "timing": timing_facts(r),
        "estimate": {"wall_s": est["wall_s"], "summed_s": est["summed_s"]},
        "dense_curve": valid_curve(os.path.join(r.dir("dense"), "log.txt")),
        "rows": model_rows(r, models, counts),
        "train_speed": {n: parse_train(os.path.join(r.dir(f"trainspeed_{n}"), "log.txt")) for n in TRAIN_SPEED},
        "eval_speed": _relative_paths(_load(os.path.join(r.dir("evalspeed"), "speed.json"))),
        "commands": commands(r),
    }


def results_dir(mode_name: str, override: Optional[str], workdir_mode: str) -> str:
    """Where a run's record is committed: ``benchmarks/wikitext2/MODE`` for the real modes, the
    cache's own ``committed/`` for the hidden smaller variants (so they never touch the checkout)."""
    if override:
        return os.path.abspath(override)
    if mode_name in ("quick", "full"):
        return os.path.join(RECORDS, "wikitext2", mode_name)
    return os.path.join(workdir_mode, "committed")


def save_results(results: dict, directory: str) -> str:
    """Writes the record and returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, RESULTS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def load_results(directory: str) -> dict:
    path = os.path.join(directory, RESULTS_FILE)
    if not os.path.isfile(path):
        raise SystemExit(f"benchmark: no results to report from: neither a finished run in the work directory "
                         f"nor {_rel(path)}")
    try:
        return _load(path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"benchmark: {path}: unreadable results ({e})")
