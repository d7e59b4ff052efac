"""Data-aware (whitened) factorization: the error identities it promises, and at full rank the
converted model's function unchanged for both FLOP archs, tied and untied bands."""

import pytest
import torch

from conftest import TINY_MODEL, TINY_VOCAB
from flop_fairseq.core import gates_bypassed
from flop_fairseq.core.data_aware import collect_statistics, refactor_model
from flop_fairseq.core.factor_scales import balance_factor_scales
from flop_fairseq.core.whitening import cholesky_factor, whitened_linear, whitened_shared_factors
from flop_fairseq.tools.checkpoint import build_model


def _skewed_inputs(n, dim, seed=0):
    """``n`` samples whose second moment has eigenvalues spread over 8 decades, rotated."""
    g = torch.Generator().manual_seed(seed)
    rot, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    scales = torch.logspace(0, -4, dim, dtype=torch.float64)
    return (torch.randn(n, dim, generator=g, dtype=torch.float64) * scales) @ rot.t()


def test_whitened_truncation_error_is_its_dropped_singular_values_and_beats_plain_svd():
    torch.manual_seed(0)
    w = torch.randn(20, 30, dtype=torch.float64)
    x = _skewed_inputs(2000, 30)
    moment = x.t() @ x / x.shape[0]
    left, right, s = whitened_linear(w, cholesky_factor(moment))
    assert (left @ right - w).abs().max() < 1e-10
    u, s0, vh = torch.linalg.svd(w, full_matrices=False)
    for k in range(21):
        err = ((x @ (w - left[:, :k] @ right[:k]).t()) ** 2).sum(1).mean()
        plain = ((x @ (w - (u[:, :k] * s0[:k]) @ vh[:k]).t()) ** 2).sum(1).mean()
        assert abs(err - s[k:].pow(2).sum()) <= 1e-5 * s.pow(2).sum()
        assert err <= plain * (1 + 1e-9) + 1e-12
    k = 10
    assert ((x @ (w - (u[:, :k] * s0[:k]) @ vh[:k]).t()) ** 2).sum(1).mean() > 3 * s[k:].pow(2).sum()


def test_band_criterion_is_its_dropped_singular_values():
    """Shared word factor, two maps with their own metrics, word weights: J at every rank is the
    sum of the dropped s_i^2, and every map's product is unchanged."""
    torch.manual_seed(1)
    a, b1, b2 = torch.randn(40, 6).double(), torch.randn(8, 6).double(), torch.randn(5, 6).double()
    g1 = torch.linalg.cholesky(_skewed_inputs(100, 8, 1).t() @ _skewed_inputs(100, 8, 1) / 100)
    g2 = torch.eye(5, dtype=torch.float64) * 0.3
    f = torch.rand(40, dtype=torch.float64) + 1e-3
    a2, (c1, c2), s = whitened_shared_factors(a, [b1, b2], [g1, g2], f)
    assert (a2 @ c1.t() - a @ b1.t()).abs().max() < 1e-9 and (a2 @ c2.t() - a @ b2.t()).abs().max() < 1e-9
    for k in range(7):
        j = sum(((f.sqrt()[:, None] * (a @ b.t() - a2[:, :k] @ c[:, :k].t())) @ g).pow(2).sum()
                for b, c, g in ((b1, c1, g1), (b2, c2, g2)))
        assert abs(j - s[k:].pow(2).sum()) <= 1e-9 * s.pow(2).sum()


TXL_TINY = {"_name": "flop_transformer_xl", "n_layer": 2, "d_model": 16, "n_head": 2, "d_head": 8, "d_inner": 32,
            "cutoffs": "50,150", "mem_len": 8, "dropout": 0.0, "max_target_positions": 64}
MODELS = {
    "lm-tied": dict(TINY_MODEL, flop_decoder_layers=True),
    "lm-untied": dict(TINY_MODEL, tie_adaptive_weights=False, tie_adaptive_proj=False, flop_decoder_layers=True),
    "lm-tied-own-proj": dict(TINY_MODEL, tie_adaptive_proj=False),
    "txl-tied-div2": dict(TXL_TINY, d_embed=16, div_val=2, tie_projs="0,0,1"),
    "txl-untied": dict(TXL_TINY, untie_weight=True),
}


def _log_probs(model, batches):
    model.train()
    model.eval()  # and the Transformer-XL's memory starts empty
    with torch.no_grad(), gates_bypassed(model):
        return torch.cat([model.get_normalized_probs(model(t), log_probs=True) for t, _ in batches]).double()


def _batches(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    # Zipf-like: the head words frequent, most rare words never seen
    words = torch.multinomial(1.0 / torch.arange(1, TINY_VOCAB - 3, dtype=torch.float64), n * 2 * 17, True,
                              generator=g) + 4
    stream = words.view(n, 2, 17)
    return [(s[:, :-1], s[:, 1:]) for s in stream]


@pytest.mark.parametrize("case", sorted(MODELS))
def test_full_rank_data_aware_conversion_keeps_the_function(case):
    torch.manual_seed(0)
    model = build_model(MODELS[case], TINY_VOCAB)
    batches = _batches()
    before = _log_probs(model, batches)
    stats = collect_statistics(model, batches, lambda t: model.decoder(t, features_only=True)[0], TINY_VOCAB)
    reports = refactor_model(model, stats)
    assert len(reports) == len(model.flop_bands()) + len(model.flop_layer_matrices())
    for r in reports:
        assert abs(float(r.losses.sum()) - 1.0) < 1e-5 and bool((r.losses[:-1] >= r.losses[1:] - 1e-7).all())
        assert r.whitened_half <= r.plain_half + 1e-6, r
    assert (_log_probs(model, batches) - before).abs().max() < 1e-5
    scales = balance_factor_scales(model)
    assert (_log_probs(model, batches) - before).abs().max() < 1e-5
    for slot in model.flop_bands():
        band = slot.module
        projs = torch.cat([p.flatten() for p in (band.in_proj, band.out_proj) if p is not None])
        assert abs(band.emb.pow(2).mean().sqrt() / projs.pow(2).mean().sqrt() - 1) < 1e-5
    for _, m in model.flop_layer_matrices():
        assert abs(m.left.pow(2).mean().sqrt() / m.right.pow(2).mean().sqrt() - 1) < 1e-5
    assert len(scales) == len(reports)


def test_flop_convert_calibration_then_truncate_by_losses(dense_checkpoint, data_bin, tmp_path):
    """Through the real CLIs: the data-aware conversion keeps the function, reports each group's
    error at half rank (the whitened one never above the plain one: it is the optimum of the same
    criterion), stores the losses; flop-truncate keeps the budget and a prefix of each group."""
    import json
    import re

    from cli_driver import Batch
    from flop_fairseq.tools.calibration import LOSSES_KEY

    conv, trunc = tmp_path / "conv.pt", tmp_path / "trunc.pt"
    batch = Batch()
    k_conv = batch.add("flop-convert", dense_checkpoint, conv, "--flop-decoder-layers", "--calibration", data_bin,
                       "--calibration-tokens", "3000", "--balance-factors", "--gate-init-slope", "0.5")
    k_trunc = batch.add("flop-truncate", conv, trunc, "--sparsity", "0.5")
    k_compact = batch.add("flop-compact", trunc, tmp_path / "compact.pt")
    batch.run(tmp_path)
    out = batch[k_conv].stdout
    assert float(re.search(r"gates bypassed\)\| = (\S+)", out).group(1)) < 1e-4, out
    assert "from 3,000 calibration tokens" in out and "factors rescaled to equal rms in 15 groups" in out, out
    pairs = re.findall(r"plain (\d\.\d+), whitened (\d\.\d+)", out)
    assert len(pairs) == 3 + 6, out  # three bands, six kinds of layer matrix
    assert all(float(w) <= float(p) + 1e-4 for p, w in pairs), out
    state = torch.load(conv, weights_only=True)
    assert len(state[LOSSES_KEY]) == 15
    res = json.loads(batch[k_trunc].stdout)
    assert 0.5 <= res["sparsity"] < 0.51 and set(res["ranks"]) == set(state[LOSSES_KEY])
    assert res["ranks"] != {k: round(v / 2) for k, v in res["full_ranks"].items()}  # not a uniform cut
    assert "prunable" in batch[k_compact].stdout


def test_gates_from_losses_keep_the_expected_size_and_order_the_keep_probabilities():
    from flop_fairseq.core import GatedLowRankLinear
    from flop_fairseq.core.data_aware import init_gates_from_losses

    m = GatedLowRankLinear(16, 24)
    default = float(m.gate.l0_norm())
    losses = torch.logspace(0, -8, 16)
    init_gates_from_losses([(m, losses / losses.sum())], slope=0.5)
    p = m.gate.keep_prob()
    assert abs(float(p.sum()) - default) < 1e-4
    assert bool((p[:-1] > p[1:]).all()) and float(p[-1]) < 0.95 < float(p[0])
    assert m.gate.num_zeros() == 0  # the eval mask still keeps every component
