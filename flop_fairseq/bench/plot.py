"""The benchmark's figure: validation and test perplexity against band parameters, per method."""

import os

from .report import METHOD_LABEL

STYLES = {"flop": ("#c0392b", "o", "-"), "svd": ("#7f8c8d", "v", ":"), "svd+ft": ("#2980b9", "s", "--"),
          "agp": ("#27ae60", "^", "-."), "small": ("#8e44ad", "D", "--")}


def plot(results: dict, path: str) -> None:
    """Writes the PNG: every model at its actual band-parameter count (AGP: non-zero ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    dense = next(x for x in rows if x["method"] == "dense")
    denseft = next((x for x in rows if x["method"] == "dense+ft"), None)
    for ax, split in zip(axes, ("valid", "test")):
        for method, (color, marker, ls) in STYLES.items():
            pts = sorted((x for x in rows if x["method"] == method), key=lambda x: x["band_params"])
            if pts:
                ax.plot([x["band_params"] / 1e3 for x in pts], [x[f"{split}_ppl"] for x in pts], color=color,
                        marker=marker, ls=ls, label=METHOD_LABEL[method])
        ax.scatter([dense["band_params"] / 1e3], [dense[f"{split}_ppl"]], marker="*", s=180, color="black",
                   zorder=5, label="dense (unpruned)")
        if denseft is not None:
            ax.scatter([denseft["band_params"] / 1e3], [denseft[f"{split}_ppl"]], marker="P", s=110, color="#555555",
                       zorder=5, label="dense + F updates")
        ax.set_xlabel("band (embedding) parameters, thousands (AGP: non-zero)")
        ax.set_ylabel(f"{split} perplexity")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.set_title(f"WikiText-2 {split}")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


USERS_STYLES = {"flop": ("#c0392b", "o", "-"), "flop+kd": ("#e67e22", "o", ":"), "svd+ft": ("#2980b9", "s", "--"),
                "svd+ft+kd": ("#5dade2", "s", ":"), "agp": ("#27ae60", "^", "-."), "agp+kd": ("#82e0aa", "^", ":"),
                "small": ("#8e44ad", "D", "--")}


def plot_users(results: dict, path: str) -> None:
    """The users'-regime figure: test perplexity against the kept parameters of each budget's
    scope (band parameters; all prunable parameters), every model at its actual count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report_users import LABEL, headline

    rows, head = results["rows"], headline(results)  # FLOP's series: its row chosen on validation per budget
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, scope, field, xlabel in ((axes[0], "bands", "band_params", "band parameters kept, thousands"),
                                     (axes[1], "all", "all_params", "all prunable parameters kept, thousands")):
        for method, (color, marker, ls) in USERS_STYLES.items():
            pts = sorted((x for (m, _), x in head.items() if m == method and x["scope"] == scope),
                         key=lambda x: x[field])
            if pts:
                ax.plot([x[field] / 1e3 for x in pts], [x["test_ppl"] for x in pts], color=color, marker=marker,
                        ls=ls, label=LABEL[method])
        for method, marker in (("dense", "*"), ("dense+ft", "P")):
            x = next(r for r in rows if r["method"] == method)
            ax.scatter([x[field] / 1e3], [x["test_ppl"]], marker=marker, s=140, color="black", zorder=5,
                       label=LABEL[method])
        ax.set_xlabel(xlabel + " (AGP: non-zero)")
        ax.set_ylabel("test perplexity")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.set_title(f"WikiText-2, budgets of the {'band' if scope == 'bands' else 'all prunable'} parameters")
    legend = {}  # every series once: the distilled ones appear in the bands panel only
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, h)
    axes[1].legend(list(legend.values()), list(legend), fontsize=6, loc="upper right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
