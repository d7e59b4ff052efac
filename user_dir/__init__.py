"""fairseq ``--user-dir``: registers the ``flop_transformer_lm`` model (and its arch
presets) and the ``flop_adaptive_loss`` criterion."""

import flop_fairseq.criterions  # noqa: F401
import flop_fairseq.models  # noqa: F401
