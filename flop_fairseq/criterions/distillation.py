"""Knowledge distillation from a frozen teacher through the adaptive softmax, shared by
``distill_adaptive_loss`` and ``flop_adaptive_loss`` (``--distill-teacher``).

**The KL, band by band.** An adaptive softmax factors the next-token distribution as
``p(w) = q(c(w)) r_c(w)``: ``q`` the head distribution over the shortlist words and one entry
per tail cluster, ``r_i`` the distribution inside tail cluster ``i`` (``r_0(w) = 1`` for a
shortlist word). The chain rule of the KL divergence then gives, exactly,

    KL(p_T || p_S) = KL(q_T || q_S) + sum_i q_T(cluster i) KL(r_T,i || r_S,i)

so teacher and student (same cutoffs) are compared one band at a time, never holding a
``|V|``-wide row. **Temperature** ``T`` divides the logits of each factor (the head's and each
cluster's) before its softmax: the result is still an exact KL, between the factor-wise tempered
distributions ``q~(c) r~_c(w)``; ``T = 1`` is the exact KL of the models' own distributions. (A
whole-vocabulary temperature does not factor through the clusters.)

**Memory.** In training (:func:`adaptive_kl_sum`) tokens go through in chunks of
``chunk_tokens`` and each (chunk, band) term's gradients are computed as soon as the term is, in
the forward pass, so no more than one band's logits for one chunk, teacher's and student's, exist
at any time, and nothing is recomputed in the backward pass. What is kept for it is the gradient
w.r.t. the student's hidden states and one gradient buffer (float32 for fp16/bf16) per parameter
of the student's softmax.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.criterions.adaptive_loss import AdaptiveLossConfig
from torch import nn


@dataclass
class DistillationConfig(AdaptiveLossConfig):
    distill_teacher: Optional[str] = field(
        default=None,
        metadata={"help": "fairseq checkpoint of a frozen teacher (dense transformer_lm, gated or compact "
                          "FLOP model) with the task's dictionary and the student's adaptive-softmax cutoffs; "
                          "adds its KL to the loss (none: no distillation)"},
    )
    distill_weight: float = field(
        default=0.5,
        metadata={"help": "a in [0, 1]: loss = (1 - a) * task loss + a * T^2 * KL(teacher || student)"},
    )
    distill_temperature: float = field(
        default=1.0,
        metadata={"help": "T > 0, dividing the head's and each tail cluster's logits of both models "
                          "(1: the exact KL of the two distributions)"},
    )
    distill_chunk_tokens: int = field(
        default=1024,
        metadata={"help": "tokens per chunk of the band-by-band KL: memory holds one band's logits for "
                          "this many tokens at a time (0: the whole batch in one chunk)"},
    )


# ---------------------------------------------------------------------------------------------
# the KL through two adaptive softmaxes


def softmax_parts(asm: nn.Module) -> Tuple[Callable, Callable, Callable]:
    """``(dropout, head, tail)`` of fairseq's ``AdaptiveSoftmax`` or the project's
    ``LowRankAdaptiveSoftmax``: ``head(x)`` ``(N, d) -> (N, c_0 + n_clusters)``, ``tail(i, x)``
    ``(N, d) -> (N, |V_{i+1}|)``; ``dropout`` is what the softmax's own forward applies to its input
    (a no-op in eval mode)."""
    drop = asm.dropout_module if hasattr(asm, "dropout_module") else asm.dropout
    if isinstance(asm.tail, nn.ModuleList):  # fairseq: one Sequential(proj, dropout, out) per cluster
        return drop, asm.head, lambda i, x: asm.tail[i](x)
    return drop, asm.head, asm.tail


def _wide(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 in float32 (softmax, KL and summed gradients lose too much in half precision)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _rows_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float):
    """``(n, K)`` logits each -> ``(KL(softmax(t/T) || softmax(s/T)) per row (n,), teacher log-probs (n, K))``."""
    teacher_logits, student_logits = _wide(teacher_logits), _wide(student_logits)
    if temperature != 1.0:  # a full pass over the band's logits each, saved at T = 1
        teacher_logits, student_logits = teacher_logits / temperature, student_logits / temperature
    log_t = F.log_softmax(teacher_logits, dim=-1)
    log_s = F.log_softmax(student_logits, dim=-1)
    return F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1), log_t


def _band_terms(student_asm: nn.Module, teacher_asm: nn.Module, hs: torch.Tensor, ht: torch.Tensor,
                temperature: float) -> Iterator[torch.Tensor]:
    """Yields, one band at a time, the KL terms ``(n,)`` of the ``n`` rows ``hs`` ``(n, d_S)`` (already
    through the student softmax's dropout) and ``ht`` ``(n, d_T)``: the head's, then each tail cluster's
    weighted by the teacher's (tempered) probability of the cluster. They sum to the KL."""
    _, s_head, s_tail = softmax_parts(student_asm)
    _, t_head, t_tail = softmax_parts(teacher_asm)
    n_words = student_asm.cutoff[0]
    with torch.no_grad():  # the teacher is frozen
        t_logits = t_head(ht)
    kl, log_t = _rows_kl(t_logits, s_head(hs), temperature)
    cluster_prob = log_t[:, n_words:].detach().exp()
    del t_logits, log_t  # one band's logits at a time
    yield kl
    for i in range(len(student_asm.cutoff) - 1):
        with torch.no_grad():
            t_logits = t_tail(i, ht)
        yield cluster_prob[:, i] * _rows_kl(t_logits, s_tail(i, hs), temperature)[0]


def _check_cutoffs(student_asm: nn.Module, teacher_asm: nn.Module) -> None:
    if list(student_asm.cutoff) != list(teacher_asm.cutoff):
        raise ValueError(f"teacher cutoffs {list(teacher_asm.cutoff)} differ from the student's "
                         f"{list(student_asm.cutoff)}")


def _chunks(n: int, chunk_tokens: int) -> List[slice]:
    size = int(chunk_tokens) if chunk_tokens > 0 else max(1, n)
    return [slice(lo, lo + size) for lo in range(0, n, size)]


def adaptive_kl(student_asm: nn.Module, student_hidden: torch.Tensor, teacher_asm: nn.Module,
                teacher_hidden: torch.Tensor, temperature: float = 1.0, chunk_tokens: int = 1024) -> torch.Tensor:
    """Per-token ``KL(p_T || p_S)`` over the whole vocabulary, ``(N,)``, band by band (module docstring).

    ``student_hidden`` ``(N, d_S)`` and ``teacher_hidden`` ``(N, d_T)`` are the inputs of the two
    adaptive softmaxes at the same ``N`` positions (padding already removed); the two softmaxes must
    have the same cutoffs. The student's softmax dropout applies as in its own forward; the teacher
    contributes no gradient. Plain autograd: with gradients on, every band's logits stay alive for
    the backward pass; training uses :func:`adaptive_kl_sum`, which keeps one band's."""
    _check_cutoffs(student_asm, teacher_asm)
    hs = softmax_parts(student_asm)[0](student_hidden)  # one dropout mask for all bands, as in forward
    ht = teacher_hidden.detach()
    per_chunk = [sum(_band_terms(student_asm, teacher_asm, hs[c], ht[c], temperature))
                 for c in _chunks(hs.size(0), chunk_tokens)]
    return torch.cat(per_chunk) if per_chunk else student_hidden.new_zeros(0)


class _FusedKLSum(torch.autograd.Function):
    """The summed KL whose gradients are computed in the forward pass, band by band and chunk by
    chunk, so no band's logits outlive their own step (what fused linear + cross-entropy kernels do).
    Forward keeps the gradient w.r.t. the student's hidden states ``(N, d_S)`` and one buffer per
    parameter of the student's softmax (float32 for a half-precision model); backward scales them by
    the incoming gradient."""

    @staticmethod
    def forward(ctx, hs, ht, student_asm, teacher_asm, temperature, chunk_tokens, *params):
        grad_hs = torch.zeros_like(hs)
        grad_params = [None] * len(params)
        total = torch.zeros((), dtype=torch.promote_types(hs.dtype, torch.float32), device=hs.device)
        for c in _chunks(hs.size(0), chunk_tokens):
            with torch.enable_grad():
                hs_c = hs[c].detach().requires_grad_(True)
                for term in _band_terms(student_asm, teacher_asm, hs_c, ht[c], temperature):
                    term = term.sum()
                    # this band's graph is freed here, before the next band's logits exist
                    grads = torch.autograd.grad(term, (hs_c, *params), allow_unused=True)
                    total += term.detach()
                    grad_hs[c] += grads[0]
                    for j, g in enumerate(grads[1:]):
                        if g is not None:
                            grad_params[j] = _wide(g) if grad_params[j] is None else grad_params[j].add_(g)
        ctx.grads = (grad_hs, grad_params)
        ctx.param_dtypes = [p.dtype for p in params]
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_hs, grad_params = ctx.grads
        del ctx.grads
        params = [None if g is None else (g * grad_out).to(dtype) for g, dtype in zip(grad_params, ctx.param_dtypes)]
        return (grad_hs * grad_out.to(grad_hs.dtype), None, None, None, None, None, *params)


def adaptive_kl_sum(student_asm: nn.Module, student_hidden: torch.Tensor, teacher_asm: nn.Module,
                    teacher_hidden: torch.Tensor, temperature: float = 1.0, chunk_tokens: int = 1024) -> torch.Tensor:
    """Scalar: :func:`adaptive_kl` summed over the ``N`` rows. With gradients on, memory holds one band's
    logits for one chunk of ``chunk_tokens`` tokens (0: all ``N``) at a time, plus the gradients of the
    student's hidden states and of its softmax's parameters (at least float32); nothing is
    recomputed. The gradients reach the softmax's own parameters (``student_asm.parameters()``, shared
    ones included) and, through ``student_hidden``, the rest of the student."""
    _check_cutoffs(student_asm, teacher_asm)
    hs = softmax_parts(student_asm)[0](student_hidden)
    params = [p for p in student_asm.parameters() if p.requires_grad]
    if not (torch.is_grad_enabled() and (hs.requires_grad or params)):
        return adaptive_kl(student_asm, student_hidden, teacher_asm, teacher_hidden, temperature, chunk_tokens).sum()
    return _FusedKLSum.apply(hs, teacher_hidden.detach(), student_asm, teacher_asm, temperature, chunk_tokens,
                             *params)


# ---------------------------------------------------------------------------------------------
# the teacher and the loss term


def check_distill_flags(cfg: DistillationConfig, name: str) -> None:
    """One line and exit for a flag outside its range (before anything is loaded)."""
    if not 0.0 <= cfg.distill_weight <= 1.0:
        raise SystemExit(f"{name}: --distill-weight must be in [0, 1], got {cfg.distill_weight}")
    if not cfg.distill_temperature > 0:
        raise SystemExit(f"{name}: --distill-temperature must be > 0, got {cfg.distill_temperature}")
    if cfg.distill_chunk_tokens < 0:
        raise SystemExit(f"{name}: --distill-chunk-tokens must be >= 0, got {cfg.distill_chunk_tokens}")


def load_teacher(path: str, vocab_size: int, name: str) -> nn.Module:
    """The frozen teacher of checkpoint ``path`` (eval mode, no gradients, on the CPU in float32):
    one line and exit for a missing or unreadable file, an arch the project cannot build, no adaptive
    softmax, or a vocabulary of another size than the task's (``vocab_size``)."""
    from ..tools.checkpoint import CheckpointError, load_any_model

    try:
        _, teacher, _ = load_any_model(path)
    except CheckpointError as e:
        raise SystemExit(f"{name}: --distill-teacher {e}")
    asm = getattr(teacher.decoder, "adaptive_softmax", None)
    if asm is None:
        raise SystemExit(f"{name}: --distill-teacher {path}: the teacher has no adaptive softmax")
    if asm.vocab_size != vocab_size:
        raise SystemExit(f"{name}: --distill-teacher {path}: the teacher has {asm.vocab_size:,} types, the "
                         f"task's dictionary {vocab_size:,}: teacher and student need the same dictionary")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Distiller:
    """The frozen teacher and the distillation term of a criterion.

    A plain object, not an ``nn.Module``: the teacher's weights are no criterion parameters, so
    fairseq never puts them in the optimizer, never saves them in a checkpoint (it saves the
    criterion's ``state_dict``) and never switches them to training mode. :meth:`follow` moves the
    teacher to the student's device and dtype instead."""

    def __init__(self, teacher: nn.Module, weight: float, temperature: float, chunk_tokens: int, name: str):
        self.teacher = teacher
        self.weight = weight
        self.temperature = temperature
        self.chunk_tokens = chunk_tokens
        self.name = name
        self._followed = None  # (student, device, dtype) the teacher was last matched to
        self._last_start: Optional[float] = None
        self._last_teacher_s = 0.0

    @classmethod
    def from_config(cls, cfg: DistillationConfig, task, name: str) -> Optional["Distiller"]:
        """The distiller the flags ask for, or None without ``--distill-teacher``."""
        check_distill_flags(cfg, name)
        if not cfg.distill_teacher:
            return None
        teacher = load_teacher(cfg.distill_teacher, len(task.target_dictionary), name)
        return cls(teacher, cfg.distill_weight, cfg.distill_temperature, cfg.distill_chunk_tokens, name)

    def follow(self, student: nn.Module) -> None:
        """Puts the teacher on the student's device and in its dtype; checks the cutoffs once per student."""
        p = next(student.parameters())
        key = (student, p.device, p.dtype)
        if self._followed == key:
            return
        s_cut = list(student.decoder.adaptive_softmax.cutoff)
        t_cut = list(self.teacher.decoder.adaptive_softmax.cutoff)
        if s_cut != t_cut:
            raise SystemExit(f"{self.name}: the teacher's adaptive softmax cutoffs {t_cut} differ from the "
                             f"student's {s_cut}: the band-by-band KL needs the same bands")
        self.teacher.to(device=p.device, dtype=p.dtype)
        self._followed = key

    def _teacher_hidden(self, sample) -> torch.Tensor:
        """The teacher's adaptive-softmax input ``(B, T, d_T)``, timed (synchronized on a GPU, so the
        time is the teacher's and not whatever the GPU had queued)."""
        cuda = next(self.teacher.parameters()).is_cuda
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        self.teacher.eval()
        with torch.no_grad():
            hidden = self.teacher(**sample["net_input"])[0]
        if cuda:
            torch.cuda.synchronize()
        self._last_teacher_s += time.perf_counter() - start
        return hidden

    def kl_sum(self, model, sample, net_output, padding_idx: int) -> torch.Tensor:
        """Scalar: ``KL(p_T || p_S)`` summed over the sample's non-padding target positions (nats)."""
        self.follow(model)
        keep = model.get_targets(sample, net_output).reshape(-1).ne(padding_idx)
        student_hidden = net_output[0].reshape(-1, net_output[0].size(-1))[keep]
        teacher_out = self._teacher_hidden(sample)
        teacher_hidden = teacher_out.reshape(-1, teacher_out.size(-1))[keep]
        return adaptive_kl_sum(model.decoder.adaptive_softmax, student_hidden,
                               self.teacher.decoder.adaptive_softmax, teacher_hidden, self.temperature,
                               self.chunk_tokens)

    def add_to_loss(self, model, sample, net_output, padding_idx: int, task_loss: torch.Tensor,
                    logging_output: dict) -> torch.Tensor:
        """``(1 - a) task_loss + a T^2 KL`` (``T^2`` keeps the KL's gradient at the task loss's scale
        whatever ``T``, Hinton et al. 2015); adds ``distill_kl`` and the timing to ``logging_output``."""
        now = time.perf_counter()
        # the time since the previous training forward is one whole training step (forward, backward,
        # optimizer), of which the teacher's forward in that step took _last_teacher_s
        step_s = 0.0 if self._last_start is None else now - self._last_start
        teacher_s = self._last_teacher_s if self._last_start is not None else 0.0
        self._last_start, self._last_teacher_s = now, 0.0
        kl = self.kl_sum(model, sample, net_output, padding_idx)
        logging_output.update({"distill_kl": kl.item(), "distill_teacher_s": teacher_s, "distill_step_s": step_s})
        a, t = self.weight, self.temperature
        return (1.0 - a) * task_loss + (a * t * t) * kl.to(task_loss.dtype)

    def pause(self) -> None:
        """Called on validation forwards: the next training step's time must not include validation."""
        self._last_start = None


def reduce_distill_metrics(logging_outputs, log_scalar) -> None:
    """Logs ``distill_kl`` (bits per target token, like ``loss``) and ``distill_teacher_share`` (the
    teacher forward's fraction of the training steps' wall time) when the outputs have them."""
    if not any("distill_kl" in log for log in logging_outputs):
        return
    ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
    kl = sum(log.get("distill_kl", 0.0) for log in logging_outputs)
    if ntokens:
        log_scalar("distill_kl", kl / ntokens / math.log(2), ntokens, round=4)
    step_s = sum(log.get("distill_step_s", 0.0) for log in logging_outputs)
    if step_s > 0:
        teacher_s = sum(log.get("distill_teacher_s", 0.0) for log in logging_outputs)
        log_scalar("distill_teacher_share", teacher_s / step_s, step_s, round=3)
