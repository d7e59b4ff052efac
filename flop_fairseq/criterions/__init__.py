"""fairseq criteria (imported by the ``--user-dir``; importing this imports fairseq)."""

from .distill_adaptive_loss import DistillAdaptiveLoss  # noqa: F401
from .flop_adaptive_loss import FlopAdaptiveLoss  # noqa: F401
