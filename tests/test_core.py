"""Tests of the plain-PyTorch FLOP core (gates, factorized layers, accounting, Lagrangian)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flop_fairseq.core import (
    AugmentedLagrangian,
    BandSlot,
    GatedLowRankBand,
    GatedLowRankLinear,
    HardConcrete,
    LowRankBand,
    PrunableModel,
    compact_model,
    count_params,
    expected_sparsity,
    gated_modules,
    gates_bypassed,
    sparsity_stats,
)

BETA = 2.0 / 3.0
# log_alpha at and above which the eval-mode value of a kept gate is exactly 1
SATURATION = BETA * math.log(11.0)


def set_log_alpha(gate: HardConcrete, values) -> None:
    values = torch.as_tensor(values, dtype=torch.float32)
    with torch.no_grad():
        gate.log_alpha_raw.copy_((values - gate.log_alpha_offset) / gate.lr_scale)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- HardConcrete


def test_hard_concrete_gradient_reaches_log_alpha_raw():
    torch.manual_seed(0)
    gate = HardConcrete(64, init_keep_prob=0.5, lr_scale=3.0)
    gate.train()
    weights = torch.randn(64)
    (gate() * weights).sum().backward()
    grad = gate.log_alpha_raw.grad
    assert torch.isfinite(grad).all()
    # gates strictly inside (0, 1) get a gradient; at keep prob 0.5 many are
    assert (grad != 0).sum() > 10

    gate.log_alpha_raw.grad = None
    gate.l0_norm().backward()
    grad = gate.log_alpha_raw.grad
    # d/d raw sigmoid(lr_scale * raw - c) = lr_scale * p (1 - p), with p = 0.5 here
    torch.testing.assert_close(grad, torch.full((64,), 3.0 * 0.25), rtol=1e-5, atol=1e-6)


def test_hard_concrete_l0_norm_matches_monte_carlo():
    torch.manual_seed(0)
    values = torch.tensor([-4.0, -2.5, -1.5, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0])
    gate = HardConcrete(len(values))
    set_log_alpha(gate, values)
    expected = gate.l0_norm().item()

    # 200000 independent samples of all the gates at once: a gate per (sample, value)
    reps = 200_000
    big = HardConcrete(reps * len(values))
    set_log_alpha(big, values.repeat(reps))
    big.train()
    with torch.no_grad():
        z = big().view(reps, len(values))
    per_gate = (z > 0).double().mean(0)
    mc = per_gate.sum().item()
    assert mc == pytest.approx(expected, rel=2e-3)
    # per gate as well: P(z > 0) = keep_prob
    torch.testing.assert_close(per_gate.float(), gate.keep_prob().detach(), atol=5e-3, rtol=0)
    # and the samples do hit exactly 0 and exactly 1
    assert (z == 0).any() and (z == 1).any()
    assert z.min() >= 0 and z.max() <= 1


def test_hard_concrete_monte_carlo_with_repeated_calls():
    torch.manual_seed(1)
    gate = HardConcrete(6, lr_scale=2.0)
    set_log_alpha(gate, [-2.0, -0.7, 0.0, 0.4, 1.3, 2.5])
    gate.train()
    with torch.no_grad():
        z = torch.stack([gate() for _ in range(20_000)])
    mc = (z > 0).double().mean(0).sum().item()
    # sd of mc is about sqrt(sum p(1-p) / 20000) ~ 0.006, i.e. ~1.3e-3 relative
    assert mc == pytest.approx(gate.l0_norm().item(), rel=6e-3)


def test_hard_concrete_eval_is_deterministic_with_exact_zeros():
    torch.manual_seed(0)
    n = 25
    gate = HardConcrete(n)
    values = torch.randn(n) * 2.0 - 0.5
    set_log_alpha(gate, values)
    gate.eval()
    z1, z2 = gate(), gate()
    assert torch.equal(z1, z2)

    k = round(n - gate.l0_norm().item())
    assert k > 0  # the test means something
    assert gate.num_zeros() == k
    assert int((z1 == 0).sum()) == k
    zero_idx = set(torch.nonzero(z1 == 0).flatten().tolist())
    smallest = set(torch.argsort(values)[:k].tolist())
    assert zero_idx == smallest
    # kept gates are positive, at most 1, and 1 exactly once saturated
    kept = z1 != 0
    assert (z1[kept] > 0).all() and (z1[kept] <= 1).all()
    sat = gate.log_alpha.detach() >= SATURATION + 1e-4
    assert (z1[sat & kept] == 1).all()
    assert (z1[~sat] < 1).all()


@pytest.mark.parametrize("lr_scale", [1.0, 10.0])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99])
def test_hard_concrete_init_keep_prob(p, lr_scale):
    gate = HardConcrete(7, init_keep_prob=p, lr_scale=lr_scale)
    torch.testing.assert_close(gate.keep_prob().detach(), torch.full((7,), p), atol=1e-6, rtol=0)
    assert gate.l0_norm().item() == pytest.approx(7 * p, abs=1e-5)


@pytest.mark.parametrize("n", [1, 10, 40])
def test_hard_concrete_init_099_eval_mask_is_exactly_one(n):
    gate = HardConcrete(n, init_keep_prob=0.99)
    gate.eval()
    assert torch.equal(gate(), torch.ones(n))


def test_hard_concrete_set_lr_scale_keeps_log_alpha():
    torch.manual_seed(0)
    gate = HardConcrete(9, lr_scale=2.0)
    set_log_alpha(gate, torch.randn(9) * 3)
    before = gate.log_alpha.detach().clone()
    raw_before = gate.log_alpha_raw.detach().clone()
    gate.eval()
    z_before = gate()
    gate.set_lr_scale(25.0)
    assert float(gate.lr_scale) == 25.0
    torch.testing.assert_close(gate.log_alpha.detach(), before, rtol=1e-6, atol=1e-6)
    # the parameter itself is untouched (optimizer copies stay valid); the offset absorbs the change
    torch.testing.assert_close(gate.log_alpha_raw.detach(), raw_before, rtol=0, atol=0)
    torch.testing.assert_close(gate(), z_before)
    # the gradient wrt raw scales with lr_scale
    gate.l0_norm().backward()
    p = gate.keep_prob().detach()
    torch.testing.assert_close(gate.log_alpha_raw.grad, 25.0 * p * (1 - p))


def test_hard_concrete_bypass_gives_ones():
    gate = HardConcrete(12, init_keep_prob=0.2)
    set_log_alpha(gate, torch.linspace(-10, 1, 12))
    gate.bypass = True
    for mode in (True, False):
        gate.train(mode)
        assert torch.equal(gate(), torch.ones(12))
    gate.bypass = False
    gate.eval()
    assert (gate() == 0).any()


# --------------------------------------------------------------------------- GatedLowRankLinear


@pytest.mark.parametrize("shape", [(12, 5), (5, 12)], ids=["wide", "tall"])
@pytest.mark.parametrize("bias", [True, False])
def test_from_dense_reconstructs(shape, bias):
    torch.manual_seed(0)
    in_f, out_f = shape
    dense = nn.Linear(in_f, out_f, bias=bias)
    fl = GatedLowRankLinear.from_dense(dense, init_keep_prob=0.99)
    assert fl.rank == min(in_f, out_f)
    x = torch.randn(7, 3, in_f)
    ref = dense(x)
    fl.train()
    with gates_bypassed(fl):
        torch.testing.assert_close(fl(x), ref, atol=1e-5, rtol=0)
    assert fl.gate.bypass is False  # restored
    fl.eval()
    torch.testing.assert_close(fl(x), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(fl.left @ fl.right, dense.weight, atol=1e-5, rtol=0)


def test_from_dense_orders_components_by_singular_value():
    torch.manual_seed(0)
    dense = nn.Linear(9, 14)
    fl = GatedLowRankLinear.from_dense(dense)
    s = torch.linalg.svdvals(dense.weight.detach())
    left_norms = fl.left.detach().norm(dim=0)
    right_norms = fl.right.detach().norm(dim=1)
    torch.testing.assert_close(left_norms * right_norms, s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(left_norms, s.sqrt(), rtol=1e-5, atol=1e-6)
    assert (left_norms[:-1] > left_norms[1:]).all()
    assert (right_norms[:-1] > right_norms[1:]).all()


def test_from_dense_truncated_rank_is_best_approximation():
    torch.manual_seed(0)
    dense = nn.Linear(10, 8, bias=False)
    fl = GatedLowRankLinear.from_dense(dense, rank=3)
    assert fl.left.shape == (8, 3) and fl.right.shape == (3, 10)
    s = torch.linalg.svdvals(dense.weight.detach())
    err = torch.linalg.matrix_norm(dense.weight.detach() - fl.left @ fl.right)
    assert err.item() == pytest.approx(s[3:].norm().item(), rel=1e-4)


def _pruned_linear(in_f, out_f, kept_values, bias=True, seed=0):
    """A GatedLowRankLinear from a random dense layer; components get ``kept_values``
    (log_alpha) then the rest are pruned (log_alpha = -20), in a shuffled order."""
    torch.manual_seed(seed)
    fl = GatedLowRankLinear.from_dense(nn.Linear(in_f, out_f, bias=bias))
    r = fl.rank
    values = torch.full((r,), -20.0)
    perm = torch.randperm(r)
    values[perm[: len(kept_values)]] = torch.tensor(kept_values, dtype=torch.float32)
    set_log_alpha(fl.gate, values)
    fl.eval()
    return fl


@pytest.mark.parametrize(
    "in_f,out_f,kept_values,expect_dense",
    [
        (16, 16, [1.0, 1.5, 2.5, 4.0], False),  # (16+16)*4 = 128 < 256: low rank
        (16, 16, [1.0] + [4.0] * 11, True),  # (16+16)*12 = 384 >= 256: dense
        (20, 6, [0.3, 3.0], False),  # 26*2 = 52 < 120
        (20, 6, [0.3, 3.0, 3.0, 3.0, 3.0], True),  # 26*5 = 130 >= 120
        (16, 16, [1.0] + [2.0] * 7, True),  # (16+16)*8 = 256 == 256: dense (tie)
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_compact_linear(in_f, out_f, kept_values, expect_dense, bias):
    fl = _pruned_linear(in_f, out_f, kept_values, bias=bias)
    k = len(kept_values)
    assert fl.kept_rank() == k
    assert fl.gate.num_zeros() == fl.rank - k
    z = fl.gate.deterministic()
    assert int((z != 0).sum()) == k
    # some kept gates are strictly between 0 and 1, so the mask must be folded in
    assert ((z > 0) & (z < 1)).any()

    x = torch.randn(11, in_f)
    with torch.no_grad():
        ref = fl(x)
    compact = fl.compact()
    if expect_dense:
        assert isinstance(compact, nn.Linear)
        assert compact.weight.shape == (out_f, in_f)
    else:
        assert isinstance(compact, nn.Sequential)
        assert compact[0].weight.shape == (k, in_f)
        assert compact[1].weight.shape == (out_f, k)
        assert compact[0].bias is None
    with torch.no_grad():
        torch.testing.assert_close(compact(x), ref, atol=1e-5, rtol=0)

    bias_n = out_f if bias else 0
    exact = min((in_f + out_f) * k, in_f * out_f) + bias_n
    assert (fl.remaining_prunable_params() + fl.unpruned_params()) == exact
    assert n_params(compact) == exact
    assert n_params(compact) < n_params(fl)
    assert fl.remaining_prunable_params() == exact - bias_n


def test_expected_params_is_differentiable():
    torch.manual_seed(0)
    fl = GatedLowRankLinear(12, 10, init_keep_prob=0.3)
    e = (fl.expected_prunable_params() + fl.unpruned_params())
    # (12 + 10) * 10 * 0.3 = 66 < 120: factorized branch, plus the bias
    assert e.item() == pytest.approx(66 + 10, abs=1e-4)
    e.backward()
    p = fl.gate.keep_prob().detach()
    torch.testing.assert_close(fl.gate.log_alpha_raw.grad, 22 * p * (1 - p))


def test_expected_params_straight_through_at_full_rank():
    fl = GatedLowRankLinear(8, 8, init_keep_prob=0.99, bias=False)
    e = fl.expected_prunable_params()
    # factorized would be 0.99 * 8 * 16 = 126.7 > 64: the value is the dense count
    assert e.item() == pytest.approx(64.0, abs=1e-4)
    assert (fl.expected_prunable_params() + fl.unpruned_params()).item() == pytest.approx(64.0, abs=1e-4)
    assert (fl.remaining_prunable_params() + fl.unpruned_params()) == 64
    e.backward()
    grad = fl.gate.log_alpha_raw.grad
    assert (grad != 0).all()
    # the factorized gradient: (in + out) * p (1 - p)
    torch.testing.assert_close(grad, torch.full((8,), 16 * 0.99 * 0.01), rtol=1e-4, atol=0)


def test_factorized_linear_init_variance_matches_nn_linear():
    torch.manual_seed(0)
    fl = GatedLowRankLinear(256, 256)
    w = fl.left @ fl.right
    # nn.Linear's default init has variance 1 / (3 * in)
    assert w.var().item() == pytest.approx(1 / (3 * 256), rel=0.05)


# --------------------------------------------------------------------------- GatedLowRankBand


def test_band_param_counts():
    tied = GatedLowRankBand(30, 6, 8, has_input=True, has_output=True, tie_proj=True)
    assert tied.params_per_component() == 30 + 8
    assert tied.dense_params() == 6 * 38
    assert tied.out_proj is None and tied.output_proj is tied.in_proj
    assert n_params(tied) - tied.rank == tied.dense_params()  # minus the gates

    untied = GatedLowRankBand(30, 6, 8, tie_proj=False)
    assert untied.params_per_component() == 30 + 16
    assert untied.dense_params() == 6 * 46
    assert n_params(untied) - untied.rank == untied.dense_params()

    out_only = GatedLowRankBand(30, 6, 8, has_input=False, has_output=True)
    assert out_only.params_per_component() == 38
    in_only = GatedLowRankBand(30, 6, 8, has_input=True, has_output=False)
    assert in_only.params_per_component() == 38

    given = GatedLowRankBand(30, 6, 8, dense_count=1000)
    assert given.dense_params() == 1000

    with pytest.raises(ValueError):
        GatedLowRankBand(30, 6, 8, has_input=False, has_output=False)


@pytest.mark.parametrize("tie_proj", [True, False])
def test_band_compact_matches_gated_eval(tie_proj):
    torch.manual_seed(0)
    band = GatedLowRankBand(40, 10, 12, tie_proj=tie_proj, padding_idx=1)
    # non-trivial projections, both kinds of kept values, and 4 pruned components
    set_log_alpha(band.gate, [3.0, -20.0, 0.5, 4.0, -20.0, 1.2, 3.0, -20.0, -20.0, 5.0])
    band.eval()
    assert band.kept_rank() == 6
    z = band.gate()
    assert ((z > 0) & (z < 1)).any()
    words = torch.randint(0, 40, (3, 7))
    words[0, 0] = 1
    h = torch.randn(5, 12)
    with torch.no_grad():
        emb_ref, log_ref = band.embed(words), band.logits(h)
    compact = band.compact()
    assert isinstance(compact, LowRankBand) and not isinstance(compact, GatedLowRankBand)
    assert compact.emb.shape == (40, 6)
    assert compact.dense_params() == band.dense_params()
    assert n_params(compact) == band.remaining_prunable_params() == 6 * band.params_per_component()
    with torch.no_grad():
        emb_c, log_c = compact.embed(words), compact.logits(h)
    assert emb_c.shape == (3, 7, 12) and log_c.shape == (5, 40)
    torch.testing.assert_close(emb_c, emb_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(log_c, log_ref, atol=1e-5, rtol=0)
    assert torch.equal(emb_c[0, 0], torch.zeros(12))  # padding


def test_band_pruned_to_rank_zero():
    torch.manual_seed(0)
    band = GatedLowRankBand(20, 5, 6, tie_proj=False)
    set_log_alpha(band.gate, torch.full((5,), -20.0))
    band.eval()
    assert band.kept_rank() == 0
    assert band.remaining_prunable_params() == 0
    words = torch.randint(0, 20, (2, 3))
    h = torch.randn(4, 6)
    with torch.no_grad():
        assert torch.equal(band.embed(words), torch.zeros(2, 3, 6))
        assert torch.equal(band.logits(h), torch.zeros(4, 20))
    compact = band.compact()
    assert compact.emb.shape == (20, 0)
    assert n_params(compact) == 0
    with torch.no_grad():
        e, lg = compact.embed(words), compact.logits(h)
    assert e.shape == (2, 3, 6) and torch.equal(e, torch.zeros(2, 3, 6))
    assert lg.shape == (4, 20) and torch.equal(lg, torch.zeros(4, 20))


# --------------------------------------------------------------------------- sparsity accounting


class SharedBandModel(nn.Module, PrunableModel):
    def __init__(self):
        super().__init__()
        self.band = GatedLowRankBand(50, 8, 10, tie_proj=True)
        self.inp = self.band
        self.out = self.band
        self.lin = GatedLowRankLinear(10, 12, bias=True)
        self.plain = nn.Linear(10, 3)

    def flop_bands(self):
        return [BandSlot(0, "tied", (0, 50), "b0", self.band)]

    def flop_layer_matrices(self):
        return [("lin", self.lin)]


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


# --------------------------------------------------------------------------- Lagrangian


def test_lagrangian_target_warmup_is_linear():
    c = AugmentedLagrangian(target_sparsity=0.6, warmup_updates=200)
    for n in [0, 1, 50, 100, 150, 199, 200, 201, 1000]:
        assert c.target(n) == pytest.approx(0.6 * min(1.0, n / 200), abs=1e-12)
    c.set_num_updates(50)
    assert c.target() == pytest.approx(0.15)
    assert AugmentedLagrangian(0.3, 0).target(0) == 0.3
    with pytest.raises(ValueError):
        AugmentedLagrangian(1.0)
    with pytest.raises(ValueError):
        AugmentedLagrangian(0.5, -1)


def test_lagrangian_penalty_gradient_and_ascent():
    c = AugmentedLagrangian(target_sparsity=0.5, lr=0.1)
    c.lambdas.copy_(torch.tensor([-3.0, 4.0]))
    s = torch.tensor(0.3, requires_grad=True)
    pen = c(s)
    assert pen.item() == pytest.approx(-3 * -0.2 + 4 * 0.04, abs=1e-6)
    pen.backward()
    # the model descends: d pen / d s = lambda_1 + 2 lambda_2 (s - t); nothing else gets a gradient
    assert s.grad.item() == pytest.approx(-3 + 2 * 4 * -0.2, abs=1e-6)
    assert list(c.parameters()) == []
    # a second pass of the same update, then the update's ascent step with the mean violation
    c(torch.tensor(0.4))
    c.set_num_updates(0)  # same update: no step yet
    assert c.lambdas.tolist() == [-3.0, 4.0]
    c.set_num_updates(1)
    mean_d, mean_d2 = (-0.2 - 0.1) / 2, (0.04 + 0.01) / 2
    assert c.lambda_1.item() == pytest.approx(-3.0 + 0.1 * mean_d, abs=1e-6)
    assert c.lambda_2.item() == pytest.approx(4.0 + 0.1 * mean_d2, abs=1e-6)
    c.set_num_updates(2)  # nothing pending: no change
    assert c.lambda_1.item() == pytest.approx(-3.0 + 0.1 * mean_d, abs=1e-6)
    c.eval()
    c(torch.tensor(0.9))  # evaluation passes are not recorded
    c.set_num_updates(3)
    assert c.lambda_2.item() == pytest.approx(4.0 + 0.1 * mean_d2, abs=1e-6)


def test_lagrangian_state_dict_round_trip():
    c = AugmentedLagrangian(target_sparsity=0.7, warmup_updates=100, lr=0.5)
    c.lambdas.copy_(torch.tensor([-1.25, 2.5]))
    c.set_num_updates(37)
    c(torch.tensor(0.2))  # a pending violation travels with the state
    sd = c.state_dict()
    assert set(sd) == {"lambdas", "pending", "num_updates", "lr"}
    d = AugmentedLagrangian(target_sparsity=0.7, warmup_updates=100, lr=0.5)
    d.load_state_dict(sd)
    assert int(d.num_updates) == 37
    assert d.lambda_1.item() == pytest.approx(-1.25) and d.lambda_2.item() == pytest.approx(2.5)
    assert d.target() == pytest.approx(0.7 * 0.37)
    s = torch.tensor(0.1)
    assert d(s).item() == pytest.approx(c(s).item(), abs=1e-7)
    c.set_num_updates(38)
    d.set_num_updates(38)
    assert torch.equal(c.lambdas, d.lambdas) and c.lambda_1.item() != -1.25


@pytest.fixture
def one_thread():
    """Small matrices: one thread is as fast and less sensitive to a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _low_rank_teacher(d: int, layers: int, rank: int) -> nn.Module:
    mods = []
    for _ in range(layers):
        up = nn.Linear(rank, d)
        with torch.no_grad():
            up.weight.mul_(3.0)
        mods += [nn.Sequential(nn.Linear(d, rank, bias=False), up), nn.Tanh()]
    return nn.Sequential(*mods[:-1])


LAMBDA_LR = 1.0


@pytest.mark.parametrize("target", [0.5, 0.8])
def test_lagrangian_reaches_target_sparsity(target, one_thread):
    torch.manual_seed(0)
    d, steps, warmup, batch = 128, 800, 300, 256
    teacher = _low_rank_teacher(d, layers=2, rank=8)
    x = torch.randn(2048, d)
    with torch.no_grad():
        y = teacher(x)

    # full-rank factorized layers: the count stays the dense one (sparsity 0) until
    # E[L0] < d / 2, so only the straight-through gradient moves the gates at first
    model = nn.Sequential(
        GatedLowRankLinear(d, d, gate_lr_scale=4.0), nn.Tanh(), GatedLowRankLinear(d, d, gate_lr_scale=4.0)
    )
    controller = AugmentedLagrangian(target, warmup_updates=warmup, lr=LAMBDA_LR)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)  # one optimizer, for the model

    def full_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = ((model(x) - y) ** 2).mean().item()
        model.train()
        return loss

    start_loss = full_loss()
    assert sparsity_stats(model).sparsity == 0.0
    model.train()
    for step in range(steps):
        controller.set_num_updates(step)
        idx = torch.randint(0, len(x), (batch,))
        task_loss = ((model(x[idx]) - y[idx]) ** 2).mean()
        loss = task_loss + controller(expected_sparsity(model))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert controller.target() == target

    stats = sparsity_stats(model)
    assert abs(stats.sparsity - target) <= 0.01, stats
    assert abs(stats.expected_sparsity - target) <= 0.01
    # lambda_2 only grows; lambda_1 was driven negative while the model was too dense
    assert controller.lambda_2.item() > 0
    end_loss = full_loss()
    assert end_loss < 0.25 * start_loss, (start_loss, end_loss)

    # the pruned model compacts to the same function with the exact parameter count
    model.eval()
    compact = nn.Sequential(model[0].compact(), nn.Tanh(), model[2].compact())
    with torch.no_grad():
        torch.testing.assert_close(compact(x[:64]), model(x[:64]), atol=1e-4, rtol=1e-4)
    assert n_params(compact) == sum(m.remaining_prunable_params() + m.unpruned_params() for m in (model[0], model[2]))
    assert n_params(compact) - 2 * d == stats.remaining_prunable_params


def test_core_imports_no_fairseq():
    import subprocess
    import sys

    # every module under flop_fairseq/core, found by walking the folder
    code = ("import importlib, pkgutil, sys, flop_fairseq.core as c\n"
            "names = [m.name for m in pkgutil.walk_packages(c.__path__, 'flop_fairseq.core.')]\n"
            "for n in names: importlib.import_module(n)\n"
            "print(len(names), sorted(m for m in sys.modules if m.split('.')[0] == 'fairseq'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, leaked = out.strip().split(" ", 1)
    assert int(count) >= 10 and leaked == "[]", out


def test_fairseq_log_lines_are_read_exactly():
    from flop_fairseq.tools.fairseq_log import log_fields, parse_eval_lm

    text = ("2026-11-24 | INFO | fairseq_cli.eval_lm | Evaluated 62,800 tokens in 6.8s (9183.47 tokens/s)\n"
            "2026-11-24 | INFO | fairseq_cli.eval_lm | Loss (base 2): 8.6946, Perplexity: 414.33\n")
    assert parse_eval_lm(text) == {"loss_base2": 8.6946, "ppl": 414.33, "tokens": 62800, "seconds": 6.8,
                                   "tokens_per_s": 9183.47}
    assert parse_eval_lm(text.splitlines()[0]) is None
    line = ("| train_inner | epoch 001:     25 / 1020 loss=8.5, target=0.048, lambda1=-0.1523, "
            "wps=1.2e+04, num_updates=25, lr=3e-05")
    assert log_fields(line) == {"loss": "8.5", "target": "0.048", "lambda1": "-0.1523", "wps": "1.2e+04",
                                "num_updates": "25", "lr": "3e-05"}


# --------------------------------------------------------------------------- fast path


def _pair(make):
    torch.manual_seed(0)
    fast = make()
    slow = copy.deepcopy(fast)
    slow.fast_path = False
    return fast, slow


@pytest.mark.parametrize("closed", [0, 3, 14])
@pytest.mark.parametrize("use", ["linear", "embed", "logits", "softmax_tail"])
def test_fast_path_keeps_outputs_and_gradients(use, closed):
    """Computing only the components whose sampled gate is non-zero changes neither the output
    nor any gradient; it is taken once at most 80% of the gates are non-zero."""
    r = 16
    if use == "linear":
        fast, slow = _pair(lambda: GatedLowRankLinear(24, 20, rank=r, bias=True))
    else:
        fast, slow = _pair(lambda: GatedLowRankBand(40, r, 12, tie_proj=False))
    for m in (fast, slow):  # `closed` gates certainly 0 in every sample, the rest mostly open
        set_log_alpha(m.gate, [-30.0] * closed + [1.0] * (r - closed))
    x = torch.randn(7, 24 if use == "linear" else 12)
    words = torch.randint(0, 40, (5, 3))
    outs = []
    for m in (fast, slow):
        torch.manual_seed(1)  # the same gate sample for both
        if use == "linear":
            y = m(x)
        elif use == "embed":
            y = m.embed(words)
        elif use == "logits":
            y = m.logits(x)
        else:
            code, w = m.code_and_words(x)
            y = F.linear(torch.tanh(code), w)
        (y.sin().sum()).backward()
        outs.append((y.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-5)
    assert outs[0][1].keys() == outs[1][1].keys()
    for name in outs[0][1]:
        torch.testing.assert_close(outs[0][1][name], outs[1][1][name], atol=1e-5, rtol=1e-5, msg=name)
    torch.manual_seed(1)
    z = fast.gate()
    taken = fast.active_components(z) is not None
    assert taken == (int((z > 0).sum()) <= 0.8 * r)
    assert taken or closed < 14


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
