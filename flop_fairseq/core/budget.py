"""Exact parameter budgets: which rank components every gated group keeps so that the compact
model has a given number of prunable parameters, to within one rank component.

FLOP's Lagrangian drives the *expected* remaining count ``E[R] = sum_m cost_m(E[L0_m])`` to the
target, so the hard model (the eval mask, ``round(n - E[L0])`` zeros per group) lands near it,
not on it. :func:`allocate` chooses the kept components again, globally over all groups, for a
target ``N`` of remaining prunable parameters (or a sparsity ``t``, ``N = floor((1 - t) P)``
with ``P`` the dense prunable count):

- every rank component ``(m, i)`` of every :class:`GatedModule` ``m`` is visited once, by
  decreasing ``log_alpha`` (the components most likely kept first; at equal ``log_alpha`` the
  lower index, i.e. the more important factor, first);
- a visit keeps the component when its *marginal* cost, ``cost_m(k_m + 1) - cost_m(k_m)`` with
  ``cost_m = compact_cost`` (what the counter counts: a tied band's shared tensors once, and
  ``min(k c, dense)`` for a group whose compact form switches to the dense matrix), still fits
  in what is left of ``N``; otherwise the group is closed (its later components cost the same
  or come after this one in its own order, so each group keeps a prefix of its components).

Only live components are visited: those whose eval value (:func:`gate_median`) is at least
:data:`LIVE_VALUE`, so the allocation never spends budget on a component that its own gate has
all but switched off (a trained mask can keep such components: its count ``round(E[L0])`` sums
what is left of the keep probabilities of many pruned gates). A model with too few live
components for ``N`` is allocated fewer: what it has.

The result is ``R <= N`` with ``N - R`` smaller than the marginal cost of every live component still
addable (a group closed when its next component did not fit, and what is left only shrinks).

:func:`apply_allocation` then makes the model's eval mask that allocation: the eval value of
each kept component ``z_i`` is folded into one of its factors and its gate pinned open
(``log_alpha = +PIN``, eval value exactly 1); every other gate is pinned shut (``-PIN``). The
eval function of the adjusted model differs from the trained one only by the added and
removed components, and :func:`~flop_fairseq.core.compaction.compact_model` yields exactly the
allocated ranks and counts.

**z of a newly kept component**: its gate's eval-mode value had it not been among the zeroed
ones, the distribution's median (:func:`gate_median`, HardConcrete's eval rule without the
count). It is the value every already-kept component has, so kept values stay monotone in
``log_alpha`` and a component just above the trained threshold is treated like one just
below it. (The expected value ``E[z]`` would need a numerical integral and differs from the
already-kept components' values.)
"""

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from .band import GatedLowRankBand
from .counting import WEAK_VALUE, count_params, gated_modules
from .gated_module import GatedModule
from .hard_concrete import HardConcrete
from .linear import GatedLowRankLinear
from .pinning import pin
from .target import check_target_sparsity

# The smallest eval value of a component the allocation keeps (the counter's WEAK_VALUE): below
# it a component multiplies its factors by under a tenth, costs its whole parameter count and adds
# little, so the budget goes to the next live component instead. (The hard-concrete median
# sigmoid(log_alpha / beta) is 0.1 at log_alpha = -1.46, where P(z > 0) = 0.53.)
LIVE_VALUE = WEAK_VALUE


@torch.no_grad()
def gate_median(gate: HardConcrete) -> torch.Tensor:
    """Eval-mode value of every gate as if none were zeroed, shape ``(n,)``: the median
    ``clamp(sigmoid(log_alpha / beta)(r - l) + l, 0, 1)`` where it is at least 1/2, else
    ``sigmoid(log_alpha / beta)`` (:meth:`HardConcrete.deterministic` before its zeros)."""
    log_alpha = gate.log_alpha.detach()
    median = torch.sigmoid(log_alpha / gate.temperature)
    stretched = (median * (gate.limit_r - gate.limit_l) + gate.limit_l).clamp(0.0, 1.0)
    return torch.where(median >= 0.5, stretched, median)


@dataclass
class GroupAllocation:
    """What one gated group (``name``, as :func:`gated_modules` names it, of rank ``rank``) keeps:
    ``keep`` (indices, ``(k,)``, by decreasing ``log_alpha``), ``values`` (their eval values ``z``,
    ``(k,)``), ``params`` (``compact_cost(k)``), ``trained_kept`` (what the trained eval mask
    keeps) and ``next_cost`` (the marginal cost of its next component, None when it keeps
    everything)."""

    name: str
    rank: int
    keep: torch.Tensor
    values: torch.Tensor
    params: int
    trained_kept: int
    added: int
    removed: int
    next_cost: Optional[int]
    weak: int = 0
    weak_params: int = 0

    @property
    def kept(self) -> int:
        return int(self.keep.numel())


@dataclass
class Allocation:
    """A global choice of kept components for ``target_params`` remaining prunable parameters.

    ``remaining_prunable_params``: the count once compacted (what :func:`count_params` gives
    after :func:`apply_allocation` and after compaction); ``trained_remaining_prunable_params``:
    that of the eval mask as trained; ``prunable_params``: the dense count ``P``."""

    target_params: int
    prunable_params: int
    remaining_prunable_params: int
    trained_remaining_prunable_params: int
    groups: List[GroupAllocation]

    @property
    def gap_params(self) -> int:
        """``N - R >= 0``."""
        return self.target_params - self.remaining_prunable_params

    @property
    def cheapest_addable_params(self) -> Optional[int]:
        """Marginal cost of the cheapest component not kept (None when every component is kept);
        ``gap_params`` is smaller than it."""
        costs = [g.next_cost for g in self.groups if g.next_cost is not None]
        return min(costs) if costs else None

    @property
    def gap_components(self) -> float:
        """``gap_params`` in units of :attr:`cheapest_addable_params` (< 1; 0 when nothing is addable)."""
        unit = self.cheapest_addable_params
        return self.gap_params / unit if unit else 0.0

    @property
    def target_sparsity(self) -> float:
        return 1.0 - self.target_params / max(self.prunable_params, 1)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.remaining_prunable_params / max(self.prunable_params, 1)

    @property
    def added(self) -> int:
        """Components kept that the trained eval mask drops."""
        return sum(g.added for g in self.groups)

    @property
    def removed(self) -> int:
        """Components the trained eval mask keeps that are dropped."""
        return sum(g.removed for g in self.groups)

    def summary(self) -> dict:
        """The figures the tools print and ``flop-report --json`` writes under ``budget``."""
        return {
            "target_params": self.target_params, "target_sparsity": self.target_sparsity,
            "remaining_prunable_params": self.remaining_prunable_params, "sparsity": self.sparsity,
            "gap_params": self.gap_params, "cheapest_addable_params": self.cheapest_addable_params,
            "gap_components": self.gap_components,
            "trained_remaining_prunable_params": self.trained_remaining_prunable_params,
            "added_components": self.added, "removed_components": self.removed,
            "weak_components": sum(g.weak for g in self.groups),
            "weak_params": sum(g.weak_params for g in self.groups),
        }


def target_params_for(prunable_params: int, target_params: Optional[int] = None,
                      target_sparsity: Optional[float] = None) -> int:
    """``N`` from exactly one of ``target_params`` (``0 <= N <= P``) or ``target_sparsity``
    ``t`` in [0, 1) (``N = floor((1 - t) P)``, so the achieved sparsity is at least ``t``);
    a :class:`ValueError` naming the problem otherwise."""
    if (target_params is None) == (target_sparsity is None):
        raise ValueError("give exactly one of a target parameter count and a target sparsity")
    if target_sparsity is not None:
        t = check_target_sparsity(target_sparsity)
        # the small slack absorbs float error ((1 - 0.7) * 1000 = 300.00000000000006, but also 299.999...)
        return min(prunable_params, math.floor((1.0 - t) * prunable_params + 1e-6))
    n = int(target_params)
    if n != target_params or n < 0:
        raise ValueError(f"target parameter count must be a whole number >= 0, got {target_params}")
    if n > prunable_params:
        raise ValueError(f"target of {n:,} parameters exceeds the dense model's {prunable_params:,} "
                         "prunable parameters")
    return n


def _visit_order(modules: List[GatedModule], min_value: float) -> List[tuple]:
    """``(module number, component index)`` of every live component (eval value, as
    :func:`gate_median` gives it, at least ``min_value``), by decreasing ``log_alpha``, then
    increasing index (the factorizations order components by importance, and HardConcrete's eval
    mask zeros the higher index first among equals), then module number."""
    keyed = []
    for m_no, m in enumerate(modules):
        log_alpha = m.gate.log_alpha.detach().double().cpu().tolist()
        live = (gate_median(m.gate) >= min_value).cpu().tolist()
        keyed += [(-a, i, m_no) for i, (a, ok) in enumerate(zip(log_alpha, live)) if ok]
    keyed.sort()
    return [(m_no, i) for _, i, m_no in keyed]


@torch.no_grad()
def allocate(model: nn.Module, target_params: Optional[int] = None,
             target_sparsity: Optional[float] = None, min_value: float = LIVE_VALUE) -> Allocation:
    """The global allocation (module docstring) for ``model`` (a :class:`PrunableModel` with
    gated groups) and a target of ``target_params`` remaining prunable parameters or a
    ``target_sparsity``, over the components whose eval value is at least ``min_value``
    (:data:`LIVE_VALUE`; 0 admits every component). Changes nothing; :func:`apply_allocation`
    applies it."""
    named = gated_modules(model)
    if not named:
        raise ValueError("the model has no gated (FLOP) groups left: it is already compact")
    counts = count_params(model)
    target = target_params_for(counts.prunable_params, target_params, target_sparsity)
    modules = [m for _, m in named]

    def cost(m_no: int, kept: int) -> int:
        return int(modules[m_no].compact_cost(kept))

    # prunable parameters outside the gated groups (none in a gated FLOP model) stay as they are
    fixed = counts.remaining_prunable_params - sum(m.remaining_prunable_params() for m in modules)
    left = target - fixed - sum(cost(m_no, 0) for m_no in range(len(modules)))
    if left < 0:
        raise ValueError(f"target of {target:,} parameters is below the {target - left:,} left with every "
                         "component pruned")
    kept_order: List[List[int]] = [[] for _ in modules]
    closed = [False] * len(modules)
    order = _visit_order(modules, min_value)
    live = [0] * len(modules)
    for m_no, _ in order:
        live[m_no] += 1
    for m_no, i in order:
        if closed[m_no]:
            continue
        k = len(kept_order[m_no])
        step = cost(m_no, k + 1) - cost(m_no, k)
        if step <= left:
            kept_order[m_no].append(i)
            left -= step
        else:  # its later components come after this one: the group keeps a prefix of its order
            closed[m_no] = True

    groups = []
    for (name, m), keep_list, m_no in zip(named, kept_order, range(len(modules))):
        trained = m.gate.deterministic()
        keep = torch.tensor(keep_list, dtype=torch.long)
        # already-kept components keep their trained eval value; newly kept ones get the median
        values = torch.where(trained > 0, trained, gate_median(m.gate))[keep.to(trained.device)]
        k = len(keep_list)
        was_kept = trained.cpu() > 0
        added = int((~was_kept[keep]).sum())
        weak = int((values < WEAK_VALUE).sum())
        groups.append(GroupAllocation(
            name=name, rank=m.rank, keep=keep, values=values, params=cost(m_no, k),
            trained_kept=int(was_kept.sum()), added=added, removed=int(was_kept.sum()) - (k - added),
            next_cost=None if k == live[m_no] else cost(m_no, k + 1) - cost(m_no, k),
            weak=weak, weak_params=cost(m_no, k) - cost(m_no, k - weak)))
    return Allocation(target, counts.prunable_params, fixed + sum(g.params for g in groups),
                      counts.remaining_prunable_params, groups)


def _gate_factor(module: GatedModule):
    """``(factor, axis)``: the factor the gate values fold into, where compaction folds them, and its
    component axis: a band's word factor ``A`` (``emb``, ``(|V_i|, r)``, axis 1, shared by the
    band's input and output uses), a linear layer's ``Q`` (``right``, ``(r, in)``, axis 0)."""
    if isinstance(module, GatedLowRankBand):
        return module.emb, 1
    if isinstance(module, GatedLowRankLinear):
        return module.right, 0
    raise TypeError(f"no rule to fold gate values into a {type(module).__name__}")


@torch.no_grad()
def apply_allocation(model: nn.Module, allocation: Allocation) -> None:
    """In place: ``model``'s eval mask becomes ``allocation`` (made by :func:`allocate` for this model
    or an unchanged copy of it; groups are matched by name): each kept component's value ``z_i``
    is folded into its factor and its gate pinned open (eval value exactly 1), every other gate
    pinned shut. Training the result further would start from these pinned gates; it is meant
    for compaction (and for reading its counts). Checks that the eval mask and the counter then
    give exactly the allocated structure and count."""
    modules = dict(gated_modules(model))
    if sorted(modules) != sorted(g.name for g in allocation.groups):
        raise ValueError("the allocation was made for a model with other gated groups")
    factors = {}
    for g in allocation.groups:
        module = modules[g.name]
        if module.gate.n != g.rank:
            raise ValueError(f"{g.name}: rank {module.gate.n}, the allocation was made for rank {g.rank}")
        factor, axis = _gate_factor(module)
        if id(factor) in factors:  # a factor shared by two gate vectors cannot take both scales
            raise TypeError(f"{g.name}: its factor is shared with another gated group")
        factors[id(factor)] = (g, module, factor, axis)
    for g, module, factor, axis in factors.values():
        gate = module.gate
        # gate value 1 on the scaled factor computes what gate value z_i did on the factor
        scale = torch.ones(gate.n, device=factor.device, dtype=factor.dtype)
        scale[g.keep.to(factor.device)] = g.values.to(factor.device, factor.dtype)
        shape = [1] * factor.dim()
        shape[axis] = gate.n
        factor.mul_(scale.view(shape))
        is_open = torch.zeros(gate.n, dtype=torch.bool, device=gate.log_alpha_raw.device)
        is_open[g.keep.to(is_open.device)] = True
        pin(gate, is_open)
        z = gate.deterministic()
        if not (torch.equal(torch.nonzero(z, as_tuple=True)[0].cpu(), g.keep.sort().values)
                and bool((z[z > 0] == 1).all())):
            raise RuntimeError(f"{g.name}: the pinned eval mask is not the allocation; please report this model")
    remaining = count_params(model).remaining_prunable_params
    if remaining != allocation.remaining_prunable_params:
        raise RuntimeError(f"the allocated model counts {remaining:,} remaining prunable parameters, not the "
                           f"{allocation.remaining_prunable_params:,} allocated; please report this model")
