"""fairseq ``--user-dir``: registers the FLOP models (``flop_transformer_lm`` and its arch
presets) and the ``flop_adaptive_loss`` criterion. Find its path with ``flop-user-dir``:
``fairseq-train --user-dir "$(flop-user-dir)" ...``."""

import flop_fairseq.criterions  # noqa: F401
import flop_fairseq.models  # noqa: F401
from flop_fairseq.plugin import safe_checkpoints

safe_checkpoints.install()

# fairseq's truncated_bptt_lm task (consecutive segments per batch row, for flop_transformer_xl)
# lives in fairseq's examples, which fairseq does not import itself
import importlib  # noqa: E402

from fairseq.tasks import TASK_REGISTRY as _TASKS  # noqa: E402

if "truncated_bptt_lm" not in _TASKS:
    importlib.import_module("fairseq.examples.truncated_bptt.truncated_bptt_lm_task")
