"""The benchmark's figure: test perplexity against the kept parameters, per method (the
styles of :data:`.settings.METHODS`)."""

import os

from .settings import LABEL, METHODS


def plot(results: dict, path: str) -> None:
    """Test perplexity against the kept parameters of each budget's
    scope (band parameters; all prunable parameters), every model at its actual count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import headline

    rows, head = results["rows"], headline(results)  # FLOP's series: its row chosen on validation per budget
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, scope, field, xlabel in ((axes[0], "bands", "band_params", "band parameters kept, thousands"),
                                     (axes[1], "all", "all_params", "all prunable parameters kept, thousands")):
        for method, (color, marker, ls) in ((n, m.style) for n, m in METHODS.items() if m.style):
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
