"""fairseq ``--user-dir``: registers the FLOP models (``flop_transformer_lm`` and its arch
presets) and the ``flop_adaptive_loss`` criterion. Find its path with ``flop-user-dir``:
``fairseq-train --user-dir "$(flop-user-dir)" ...``."""

import flop_fairseq.criterions  # noqa: F401
import flop_fairseq.models  # noqa: F401
from flop_fairseq.plugin import safe_checkpoints

safe_checkpoints.install()
