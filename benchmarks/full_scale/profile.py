"""Where the time of one decoding step goes at the full-scale shape, in one process:

    OMP_NUM_THREADS=1 python -m benchmarks.full_scale.profile \
        [--models dense,compact_whole_50,compact_whole_80,gated_whole_50] [--steps 24] [--ops 12]

Each model is built in memory as the full-scale benchmark builds its checkpoint (random weights at
the ``transformer_lm_wiki103`` shape, 267,735 types; gates closed by :func:`close_gates`;
``compact_model`` for the compact forms). One decoding step at batch 1 is timed in three parts,
each the median over ``--steps`` steps of an incremental decode from a growing prefix:

- ``decoder``: ``model.decoder(tokens, incremental_state=...)`` (embedding and layers);
- ``softmax``: ``model.get_normalized_probs`` (the full distribution over every type);
- ``step``: one step of fairseq's ``SequenceGenerator`` sampling from the full distribution (both of
  the above plus the generator's own work), from the time of a whole ``generate`` call.

With ``--ops N`` it also prints the ``N`` operators that take the most time (``torch.profiler``).
Timings at a 1-minute load above the thread count are noise: the load is printed with them.
"""

import argparse
import copy
import json
import os
import statistics
import time

TYPES = 267_735
ARGS = {
    "dense": ["--arch", "transformer_lm_wiki103"],
    "gated": ["--arch", "flop_transformer_lm_wiki103", "--flop-decoder-layers"],
}


def model_config(kind: str):
    """The model config ``fairseq-train`` builds at the full-scale wiki103 shape."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import flop_fairseq.models  # noqa: F401  (registers the FLOP archs)

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, input_args=["/nonexistent", "--task", "language_modeling",
                                                           "--tokens-per-sample", "512", *ARGS[kind]])
    return convert_namespace_to_omegaconf(args).model


def build(name: str):
    """The model ``name`` (``dense``, ``gated_whole_50``, ``compact_whole_80``, ...) in eval mode."""
    import torch

    from flop_fairseq.core import compact_model
    from flop_fairseq.tools.checkpoint import build_model
    from .measure import close_gates

    torch.manual_seed(0)
    if name == "dense":
        return build_model(model_config("dense"), TYPES).eval()
    form, scope, pct = name.split("_")
    model = build_model(model_config("gated"), TYPES)
    close_gates(model, scope, int(pct) / 100)
    if form == "compact":
        model = compact_model(model)
    return model.eval()


def decode_steps(model, steps: int, seed: int = 0):
    """Per-step seconds of the decoder and of the softmax over ``steps`` incremental steps,
    and the log-probabilities of every step ``(steps, |V|)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, TYPES, (1, steps), generator=g)
    state, t_dec, t_soft, out = {}, [], [], []
    with torch.no_grad():
        for t in range(steps):
            t0 = time.perf_counter()
            dec = model.decoder(tokens[:, :t + 1], incremental_state=state)
            t1 = time.perf_counter()
            lprobs = model.get_normalized_probs((dec[0][:, -1:, :], None), log_probs=True)[:, -1, :]
            t2 = time.perf_counter()
            t_dec.append(t1 - t0)
            t_soft.append(t2 - t1)
            out.append(lprobs[0].clone())
    return t_dec, t_soft, torch.stack(out)


def generator_step(model, steps: int) -> float:
    """Seconds per step of fairseq's ``SequenceGenerator`` sampling ``steps`` tokens after a
    one-token prompt, as the hub interface does (sampling, beam 1, full distribution)."""
    import torch
    from fairseq import search
    from fairseq.sequence_generator import SequenceGenerator

    dictionary = model.decoder.dictionary
    gen = SequenceGenerator([model], dictionary, beam_size=1, max_len_b=steps + 1, min_len=steps + 1,
                            search_strategy=search.Sampling(dictionary))
    prompt = torch.tensor([[100]])
    sample = {"net_input": {"src_tokens": prompt, "src_lengths": torch.tensor([1])}}
    torch.manual_seed(0)
    with torch.no_grad():
        gen.generate([model], sample, prefix_tokens=prompt)  # warm-up
        t0 = time.perf_counter()
        out = gen.generate([model], sample, prefix_tokens=prompt)
        seconds = time.perf_counter() - t0
    return seconds / len(out[0][0]["tokens"])


def top_ops(model, steps: int, n: int) -> str:
    import torch
    from torch.profiler import ProfilerActivity, profile

    decode_steps(model, 2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        decode_steps(model, steps)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=n)


def main(argv=None):
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="dense,compact_whole_50,compact_whole_80,gated_whole_50")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds over the models (medians)")
    p.add_argument("--ops", type=int, default=0, help="print the N most expensive operators")
    p.add_argument("--check", default=None, help="PREFIX: compare each model's log-probs to PREFIX.MODEL.pt "
                                                 "(written when absent), and to the model in float64")
    args = p.parse_args(argv)
    names = args.models.split(",")
    models = {name: build(name) for name in names}
    times = {name: {"decoder_ms": [], "softmax_ms": [], "generator_step_ms": []} for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotated: drifting load hits all alike
            t_dec, t_soft, _ = decode_steps(models[name], args.steps)
            times[name]["decoder_ms"].append(1e3 * statistics.median(t_dec[1:]))
            times[name]["softmax_ms"].append(1e3 * statistics.median(t_soft[1:]))
            times[name]["generator_step_ms"].append(1e3 * generator_step(models[name], args.steps))
            print(f"round {r} {name} " + " ".join(f"{k} {v[-1]:.1f}" for k, v in times[name].items())
                  + f" load {os.getloadavg()[0]:.2f}", flush=True)
    for name, model in models.items():
        row = {"model": name, "params": sum(p.numel() for p in model.parameters()),
               "threads": torch.get_num_threads(), "rounds": args.rounds, "load": round(os.getloadavg()[0], 2),
               **{k: round(statistics.median(v), 2) for k, v in times[name].items()}}
        dense = times.get("dense")
        if dense and name != "dense":
            row["speedup_vs_dense"] = round(statistics.median(dense["generator_step_ms"])
                                            / row["generator_step_ms"], 2)
        if args.check:
            row.update(check_log_probs(model, f"{args.check}.{name}.pt", args.steps))
        print("PROFILE " + json.dumps(row), flush=True)
        if args.ops:
            print(top_ops(model, min(args.steps, 8), args.ops), flush=True)


def check_log_probs(model, path: str, steps: int) -> dict:
    """Max differences of the per-step log-probs from those saved at ``path`` (a run of other code;
    written when absent) and from the same model in float64 (what rounding alone allows)."""
    import torch

    lprobs = decode_steps(model, steps)[2]
    out = {}
    if os.path.exists(path):
        saved = torch.load(path)
        n = min(len(saved), len(lprobs))
        out["max_logprob_diff_vs_saved"] = float((saved[:n] - lprobs[:n]).abs().max())
    else:
        torch.save(lprobs, path)
    exact = decode_steps(copy.deepcopy(model).double(), steps)[2]
    out["max_logprob_diff_vs_float64"] = float((exact - lprobs.double()).abs().max())
    return out


if __name__ == "__main__":
    main()
