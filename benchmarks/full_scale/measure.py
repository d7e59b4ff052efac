"""The full-scale benchmark's measurements that are not a console script, each run as its own
process (so its peak memory, which ``run_process`` reads, is its own): the hub interface's
sampling speed, and the making of the random-weight checkpoints.

    python -m benchmarks.full_scale.measure generate DATA_BIN CKPT [--new-tokens 32]
    python -m benchmarks.full_scale.measure make-model OUT -- FAIRSEQ_TRAIN_ARGS...
    python -m benchmarks.full_scale.measure keep-fraction IN OUT --scope bands|whole --sparsity S
"""

import argparse
import json
import os
import sys
import time


def generate(data: str, ckpt: str, new_tokens: int, prompt_tokens: int, task_args) -> dict:
    """Sampling speed through fairseq's hub interface (``GeneratorHubInterface.generate`` with
    ``sampling=True``, no top-k: every step draws from the full next-token distribution, all
    267,735 log-probabilities at the WikiText-103 shape). The prompt is the first
    ``prompt_tokens`` words of the validation split; ``min_len`` forces ``new_tokens`` new ones.
    Speed counts decoder steps (prompt and new tokens) per second."""
    import torch
    from fairseq import hub_utils

    import flop_fairseq.plugin.flop_fairseq_plugin  # noqa: F401  (registers the FLOP archs)

    loaded = hub_utils.from_pretrained(os.path.dirname(os.path.abspath(ckpt)), os.path.basename(ckpt),
                                       data_name_or_path=os.path.abspath(data), **task_args)
    hub = hub_utils.GeneratorHubInterface(loaded["args"], loaded["task"], loaded["models"])
    hub.eval()
    words = open(os.path.join(data, "..", "raw", "valid.txt")).read().split()[:prompt_tokens]
    prompt = hub.encode(" ".join(words))[:-1]  # without the appended </s>
    torch.manual_seed(0)
    with torch.no_grad():
        hub.generate([prompt], beam=1, sampling=True, max_len_b=len(prompt) + 2, min_len=len(prompt) + 2)
        t0 = time.perf_counter()
        out = hub.generate([prompt], beam=1, sampling=True, max_len_b=len(prompt) + new_tokens,
                           min_len=len(prompt) + new_tokens)
        seconds = time.perf_counter() - t0
    # fairseq's generator feeds a prompt one token a step too: every step is one decoder call
    steps = len(out[0][0]["tokens"])
    return {"generated_tokens": steps - len(prompt), "steps": steps, "seconds": seconds, "tokens_per_s": steps / seconds}


def make_model(out: str, train_args) -> dict:
    """A checkpoint with freshly initialised (random) weights of the model ``fairseq-train
    TRAIN_ARGS`` would build, written as fairseq writes one (``cfg``, ``model``, optimizer
    history), without training data: speed only."""
    import torch
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    from flop_fairseq.tools.checkpoint import save_checkpoint_atomic

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, input_args=train_args)
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(0)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    state = {"cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "model": model.state_dict(),
             "args": None, "criterion": None, "last_optimizer_state": None, "extra_state": {},
             "optimizer_history": [{"criterion_name": "AdaptiveLoss", "optimizer_name": "FairseqAdam",
                                    "lr_scheduler_state": {"best": None}, "num_updates": 0}]}
    size = save_checkpoint_atomic(state, out, "/nonexistent")
    return {"params": sum(p.numel() for p in model.parameters()), "file_bytes": size}


def close_gates(model, scope: str, sparsity: float) -> None:
    """In place: every gated group in ``scope`` (``bands``: the adaptive bands; ``whole``: bands
    and layer matrices) keeps ``1 - sparsity`` of its dense parameters, the rest of the gates
    fully open: the structure a pruning run at that sparsity ends with, spread evenly."""
    import torch

    from flop_fairseq.core import gated_modules

    bands = {id(slot.module) for slot in model.flop_bands()}
    with torch.no_grad():
        for _, m in gated_modules(model):
            if scope == "bands" and id(m) not in bands:
                k = m.rank
            else:
                k = max(1, min(m.rank, int((1 - sparsity) * m.dense_params() / m.params_per_component())))
            log_alpha = torch.full((m.rank,), -30.0)
            log_alpha[:k] = 30.0
            m.gate.log_alpha_raw.copy_((log_alpha - m.gate.log_alpha_offset) / m.gate.lr_scale)


def keep_fraction(in_path: str, out_path: str, scope: str, sparsity: float) -> dict:
    """:func:`close_gates` on the checkpoint ``in_path``, written to ``out_path`` (random
    weights, speed only)."""
    from flop_fairseq.core import count_params
    from flop_fairseq.tools.checkpoint import load_flop_model, quiet_logging, save_checkpoint_atomic

    quiet_logging()
    state, model = load_flop_model(in_path)
    close_gates(model, scope, sparsity)
    counts = count_params(model)
    state["model"] = model.state_dict()
    save_checkpoint_atomic(state, out_path, in_path)
    return {"sparsity": counts.sparsity, "total_params": counts.total_params,
            "remaining_prunable_params": counts.remaining_prunable_params}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("data")
    g.add_argument("ckpt")
    g.add_argument("--new-tokens", type=int, default=24)
    g.add_argument("--prompt-tokens", type=int, default=8)
    g.add_argument("--task", default=None, help="task override, e.g. truncated_bptt_lm")
    m = sub.add_parser("make-model")
    m.add_argument("out")
    m.add_argument("train_args", nargs=argparse.REMAINDER)
    k = sub.add_parser("keep-fraction")
    k.add_argument("input")
    k.add_argument("output")
    k.add_argument("--scope", choices=("bands", "whole"), required=True)
    k.add_argument("--sparsity", type=float, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "generate":
        res = generate(args.data, args.ckpt, args.new_tokens, args.prompt_tokens,
                       {"task": args.task} if args.task else {})
    elif args.cmd == "make-model":
        res = make_model(args.out, [a for a in args.train_args if a != "--"])
    else:
        res = keep_fraction(args.input, args.output, args.scope, args.sparsity)
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    sys.exit(main())
