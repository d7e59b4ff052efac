"""Unstructured magnitude pruning with the AGP schedule (Zhu & Gupta 2017, "To prune, or not
to prune") of the band matrices of a dense fairseq model: the unstructured baseline.

The prunable weights are the dense model's band matrices as its FLOP model lists them
(``dense_prunable_tensors``: the adaptive input/softmax embeddings and projections, a tied
one once; the softmax's ``class_proj`` is pruned by neither), the set FLOP prunes; with
``--agp-layers`` also the weight matrices of every decoder layer's attention and FFN (the
set ``--flop-decoder-layers`` adds; biases are pruned by neither).

Before every training forward the criterion ``agp_adaptive_loss`` sets the target sparsity

    s_t = s_f * (1 - (1 - (t - t_0) / (T - t_0))^3)     for t_0 <= t <= T, s_f after T

(``t`` counts updates of this run, ``t_0`` = ``--agp-begin-update``, ``T`` =
``--agp-end-update``) and, in each matrix separately (Zhu & Gupta prune every layer to the
same ``s_t``), zeroes the ``round(s_t * numel)`` weights of smallest magnitude among those
not yet pruned, so a pruned weight stays pruned. The mask is re-applied before every
forward; the optimizer step after the last forward can give masked weights a tiny value
again (Adam's momentum), which :func:`finalize` removes. The tensors stay dense: no fewer
FLOPs, no speed-up; the parameter count is the number of non-zero weights. Needs
``--update-freq 1`` (one forward per update). ``--distill-teacher`` etc. add the distillation
term of ``distill_adaptive_loss`` (the criterion extends it), so AGP gets the same option as
FLOP and the structured baselines.
"""

from dataclasses import dataclass, field

import torch


def agp_sparsity(step: int, final: float, begin: int, end: int) -> float:
    """Zhu & Gupta's cubic schedule ``s_t``."""
    if step < begin:
        return 0.0
    if end <= begin or step >= end:
        return final
    return final * (1.0 - (1.0 - (step - begin) / (end - begin)) ** 3)


@torch.no_grad()
def magnitude_mask(weight: torch.Tensor, sparsity: float, mask: torch.Tensor = None) -> torch.Tensor:
    """Boolean keep-mask zeroing the ``round(sparsity * numel)`` smallest ``|weight|``
    (already-masked entries count as 0, so they are pruned first)."""
    w = weight.detach().abs().flatten().float()
    if mask is not None:
        w = w * mask.flatten()
    k = int(round(sparsity * w.numel()))
    keep = torch.ones_like(w, dtype=torch.bool)
    if k > 0:
        # stable: ties (e.g. the zeros of already-pruned weights) resolved by index
        order = torch.sort(w, stable=True).indices
        keep[order[:k]] = False
    return keep.view_as(weight)


def dense_prunable(model) -> list:
    """The band matrices of a dense fairseq model, from the FLOP model that converts its arch."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    from ..models import FLOP_MODELS

    for cls in FLOP_MODELS:
        if any(ARCH_MODEL_REGISTRY.get(arch) is type(model) for arch in cls.DENSE_ARCHS):
            tensors = cls.dense_prunable_tensors(model)
            if tensors:
                return tensors
    raise SystemExit(f"agp: {type(model).__name__} has no band matrices a FLOP model knows to prune")


def layer_matrices(model) -> list:
    """The attention/FFN weight matrices of every decoder layer, those ``--flop-decoder-layers``
    factorizes (the model's own list, so both prune the same set)."""
    from ..models.transformer_lm.model import LAYER_MATRICES

    return [layer.get_submodule(path).weight for layer in model.decoder.layers for path in LAYER_MATRICES]


def agp_prunable(model, layers: bool) -> list:
    """What AGP prunes: the band matrices, and with ``layers`` the layer matrices too."""
    return dense_prunable(model) + (layer_matrices(model) if layers else [])


def register_criterion():
    """Registers ``agp_adaptive_loss`` (fairseq's ``adaptive_loss`` plus the pruning) with fairseq."""
    from fairseq.criterions import register_criterion as register
    from fairseq.logging import metrics

    from ..criterions.distill_adaptive_loss import DistillAdaptiveLoss, check_ddp_backend
    from ..criterions.distillation import DistillationConfig, Distiller

    @dataclass
    class AgpAdaptiveLossConfig(DistillationConfig):
        agp_target_sparsity: float = field(default=0.5, metadata={"help": "final sparsity s_f of every band matrix"})
        agp_begin_update: int = field(default=0, metadata={"help": "update t_0 at which pruning starts"})
        agp_end_update: int = field(default=1000, metadata={"help": "update T at which s_t reaches s_f"})
        agp_frequency: int = field(default=1, metadata={"help": "recompute the mask every this many updates"})
        agp_layers: bool = field(default=False, metadata={
            "help": "also prune the attention/FFN weight matrices of every decoder layer (each to s_t)"})

    @register("agp_adaptive_loss", dataclass=AgpAdaptiveLossConfig)
    class AgpAdaptiveLoss(DistillAdaptiveLoss):
        """fairseq's ``adaptive_loss`` (plus distillation with ``--distill-teacher``) with AGP
        magnitude pruning of the band matrices (and the layer matrices with ``--agp-layers``)."""

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
            if not 0.0 <= cfg.agp_target_sparsity < 1.0:
                raise SystemExit("agp_adaptive_loss: --agp-target-sparsity must be in [0, 1)")
            return cls(task, cfg.sentence_avg, cfg.agp_target_sparsity, cfg.agp_begin_update,
                       cfg.agp_end_update, cfg.agp_frequency, cfg.agp_layers,
                       Distiller.from_config(cfg, task, cls.NAME))

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

    return AgpAdaptiveLoss


@torch.no_grad()
def finalize(in_path: str, out_path: str, sparsity: float, layers: bool = False) -> dict:
    """Zeroes exactly ``round(sparsity * numel)`` smallest weights of every band matrix (and
    with ``layers`` every layer matrix) of a trained checkpoint, writes it without the
    optimizer state and returns the counts."""
    from ..core import count_params
    from ..tools.checkpoint import load_any_model, save_checkpoint_atomic

    state, model, prunable = load_any_model(in_path)
    if not prunable:
        raise SystemExit(f"agp finalize: {in_path}: not a dense model with band matrices")
    if layers:
        prunable = prunable + layer_matrices(model)
    changed = 0
    max_zeroed, min_kept = 0.0, float("inf")
    for w in prunable:
        keep = magnitude_mask(w, sparsity)
        changed += int(((w != 0) & ~keep).sum())
        if (~keep).any():
            max_zeroed = max(max_zeroed, float(w[~keep].abs().max()))
        if keep.any():
            min_kept = min(min_kept, float(w[keep].abs().min()))
        w.mul_(keep.to(w.dtype))
    # write the masked values into the checkpoint's own tensors (tied names share one), so the
    # file keeps fairseq's layout
    ids = {id(p) for p in prunable}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in ids:
            state["model"][name].copy_(p)
    counts = count_params(model, prunable)
    state.pop("last_optimizer_state", None)
    save_checkpoint_atomic(state, out_path, in_path)
    return {"matrices": names, "prunable_params": counts.prunable_params,
            "nonzero_prunable_params": counts.nonzero_prunable_params,
            "sparsity": 1.0 - counts.nonzero_prunable_params / counts.prunable_params,
            "weights_zeroed_by_finalize": changed, "max_abs_zeroed": max_zeroed, "min_abs_kept": min_kept}


def main(argv=None) -> None:
    """``agp_train.py DATA ...fairseq-train args`` or ``agp_train.py finalize IN OUT --sparsity S [--json]``."""
    import json
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "finalize":
        import argparse

        from ..tools.checkpoint import CheckpointError, quiet_logging

        parser = argparse.ArgumentParser(prog="agp_train.py finalize")
        parser.add_argument("input")
        parser.add_argument("output")
        parser.add_argument("--sparsity", type=float, required=True)
        parser.add_argument("--layers", action="store_true", help="the layer matrices too (--agp-layers)")
        parser.add_argument("--json", action="store_true")
        args = parser.parse_args(argv[1:])
        if not 0.0 <= args.sparsity < 1.0:
            parser.error("--sparsity must be in [0, 1)")
        quiet_logging()
        try:
            result = finalize(args.input, args.output, args.sparsity, args.layers)
        except CheckpointError as e:
            raise SystemExit(f"agp finalize: {e}")
        print(json.dumps(result, indent=2) if args.json else
              f"agp finalize: {result['nonzero_prunable_params']:,} of {result['prunable_params']:,} weights of the "
              f"pruned matrices non-zero (sparsity {result['sparsity']:.4f}); "
              f"{result['weights_zeroed_by_finalize']} re-zeroed "
              f"(largest |w| {result['max_abs_zeroed']:.2e}; smallest kept {result['min_abs_kept']:.2e}); "
              f"wrote {args.output}")
        return
    from fairseq_cli.train import cli_main  # first: it sets up fairseq's log format

    register_criterion()
    sys.argv = [sys.argv[0]] + argv
    cli_main()
