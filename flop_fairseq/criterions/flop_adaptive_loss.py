"""``flop_adaptive_loss``: fairseq's adaptive loss plus FLOP's augmented Lagrangian (and, with
``--distill-teacher``, the distillation term of ``distill_adaptive_loss``)."""

import weakref
from dataclasses import dataclass, field
from typing import List

from fairseq.criterions import register_criterion
from fairseq.logging import metrics
from omegaconf import II

from ..core import (
    GatedModule,
    allocate,
    apply_allocation,
    expected_sparsity,
    gated_modules,
    pin_dead_gates,
    repin,
    sparsity_stats,
)
from ..core.pinning import check_dead_gate_prob
from ..core.target import check_target_sparsity
from .distill_adaptive_loss import DistillAdaptiveLoss, check_ddp_backend
from .distillation import DistillationConfig, Distiller
from .replicas import check_replicas


@dataclass
class FlopAdaptiveLossConfig(DistillationConfig):
    target_sparsity: float = field(
        default=0.5,
        metadata={"help": "fraction of the dense model's prunable parameters (adaptive bands, and "
                          "decoder layers with --flop-decoder-layers) to remove, in [0, 1)"},
    )
    sparsity_warmup_updates: int = field(
        default=0,
        metadata={"help": "updates over which the target sparsity rises linearly from 0 to "
                          "--target-sparsity (0: the full target from the start)"},
    )
    sparsity_warmup_from_zero: bool = field(
        default=False,
        metadata={"help": "start the warm-up at sparsity 0 rather than at the model's expected sparsity at "
                          "its first update (a converted model starts just below 0, and a schedule from 0 "
                          "pushes every gate down from the first update)"},
    )
    gate_lr_scale: float = field(
        default=50.0,
        metadata={"help": "learning-rate multiplier of the gates' log_alpha relative to --lr "
                          "(applied by reparametrization, so one optimizer serves all)"},
    )
    lambda_lr_scale: float = field(
        default=10.0,
        metadata={"help": "learning rate of the Lagrange multipliers lambda_1, lambda_2 relative to --lr: "
                          "each update they take a gradient-ascent step lambda += lr * scale * dpenalty/dlambda"},
    )
    lambda2_init: float = field(
        default=500.0,
        metadata={"help": "initial lambda_2, the weight of the quadratic term (s - t)^2: the pull back "
                          "towards the target that keeps the sparsity from overshooting it"},
    )
    dead_gate_prob: float = field(
        default=0.1,
        metadata={"help": "before every update, shut for good (pin to 0) each gate whose keep probability "
                          "P(z > 0) is below this, so that it no longer counts in the expected size the "
                          "Lagrangian drives (its eval value is already about 0); in [0, 0.5), 0: never"},
    )
    freeze_mask_update: int = field(
        default=0,
        metadata={"help": "from this update on, train the final structure: the mask becomes the exact "
                          "budget of --target-sparsity (what flop-compact --target-sparsity keeps), its gates "
                          "pinned, and the Lagrangian stops; the same run and optimizer go on (0: never)"},
    )
    check_replicas: bool = field(
        default=False,
        metadata={"help": "in a multi-process run, compare a fingerprint of every parameter, gate and "
                          "multiplier across ranks before each update and stop if they differ"},
    )
    lr: List[float] = II("optimization.lr")
    # --freeze-mask-update edits parameters in place, which fairseq's fp16/bf16 optimizer would
    # overwrite from its fp32 copies at the next step
    fp16: bool = II("common.fp16")
    bf16: bool = II("common.bf16")
    memory_efficient_fp16: bool = II("common.memory_efficient_fp16")
    memory_efficient_bf16: bool = II("common.memory_efficient_bf16")


@register_criterion("flop_adaptive_loss", dataclass=FlopAdaptiveLossConfig)
class FlopAdaptiveLoss(DistillAdaptiveLoss):
    """``loss = adaptive_loss + sample_size * (lambda_1 (s - t) + lambda_2 (s - t)^2)``; with
    ``--distill-teacher``, ``adaptive_loss`` becomes ``(1 - a) adaptive_loss + a T^2 KL`` (see
    :class:`DistillAdaptiveLoss`).

    The multipliers take one gradient-ascent step per update (see
    :class:`AugmentedLagrangian`); the gates learn through the model's optimizer.
    The penalty is scaled by the sample size because fairseq divides the summed
    gradients by it, so the Lagrangian acts per token whatever the batch size or
    ``--update-freq``. Logged ``loss``/``ppl`` exclude the penalty; validation has
    none. Each log line adds the expected sparsity, the target, the lambdas, the
    Lagrangian term, the hard (eval-mask) sparsity and each band's kept rank.
    """

    NAME = "flop_adaptive_loss"

    def __init__(self, task, sentence_avg, target_sparsity, sparsity_warmup_updates, gate_lr_scale,
                 lambda_lr_scale, lambda2_init=500.0, lr=1.0, check_replicas=False, distiller: Distiller = None,
                 freeze_mask_update=0, dead_gate_prob=0.0, sparsity_warmup_from_zero=False):
        super().__init__(task, sentence_avg, distiller)
        self.sparsity_warmup_from_zero = sparsity_warmup_from_zero
        self.dead_gate_prob = dead_gate_prob
        self.freeze_mask_update = freeze_mask_update
        self._frozen = None  # weak reference to the model whose mask is frozen
        self.check_replicas = check_replicas
        self._checked_update = -1
        self.lambda2_init = lambda2_init
        self.lambda_lr = lambda_lr_scale * lr
        self.target_sparsity = target_sparsity
        self.sparsity_warmup_updates = sparsity_warmup_updates
        self.gate_lr_scale = gate_lr_scale
        # a weak reference: a module attribute would make the model a submodule of the criterion,
        # whose state_dict fairseq saves, i.e. a second copy of the model in every checkpoint
        self._configured = None

    @classmethod
    def build_criterion(cls, cfg: FlopAdaptiveLossConfig, task):
        check_ddp_backend(cfg, cls.NAME)
        try:
            check_target_sparsity(cfg.target_sparsity, "--target-sparsity")
        except ValueError as e:
            raise SystemExit(f"flop_adaptive_loss: {e}")
        if cfg.sparsity_warmup_updates < 0:
            raise SystemExit("flop_adaptive_loss: --sparsity-warmup-updates must be >= 0")
        if cfg.gate_lr_scale <= 0 or cfg.lambda_lr_scale <= 0:
            raise SystemExit("flop_adaptive_loss: --gate-lr-scale and --lambda-lr-scale must be > 0")
        if cfg.lambda2_init < 0:
            raise SystemExit("flop_adaptive_loss: --lambda2-init must be >= 0")
        try:
            check_dead_gate_prob(cfg.dead_gate_prob)
        except ValueError as e:
            raise SystemExit(f"flop_adaptive_loss: --dead-gate-prob: {e}")
        if cfg.freeze_mask_update < 0:
            raise SystemExit("flop_adaptive_loss: --freeze-mask-update must be >= 0 (0: never)")
        if cfg.freeze_mask_update and (cfg.fp16 or cfg.bf16) and not (cfg.memory_efficient_fp16
                                                                      or cfg.memory_efficient_bf16):
            raise SystemExit("flop_adaptive_loss: --freeze-mask-update does not work with --fp16/--bf16, whose "
                             "fp32 parameter copies would undo the frozen mask; use --memory-efficient-fp16 "
                             "(or --memory-efficient-bf16), --amp, or fp32")
        if cfg.freeze_mask_update and cfg.freeze_mask_update < cfg.sparsity_warmup_updates:
            raise SystemExit(f"flop_adaptive_loss: --freeze-mask-update {cfg.freeze_mask_update} comes before the "
                             f"target is reached (--sparsity-warmup-updates {cfg.sparsity_warmup_updates}); "
                             "freeze at or after the end of the warm-up")
        # the teacher loads last: a bad FLOP flag is reported without waiting for it
        distiller = Distiller.from_config(cfg, task, cls.NAME)
        return cls(task, cfg.sentence_avg, cfg.target_sparsity, cfg.sparsity_warmup_updates,
                   cfg.gate_lr_scale, cfg.lambda_lr_scale, cfg.lambda2_init, lr=float(cfg.lr[0]),
                   check_replicas=cfg.check_replicas, distiller=distiller,
                   freeze_mask_update=cfg.freeze_mask_update, dead_gate_prob=cfg.dead_gate_prob,
                   sparsity_warmup_from_zero=cfg.sparsity_warmup_from_zero)

    def _configure(self, model):
        """Applies the flags to the model's controller and gates, once per model."""
        if self._configured is not None and self._configured() is model:
            return
        lagrangian = getattr(model, "flop_lagrangian", None)
        if lagrangian is None or not gated_modules(model):
            raise SystemExit(
                "flop_adaptive_loss: the model has no FLOP gates (a compacted checkpoint or another "
                "arch); use --criterion adaptive_loss to fine-tune it"
            )
        lagrangian.configure(self.target_sparsity, self.sparsity_warmup_updates, self.lambda_lr,
                             lambda_2_init=self.lambda2_init, start_from_model=not self.sparsity_warmup_from_zero)
        for _, m in gated_modules(model):
            m.gate.set_lr_scale(self.gate_lr_scale)
        self._configured = weakref.ref(model)

    def _freeze(self, model) -> bool:
        """Whether the mask is frozen at this update; freezes it (once per model) when its update comes.

        Pinning is idempotent (the pinned gates are allocated first again, with value 1), so a run
        resumed after the freeze pins the same mask again and leaves the weights as they are."""
        if not self.freeze_mask_update or int(model.flop_lagrangian.num_updates) < self.freeze_mask_update:
            return False
        if self._frozen is None or self._frozen() is not model:
            # pinned to |log_alpha| = 30, a sampled gate is exactly 0 or 1 and gets no gradient. Every
            # component may take budget here (min_value 0), weak ones last: from now on each kept
            # one trains at full strength, so none stays weak, and the exact budget is used
            apply_allocation(model, allocate(model, target_sparsity=self.target_sparsity, min_value=0.0))
            self._frozen = weakref.ref(model)
        repin(model)
        return True

    def forward(self, model, sample, reduce=True):
        self._configure(model)
        frozen = model.training and self._freeze(model)
        if model.training and not frozen and self.dead_gate_prob > 0:
            pin_dead_gates(model, self.dead_gate_prob)
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        if not model.training:
            return loss, sample_size, logging_output
        lagrangian = model.flop_lagrangian
        if self.check_replicas and int(lagrangian.num_updates) != self._checked_update:
            self._checked_update = int(lagrangian.num_updates)  # once per update, at its first forward
            check_replicas(model, self._checked_update)
        s = expected_sparsity(model)
        # frozen: s is the allocation's, and the multipliers rest where the search left them
        penalty = s.new_zeros(()) if frozen else lagrangian(s)
        stats = sparsity_stats(model)
        w = sample_size
        logging_output.update({
            "flop_expected_sparsity": s.item() * w,
            "flop_target": lagrangian.target() * w,
            "flop_lambda1": lagrangian.lambda_1.item() * w,
            "flop_lambda2": lagrangian.lambda_2.item() * w,
            "flop_lagrangian": penalty.item() * w,
            "flop_hard_sparsity": stats.sparsity * w,
            "flop_weight": w,
        })
        for slot in model.flop_bands():
            if isinstance(slot.module, GatedModule):
                logging_output[f"flop_kept_{slot.label}"] = slot.module.kept_rank() * w
        return loss + penalty * sample_size, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        DistillAdaptiveLoss.reduce_metrics(logging_outputs)
        weight = sum(log.get("flop_weight", 0) for log in logging_outputs)
        if not weight:
            return
        keys = sorted({k for log in logging_outputs for k in log if k.startswith("flop_") and k != "flop_weight"},
                      key=lambda k: (k.startswith("flop_kept_"), len(k), k))
        for key in keys:
            value = sum(log.get(key, 0) for log in logging_outputs) / weight
            name = key[len("flop_"):]
            metrics.log_scalar(name, value, weight, round=4 if "kept" not in name else 1)
