"""Tests of the WikiText-2 benchmark's parts that need no training: the baselines' rank budgets,
AGP's schedule and mask, the step runner's cache key, the sweep table and the report."""

import json
import os
from types import SimpleNamespace

import pytest
import torch

from flop_fairseq.bench import sweep
from flop_fairseq.bench.agp import agp_sparsity, magnitude_mask
from flop_fairseq.bench.baselines import budget_ranks
from flop_fairseq.bench.runner import Cmd, Runner, Step, step_key
from flop_fairseq.core import GatedLowRankBand


# --------------------------------------------------------------------------- budget_ranks

def wikitext2_bands():
    """The benchmark's bands: cutoffs 2000,10000 of 33,280 words, d = 128, factor 4, tied. The head
    band has its own output factor (|V_0| + 2d per component) and the dense count E_0 + P_0."""
    return [GatedLowRankBand(2000, 128, 128, tie_proj=False, dense_count=2000 * 128 + 128 * 128),
            GatedLowRankBand(8000, 32, 128), GatedLowRankBand(23280, 8, 128)]


@pytest.mark.parametrize("sparsity, ranks, kept", [
    (0.5, [60, 16, 4], 359_040),
    (0.7, [38, 10, 2], 213_824),
    (0.9, [10, 3, 1], 70_352),
    (0.95, [8, 2, 0], 34_304),
    (0.0, [120, 32, 8], 718_080),  # the head band's d^2 extra cost keeps it under full rank
])
def test_budget_ranks_of_the_benchmark_bands(sparsity, ranks, kept):
    bands = wikitext2_bands()
    assert sum(b.dense_params() for b in bands) == 719_744
    got = budget_ranks(bands, sparsity)
    costs = [b.params_per_component() for b in bands]
    assert got == ranks
    assert sum(r * c for r, c in zip(got, costs)) == kept
    # as large as fits: one more head component would break the budget
    assert kept <= (1 - sparsity) * 719_744 < kept + costs[0] or got[0] == bands[0].rank


def fake_band(dense, cost, rank):
    return SimpleNamespace(dense_params=lambda: dense, params_per_component=lambda: cost, rank=rank)


def test_budget_ranks_head_absorbs_rounding():
    # shares: 0.5 * 100 / 10 = 5 and 0.5 * 100 / 60 = 0.83 -> 1; 50 + 60 > 100, so the head gives one back
    assert budget_ranks([fake_band(100, 10, 10), fake_band(100, 60, 2)], 0.5) == [4, 1]
    # a tail rounded down leaves room the head fills: 0.5 * 200 / 80 = 1.25 -> 1, then the head 5 -> 7
    assert budget_ranks([fake_band(100, 10, 10), fake_band(200, 80, 3)], 0.5) == [7, 1]


def test_budget_ranks_refuses_a_budget_no_allocation_fits():
    with pytest.raises(SystemExit, match="no allocation of ranks fits"):
        budget_ranks([fake_band(10, 10, 1), fake_band(100, 150, 1)], 0.2)


# --------------------------------------------------------------------------- AGP

def test_agp_schedule_values():
    assert agp_sparsity(0, 0.9, 0, 200) == 0.0
    assert agp_sparsity(50, 0.9, 0, 200) == pytest.approx(0.9 * (1 - 0.75 ** 3))  # 0.5203125
    assert agp_sparsity(100, 0.9, 0, 200) == pytest.approx(0.7875)
    assert agp_sparsity(200, 0.9, 0, 200) == 0.9
    assert agp_sparsity(250, 0.9, 0, 200) == 0.9
    assert agp_sparsity(5, 0.9, 10, 200) == 0.0  # before t_0
    assert agp_sparsity(10, 0.5, 10, 10) == 0.5  # no ramp
    values = [agp_sparsity(t, 0.7, 0, 200) for t in range(201)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_magnitude_mask_exact_counts():
    w = torch.tensor([[0.5, -0.1], [0.3, -0.7]])
    assert magnitude_mask(w, 0.5).tolist() == [[True, False], [False, True]]
    w = torch.randn(7, 13, generator=torch.Generator().manual_seed(0))
    for s in (0.0, 0.1, 0.33, 0.5, 0.9, 0.99):
        keep = magnitude_mask(w, s)
        assert int((~keep).sum()) == round(s * w.numel())
        if 0 < s:  # the pruned ones are the smallest
            assert w[~keep].abs().max() <= w[keep].abs().min()


def test_magnitude_mask_keeps_pruned_entries_pruned():
    w = torch.arange(1.0, 21.0).view(4, 5)
    old = magnitude_mask(w, 0.25)  # prunes 1..5
    w2 = w.clone()
    w2[~old] = 100.0  # regrown by the optimizer: still pruned, it counts as 0
    new = magnitude_mask(w2, 0.5, old)
    assert not (new & ~old).any()
    assert int((~new).sum()) == 10
    assert new.flatten().tolist() == [False] * 10 + [True] * 10
    # ties among zeros resolved by index: a stable result
    z = torch.zeros(3, 4)
    assert magnitude_mask(z, 0.5).flatten().tolist() == [False] * 6 + [True] * 6


# --------------------------------------------------------------------------- runner cache key

def graph(root, code_hash="c0", dense_lr="0.003", extra_file=None):
    r = Runner(str(root), jobs=1, threads=1)
    r.code_hash = code_hash
    r.add(Step("dense", [Cmd(["train", "--lr", dense_lr])], outputs=[], code=False))
    r.add(Step("convert", [Cmd(["convert", "dense.pt", "flop.pt"])], outputs=[], deps=["dense"]))
    r.add(Step("report", [Cmd(["report", "flop.pt"], stdout="report.json")], outputs=[], deps=["convert"],
               files=[extra_file] if extra_file else []))
    return {n: s.key for n, s in r.steps.items()}


def test_cache_key_is_stable(tmp_path):
    assert graph(tmp_path) == graph(tmp_path / "elsewhere")
    assert step_key([Cmd(["a"])], ["k"], "h", []) == step_key([Cmd(["a"])], ["k"], "h", [])


def test_cache_key_changes_with_command_dependency_and_code(tmp_path):
    base = graph(tmp_path)
    changed = graph(tmp_path, dense_lr="0.001")  # a command: it and everything downstream
    assert all(changed[n] != base[n] for n in base)
    code = graph(tmp_path, code_hash="c1")  # the code: only the steps that run FLOP code
    assert code["dense"] == base["dense"] and code["convert"] != base["convert"] and code["report"] != base["report"]
    assert step_key([Cmd(["a"], stdout="x")], [], None, []) != step_key([Cmd(["a"])], [], None, [])
    assert step_key([Cmd(["a"])], ["k1"], None, []) != step_key([Cmd(["a"])], ["k2"], None, [])


def test_cache_key_follows_named_files(tmp_path):
    f = tmp_path / "helper.py"
    f.write_text("x = 1\n")
    one = graph(tmp_path, extra_file=str(f))
    assert one == graph(tmp_path, extra_file=str(f))
    f.write_text("x = 2\n")
    two = graph(tmp_path, extra_file=str(f))
    assert two["report"] != one["report"] and two["convert"] == one["convert"]


def test_done_needs_the_same_key(tmp_path):
    r = Runner(str(tmp_path), jobs=1, threads=1)
    step = r.add(Step("s", [Cmd(["true"])], outputs=[], code=False))
    assert not r.done(step)
    r.mark_done(step)
    assert r.done(step)
    (tmp_path / "s" / ".done").write_text("other\n")
    assert not r.done(step)


# --------------------------------------------------------------------------- sweep and report

def test_sweep_table_from_the_committed_tsv():
    rows = sweep.read_sweep()
    table = sweep.flop_settings_table(rows)
    assert table[0] == "| setting | valid ppl 50% (sparsity) | valid ppl 30% (sparsity) | valid ppl 10% (sparsity) |"
    assert "| **ll 10, gl 50, W 200, l2 500 (chosen)** | 253.9 (0.495) | 260.1 (0.708) | 321.5 (0.896) |" in table
    assert "| ll 100, gl 5, W 125, l2 50 | 330.5 (0.585) | | |" in table
    assert len(table) == 2 + 11
    assert sweep.grid_lines(rows)[-1] == "svdft_s50_flop_ranks svdft 250 91,15,1"


def test_sweep_record_adds_and_updates_rows(tmp_path):
    path = str(tmp_path / "s.tsv")
    sweep.record(path, "a flop target=0.5 updates=250 warmup=200 lambda_lr_scale=10 gate_lr_scale=50 "
                       "lambda2_init=500 sparsity=0.4950 ranks=93/16/1 valid=253.91 test=235.6")
    sweep.record(path, "a flop target=0.5 updates=250 warmup=200 lambda_lr_scale=10 gate_lr_scale=50 "
                       "lambda2_init=500 sparsity=0.5000 ranks=93/16/1 valid=250.0 test=230.0")
    rows = sweep.read_sweep(path)
    assert len(rows) == 1 and rows[0]["valid_ppl"] == "250.0" and rows[0]["kept_ranks"] == "93/16/1"
    assert sweep.grid_lines(rows) == ["a flop 0.5 250 200 10 50 500"]
    with pytest.raises(SystemExit):
        sweep.record(path, "b bogus x=1")


def fake_results(budgets=(0.9,)):
    """A minimal results record, as :mod:`flop_fairseq.bench.collect` writes it."""
    def row(name, method, budget, band, ppl, ranks=None):
        r = {"name": name, "method": method, "budget": budget, "valid_ppl": ppl + 10, "test_ppl": ppl,
             "eval_tokens_per_s": 9000.0, "eval_tokens": 1000, "band_params": band, "total_params": band + 1000,
             "stored_params": 2000, "band_fraction": band / 1000, "file_mib": 1.0, "model_mib": 0.5,
             "train": {"wps_median": 5000.0, "wps_intervals": [5000.0], "last_num_updates": 10.0}}
        if ranks:
            r["ranks"] = ranks
        return r
    rows = [row("dense", "dense", None, 1000, 200.0), row("denseft", "dense+ft", None, 1000, 190.0)]
    for s in budgets:
        rows += [row(f"flop_s{s}", "flop", s, 110, 230.0, [3, 1]), row(f"svd_s{s}", "svd", s, 100, 400.0, [2, 1]),
                 row(f"svdft_s{s}", "svd+ft", s, 100, 240.0, [2, 1]), row(f"agp_s{s}", "agp", s, 100, 220.0),
                 row(f"small_s{s}", "small", s, 100, 300.0, [2, 1])]
    rows[2]["trajectory"] = [{"num_updates": 10.0, "expected_sparsity": 0.5, "hard_sparsity": 0.49,
                              "kept_b0": 3.0, "kept_b1": 1.0}]
    speed = {"label": "dense", "params": 2000, "file_mib": 1.0, "scorer_tokens_per_s": 9000.0,
             "loss_tokens_per_s": 20000.0}
    return {
        "mode": "full", "config": {"dense_updates": 40, "finetune_updates": 10, "eval_shards": 1,
                                   "speed_updates": 8, "speed_repeats": 1, "speed_shards": 1},
        "setup": {"budgets": list(budgets), "model_flags": ["--decoder-layers", "3"], "lr": 0.003,
                  "optimizer": "adam", "tokens_per_sample": 64, "max_tokens": 512, "eval_max_tokens": 1024,
                  "seed": 1, "flop": {"warmup": 8, "gate_lr_scale": 50.0, "lambda_lr_scale": 10.0,
                                      "lambda2_init": 500.0}, "speed_sparsity": max(budgets)},
        "data": "/data/wt2", "data_facts": {"vocab": 1234, "tokens": {"train": 20480, "valid": 10, "test": 10}},
        "model_facts": {"bands": [{"band": 0, "vocab": [0, 100], "rank": 4}, {"band": 1, "vocab": [100, 1234],
                                                                               "rank": 2}], "dropout": 0.1},
        "machine": {"cpu": "cpu", "cores": 2, "memory": "1 GiB", "python": "3", "torch": "2", "fairseq": "0.12",
                    "platform": "linux"},
        "run": {"jobs": 2, "threads": 1}, "timing": {"began": 0.0, "elapsed_s": 60.0, "summed_step_s": 120.0,
                                                     "load": None},
        "rows": rows, "dense_band_params": 1000,
        "train_speed": {n: {"wps_median": 5000.0} for n in ("dense", "flop", "compact")},
        "eval_speed": {"config": {"tokens": 1000, "repeats": 1, "threads": 1}, "models": [speed]},
        "speed_tag": "90", "commands": {"workdir": "bench_run/full", "bin": ".venv/bin", "steps": [["dense", "train"]]},
    }


def test_report_only_renders_the_committed_results(tmp_path):
    pytest.importorskip("matplotlib")
    from flop_fairseq.bench.cli import main

    results = tmp_path / "committed"
    results.mkdir()
    (results / "results.json").write_text(json.dumps(fake_results()))
    out, png = tmp_path / "B.md", tmp_path / "docs" / "p.png"
    # the previous (short-regime) benchmark's report: --mode short since the users' regime became --mode full
    main(["--mode", "short", "--workdir", str(tmp_path / "nowhere"), "--report-only", "--results", str(results),
          "--out", str(out), "--plot", str(png)])
    text = out.read_text()
    assert os.path.getsize(png) > 0
    assert "(vocabulary 1,234 incl. specials; 20,480 training tokens)" in text
    assert "bands [0,100) dim 4, [100,1234) dim 2" in text
    assert "--max-tokens 512 (8 sequences/update)" in text and "(~1.00 epochs)" in text
    assert "Ranks = kept rank of bands 0/1 (full 4/2)" in text
    assert "| 100% (unpruned) | dense (unpruned) | 1,000 | 100.0% | 2,000 | 4/2 |" in text
    assert "head's softmax over 101 entries" in text and "writes 1,234 log-probabilities" in text
    assert "three transformer layers" in text
    assert "**AGP magnitude pruning (unstructured) beats FLOP** (220.0 vs 230.0)" in text
    assert "253.9 (0.495)" in text  # the sweep table
    assert "33,280" not in text and "128/32/8" not in text


def test_report_only_without_results_is_a_one_line_error(tmp_path):
    from flop_fairseq.bench.cli import main

    with pytest.raises(SystemExit, match="no results to report from"):
        main(["--mode", "full", "--workdir", str(tmp_path), "--report-only", "--results", str(tmp_path / "none"),
              "--out", str(tmp_path / "B.md")])


def test_layer_speed_measures_every_configuration():
    """The layer timing benchmark runs end to end on a tiny shape (no timing is asserted)."""
    from flop_fairseq.bench.layer_speed import SPARSITIES, kept_rank, measure

    res = measure(dim=16, ffn=32, tokens=8, repeats=1)
    models = [(r["model"], r["sparsity"]) for r in res["rows"]]
    assert models[0] == ("dense", 0.0) and ("gated", 0.0) in models
    for s in SPARSITIES[1:]:
        assert {("gated", s), ("gated (all components)", s), ("compact", s)} <= set(models)
    assert all(r["seconds"] > 0 and r["speedup"] > 0 for r in res["rows"])
    # the rank whose factors cost (1 - s) of the dense matrix
    assert kept_rank(1024, 1024, 0.5) == 256 and kept_rank(1024, 4096, 0.5) == 410
