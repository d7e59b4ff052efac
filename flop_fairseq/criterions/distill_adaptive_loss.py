"""``distill_adaptive_loss``: fairseq's ``adaptive_loss`` plus knowledge distillation from a frozen
teacher (``--distill-teacher``), for fine-tuning a compact FLOP model or a baseline (SVD, small
dense). ``flop_adaptive_loss`` extends it, so both take the same distillation flags."""

from dataclasses import dataclass

import torch.nn.functional as F
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.criterions.adaptive_loss import AdaptiveLoss
from fairseq.logging import metrics

from .distillation import DistillationConfig, Distiller, reduce_distill_metrics


@dataclass
class DistillAdaptiveLossConfig(DistillationConfig):
    pass


def check_ddp_backend(cfg, name: str) -> None:
    if cfg.ddp_backend in {"c10d", "pytorch_ddp"}:
        raise SystemExit(
            f"{name}: the adaptive softmax skips unused clusters, which PyTorch "
            "DistributedDataParallel does not allow; add --ddp-backend legacy_ddp"
        )


@register_criterion("distill_adaptive_loss", dataclass=DistillAdaptiveLossConfig)
class DistillAdaptiveLoss(AdaptiveLoss):
    """``loss = (1 - a) * adaptive_loss + a * T^2 * KL(teacher || student)`` in training, the KL summed
    over the batch's target tokens (see :mod:`.distillation`); plain ``adaptive_loss`` without a
    teacher, in validation and with ``reduce=False``. Logged ``loss``/``ppl`` are the task loss's;
    each log line adds ``distill_kl`` (bits per token) and ``distill_teacher_share``."""

    NAME = "distill_adaptive_loss"

    def __init__(self, task, sentence_avg, distiller: Distiller = None):
        super().__init__(task, sentence_avg)
        self.distiller = distiller

    @classmethod
    def build_criterion(cls, cfg: DistillAdaptiveLossConfig, task):
        check_ddp_backend(cfg, cls.NAME)
        return cls(task, cfg.sentence_avg, Distiller.from_config(cfg, task, cls.NAME))

    def forward(self, model, sample, reduce=True):
        distiller = self.distiller
        if distiller is None or not model.training or not reduce:
            if distiller is not None:
                distiller.pause()
            return super().forward(model, sample, reduce=reduce)
        net_output = model(**sample["net_input"])
        loss, sample_size, logging_output = self.task_loss(model, sample, net_output, reduce)
        loss = distiller.add_to_loss(model, sample, net_output, self.padding_idx, loss, logging_output)
        return loss, sample_size, logging_output

    def task_loss(self, model, sample, net_output, reduce=True):
        """fairseq's ``AdaptiveLoss.forward`` after the model's forward (which it does not let a caller
        reuse): the summed cross-entropy of each cluster's targets, padding ignored."""
        adaptive_softmax = model.decoder.adaptive_softmax
        orig_target = model.get_targets(sample, net_output)
        nsentences = orig_target.size(0)
        orig_target = orig_target.view(-1)
        logits, target = adaptive_softmax(net_output[0], orig_target)
        loss = net_output[0].new(1 if reduce else orig_target.size(0)).zero_()
        for cluster_logits, cluster_target in zip(logits, target):
            if cluster_target is not None:
                loss += F.cross_entropy(cluster_logits, cluster_target, ignore_index=self.padding_idx,
                                        reduction="sum" if reduce else "none")
        ntokens = utils.strip_pad(orig_target, self.padding_idx).numel()
        sample_size = sample["target"].size(0) if self.sentence_avg else ntokens
        logging_output = {"loss": loss.data, "ntokens": ntokens, "nsentences": nsentences,
                          "sample_size": sample_size}
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        AdaptiveLoss.reduce_metrics(logging_outputs)
        reduce_distill_metrics(logging_outputs, metrics.log_scalar)
