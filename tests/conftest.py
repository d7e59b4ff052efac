"""Shared fixtures: a small generated corpus, its fairseq data-bin and a dense
adaptive-input/softmax transformer_lm trained on it with the real fairseq-train."""

import json
import os
import subprocess
import sys

import pytest

from flop_fairseq.demo.small_model import small_model_flags
from flop_fairseq.tools.fairseq_log import parse_eval_lm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
USER_DIR = os.path.join(REPO, "user_dir")

# d = 128 and factor 2 give band ranks 128/64/32, so one rank component is under 1%
# of the prunable parameters and a 1-point sparsity tolerance is meaningful.
MODEL_ARGS = small_model_flags("500,1500", ffn=256, factor=2)
TRAIN_ARGS = [
    "--task", "language_modeling", "--ddp-backend", "legacy_ddp", "--optimizer", "adam",
    "--tokens-per-sample", "64", "--max-tokens", "512", "--no-epoch-checkpoints", "--log-format", "simple",
    "--cpu", "--seed", "1", "--num-workers", "0",
]


def run(tool, *args, check=True, cwd=REPO):
    """Runs a console script of the venv (fairseq-train, flop-convert, ...); returns the result."""
    exe = os.path.join(BIN, tool)
    proc = subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def eval_lm(data_bin, path, *extra):
    """``fairseq-eval-lm`` on the test split: (loss in base 2, perplexity)."""
    proc = run("fairseq-eval-lm", data_bin, "--user-dir", USER_DIR, "--path", path, "--cpu",
               "--tokens-per-sample", "64", "--max-tokens", "1024", "--gen-subset", "test", *extra)
    res = parse_eval_lm(proc.stdout + proc.stderr)
    assert res, proc.stdout + proc.stderr
    return res["loss_base2"], res["ppl"]


def report_json(path):
    return json.loads(run("flop-report", path, "--json").stdout)


@pytest.fixture(scope="session")
def data_bin(tmp_path_factory):
    from flop_fairseq.demo.corpus import generate_corpus

    root = tmp_path_factory.mktemp("data")
    generate_corpus(str(root / "raw"), num_types=3000, train_tokens=60_000, valid_tokens=6_000,
                    test_tokens=6_000, seed=3)
    out = root / "bin"
    run("fairseq-preprocess", "--only-source", "--trainpref", root / "raw/train.txt",
        "--validpref", root / "raw/valid.txt", "--testpref", root / "raw/test.txt",
        "--destdir", out, "--workers", "1")
    return str(out)


@pytest.fixture(scope="session")
def dense_checkpoint(data_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("dense")
    run("fairseq-train", data_bin, *TRAIN_ARGS, "--arch", "transformer_lm", *MODEL_ARGS,
        "--criterion", "adaptive_loss", "--lr", "0.003", "--max-update", "120", "--save-dir", save)
    return str(save / "checkpoint_last.pt")


TARGET = 0.6
# The criterion's default scales and quadratic weight; the warm-up and the updates after
# it are what this tiny model needs to settle on the target.
PRUNE_ARGS = [
    "--user-dir", USER_DIR, "--arch", "flop_transformer_lm", *MODEL_ARGS, "--criterion", "flop_adaptive_loss",
    "--target-sparsity", str(TARGET), "--lr", "0.003", "--sparsity-warmup-updates", "200", "--log-interval", "20",
]
PRUNE_UPDATES = 400


@pytest.fixture(scope="session")
def flop_init(dense_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "flop_init.pt"
    proc = run("flop-convert", dense_checkpoint, out, "--init-keep-prob", "0.8")
    return str(out), proc.stdout


@pytest.fixture(scope="session")
def pruned(data_bin, flop_init, tmp_path_factory):
    save = tmp_path_factory.mktemp("pruned")
    proc = run("fairseq-train", data_bin, *TRAIN_ARGS, *PRUNE_ARGS, "--finetune-from-model", flop_init[0],
               "--max-update", PRUNE_UPDATES, "--save-dir", save)
    return str(save / "checkpoint_last.pt"), proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def compact_init(flop_init, tmp_path_factory):
    """flop-compact of the converted model (its 0.8 keep probability already zeroes some components)."""
    out = tmp_path_factory.mktemp("compact_init") / "compact_init.pt"
    run("flop-compact", flop_init[0], out)
    return str(out)


# A tiny flop_transformer_lm (|V| = 300, d = 16, bands 16/8/4 of 50/100/150 words, tied), built
# without training: ranks small enough that the budget tests visit every component in milliseconds.
TINY_MODEL = {
    "_name": "flop_transformer_lm", "adaptive_input": True, "adaptive_input_cutoff": "50,150",
    "adaptive_softmax_cutoff": "50,150", "adaptive_input_factor": 2, "adaptive_softmax_factor": 2,
    "tie_adaptive_weights": True, "tie_adaptive_proj": True, "decoder_embed_dim": 16, "decoder_input_dim": 16,
    "decoder_output_dim": 16, "decoder_ffn_embed_dim": 32, "decoder_layers": 1, "decoder_attention_heads": 2,
    "tokens_per_sample": 32, "max_target_positions": 32, "dropout": 0.0,
}
TINY_VOCAB = 300


@pytest.fixture(scope="session")
def tiny_gated(tmp_path_factory):
    """Two tiny gated FLOP checkpoints with random weights and random gates (``log_alpha`` uniform
    in [-3, 5]: some gates 0 in the eval mask, some kept below 1, most saturated), as fairseq-train
    would write them: ``{"bands": path, "layers": path}`` (the second with --flop-decoder-layers)."""
    import torch

    from flop_fairseq.core import gated_modules
    from flop_fairseq.tools.checkpoint import build_model, save_checkpoint_atomic

    root = tmp_path_factory.mktemp("tiny_gated")
    paths = {}
    for seed, (name, layers) in enumerate((("bands", False), ("layers", True))):
        torch.manual_seed(seed)
        cfg = dict(TINY_MODEL, flop_decoder_layers=layers)
        model = build_model(cfg, TINY_VOCAB)
        with torch.no_grad():
            for _, m in gated_modules(model):
                log_alpha = torch.rand(m.gate.n) * 8.0 - 3.0
                m.gate.log_alpha_raw.copy_((log_alpha - m.gate.log_alpha_offset) / m.gate.lr_scale)
        state = {"cfg": {"model": cfg, "task": {"_name": "language_modeling"}}, "args": None,
                 "model": model.state_dict(), "extra_state": {"train_iterator": {"epoch": 1}},
                 "optimizer_history": [{"criterion_name": "FlopAdaptiveLoss", "optimizer_name": "Adam",
                                        "lr_scheduler_state": {"best": None}, "num_updates": 7}]}
        paths[name] = str(root / f"{name}.pt")
        save_checkpoint_atomic(state, paths[name], source=str(root))
    return paths
