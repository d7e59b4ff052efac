"""fairseq models (imported by the ``--user-dir``; importing this imports fairseq).

Every FLOP model is a :class:`~flop_fairseq.core.PrunableModel` and also says, for the
tools, which dense archs it converts from (``DENSE_ARCHS``), how to read its vocabulary
size from a state dict, and how to initialise itself from a dense model.
"""

from typing import Optional, Type

from .transformer_lm import FlopTransformerLanguageModel
from .transformer_xl import FlopTransformerXLModel

FLOP_MODELS = (FlopTransformerLanguageModel, FlopTransformerXLModel)


def flop_model_for_arch(arch: str) -> Optional[Type]:
    """The FLOP model class registered for ``arch`` (a FLOP arch name), else None."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    cls = ARCH_MODEL_REGISTRY.get(arch)
    return cls if cls in FLOP_MODELS else None


def flop_model_for_dense_arch(arch: str):
    """``(FLOP model class, FLOP arch)`` that ``flop-convert`` makes of a dense ``arch``, else None."""
    for cls in FLOP_MODELS:
        if arch in cls.DENSE_ARCHS:
            return cls, cls.DENSE_ARCHS[arch]
    return None


def dense_archs() -> list:
    return sorted(a for cls in FLOP_MODELS for a in cls.DENSE_ARCHS)


def dense_prunable_tensors(model) -> Optional[list]:
    """The tensors FLOP would prune in a dense fairseq ``model`` (found by its class's archs
    through :func:`flop_model_for_dense_arch`), else None."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    for arch, cls in ARCH_MODEL_REGISTRY.items():
        found = flop_model_for_dense_arch(arch) if cls is type(model) else None
        if found is not None:
            return found[0].dense_prunable_tensors(model)
    return None


def layer_matrices(model) -> list:
    """Every decoder layer's attention/FFN matrices of a ``transformer_lm``-family model, dense,
    gated or compact (the set ``--flop-decoder-layers`` factorizes), for
    :func:`~flop_fairseq.core.count_params`; ``[]`` for other models."""
    from fairseq.models.transformer_lm import TransformerLanguageModel

    from .transformer_lm.model import LAYER_MATRICES

    if not isinstance(model, TransformerLanguageModel):
        return []
    return [layer.get_submodule(path) for layer in model.decoder.layers for path in LAYER_MATRICES]
