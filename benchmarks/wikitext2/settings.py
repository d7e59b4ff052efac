"""What the WikiText-2 benchmark runs with: modes, the model / training / evaluation flags,
the budgets, FLOP's settings, distillation, and the table of methods (:data:`METHODS`).

Every value here reaches a command line or the record :func:`setup_record` stores with the
results; the report reads the record, not this module, so a report rendered later (or on a
fresh clone) describes the run that produced its numbers.
"""

import os
from typing import Dict, List, NamedTuple, Optional, Tuple

from benchmarks import REPO
from flop_fairseq.demo.small_model import small_model_flags

DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "wikitext-2")
WORKDIR = os.path.join(REPO, "bench_run")

MODES = {
    # updates: dense pre-training D, pruning / fine-tuning F; eval_shards: fraction of each split
    # evaluated (fairseq-eval-lm --num-shards K --shard-id 0: every K-th batch); valid_interval:
    # the dense run validates every so many updates (its curve).
    # quick: the pipeline check, F / D as in full; mostly process start-up (~100 steps)
    "quick": dict(dense_updates=250, finetune_updates=50, valid_interval=50, eval_shards=16, speed_updates=40,
                  speed_repeats=3, speed_shards=16),
    # full: F = 20% of D; the graph is ~2.7 h on a quiet machine (estimate.py), most of it the
    # distilled runs
    "full": dict(dense_updates=2500, finetune_updates=500, valid_interval=250, eval_shards=1, speed_updates=80,
                 speed_repeats=3, speed_shards=8),
}

MODEL_FLAGS = small_model_flags("2000,10000")
LR = 0.003
TOKENS_PER_SAMPLE = 128
MAX_TOKENS = 2048  # training batch
EVAL_MAX_TOKENS = 4096
SEED = 1


class Budget(NamedTuple):
    """One budget: ``key`` (``b50``: scope letter and target sparsity in percent, the name of
    its steps and models), ``scope`` (``bands``: the adaptive input/softmax bands, FLOP's
    default; ``all``: bands and every attention/FFN matrix, ``--flop-decoder-layers``) and the
    target ``sparsity`` of that scope's parameters (the report prints the kept fraction)."""
    key: str
    scope: str
    sparsity: float


def tag(fraction: float) -> str:
    """A fraction as a name part, in percent: ``0.9`` -> ``"90"``."""
    return f"{int(round(fraction * 100))}"


BUDGETS = [Budget(f"{scope[0]}{tag(s)}", scope, s) for scope, targets in (("bands", (0.5, 0.7, 0.9)),
                                                                            ("all", (0.5, 0.7))) for s in targets]


def budget(key: str) -> Budget:
    return next(b for b in BUDGETS if b.key == key)


# FLOP's schedule: the target is reached after WARMUP_FRACTION of its pruning updates. The
# gate / multiplier settings were chosen on validation perplexity by the short regime's sweep
# (benchmarks/wikitext2/sweep.tsv), one setting for every target.
WARMUP_FRACTION = 0.8
FLOP_GATE_LR_SCALE = 50.0
FLOP_LAMBDA_LR_SCALE = 10.0
FLOP_LAMBDA2_INIT = 500.0
# AGP's ramp ends where a FLOP run pruning PRUNE_FRACTION of F reaches its target (the FLOP
# recipe of the split sweep's default, flop-p60).
PRUNE_FRACTION = 0.6

# Distillation from the dense model (the D checkpoint). Weight and temperature are the
# criterion's defaults (not tuned here). The chunk of 256 tokens: the band-by-band KL over all
# 33,280 types is memory-bound; measured on this machine (2,048 tokens, fwd + bwd, 1 thread)
# 256 tokens took half the time of the criterion's default 1,024 (3.2 s vs 6.5 s), 128 and 64
# no less than 256.
DISTILL_WEIGHT = 0.5
DISTILL_TEMPERATURE = 1.0
DISTILL_CHUNK_TOKENS = 256
# Budgets whose methods are also run with distillation. Only one: a distilled update costs
# about 9 plain ones on this model (the KL scores every token against the whole vocabulary,
# the training loss only against its own cluster; measured 5.5 s vs 0.6 s per update under
# the same load), so distilling every method at every budget (15 runs of F = 500 updates) would
# take about 6.4 hours of CPU alone. estimate.py has the cost model.
DISTILL_BUDGETS = ("b50",)
ABLATION_BUDGET = "b50"  # FLOP also compacted as trained (the eval mask's own count: flop-plain)
SPLIT_BUDGETS = ("b50",)  # the split of F also at 30% and 90% pruning
# The dense curve: the gain of the last REMAINING_GAIN_INTERVALS validation intervals is the
# "remaining gain" the report states (2 x 250 = the last 500 updates in full mode).
REMAINING_GAIN_INTERVALS = 2


class Method(NamedTuple):
    """A row of the results table: how its model is made from the dense checkpoint and
    trained, where, and how it is shown.

    ``build``: the :class:`.graph.Graph` builder (``flop``: FLOP over all of F, compacted to
    the exact budget; ``flop_plain``: the same run compacted as trained; ``flop_split``: FLOP
    over ``split`` F, then fine-tuning; ``svd_ft``: SVD truncation + F updates of fine-tuning;
    ``agp``; ``small``: the SVD allocation from scratch, D + F updates). ``convert``: extra
    ``flop-convert`` flags of its starting model (``{bin}``: the binarized corpus, e.g. for a
    calibration set); ``truncate``: extra flags of ``benchmarks.baselines.svd truncate`` (an
    allocation rule); ``flags``: extra ``fairseq-train`` flags of its training; ``distill``: distilled from the dense model; ``budgets``: the budget keys it
    runs at (None: all); ``style``: the plot's (colour, marker, line), None: not plotted."""
    label: str
    build: str
    style: Optional[Tuple[str, str, str]] = None
    distill: bool = False
    split: Optional[float] = None
    budgets: Optional[Tuple[str, ...]] = None
    convert: Tuple[str, ...] = ()
    truncate: Tuple[str, ...] = ()
    flags: Tuple[str, ...] = ()

    def runs_at(self, b: Budget) -> bool:
        return self.budgets is None or b.key in self.budgets


def _split(fraction: float, budgets=SPLIT_BUDGETS) -> Method:
    return Method(f"FLOP {fraction:.0%} of F, then fine-tuning", "flop_split", split=fraction, budgets=budgets)


METHODS: Dict[str, Method] = {
    "flop": Method("FLOP", "flop", ("#c0392b", "o", "-")),
    "flop+kd": Method("FLOP + distillation", "flop", ("#e67e22", "o", ":"), distill=True, budgets=DISTILL_BUDGETS),
    "flop-plain": Method("FLOP, as trained (no exact budget)", "flop_plain", budgets=(ABLATION_BUDGET,)),
    "flop-p30": _split(0.3),
    "flop-p60": _split(PRUNE_FRACTION, None),
    "flop-p90": _split(0.9),
    "svd+ft": Method("SVD truncation + fine-tuning", "svd_ft", ("#2980b9", "s", "--")),
    "svd+ft+kd": Method("SVD truncation + fine-tuning + distillation", "svd_ft", ("#5dade2", "s", ":"), distill=True,
                        budgets=DISTILL_BUDGETS),
    "agp": Method("AGP magnitude pruning (unstructured)", "agp", ("#27ae60", "^", "-.")),
    "agp+kd": Method("AGP + distillation (unstructured)", "agp", ("#82e0aa", "^", ":"), distill=True,
                     budgets=DISTILL_BUDGETS),
    "small": Method("small dense from scratch (D + F)", "small", ("#8e44ad", "D", "--")),
}
REFERENCES = {"dense": "dense after D (unpruned)", "dense+ft": "dense after D + F (unpruned reference)"}
LABEL = {**REFERENCES, **{name: m.label for name, m in METHODS.items()}}
SPLIT_METHODS = {name: m.split for name, m in METHODS.items() if m.build == "flop_split"}


def split_fractions() -> List[float]:
    """Every fraction of F the split sweep spends pruning (the rest fine-tuning), in order."""
    return sorted(SPLIT_METHODS.values())


def phases(finetune_updates: int, prune_fraction: float = PRUNE_FRACTION) -> dict:
    """A split of F: ``prune`` (P = ``prune_fraction`` F) and ``finetune`` (F - P) updates, the
    FLOP target warm-up within P (``warmup``) and within all of F (``warmup_all``: FLOP's own
    schedule). AGP's ramp ends at ``warmup`` of PRUNE_FRACTION's split."""
    prune = max(1, min(finetune_updates - 1, int(round(prune_fraction * finetune_updates))))
    return {"prune": prune, "finetune": finetune_updates - prune,
            "warmup": int(round(WARMUP_FRACTION * prune)), "warmup_all": int(round(WARMUP_FRACTION * finetune_updates))}


def flop_settings(prune_updates: int) -> dict:
    """``--sparsity-warmup-updates`` (of a run of ``prune_updates``), ``--gate-lr-scale``,
    ``--lambda-lr-scale``, ``--lambda2-init`` (the same for every target sparsity)."""
    return {"warmup": int(round(WARMUP_FRACTION * prune_updates)), "gate_lr_scale": FLOP_GATE_LR_SCALE,
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


def distill_flags(teacher: str) -> List[str]:
    """The distillation flags of every distilled run (the same teacher for every method)."""
    return ["--distill-teacher", teacher, "--distill-weight", f"{DISTILL_WEIGHT:g}", "--distill-temperature",
            f"{DISTILL_TEMPERATURE:g}", "--distill-chunk-tokens", str(DISTILL_CHUNK_TOKENS)]


def mode_config(mode: str, updates_scale: float = 1.0, eval_shards: int = None) -> (str, Dict):
    """``(mode name, config)``: the hidden ``--updates-scale`` / ``--eval-shards`` make a smaller
    variant under its own name (``full-x0.1-e4``), so it never mixes with the real mode's cache."""
    cfg = dict(MODES[mode])
    name = mode
    if updates_scale != 1.0:
        for k in ("dense_updates", "finetune_updates", "speed_updates", "valid_interval"):
            cfg[k] = max(4, int(round(cfg[k] * updates_scale)))
        name += f"-x{updates_scale:g}"
    if eval_shards:
        cfg["eval_shards"] = cfg["speed_shards"] = eval_shards
        name += f"-e{eval_shards}"
    return name, cfg


def setup_record(cfg: dict) -> dict:
    """The settings the report prints, stored with the results of a run."""
    F = cfg["finetune_updates"]
    return {
        "budgets": [b._asdict() for b in BUDGETS], "model_flags": list(MODEL_FLAGS), "lr": LR, "optimizer": "adam",
        "tokens_per_sample": TOKENS_PER_SAMPLE, "max_tokens": MAX_TOKENS, "eval_max_tokens": EVAL_MAX_TOKENS,
        "seed": SEED, "phases": phases(F), "prune_fraction": PRUNE_FRACTION, "flop": flop_settings(phases(F)["prune"]),
        "distill": {"weight": DISTILL_WEIGHT, "temperature": DISTILL_TEMPERATURE,
                    "chunk_tokens": DISTILL_CHUNK_TOKENS, "budgets": list(DISTILL_BUDGETS)},
        "ablation": {"budget": ABLATION_BUDGET},
        "split": {"fractions": split_fractions(), "budgets": list(SPLIT_BUDGETS),
                  "phases": {f"{f:g}": phases(F, f) for f in split_fractions()}},
        "valid_interval": cfg["valid_interval"], "remaining_gain_intervals": REMAINING_GAIN_INTERVALS,
    }
