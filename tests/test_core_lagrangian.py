"""The augmented Lagrangian: target schedule, exact ascent steps, state round trip, and driving a
small factorized MLP to its target sparsity."""

import pytest
import torch
from core_helpers import n_params
from torch import nn

from flop_fairseq.core import (
    AugmentedLagrangian,
    GatedLowRankLinear,
    expected_sparsity,
    sparsity_stats,
)

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
    assert set(sd) == {"lambdas", "pending", "num_updates", "lr", "start_sparsity", "started"}
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


def test_multipliers_integrate_a_constant_violation():
    """A constant violation v for n updates: lambda_1 moves by n eta v (the integral term, the price
    per unit of sparsity that the gates see), lambda_2 by n eta v^2; the penalty's slope in s is
    lambda_1 + 2 lambda_2 (s - t), its proportional part."""
    eta, v, n = 0.5, -0.04, 25
    c = AugmentedLagrangian(target_sparsity=0.5, lr=eta, lambda_2_init=500.0)
    c.train()
    for update in range(1, n + 1):
        for _ in range(3):  # update_freq 3: the mean of the update's passes, one step
            c(torch.tensor(0.5 + v, dtype=torch.float64))
        c.set_num_updates(update)
    assert c.lambda_1.item() == pytest.approx(n * eta * v, rel=1e-9)
    assert c.lambda_2.item() == pytest.approx(500.0 + n * eta * v * v, rel=1e-9)
    s = torch.tensor(0.5 + v, dtype=torch.float64, requires_grad=True)
    c(s).backward()
    assert s.grad.item() == pytest.approx(n * eta * v + 2 * (500.0 + n * eta * v * v) * v, rel=1e-9)


def test_schedule_starts_where_the_model_is():
    """The first training pass records s_0; the target then runs linearly from s_0 to t, so a model
    that starts a little denser than dense (s_0 < 0) is not pushed at the first update."""
    c = AugmentedLagrangian(target_sparsity=0.6, warmup_updates=100)
    c.eval()
    c(torch.tensor(-0.5))  # evaluation passes record nothing
    assert not bool(c.started) and c.target(50) == pytest.approx(0.3)
    c.train()
    s0 = torch.tensor(-0.015, dtype=torch.float64, requires_grad=True)
    pen = c(s0)
    assert c.start_sparsity.item() == pytest.approx(-0.015) and pen.item() == 0.0
    for n, t in ((0, -0.015), (50, -0.015 + 0.5 * 0.615), (100, 0.6), (400, 0.6)):
        assert c.target(n) == pytest.approx(t, abs=1e-12)
    c.set_num_updates(1)
    c(torch.tensor(0.2))  # later passes leave s_0 as it is
    assert c.start_sparsity.item() == pytest.approx(-0.015)
    # a controller saved before s_0 was recorded loads as one that started at 0
    old = {k: v for k, v in c.state_dict().items() if k not in ("start_sparsity", "started")}
    d = AugmentedLagrangian(target_sparsity=0.6, warmup_updates=100)
    d.load_state_dict(old)
    assert d.start_sparsity.item() == 0.0 and bool(d.started) and d.target(50) == pytest.approx(0.3)


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
