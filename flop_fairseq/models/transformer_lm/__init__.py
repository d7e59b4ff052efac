"""``flop_transformer_lm``: fairseq's transformer LM with FLOP bands (and optionally layers)."""

from .model import FlopTransformerLanguageModel  # noqa: F401
