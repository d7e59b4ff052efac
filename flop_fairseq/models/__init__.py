"""fairseq models (imported by the ``--user-dir``; importing this imports fairseq)."""

from .flop_transformer_lm import FlopTransformerLanguageModel  # noqa: F401
