"""flop-compact: a physically smaller model that fairseq-eval-lm, fairseq-train and the
hub interface load and that computes what the gated model computes in eval mode.

A test's chain of CLI calls runs in one process (tests/cli_driver.py), each through its console
script's entry point: a process per call spent most of this file's time importing fairseq."""

import os

import pytest
import torch

from cli_driver import Batch
from conftest import MODEL_ARGS, REPO, TRAIN_ARGS, USER_DIR

EVAL_EXTRAS = [[], ["--context-window", "32"], ["--softmax-batch", "50"]]


@pytest.fixture(scope="session")
def compact(data_bin, pruned, tmp_path_factory):
    """(the compaction of the pruned model, flop-compact's output, what the first tests compare):
    the reports of both models and fairseq-eval-lm of both with each of EVAL_EXTRAS, in one batch."""
    root = tmp_path_factory.mktemp("compact")
    out = root / "compact.pt"
    batch = Batch()
    key = batch.add("flop-compact", pruned[0], out)
    reports = batch.report_json(pruned[0]), batch.report_json(out)
    evals = [(batch.eval_lm(data_bin, pruned[0], *extra), batch.eval_lm(data_bin, out, *extra))
             for extra in EVAL_EXTRAS]
    batch.run(root / "driver", check=False, cwd=REPO)  # a failed report or eval fails the tests that read it
    return str(out), batch[key].stdout, {"reports": reports, "evals": evals}


def test_compact_is_smaller_and_reports_the_same_bands(pruned, compact):
    gated, small = (report() for report in compact[2]["reports"])
    assert not small["gated"] and small["expected_sparsity"] is None
    for key in ("sparsity", "prunable_params", "remaining_prunable_params", "total_params"):
        assert small[key] == gated[key], key
    assert [(b["rank"], b["kept"]) for b in small["bands"]] == [(b["rank"], b["kept"]) for b in gated["bands"]]
    state = torch.load(compact[0], weights_only=False)
    params = {k: v for k, v in state["model"].items() if not k.startswith("decoder.adaptive_softmax.bands")}
    assert not any("gate" in k or "lagrangian" in k for k in state["model"])
    assert sum(v.numel() for k, v in params.items() if v.is_floating_point() and "version" not in k
               and "_float_tensor" not in k) == small["total_params"]
    assert os.path.getsize(compact[0]) < os.path.getsize(pruned[0])
    assert "file size" in compact[1] and "stored parameters" in compact[1]


@pytest.mark.parametrize("extra", EVAL_EXTRAS)
def test_eval_lm_perplexity_matches_the_gated_model(compact, extra):
    gated, small = compact[2]["evals"][EVAL_EXTRAS.index(extra)]
    (gated_loss, gated_ppl), (small_loss, small_ppl) = gated(), small()
    assert abs(small_loss - gated_loss) / gated_loss < 1e-4
    assert abs(small_ppl - gated_ppl) / gated_ppl < 1e-3


def test_fairseq_train_continues_from_the_compact_model(data_bin, compact, tmp_path):
    batch = Batch()
    key = batch.add("fairseq-train", data_bin, *TRAIN_ARGS, "--user-dir", USER_DIR, "--arch", "flop_transformer_lm",
                    *MODEL_ARGS, "--criterion", "adaptive_loss", "--lr", "0.001", "--max-update", 10,
                    "--finetune-from-model", compact[0], "--save-dir", tmp_path, "--log-interval", "5")
    after, before = batch.report_json(tmp_path / "checkpoint_last.pt"), batch.report_json(compact[0])
    batch.run(tmp_path / "driver", cwd=REPO)
    proc = batch[key]
    assert "num_updates=10" in proc.stdout + proc.stderr
    after = after()
    assert not after["gated"]
    assert after["total_params"] == before()["total_params"]


def _edit(src, dst, edit):
    state = torch.load(src, weights_only=False)
    edit(state["model"])
    torch.save(state, dst)


def test_a_band_pruned_to_zero_still_works(data_bin, pruned, tmp_path):
    def kill_band_2(model):
        for key in model:
            if key.endswith("bands.2.gate.log_alpha_raw"):
                model[key] = torch.full_like(model[key], -100.0)

    gated = tmp_path / "zero_band.pt"
    _edit(pruned[0], gated, kill_band_2)
    out = tmp_path / "zero_band_compact.pt"
    batch = Batch()
    batch.add("flop-compact", gated, out)
    rep, gated_eval, small_eval = batch.report_json(out), batch.eval_lm(data_bin, gated), batch.eval_lm(data_bin, out)
    batch.run(tmp_path / "driver", cwd=REPO)
    rep = rep()
    assert rep["bands"][2]["kept"] == 0 and rep["bands"][2]["params_after"] == 0
    gated_loss, _ = gated_eval()
    small_loss, _ = small_eval()
    assert abs(small_loss - gated_loss) / gated_loss < 1e-4


def test_refusals_leave_nothing_on_disk(dense_checkpoint, pruned, compact, tmp_path):
    truncated = tmp_path / "truncated.pt"
    with open(pruned[0], "rb") as f:
        truncated.write_bytes(f.read()[: os.path.getsize(pruned[0]) // 2])
    cases = [
        (dense_checkpoint, "not a FLOP model"),
        (truncated, "truncated or corrupt"),
        (compact[0], "already compact"),
        (tmp_path / "missing.pt", "no such checkpoint"),
    ]
    batch = Batch()
    # each case its own output path: what one case leaves is then seen as that case's
    keys = [batch.add("flop-compact", src, tmp_path / f"out{i}.pt", check=False) for i, (src, _) in enumerate(cases)]
    overwrite = batch.add("flop-compact", pruned[0], pruned[0], check=False)
    report = batch.report_json(pruned[0])
    batch.run(tmp_path / "driver", cwd=REPO)
    for i, ((_, needle), key) in enumerate(zip(cases, keys)):
        out = tmp_path / f"out{i}.pt"
        proc = batch[key]
        assert proc.returncode != 0 and needle in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not out.exists()
    proc = batch[overwrite]
    assert proc.returncode != 0 and "overwrite the input" in proc.stderr
    assert report()["gated"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_hub_scores_match_between_gated_and_compact(data_bin, pruned, compact):
    from flop_fairseq.models import FlopTransformerLanguageModel

    raw = os.path.join(os.path.dirname(data_bin), "raw", "test.txt")
    with open(raw) as f:
        sentence = f.readline().strip()
    scores = []
    for path in (pruned[0], compact[0]):
        lm = FlopTransformerLanguageModel.from_pretrained(
            os.path.dirname(path), os.path.basename(path), data_name_or_path=data_bin, tokenizer="moses")
        lm.eval()
        scores.append(lm.score(sentence)["positional_scores"])
        assert len(lm.sample(sentence.split()[0], beam=1, max_len_b=5).split()) >= 1
    # one log-probability per word: the hub encodes words + </s> and scores all but the first
    assert scores[0].shape[0] == lm.encode(sentence).numel() - 1 == len(sentence.split())
    assert torch.allclose(scores[0], scores[1], atol=1e-5)
    assert scores[0].mean() > -10


def test_decoder_layers_convert_prune_and_compact(data_bin, dense_checkpoint, tmp_path):
    init = tmp_path / "layers_init.pt"
    batch = Batch()
    key = batch.add("flop-convert", dense_checkpoint, init, "--flop-decoder-layers")
    rep = batch.report_json(init)
    batch.run(tmp_path / "driver", cwd=REPO)
    assert float(batch[key].stdout.split("= ")[1].split()[0]) < 1e-4
    rep = rep()
    # 2 layers x (4 attention matrices 128x128 + fc1 256x128 + fc2 128x256)
    assert rep["layers"]["params_before"] == 2 * (4 * 128 * 128 + 2 * 256 * 128)
    assert rep["layers"]["params_after"] == rep["layers"]["params_before"]  # full rank: dense form is smaller

    def prune_layers(model):  # what training would do: drop the weakest components of each matrix
        for key in list(model):
            if key.startswith("decoder.layers.") and key.endswith("gate.log_alpha_raw"):
                n = model[key].numel()
                model[key][n // 4:] = -100.0  # keep a quarter of each factorization
    gated = tmp_path / "layers_pruned.pt"
    _edit(init, gated, prune_layers)
    out = tmp_path / "layers_compact.pt"
    batch = Batch()
    batch.add("flop-compact", gated, out)
    small, gated_report = batch.report_json(out), batch.report_json(gated)
    gated_eval, small_eval = batch.eval_lm(data_bin, gated), batch.eval_lm(data_bin, out)
    batch.run(tmp_path / "driver2", cwd=REPO)
    small = small()
    # a quarter of the rank: (in + out) * r / 4 < in * out, so every matrix is now two thin ones
    expected = 2 * (4 * (256 * 32) + 2 * (384 * 32))
    assert small["layers"]["params_after"] == expected == gated_report()["layers"]["params_after"]
    gated_loss, _ = gated_eval()
    small_loss, _ = small_eval()
    assert abs(small_loss - gated_loss) / gated_loss < 1e-4


def test_layers_converted_below_full_rank(data_bin, dense_checkpoint, tmp_path):
    init = tmp_path / "quarter.pt"
    batch = Batch()
    key = batch.add("flop-convert", dense_checkpoint, init, "--flop-decoder-layers", "--layer-rank-ratio", "0.25")
    rep, init_eval = batch.report_json(init), batch.eval_lm(data_bin, init)
    refused = batch.add("flop-convert", dense_checkpoint, tmp_path / "x.pt", "--layer-rank-ratio", "0.5", check=False)
    batch.run(tmp_path / "driver", cwd=REPO)
    out = batch[key].stdout
    error = float(out.split("truncation error ")[1].split(")")[0])
    assert 0.0 < error < 1.0
    rep = rep()
    # rank 32 of 128 in every matrix: (in + out) * 32 < in * out, so the factors are already smaller
    assert [m["rank"] for m in rep["layers"]["per_matrix"]] == [32] * 12
    assert rep["layers"]["params_after"] == 2 * (4 * (256 * 32) + 2 * (384 * 32))
    assert init_eval()[1] > 1.0
    proc = batch[refused]
    assert proc.returncode == 2 and "needs --flop-decoder-layers" in proc.stderr
