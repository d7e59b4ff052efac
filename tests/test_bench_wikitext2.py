"""Tests of the WikiText-2 benchmark that need no training: its step graph (every
method at every budget, the same updates for every method, distillation where and only where it
is asked for), the time estimate, the SVD layer allocation, the dense curve and the report."""

import copy
import json
import os
from types import SimpleNamespace

import pytest

from benchmarks.baselines.svd import matrix_ranks
from benchmarks.wikitext2 import settings
from benchmarks.wikitext2.estimate import simulate
from benchmarks.wikitext2.graph import build_steps, model_name
from benchmarks.wikitext2.logs import valid_curve
from benchmarks.wikitext2.settings import ABLATION_BUDGET, BUDGETS, DISTILL_BUDGETS, phases
from flop_fairseq.tools.runner import Runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADLINE = ("flop", "svd+ft", "agp", "small")


def graph(tmp_path, mode="full"):
    _, cfg = settings.mode_config(mode)
    r = Runner(str(tmp_path / mode), jobs=2, threads=1, repo=REPO)
    r.code_dir, r.code_hash = str(tmp_path / "code"), "c0"
    return r, cfg, build_steps(r, "/data/wt2", cfg, str(tmp_path / "data"))


def train_cmds(r, m):
    """The fairseq-train commands of a model's training steps."""
    return [c.argv for st in m["train_steps"] for c in r.steps[st].cmds if c.argv[0].endswith("fairseq-train")]


def max_update(argv) -> int:
    return int(argv[argv.index("--max-update") + 1])


def test_graph_has_every_method_at_every_budget(tmp_path):
    r, cfg, models = graph(tmp_path)
    assert [b.key for b in BUDGETS] == ["b50", "b70", "b90", "a50", "a70"]
    for b in BUDGETS:
        for method in HEADLINE:
            assert models[model_name(method, b)]["budget"] == b.key
        kd = {m for m in ("flop+kd", "svd+ft+kd", "agp+kd") if model_name(m, b) in models}
        assert kd == ({"flop+kd", "svd+ft+kd", "agp+kd"} if b.key in DISTILL_BUDGETS else set())
    ab = next(b for b in BUDGETS if b.key == ABLATION_BUDGET)
    assert {"flop-plain", "flop-p30", "flop-p60", "flop-p90"} <= {m["method"] for m in models.values()
                                                                    if m["budget"] == ab.key}
    assert {"dense", "denseft"} <= set(models)
    for name in models:  # every model is evaluated on both splits and counted
        assert {f"eval_{name}_valid", f"eval_{name}_test"} <= set(r.steps)
        assert f"{name}=" in " ".join(r.steps["params"].cmds[0].argv)


def test_every_method_gets_the_same_updates(tmp_path):
    r, cfg, models = graph(tmp_path)
    D, F = cfg["dense_updates"], cfg["finetune_updates"]
    ph = phases(F)
    assert (ph["prune"], ph["finetune"]) == (round(0.6 * F), F - round(0.6 * F))
    # FLOP: all of F, the target reached at 0.8 F; the split variants: prune, then fine-tune
    flop = train_cmds(r, models["flop_b50"])
    assert [max_update(a) for a in flop] == [F]
    assert flop[0][flop[0].index("--sparsity-warmup-updates") + 1] == str(round(0.8 * F))
    for name, m in models.items():
        total = sum(max_update(a) for a in train_cmds(r, m))
        want = {"dense": D, "small": D + F}.get(m["method"], F)
        assert total == want, (name, total, want)
    for b in BUDGETS:  # the 60% split everywhere, 30% and 90% at 50% of the bands
        assert [max_update(a) for a in train_cmds(r, models[f"flopp60_{b.key}"])] == [ph["prune"], ph["finetune"]]
        assert (f"flopp30_{b.key}" in models) is (b.key == "b50")
    assert [max_update(a) for a in train_cmds(r, models["flopp30_b50"])] == [round(0.3 * F), F - round(0.3 * F)]
    prune = train_cmds(r, models["flopp90_b50"])[0]
    assert max_update(prune) == round(0.9 * F)
    assert prune[prune.index("--sparsity-warmup-updates") + 1] == str(round(0.8 * round(0.9 * F)))
    assert models["flopp90_b50"]["method"] == "flop-p90"


def test_distillation_only_where_asked_with_the_dense_teacher(tmp_path):
    r, cfg, models = graph(tmp_path)
    teacher = models["dense"]["ckpt"]
    for name, m in models.items():
        for argv in train_cmds(r, m):
            if m["method"].endswith("+kd"):
                assert argv[argv.index("--distill-teacher") + 1] == teacher, name
                assert "--distill-chunk-tokens" in argv
            else:
                assert "--distill-teacher" not in argv, name
    # the compact models' fine-tuning runs distil through distill_adaptive_loss
    ft = train_cmds(r, models["svdftkd_b50"])[0]
    assert ft[ft.index("--criterion") + 1] == "distill_adaptive_loss"
    prune = train_cmds(r, models["flopkd_b50"])[0]
    assert prune[prune.index("--criterion") + 1] == "flop_adaptive_loss"
    ft = train_cmds(r, models["flopp60_b50"])[1]
    assert ft[ft.index("--criterion") + 1] == "adaptive_loss"


def test_whole_model_budgets_prune_the_layers(tmp_path):
    r, cfg, models = graph(tmp_path)
    for key, whole in (("b70", False), ("a70", True)):
        prune = train_cmds(r, models[f"flop_{key}"])[0]
        assert ("--flop-decoder-layers" in prune) is whole
        assert (r.steps[f"convert_{'all' if whole else 'bands'}"].name in r.steps[f"flopall_{key}"].deps)
        agp = train_cmds(r, models[f"agp_{key}"])[0]
        assert ("--agp-layers" in agp) is whole
        finalize = r.steps[f"agp_{key}"].cmds[1].argv
        assert ("--layers" in finalize) is whole
        small = r.steps[f"small_{key}"].cmds[0].argv
        assert ("--flop-decoder-layers" in small) is whole
    # FLOP compacts to the exact budget; the ablation also as trained
    compact = [c.argv for c in r.steps["flopall_a50"].cmds if c.argv[0].endswith("flop-compact")][0]
    assert compact[-2:] == ["--target-sparsity", "0.5"]
    plain = [c.argv for c in r.steps["flopall_b50"].cmds if c.argv[0].endswith("flop-compact")]
    assert [("--target-sparsity" in a) for a in plain] == [True, False]
    assert models["flop_a50"]["ckpt"].endswith("compact_exact.pt") and models["flopplain_b50"]["method"] == "flop-plain"
    assert "flopplain_a50" not in models


def test_a_method_is_one_entry_of_the_table(tmp_path, monkeypatch):
    """A FLOP variant (extra fairseq-train flags) and an SVD variant (its own flop-convert flags
    and truncation) added to METHODS get their own steps, models and labels."""
    from benchmarks.wikitext2.settings import METHODS, Method

    monkeypatch.setitem(METHODS, "flop-frozen", Method("FLOP, frozen mask", "flop", ("#000000", "x", "-"),
                                                       budgets=("b70",), flags=("--freeze-mask-update", "400")))
    monkeypatch.setitem(METHODS, "wsvd+ft", Method("whitened SVD + fine-tuning", "svd_ft", budgets=("a50",),
                                                   convert=("--calibration", "{bin}"), truncate=("--rule", "x")))
    r, cfg, models = graph(tmp_path)
    prune = train_cmds(r, models["flopfrozen_b70"])[0]
    assert prune[-4:-2] == ["--finetune-from-model", r.steps["convert_bands"].cmds[0].argv[2]]
    assert "--freeze-mask-update" in prune and "--freeze-mask-update" not in train_cmds(r, models["flop_b70"])[0]
    assert models["flopfrozen_b70"]["ckpt"].endswith("flopfrozen_b70/compact_exact.pt")
    convert = r.steps["convert_all_wsvdft"].cmds[0].argv
    assert convert[-3:] == ["--flop-decoder-layers", "--calibration", str(tmp_path / "data" / "bin")]
    truncate = r.steps["svd_a50_wsvdft"].cmds[0].argv
    assert truncate[-2:] == ["--rule", "x"] and truncate[4].endswith("convert_all_wsvdft/flop_init.pt")
    assert models["wsvdft_a50"]["alloc_step"] == "svd_a50_wsvdft" and "svd_a50" in r.steps  # the plain one stays
    assert {"flopfrozen_b70_valid", "wsvdft_a50_test"} <= {n[len("eval_"):] for n in r.steps if n.startswith("eval_")}


def test_full_mode_fits_the_time_budget(tmp_path):
    """estimate.py's cost model: the full graph within ~2.5 h of wall-clock on 2 quiet cores."""
    r, cfg, _ = graph(tmp_path)
    est = simulate(r)
    assert 100 * 60 < est["wall_s"] < 165 * 60
    assert est["wall_s"] >= est["summed_s"] / 2  # two jobs at once at best
    assert all(s.est_s > 0 for s in r.steps.values())


def test_matrix_ranks_keep_the_same_fraction_of_every_matrix():
    def m(i, o):
        return SimpleNamespace(rank=min(i, o), dense_params=lambda: i * o, params_per_component=lambda: i + o)
    mats = [m(128, 128), m(128, 512), m(512, 128)]
    assert matrix_ranks(mats, 0.5) == [32, 51, 51]
    assert matrix_ranks(mats, 0.7) == [19, 30, 30]
    for s in (0.5, 0.7, 0.9):
        for x, k in zip(mats, matrix_ranks(mats, s)):
            assert k * x.params_per_component() <= (1 - s) * x.dense_params() < (k + 1) * x.params_per_component()
    assert matrix_ranks([m(4, 4)], 0.0) == [4]  # never above full rank


def test_valid_curve_from_a_fairseq_log(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(
        "2026-11-25 | INFO | train_inner | epoch 001:  5 / 9 loss=9, ppl=512, wps=1, num_updates=5\n"
        "2026-11-25 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8.5 | ppl 362.04 | wps 100 | wpb 2000 "
        "| bsz 16 | num_updates 5\n"
        "2026-11-25 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8 | ppl 256 | wps 100 | wpb 2000 "
        "| bsz 16 | num_updates 10 | best_loss 8\n"
        "2026-11-25 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 8 | ppl 256 | num_updates 10\n")
    assert valid_curve(str(log)) == [{"num_updates": 5, "loss": 8.5, "ppl": 362.04},
                                     {"num_updates": 10, "loss": 8.0, "ppl": 256.0}]


# --------------------------------------------------------------------------- the report

def fake_results():
    """A synthetic record, as collect writes it."""
    from benchmarks.wikitext2.settings import setup_record

    _, cfg = settings.mode_config("full")
    short = json.load(open(os.path.join(REPO, "benchmarks", "wikitext2", "short", "results.json")))

    def row(method, key, ppl, kept=0.5, **extra):
        b = next((x for x in BUDGETS if x.key == key), None)
        return {"name": f"{method}_{key}", "method": method, "budget": key, "scope": b.scope if b else None,
                "target_sparsity": b.sparsity if b else None, "valid_ppl": ppl + 10, "test_ppl": ppl,
                "eval_tokens_per_s": 5000.0, "eval_tokens": 1000, "band_params": int(720_000 * kept),
                "all_params": int(1_113_000 * kept), "band_fraction": kept, "all_fraction": kept,
                "total_params": 1_000_000, "stored_params": 1_116_544, "file_mib": 4.0, "model_mib": 2.0,
                # step names as the graph's: the distilled twin of step X is Xkd
                "train": [{"step": f"{method.replace('+kd', '').replace('+', '')}_{key}"
                                   + ("kd" if method.endswith("+kd") else ""),
                           "wps_median": 4000.0 if method.endswith("+kd") else 8000.0}],
                **extra}
    rows = [row("dense", None, 180.0, 1.0), row("dense+ft", None, 170.0, 1.0)]
    for b in BUDGETS:
        k = 1 - b.sparsity
        rows += [row("flop", b.key, 175.0, k, ranks=[60, 16, 4]), row("svd+ft", b.key, 178.0, k, ranks=[60, 16, 4]),
                 row("agp", b.key, 172.0, k), row("small", b.key, 220.0, k, ranks=[60, 16, 4])]
        if b.key in DISTILL_BUDGETS:
            rows += [row("flop+kd", b.key, 171.0, k, ranks=[60, 16, 4]), row("svd+ft+kd", b.key, 176.0, k),
                     row("agp+kd", b.key, 173.0, k)]
    rows += [row("flop-p60", b.key, 185.0 if b.key != "b90" else 170.0, 1 - b.sparsity, ranks=[90, 16, 1])
             for b in BUDGETS]
    rows += [row("flop-plain", "b50", 186.0, 0.505), row("flop-p30", "b50", 178.0), row("flop-p90", "b50", 180.0)]
    rows[[x["name"] for x in rows].index("flop_b90")]["ranks"] = [28, 1, 0]
    whole = next(x for x in rows if x["name"] == "flop_a70")
    whole["layer_kept"], whole["layer_rank"] = 300, 1024
    speed = {"label": "dense", "params": 1_116_544, "file_mib": 4.0, "scorer_tokens_per_s": 7000.0,
             "loss_tokens_per_s": 23000.0}
    res = copy.deepcopy(short)
    res.update({
        "mode": "full", "config": cfg, "setup": setup_record(cfg), "rows": rows,
        "model_facts": dict(short["model_facts"], band_params=719_744, all_params=1_112_960),
        "estimate": {"wall_s": 8700.0, "summed_s": 17000.0},
        "dense_curve": [{"num_updates": n, "loss": 8.0, "ppl": p}
                        for n, p in ((2000, 200.0), (2250, 190.0), (2500, 185.0))],
        "train_speed": {n: {"wps_median": 6000.0} for n in ("dense", "flop", "flop_all", "compact_all")},
        "eval_speed": {"config": {"tokens": 1000, "repeats": 3, "threads": 1}, "models": [speed]},
    })
    return res


def test_report_renders_every_section(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.wikitext2.__main__ import main

    results = tmp_path / "committed"
    results.mkdir()
    (results / "results.json").write_text(json.dumps(fake_results()))
    out, png = tmp_path / "B.md", tmp_path / "docs" / "p.png"
    main(["--mode", "full", "--workdir", str(tmp_path / "nowhere"), "--report-only", "--results", str(results),
          "--out", str(out), "--plot", str(png)])
    text = out.read_text()
    assert os.path.getsize(png) > 0
    for heading in ("## Set-up", "## Dense pre-training", "## Results", "### 50% of the band parameters",
                    "### 10% of the band parameters", "### 30% of the all prunable parameters",
                    "### Ablation (50% of the band parameters)", "### What the numbers say", "## Speed",
                    "## Short regime (previous benchmark)", "## Commands"):
        assert heading in text, heading
    assert "took the validation perplexity from 200.0 to 185.0 (-7.5%)" in text
    assert "| FLOP + distillation | 360,000 | 50.0% |" in text
    assert text.count("| 60/16/4; layers 300/1024 |") == 1
    assert "| dense tensors, sparse |" in text
    assert "| FLOP + distillation | 500 | 0 | yes | yes | 50.0% | 181.0 | 171.0 | -- |" in text
    assert "| FLOP, as trained (no exact budget) | 500 | 0 | no | no | 50.5% | 196.0 | 186.0 | +8.8% |" in text
    assert "| FLOP 60% of F, then fine-tuning | 300 | 200 | yes | no | 50.0% | 195.0 | 185.0 | +8.2% |" in text
    assert "lowest test ppl 171.0, FLOP's (with distillation)" in text
    assert "FLOP 175.0 against SVD truncation + fine-tuning 178.0 (FLOP -1.7%)" in text
    assert "FLOP (no distillation) beats SVD truncation + fine-tuning at 5 of 5 budgets" in text
    assert "FLOP 175.0 -> 171.0 (-2.3%)" in text
    assert "A distilled update costs about 2.0 plain ones" in text
    assert "- FLOP closes a whole band" not in text  # FLOP's chosen row at 10% keeps every band
    # the split of F: every fraction in order, the best on validation in bold
    split = text[text.index("### How to split F"):text.index("### What the numbers say")]
    b50 = [line for line in split.splitlines() if line.startswith("| 50% of the band")]
    assert [line.split(" | ")[1] for line in b50] == ["150 (30%)", "300 (60%)", "450 (90%)", "500 (100%)"]
    assert b50[0].endswith("| 350 | 50.0% | 188.0 | 178.0 |") and b50[3].endswith("| 0 | 50.0% | **185.0** | 175.0 |")
    assert "| 10% of the band parameters | 300 (60%) | 200 | 10.0% | **180.0** | 170.0 |" in split
    # FLOP's row at 10% of the bands is the split chosen on validation
    b90 = text[text.index("### 10% of the band parameters"):text.index("### 50% of the all")]
    assert "| FLOP 60% of F, then fine-tuning | 71,999 | 10.0% |" in b90 and "| FLOP | " not in b90
    # the short regime's headline rows, from the committed record
    assert "| 10% | FLOP | 70,400 | 9.8% | 467,200 | 24/2/0 | 318.3 | 293.7 |" in text
    assert "253.9 (0.495)" in text  # the sweep table


def test_report_only_without_results_is_a_one_line_error(tmp_path):
    from benchmarks.wikitext2.__main__ import main

    with pytest.raises(SystemExit, match="no results to report from"):
        main(["--mode", "full", "--workdir", str(tmp_path), "--report-only", "--results", str(tmp_path / "none"),
              "--out", str(tmp_path / "B.md")])
    assert not (tmp_path / "B.md").exists()


def test_report_only_renders_the_committed_record_unchanged(tmp_path):
    """The committed record renders the committed BENCHMARKS.md (its full-scale section kept)."""
    pytest.importorskip("matplotlib")
    from benchmarks.wikitext2.__main__ import main

    out = tmp_path / "BENCHMARKS.md"
    committed = open(os.path.join(REPO, "BENCHMARKS.md")).read()
    out.write_text(committed)
    main(["--mode", "full", "--workdir", str(tmp_path / "nowhere"), "--report-only", "--out", str(out),
          "--plot", os.path.join(str(tmp_path), "docs", "bench_wikitext2.png")])
    assert out.read_text() == committed
