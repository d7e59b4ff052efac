"""HardConcrete gates: sampling, E[L0], the exact eval mask, the lr-scale reparametrisation; and
that nothing under flop_fairseq/core imports fairseq."""

import pytest
import torch
from core_helpers import SATURATION, set_log_alpha

from flop_fairseq.core import (
    HardConcrete,
)

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


def test_dead_gates_are_pinned_shut_and_stop_counting():
    """Gates below the keep probability are pinned to -PIN (P(z > 0) < 1e-12, never sampled open);
    live ones are left bit for bit, and pinning again changes nothing."""
    from flop_fairseq.core import PIN, GatedLowRankLinear, pin_dead_gates

    lin = GatedLowRankLinear(6, 6, rank=6, gate_lr_scale=7.0)
    log_alpha = torch.tensor([5.0, 1.0, -0.9, -3.0, -4.2, -9.0])  # P(z > 0) 1.0 .. 0.08, 0.0
    with torch.no_grad():
        lin.gate.log_alpha_raw.copy_((log_alpha - lin.gate.log_alpha_offset) / lin.gate.lr_scale)
    before = lin.gate.log_alpha_raw.detach().clone()
    keep = lin.gate.keep_prob().detach()
    dead = keep < 0.1
    assert dead.tolist() == [False, False, False, False, True, True]
    assert pin_dead_gates(lin, 0.1) == 2
    after = lin.gate.log_alpha.detach()
    assert torch.equal(lin.gate.log_alpha_raw.detach()[~dead], before[~dead])
    assert torch.allclose(after[dead], torch.full((2,), -PIN))
    assert float(lin.gate.keep_prob()[dead].max()) < 1e-12
    lin.train()
    assert all(float(lin.gate()[dead].abs().max()) == 0.0 for _ in range(20))
    snapshot = lin.gate.log_alpha_raw.detach().clone()
    assert pin_dead_gates(lin, 0.1) == 2 and torch.equal(lin.gate.log_alpha_raw.detach(), snapshot)
    assert pin_dead_gates(lin, 0.0) == 0
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        pin_dead_gates(lin, 0.5)
