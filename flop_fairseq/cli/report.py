"""``flop-report CKPT [--json] [--plot FILE.png]``: kept rank and parameters per band."""

import argparse
import json
import os
import sys

import torch

from ..accounting import band_rows, compacted_param_count, layer_rows
from ..sparsity import expected_sparsity, gated_modules
from .checkpoint_io import CheckpointError, quiet_logging, load_flop_model


def flop_layer_names(model, cfg_model) -> list:
    from ..models.flop_transformer_lm import LAYER_MATRICES

    if not cfg_model.get("flop_decoder_layers", False):
        return []
    return [f"decoder.layers.{i}.{p}" for i in range(len(model.decoder.layers)) for p in LAYER_MATRICES]


@torch.no_grad()
def report(model, cfg_model, num_updates=None) -> dict:
    """The report as a dict (the ``--json`` output); ``num_updates`` is the checkpoint's count."""
    cutoffs = {"decoder.embed_tokens.bands": model.decoder.embed_tokens.cutoff,
               "decoder.adaptive_softmax.bands": model.decoder.adaptive_softmax.cutoff}
    bands = band_rows(model, cutoffs)
    layers = layer_rows(model, flop_layer_names(model, cfg_model))
    prunable = sum(r["params_before"] for r in bands + layers)
    remaining = sum(r["params_after"] for r in bands + layers)
    gated = bool(gated_modules(model))
    out = {
        "sparsity": 1.0 - remaining / prunable,
        "expected_sparsity": expected_sparsity(model).item() if gated else None,
        "prunable_params": prunable,
        "remaining_prunable_params": remaining,
        "total_params": compacted_param_count(model),
        "gated": gated,
        "bands": bands,
    }
    if layers:
        out["layers"] = {
            "matrices": len(layers),
            "params_before": sum(r["params_before"] for r in layers),
            "params_after": sum(r["params_after"] for r in layers),
            "rank": sum(r["rank"] for r in layers),
            "kept": sum(r["kept"] for r in layers),
            "per_matrix": layers,
        }
    lagrangian = getattr(model, "flop_lagrangian", None)
    if num_updates is not None:
        out["num_updates"] = int(num_updates)
    if lagrangian is not None:
        out["lambda_1"] = float(lagrangian.lambda_1)
        out["lambda_2"] = float(lagrangian.lambda_2)
    return out


def format_table(path: str, rep: dict) -> str:
    lines = [f"{path}: {'gated FLOP model' if rep['gated'] else 'compact FLOP model'}",
             f"{'band':>6} {'side':>6} {'vocabulary':>17} {'rank':>6} {'kept':>6} {'params before':>14} "
             f"{'params after':>13}"]
    for r in rep["bands"]:
        vocab = f"[{r['vocab'][0]}, {r['vocab'][1]})"
        lines.append(f"{r['band']:>6} {r['side']:>6} {vocab:>17} {r['rank']:>6} {r['kept']:>6} "
                     f"{r['params_before']:>14,} {r['params_after']:>13,}")
    if "layers" in rep:
        lay = rep["layers"]
        lines.append(f"{'layers':>6} {lay['matrices']:>6} {'matrices':>17} {lay['rank']:>6} {lay['kept']:>6} "
                     f"{lay['params_before']:>14,} {lay['params_after']:>13,}")
    lines.append(f"{'total':>6} {'':>6} {'':>17} {'':>6} {'':>6} {rep['prunable_params']:>14,} "
                 f"{rep['remaining_prunable_params']:>13,}")
    lines.append(f"hard sparsity {rep['sparsity']:.4f}" + (
        f", expected sparsity {rep['expected_sparsity']:.4f}" if rep["expected_sparsity"] is not None else ""))
    lines.append(f"model parameters once compacted: {rep['total_params']:,}")
    return "\n".join(lines)


def plot(rep: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['side']} {r['band']}\n[{r['vocab'][0]},{r['vocab'][1]})" for r in rep["bands"]]
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(labels), 3.6))
    ax.bar(x, [r["rank"] for r in rep["bands"]], color="#d0d7e2", label="rank before pruning")
    ax.bar(x, [r["kept"] for r in rep["bands"]], color="#2f6db5", label="kept rank")
    for i, r in enumerate(rep["bands"]):
        ax.text(i, r["kept"], str(r["kept"]), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("rank")
    ax.set_title(f"FLOP kept rank per band (hard sparsity {rep['sparsity']:.3f})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="flop-report",
                                     description="Kept rank and parameter counts per band of a FLOP checkpoint "
                                                 "(gated or compact).")
    parser.add_argument("checkpoint", help="FLOP checkpoint (flop-convert, fairseq-train or flop-compact output)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the kept rank per band into this PNG")
    args = parser.parse_args(argv)
    quiet_logging()
    if args.plot and not args.plot.lower().endswith(".png"):
        parser.error("--plot takes a .png file name")
    try:
        state, model = load_flop_model(args.checkpoint)
    except CheckpointError as e:
        sys.exit(f"flop-report: error: {e}")
    history = state.get("optimizer_history") or [{}]
    rep = report(model, state["cfg"]["model"], history[-1].get("num_updates"))
    try:
        print(json.dumps(rep, indent=2) if args.json else format_table(args.checkpoint, rep), flush=True)
    except BrokenPipeError:  # `flop-report ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if args.plot:
        plot(rep, args.plot)
        if not args.json:
            print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
