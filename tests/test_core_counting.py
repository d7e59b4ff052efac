"""The one parameter counter and sparsity statistics: shared groups once, exact and expected
counts, compacted totals; half-precision models keep full-precision sparsity and multipliers."""

import copy

import pytest
import torch
from core_helpers import SharedBandModel, n_params, set_log_alpha
from torch import nn

from flop_fairseq.core import (
    AugmentedLagrangian,
    GatedLowRankBand,
    compact_model,
    count_params,
    expected_sparsity,
    gated_modules,
    gates_bypassed,
    sparsity_stats,
)

# --------------------------------------------------------------------------- sparsity accounting


def test_shared_band_counts_once():
    torch.manual_seed(0)
    model = nn.Module()
    band = GatedLowRankBand(50, 8, 10, tie_proj=True)
    model.inp = band
    model.out = band
    mods = gated_modules(model)
    assert len(mods) == 1 and mods[0][1] is band
    assert band.dense_params() == 8 * 60
    assert n_params(model) == n_params(band) == 50 * 8 + 10 * 8 + 8
    assert sparsity_stats(model).prunable_params == 8 * 60
    assert expected_sparsity(model).item() == pytest.approx(0.01, abs=1e-5)


def test_count_params_of_a_dense_model_counts_shared_tensors_once():
    model = nn.Module()
    model.a = nn.Linear(6, 6)
    model.b = nn.Linear(6, 6)
    model.b.weight = model.a.weight
    with torch.no_grad():
        model.a.weight[:2].zero_()
    c = count_params(model, dense_prunable=[model.a.weight, model.b.weight])
    assert (c.total_params, c.stored_params, c.prunable_params, c.remaining_prunable_params) == (48, 48, 36, 36)
    assert (c.nonzero_prunable_params, c.nonzero_params, c.band_params) == (24, 36, 36)


def test_sparsity_stats_exact_counts():
    model = SharedBandModel()
    # band: 8 components of 50 + 10; keep 3
    set_log_alpha(model.band.gate, [5.0, -20.0, -20.0, 1.0, -20.0, -20.0, 5.0, -20.0])
    # lin: 10x12, rank 10, 22 per component, dense 120; keep 4 -> 88 < 120
    set_log_alpha(model.lin.gate, [5.0] * 4 + [-20.0] * 6)
    stats = sparsity_stats(model)
    band_dense, lin_dense = 8 * 60, 120
    remaining = 3 * 60 + 4 * 22
    assert stats.prunable_params == band_dense + lin_dense
    assert stats.remaining_prunable_params == remaining
    assert stats.sparsity == pytest.approx(1 - remaining / (band_dense + lin_dense), abs=1e-12)
    assert [(g.name, g.rank, g.kept, g.dense_params, g.remaining_params) for g in stats.groups] == [
        ("band", 8, 3, band_dense, 3 * 60),
        ("lin", 10, 4, lin_dense, 88),
    ]
    kp_band = model.band.gate.keep_prob().detach().sum().item()
    kp_lin = model.lin.gate.keep_prob().detach().sum().item()
    exp_remaining = kp_band * 60 + min(kp_lin * 22, 120)
    assert stats.expected_remaining_params == pytest.approx(exp_remaining, rel=1e-5)
    assert stats.expected_sparsity == pytest.approx(expected_sparsity(model).item(), abs=1e-6)
    # the one counter: the same figures, shared band once, and the compacted total exactly
    counts = count_params(model)
    assert counts.prunable_params == band_dense + lin_dense and counts.remaining_prunable_params == remaining
    assert (counts.band_params, counts.remaining_band_params) == (band_dense, 3 * 60)
    assert counts.expected_remaining_prunable_params == pytest.approx(exp_remaining, rel=1e-5)
    assert counts.stored_params == (50 * 8 + 10 * 8 + 8) + (12 * 10 + 10 * 10 + 12 + 10) + (30 + 3)
    assert counts.total_params == 3 * 60 + (88 + 12) + (30 + 3)
    assert n_params(compact_model(copy.deepcopy(model))) == counts.total_params

    # now keep 8 of lin: 8 * 22 = 176 >= 120, so the dense count
    set_log_alpha(model.lin.gate, [5.0] * 8 + [-20.0] * 2)
    stats = sparsity_stats(model)
    assert stats.remaining_prunable_params == 3 * 60 + 120
    assert stats.groups[1].kept == 8


def test_gates_bypassed_restores_and_covers_shared_modules():
    model = SharedBandModel()
    model.lin.gate.bypass = True  # a pre-existing state is restored, not reset
    with gates_bypassed(model):
        assert model.band.gate.bypass and model.lin.gate.bypass
    assert model.band.gate.bypass is False and model.lin.gate.bypass is True


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_keeps_full_precision_sparsity_and_multipliers(dtype):
    """What fairseq's --fp16/--bf16 do to the model (.half()/.bfloat16()) reaches neither the
    multipliers (float64) nor the expected sparsity (float32)."""
    torch.manual_seed(0)
    model = SharedBandModel()
    model.lagrangian = AugmentedLagrangian(0.5, 0, lr=1e-4, lambda_2_init=3.0)
    set_log_alpha(model.band.gate, torch.linspace(-3, 3, 8))
    reference = expected_sparsity(model).item()
    model.to(dtype)
    assert model.band.emb.dtype == dtype
    assert model.lagrangian.lambdas.dtype == model.lagrangian.pending.dtype == torch.float64
    s = expected_sparsity(model)
    assert s.dtype == torch.float32 and abs(s.item() - reference) < 1e-2
    penalty = model.lagrangian(s)
    assert penalty.dtype in (torch.float32, torch.float64) and torch.isfinite(penalty)
    penalty.backward()
    assert model.band.gate.log_alpha_raw.grad.dtype == dtype
    assert torch.isfinite(model.band.gate.log_alpha_raw.grad.float()).all()


def test_count_params_counts_any_models_layer_matrices():
    """Plain, low-rank and gated matrices under one count: the dense ``in x out``, the compact
    cost, and the non-zero weights as stored (a plain matrix's zeros are not kept)."""
    from flop_fairseq.core import GatedLowRankLinear, LowRankLinear

    torch.manual_seed(0)
    plain, low, gated = nn.Linear(8, 12), LowRankLinear(8, 12, 3), GatedLowRankLinear(8, 12)
    with torch.no_grad():
        plain.weight[:2].zero_()  # 2 rows of 8 zeroed: 16 weights
        set_log_alpha(gated.gate, [30.0] * 2 + [-30.0] * 6)  # 2 of the 8 components kept
    model = nn.Sequential(plain, low, gated)
    c = count_params(model, dense_prunable=[plain.weight], layer_matrices=[plain, low, gated])
    assert c.layer_matrix_params == 3 * 8 * 12
    assert c.remaining_layer_matrix_params == 8 * 12 + 3 * (8 + 12) + 2 * (8 + 12)
    assert c.nonzero_layer_matrix_params == 8 * 12 - 16 + 3 * (8 + 12) + 2 * (8 + 12)
    assert count_params(model, dense_prunable=[plain.weight]).layer_matrix_params == 0
