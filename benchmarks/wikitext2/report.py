"""BENCHMARKS.md from a run's results record (:mod:`.collect`): set-up, the dense curve, a
table per budget, the ablation, the split of F, what the numbers say, speed
(:mod:`.report_sections`); then the frozen short regime and the FLOP settings sweep
(:mod:`.short_regime`), and the commands. Every number comes from the records; the prose that
reads them is here; labels come from the table of methods (:data:`.settings.METHODS`).
"""

import datetime
import os

from . import short_regime
from .report_sections import dense_curve_section, setup_section, speed_section
from .settings import LABEL, METHODS, SPLIT_METHODS

# the methods of the per-budget tables and the plot, in the table's order
HEADLINE = tuple(name for name, m in METHODS.items() if m.style)
# compared with FLOP at every budget (their distilled twins where run)
BASELINES = tuple(name for name in HEADLINE if not name.startswith("flop") and not METHODS[name].distill)
ABLATION = ("flop+kd", "flop", "flop-plain", "flop-p60")


def scope_text(b: dict) -> str:
    return "the band parameters" if b["scope"] == "bands" else "the all prunable parameters"


def budget_label(b: dict) -> str:
    return f"{1 - b['sparsity']:.0%} of {scope_text(b)}"


def rel(a: float, b: float) -> str:
    """``a`` relative to ``b`` as a signed percentage (test ppl: negative is better)."""
    return f"{(a / b - 1) * 100:+.1f}%"


def _structure(x: dict) -> str:
    """Kept ranks of the bands (and the layer matrices' kept / full rank, summed)."""
    if x["method"].startswith("agp"):
        return "dense tensors, sparse"
    if not x.get("ranks"):
        return "full"
    out = short_regime.ranks_text(x["ranks"])
    if x.get("layer_rank"):
        out += f"; layers {x['layer_kept']}/{x['layer_rank']}"
    return out


def table(rows: list) -> list:
    L = ["| method | band params kept | % of dense bands | all prunable kept | % of all | total params | "
         "weights MiB | ranks | valid ppl | test ppl | eval tok/s |",
         "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for x in rows:
        tok = f"{x['eval_tokens_per_s']:,.0f}" + (" (no speed-up)" if x["method"].startswith("agp") else "")
        L.append(f"| {LABEL[x['method']]} | {x['band_params']:,} | {x['band_fraction']:.1%} | {x['all_params']:,} | "
                 f"{x['all_fraction']:.1%} | {x['total_params']:,} | {x['model_mib']:.2f} | {_structure(x)} | "
                 f"{x['valid_ppl']:.1f} | {x['test_ppl']:.1f} | {tok} |")
    return L


def headline(res: dict) -> dict:
    """``(method, budget) -> row`` with FLOP's row at each budget the FLOP model (without
    distillation) of lowest validation perplexity: over all of F, or a split of it."""
    by = {(x["method"], x["budget"]): x for x in res["rows"]}
    head = dict(by)
    for b in res["setup"]["budgets"]:
        cands = [by[(m, b["key"])] for m in ("flop",) + tuple(sorted(SPLIT_METHODS)) if (m, b["key"]) in by]
        if cands:
            head[("flop", b["key"])] = min(cands, key=lambda x: x["valid_ppl"])
    return head


def results_section(res: dict, by: dict, rel_png: str) -> list:
    """``by``: every row by (method, budget); the tables and the summary read :func:`headline`'s."""
    st, raw, by = res["setup"], by, headline(res)
    L = ["## Results\n",
         "Band params = the adaptive input/softmax band matrices; all prunable = those plus every attention/FFN "
         "matrix (weights; biases are pruned by no method); for AGP the non-zero ones. Total params = the whole "
         "model (AGP: non-zero; it stores all of the dense model's). Weights MiB = the fp32 state dict (the "
         "checkpoint files of fine-tuned models also hold Adam's state). Ranks = kept rank of each band (full "
         f"{short_regime.ranks_text(b['rank'] for b in res['model_facts']['bands'])}), and for whole-model budgets the "
         "kept / full rank summed over the layer matrices. Eval tok/s = fairseq-eval-lm on the test split, "
         "with other processes running (noisy; the Speed section has the controlled timings). Nothing was "
         "tuned on test: FLOP's gate/multiplier settings come from the short-regime sweep on validation, "
         "and FLOP's row at each budget is the FLOP model (without distillation) of lowest validation "
         "perplexity among the splits of F between pruning and fine-tuning (the split table).\n",
         "### Unpruned references\n"] + table([by[("dense", None)], by[("dense+ft", None)]]) + [""]
    for b in st["budgets"]:
        rows = [by[(m, b["key"])] for m in HEADLINE if (m, b["key"]) in by]
        L += [f"### {budget_label(b)} (target sparsity {b['sparsity']:g})\n"] + table(rows) + [""]
    L += [f"![test perplexity against kept parameters]({rel_png})\n"]
    return L + ablation_section(res, raw) + split_section(res, raw) + summary(res, by)


def ablation_section(res: dict, by: dict) -> list:
    st, ph = res["setup"], res["setup"]["phases"]
    key = st["ablation"]["budget"]
    b = next(x for x in st["budgets"] if x["key"] == key)
    base = by.get(("flop+kd", key)) or by[("flop", key)]
    F = res["config"]["finetune_updates"]
    L = [f"### Ablation ({budget_label(b)})\n",
         f"Each ingredient on and off. FLOP prunes all {F} updates (target reached at {ph['warmup_all']}) and is "
         "compacted to the exact budget, or as trained (the eval mask's own count); the split variant prunes "
         f"{ph['prune']} updates (target reached at {ph['warmup']}), compacts to the exact budget and fine-tunes "
         f"the compact model {ph['finetune']} updates in a second run. Relative change of test ppl against "
         f"{LABEL[base['method']]}.\n",
         "| variant | pruning updates | fine-tuning updates | exact budget | distillation | band params kept | "
         "valid ppl | test ppl | test vs first row |", "|---|---:|---:|---|---|---:|---:|---:|---:|"]
    for m in ABLATION:
        x = by.get((m, key))
        if x is None:
            continue
        split = m in SPLIT_METHODS
        L.append(f"| {LABEL[m]} | {ph['prune'] if split else F} | {ph['finetune'] if split else 0} | "
                 f"{'no' if m == 'flop-plain' else 'yes'} | {'yes' if m.endswith('+kd') else 'no'} | "
                 f"{x['band_fraction']:.1%} | {x['valid_ppl']:.1f} | {x['test_ppl']:.1f} | "
                 f"{rel(x['test_ppl'], base['test_ppl']) if x is not base else '--'} |")
    return L + [""]


def split_variants(res: dict, by: dict, key: str) -> list:
    """``(fraction of F pruning, pruning updates, fine-tuning updates, row)`` of every FLOP run at
    budget ``key``: the split sweep's and all of F (FLOP's own row)."""
    st, F = res["setup"], res["config"]["finetune_updates"]
    split = st.get("split", {})
    out = [(1.0, F, 0, by.get(("flop", key)))]
    for f in split.get("fractions", []):
        ph = split["phases"][f"{f:g}"]
        method = next(m for m, x in SPLIT_METHODS.items() if x == f)
        out.append((f, ph["prune"], ph["finetune"], by.get((method, key))))
    return sorted((v for v in out if v[3] is not None), key=lambda v: v[0])


def split_section(res: dict, by: dict) -> list:
    """The split of F between pruning and fine-tuning, at the split sweep's budgets (chosen on valid)."""
    split = res["setup"].get("split")
    if not split:
        return []
    L = ["### How to split F between pruning and fine-tuning\n",
         "FLOP with a fraction of F spent pruning (target reached at 80% of the pruning updates; exact "
         "budget; no distillation), the rest fine-tuning the compact model in a second fairseq-train run "
         "(`--finetune-from-model`, so Adam starts afresh); 100% is FLOP's own row. The choice is made on "
         "validation perplexity (bold); test is shown for the record.\n",
         "| budget | pruning updates | fine-tuning updates | kept | valid ppl | test ppl |",
         "|---|---:|---:|---:|---:|---:|"]
    for b in res["setup"]["budgets"]:
        rows = split_variants(res, by, b["key"])
        if len(rows) < 2:
            continue
        best = min(rows, key=lambda v: v[3]["valid_ppl"])
        frac = "band_fraction" if b["scope"] == "bands" else "all_fraction"
        for f, p, ft, x in rows:
            bold = "**" if x is best[3] else ""
            L.append(f"| {budget_label(b)} | {p} ({f:.0%}) | {ft} | {x[frac]:.1%} | {bold}{x['valid_ppl']:.1f}{bold} | "
                     f"{x['test_ppl']:.1f} |")
    return L + [""]


def budget_summary(b: dict, by: dict) -> str:
    """One budget: who wins, and FLOP against each baseline (with distillation too where run)."""
    key = b["key"]
    rows = [by[(m, key)] for m in HEADLINE if (m, key) in by]
    best = min(rows, key=lambda x: x["test_ppl"])
    flop = by[("flop", key)]
    parts = [f"{LABEL[m]} {by[(m, key)]['test_ppl']:.1f} (FLOP {rel(flop['test_ppl'], by[(m, key)]['test_ppl'])})"
             for m in BASELINES]
    text = (f"- **{budget_label(b)}**: lowest test ppl {best['test_ppl']:.1f}, "
            + ("FLOP's" if best["method"].startswith("flop") else f"**{LABEL[best['method']]}**")
            + (" (with distillation)" if best["method"].endswith("+kd") and best["method"].startswith("flop") else "")
            + f". FLOP {flop['test_ppl']:.1f} against " + ", ".join(parts) + ".")
    if ("flop+kd", key) in by:
        kd = by[("flop+kd", key)]
        other = {m: by[(m + "+kd", key)] for m in BASELINES if (m + "+kd", key) in by}
        twins = [f"{LABEL[m + '+kd']} {x['test_ppl']:.1f} (FLOP+kd {rel(kd['test_ppl'], x['test_ppl'])})"
                 for m, x in other.items()]
        text += f" With distillation: FLOP {kd['test_ppl']:.1f} against " + ", ".join(twins) + "."
    return text


def summary(res: dict, by: dict) -> list:
    """What the numbers say: every claim computed from the rows."""
    st, cfg = res["setup"], res["config"]
    D, F = cfg["dense_updates"], cfg["finetune_updates"]
    L = ["### What the numbers say\n", "Test perplexity; in parentheses FLOP's relative difference (negative: FLOP "
         "is better).\n"]
    L += [budget_summary(b, by) for b in st["budgets"]]
    for m in BASELINES:
        wins = [budget_label(b) for b in st["budgets"]
                if by[("flop", b["key"])]["test_ppl"] < by[(m, b["key"])]["test_ppl"]]
        L.append(f"- FLOP (no distillation) beats {LABEL[m]} at {len(wins)} of {len(st['budgets'])} "
                 f"budgets" + (f": {'; '.join(wins)}." if wins else "."))
    for b in st["budgets"]:
        key = b["key"]
        pairs = [(m, by[(m, key)], by[(m + "+kd", key)]) for m in ("flop", "svd+ft", "agp") if (m + "+kd", key) in by]
        if pairs:
            L.append(f"- Distillation at {budget_label(b)}: test ppl " + "; ".join(
                f"{LABEL[m]} {a['test_ppl']:.1f} -> {k['test_ppl']:.1f} ({rel(k['test_ppl'], a['test_ppl'])})"
                for m, a, k in pairs) + ". Its cost is in the Speed section.")
    ref, dft = by[("dense", None)], by[("dense+ft", None)]
    L.append(f"- Unpruned: the dense model after D = {D} updates has test ppl {ref['test_ppl']:.1f}, after D + F = "
             f"{D + F} updates {dft['test_ppl']:.1f}: the pruned models are compared with the latter, which had "
             f"the same {F} updates more (and the same data) without losing any parameter.")
    L += allocation_text(st, by)
    L.append("- Budgets met: FLOP kept " + "; ".join(
        exact_budget_text(by[("flop", b["key"])], b) for b in st["budgets"]) + ". SVD and small models are at "
        "or just under their budget by construction; AGP is exact, but unstructured (no smaller tensors, no "
        "speed-up).")
    return L + [""]


def allocation_text(st: dict, by: dict) -> list:
    """Where FLOP's allocation closes a whole band (every word of it then shares one zero input
    embedding and a uniform distribution within its cluster), against SVD's at the same budget."""
    out = []
    for m in ("flop", "flop+kd"):
        gone = [(b, by[(m, b["key"])]) for b in st["budgets"] if 0 in by.get((m, b["key"]), {}).get("ranks", [1])]
        if gone:
            out.append(f"- {LABEL[m]} closes a whole band (kept ranks; SVD's at the same budget): " + "; ".join(
                f"{budget_label(b)} {short_regime.ranks_text(x['ranks'])} ({short_regime.ranks_text(by[('svd+ft', b['key'])]['ranks'])})"
                for b, x in gone) + ". The penalty prices a component of the rarest band at its parameter cost, "
                "about ten of the frequent band's, while the rare tokens that could defend it are few in any batch.")
    return out


def exact_budget_text(x: dict, b: dict) -> str:
    """What the FLOP kept of a budget's scope, and what the eval mask as trained would have
    kept (the exact-budget allocation's additions and removals)."""
    kept = x["band_fraction" if b["scope"] == "bands" else "all_fraction"]
    text = f"{kept:.2%} of {scope_text(b)} for a {1 - b['sparsity']:.0%} target"
    a = x.get("budget_alloc")
    if a:
        trained = a["trained_remaining_prunable_params"] * (1 - a["sparsity"]) / max(a["remaining_prunable_params"], 1)
        text += (f" (the eval mask as trained: {trained:.2%}; the exact allocation added {a['added_components']} "
                 f"and removed {a['removed_components']} rank components)")
    return text


def header(res: dict) -> list:
    t, e = res["timing"], res["estimate"]
    stamp = lambda x: datetime.datetime.fromtimestamp(x).strftime("%Y-%m-%d %H:%M")  # noqa: E731
    began, ended = (stamp(t["began"]), stamp(t["began"] + t["elapsed_s"])) if t["began"] else ("?", "?")
    return ["# FLOP on WikiText-2 in the users' regime: against SVD truncation, AGP and small dense models\n",
            f"Generated by `python -m benchmarks.wikitext2 --mode {res['mode']}` from the run that ended "
            f"{ended}. Wall-clock from the first step's start ({began}) to the last step's end: "
            f"{t['elapsed_s'] / 60:.1f} min (including any pause between invocations); summed step times "
            f"{t['summed_step_s'] / 60:.1f} min with up to {res['run']['jobs']} steps at once. The cost model of "
            f"`benchmarks/wikitext2/estimate.py` puts this graph at {e['wall_s'] / 60:.0f} min of wall-clock "
            f"({e['summed_s'] / 60:.0f} min summed) on a machine doing nothing else.\n"]


def commands_section(res: dict) -> list:
    c = res["commands"]
    L = ["## Commands\n",
         "All commands of the run, as it recorded them, in the order the steps were defined (paths under the "
         f"work directory `{c['workdir']}`; `{c['bin']}/` binaries; environment "
         f"OMP_NUM_THREADS={res['run']['threads']}):\n", "```"]
    L += [f"# {step}\n{shown}" for step, shown in c["steps"]]
    return L + ["```\n", f"Reproduce: `python -m benchmarks.wikitext2 --mode {res['mode']}` (`make bench-full`; "
                "`--report-only` rewrites this report from its committed record); results are cached per step "
                "under the work directory, so rerunning resumes.\n"]


def render(res: dict, out: str, png: str) -> str:
    by = {(x["method"], x["budget"]): x for x in res["rows"]}
    rel_png = os.path.relpath(png, os.path.dirname(os.path.abspath(out)))
    L = header(res) + setup_section(res, by) + dense_curve_section(res, by) + results_section(res, by, rel_png)
    L += speed_section(res) + short_regime.section() + commands_section(res)
    return "\n".join(L)


def write_report(res: dict, out: str, png: str) -> None:
    from benchmarks.full_scale.report import keep_section

    text = keep_section(out, render(res, out, png))
    with open(out, "w") as f:
        f.write(text)
