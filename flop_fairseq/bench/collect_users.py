"""The results record of a users'-regime run (``--mode quick|full``), gathered from its step
directories: every number and fact its report prints, no checkpoints, no logs. Committed as
``benchmarks/wikitext2/full/results.json`` (see :mod:`.collect` for where records go); the
``benchmark`` field tells it from the short-regime record that file held before.
"""

import os
from typing import Dict

from . import collect
from .collect import _load, commands, data_facts, machine_info, run_settings, timing_facts
from .estimate import simulate
from .logs import flop_trajectory, parse_train, valid_curve
from .runner import Runner
from .settings_users import budget, users_record

BENCHMARK = "users-regime"  # the record's ``benchmark`` field
TRAIN_SPEED = ("dense", "flop", "flop_all", "compact_all")


def kept_counts(counts: dict, method: str) -> dict:
    """``band_params`` and ``all_params`` a model keeps (bands; bands plus layer matrices): the
    compact counts, or for AGP (unstructured, dense tensors) the non-zero weights."""
    if method.startswith("agp"):
        band = counts["nonzero_prunable_params"]
        return {"band_params": band, "all_params": band + counts["nonzero_layer_matrix_params"]}
    band = counts["remaining_band_params"]
    return {"band_params": band, "all_params": band + counts["remaining_layer_matrix_params"]}


def dense_counts(counts: dict) -> dict:
    """The dense model's band and all-prunable counts: the denominators of every fraction."""
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


def collect_users(r: Runner, models: dict, mode: str, cfg: dict, data: str, data_root: str, jobs: int,
                  threads: int) -> dict:
    """The results record of a finished users'-regime run in ``r``'s directory."""
    for n, out in (("params", "params.json"), ("evalspeed", "speed.json")):
        if not os.path.isfile(os.path.join(r.dir(n), out)):
            raise SystemExit(f"benchmark: {r.root} has no finished '{n}' step to report from")
    counts = _load(os.path.join(r.dir("params"), "params.json"))
    est = simulate(r, pending_only=False)
    return {
        "benchmark": BENCHMARK, "mode": mode, "config": cfg, "setup": users_record(cfg), "data": data,
        "data_facts": data_facts(os.path.join(data_root, "bin")),
        "model_facts": dict(collect.model_facts(os.path.join(r.dir("convert_bands"), "flop_init.pt"),
                                                models["dense"]["ckpt"]), **dense_counts(counts["dense"])),
        "machine": machine_info(), "run": run_settings(r, jobs, threads), "timing": timing_facts(r),
        "estimate": {"wall_s": est["wall_s"], "summed_s": est["summed_s"]},
        "dense_curve": valid_curve(os.path.join(r.dir("dense"), "log.txt")),
        "rows": model_rows(r, models, counts),
        "train_speed": {n: parse_train(os.path.join(r.dir(f"trainspeed_{n}"), "log.txt")) for n in TRAIN_SPEED},
        "eval_speed": collect._relative_paths(_load(os.path.join(r.dir("evalspeed"), "speed.json"))),
        "commands": commands(r),
    }


def is_users_record(res: dict) -> bool:
    return res.get("benchmark") == BENCHMARK
