"""fairseq user dir of the AGP baseline (``fairseq-train --user-dir benchmarks/agp_plugin``):
registers the criterion ``agp_adaptive_loss``. It prunes dense fairseq models, so it needs no
FLOP arch; the schedule and mask are :mod:`benchmarks.baselines.agp`."""

from . import agp_adaptive_loss  # noqa: F401
