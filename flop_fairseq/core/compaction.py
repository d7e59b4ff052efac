"""Turning a gated FLOP model into a physically smaller one, and back again for loading."""

import ctypes
from typing import Dict, Iterator, Mapping, Tuple

import torch
from torch import nn

from .band import GatedLowRankBand, LowRankBand
from .linear import GatedLowRankLinear, LowRankLinear
from .gated_module import GatedModule
from .lagrangian import AugmentedLagrangian


def _child_slots(model: nn.Module) -> Iterator[Tuple[str, nn.Module, str, nn.Module]]:
    """(qualified name, parent, attribute, child) for every child slot, shared children included."""
    for parent_name, parent in model.named_modules(remove_duplicate=False):
        for attr, child in list(parent._modules.items()):
            if child is not None:
                yield (f"{parent_name}.{attr}" if parent_name else attr), parent, attr, child


def _replace(model: nn.Module, make) -> Dict[str, nn.Module]:
    """Replaces every child ``c`` for which ``make(name, c)`` returns a module; a child shared by
    several parents is replaced by one shared new module. Returns the replacements by name."""
    # keyed by id, holding the old child too: a freed child's id could be reused by a new module
    done: Dict[int, Tuple[nn.Module, nn.Module]] = {}
    replaced = {}
    for name, parent, attr, child in list(_child_slots(model)):
        if id(child) not in done:
            new = make(name, child)
            if new is None:
                continue
            done[id(child)] = (child, new)
            replaced[name] = new
        setattr(parent, attr, done[id(child)][1])
    return replaced


@torch.no_grad()
def compact_model(model: nn.Module) -> nn.Module:
    """In place: every :class:`GatedModule` becomes its compact form (pruned
    components removed, eval mask folded in) and every :class:`AugmentedLagrangian`
    is dropped. Returns ``model``."""
    _replace(model, lambda name, m: m.compact() if isinstance(m, GatedModule) else None)
    for _, parent, attr, child in list(_child_slots(model)):
        if isinstance(child, AugmentedLagrangian):
            delattr(parent, attr)
    return model


def _like(module: nn.Module, reference: nn.Module) -> nn.Module:
    ref = next(reference.parameters())
    return module.to(ref.device, ref.dtype)


@torch.no_grad()
def match_structure(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """In place: reshapes ``model``'s FLOP modules to the forms found in ``state_dict``.

    A model built from its configuration has gated, full-rank modules; a compacted
    checkpoint holds :class:`LowRankBand` of kept ranks, and plain ``nn.Linear`` or
    :class:`LowRankLinear` layers. Each module is rebuilt in the form (and rank)
    its keys and shapes show, so ``load_state_dict`` then fits exactly.
    """

    def make(name: str, m: nn.Module):
        if isinstance(m, LowRankBand):
            gated = f"{name}.gate.log_alpha_raw" in state_dict
            emb = state_dict.get(f"{name}.emb")
            if emb is None or (gated == isinstance(m, GatedLowRankBand) and emb.shape[1] == m.rank):
                return None
            cls = GatedLowRankBand if gated else LowRankBand
            return _like(cls(
                m.num_words, emb.shape[1], m.dim, has_input=m.in_proj is not None, has_output=m.has_output,
                tie_proj=m.tie_proj, padding_idx=m.padding_idx, output_dim=m.output_dim,
            ), m)
        if isinstance(m, (GatedLowRankLinear, nn.Linear, LowRankLinear)):
            in_f, out_f, has_bias = m.in_features, m.out_features, m.bias is not None
            if f"{name}.left" in state_dict:
                if isinstance(m, GatedLowRankLinear) and m.rank == state_dict[f"{name}.left"].shape[1]:
                    return None
                return _like(GatedLowRankLinear(in_f, out_f, state_dict[f"{name}.left"].shape[1], has_bias), m)
            if f"{name}.weight" in state_dict:
                return None if isinstance(m, nn.Linear) else _like(nn.Linear(in_f, out_f, bias=has_bias), m)
            if f"{name}.0.weight" in state_dict:
                rank = state_dict[f"{name}.0.weight"].shape[0]
                if isinstance(m, LowRankLinear) and m.rank == rank:
                    return None
                return _like(LowRankLinear(in_f, out_f, rank, has_bias), m)
        return None

    if _replace(model, make):
        release_freed_memory()
    lagrangian_keys = {k.rsplit(".", 1)[0] for k in state_dict if k.endswith(".lambdas")}
    for name, parent, attr, child in list(_child_slots(model)):
        if isinstance(child, AugmentedLagrangian) and name not in lagrangian_keys:
            delattr(parent, attr)
    return model


def release_freed_memory() -> None:
    """Hands the heap memory freed so far back to the operating system (glibc's ``malloc_trim``; a
    no-op where there is none). :func:`match_structure` frees the full-rank modules a model is built
    with when a compact checkpoint replaces them; their tensors (a few MB each, under glibc's mmap
    threshold once it has adapted) go back to the heap, which glibc keeps: without this a process
    that loads a compact checkpoint holds the memory of the full-rank model all its life (1.1 GB at
    the ``transformer_lm_wiki103`` shape, more than the compact model itself)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
