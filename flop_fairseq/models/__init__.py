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
