"""fairseq ``--user-dir``: registers the FLOP models (``flop_transformer_lm``,
``flop_transformer_xl`` and their arch presets), the ``flop_adaptive_loss`` and
``distill_adaptive_loss`` criteria and
fairseq's ``truncated_bptt_lm`` task, makes ``checkpoint_last.pt`` SIGKILL-safe, and lets torch's
weights-only loading read fairseq's pre-hydra checkpoints (``argparse.Namespace`` args, numpy
scalars: :mod:`flop_fairseq.tools.pickle_allowlist`), so ``fairseq-eval-lm --path`` and
``--finetune-from-model`` take fairseq's published language models. Find its
path with ``flop-user-dir``: ``fairseq-train --user-dir "$(flop-user-dir)" ...``."""

import flop_fairseq.criterions  # noqa: F401
import flop_fairseq.models  # noqa: F401  (with truncated_bptt_lm, flop_transformer_xl's task)
from flop_fairseq.plugin import safe_checkpoints
from flop_fairseq.tools import pickle_allowlist

safe_checkpoints.install()
pickle_allowlist.register()
