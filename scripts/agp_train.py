#!/usr/bin/env python
"""Unstructured magnitude pruning with the AGP schedule (Zhu & Gupta 2017, "To prune,
or not to prune") of the adaptive input/softmax band weights of a dense fairseq
``transformer_lm``: the baseline ``scripts/benchmark_wikitext2.py`` compares FLOP with.

Two uses::

    # fairseq-train with the extra criterion ``agp_adaptive_loss`` registered
    python scripts/agp_train.py DATA --arch transformer_lm ... --criterion agp_adaptive_loss \\
        --agp-target-sparsity 0.9 --agp-end-update 300 --finetune-from-model dense.pt ...

    # zero the smallest weights of the trained checkpoint so that exactly the
    # target fraction of every band matrix is 0 (see below), and count them
    python scripts/agp_train.py finalize TRAINED.pt OUT.pt --sparsity 0.9 [--json]

The prunable weights are the 2-d band matrices of the adaptive input and adaptive
softmax (band embeddings ``E_i`` and projections ``P_i``; with
``--tie-adaptive-weights --tie-adaptive-proj`` the softmax shares them, so each
counts once), the same set FLOP prunes (``flop-report``'s ``prunable_params``);
the softmax's ``class_proj`` is not pruned by either.

Before every training forward the criterion sets the target sparsity

    s_t = s_f * (1 - (1 - (t - t_0) / (T - t_0))^3)     for t_0 <= t <= T, s_f after T

(``t`` counts updates of this run, ``t_0`` = ``--agp-begin-update``, ``T`` =
``--agp-end-update``) and, in each band matrix separately (Zhu & Gupta prune every
layer to the same ``s_t``), zeroes the ``round(s_t * numel)`` weights of smallest
magnitude among those not yet pruned, so a pruned weight stays pruned. The mask is
re-applied before every forward, so the model is always evaluated with it; the
optimizer step after the last forward can give masked weights a tiny value again
(Adam's momentum), which ``finalize`` removes. The parameters stay dense tensors:
the result has no fewer FLOPs and runs no faster; its parameter count is the
number of non-zero weights. Needs ``--update-freq 1`` (one forward per update).
"""

import json
import re
import sys
from dataclasses import dataclass, field

import torch

BAND_PREFIXES = ("decoder.embed_tokens.", "decoder.adaptive_softmax.")


def prunable_parameters(model):
    """(name, parameter) of every band matrix of the adaptive input/softmax, shared ones once."""
    return [
        (name, p) for name, p in model.named_parameters()
        if name.startswith(BAND_PREFIXES) and p.dim() == 2 and "class_proj" not in name
    ]


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


def _register_criterion():
    from fairseq.criterions import register_criterion
    from fairseq.criterions.adaptive_loss import AdaptiveLoss, AdaptiveLossConfig
    from fairseq.logging import metrics

    @dataclass
    class AgpAdaptiveLossConfig(AdaptiveLossConfig):
        agp_target_sparsity: float = field(default=0.5, metadata={"help": "final sparsity s_f of every band matrix"})
        agp_begin_update: int = field(default=0, metadata={"help": "update t_0 at which pruning starts"})
        agp_end_update: int = field(default=1000, metadata={"help": "update T at which s_t reaches s_f"})
        agp_frequency: int = field(default=1, metadata={"help": "recompute the mask every this many updates"})

    @register_criterion("agp_adaptive_loss", dataclass=AgpAdaptiveLossConfig)
    class AgpAdaptiveLoss(AdaptiveLoss):
        """fairseq's ``adaptive_loss`` with AGP magnitude pruning of the band matrices."""

        def __init__(self, task, sentence_avg, target, begin, end, frequency):
            super().__init__(task, sentence_avg)
            self.target, self.begin, self.end, self.frequency = target, begin, end, max(1, frequency)
            self.step = 0
            self.masks = None
            self.current = 0.0

        @classmethod
        def build_criterion(cls, cfg, task):
            if cfg.ddp_backend in {"c10d", "pytorch_ddp"}:
                raise SystemExit("agp_adaptive_loss: add --ddp-backend legacy_ddp")
            if not 0.0 <= cfg.agp_target_sparsity < 1.0:
                raise SystemExit("agp_adaptive_loss: --agp-target-sparsity must be in [0, 1)")
            return cls(task, cfg.sentence_avg, cfg.agp_target_sparsity, cfg.agp_begin_update,
                       cfg.agp_end_update, cfg.agp_frequency)

        @torch.no_grad()
        def _prune(self, model):
            params = prunable_parameters(model)
            if not params:
                raise SystemExit("agp_adaptive_loss: the model has no adaptive input/softmax band matrices")
            if self.masks is None:
                self.masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in params}
            s = agp_sparsity(self.step, self.target, self.begin, self.end)
            if s > self.current and ((self.step - self.begin) % self.frequency == 0 or self.step >= self.end):
                for name, p in params:
                    self.masks[name] = magnitude_mask(p, s, self.masks[name])
                self.current = s
            for name, p in params:
                p.mul_(self.masks[name])

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
            AdaptiveLoss.reduce_metrics(logging_outputs)
            weight = sum(log.get("agp_weight", 0) for log in logging_outputs)
            if weight:
                value = sum(log.get("agp_sparsity", 0) for log in logging_outputs) / weight
                metrics.log_scalar("agp_sparsity", value, weight, round=4)

    return AgpAdaptiveLoss


@torch.no_grad()
def finalize(in_path: str, out_path: str, sparsity: float) -> dict:
    """Zeroes exactly ``round(sparsity * numel)`` smallest weights of every band matrix of a
    checkpoint's state dict and writes it; returns the counts."""
    from fairseq import checkpoint_utils

    from flop_fairseq.cli.checkpoint_io import save_checkpoint_atomic

    state = checkpoint_utils.load_checkpoint_to_cpu(in_path)
    model_state = state["model"]
    pattern = re.compile(r"^decoder\.(embed_tokens\.embeddings\.\d+\.[01]\.weight|adaptive_softmax\.(head\.weight|"
                         r"head\.word_proj.*weight|tail\.\d+\.\d+\.weight))$")
    names, seen = [], set()
    for name, t in model_state.items():
        if pattern.match(name) and t.dim() == 2 and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            names.append(name)
    if not names:
        raise SystemExit(f"{in_path}: no adaptive input/softmax band matrices found")
    prunable = nonzero = changed = 0
    max_zeroed, min_kept = 0.0, float("inf")
    for name in names:
        w = model_state[name]
        keep = magnitude_mask(w, sparsity)
        changed += int(((w != 0) & ~keep).sum())
        if (~keep).any():
            max_zeroed = max(max_zeroed, float(w[~keep].abs().max()))
        if keep.any():
            min_kept = min(min_kept, float(w[keep].abs().min()))
        w.mul_(keep.to(w.dtype))
        prunable += w.numel()
        nonzero += int((w != 0).sum())
    state.pop("last_optimizer_state", None)
    save_checkpoint_atomic(state, out_path, in_path)
    return {"matrices": names, "prunable_params": prunable, "nonzero_prunable_params": nonzero,
            "sparsity": 1.0 - nonzero / prunable, "weights_zeroed_by_finalize": changed,
            "max_abs_zeroed": max_zeroed, "min_abs_kept": min_kept}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "finalize":
        import argparse

        parser = argparse.ArgumentParser(prog="agp_train.py finalize")
        parser.add_argument("input")
        parser.add_argument("output")
        parser.add_argument("--sparsity", type=float, required=True)
        parser.add_argument("--json", action="store_true")
        args = parser.parse_args(argv[1:])
        result = finalize(args.input, args.output, args.sparsity)
        print(json.dumps(result, indent=2) if args.json else
              f"agp finalize: {result['nonzero_prunable_params']:,} of {result['prunable_params']:,} band weights "
              f"non-zero (sparsity {result['sparsity']:.4f}); {result['weights_zeroed_by_finalize']} re-zeroed "
              f"(largest |w| {result['max_abs_zeroed']:.2e}; smallest kept {result['min_abs_kept']:.2e}); "
              f"wrote {args.output}")
        return
    from fairseq_cli.train import cli_main  # first: it sets up fairseq's log format

    _register_criterion()

    sys.argv = [sys.argv[0]] + argv
    cli_main()


if __name__ == "__main__":
    main()
