"""The step graph of the users'-regime WikiText-2 benchmark (issue 14; ``--mode quick|full``).

One dense ``transformer_lm`` is trained D updates, validated every ``valid_interval`` updates
(the curve the report shows). Every budget (:data:`BUDGETS_USERS`: 50/30/10% of the band
parameters, 50/30% of all prunable parameters) then gets, each method F updates from the
dense model -- the same data, since every run starts at the first batch with seed 1:

- ``flop``: ``flop-convert`` (``--flop-decoder-layers`` for a whole-model budget), F updates
  of ``flop_adaptive_loss`` (target reached at 0.8 F), ``flop-compact --target-sparsity s`` (the
  exact budget);
- ``flop-p60`` (and at :data:`SPLIT_BUDGETS` ``flop-p30``, ``flop-p90``): P = 0.6 (0.3, 0.9) F
  updates of ``flop_adaptive_loss`` (target reached at 0.8 P), the exact budget, then F - P
  updates of ``adaptive_loss`` fine-tuning of the compact model in a second run; the report's
  FLOP row at each budget is the FLOP model with the best validation perplexity;
- ``svd+ft``: SVD truncation to the budget (``budget_ranks``, and ``matrix_ranks`` for the layer
  matrices), compacted, F updates of fine-tuning;
- ``agp``: F updates of AGP magnitude pruning (``--agp-layers`` for a whole-model budget), the
  ramp ending where FLOP's target is reached, then ``finalize``;
- ``small``: the SVD allocation's shape, freshly initialised, D + F updates from scratch;
- at :data:`DISTILL_BUDGETS` also ``flop+kd``, ``svd+ft+kd``, ``agp+kd``: the same with the
  dense model as teacher in every one of their F updates (``distill_adaptive_loss`` for the
  fine-tuning phases).

Plus the unpruned reference ``dense+ft`` (D + F updates), at :data:`ABLATION_BUDGET` the
recipe's model compacted as trained (``flop-plain``, the short-regime recipe). Every model is
evaluated on valid and test, counted, and a few are timed (one at a time).
"""

import os
from typing import Dict

from . import estimate
from .experiments import AGP_FILES, BASELINE_FILES, BENCH_CLI, SPEED_FILES, _post_eval
from .runner import Cmd, Runner, Step
from .settings import MAX_TOKENS, MODEL_FLAGS, PY, SEED, eval_flags, flop_settings, script, tag, tool, \
    train_flags
from .settings_users import ABLATION_BUDGET, BUDGETS_USERS, DISTILL_BUDGETS, PRUNE_FRACTION, SPLIT_BUDGETS, \
    Budget, budget, distill_flags, phases, split_fractions, split_suffix

KD = "+kd"  # the suffix of a distilled method


def slug(method: str) -> str:
    """A method as a step-name part: ``svd+ft+kd`` -> ``svdftkd``."""
    return method.replace("+", "").replace("-", "")


def model_name(method: str, b: Budget) -> str:
    return f"{slug(method)}_{b.key}"


def _kinds(b: Budget) -> dict:
    """The cost-model kinds (:data:`estimate.FACTOR`) of the gated and compact models of a budget."""
    whole = b.scope == "all"
    return {"gated": "gated_all" if whole else "gated", "compact": "compact_all" if whole else "compact"}


class UsersGraph:
    """Builds the steps into a :class:`Runner`; :attr:`models` maps every evaluated model's name
    to ``ckpt``, ``method``, ``budget`` (a key; None for the unpruned ones), ``train_steps``
    (whose logs have its training, in order), ``dep`` (the step that makes it) and, where
    there is one, ``report_step`` and ``report_file`` (FLOP: ``flop-report --json`` of the gated model,
    with the exact-budget allocation or without) or ``alloc_step``
    (SVD and small: ``alloc.json``)."""

    def __init__(self, r: Runner, data: str, cfg: dict, data_root: str):
        self.r, self.cfg = r, cfg
        self.D, self.F = cfg["dense_updates"], cfg["finetune_updates"]
        self.ph = phases(self.F)
        self.bin = os.path.join(data_root, "bin")
        self.user = ["--user-dir", os.path.join(r.code_dir, "user_dir")]
        self.models: Dict[str, dict] = {}
        self.data = data

    # ------------------------------------------------------------------ helpers

    def p(self, step: str, f: str) -> str:
        return os.path.join(self.r.root, step, f)

    def train(self, save_dir: str, extra, updates: int, validate_every: int = 0) -> Cmd:
        flags = train_flags(updates)
        if validate_every:  # the dense curve: validation on the whole valid split every so many updates
            flags = [f for f in flags if f != "--disable-validation"] + [
                "--validate-interval-updates", str(validate_every), "--validate-interval", "1000000"]
            shards = self.cfg["eval_shards"]
            if shards > 1:  # quick mode: the same fraction of the valid split as the evaluations
                batches = estimate.SPLIT_TOKENS["valid"] / MAX_TOKENS
                flags += ["--max-valid-steps", str(max(1, int(batches // shards)))]
        return Cmd([tool("fairseq-train"), self.bin] + flags + list(extra) + ["--save-dir", save_dir])

    def flop_model(self, b: Budget) -> list:
        return ["--arch", "flop_transformer_lm"] + MODEL_FLAGS + self.user + (
            ["--flop-decoder-layers"] if b.scope == "all" else [])

    def kd(self, distill: bool) -> list:
        return distill_flags(self.dense_ckpt) if distill else []

    def finetune_criterion(self, distill: bool) -> list:
        return ["--criterion", "distill_adaptive_loss"] + self.kd(True) if distill else ["--criterion", "adaptive_loss"]

    def add_model(self, name, ckpt, method, b, dep, train_steps=(), **extra) -> None:
        self.models[name] = {"ckpt": ckpt, "method": method, "budget": b.key if b else None,
                             "train_steps": list(train_steps), "dep": dep, **extra}

    # ------------------------------------------------------------------ the graph

    def build(self) -> Dict[str, dict]:
        r, D, F = self.r, self.D, self.F
        r.add(Step("preprocess", [Cmd(["bash", script("preprocess-lm-data.sh"), self.data, self.bin])], outputs=[],
                   code=False, est_s=30))
        dense_model = ["--arch", "transformer_lm"] + MODEL_FLAGS + ["--criterion", "adaptive_loss"]
        vi = self.cfg["valid_interval"]
        r.add(Step("dense", [self.train(self.p("dense", "ckpt"), dense_model, D, validate_every=vi)],
                   outputs=["ckpt/checkpoint_last.pt"], deps=["preprocess"], code=False,
                   est_s=estimate.train_s(D, validations=D // vi, valid_fraction=1 / self.cfg["eval_shards"])))
        self.dense_ckpt = self.p("dense", "ckpt/checkpoint_last.pt")
        self.add_model("dense", self.dense_ckpt, "dense", None, "dense", ["dense"])
        r.add(Step("denseft", [self.train(self.p("denseft", "ckpt"), dense_model
                                          + ["--finetune-from-model", self.dense_ckpt], F)],
                   outputs=["ckpt/checkpoint_last.pt"], deps=["dense"], code=False, est_s=estimate.train_s(F)))
        self.add_model("denseft", self.p("denseft", "ckpt/checkpoint_last.pt"), "dense+ft", None, "denseft",
                       ["denseft"])
        for scope, flags in (("bands", []), ("all", ["--flop-decoder-layers"])):
            r.add(Step(f"convert_{scope}", [Cmd([tool("flop-convert"), self.dense_ckpt,
                                                 self.p(f"convert_{scope}", "flop_init.pt")] + flags)],
                       outputs=["flop_init.pt"], deps=["dense"], est_s=estimate.TOOL_S))
        for b in BUDGETS_USERS:
            for distill in (False, True) if b.key in DISTILL_BUDGETS else (False,):
                self.flop_all_of_f(b, distill)
                self.svd_ft(b, distill)
                self.agp(b, distill)
            self.small(b)
            for split in split_fractions() if b.key in SPLIT_BUDGETS else (PRUNE_FRACTION,):
                self.flop_recipe(b, False, split)
        self.evaluations()
        return self.models

    def init(self, b: Budget) -> str:
        return self.p(f"convert_{b.scope}", "flop_init.pt")

    def flop_recipe(self, b: Budget, distill: bool, split: float) -> None:
        """Prune P = ``split`` F updates, compact to the exact budget, fine-tune the compact model
        F - P updates (``flop-p60`` for ``split`` 0.6)."""
        method = "flop" + split_suffix(split) + (KD if distill else "")
        ph = phases(self.F, split)
        fs, kinds = flop_settings(ph["prune"]), _kinds(b)
        # PRUNE_FRACTION's steps keep the names they had as the recipe
        suffix = ("kd" if distill else "") + ("" if split == PRUNE_FRACTION else f"_p{tag(split)}")
        st = f"flopprune_{b.key}" + suffix
        ckpt = self.p(st, "ckpt/checkpoint_last.pt")
        self.r.add(Step(st, [
            self.train(self.p(st, "ckpt"), self.flop_model(b) + self.flop_criterion(b, fs) + self.kd(distill)
                       + ["--finetune-from-model", self.init(b)], ph["prune"]),
            # budget.json: what the exact-budget allocation keeps (the compact model's ranks, which
            # flop-compact checks it gets) against the eval mask as trained (components added / removed)
            Cmd([tool("flop-report"), ckpt, "--json", "--target-sparsity", str(b.sparsity)], stdout="budget.json"),
            Cmd([tool("flop-compact"), ckpt, self.p(st, "compact.pt"), "--target-sparsity", str(b.sparsity)]),
        ], outputs=["compact.pt", "budget.json"], deps=[f"convert_{b.scope}"],
            est_s=estimate.train_s(ph["prune"], kinds["gated"], distill) + 2 * estimate.TOOL_S))
        st2 = f"flopft_{b.key}" + suffix
        self.r.add(Step(st2, [self.train(self.p(st2, "ckpt"), self.flop_model(b) + self.finetune_criterion(distill)
                                         + ["--finetune-from-model", self.p(st, "compact.pt")], ph["finetune"])],
                        outputs=["ckpt/checkpoint_last.pt"], deps=[st],
                        est_s=estimate.train_s(ph["finetune"], kinds["compact"], distill)))
        self.add_model(model_name(method, b), self.p(st2, "ckpt/checkpoint_last.pt"), method, b, st2, [st, st2],
                       report_step=st, report_file="budget.json")

    def flop_criterion(self, b: Budget, fs: dict) -> list:
        return ["--criterion", "flop_adaptive_loss", "--target-sparsity", str(b.sparsity), "--sparsity-warmup-updates",
                str(fs["warmup"]), "--gate-lr-scale", f"{fs['gate_lr_scale']:g}", "--lambda-lr-scale",
                f"{fs['lambda_lr_scale']:g}", "--lambda2-init", f"{fs['lambda2_init']:g}"]

    def svd_ft(self, b: Budget, distill: bool) -> None:
        st = f"svd_{b.key}"
        if st not in self.r.steps:  # shared by the runs with and without distillation
            self.r.add(Step(st, [
                Cmd([PY, script("benchmark_wikitext2.py"), "svd-truncate", self.init(b), self.p(st, "svd_gated.pt"),
                     "--sparsity", str(b.sparsity)], stdout="alloc.json"),
                Cmd([tool("flop-compact"), self.p(st, "svd_gated.pt"), self.p(st, "svd_compact.pt")]),
            ], outputs=["svd_compact.pt", "alloc.json"], deps=[f"convert_{b.scope}"], files=BASELINE_FILES,
                est_s=2 * estimate.TOOL_S))
        method = "svd+ft" + (KD if distill else "")
        st2 = f"svdft_{b.key}" + ("kd" if distill else "")
        self.r.add(Step(st2, [self.train(self.p(st2, "ckpt"), self.flop_model(b) + self.finetune_criterion(distill)
                                         + ["--finetune-from-model", self.p(st, "svd_compact.pt")], self.F)],
                        outputs=["ckpt/checkpoint_last.pt"], deps=[st],
                        est_s=estimate.train_s(self.F, _kinds(b)["compact"], distill)))
        self.add_model(model_name(method, b), self.p(st2, "ckpt/checkpoint_last.pt"), method, b, st2, [st2],
                       alloc_step=st)

    def agp(self, b: Budget, distill: bool) -> None:
        method = "agp" + (KD if distill else "")
        st = f"agp_{b.key}" + ("kd" if distill else "")
        layers = b.scope == "all"
        self.r.add(Step(st, [
            Cmd([PY, script("agp_train.py"), self.bin] + train_flags(self.F) + ["--arch", "transformer_lm"]
                + MODEL_FLAGS + ["--criterion", "agp_adaptive_loss", "--agp-target-sparsity", str(b.sparsity),
                                 "--agp-end-update", str(self.ph["warmup"])] + (["--agp-layers"] if layers else [])
                + self.kd(distill) + ["--finetune-from-model", self.dense_ckpt, "--save-dir", self.p(st, "ckpt")]),
            Cmd([PY, script("agp_train.py"), "finalize", self.p(st, "ckpt/checkpoint_last.pt"), self.p(st, "agp.pt"),
                 "--sparsity", str(b.sparsity), "--json"] + (["--layers"] if layers else []), stdout="finalize.json"),
        ], outputs=["agp.pt", "finalize.json"], deps=["dense"], files=AGP_FILES,
            est_s=estimate.train_s(self.F, "agp", distill) + estimate.TOOL_S))
        self.add_model(model_name(method, b), self.p(st, "agp.pt"), method, b, st, [st])

    def small(self, b: Budget) -> None:
        """The SVD allocation's shape from scratch, D + F updates (no dependency on the dense
        model: it runs beside the dense pre-training)."""
        st = f"small_{b.key}"
        model = self.flop_model(b) + ["--criterion", "adaptive_loss"]
        self.r.add(Step(st, [
            Cmd([PY, script("benchmark_wikitext2.py"), "scratch-init", "--data", self.bin, "--sparsity",
                 str(b.sparsity), "--seed", str(SEED), "--output", self.p(st, "init.pt"), "--"]
                + train_flags(self.D + self.F) + model, stdout="alloc.json"),
            self.train(self.p(st, "ckpt"), model + ["--finetune-from-model", self.p(st, "init.pt")], self.D + self.F),
        ], outputs=["ckpt/checkpoint_last.pt", "alloc.json"], deps=["preprocess"], files=BASELINE_FILES,
            est_s=estimate.TOOL_S + estimate.train_s(self.D + self.F, _kinds(b)["compact"])))
        self.add_model(model_name("small", b), self.p(st, "ckpt/checkpoint_last.pt"), "small", b, st, [st],
                       alloc_step=st)

    def flop_all_of_f(self, b: Budget, distill: bool) -> None:
        """The recipe: FLOP over all F updates (target reached at 0.8 F), compacted to the exact
        budget, and as trained (the ablation's ``flop-plain``, at :data:`ABLATION_BUDGET`)."""
        st = f"flopall_{b.key}" + ("kd" if distill else "")
        fs = dict(flop_settings(self.F), warmup=self.ph["warmup_all"])
        ckpt = self.p(st, "ckpt/checkpoint_last.pt")
        cmds = [self.train(self.p(st, "ckpt"), self.flop_model(b) + self.flop_criterion(b, fs) + self.kd(distill)
                           + ["--finetune-from-model", self.init(b)], self.F)]
        # the report of the gated model with the allocation (exact) and without (the eval mask: plain)
        for form, target in (("exact", ["--target-sparsity", str(b.sparsity)]), ("plain", [])):
            cmds += [Cmd([tool("flop-report"), ckpt, "--json"] + target, stdout=f"{form}.json"),
                     Cmd([tool("flop-compact"), ckpt, self.p(st, f"compact_{form}.pt")] + target)]
        self.r.add(Step(st, cmds, outputs=["compact_exact.pt", "compact_plain.pt", "exact.json", "plain.json"],
                        deps=[f"convert_{b.scope}"],
                        est_s=estimate.train_s(self.F, _kinds(b)["gated"], distill) + 4 * estimate.TOOL_S))
        for form, suffix in (("exact", ""), ("plain", "-plain")):
            if form == "plain" and (distill or b.key != ABLATION_BUDGET):
                continue
            method = "flop" + suffix + (KD if distill else "")
            self.add_model(model_name(method, b), self.p(st, f"compact_{form}.pt"), method, b, st, [st],
                           report_step=st, report_file=f"{form}.json")

    def evaluations(self) -> None:
        """valid and test of every model, the parameter counts, then the timings (one at a time)."""
        r, shards = self.r, self.cfg["eval_shards"]
        shard_flags = ["--num-shards", str(shards), "--shard-id", "0"] if shards > 1 else []
        for name, m in self.models.items():
            for split in ("valid", "test"):
                r.add(Step(f"eval_{name}_{split}", [Cmd([tool("fairseq-eval-lm"), self.bin] + self.user
                                                        + ["--path", m["ckpt"]] + eval_flags(split) + shard_flags)],
                           outputs=["eval.json"], deps=[m["dep"]], post=_post_eval,
                           est_s=estimate.eval_s(split, shards)))
        r.add(Step("params", [Cmd([PY, script("benchmark_wikitext2.py"), "count-params", "--layers"]
                                  + [f"{n}={m['ckpt']}" for n, m in self.models.items()], stdout="params.json")],
                   outputs=["params.json"], deps=[f"eval_{n}_valid" for n in self.models], files=BENCH_CLI,
                   est_s=estimate.START_S + 2 * len(self.models)))
        self.speed_steps()

    def speed_steps(self) -> None:
        """Training wps of the dense, gated (bands and whole) and compact models, and the
        in-process evaluation timings of the dense model and every budget's FLOP model
        (plus AGP's at the smallest budgets), each alone on the machine."""
        r, U = self.r, self.cfg["speed_updates"]
        b10, a30 = budget("b90"), budget("a70")  # the smallest budget of each scope
        runs = {
            "dense": (["--arch", "transformer_lm"] + MODEL_FLAGS + ["--criterion", "adaptive_loss"], "dense"),
            "flop": (self.flop_model(b10) + self.flop_criterion(b10, flop_settings(U))
                     + ["--finetune-from-model", self.init(b10)], "gated"),
            "flop_all": (self.flop_model(a30) + self.flop_criterion(a30, flop_settings(U))
                         + ["--finetune-from-model", self.init(a30)], "gated_all"),
            "compact_all": (self.flop_model(a30) + ["--criterion", "adaptive_loss", "--finetune-from-model",
                                                    self.models[model_name("flop", a30)]["ckpt"]], "compact_all"),
        }
        for name, (extra, kind) in runs.items():
            st = f"trainspeed_{name}"
            r.add(Step(st, [Cmd([tool("fairseq-train"), self.bin] + train_flags(U, log_interval=10) + extra
                                + ["--no-save", "--save-dir", os.path.join(r.root, st, "unused")])],
                       outputs=["log.txt"], deps=["convert_bands", "convert_all", self.models[model_name("flop", a30)]
                                                  ["dep"]], exclusive=True, est_s=estimate.train_s(U, kind)))
        timed = ["dense"] + [model_name("flop", b) for b in BUDGETS_USERS] + [model_name("agp", b10),
                                                                               model_name("agp", a30)]
        specs = []
        for n in timed:
            specs += ["--model", f"{n}={self.models[n]['ckpt']}"]
        r.add(Step("evalspeed", [Cmd([PY, script("benchmark_speed.py"), self.bin] + specs
                                     + ["--subset", "valid", "--num-shards", str(self.cfg["speed_shards"]),
                                        "--repeats", str(self.cfg["speed_repeats"]), "--threads",
                                        r.env["OMP_NUM_THREADS"], "--user-dir", self.user[1], "--json"],
                                    stdout="speed.json")],
                   outputs=["speed.json"], deps=[self.models[n]["dep"] for n in timed], exclusive=True,
                   files=SPEED_FILES, est_s=estimate.START_S + len(timed) * self.cfg["speed_repeats"] * 1.25
                   * estimate.SPLIT_TOKENS["valid"] / self.cfg["speed_shards"] / estimate.EVAL_TOKENS_PER_S))


def build_users_steps(r: Runner, data: str, cfg: dict, data_root: str) -> Dict[str, dict]:
    """Adds every step of the users'-regime benchmark to ``r``; returns the evaluated models."""
    return UsersGraph(r, data, cfg, data_root).build()
