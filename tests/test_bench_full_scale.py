"""The full-scale speed benchmark's pieces that need no full-size model: closing gates to a
sparsity, the report's medians and ratios, and the BENCHMARKS.md section splice."""

import pytest

from benchmarks.full_scale import report as rep
from benchmarks.full_scale.bench import EVAL_MODELS, GENERATE_MODELS, TRAIN_MODELS, models
from benchmarks.full_scale.measure import keep_fraction


@pytest.mark.parametrize("scope,sparsity", [("bands", 0.5), ("whole", 0.5), ("whole", 0.8)])
def test_keep_fraction_reaches_the_sparsity(tiny_gated, tmp_path, scope, sparsity):
    from flop_fairseq.core import count_params
    from flop_fairseq.tools.checkpoint import load_flop_model

    out = tmp_path / "closed.pt"
    res = keep_fraction(tiny_gated["layers"], str(out), scope, sparsity)
    _, model = load_flop_model(str(out))
    counts = count_params(model)
    assert res["remaining_prunable_params"] == counts.remaining_prunable_params
    if scope == "whole":
        # every group rounds its kept rank down (one component at most), never below rank 1
        assert sparsity <= counts.sparsity < sparsity + 0.12
    else:
        assert counts.remaining_band_params <= (1 - sparsity) * counts.band_params
        assert counts.remaining_prunable_params - counts.remaining_band_params == \
            counts.prunable_params - counts.band_params


def test_every_measured_model_is_made():
    names = set(models("wiki103"))
    assert set(EVAL_MODELS) <= names and set(GENERATE_MODELS) <= names and set(TRAIN_MODELS) <= names
    assert models("txl_base")["dense"][0] == "flop_transformer_xl_wt103_base"


def _rows():
    rows = [{"measure": "machine", "cpu": "x86_64", "cores": 2, "torch": "2.13.0"}]
    for r, (dense, compact) in enumerate(((100.0, 150.0), (110.0, 140.0), (90.0, 160.0))):
        rows += [{"shape": "wiki103", "model": "dense", "measure": "eval_lm", "repeat": r, "tokens_per_s": dense,
                  "tokens": 2048, "peak_rss_mib": 2000, "threads": 2, "load": 1.0},
                 {"shape": "wiki103", "model": "compact_whole_50", "measure": "eval_lm", "repeat": r,
                  "tokens_per_s": compact, "tokens": 2048, "peak_rss_mib": 1000, "threads": 2, "load": 3.0}]
    rows += [{"shape": "wiki103", "model": "dense", "measure": "train", "wps_per_update": [5.0, 20.0, 22.0],
              "peak_rss_mib": 9000, "threads": 2, "load": 1.0},
             {"shape": "wiki103", "model": "gated_whole_50", "measure": "train", "wps_per_update": [1.0, 30.0, 34.0],
              "peak_rss_mib": 9500, "threads": 2, "load": 1.0},
             {"shape": "wiki103", "model": "gated_whole_50", "measure": "make", "what": "gates closed to 0.5",
              "wall_s": 30.0, "peak_rss_mib": 6000, "total_params": 123_000_000},
             {"shape": "wiki103", "model": "compact_whole_50", "measure": "size", "file_bytes": 3 * 2**20}]
    return rows


def test_report_medians_and_ratios():
    text = rep.render(_rows())
    dense = next(ln for ln in text.splitlines() if ln.startswith("| dense |"))
    compact = next(ln for ln in text.splitlines() if ln.startswith("| compact whole model, 50% pruned |"))
    assert "| 100.0 | 1.00x |" in dense and "| 21.0 | 1.00x |" in dense  # training: first update dropped
    assert "| 123,000,000 | 3 | 150.0 | 1.50x |" in compact  # params from its gated source
    assert "50% pruned 1.52x" in text  # (30 + 34) / 2 over (20 + 22) / 2
    assert "median 1.0, range 1.0-3.0" in text and "GPU figures are missing" in text


def test_section_splice_keeps_the_rest_of_the_file(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# WikiText-2\n\nresults\n")
    rep.write_section(_rows(), str(out))
    first = out.read_text()
    assert first.startswith("# WikiText-2\n\nresults\n") and first.count(rep.START) == 1
    rep.write_section(_rows()[:1], str(out))  # regenerated: replaced, not appended
    assert out.read_text().count(rep.START) == 1 and "| dense |" not in out.read_text()
    rep.write_section(_rows(), str(out))
    # the WikiText-2 report rewrites the whole file; the full-scale section survives it
    kept = rep.keep_section(str(out), "# WikiText-2\n\nnew results\n")
    assert kept.startswith("# WikiText-2\n\nnew results\n") and "| compact whole model, 50% pruned |" in kept
