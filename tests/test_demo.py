"""``make demo`` (``python -m flop_fairseq.demo``) end to end with a small budget: on a
generated corpus (the default) and on a user's data-bin (``DATA=``), plus its refusals."""

import json
import os
import subprocess
import sys

from conftest import REPO


def demo(*args):
    return subprocess.run([sys.executable, "-m", "flop_fairseq.demo", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def check_result(work, proc, dense_updates, prune_updates, finetune_updates, target):
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.load(open(work / "result.json"))
    d, c = res["dense"], res["compact"]
    # init keep probability 0.8: the eval mask drops round(0.2 n) components of each band
    # from the start, so the compact model is smaller even after a few updates
    assert c["total_params"] < d["total_params"]
    # only the bands are pruned: the whole difference is band parameters
    assert d["total_params"] - c["total_params"] == d["band_params"] - c["band_params"]
    assert all(k <= r for k, r in zip(res["kept_ranks"], res["ranks"]))
    trained = dense_updates + prune_updates + finetune_updates
    assert d["updates"] == dense_updates and c["updates"] == trained
    assert (c["prune_updates"], c["finetune_updates"]) == (prune_updates, finetune_updates)
    assert res["dense_same_updates"]["updates"] == trained
    # compacted to the exact budget (to within one rank component), after any number of updates
    assert abs(res["hard_sparsity"] - target) < 0.01, res["hard_sparsity"]
    assert (work / "finetune" / "checkpoint_last.pt").is_file() == (finetune_updates > 0)
    for m in (d, c):
        assert 1.0 < m["test_ppl"] < 1e5 and m["eval_tokens_per_s"] > 0
    assert open(work / "flop_demo.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    out = proc.stdout
    assert f"picture: {work / 'flop_demo.png'}" in out
    for row in ("parameters (total_params)", "band parameters", "test perplexity", "eval tokens/s (median of 1)"):
        assert row in out
    assert f"{c['total_params']:,}" in out and f"{d['total_params']:,}" in out
    return res


def test_demo_on_generated_corpus(tmp_path):
    work = tmp_path / "demo"
    work.mkdir()  # what an earlier demo left: the demo replaces its own directory
    (work / ".flop_demo").touch()
    (work / "stale.txt").write_text("from an earlier run")
    proc = demo("--workdir", work, "--types", 1500, "--train-tokens", 30_000, "--dense-updates", 8,
                "--prune-updates", 8, "--finetune-updates", 4, "--distill-weight", 0.5, "--eval-repeats", 1)
    check_result(work, proc, 8, 8, 4, 0.5)
    assert "8 + 8 FLOP + 4 FT" in proc.stdout
    # distilled from the dense model in both phases
    res = json.load(open(work / "result.json"))
    assert res["distill_weight"] == 0.5
    assert "distill_kl " in (work / "logs" / "train_flop.log").read_text()
    assert "distill_kl " in (work / "logs" / "train_finetune.log").read_text()
    assert "generating a Zipfian corpus" in proc.stdout
    assert (work / "data-bin" / "dict.txt").is_file() and not (work / "stale.txt").exists()


def test_demo_on_user_data(data_bin, tmp_path):
    work = tmp_path / "demo"
    proc = demo("--data", data_bin, "--workdir", work, "--dense-updates", 10, "--prune-updates", 10,
                "--finetune-updates", 0, "--eval-repeats", 1, "--target", 0.3)
    check_result(work, proc, 10, 10, 0, 0.3)
    assert "distill_kl" not in (work / "logs" / "train_flop.log").read_text()  # not distilled by default
    assert json.load(open(work / "result.json"))["distill_weight"] == 0.0
    assert "generating" not in proc.stdout and not (work / "data-bin").exists()


def test_demo_refuses_bad_input(tmp_path):
    work = tmp_path / "demo"
    proc = demo("--data", tmp_path / "nowhere", "--workdir", work)
    assert proc.returncode == 2 and "not a fairseq-preprocessed directory" in proc.stderr
    assert not work.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = demo("--workdir", mine)
    assert proc.returncode == 2 and "was not made by the demo" in proc.stderr
    assert (mine / "notes.txt").read_text() == "keep me"
    proc = demo("--workdir", work, "--dense-updates", 0)
    assert proc.returncode == 2 and "--dense-updates must be at least 1" in proc.stderr
    proc = demo("--workdir", work, "--finetune-updates", -1)
    assert proc.returncode == 2 and "--finetune-updates must be at least 0" in proc.stderr
    proc = demo("--workdir", work, "--distill-weight", 2)
    assert proc.returncode == 2 and "--distill-weight must be in [0, 1]" in proc.stderr
    assert not work.exists()
