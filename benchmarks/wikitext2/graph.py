"""The step graph of the WikiText-2 benchmark.

One dense ``transformer_lm`` is trained D updates, validated every ``valid_interval`` updates
(the curve the report shows). At every budget (:data:`.settings.BUDGETS`: 50/30/10% of the
band parameters, 50/30% of all prunable parameters) every method of
:data:`.settings.METHODS` that runs there gets F updates from the dense model -- the same
data, since every run starts at the first batch with seed 1:

- ``flop``: ``flop-convert`` (``--flop-decoder-layers`` for a whole-model budget), F updates
  of ``flop_adaptive_loss`` (target reached at 0.8 F), ``flop-compact --target-sparsity s`` (the
  exact budget); ``flop-plain``: the same run compacted as trained;
- ``flop-p60`` (``-p30``, ``-p90``): P = 0.6 (0.3, 0.9) F updates of ``flop_adaptive_loss``
  (target reached at 0.8 P), the exact budget, then F - P updates of fine-tuning of the
  compact model in a second run; the report's FLOP row at each budget is the FLOP model with
  the best validation perplexity;
- ``svd+ft``: SVD truncation to the budget (``budget_ranks``, and ``matrix_ranks`` for the layer
  matrices), compacted, F updates of fine-tuning;
- ``agp``: F updates of AGP magnitude pruning (``--agp-layers`` for a whole-model budget), the
  ramp ending where ``flop-p60`` reaches its target, then ``finalize``;
- ``small``: the SVD allocation's shape, freshly initialised, D + F updates from scratch;
- ``+kd``: the same with the dense model as teacher in every one of their F updates
  (``distill_adaptive_loss`` for the fine-tuning phases).

Plus the unpruned reference ``dense+ft`` (D + F updates). Every model is evaluated on valid
and test, counted, and a few are timed (one at a time).
"""

import os
import sys
from typing import Dict

from benchmarks import REPO
from flop_fairseq.tools.runner import Cmd, Runner, Step, tool

from . import estimate
from .logs import parse_eval
from .settings import BUDGETS, MAX_TOKENS, METHODS, MODEL_FLAGS, PRUNE_FRACTION, SEED, Budget, Method, budget, \
    distill_flags, eval_flags, flop_settings, phases, tag, train_flags

PY = sys.executable
# the modules a step runs beyond the hashed code snapshot (flop_fairseq/, user_dir/): their hashes count
SVD_FILES = ["benchmarks/baselines/svd.py"]
AGP_FILES = ["benchmarks/baselines/agp.py", "benchmarks/agp_plugin/agp_adaptive_loss.py"]
SPEED_FILES = ["benchmarks/speed.py"]
COUNT_FILES = ["benchmarks/wikitext2/counts.py"]


def slug(method: str) -> str:
    """A method as a step-name part: ``svd+ft+kd`` -> ``svdftkd``."""
    return method.replace("+", "").replace("-", "")


def model_name(method: str, b: Budget) -> str:
    return f"{slug(method)}_{b.key}"


def _kinds(b: Budget) -> dict:
    """The cost-model kinds (:data:`estimate.FACTOR`) of the gated and compact models of a budget."""
    whole = b.scope == "all"
    return {"gated": "gated_all" if whole else "gated", "compact": "compact_all" if whole else "compact"}


def _post_eval(step: Step, d: str) -> None:
    import json

    with open(os.path.join(d, "eval.json"), "w") as f:
        json.dump(parse_eval(os.path.join(d, "log.txt")), f, indent=2)


class Graph:
    """Builds the steps into a :class:`Runner`; :attr:`models` maps every evaluated model's name
    to ``ckpt``, ``method``, ``budget`` (a key; None for the unpruned ones), ``train_steps``
    (whose logs have its training, in order), ``dep`` (the step that makes it) and, where
    there is one, ``report_step`` and ``report_file`` (FLOP: ``flop-report --json`` of the gated
    model, with the exact-budget allocation or without) or ``alloc_step`` (SVD and small:
    ``alloc.json``)."""

    def __init__(self, r: Runner, data: str, cfg: dict, data_root: str):
        self.r, self.cfg, self.data = r, cfg, data
        self.D, self.F = cfg["dense_updates"], cfg["finetune_updates"]
        self.ph = phases(self.F)
        self.bin = os.path.join(data_root, "bin")
        code = r.code_dir
        self.user = ["--user-dir", os.path.join(code, "user_dir")]
        self.agp_user = ["--user-dir", os.path.join(code, "benchmarks", "agp_plugin")]
        self.models: Dict[str, dict] = {}

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

    def flop_criterion(self, b: Budget, fs: dict) -> list:
        return ["--criterion", "flop_adaptive_loss", "--target-sparsity", str(b.sparsity), "--sparsity-warmup-updates",
                str(fs["warmup"]), "--gate-lr-scale", f"{fs['gate_lr_scale']:g}", "--lambda-lr-scale",
                f"{fs['lambda_lr_scale']:g}", "--lambda2-init", f"{fs['lambda2_init']:g}"]

    def add_model(self, name, ckpt, method, b, dep, train_steps=(), **extra) -> None:
        self.models[name] = {"ckpt": ckpt, "method": method, "budget": b.key if b else None,
                             "train_steps": list(train_steps), "dep": dep, **extra}

    def init(self, b: Budget, name: str = None) -> str:
        """The converted (gated) starting model of a budget's scope, with method ``name``'s own
        ``flop-convert`` flags (``{bin}``: the binarized corpus): one step per conversion."""
        convert = [a.replace("{bin}", self.bin) for a in METHODS[name].convert] if name else []
        st = f"convert_{b.scope}" + (f"_{slug(name)}" if convert else "")
        if st not in self.r.steps:
            flags = ["--flop-decoder-layers"] if b.scope == "all" else []
            self.r.add(Step(st, [Cmd([tool("flop-convert"), self.dense_ckpt, self.p(st, "flop_init.pt")]
                                     + flags + convert)],
                            outputs=["flop_init.pt"], deps=["dense"], est_s=estimate.TOOL_S))
        return self.p(st, "flop_init.pt")

    # ------------------------------------------------------------------ the graph

    def build(self) -> Dict[str, dict]:
        r, D, F = self.r, self.D, self.F
        r.add(Step("preprocess", [Cmd(["bash", os.path.join(REPO, "scripts", "preprocess-lm-data.sh"), self.data, self.bin])], outputs=[],
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
        for b in BUDGETS:
            for name, m in METHODS.items():
                if m.runs_at(b):
                    getattr(self, m.build)(name, m, b)
        self.evaluations()
        return self.models

    def _flop_run(self, name: str, m: Method, b: Budget) -> str:
        """FLOP over all F updates (target reached at 0.8 F), and the gated model compacted to the
        exact budget and as trained: the step (shared by ``flop`` and ``flop-plain``)."""
        st = ("flopall" if not m.flags else slug(name.replace("+kd", ""))) + f"_{b.key}" + ("kd" if m.distill else "")
        if st in self.r.steps:
            return st
        fs = dict(flop_settings(self.F), warmup=self.ph["warmup_all"])
        init = self.init(b, name)
        ckpt = self.p(st, "ckpt/checkpoint_last.pt")
        cmds = [self.train(self.p(st, "ckpt"), self.flop_model(b) + self.flop_criterion(b, fs) + list(m.flags)
                           + self.kd(m.distill) + ["--finetune-from-model", init], self.F)]
        # the report of the gated model with the allocation (exact) and without (the eval mask: plain)
        for form, target in (("exact", ["--target-sparsity", str(b.sparsity)]), ("plain", [])):
            cmds += [Cmd([tool("flop-report"), ckpt, "--json"] + target, stdout=f"{form}.json"),
                     Cmd([tool("flop-compact"), ckpt, self.p(st, f"compact_{form}.pt")] + target)]
        self.r.add(Step(st, cmds, outputs=["compact_exact.pt", "compact_plain.pt", "exact.json", "plain.json"],
                        deps=[os.path.basename(os.path.dirname(init))],
                        est_s=estimate.train_s(self.F, _kinds(b)["gated"], m.distill) + 4 * estimate.TOOL_S))
        return st

    def flop(self, name: str, m: Method, b: Budget) -> None:
        self._compacted(name, b, self._flop_run(name, m, b), "exact")

    def flop_plain(self, name: str, m: Method, b: Budget) -> None:
        """The ``flop`` method's run compacted as trained (the ablation)."""
        self._compacted(name, b, self._flop_run("flop", METHODS["flop"], b), "plain")

    def _compacted(self, name: str, b: Budget, st: str, form: str) -> None:
        self.add_model(model_name(name, b), self.p(st, f"compact_{form}.pt"), name, b, st, [st],
                       report_step=st, report_file=f"{form}.json")

    def flop_split(self, name: str, m: Method, b: Budget) -> None:
        """Prune P = ``m.split`` F updates, compact to the exact budget, fine-tune the compact model
        F - P updates."""
        ph = phases(self.F, m.split)
        fs, kinds = flop_settings(ph["prune"]), _kinds(b)
        suffix = ("kd" if m.distill else "") + ("" if m.split == PRUNE_FRACTION else f"_p{tag(m.split)}") + (
            f"_{slug(name.replace('+kd', ''))}" if m.flags else "")
        st = f"flopprune_{b.key}" + suffix
        ckpt = self.p(st, "ckpt/checkpoint_last.pt")
        init = self.init(b, name)
        self.r.add(Step(st, [
            self.train(self.p(st, "ckpt"), self.flop_model(b) + self.flop_criterion(b, fs) + list(m.flags)
                       + self.kd(m.distill) + ["--finetune-from-model", init], ph["prune"]),
            # budget.json: what the exact-budget allocation keeps (the compact model's ranks, which
            # flop-compact checks it gets) against the eval mask as trained (components added / removed)
            Cmd([tool("flop-report"), ckpt, "--json", "--target-sparsity", str(b.sparsity)], stdout="budget.json"),
            Cmd([tool("flop-compact"), ckpt, self.p(st, "compact.pt"), "--target-sparsity", str(b.sparsity)]),
        ], outputs=["compact.pt", "budget.json"], deps=[os.path.basename(os.path.dirname(init))],
            est_s=estimate.train_s(ph["prune"], kinds["gated"], m.distill) + 2 * estimate.TOOL_S))
        st2 = f"flopft_{b.key}" + suffix
        self.r.add(Step(st2, [self.train(self.p(st2, "ckpt"), self.flop_model(b) + self.finetune_criterion(m.distill)
                                         + ["--finetune-from-model", self.p(st, "compact.pt")], ph["finetune"])],
                        outputs=["ckpt/checkpoint_last.pt"], deps=[st],
                        est_s=estimate.train_s(ph["finetune"], kinds["compact"], m.distill)))
        self.add_model(model_name(name, b), self.p(st2, "ckpt/checkpoint_last.pt"), name, b, st2, [st, st2],
                       report_step=st, report_file="budget.json")

    def svd_ft(self, name: str, m: Method, b: Budget) -> None:
        init = self.init(b, name)
        own = m.convert or m.truncate  # a truncation of its own, else shared with the other SVD methods
        st = f"svd_{b.key}" + (f"_{slug(name.replace('+kd', ''))}" if own else "")
        if st not in self.r.steps:  # shared by the runs with and without distillation
            self.r.add(Step(st, [
                Cmd([PY, "-m", "benchmarks.baselines.svd", "truncate", init, self.p(st, "svd_gated.pt"),
                     "--sparsity", str(b.sparsity)] + list(m.truncate), stdout="alloc.json"),
                Cmd([tool("flop-compact"), self.p(st, "svd_gated.pt"), self.p(st, "svd_compact.pt")]),
            ], outputs=["svd_compact.pt", "alloc.json"], deps=[os.path.basename(os.path.dirname(init))],
                files=SVD_FILES, est_s=2 * estimate.TOOL_S))
        st2 = f"{slug(name.replace('+kd', ''))}_{b.key}" + ("kd" if m.distill else "")
        self.r.add(Step(st2, [self.train(self.p(st2, "ckpt"), self.flop_model(b) + self.finetune_criterion(m.distill)
                                         + list(m.flags) + ["--finetune-from-model", self.p(st, "svd_compact.pt")],
                                         self.F)],
                        outputs=["ckpt/checkpoint_last.pt"], deps=[st],
                        est_s=estimate.train_s(self.F, _kinds(b)["compact"], m.distill)))
        self.add_model(model_name(name, b), self.p(st2, "ckpt/checkpoint_last.pt"), name, b, st2, [st2],
                       alloc_step=st)

    def agp(self, name: str, m: Method, b: Budget) -> None:
        st = f"agp_{b.key}" + ("kd" if m.distill else "")
        layers = b.scope == "all"
        self.r.add(Step(st, [
            self.train(self.p(st, "ckpt"), ["--arch", "transformer_lm"] + MODEL_FLAGS + self.agp_user
                       + ["--criterion", "agp_adaptive_loss", "--agp-target-sparsity", str(b.sparsity),
                          "--agp-end-update", str(self.ph["warmup"])] + (["--agp-layers"] if layers else [])
                       + list(m.flags) + self.kd(m.distill) + ["--finetune-from-model", self.dense_ckpt], self.F),
            Cmd([PY, "-m", "benchmarks.baselines.agp", "finalize", self.p(st, "ckpt/checkpoint_last.pt"),
                 self.p(st, "agp.pt"), "--sparsity", str(b.sparsity), "--json"] + (["--layers"] if layers else []),
                stdout="finalize.json"),
        ], outputs=["agp.pt", "finalize.json"], deps=["dense"], files=AGP_FILES,
            est_s=estimate.train_s(self.F, "agp", m.distill) + estimate.TOOL_S))
        self.add_model(model_name(name, b), self.p(st, "agp.pt"), name, b, st, [st])

    def small(self, name: str, m: Method, b: Budget) -> None:
        """The SVD allocation's shape from scratch, D + F updates (no dependency on the dense
        model: it runs beside the dense pre-training)."""
        st = f"{slug(name)}_{b.key}"
        model = self.flop_model(b) + ["--criterion", "adaptive_loss"] + list(m.flags)
        self.r.add(Step(st, [
            Cmd([PY, "-m", "benchmarks.baselines.svd", "scratch-init", "--data", self.bin, "--sparsity",
                 str(b.sparsity), "--seed", str(SEED), "--output", self.p(st, "init.pt"), "--"]
                + train_flags(self.D + self.F) + model, stdout="alloc.json"),
            self.train(self.p(st, "ckpt"), model + ["--finetune-from-model", self.p(st, "init.pt")], self.D + self.F),
        ], outputs=["ckpt/checkpoint_last.pt", "alloc.json"], deps=["preprocess"], files=SVD_FILES,
            est_s=estimate.TOOL_S + estimate.train_s(self.D + self.F, _kinds(b)["compact"])))
        self.add_model(model_name(name, b), self.p(st, "ckpt/checkpoint_last.pt"), name, b, st, [st],
                       alloc_step=st)

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
        r.add(Step("params", [Cmd([PY, "-m", "benchmarks.wikitext2.counts"]
                                  + [f"{n}={m['ckpt']}" for n, m in self.models.items()], stdout="params.json")],
                   outputs=["params.json"], deps=[f"eval_{n}_valid" for n in self.models], files=COUNT_FILES,
                   est_s=estimate.START_S + 2 * len(self.models)))
        self.speed_steps()

    def speed_steps(self) -> None:
        """Training wps of the dense, gated (bands and whole) and compact models, and the
        in-process evaluation timings of the dense model and every budget's FLOP model
        (plus AGP's at the smallest budgets), each alone on the machine."""
        r, U = self.r, self.cfg["speed_updates"]
        smallest_bands, smallest_all = budget("b90"), budget("a70")  # the smallest budget of each scope
        compact_all = self.models[model_name("flop", smallest_all)]
        runs = {
            "dense": (["--arch", "transformer_lm"] + MODEL_FLAGS + ["--criterion", "adaptive_loss"], "dense"),
            "flop": (self.flop_model(smallest_bands) + self.flop_criterion(smallest_bands, flop_settings(U))
                     + ["--finetune-from-model", self.init(smallest_bands)], "gated"),
            "flop_all": (self.flop_model(smallest_all) + self.flop_criterion(smallest_all, flop_settings(U))
                         + ["--finetune-from-model", self.init(smallest_all)], "gated_all"),
            "compact_all": (self.flop_model(smallest_all) + ["--criterion", "adaptive_loss", "--finetune-from-model",
                                                             compact_all["ckpt"]], "compact_all"),
        }
        for name, (extra, kind) in runs.items():
            st = f"trainspeed_{name}"
            r.add(Step(st, [Cmd([tool("fairseq-train"), self.bin] + train_flags(U, log_interval=10) + extra
                                + ["--no-save", "--save-dir", os.path.join(r.root, st, "unused")])],
                       outputs=["log.txt"], deps=["convert_bands", "convert_all", compact_all["dep"]], exclusive=True,
                       est_s=estimate.train_s(U, kind)))
        timed = ["dense"] + [model_name("flop", b) for b in BUDGETS] + [model_name("agp", smallest_bands),
                                                                         model_name("agp", smallest_all)]
        specs = []
        for n in timed:
            specs += ["--model", f"{n}={self.models[n]['ckpt']}"]
        r.add(Step("evalspeed", [Cmd([PY, "-m", "benchmarks.speed", self.bin] + specs
                                     + ["--subset", "valid", "--num-shards", str(self.cfg["speed_shards"]),
                                        "--repeats", str(self.cfg["speed_repeats"]), "--threads",
                                        r.env["OMP_NUM_THREADS"], "--user-dir", self.user[1], "--json"],
                                    stdout="speed.json")],
                   outputs=["speed.json"], deps=[self.models[n]["dep"] for n in timed], exclusive=True,
                   files=SPEED_FILES, est_s=estimate.START_S + len(timed) * self.cfg["speed_repeats"] * 1.25
                   * estimate.SPLIT_TOKENS["valid"] / self.cfg["speed_shards"] / estimate.EVAL_TOKENS_PER_S))


def build_steps(r: Runner, data: str, cfg: dict, data_root: str) -> Dict[str, dict]:
    """Adds every step of the benchmark to ``r``; returns the evaluated models."""
    return Graph(r, data, cfg, data_root).build()
