"""What a FLOP checkpoint holds: kept rank and parameters per band and layer (``flop-report``)."""

import os

import torch

from ..core import band_rows, count_params, expected_sparsity, gated_modules, layer_rows, layer_totals


@torch.no_grad()
def report(model, num_updates=None) -> dict:
    """The report as a dict (``flop-report --json``); ``num_updates`` is the checkpoint's count.
    The counts carry :mod:`flop_fairseq.core.counting`'s names."""
    counts = count_params(model)
    layers = layer_rows(model)
    gated = bool(gated_modules(model))
    out = {
        "sparsity": counts.sparsity,
        "expected_sparsity": expected_sparsity(model).item() if gated else None,
        "prunable_params": counts.prunable_params,
        "remaining_prunable_params": counts.remaining_prunable_params,
        "band_params": counts.band_params,
        "remaining_band_params": counts.remaining_band_params,
        "total_params": counts.total_params,
        "stored_params": counts.stored_params,
        "gated": gated,
        "bands": band_rows(model),
    }
    if layers:
        out["layers"] = {**layer_totals(layers), "per_matrix": layers}
    if num_updates is not None:
        out["num_updates"] = int(num_updates)
    lagrangian = getattr(model, "flop_lagrangian", None)
    if lagrangian is not None:
        out["lambda_1"] = float(lagrangian.lambda_1)
        out["lambda_2"] = float(lagrangian.lambda_2)
    return out


def draw_kept_ranks(ax, bands) -> None:
    """Bars of rank before pruning and kept rank per band (``report["bands"]``) on ``ax``."""
    x = range(len(bands))
    ax.bar(x, [r["rank"] for r in bands], color="#d0d7e2", label="rank before pruning")
    ax.bar(x, [r["kept"] for r in bands], color="#2f6db5", label="kept rank")
    for i, r in enumerate(bands):
        ax.text(i, r["kept"], str(r["kept"]), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(x), [f"{r['side']} {r['band']}\n[{r['vocab'][0]}, {r['vocab'][1]})" for r in bands],
                  fontsize=8)
    ax.set_ylabel("rank")
    ax.legend(fontsize=8)


def save_figure(fig, path: str) -> None:
    """Writes ``fig`` to ``path`` through a temporary file, then closes it."""
    import matplotlib.pyplot as plt

    tmp = path + ".tmp.png"
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def plot(rep: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(rep["bands"]), 3.6))
    draw_kept_ranks(ax, rep["bands"])
    ax.set_title(f"FLOP kept rank per band (hard sparsity {rep['sparsity']:.3f})")
    save_figure(fig, path)
