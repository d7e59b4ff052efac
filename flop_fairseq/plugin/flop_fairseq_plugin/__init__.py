"""fairseq ``--user-dir``: registers the FLOP models (``flop_transformer_lm``,
``flop_transformer_xl`` and their arch presets), the ``flop_adaptive_loss`` and
``distill_adaptive_loss`` criteria and
fairseq's ``truncated_bptt_lm`` task, makes ``checkpoint_last.pt`` SIGKILL-safe, and lets torch's
weights-only loading read fairseq's pre-hydra checkpoints (``argparse.Namespace`` args, numpy
scalars: :mod:`flop_fairseq.tools.pickle_allowlist`), so ``fairseq-eval-lm --path`` and
``--finetune-from-model`` take fairseq's published language models. Find its
path with ``flop-user-dir``: ``fairseq-train --user-dir "$(flop-user-dir)" ...``."""

import importlib

from fairseq.tasks import TASK_REGISTRY

import flop_fairseq.criterions  # noqa: F401
import flop_fairseq.models  # noqa: F401
from flop_fairseq.plugin import safe_checkpoints
from flop_fairseq.tools import pickle_allowlist

safe_checkpoints.install()
pickle_allowlist.register()

# truncated_bptt_lm (consecutive segments per batch row, what flop_transformer_xl trains and
# evaluates with) lives in fairseq's examples, which fairseq does not import itself
if "truncated_bptt_lm" not in TASK_REGISTRY:
    importlib.import_module("fairseq.examples.truncated_bptt.truncated_bptt_lm_task")
