"""Using ``flop_transformer_xl`` through fairseq's hub interface (``score``, ``sample``, ``generate``)
and its checkpoint loaders, which set up the checkpoint's task, fairseq's ``truncated_bptt_lm``."""

import importlib

from fairseq.hub_utils import GeneratorHubInterface
from fairseq.tasks import TASK_REGISTRY


def register_truncated_bptt_lm() -> None:
    """Registers fairseq's ``truncated_bptt_lm`` (in fairseq's examples, which fairseq does not import
    itself) so that fairseq's loaders can set it up from a checkpoint: they call
    ``setup_task(cfg, from_checkpoint=True)``, and the example's ``__init__(cfg)`` takes no such
    argument (``TypeError: ... unexpected keyword argument 'from_checkpoint'``). Idempotent."""
    if "truncated_bptt_lm" not in TASK_REGISTRY:
        importlib.import_module("fairseq.examples.truncated_bptt.truncated_bptt_lm_task")
    task = TASK_REGISTRY["truncated_bptt_lm"]
    if "setup_task" not in vars(task):
        task.setup_task = classmethod(_setup_task)


def _setup_task(cls, cfg, **kwargs):
    return cls(cfg)  # the task reads its dictionary from cfg.data; nothing else to pass on


class TxlHubInterface(GeneratorHubInterface):
    """fairseq's hub interface, each sentence a new stream: scoring reads the memory the network
    carries from one batch to the next (what consecutive segments of ``fairseq-eval-lm`` need), so
    every batch of a call (one sentence: ``truncated_bptt_lm`` batches them one by one) starts
    without it; generation keeps its memory in fairseq's incremental state, new at every batch."""

    def generate(self, *args, **kwargs):
        step = self.task.inference_step

        def without_memory(*step_args, **step_kwargs):
            for model in self.models:
                model.decoder.net.memory.reset()
            return step(*step_args, **step_kwargs)

        self.task.inference_step = without_memory
        try:
            return super().generate(*args, **kwargs)
        finally:
            del self.task.inference_step  # the task's own method again
