"""fairseq ``--user-dir``: registers the FLOP models (``flop_transformer_lm``,
``flop_transformer_xl`` and their arch presets), the ``flop_adaptive_loss`` and
``distill_adaptive_loss`` criteria and
fairseq's ``truncated_bptt_lm`` task, and makes ``checkpoint_last.pt`` SIGKILL-safe. Find its
path with ``flop-user-dir``: ``fairseq-train --user-dir "$(flop-user-dir)" ...``."""

import flop_fairseq.criterions  # noqa: F401
import flop_fairseq.models  # noqa: F401  (with truncated_bptt_lm, flop_transformer_xl's task)
from flop_fairseq.plugin import safe_checkpoints

safe_checkpoints.install()
