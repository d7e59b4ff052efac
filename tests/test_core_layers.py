"""Gated and compact low-rank linear layers and bands: SVD initialisation, compaction equal to the
gated eval function, exact counts, and the fast path that computes only active components."""

import copy

import pytest
import torch
import torch.nn.functional as F
from core_helpers import n_params, set_log_alpha
from torch import nn

from flop_fairseq.core import (
    GatedLowRankBand,
    GatedLowRankLinear,
    LowRankBand,
    gates_bypassed,
)

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


# --------------------------------------------------------------------------- eval views and layout


@pytest.mark.parametrize("kind", ["linear", "band"])
def test_eval_view_is_cached_until_a_gate_or_weight_changes(kind):
    """In eval mode without autograd a gated module computes with its cached compact form (the same
    function as the reference path), rebuilt when a gate or a weight changes in place, dropped at train()."""
    torch.manual_seed(0)
    if kind == "linear":
        fast, slow = _pair(lambda: GatedLowRankLinear(24, 20, rank=16, bias=True))
        x = torch.randn(7, 24)
        run = lambda m: m(x)  # noqa: E731
    else:
        fast, slow = _pair(lambda: GatedLowRankBand(40, 16, 12, tie_proj=False))
        h, words = torch.randn(7, 12), torch.randint(0, 40, (5, 3))
        run = lambda m: torch.cat([m.logits(h).flatten(), m.embed(words).flatten()])  # noqa: E731
    for m in (fast, slow):
        set_log_alpha(m.gate, [-30.0] * 6 + [0.5] * 3 + [8.0] * 7)
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(run(fast), run(slow), atol=1e-5, rtol=0)
        view = fast.eval_view()
        run(fast)
        assert fast.eval_view() is view and view.rank == 10 and not view.training
        for m in (fast, slow):  # a gate closed in place
            m.gate.log_alpha_raw[-1] = -40.0
        torch.testing.assert_close(run(fast), run(slow), atol=1e-5, rtol=0)
        assert fast.eval_view().rank == 9
        for m in (fast, slow):  # a weight changed in place (as an optimizer does, through .data)
            weight = m.right if kind == "linear" else m.emb
            weight.data.mul_(2.0)
    fast.train()
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(run(fast), run(slow), atol=1e-5, rtol=0)
    y = run(fast)  # with autograd: the gated path, gradients reach the factors
    assert y.requires_grad


def test_compact_forms_store_thin_matrices_transposed_in_eval_mode():
    torch.manual_seed(0)
    band = GatedLowRankBand(40, 10, 12, tie_proj=False)
    set_log_alpha(band.gate, [-30.0] * 4 + [8.0] * 6)
    linear = GatedLowRankLinear(24, 20, rank=16)
    set_log_alpha(linear.gate, [-30.0] * 12 + [8.0] * 4)
    h, words = torch.randn(3, 12), torch.randint(0, 40, (2, 5))
    for gated, matrices in ((band, lambda c: [c.emb, c.in_proj, c.out_proj]), (linear, lambda c: [c[1].weight])):
        compact = gated.eval().compact()
        state = {k: v.clone() for k, v in compact.state_dict().items()}
        compact.eval()
        assert all(not m.is_contiguous() and m.t().is_contiguous() for m in matrices(compact))
        assert all(torch.equal(v, compact.state_dict()[k]) for k, v in state.items())
        compact.train()
        assert all(m.is_contiguous() for m in matrices(compact))
    with torch.no_grad():
        compact_band = band.compact().eval()
        torch.testing.assert_close(compact_band.embed(words), band.embed(words), atol=1e-6, rtol=0)
        torch.testing.assert_close(compact_band.logits(h), band.logits(h), atol=1e-6, rtol=0)
