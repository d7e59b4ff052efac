"""The users'-regime benchmark's own settings (``--mode quick|full``; issue 14): budgets,
the FLOP recipe's split of F, distillation, the ablation. The model, training and evaluation
flags are :mod:`.settings`' (the same as the short-regime benchmark's).

Like :mod:`.settings`, every value reaches a command line or the record :func:`users_record`
stores with the results, which is what the report reads.
"""

from typing import List, NamedTuple

from .settings import WARMUP_FRACTION, flop_settings, setup_record, tag


class Budget(NamedTuple):
    """One budget: ``key`` (step-name part), ``scope`` (``bands``: the adaptive input/softmax
    bands, as FLOP's default; ``all``: bands and every attention/FFN matrix, FLOP's
    ``--flop-decoder-layers``) and the target ``sparsity`` of that scope's parameters."""
    key: str
    scope: str
    sparsity: float

    @property
    def kept(self) -> float:
        return 1.0 - self.sparsity


def _budget(scope: str, sparsity: float) -> Budget:
    return Budget(f"{scope[0]}{int(round(sparsity * 100))}", scope, sparsity)


BUDGETS_USERS = [_budget("bands", s) for s in (0.5, 0.7, 0.9)] + [_budget("all", s) for s in (0.5, 0.7)]

# The FLOP recipe, chosen on validation (the split table of the report): FLOP over all of F,
# the target reached after WARMUP_FRACTION of it, compacted to the exact budget. AGP's ramp
# ends where a run of PRUNE_FRACTION of F would reach its target (the brief's starting point
# for the split of F between pruning and fine-tuning).
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

# The ablation: at this budget, the recipe's model also compacted as trained (the eval mask's
# own count: ``flop-plain``).
ABLATION_BUDGET = "b50"

# The split of F, chosen on validation at every budget: FLOP over all of F or PRUNE_FRACTION of
# it, the rest fine-tuning the compact model (in a second fairseq-train run, whose Adam starts
# afresh); at SPLIT_BUDGETS also SPLIT_FRACTIONS.
SPLIT_FRACTIONS = (0.3, 0.9)
SPLIT_BUDGETS = ("b50",)

# The dense curve: the gain of the last REMAINING_GAIN_INTERVALS validation intervals is the
# "remaining gain" the report states (2 x 250 = the last 500 updates in full mode).
REMAINING_GAIN_INTERVALS = 2


def split_fractions() -> List[float]:
    """Every fraction of F the split sweep spends pruning (the rest fine-tuning), in order."""
    return sorted(SPLIT_FRACTIONS + (PRUNE_FRACTION,))


def split_suffix(fraction: float) -> str:
    """The split sweep's method suffix: ``flop`` + ``-p30`` for 30% of F pruning."""
    return f"-p{tag(fraction)}"


def budget(key: str) -> Budget:
    return next(b for b in BUDGETS_USERS if b.key == key)


def phases(finetune_updates: int, prune_fraction: float = PRUNE_FRACTION) -> dict:
    """A split of F: ``prune`` (P = ``prune_fraction`` F) and ``finetune`` (F - P) updates, the
    FLOP target warm-up within P (``warmup``) and within all of F (``warmup_all``: FLOP's own
    schedule). AGP's ramp ends at ``warmup`` of PRUNE_FRACTION's split."""
    prune = max(1, min(finetune_updates - 1, int(round(prune_fraction * finetune_updates))))
    return {"prune": prune, "finetune": finetune_updates - prune,
            "warmup": int(round(WARMUP_FRACTION * prune)), "warmup_all": int(round(WARMUP_FRACTION * finetune_updates))}


def distill_flags(teacher: str) -> List[str]:
    """The distillation flags of every distilled run (the same teacher for every method)."""
    return ["--distill-teacher", teacher, "--distill-weight", f"{DISTILL_WEIGHT:g}", "--distill-temperature",
            f"{DISTILL_TEMPERATURE:g}", "--distill-chunk-tokens", str(DISTILL_CHUNK_TOKENS)]


def users_record(cfg: dict) -> dict:
    """:func:`setup_record` plus the users'-regime settings, stored with the results."""
    rec = setup_record(cfg)
    rec.update({
        "budgets": [b._asdict() for b in BUDGETS_USERS], "phases": phases(cfg["finetune_updates"]),
        "prune_fraction": PRUNE_FRACTION, "flop": flop_settings(phases(cfg["finetune_updates"])["prune"]),
        "distill": {"weight": DISTILL_WEIGHT, "temperature": DISTILL_TEMPERATURE,
                    "chunk_tokens": DISTILL_CHUNK_TOKENS, "budgets": list(DISTILL_BUDGETS)},
        "ablation": {"budget": ABLATION_BUDGET},
        "split": {"fractions": split_fractions(), "budgets": list(SPLIT_BUDGETS),
                  "phases": {f"{f:g}": phases(cfg["finetune_updates"], f) for f in split_fractions()}},
        "valid_interval": cfg["valid_interval"], "remaining_gain_intervals": REMAINING_GAIN_INTERVALS,
    })
    rec.pop("speed_sparsity", None)
    return rec
