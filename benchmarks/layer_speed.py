"""Training-step time of one transformer layer's six matrices (q, k, v, out, fc1, fc2), dense
against FLOP-gated at several sparsities and against the compact form: how much of the
factorization's cost training pays as it prunes.

    python -m benchmarks.layer_speed [--dim 1024] [--ffn 4096] [--tokens 1024]
                                             [--threads 2] [--repeats 5] [--json]

Random weights (speed does not depend on their values). A sparsity ``s`` keeps, in every
matrix, the rank ``k`` whose factors cost ``(1 - s)`` of the dense matrix,
``k = (1 - s) in out / (in + out)``: the gates of the other components are closed
(``log_alpha = -30``, always sampled 0), the kept ones open, so the fast path computes
``k`` components. Forward and backward of ``sum(f(x))`` with the gates in training mode.
"""

import argparse
import json
import os
import statistics
import time

import torch
from torch import nn

from flop_fairseq.core import GatedLowRankLinear, LowRankLinear

SPARSITIES = (0.0, 0.5, 0.7, 0.9)


def layer_shapes(dim: int, ffn: int):
    """(in, out) of q, k, v, out, fc1, fc2."""
    return [(dim, dim)] * 4 + [(dim, ffn), (ffn, dim)]


def kept_rank(in_f: int, out_f: int, sparsity: float) -> int:
    return max(1, min(min(in_f, out_f), int(round((1.0 - sparsity) * in_f * out_f / (in_f + out_f)))))


def gated_layer(shapes, sparsity: float, fast_path: bool = True):
    mods = []
    for in_f, out_f in shapes:
        m = GatedLowRankLinear(in_f, out_f)
        m.fast_path = fast_path
        k = kept_rank(in_f, out_f, sparsity) if sparsity > 0 else m.rank
        with torch.no_grad():
            la = torch.full((m.rank,), -30.0)
            la[:k] = 30.0
            m.gate.log_alpha_raw.copy_((la - m.gate.log_alpha_offset) / m.gate.lr_scale)
        mods.append(m)
    return nn.ModuleList(mods)


def compact_layer(shapes, sparsity: float):
    return nn.ModuleList(LowRankLinear(i, o, kept_rank(i, o, sparsity)) if kept_rank(i, o, sparsity) * (i + o) < i * o
                         else nn.Linear(i, o) for i, o in shapes)


def step_time(mods, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of forward + backward through every matrix (fc2 takes fc1's output)."""
    def once():
        h = x
        total = 0
        for i, m in enumerate(mods):
            if i < 4:
                total = total + m(x).sum()
            elif i == 4:
                h = torch.relu(m(x))
            else:
                total = total + m(h).sum()
        total.backward()
    once()  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        for p in mods.parameters():
            p.grad = None
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(dim: int, ffn: int, tokens: int, repeats: int) -> dict:
    torch.manual_seed(0)
    shapes = layer_shapes(dim, ffn)
    x = torch.randn(tokens, dim)
    dense = nn.ModuleList(nn.Linear(i, o) for i, o in shapes)
    rows = [{"model": "dense", "sparsity": 0.0, "seconds": step_time(dense, x, repeats)}]
    for s in SPARSITIES:
        for fast in ((True, False) if s > 0 else (True,)):
            gated = gated_layer(shapes, s, fast).train()
            rows.append({"model": "gated" + ("" if fast else " (all components)"), "sparsity": s,
                         "seconds": step_time(gated, x, repeats)})
        if s > 0:
            rows.append({"model": "compact", "sparsity": s, "seconds": step_time(compact_layer(shapes, s), x, repeats)})
    base = rows[0]["seconds"]
    for r in rows:
        r["speedup"] = base / r["seconds"]
    return {"dim": dim, "ffn": ffn, "tokens": tokens, "threads": torch.get_num_threads(), "repeats": repeats,
            "load_1min": os.getloadavg()[0], "rows": rows}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.layer_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    for name in ("dim", "ffn", "tokens", "threads", "repeats"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1")
    torch.set_num_threads(a.threads)
    res = measure(a.dim, a.ffn, a.tokens, a.repeats)
    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(f"one layer's six matrices, d={a.dim}, ffn={a.ffn}, {a.tokens} tokens, {res['threads']} threads, "
          f"median of {a.repeats}, load {res['load_1min']:.1f}: forward + backward")
    print(f"{'model':<26} {'sparsity':>8} {'ms':>9} {'vs dense':>9}")
    for r in res["rows"]:
        print(f"{r['model']:<26} {r['sparsity']:>8.1f} {r['seconds'] * 1e3:>9.1f} {r['speedup']:>8.2f}x")


if __name__ == "__main__":
    main()
