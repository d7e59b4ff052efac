"""``agp_adaptive_loss``: fairseq's ``adaptive_loss`` (plus distillation with
``--distill-teacher``, as ``distill_adaptive_loss``) with AGP magnitude pruning of the band
matrices, and with ``--agp-layers`` of the layer matrices, before every training forward
(:mod:`benchmarks.baselines.agp`). Needs ``--update-freq 1`` (one forward per update)."""

from dataclasses import dataclass, field

import torch
from fairseq.criterions import register_criterion
from fairseq.logging import metrics

from benchmarks.baselines.agp import agp_prunable, agp_sparsity, magnitude_mask
from flop_fairseq.core import check_target_sparsity
from flop_fairseq.criterions.distill_adaptive_loss import DistillAdaptiveLoss, check_ddp_backend
from flop_fairseq.criterions.distillation import DistillationConfig, Distiller


@dataclass
class AgpAdaptiveLossConfig(DistillationConfig):
    agp_target_sparsity: float = field(default=0.5, metadata={"help": "final sparsity s_f of every band matrix"})
    agp_begin_update: int = field(default=0, metadata={"help": "update t_0 at which pruning starts"})
    agp_end_update: int = field(default=1000, metadata={"help": "update T at which s_t reaches s_f"})
    agp_frequency: int = field(default=1, metadata={"help": "recompute the mask every this many updates"})
    agp_layers: bool = field(default=False, metadata={
        "help": "also prune the attention/FFN weight matrices of every decoder layer (each to s_t)"})


@register_criterion("agp_adaptive_loss", dataclass=AgpAdaptiveLossConfig)
class AgpAdaptiveLoss(DistillAdaptiveLoss):
    """The mask only grows: a pruned weight stays pruned (it counts as 0 in the next mask)."""

    NAME = "agp_adaptive_loss"

    def __init__(self, task, sentence_avg, target, begin, end, frequency, layers=False, distiller=None):
        super().__init__(task, sentence_avg, distiller)
        self.target, self.begin, self.end, self.frequency = target, begin, end, max(1, frequency)
        self.layers = layers
        self.step = 0
        self.masks = None
        self.current = 0.0

    @classmethod
    def build_criterion(cls, cfg, task):
        check_ddp_backend(cfg, cls.NAME)
        try:
            check_target_sparsity(cfg.agp_target_sparsity, "--agp-target-sparsity")
        except ValueError as e:
            raise SystemExit(f"{cls.NAME}: {e}")
        return cls(task, cfg.sentence_avg, cfg.agp_target_sparsity, cfg.agp_begin_update, cfg.agp_end_update,
                   cfg.agp_frequency, cfg.agp_layers, Distiller.from_config(cfg, task, cls.NAME))

    @torch.no_grad()
    def _prune(self, model):
        params = agp_prunable(model, self.layers)
        if self.masks is None:
            self.masks = [torch.ones_like(p, dtype=torch.bool) for p in params]
        s = agp_sparsity(self.step, self.target, self.begin, self.end)
        if s > self.current and ((self.step - self.begin) % self.frequency == 0 or self.step >= self.end):
            self.masks = [magnitude_mask(p, s, m) for p, m in zip(params, self.masks)]
            self.current = s
        for p, m in zip(params, self.masks):
            p.mul_(m)

    def forward(self, model, sample, reduce=True):
        if model.training:
            self._prune(model)
            self.step += 1
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        if model.training:
            logging_output["agp_sparsity"] = self.current * sample_size
            logging_output["agp_weight"] = sample_size
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        DistillAdaptiveLoss.reduce_metrics(logging_outputs)
        weight = sum(log.get("agp_weight", 0) for log in logging_outputs)
        if weight:
            value = sum(log.get("agp_sparsity", 0) for log in logging_outputs) / weight
            metrics.log_scalar("agp_sparsity", value, weight, round=4)
