"""Tests of the benchmarks' parts that need no training: the baselines' rank budgets, AGP's
schedule and mask, the step runner's cache key, the frozen sweep table, the layer timing."""

from types import SimpleNamespace

import pytest
import torch

from benchmarks.baselines.agp import agp_sparsity, magnitude_mask
from benchmarks.baselines.svd import budget_ranks
from benchmarks.wikitext2 import short_regime
from flop_fairseq.tools.runner import Cmd, Runner, Step, run_process, step_key
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
    r = Runner(str(root), jobs=1, threads=1, repo="/")
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


def test_runner_runs_steps_in_order_and_caches_them(tmp_path):
    def runner():
        r = Runner(str(tmp_path / "run"), jobs=2, threads=1, repo=str(tmp_path))
        r.add(Step("a", [Cmd(["sh", "-c", "echo one"], stdout="a.txt")], outputs=["a.txt"], code=False))
        r.add(Step("b", [Cmd(["sh", "-c", "cat ../a/a.txt; echo two"], stdout="b.txt")], outputs=["b.txt"],
                   deps=["a"], code=False))
        return r
    r = runner()
    r.run()
    # each step runs in its own directory (python -m then finds the code snapshot first)
    assert (tmp_path / "run" / "b" / "b.txt").read_text() == "one\ntwo\n"
    (tmp_path / "run" / "a" / "a.txt").write_text("cached\n")  # a rerun skips both finished steps
    r = runner()
    r.run()
    assert (tmp_path / "run" / "a" / "a.txt").read_text() == "cached\n"
    bad = Runner(str(tmp_path / "bad"), jobs=1, threads=1, repo=str(tmp_path))
    bad.add(Step("fails", [Cmd(["sh", "-c", "echo oops >&2; exit 3"])], outputs=[], code=False))
    with pytest.raises(SystemExit, match="step fails failed .exit status 3."):
        bad.run()


def test_run_process_reports_the_childs_own_peak_and_shown_lines(tmp_path, capsys):
    res = run_process(["python", "-c", "x = bytearray(300 * 2**20); print('ok'); print('skip')"],
                      show=lambda line: line.strip() if line.startswith("ok") else None)
    assert res["rc"] == 0 and res["output"] == "ok\nskip\n"
    assert 300 <= res["peak_rss_mib"] < 400
    assert capsys.readouterr().out == "   ok\n"


def test_sweep_table_from_the_committed_tsv():
    rows = short_regime.read_sweep()
    table = short_regime.flop_settings_table(rows)
    assert table[0] == "| setting | valid ppl 50% (sparsity) | valid ppl 30% (sparsity) | valid ppl 10% (sparsity) |"
    assert "| **ll 10, gl 50, W 200, l2 500 (chosen)** | 253.9 (0.495) | 260.1 (0.708) | 321.5 (0.896) |" in table
    assert "| ll 100, gl 5, W 125, l2 50 | 330.5 (0.585) | | |" in table
    assert len(table) == 2 + 11
    assert short_regime.flop_updates(rows) == "250"


def test_short_regime_section_from_its_frozen_record():
    text = "\n".join(short_regime.section())
    assert "| 10% | FLOP | 70,400 | 9.8% | 467,200 | 24/2/0 | 318.3 | 293.7 |" in text
    assert "| 50% | AGP magnitude pruning (unstructured) | 359,872 | 50.0% |" in text
    assert "with F = 250 updates\nper setting" in text and "all three targets" in text
    assert "(91/15/1) + the same fine-tuning gives valid 249.9" in text  # the sweep's notes, verbatim


def test_layer_speed_measures_every_configuration():
    """The layer timing benchmark runs end to end on a tiny shape (no timing is asserted)."""
    from benchmarks.layer_speed import SPARSITIES, kept_rank, measure

    res = measure(dim=16, ffn=32, tokens=8, repeats=1)
    models = [(r["model"], r["sparsity"]) for r in res["rows"]]
    assert models[0] == ("dense", 0.0) and ("gated", 0.0) in models
    for s in SPARSITIES[1:]:
        assert {("gated", s), ("gated (all components)", s), ("compact", s)} <= set(models)
    assert all(r["seconds"] > 0 and r["speedup"] > 0 for r in res["rows"])
    # the rank whose factors cost (1 - s) of the dense matrix
    assert kept_rank(1024, 1024, 0.5) == 256 and kept_rank(1024, 4096, 0.5) == 410
