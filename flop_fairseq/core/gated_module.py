"""The interface every FLOP-pruned component implements, so that sparsity can be
accounted for over a whole model without knowing what the components are."""

import itertools
from typing import Optional, Union

import torch
from torch import nn

from .hard_concrete import HardConcrete

Count = Union[int, torch.Tensor]

# Computing only the active components pays once at most this fraction of them is active (the
# FLOP authors' threshold): above it, gathering the factors costs more than the skipped work.
FAST_PATH_MAX_ACTIVE = 0.8


def cheaper_form_cost(factorized: Count, dense: int) -> Count:
    """``min(factorized, dense)``: a group compacts to whichever form is smaller. As a tensor
    (the Lagrangian's expectation) it takes that value with the factorized gradient, so a group
    at full rank, where the dense form is cheaper, still feels the pressure to shrink."""
    if torch.is_tensor(factorized):
        return factorized + (factorized.detach().clamp(max=dense) - factorized.detach())
    return min(factorized, dense)


class GatedModule(nn.Module):
    """A low-rank factorization ``sum_k z_k p_k q_k^T`` with one gate per rank component.

    Subclasses set ``self.gate`` (a :class:`HardConcrete` of size ``rank``) and define

    - :meth:`dense_params`: the parameter count of the dense matrices this module
      replaces; sparsity is always measured against it;
    - :meth:`params_per_component`: parameters each kept rank component costs,
      counting a tensor shared by two uses (tied input/output factors) once;
    - optionally :meth:`compact_cost`, the count of the compact form for a given
      number of kept components, when that is not simply proportional.
    """

    gate: HardConcrete
    # False computes every component whatever its gate (the reference the fast path is tested against)
    fast_path: bool = True

    def active_components(self, z: torch.Tensor) -> Optional[torch.Tensor]:
        """Indices of the non-zero gates of ``z`` (``(r,)``) when at most
        :data:`FAST_PATH_MAX_ACTIVE` of them are non-zero, else None (compute all).

        A component whose gate is exactly 0 contributes nothing and gets zero gradients
        (its factors are multiplied by 0, and the hard-concrete clamp passes no gradient
        to its ``log_alpha``), so skipping it changes neither the output nor a gradient.
        """
        if not self.fast_path:
            return None
        active = torch.nonzero(z, as_tuple=True)[0]
        return active if active.numel() <= FAST_PATH_MAX_ACTIVE * z.numel() else None

    def uses_eval_view(self) -> bool:
        """True in eval mode without autograd (decoding, scoring, validation), the gates not bypassed:
        the module then computes with :meth:`eval_view` instead of gating its full-rank factors at
        every call."""
        return not self.training and not torch.is_grad_enabled() and self.fast_path and not self.gate.bypass

    def eval_view(self) -> nn.Module:
        """:meth:`compact` of the current weights and eval mask (``gate.deterministic()``), in eval mode:
        made once and kept while no parameter or buffer of this module (the gate's included) changes.
        The cache is keyed on each tensor's storage and ``_version`` counter, and dropped at every
        switch to training mode, since an optimizer updating ``p.data`` in place leaves ``_version``
        as it was. Not a submodule: never saved, never counted."""
        key = tuple((t.data_ptr(), t._version) for t in itertools.chain(self.parameters(), self.buffers()))
        cached = self.__dict__.get("_eval_view")
        if cached is None or cached[0] != key:
            # the compact modules' initialisation (overwritten) must not move a seeded sampler's stream
            with torch.random.fork_rng(devices=[]):
                cached = (key, self.compact().eval())
            self.__dict__["_eval_view"] = cached
        return cached[1]

    def train(self, mode: bool = True):
        if mode:
            self.__dict__.pop("_eval_view", None)
        return super().train(mode)

    def dense_params(self) -> int:
        raise NotImplementedError

    def params_per_component(self) -> int:
        raise NotImplementedError

    @property
    def rank(self) -> int:
        return self.gate.n

    def compact_cost(self, kept: Count) -> Count:
        """Parameters (of the prunable matrices) left when ``kept`` components survive."""
        return kept * self.params_per_component()

    def expected_prunable_params(self) -> torch.Tensor:
        """Expected remaining count, differentiable in the gates' ``log_alpha``."""
        return self.compact_cost(self.gate.l0_norm())

    def kept_rank(self) -> int:
        """Rank components whose eval-mode gate is non-zero."""
        return self.gate.n - self.gate.num_zeros()

    def remaining_prunable_params(self) -> int:
        """Exact remaining count after pruning with the eval-mode mask."""
        return int(self.compact_cost(self.kept_rank()))

    def unpruned_params(self) -> int:
        """Parameters the compact form keeps besides the prunable matrices (a bias)."""
        return 0
