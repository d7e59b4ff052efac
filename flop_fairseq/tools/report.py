"""What a FLOP checkpoint holds: kept rank and parameters per band and layer (``flop-report``)."""

import os
from typing import List, Optional

import torch

from ..core import (
    apply_allocation,
    band_rows,
    count_params,
    expected_sparsity,
    gated_modules,
    layer_rows,
    layer_totals,
    weak_kept,
)


@torch.no_grad()
def report(model, num_updates=None, allocation=None) -> dict:
    """The report as a dict (``flop-report --json``); ``num_updates`` is the checkpoint's count.
    The counts carry :mod:`flop_fairseq.core.counting`'s names.

    With ``allocation`` (:func:`~flop_fairseq.core.allocate`) the model's eval mask is first
    replaced by it, in place: rows and counts are what the allocation keeps, each band row gets
    ``trained_kept`` (the eval mask as trained), ``budget`` holds the allocation's summary, and
    ``expected_sparsity`` stays that of the trained gates."""
    gated = bool(gated_modules(model))
    expected = expected_sparsity(model).item() if gated else None
    trained_bands = band_rows(model)
    if allocation is not None:
        apply_allocation(model, allocation)
    counts = count_params(model)
    layers = layer_rows(model)
    out = {
        "sparsity": counts.sparsity,
        "expected_sparsity": expected,
        "prunable_params": counts.prunable_params,
        "remaining_prunable_params": counts.remaining_prunable_params,
        "band_params": counts.band_params,
        "remaining_band_params": counts.remaining_band_params,
        "total_params": counts.total_params,
        "stored_params": counts.stored_params,
        "gated": gated,
        "bands": band_rows(model),
    }
    if gated:  # kept components whose eval value is below WEAK_VALUE: budget spent on almost nothing
        weak = weak_kept(model)
        out["weak_components"], out["weak_params"] = weak["components"], weak["params"]
    if layers:
        out["layers"] = {**layer_totals(layers), "per_matrix": layers}
    if allocation is not None:
        for row, trained in zip(out["bands"], trained_bands):
            row["trained_kept"] = trained["kept"]
        out["budget"] = allocation.summary()
    if num_updates is not None:
        out["num_updates"] = int(num_updates)
    lagrangian = getattr(model, "flop_lagrangian", None)
    if lagrangian is not None:
        out["lambda_1"] = float(lagrangian.lambda_1)
        out["lambda_2"] = float(lagrangian.lambda_2)
    return out


def budget_lines(budget: dict, logprob_diff: Optional[float] = None) -> List[str]:
    """What ``flop-compact`` and ``flop-report`` print about an exact-budget allocation
    (:meth:`~flop_fairseq.core.budget.Allocation.summary`): target, achieved, the gap in parameters
    and in units of the cheapest component not kept, and the change from the trained eval mask."""
    unit = budget["cheapest_addable_params"]
    gap = (f"{budget['gap_params']:,} params = {budget['gap_components']:.2f} of the cheapest component not "
           f"kept ({unit:,} params)" if unit else f"{budget['gap_params']:,} params (every live component kept)")
    change = (f"budget: the eval mask as trained keeps {budget['trained_remaining_prunable_params']:,} "
              f"(the allocation adds {budget['added_components']} and removes {budget['removed_components']} "
              "rank components)")
    if logprob_diff is not None:
        change += f"; max |log p(budget) - log p(trained mask)| = {logprob_diff:.1e}"
    if budget.get("weak_components"):
        change += (f"; {budget['weak_components']} of the kept components have an eval value below 0.1 "
                   f"({budget['weak_params']:,} params)")
    return [f"budget: target {budget['target_params']:,} remaining prunable params (sparsity "
            f"{budget['target_sparsity']:.4f}); achieved {budget['remaining_prunable_params']:,} (sparsity "
            f"{budget['sparsity']:.4f}); gap {gap}", change]


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
