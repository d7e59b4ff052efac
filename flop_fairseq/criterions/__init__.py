"""fairseq criteria (imported by the ``--user-dir``; importing this imports fairseq)."""

from .flop_adaptive_loss import FlopAdaptiveLoss  # noqa: F401
