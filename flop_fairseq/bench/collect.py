"""The results of a benchmark run, gathered from its step directories into one small JSON
record: every number and every fact the report prints (no checkpoints, no logs).

The record is written next to the cache (``WORKDIR/MODE/results.json``) and, for the real
modes, under ``benchmarks/wikitext2/MODE/results.json`` in the checkout, so that
``--report-only`` renders BENCHMARKS.md on a fresh clone without the cache.
"""

import json
import os
import platform
import shlex
import statistics
from typing import Dict, Optional

from .logs import flop_trajectory, parse_train
from .runner import Runner
from .settings import REPO, VENV_BIN, setup_record, speed_sparsity, tag

RESULTS_DIR = os.path.join(REPO, "benchmarks", "wikitext2")
RESULTS_FILE = "results.json"
COUNT_KEYS = ("total_params", "stored_params", "nonzero_params", "remaining_band_params", "nonzero_prunable_params",
              "file_bytes", "model_bytes")


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


def model_facts(flop_init: str, dense_ckpt: str) -> dict:
    """The bands of the converted model (``band_rows``: word range, full rank, ...) and the
    dense model's dropout."""
    from ..core import band_rows
    from ..tools.checkpoint import load_checkpoint, load_flop_model

    _, model = load_flop_model(flop_init)
    dense_cfg = load_checkpoint(dense_ckpt)["cfg"]["model"]
    return {"bands": band_rows(model), "dropout": dense_cfg.get("dropout")}


def param_counts(r: Runner, models: dict) -> Dict[str, dict]:
    """The count-params step's counts; recounted here when its file predates the counter's
    names (a cache made by an older version of the benchmark)."""
    counts = _load(os.path.join(r.dir("params"), "params.json"))
    if all(set(COUNT_KEYS) <= set(c) for c in counts.values()):
        return counts
    from ..tools.checkpoint_counts import checkpoint_counts

    print("benchmark: params.json has the old counter's names: recounting the checkpoints", flush=True)
    return {name: checkpoint_counts(m["ckpt"]) for name, m in models.items()}


def model_rows(r: Runner, models: dict, counts: Dict[str, dict]) -> list:
    """One row per evaluated model: perplexities, eval speed, parameter counts, ranks, training."""
    dense_band = counts["dense"]["remaining_band_params"]
    rows = []
    for name, m in models.items():
        ev = {split: _load(os.path.join(r.dir(f"eval_{name}_{split}"), "eval.json")) for split in ("valid", "test")}
        pc = counts[name]
        agp = m["method"] == "agp"  # unstructured: the non-zero weights are what it keeps
        band = pc["nonzero_prunable_params"] if agp else pc["remaining_band_params"]
        total = pc["nonzero_params"] if agp else pc["total_params"]
        row = {"name": name, "method": m["method"], "budget": m["budget"], "valid_ppl": ev["valid"]["ppl"],
               "test_ppl": ev["test"]["ppl"], "eval_tokens_per_s": ev["test"]["tokens_per_s"],
               "eval_tokens": ev["test"]["tokens"], "band_params": band, "total_params": total,
               "stored_params": pc["stored_params"], "band_fraction": band / dense_band,
               "file_mib": pc["file_bytes"] / 2**20, "model_mib": pc["model_bytes"] / 2**20}
        if m.get("train_step"):
            row["train"] = parse_train(os.path.join(r.dir(m["train_step"]), "log.txt"))
        if m["method"] == "flop":
            report = _load(os.path.join(r.dir(m["train_step"]), "report.json"))
            row["hard_sparsity"] = report["sparsity"]
            row["trajectory"] = flop_trajectory(os.path.join(r.dir(m["train_step"]), "log.txt"))
            row["ranks"] = [b["kept"] for b in report["bands"]]
        if m.get("alloc_step"):
            row["ranks"] = _load(os.path.join(r.dir(m["alloc_step"]), "alloc.json"))["ranks"]
        rows.append(row)
    return rows


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


def _shown(argv, stdout) -> str:
    """A command as the report prints it: paths in the checkout relative to it (also inside
    ``LABEL=PATH`` arguments)."""
    def rel(a):
        if os.path.isabs(a) and (a == REPO or a.startswith(REPO + os.sep)):
            return os.path.relpath(a, REPO)
        return a.replace(REPO + os.sep, "")
    return " ".join(shlex.quote(rel(a)) for a in argv) + (f" > {stdout}" if stdout else "")


def commands(r: Runner) -> dict:
    """Every step's commands in the order the steps were defined, as the report prints them."""
    rel = lambda p: os.path.relpath(p, REPO)  # noqa: E731
    return {"workdir": rel(r.root), "bin": rel(VENV_BIN),
            "steps": [[n, _shown(c.argv, c.stdout)] for n in r.order for c in r.steps[n].cmds]}


def run_settings(r: Runner, jobs: int, threads: int) -> dict:
    """How the run ran (``run.json`` of the run; the report-only invocation's flags otherwise)."""
    path = os.path.join(r.root, "run.json")
    return _load(path) if os.path.exists(path) else {"jobs": jobs, "threads": threads}


def _relative_paths(speed: dict) -> dict:
    """benchmark_speed's record with the checkpoint and data paths relative to the checkout."""
    rel = lambda p: os.path.relpath(p, REPO) if os.path.isabs(p) else p  # noqa: E731
    for m in speed.get("models", []):
        m["path"] = rel(m["path"])
    if "data" in speed.get("config", {}):
        speed["config"]["data"] = rel(speed["config"]["data"])
    return speed


def collect(r: Runner, models: dict, mode: str, cfg: dict, data: str, data_root: str, jobs: int,
            threads: int) -> dict:
    """The results record of a finished run in ``r``'s directory."""
    for n, out in (("params", "params.json"), ("evalspeed", "speed.json")):
        if not os.path.isfile(os.path.join(r.dir(n), out)):
            raise SystemExit(f"benchmark: {r.root} has no finished '{n}' step to report from")
    counts = param_counts(r, models)
    rows = model_rows(r, models, counts)
    bin_dir = os.path.join(data_root, "bin")
    return {
        "mode": mode, "config": cfg, "setup": setup_record(cfg), "data": data,
        "data_facts": data_facts(bin_dir),
        "model_facts": model_facts(os.path.join(r.dir("convert"), "flop_init.pt"), models["dense"]["ckpt"]),
        "machine": machine_info(), "run": run_settings(r, jobs, threads), "timing": timing_facts(r),
        "rows": rows, "dense_band_params": counts["dense"]["remaining_band_params"],
        "train_speed": {n: parse_train(os.path.join(r.dir(f"trainspeed_{n}"), "log.txt"))
                        for n in ("dense", "flop", "compact")},
        "eval_speed": _relative_paths(_load(os.path.join(r.dir("evalspeed"), "speed.json"))),
        "speed_tag": tag(speed_sparsity()), "commands": commands(r),
    }


def results_dir(mode_name: str, override: Optional[str], workdir_mode: str) -> str:
    """Where a run's record is committed: ``benchmarks/wikitext2/MODE`` for the real modes, the
    cache's own ``committed/`` for the hidden smaller variants (so they never touch the checkout)."""
    if override:
        return os.path.abspath(override)
    if mode_name in ("quick", "full", "short"):
        return os.path.join(RESULTS_DIR, mode_name)
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
                         f"nor {os.path.relpath(path, REPO)}")
    try:
        return _load(path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"benchmark: {path}: unreadable results ({e})")
