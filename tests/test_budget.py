"""Exact parameter budgets: the global allocation of kept rank components for a target count, its
count after compaction (the one counter), the function it keeps, and the CLIs' --target-* flags."""

import copy
import json
import math
import os

import pytest
import torch
from core_helpers import SharedBandModel, set_log_alpha
from torch import nn

from conftest import TINY_VOCAB, run
from flop_fairseq.core.budget import LIVE_VALUE
from flop_fairseq.core import (
    GatedLowRankLinear,
    PrunableModel,
    allocate,
    apply_allocation,
    compact_model,
    count_params,
    gate_median,
    gated_modules,
)

# --------------------------------------------------------------------------- core, no fairseq


class ThreeLinears(nn.Module, PrunableModel):
    """Three 16 x 16 factorizations of rank 4: 32 parameters per component, all below the dense
    form's 256, so every component costs the same."""

    def __init__(self):
        super().__init__()
        self.lins = nn.ModuleList(GatedLowRankLinear(16, 16, rank=4) for _ in range(3))

    def flop_bands(self):
        return []

    def flop_layer_matrices(self):
        return [(f"lins.{i}", m) for i, m in enumerate(self.lins)]


def test_equal_costs_keep_exactly_the_global_top_log_alpha():
    torch.manual_seed(0)
    model = ThreeLinears()
    log_alpha = torch.randn(3, 4) * 3
    for m, a in zip(model.lins, log_alpha):
        set_log_alpha(m.gate, a)
    order = torch.argsort(log_alpha.flatten(), descending=True)
    for k in range(13):
        alloc = allocate(model, target_params=32 * k + 7, min_value=0.0)
        kept = {(int(i) // 4, int(i) % 4) for i in order[:k]}
        assert {(n, int(i)) for n, g in enumerate(alloc.groups) for i in g.keep} == kept
        assert alloc.remaining_prunable_params == 32 * k
        assert alloc.gap_params == 7 and alloc.cheapest_addable_params == (32 if k < 12 else None)
        small = copy.deepcopy(model)
        apply_allocation(small, alloc)
        assert count_params(compact_model(small)).remaining_prunable_params == 32 * k


def test_components_past_the_dense_break_even_are_free():
    """16 x 16 at rank 16: min(32 k, 256) parameters, so components 9..16 cost nothing."""
    model = ThreeLinears()
    model.lins = nn.ModuleList([GatedLowRankLinear(16, 16)])
    set_log_alpha(model.lins[0].gate, torch.linspace(5, 3, 16))
    for target, kept, remaining, form in ((256, 16, 256, nn.Linear), (255, 7, 224, nn.Sequential)):
        alloc = allocate(model, target_params=target)
        assert alloc.groups[0].kept == kept and alloc.remaining_prunable_params == remaining
        small = copy.deepcopy(model)
        apply_allocation(small, alloc)
        compact_model(small)
        assert isinstance(small.lins[0], form)
        assert count_params(small).remaining_prunable_params == remaining
    assert allocate(model, target_params=255).cheapest_addable_params == 32


def test_kept_components_keep_their_eval_value_and_new_ones_get_the_median():
    """A tied band (50 + 10 per component, shared tensors once) and a linear layer: the folded
    factor A diag(z) of the adjusted model is the trained one on components kept before and after,
    A diag(median) on added ones, and nothing on removed ones; compaction then keeps the function."""
    torch.manual_seed(0)
    model = SharedBandModel()
    set_log_alpha(model.band.gate, [6.0, -2.0, 0.5, 3.0, -1.0, 1.5, -4.0, 0.0])
    set_log_alpha(model.lin.gate, torch.linspace(4, -3, 10))
    trained_z, median = model.band.gate.deterministic(), gate_median(model.band.gate)
    trained_factor = model.band.emb * trained_z
    before = count_params(model).remaining_prunable_params
    for target in (0, 100, 250, before, count_params(model).prunable_params):
        alloc = allocate(model, target_params=target)
        adjusted = copy.deepcopy(model)
        apply_allocation(adjusted, alloc)
        factor = adjusted.band.emb * adjusted.band.gate.deterministic()
        kept = set(alloc.groups[0].keep.tolist())
        for i in range(8):
            if i not in kept:
                expected = torch.zeros(50)
            elif trained_z[i] > 0:
                expected = trained_factor[:, i]
            else:
                expected = model.band.emb[:, i] * median[i]
            assert torch.allclose(factor[:, i], expected, atol=1e-7), (target, i)
        x, words = torch.randn(5, 10), torch.arange(50)
        small = compact_model(copy.deepcopy(adjusted))
        outputs = [(m.band.logits(x), m.band.embed(words), m.lin(x)) for m in (adjusted.eval(), small)]
        for a, b in zip(*outputs):
            assert torch.allclose(a, b, atol=1e-6)
        assert count_params(adjusted).remaining_prunable_params == alloc.remaining_prunable_params <= target
        assert alloc.cheapest_addable_params is None or alloc.gap_params < alloc.cheapest_addable_params


def test_the_allocation_keeps_only_live_components():
    """A group whose trained mask keeps components of eval value near 0 (what round(E[L0]) keeps
    when many pruned gates each leave a little keep probability): the allocation drops them and
    spends their budget on live components of the other group, never adding a dead one."""
    model = ThreeLinears()
    model.lins = model.lins[:2]
    # group 0: two live components, then 2 near-dead ones (log_alpha -4: eval value 0.002)
    set_log_alpha(model.lins[0].gate, [6.0, 5.0, -4.0, -4.0])
    set_log_alpha(model.lins[1].gate, [6.0, 0.5, -1.0, -2.0])  # eval values 1, 0.72, 0.18, 0.047
    alloc = allocate(model, target_params=32 * 8)
    assert [g.keep.tolist() for g in alloc.groups] == [[0, 1], [0, 1, 2]]
    assert alloc.remaining_prunable_params == 32 * 5 and alloc.cheapest_addable_params is None
    old = allocate(model, target_params=32 * 8, min_value=0.0)
    assert [g.kept for g in old.groups] == [4, 4]


@pytest.mark.parametrize("target_sparsity", [-0.1, 1.0, 1.5, float("nan")])
def test_core_refuses_bad_sparsities(target_sparsity):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        allocate(SharedBandModel(), target_sparsity=target_sparsity)


# --------------------------------------------------------------------------- tiny fairseq checkpoints


@pytest.fixture(scope="module")
def tiny_models(tiny_gated):
    from flop_fairseq.tools.checkpoint import load_flop_model

    return {kind: load_flop_model(path)[1] for kind, path in tiny_gated.items()}


def _check_allocation(model, alloc, target):
    """The allocation's promises, read off the model and its compaction with count_params alone."""
    groups = dict(gated_modules(model))
    for g in alloc.groups:  # each group keeps its components of highest log_alpha (ties: lower index)
        la = groups[g.name].gate.log_alpha.detach()
        order = sorted(range(g.rank), key=lambda i: (-float(la[i]), i))
        assert g.keep.tolist() == order[:g.kept], g.name
    adjusted = copy.deepcopy(model)
    apply_allocation(adjusted, alloc)
    small = compact_model(copy.deepcopy(adjusted))
    remaining = count_params(small).remaining_prunable_params
    assert remaining == alloc.remaining_prunable_params <= target
    # within one component: less than the marginal cost of every component not kept, so less than
    # one component of every group with components left (the cheapest group's included)
    not_full = [g for g in alloc.groups if g.next_cost is not None]
    assert all(target - remaining < g.next_cost <= groups[g.name].params_per_component() for g in not_full)
    # only live components are kept, and a group closes early only where its next one is not live
    for g in alloc.groups:
        median = gate_median(groups[g.name].gate)
        assert bool((median[g.keep] >= LIVE_VALUE).all()), g.name
        if g.next_cost is None and g.kept < g.rank:
            assert int((median >= LIVE_VALUE).sum()) == g.kept, g.name
    return adjusted, small


@pytest.mark.parametrize("kind", ["bands", "layers"])
@pytest.mark.parametrize("target_sparsity", [0.0, 0.1, 0.37, 0.5, 0.8, 0.97])
def test_compacted_count_is_the_target_within_one_component(tiny_models, kind, target_sparsity):
    model = tiny_models[kind]
    dense = count_params(model).prunable_params
    alloc = allocate(model, target_sparsity=target_sparsity)
    target = math.floor((1 - target_sparsity) * dense + 1e-6)
    assert alloc.target_params == target and alloc.prunable_params == dense
    _check_allocation(model, alloc, target)


@pytest.mark.parametrize("kind", ["bands", "layers"])
def test_target_params_of_every_size(tiny_models, kind):
    model = tiny_models[kind]
    dense = count_params(model).prunable_params
    for target in (0, 1, 81, 82, 1000, 2047, dense - 1, dense):
        _check_allocation(model, allocate(model, target_params=target), target)


@pytest.mark.parametrize("kind", ["bands", "layers"])
def test_compaction_preserves_the_adjusted_eval_function(tiny_models, kind):
    """In float64, so that the check sees the structure, not float32 rounding."""
    from flop_fairseq.tools.equivalence import max_logprob_difference

    model = copy.deepcopy(tiny_models[kind]).double()
    for target_sparsity in (0.2, 0.6):
        alloc = allocate(model, target_sparsity=target_sparsity)
        adjusted, small = _check_allocation(model, alloc, alloc.target_params)
        assert max_logprob_difference(adjusted, small, TINY_VOCAB) < 1e-5
        assert max_logprob_difference(model, adjusted, TINY_VOCAB) > 1e-3  # the budget did change it


# --------------------------------------------------------------------------- the command-line tools


def test_flop_compact_target_sparsity_through_the_cli(tiny_gated, tmp_path):
    from flop_fairseq.tools.checkpoint import load_flop_model

    out = tmp_path / "compact.pt"
    proc = run("flop-compact", tiny_gated["layers"], out, "--target-sparsity", "0.5")
    _, gated = load_flop_model(tiny_gated["layers"])
    alloc = allocate(gated, target_sparsity=0.5)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("budget:")]
    assert len(lines) == 2, proc.stdout
    assert f"target {alloc.target_params:,} remaining prunable params (sparsity 0.5000)" in lines[0]
    assert f"achieved {alloc.remaining_prunable_params:,}" in lines[0]
    assert f"gap {alloc.gap_params:,} params = {alloc.gap_components:.2f} of the cheapest" in lines[0]
    assert "max |log p(budget) - log p(trained mask)|" in lines[1]
    _, small = load_flop_model(str(out))
    counts = count_params(small)
    assert not gated_modules(small)
    assert counts.remaining_prunable_params == alloc.remaining_prunable_params <= alloc.target_params
    assert alloc.target_params - counts.remaining_prunable_params < alloc.cheapest_addable_params
    assert f"total_params {counts.total_params:,}" in proc.stdout


def test_flop_report_shows_what_the_allocation_keeps(tiny_gated, tiny_models, capsys):
    from flop_fairseq.cli.report import main

    path = tiny_gated["bands"]
    mtime = os.path.getmtime(path)
    main([path, "--json", "--target-params", "1500"])
    rep = json.loads(capsys.readouterr().out)
    alloc = allocate(tiny_models["bands"], target_params=1500)
    assert rep["budget"] == json.loads(json.dumps(alloc.summary()))
    assert [b["kept"] for b in rep["bands"]] == [g.kept for g in alloc.groups]
    assert [b["trained_kept"] for b in rep["bands"]] == [g.trained_kept for g in alloc.groups]
    assert rep["remaining_prunable_params"] == alloc.remaining_prunable_params <= 1500
    main([path, "--target-sparsity", "0.5"])
    text = capsys.readouterr().out
    assert "budget: target 1,324 remaining prunable params (sparsity 0.5000)" in text and "trained" in text
    assert os.path.getmtime(path) == mtime  # nothing written


@pytest.fixture(scope="module")
def tiny_compact(tiny_gated, tmp_path_factory):
    from flop_fairseq.tools.compact import compact

    out = tmp_path_factory.mktemp("tiny_compact") / "compact.pt"
    compact(tiny_gated["bands"], str(out))
    return str(out)


BAD = [  # (flags, checkpoint, what the one line says)
    (["--target-sparsity", "1.0"], "gated", "must be in [0, 1)"),
    (["--target-sparsity", "-0.2"], "gated", "must be in [0, 1)"),
    (["--target-sparsity", "nan"], "gated", "must be in [0, 1)"),
    (["--target-params", "-1"], "gated", "must be >= 0"),
    (["--target-params", "99999"], "gated", "exceeds the dense model's 2,648 prunable parameters"),
    (["--target-sparsity", "0.5"], "compact", "already compact"),
]


@pytest.mark.parametrize("tool", ["flop-compact", "flop-report"])
@pytest.mark.parametrize("flags,which,needle", BAD, ids=[f"{f[0]}={f[1]}-{w}" for f, w, _ in BAD])
def test_bad_targets_get_one_line_and_write_nothing(tiny_gated, tiny_compact, tmp_path, tool, flags, which,
                                                    needle):
    from flop_fairseq.cli import compact, report

    path = tiny_gated["bands"] if which == "gated" else tiny_compact
    out = tmp_path / "out.pt"
    main = compact.main if tool == "flop-compact" else report.main
    with pytest.raises(SystemExit) as exit_:
        main([path, *([str(out)] if tool == "flop-compact" else []), *flags])
    message = str(exit_.value.code)  # sys.exit(text): exit status 1, the text on stderr
    assert message.startswith(f"{tool}: error: ") and needle in message and "\n" not in message, message
    assert list(tmp_path.iterdir()) == []


def test_bad_target_through_the_cli_and_exclusive_flags(tiny_gated, tmp_path):
    out = tmp_path / "out.pt"
    proc = run("flop-compact", tiny_gated["bands"], out, "--target-sparsity", "1", check=False)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "--target-sparsity must be in [0, 1)" in proc.stderr
    from flop_fairseq.cli.compact import main

    with pytest.raises(SystemExit) as exit_:
        main([tiny_gated["bands"], str(out), "--target-sparsity", "0.5", "--target-params", "100"])
    assert exit_.value.code == 2  # argparse: not allowed with
    assert list(tmp_path.iterdir()) == []
