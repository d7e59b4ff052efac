"""The step graph of the WikiText-2 benchmark.

One dense ``transformer_lm`` is trained D updates; for every budget of remaining band
parameters (target sparsity 0.5, 0.7, 0.9) five models are made -- ``flop`` (convert, F
updates of ``flop_adaptive_loss``, compact), ``svd`` (post-hoc truncation), ``svd+ft``
(the same, fine-tuned F updates), ``agp`` (magnitude pruning over the same F updates) and
``small`` (the ``svd`` ranks, trained from scratch D + F updates) -- plus the unpruned
reference trained D + F updates. Every model is evaluated on valid and test; then its
parameters are counted, and the speed runs time training and evaluation one at a time.
"""

import os
from typing import Dict

from .logs import parse_eval
from .runner import Cmd, Runner, Step
from .settings import BUDGETS, MODEL_FLAGS, PY, SEED, eval_flags, flop_settings, script, speed_sparsity, tag, \
    tool, train_flags

# the files a step runs beyond the hashed code snapshot (see runner.UNHASHED): their hashes count
BENCH_CLI = ["scripts/benchmark_wikitext2.py", "flop_fairseq/bench/cli.py", "flop_fairseq/bench/subcommands.py"]
BASELINE_FILES = BENCH_CLI + ["flop_fairseq/bench/baselines.py"]
AGP_FILES = ["scripts/agp_train.py", "flop_fairseq/bench/agp.py"]
SPEED_FILES = ["scripts/benchmark_speed.py", "flop_fairseq/bench/speed.py"]


def _post_eval(step: Step, d: str) -> None:
    import json

    with open(os.path.join(d, "eval.json"), "w") as f:
        json.dump(parse_eval(os.path.join(d, "log.txt")), f, indent=2)


def build_steps(r: Runner, data: str, cfg: dict, data_root: str) -> Dict[str, dict]:
    """Adds every step to ``r``; returns the evaluated models by name: ``ckpt`` (the checkpoint
    evaluated), ``method``, ``budget`` (target sparsity, None for the unpruned ones),
    ``train_step`` (whose log has its training), ``dep`` (the step that makes it)."""
    D, F = cfg["dense_updates"], cfg["finetune_updates"]
    fs = flop_settings(F)
    W = fs["warmup"]  # FLOP sparsity warm-up and AGP ramp

    def flop_flags(s):
        return ["--criterion", "flop_adaptive_loss", "--target-sparsity", str(s), "--sparsity-warmup-updates",
                str(fs["warmup"]), "--gate-lr-scale", f"{fs['gate_lr_scale']:g}", "--lambda-lr-scale",
                f"{fs['lambda_lr_scale']:g}", "--lambda2-init", f"{fs['lambda2_init']:g}",
                "--finetune-from-model", flop_init]
    user = ["--user-dir", os.path.join(r.code_dir, "user_dir")]
    bin_dir = os.path.join(data_root, "bin")

    def p(step, f):
        return os.path.join(r.root, step, f)

    def fairseq_train(save_dir, extra, max_update, log_interval=25):
        return Cmd([tool("fairseq-train"), bin_dir] + train_flags(max_update, log_interval) + extra
                   + ["--save-dir", save_dir])

    # the binarized data live outside the mode's directory, shared by quick and full
    r.add(Step("preprocess", [Cmd(["bash", script("preprocess-lm-data.sh"), data, bin_dir])], outputs=[],
               code=False))
    dense_model = ["--arch", "transformer_lm"] + MODEL_FLAGS + ["--criterion", "adaptive_loss"]
    r.add(Step("dense", [fairseq_train(p("dense", "ckpt"), dense_model, D)],
               outputs=["ckpt/checkpoint_last.pt"], deps=["preprocess"], code=False))
    dense_ckpt = p("dense", "ckpt/checkpoint_last.pt")
    r.add(Step("convert", [Cmd([tool("flop-convert"), dense_ckpt, p("convert", "flop_init.pt")])],
               outputs=["flop_init.pt"], deps=["dense"]))
    flop_init = p("convert", "flop_init.pt")

    models = {"dense": {"ckpt": dense_ckpt, "method": "dense", "budget": None, "train_step": "dense", "dep": "dense"}}
    # reference: the dense model trained F updates more (as every pruned model was), no pruning
    r.add(Step("denseft", [fairseq_train(p("denseft", "ckpt"), dense_model + ["--finetune-from-model", dense_ckpt],
                                         F)],
               outputs=["ckpt/checkpoint_last.pt"], deps=["dense"], code=False))
    models["denseft"] = {"ckpt": p("denseft", "ckpt/checkpoint_last.pt"), "method": "dense+ft", "budget": None,
                         "train_step": "denseft", "dep": "denseft"}
    flop_model = ["--arch", "flop_transformer_lm"] + MODEL_FLAGS + user
    for s in BUDGETS:
        t = tag(s)
        # 1. FLOP
        st = f"flop_s{t}"
        r.add(Step(st, [
            fairseq_train(p(st, "ckpt"), flop_model + flop_flags(s), F),
            Cmd([tool("flop-compact"), p(st, "ckpt/checkpoint_last.pt"), p(st, "compact.pt")]),
            Cmd([tool("flop-report"), p(st, "compact.pt"), "--json"], stdout="report.json"),
        ], outputs=["compact.pt", "report.json"], deps=["convert"]))
        models[st] = {"ckpt": p(st, "compact.pt"), "gated": p(st, "ckpt/checkpoint_last.pt"), "method": "flop",
                      "budget": s, "train_step": st, "dep": st}
        # 2. SVD truncation, then fine-tuned
        st = f"svd_s{t}"
        r.add(Step(st, [
            Cmd([PY, script("benchmark_wikitext2.py"), "svd-truncate", flop_init, p(st, "svd_gated.pt"),
                 "--sparsity", str(s)], stdout="alloc.json"),
            Cmd([tool("flop-compact"), p(st, "svd_gated.pt"), p(st, "svd_compact.pt")]),
        ], outputs=["svd_compact.pt", "alloc.json"], deps=["convert"], files=BASELINE_FILES))
        models[st] = {"ckpt": p(st, "svd_compact.pt"), "method": "svd", "budget": s, "dep": st, "alloc_step": st}
        st2 = f"svdft_s{t}"
        r.add(Step(st2, [fairseq_train(p(st2, "ckpt"), flop_model + [
            "--criterion", "adaptive_loss", "--finetune-from-model", p(st, "svd_compact.pt")], F)],
            outputs=["ckpt/checkpoint_last.pt"], deps=[st]))
        models[st2] = {"ckpt": p(st2, "ckpt/checkpoint_last.pt"), "method": "svd+ft", "budget": s,
                       "train_step": st2, "dep": st2, "alloc_step": st}
        # 3. AGP magnitude pruning
        st = f"agp_s{t}"
        r.add(Step(st, [
            Cmd([PY, script("agp_train.py"), bin_dir] + train_flags(F) + ["--arch", "transformer_lm"] + MODEL_FLAGS
                + ["--criterion", "agp_adaptive_loss", "--agp-target-sparsity", str(s), "--agp-end-update", str(W),
                   "--finetune-from-model", dense_ckpt, "--save-dir", p(st, "ckpt")]),
            Cmd([PY, script("agp_train.py"), "finalize", p(st, "ckpt/checkpoint_last.pt"), p(st, "agp.pt"),
                 "--sparsity", str(s), "--json"], stdout="finalize.json"),
        ], outputs=["agp.pt", "finalize.json"], deps=["dense"], files=AGP_FILES))
        models[st] = {"ckpt": p(st, "agp.pt"), "method": "agp", "budget": s, "train_step": st, "dep": st}
        # 4. small model from scratch, D + F updates
        st = f"small_s{t}"
        r.add(Step(st, [
            Cmd([PY, script("benchmark_wikitext2.py"), "scratch-init", "--data", bin_dir, "--sparsity", str(s),
                 "--seed", str(SEED), "--output", p(st, "init.pt"), "--"] + train_flags(D + F) + flop_model
                + ["--criterion", "adaptive_loss"], stdout="alloc.json"),
            fairseq_train(p(st, "ckpt"), flop_model + ["--criterion", "adaptive_loss", "--finetune-from-model",
                                                       p(st, "init.pt")], D + F),
        ], outputs=["ckpt/checkpoint_last.pt", "alloc.json"], deps=["preprocess"], files=BASELINE_FILES))
        models[st] = {"ckpt": p(st, "ckpt/checkpoint_last.pt"), "method": "small", "budget": s, "train_step": st,
                      "dep": st, "alloc_step": st}

    shards = cfg["eval_shards"]
    shard_flags = ["--num-shards", str(shards), "--shard-id", "0"] if shards > 1 else []
    for name, m in models.items():
        for split in ("valid", "test"):
            r.add(Step(f"eval_{name}_{split}", [Cmd([tool("fairseq-eval-lm"), bin_dir] + user + ["--path", m["ckpt"]]
                                                    + eval_flags(split) + shard_flags)],
                       outputs=["eval.json"], deps=[m["dep"]], post=_post_eval))
    r.add(Step("params", [Cmd([PY, script("benchmark_wikitext2.py"), "count-params"]
                              + [f"{n}={m['ckpt']}" for n, m in models.items()], stdout="params.json")],
               outputs=["params.json"], deps=[f"eval_{n}_valid" for n in models], files=BENCH_CLI))
    _speed_steps(r, cfg, models, bin_dir, user, flop_model, flop_flags, dense_model)
    return models


def _speed_steps(r: Runner, cfg, models, bin_dir, user, flop_model, flop_flags, dense_model) -> None:
    """Timings, one at a time: dense, FLOP (gated) and compact training, and the in-process
    evaluation timings of ``scripts/benchmark_speed.py``."""
    U = cfg["speed_updates"]
    ts = tag(speed_sparsity())
    speed_runs = {
        "dense": dense_model,
        "flop": flop_model + flop_flags(speed_sparsity()),
        "compact": flop_model + ["--criterion", "adaptive_loss", "--finetune-from-model",
                                 models[f"flop_s{ts}"]["ckpt"]],
    }
    for name, extra in speed_runs.items():
        st = f"trainspeed_{name}"
        r.add(Step(st, [Cmd([tool("fairseq-train"), bin_dir] + train_flags(U, log_interval=10) + extra
                            + ["--no-save", "--save-dir", os.path.join(r.root, st, "unused")])],
                   outputs=["log.txt"], deps=[f"flop_s{ts}", "convert"], exclusive=True))
    speed_models = ["--model", f"dense={models['dense']['ckpt']}"]
    for s in BUDGETS:
        m = models[f"flop_s{tag(s)}"]
        speed_models += ["--model", f"flop{tag(s)}-gated={m['gated']}", "--model", f"flop{tag(s)}-compact={m['ckpt']}"]
    speed_models += ["--model", f"svd+ft{ts}={models[f'svdft_s{ts}']['ckpt']}", "--model",
                     f"agp{ts}={models[f'agp_s{ts}']['ckpt']}"]
    r.add(Step("evalspeed", [Cmd([PY, script("benchmark_speed.py"), bin_dir] + speed_models
                                 + ["--subset", "valid", "--num-shards", str(cfg["speed_shards"]),
                                    "--repeats", str(cfg["speed_repeats"]), "--threads",
                                    r.env["OMP_NUM_THREADS"], "--user-dir", user[1], "--json"],
                                stdout="speed.json")],
               outputs=["speed.json"], deps=[f"flop_s{tag(s)}" for s in BUDGETS]
               + ["dense", f"svdft_s{ts}", f"agp_s{ts}"], exclusive=True, files=SPEED_FILES))
