"""Pruning adaptive input/softmax bands through the real CLIs: fairseq-train (dense) ->
flop-convert -> fairseq-train --criterion flop_adaptive_loss -> flop-report.

The short CLI calls run in one process (tests/cli_driver.py), each through its console script's
entry point: a process per call spent most of its time importing fairseq. The interrupted and
resumed training keeps its processes: a resume is a new process's."""

import json
import re

import pytest
import torch

from cli_driver import Batch
from conftest import PRUNE_ARGS, PRUNE_UPDATES, REPO, TARGET, TRAIN_ARGS, run


def _dict_size(data_bin):
    with open(f"{data_bin}/dict.txt") as f:
        return 4 + sum(1 for _ in f)


@pytest.fixture(scope="module")
def driven(data_bin, dense_checkpoint, flop_init, pruned, tmp_path_factory):
    """The CLI calls of the tests that take it, in one batch: name -> a function giving its result
    (parsed for report_json and eval_lm), which raises as conftest.run would for a failed call."""
    tmp = tmp_path_factory.mktemp("pruning")
    batch = Batch()
    got = {}
    got["convert"] = batch.add("flop-convert", dense_checkpoint, tmp / "exact.pt")  # default init: eval mask exactly 1
    got["dense_eval"], got["exact_eval"] = batch.eval_lm(data_bin, dense_checkpoint), batch.eval_lm(data_bin,
                                                                                                     tmp / "exact.pt")
    got["init_report"], got["pruned_report"] = batch.report_json(flop_init[0]), batch.report_json(pruned[0])
    got["pruned_eval"] = batch.eval_lm(data_bin, pruned[0])
    args = [a for a in TRAIN_ARGS]
    i = args.index("--ddp-backend")
    del args[i:i + 2]
    got["ddp"] = batch.add("fairseq-train", data_bin, *args, *PRUNE_ARGS, "--finetune-from-model", flop_init[0],
                           "--max-update", 1, "--save-dir", tmp / "ddp", check=False)
    got["scratch"] = batch.add("fairseq-train", data_bin, *TRAIN_ARGS, *PRUNE_ARGS, "--max-update", 10, "--save-dir",
                               tmp / "scratch")
    got["scratch_report"] = batch.report_json(tmp / "scratch" / "checkpoint_last.pt")
    batch.run(tmp / "driver", check=False, cwd=REPO)  # a failed call fails the tests that read it
    return {k: (lambda key=v: batch[key]) if isinstance(v, str) else v for k, v in got.items()}


def test_convert_preserves_the_dense_function(driven):
    diff = float(re.search(r"= ([0-9.e+-]+)", driven["convert"]().stdout).group(1))
    assert diff < 1e-4
    dense_loss, dense_ppl = driven["dense_eval"]()
    flop_loss, flop_ppl = driven["exact_eval"]()
    assert abs(flop_loss - dense_loss) / dense_loss < 1e-4
    assert abs(flop_ppl - dense_ppl) / dense_ppl < 1e-3


def test_convert_counts_dense_parameters_exactly(data_bin, driven):
    rep = driven["init_report"]()
    v = _dict_size(data_bin)
    d = 128
    # band 0: embedding 500 x 128 + input projection 128 x 128 (its tied output has no projection);
    # bands 1, 2: embedding |V_i| x d_i + projection d x d_i shared by input and softmax
    expected = [500 * d + d * d, (1000 + d) * 64, (v - 1500 + d) * 32]
    assert [b["params_before"] for b in rep["bands"]] == expected
    assert rep["prunable_params"] == sum(expected)
    assert [(b["band"], b["rank"]) for b in rep["bands"]] == [(0, 128), (1, 64), (2, 32)]
    # the head band carries its own output factor: |V_0| + 2d per kept component; keep
    # probability 0.8 puts round(0.2 n) zeros in the eval mask from the start
    assert [b["kept"] for b in rep["bands"]] == [128 - 26, 64 - 13, 32 - 6]
    assert rep["bands"][0]["params_after"] == (128 - 26) * (500 + 2 * d)
    assert rep["bands"][2]["params_after"] == (32 - 6) * (v - 1500 + d)


def test_pruning_reaches_the_target(driven):
    rep = driven["pruned_report"]()
    assert abs(rep["sparsity"] - TARGET) <= 0.01, rep
    assert rep["remaining_prunable_params"] == sum(b["params_after"] for b in rep["bands"])
    assert rep["num_updates"] == PRUNE_UPDATES
    kept = [b["kept"] for b in rep["bands"]]
    assert all(k < r for k, r in zip(kept, [b["rank"] for b in rep["bands"]]))


def test_dead_gates_are_pinned_and_count_nothing(pruned):
    """After pruning with the default --dead-gate-prob 0.1, no gate is left below it unpinned: each is
    at -PIN (up to the last update's optimizer step), with a keep probability that adds nothing to
    the expected count."""
    from flop_fairseq.core import PIN, gated_modules
    from flop_fairseq.tools.checkpoint import load_flop_model

    _, model = load_flop_model(pruned[0])
    pinned = 0
    for name, m in gated_modules(model):
        p, log_alpha = m.gate.keep_prob().detach(), m.gate.log_alpha.detach()
        dead = p < 0.1
        # pinned before the last update; its optimizer step moves a pinned gate by a few 1e-3 at most
        assert bool((log_alpha[dead] < -PIN + 0.1).all()) and bool((p[dead] < 1e-12).all()), name
        pinned += int(dead.sum())
    assert pinned > 0


def test_training_log_shows_the_sparsity_figures(pruned):
    lines = [l for l in pruned[1].splitlines() if "train_inner" in l]
    assert len(lines) == PRUNE_UPDATES // 20
    for key in ("expected_sparsity", "target", "lambda1", "lambda2", "lagrangian", "hard_sparsity",
                "kept_b0", "kept_b1", "kept_b2"):
        assert f"{key}=" in lines[-1], key
    final = dict(re.findall(r"(\w+)=([-0-9.e]+)", lines[-1]))
    assert float(final["target"]) == TARGET
    assert abs(float(final["hard_sparsity"]) - TARGET) <= 0.02
    valid = [l for l in pruned[1].splitlines() if "valid on" in l]
    assert valid and all("lagrangian" not in l and "sparsity" not in l for l in valid)


def test_pruned_model_still_predicts(driven):
    dense_loss, _ = driven["dense_eval"]()
    loss, _ = driven["pruned_eval"]()
    assert loss < dense_loss * 1.15  # 60% of the embedding parameters gone, within 15% loss


def test_interrupted_and_resumed_run_ends_in_the_same_state(data_bin, flop_init, tmp_path):
    args = [data_bin, *TRAIN_ARGS, *PRUNE_ARGS, "--finetune-from-model", flop_init[0], "--update-freq", "2"]
    run("fairseq-train", *args, "--max-update", 30, "--save-dir", tmp_path / "straight")
    run("fairseq-train", *args, "--max-update", 15, "--save-dir", tmp_path / "split")
    run("fairseq-train", *args, "--max-update", 30, "--save-dir", tmp_path / "split")
    a = torch.load(tmp_path / "straight/checkpoint_last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "split/checkpoint_last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    assert int(a["flop_lagrangian.num_updates"]) == int(b["flop_lagrangian.num_updates"]) == 29  # set before each update
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), atol=1e-6, rtol=1e-5), key
    assert a["flop_lagrangian.lambdas"][0].item() != 0.0


def test_default_ddp_backend_is_refused_with_a_clear_message(driven):
    proc = driven["ddp"]()
    assert proc.returncode != 0
    assert "--ddp-backend legacy_ddp" in proc.stderr.strip().splitlines()[-1]


def test_training_from_scratch_without_convert(driven):
    driven["scratch"]()
    rep = driven["scratch_report"]()
    assert rep["gated"] and rep["num_updates"] == 10


def _corrupt(src, dst, edit):
    state = torch.load(src, weights_only=False)
    edit(state)
    torch.save(state, dst)


def test_convert_refuses_what_it_cannot_convert(dense_checkpoint, flop_init, tmp_path):
    def no_adaptive(state):
        state["cfg"]["model"]["adaptive_input"] = False

    def bad_shape(state):
        key = "decoder.embed_tokens.embeddings.1.0.weight"
        state["model"][key] = state["model"][key][:, :5].clone()

    cases = {"no adaptive input": no_adaptive, "do not fit": bad_shape}
    batch, keys = Batch(), {}
    for i, (needle, edit) in enumerate(cases.items()):  # each case its own files: what one leaves is its own
        bad = tmp_path / f"bad{i}.pt"
        _corrupt(dense_checkpoint, bad, edit)
        keys[needle] = batch.add("flop-convert", bad, tmp_path / f"out{i}.pt", check=False)
    flop = batch.add("flop-convert", flop_init[0], tmp_path / "out.pt", check=False)
    missing = batch.add("flop-convert", tmp_path / "missing.pt", tmp_path / "out.pt", check=False)
    batch.run(tmp_path / "driver", cwd=REPO)
    for i, needle in enumerate(cases):
        out = tmp_path / f"out{i}.pt"
        proc = batch[keys[needle]]
        assert proc.returncode != 0 and needle in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not out.exists()
    proc = batch[flop]
    assert proc.returncode != 0 and "already a FLOP checkpoint" in proc.stderr
    proc = batch[missing]
    assert proc.returncode != 0 and "no such checkpoint" in proc.stderr
    assert not (tmp_path / "out.pt").exists()


def test_frozen_mask_trains_the_exact_budget_and_resumes(data_bin, flop_init, tmp_path):
    """--freeze-mask-update: from that update the mask is the exact budget, pinned, with no
    Lagrangian; a run resumed after the freeze ends where an uninterrupted one does."""
    args = [data_bin, *TRAIN_ARGS, *PRUNE_ARGS, "--finetune-from-model", flop_init[0], "--sparsity-warmup-updates", 20,
            "--freeze-mask-update", 30, "--log-interval", 5]
    proc = run("fairseq-train", *args, "--max-update", 50, "--save-dir", tmp_path / "straight")
    logs = [dict(re.findall(r"(\w+)=([-0-9.e]+)", line)) for line in (proc.stdout + proc.stderr).splitlines()
            if "train_inner" in line]
    frozen = [f for f in logs if int(f["num_updates"]) > 30]
    assert len(frozen) == 4 and all(float(f["lagrangian"]) == 0.0 for f in frozen)
    for key in ("hard_sparsity", "kept_b0", "kept_b1", "kept_b2", "lambda1"):
        assert len({f[key] for f in frozen}) == 1, key
    ckpt = tmp_path / "straight" / "checkpoint_last.pt"
    # the mask it trained is the one flop-compact --target-sparsity keeps: nothing added or removed,
    # every kept component alive (eval value 1), the budget filled to within 1% of its parameters
    rep = json.loads(run("flop-report", ckpt, "--json", "--target-sparsity", TARGET).stdout)
    assert rep["budget"]["added_components"] == rep["budget"]["removed_components"] == 0
    assert abs(rep["sparsity"] - TARGET) < 0.01
    assert rep["weak_components"] == rep["budget"]["weak_components"] == 0
    assert rep["budget"]["gap_params"] <= 0.01 * rep["budget"]["target_params"]
    from flop_fairseq.core import gated_modules
    from flop_fairseq.tools.checkpoint import load_flop_model

    for name, m in gated_modules(load_flop_model(str(ckpt))[1]):
        z = m.gate.deterministic()
        assert bool((z[z > 0] >= 0.5).all()), name
    state = torch.load(ckpt, weights_only=False)["model"]
    for key, raw in state.items():
        if key.endswith("log_alpha_raw"):
            offset, scale = state[key.replace("log_alpha_raw", "log_alpha_offset")], state[key.replace(
                "log_alpha_raw", "lr_scale")]
            assert ((raw * scale + offset).abs() > 25).all(), key  # pinned at +-30, Adam's momentum aside
    run("fairseq-train", *args, "--max-update", 40, "--save-dir", tmp_path / "split")
    run("fairseq-train", *args, "--max-update", 50, "--save-dir", tmp_path / "split")
    b = torch.load(tmp_path / "split" / "checkpoint_last.pt", weights_only=False)["model"]
    for key in state:
        assert torch.allclose(state[key].double(), b[key].double(), atol=1e-6, rtol=1e-5), key
    bad = run("fairseq-train", *args[:-4], "--freeze-mask-update", 10, "--max-update", 50, "--save-dir",
              tmp_path / "bad", check=False)
    assert bad.returncode != 0 and "freeze at or after the end of the warm-up" in bad.stderr.strip().splitlines()[-1]
    assert not list((tmp_path / "bad").glob("*.pt"))  # fairseq makes the directory; nothing is saved in it
