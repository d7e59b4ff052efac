"""The report's set-up, dense-curve and speed sections (:mod:`.report` has the results, the
ablation and the summary)."""

import statistics


def _bands_text(bands) -> str:
    return ", ".join(f"[{b['vocab'][0]},{b['vocab'][1]}) dim {b['rank']}" for b in bands)


def _flag(flags, name) -> str:
    return flags[flags.index(name) + 1] if name in flags else "?"


def setup_section(res: dict, by: dict) -> list:
    info, cfg, st, run = res["machine"], res["config"], res["setup"], res["run"]
    mf, ph, fs, kd = res["model_facts"], st["phases"], st["flop"], st["distill"]
    D, F = cfg["dense_updates"], cfg["finetune_updates"]
    load = res["timing"]["load"]
    load_txt = (f"1-minute load average every 30 s: median {load['median']:.1f}, range {load['min']:.1f}-"
                f"{load['max']:.1f}, with {load['own_processes_median']:.0f} of this benchmark's processes (median)"
                if load else "the load average was not recorded")
    dense = by[("dense", None)]
    epochs = D * st["max_tokens"] / res["data_facts"]["tokens"]["train"]
    ev = ("the full validation and test splits" if cfg["eval_shards"] == 1 else
          f"1/{cfg['eval_shards']} of each split (`--num-shards {cfg['eval_shards']} --shard-id 0`; a pipeline "
          f"check, not a measurement)")
    distilled = ", ".join(kd["budgets"]) or "none"
    return [
        "## Set-up\n",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, no GPU; Python {info['python']}, "
        f"torch {info['torch']}, fairseq {info['fairseq']}. **Timings are noisy**: other jobs shared the cores "
        f"({load_txt}); every process ran with {run['threads']} torch thread(s), up to {run['jobs']} at once, "
        "the speed runs alone.",
        f"- Data: WikiText-2 (`{res['data']}`), vocabulary {res['data_facts']['vocab']:,} incl. specials, "
        f"{res['data_facts']['tokens']['train']:,} training tokens.",
        f"- Model: fairseq `transformer_lm`, {' '.join(st['model_flags'])}: tied adaptive input/softmax bands "
        f"{_bands_text(mf['bands'])}. The bands hold {mf['band_params']:,} parameters; with the "
        f"{_flag(st['model_flags'], '--decoder-layers')} decoder layers' attention/FFN matrices, "
        f"{mf['all_params']:,} are prunable (\"all prunable\", `--flop-decoder-layers`) of "
        f"{dense['total_params']:,}.",
        f"- Training (every run): Adam, constant lr {st['lr']}, --tokens-per-sample {st['tokens_per_sample']}, "
        f"--max-tokens {st['max_tokens']}, dropout {mf['dropout']:g}, seed {st['seed']}, last checkpoint used. "
        f"Dense pre-training D = {D} updates (~{epochs:.1f} epochs), validated every {st['valid_interval']}. "
        f"Every method gets F = {F} updates ({F / D:.0%} of D) from the dense checkpoint, on the same batches "
        f"(each run starts at the first one, seed {st['seed']}); the small models D + F = {D + F} from scratch.",
        f"- FLOP: `flop-convert` (`--flop-decoder-layers` for the all-prunable budgets); all F = {F} updates of "
        f"`--criterion flop_adaptive_loss --target-sparsity s --sparsity-warmup-updates {ph['warmup_all']} "
        f"--gate-lr-scale {fs['gate_lr_scale']:g} --lambda-lr-scale {fs['lambda_lr_scale']:g} --lambda2-init "
        f"{fs['lambda2_init']:g}`; `flop-compact --target-sparsity s` (the exact budget, chosen by the gates' "
        "log_alpha). Chosen on validation among splits of F between pruning and fine-tuning (the split table "
        "below). The gate/multiplier settings are the short-regime sweep's (below), not re-tuned for this "
        "regime or for the layer matrices.",
        f"- Distillation (`+ distillation` rows, at {distilled} only): the dense model after D as teacher in "
        f"every one of the method's F updates, `--distill-teacher DENSE --distill-weight {kd['weight']:g} "
        f"--distill-temperature {kd['temperature']:g} --distill-chunk-tokens {kd['chunk_tokens']}` "
        "(`distill_adaptive_loss` for SVD's fine-tuning, `flop_adaptive_loss` and `agp_adaptive_loss` "
        "take the same flags). Not at every budget: a distilled update costs several plain ones here (Speed).",
        f"- SVD truncation: the converted model's top singular components, ranks `budget_ranks` per band and, "
        f"for all-prunable budgets, the same fraction of every layer matrix's parameters; compacted, then F "
        f"updates of fine-tuning. AGP: cubic ramp from 0 to s over the first {ph['warmup']} updates (where "
        f"FLOP's {st['prune_fraction']:.0%} split reaches its target; FLOP itself reaches it at {ph['warmup_all']}, "
        "so AGP spends more updates on its final mask), every band matrix (and layer matrix, for "
        "all-prunable budgets) pruned to s_t, then a fixed mask. Small: the SVD allocation's shape (low-rank layer matrices included), freshly "
        "initialised.",
        f"- Evaluation: `fairseq-eval-lm --tokens-per-sample {st['tokens_per_sample']} --max-tokens "
        f"{st['eval_max_tokens']}` on {ev}; perplexity per token, no context across the blocks.\n",
    ]


def dense_curve_section(res: dict, by: dict) -> list:
    curve, st = res["dense_curve"], res["setup"]
    L = ["## Dense pre-training\n"]
    if not curve:
        return L + ["The dense run's log has no validation lines.\n"]
    shards = res["config"]["eval_shards"]
    part = "the whole valid split" if shards == 1 else f"about 1/{shards} of the valid split (`--max-valid-steps`)"
    L += ["Validation perplexity of the dense model during pre-training (fairseq-train's validation, the "
          f"adaptive-softmax loss on {part}):\n", "| updates | valid ppl | change |", "|---:|---:|---:|"]
    prev = None
    for p in curve:
        change = f"{(p['ppl'] / prev - 1) * 100:+.1f}%" if prev else ""
        L.append(f"| {p['num_updates']:,} | {p['ppl']:.1f} | {change} |")
        prev = p["ppl"]
    k = st["remaining_gain_intervals"]
    if len(curve) > k:
        a, b = curve[-1 - k], curve[-1]
        dft = by[("dense+ft", None)]
        L += ["", f"Remaining gain: the last {b['num_updates'] - a['num_updates']:,} updates still took the "
              f"validation perplexity from {a['ppl']:.1f} to {b['ppl']:.1f} ({(b['ppl'] / a['ppl'] - 1) * 100:+.1f}%), "
              f"and F = {res['config']['finetune_updates']} more updates give the dense + F reference "
              f"{dft['valid_ppl']:.1f} (fairseq-eval-lm; the dense model: {by[('dense', None)]['valid_ppl']:.1f}). "
              "The dense model is not converged: this is the largest pre-training the machine's time allowed "
              "next to the pruning runs, not the end of training.\n"]
    return L


def _distill_cost(rows: list) -> list:
    """Training wps of every distilled run against its twin without distillation (same model, budget
    and updates; both ran beside another job, so only roughly comparable)."""
    wps = {t["step"]: t["wps_median"] for x in rows for t in x.get("train", [])}
    pairs = [(s[:-2], s) for s in wps if s.endswith("kd") and s[:-2] in wps]
    if not pairs:
        return []
    L = ["", "Cost of distillation: fairseq-train words/s of every distilled run and its twin without "
         "(median over log intervals; both beside another job):\n", "| run | wps | distilled | ratio |",
         "|---|---:|---:|---:|"]
    L += [f"| {a} | {wps[a]:,.0f} | {wps[b]:,.0f} | {wps[a] / wps[b]:.1f}x slower |" for a, b in pairs]
    ratio = statistics.median(wps[a] / wps[b] for a, b in pairs)
    return L + ["", f"A distilled update costs about {ratio:.1f} plain ones (median): the KL is taken over all "
                "vocabulary types for every token (band by band), while the training loss scores each token only "
                "against the head and its own cluster; the teacher's forward itself is a small part.\n"]


def speed_section(res: dict) -> list:
    ts, es, cfg, run = res["train_speed"], res["eval_speed"], res["config"], res["run"]
    labels = {"dense": "dense transformer_lm, adaptive_loss",
              "flop": "FLOP, bands (gated full-rank bands + Lagrangian)",
              "flop_all": "FLOP, whole model (--flop-decoder-layers: gated full-rank layer factors too)",
              "compact_all": "compact FLOP model of the smallest all-prunable budget, fine-tuning"}
    base = ts["dense"]["wps_median"]
    L = ["## Speed\n", f"Training words/s (median over log intervals of a {cfg['speed_updates']}-update run, one "
         f"at a time, {run['threads']} thread):\n", "| training | wps | relative to dense |", "|---|---:|---:|"]
    L += [f"| {labels[n]} | {ts[n]['wps_median']:,.0f} | {ts[n]['wps_median'] / base:.2f}x |" for n in labels if n in ts]
    L += _distill_cost(res["rows"])
    L += ["", f"In-process evaluation timings (`python -m benchmarks.speed`, {es['config']['tokens']:,} validation "
          f"tokens, median of {es['config']['repeats']}, {es['config']['threads']} thread, one process alone): "
          "*scorer* is fairseq-eval-lm's path (full-vocabulary log-probabilities per token), *loss* the "
          "adaptive-softmax loss path of training and validation.\n",
          "| model | params | file MiB | scorer tok/s | loss tok/s | scorer vs dense | loss vs dense |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    d0 = next((m for m in es["models"] if m["label"] == "dense"), es["models"][0])
    L += [f"| {m['label']} | {m['params']:,} | {m['file_mib']:.2f} | {m['scorer_tokens_per_s']:,.0f} | "
          f"{m['loss_tokens_per_s']:,.0f} | {m['scorer_tokens_per_s'] / d0['scorer_tokens_per_s']:.2f}x | "
          f"{m['loss_tokens_per_s'] / d0['loss_tokens_per_s']:.2f}x |" for m in es["models"]]
    return L + ["", "The FLOP models timed are `flop-compact --target-sparsity`'s output of FLOP over all of F "
                "(weights only). AGP's zeros are stored as dense tensors: no speed-up.\n"]
