"""What the WikiText-2 benchmark runs with: modes, model and training flags, FLOP's settings.

Every value here reaches a command line; the report does not read this module but the
``setup`` record :func:`setup_record` stores with the results, so a report rendered later
(or on a fresh clone) describes the run that produced the numbers.
"""

import os
import sys
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
PY = sys.executable

BUDGETS = (0.5, 0.7, 0.9)  # target sparsity of the band parameters
METHODS = ("flop", "svd", "svd+ft", "agp", "small")  # the pruned models made at every budget

MODES = {
    # updates: dense pre-training D, pruning / fine-tuning F; eval_shards: fraction of
    # each split evaluated (fairseq-eval-lm --num-shards K --shard-id 0: every K-th batch).
    # quick / full: the users'-regime benchmark (experiments_users.py; quick is its pipeline
    # check); valid_interval: the dense run validates every so many updates (its curve).
    # quick: F / D as in full; ~30 min on a quiet machine, mostly process start-up (~100 steps)
    "quick": dict(dense_updates=250, finetune_updates=50, valid_interval=50, eval_shards=16, speed_updates=40,
                  speed_repeats=3, speed_shards=16),
    # full: D = 2,500, F = 500 (20% of D, the floor): the 3,000 / 750 first planned came to
    # ~3.1 h on a quiet machine (estimate.py), mostly for the distilled runs (settings_users.py)
    "full": dict(dense_updates=2500, finetune_updates=500, valid_interval=250, eval_shards=1, speed_updates=80,
                 speed_repeats=3, speed_shards=8),
    # the previous benchmark (experiments.py), whose record is benchmarks/wikitext2/short/results.json
    "short": dict(dense_updates=1000, finetune_updates=250, eval_shards=1, speed_updates=80, speed_repeats=3,
                  speed_shards=8),
}

MODEL_FLAGS = [
    "--adaptive-input", "--adaptive-input-cutoff", "2000,10000", "--adaptive-softmax-cutoff", "2000,10000",
    "--tie-adaptive-weights", "--tie-adaptive-proj", "--decoder-embed-dim", "128", "--decoder-input-dim", "128",
    "--decoder-output-dim", "128", "--decoder-ffn-embed-dim", "512", "--decoder-layers", "2",
    "--decoder-attention-heads", "4",
]
LR = 0.003
TOKENS_PER_SAMPLE = 128
MAX_TOKENS = 2048  # training batch
EVAL_MAX_TOKENS = 4096
SEED = 1
# FLOP's schedule: the target sparsity warms up over the first WARMUP_FRACTION of the F
# updates (AGP's cubic ramp uses the same span). The gate / multiplier settings were chosen
# on validation perplexity by scripts/sweep_flop_settings.sh on this benchmark's own dense
# model (full mode), one setting for every target; BENCHMARKS.md renders the sweep's table
# (benchmarks/wikitext2/sweep.tsv).
WARMUP_FRACTION = 0.8
FLOP_GATE_LR_SCALE = 50.0
FLOP_LAMBDA_LR_SCALE = 10.0
FLOP_LAMBDA2_INIT = 500.0


def tag(sparsity: float) -> str:
    """The step-name suffix of a budget: ``0.9`` -> ``"90"``."""
    return f"{int(round(sparsity * 100))}"


def speed_sparsity() -> float:
    """The budget whose models the speed runs time: the smallest one (largest sparsity)."""
    return max(BUDGETS)


def flop_settings(finetune_updates: int) -> dict:
    """``--sparsity-warmup-updates``, ``--gate-lr-scale``, ``--lambda-lr-scale``, ``--lambda2-init``
    (the same for every target sparsity)."""
    return {"warmup": int(round(WARMUP_FRACTION * finetune_updates)), "gate_lr_scale": FLOP_GATE_LR_SCALE,
            "lambda_lr_scale": FLOP_LAMBDA_LR_SCALE, "lambda2_init": FLOP_LAMBDA2_INIT}


def train_flags(max_update: int, log_interval: int = 25) -> List[str]:
    """fairseq-train flags shared by every training run."""
    return [
        "--task", "language_modeling", "--tokens-per-sample", str(TOKENS_PER_SAMPLE),
        "--max-tokens", str(MAX_TOKENS), "--optimizer", "adam", "--lr", str(LR),
        "--ddp-backend", "legacy_ddp", "--max-update", str(max_update), "--cpu", "--seed", str(SEED),
        "--log-format", "simple", "--log-interval", str(log_interval), "--disable-validation",
        "--no-epoch-checkpoints", "--save-interval-updates", "0", "--num-workers", "0",
    ]


def eval_flags(split: str) -> List[str]:
    """fairseq-eval-lm flags of every evaluation."""
    return ["--tokens-per-sample", str(TOKENS_PER_SAMPLE), "--max-tokens", str(EVAL_MAX_TOKENS), "--cpu",
            "--gen-subset", split, "--seed", str(SEED)]


def mode_config(mode: str, updates_scale: float = 1.0, eval_shards: int = None) -> (str, Dict):
    """``(mode name, config)``: the hidden ``--updates-scale`` / ``--eval-shards`` make a smaller
    variant under its own name (``full-x0.1-e4``), so it never mixes with the real mode's cache."""
    cfg = dict(MODES[mode])
    name = mode
    if updates_scale != 1.0:
        for k in ("dense_updates", "finetune_updates", "speed_updates", "valid_interval"):
            if k in cfg:
                cfg[k] = max(4, int(round(cfg[k] * updates_scale)))
        name += f"-x{updates_scale:g}"
    if eval_shards:
        cfg["eval_shards"] = cfg["speed_shards"] = eval_shards
        name += f"-e{eval_shards}"
    return name, cfg


def tool(name: str) -> str:
    """A console script of this virtualenv (fairseq-train, flop-compact, ...), else from PATH."""
    path = os.path.join(VENV_BIN, name)
    return path if os.path.exists(path) else name


def script(name: str) -> str:
    """A script of the checkout's ``scripts/`` folder (the entry points the steps run)."""
    return os.path.join(REPO, "scripts", name)


def setup_record(cfg: dict) -> dict:
    """The settings the report prints, stored with the results of a run."""
    return {"budgets": list(BUDGETS), "model_flags": list(MODEL_FLAGS), "lr": LR, "optimizer": "adam",
            "tokens_per_sample": TOKENS_PER_SAMPLE, "max_tokens": MAX_TOKENS, "eval_max_tokens": EVAL_MAX_TOKENS,
            "seed": SEED, "flop": flop_settings(cfg["finetune_updates"]), "speed_sparsity": speed_sparsity()}
