"""Evaluation speed, size and perplexity of checkpoints (dense fairseq ``transformer_lm``,
gated FLOP, compact FLOP) on the same split of a binarized corpus, in one process.

    python -m benchmarks.speed DATA_BIN --model LABEL=CKPT [--model ...] [--subset valid]
        [--num-shards K] [--repeats 3] [--threads 1] [--tokens-per-sample 128] [--max-tokens 4096] [--json]

Every model is loaded once with fairseq's ``checkpoint_utils.load_model_ensemble_and_task``
into this process (``torch.set_num_threads(--threads)``); the split is batched exactly as
``fairseq-eval-lm`` does (``task.eval_lm_dataloader``; every ``--num-shards``-th batch when
K > 1) and each model's passes are taken in turn (model 1, model 2, ..., then the next
repeat, so drifting load from other processes hits all models alike); tokens/s is the median
of ``--repeats`` passes:

- ``scorer``: ``fairseq.sequence_scorer.SequenceScorer.generate``, the call whose time
  ``fairseq-eval-lm`` reports as tokens/s. It builds full-vocabulary log-probabilities
  for every token, a ``tokens x |V|`` tensor whose writing dominates small models and is not
  reduced by pruning the bands;
- ``loss``: the model's forward pass plus fairseq's ``adaptive_loss`` criterion (what
  training and validation compute: each token scores only the head and its own tail
  cluster), where the smaller band matrices of a compact model do show up.

Parameters are the counter's ``stored_params`` (a gated model's full-rank factors and gates
included). A compact FLOP model already *is* a small dense model of its ranks (fairseq's
adaptive input cannot express arbitrary ranks per band), so no such row is offered.
"""

import argparse
import json
import math
import os
import statistics
import time

from benchmarks import REPO


def _labelled(args):
    out = []
    for spec in args.model or []:
        if "=" not in spec:
            raise SystemExit(f"--model takes LABEL=CHECKPOINT, got {spec!r}")
        label, path = spec.split("=", 1)
        out.append((label, path))
    if not out:
        raise SystemExit("speed: give at least one --model LABEL=CHECKPOINT")
    for label, path in out:
        if not os.path.isfile(path):
            raise SystemExit(f"speed: {label}: no such checkpoint {path}")
    return out


def _kind(model) -> str:
    from flop_fairseq.core import GatedModule, LowRankBand

    if any(isinstance(m, GatedModule) for m in model.modules()):
        return "FLOP gated"
    if any(isinstance(m, LowRankBand) for m in model.modules()):
        return "FLOP compact"
    return "dense"


def stored_params(model) -> int:
    """The counter's ``stored_params``: every parameter the model holds as loaded, shared ones once."""
    from flop_fairseq.core import PrunableModel, count_params
    from flop_fairseq.models import dense_prunable_tensors

    return count_params(model, None if isinstance(model, PrunableModel) else dense_prunable_tensors(model)).stored_params


def run_inprocess(ckpts, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from fairseq import checkpoint_utils, utils
    from fairseq.criterions.adaptive_loss import AdaptiveLoss
    from fairseq.sequence_scorer import SequenceScorer

    import importlib

    importlib.import_module("flop_fairseq.models")  # registers flop_transformer_lm with fairseq

    loaded = []
    task = None
    for label, path in ckpts:
        models, cfg, t = checkpoint_utils.load_model_ensemble_and_task(
            [path], arg_overrides={"data": os.path.abspath(args.data), "tokens_per_sample": args.tokens_per_sample})
        model = models[0]
        model.eval()
        model.prepare_for_inference_(cfg)
        task = task or t
        loaded.append((label, path, model, t))

    task.load_dataset(args.subset)
    dataset = task.dataset(args.subset)
    itr = task.eval_lm_dataloader(
        dataset=dataset, max_tokens=args.max_tokens, batch_size=None,
        max_positions=utils.resolve_max_positions(*[m.max_positions() for _, _, m, _ in loaded]),
        num_shards=args.num_shards, shard_id=0, num_workers=0, context_window=0,
    )
    batches = [b for b in itr if "net_input" in b]
    ntokens = sum(b["ntokens"] for b in batches)

    results = []
    for label, path, model, t in loaded:
        results.append({"label": label, "path": path, "kind": _kind(model),
                        "params": stored_params(model),
                        "file_mib": os.path.getsize(path) / 2**20, "scorer_times": [], "loss_times": []})
    scorers = [SequenceScorer(t.target_dictionary) for _, _, _, t in loaded]
    criteria = [AdaptiveLoss(t, sentence_avg=False) for _, _, _, t in loaded]

    def scorer_pass(i, record=True):
        total, count = 0.0, 0
        elapsed = 0.0
        for b in batches:
            t0 = time.perf_counter()
            hypos = scorers[i].generate([loaded[i][2]], b)
            elapsed += time.perf_counter() - t0
            for h in hypos:
                s = h[0]["positional_scores"].float()
                total += s.sum().item()
                count += s.numel()
        return elapsed, math.exp(-total / count)

    def loss_pass(i):
        total, count = 0.0, 0
        elapsed = 0.0
        for b in batches:
            t0 = time.perf_counter()
            loss, sample_size, _ = criteria[i](loaded[i][2], b)
            elapsed += time.perf_counter() - t0
            total += loss.item()
            count += sample_size
        return elapsed, math.exp(total / count)

    with torch.no_grad():
        for i in range(len(loaded)):  # warm-up: one batch each
            scorers[i].generate([loaded[i][2]], batches[0])
            criteria[i](loaded[i][2], batches[0])
        for _ in range(args.repeats):
            for i, r in enumerate(results):
                el, ppl = scorer_pass(i)
                r["scorer_times"].append(el)
                r["ppl"] = ppl
                el, ppl = loss_pass(i)
                r["loss_times"].append(el)
                r["ppl_loss_path"] = ppl
    for r in results:
        r["scorer_tokens_per_s"] = ntokens / statistics.median(r["scorer_times"])
        r["loss_tokens_per_s"] = ntokens / statistics.median(r["loss_times"])
    return {"tokens": ntokens, "batches": len(batches), "models": results}


def format_table(res: dict) -> str:
    models = res["models"]
    cols = [("model", lambda r: r["label"], "<"), ("kind", lambda r: r["kind"], "<"),
            ("params", lambda r: f"{r['params']:,}", ">"), ("file MiB", lambda r: f"{r['file_mib']:.2f}", ">"),
            ("ppl", lambda r: f"{r['ppl']:.2f}", ">"), ("scorer tok/s", lambda r: f"{r['scorer_tokens_per_s']:,.0f}", ">"),
            ("loss tok/s", lambda r: f"{r['loss_tokens_per_s']:,.0f}", ">"),
            ("loss speed-up", lambda r: f"{r['loss_tokens_per_s'] / models[0]['loss_tokens_per_s']:.2f}x", ">")]
    cells = [[c[1](r) for c in cols] for r in models]
    widths = [max(len(c[0]), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    fmt = lambda vals: "  ".join(f"{v:{c[2]}{w}}" for v, c, w in zip(vals, cols, widths))  # noqa: E731
    cfg = res["config"]
    return "\n".join([fmt([c[0] for c in cols])] + [fmt(row) for row in cells] + [
        f"{cfg['subset']} split, {cfg['tokens']:,} tokens (1/{cfg['num_shards']} of the batches), median of "
        f"{cfg['repeats']} passes, {cfg['threads']} thread(s); speed-up relative to the first model"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="fairseq data-bin directory (dict.txt, SPLIT.bin/.idx)")
    parser.add_argument("--model", action="append", metavar="LABEL=CKPT", help="a checkpoint (repeatable)")
    parser.add_argument("--subset", default="valid")
    parser.add_argument("--num-shards", type=int, default=1, help="time every K-th batch only (default 1: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens-per-sample", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--user-dir", default=os.path.join(REPO, "user_dir"),
                        help="fairseq --user-dir for FLOP checkpoints (default: this checkout's user_dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.num_shards < 1:
        parser.error("--repeats, --threads and --num-shards must be >= 1")
    ckpts = _labelled(args)
    from flop_fairseq.tools.checkpoint import quiet_logging

    quiet_logging()
    ip = run_inprocess(ckpts, args)
    res = {"config": {"data": os.path.abspath(args.data), "subset": args.subset, "num_shards": args.num_shards,
                      "repeats": args.repeats, "threads": args.threads, "tokens_per_sample": args.tokens_per_sample,
                      "max_tokens": args.max_tokens, "method": "inprocess", "tokens": ip["tokens"]},
           "models": ip["models"]}
    print(json.dumps(res, indent=2) if args.json else format_table(res))


if __name__ == "__main__":
    main()
