"""Data-aware factorization of a FLOP model: calibration statistics collected on the model itself
(at full rank with gates bypassed it computes the dense function), then every group refactored in
the whitened basis of :mod:`.whitening`, its rank components ordered by what dropping them costs.

A band's criterion (``N`` calibration tokens, ``c_w`` the count of word ``w``):

- word weights ``f_w = (c_w + 1) / (N + |V|)`` (add-one, so an unseen word keeps a weight);
- input use, ``M_in = A B_in^T`` (row ``w`` is ``w``'s embedding): the expected squared error of the
  embeddings the model reads, ``E_in = sum_w f_w ||ΔM_in[w]||^2 = ||F^1/2 ΔM_in||_F^2``;
- output use, ``M_out = A B_out^T`` (logits ``M_out h``), ``H = E[h h^T] = L_H L_H^T`` over the
  positions that score the band (every position for the head band, those whose target falls in
  the band for a tail cluster): ``E_out = sum_w f_w E_h[(ΔM_out[w] h)^2] = ||F^1/2 ΔM_out L_H||_F^2``,
  the logits' squared error with each word weighted by its average probability (the loss's
  second-order term ``δ^T diag(p) δ`` with ``p(w|h)`` replaced by its mean ``f_w``);
- a band with both uses has ONE basis and gate vector, so the criterion is the sum of the two
  relative errors, ``J = E_in / ||F^1/2 M_in||^2 + E_out / ||F^1/2 M_out L_H||^2``: the metrics
  ``G_in = I / n_in^1/2`` and ``G_out = L_H / n_out^1/2`` on the stacked ``[B_in; B_out]``, or, with a
  tied projection (``B_out = B_in``), the single ``G = chol(I / n_in + H / n_out)``.
  ``s_i^2`` of the whitened SVD is then the part of ``J`` that dropping component ``i`` costs.

A layer matrix's criterion is its output error on its calibration inputs (:func:`whitened_linear`).
Each group reports the relative error of keeping half its rank in the basis it had before (the
plain SVD of the weights, after ``flop-convert``'s initialisation) and in the whitened one, and its per-component relative losses ``s_i^2 / sum s^2`` (largest first).
"""

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Tuple

import torch

from .counting import gates_bypassed
from .svd import _pad
from .whitening import cholesky_factor, dropped_error, whitened_linear, whitened_shared_factors


@dataclass
class CalibrationStats:
    """What the calibration saw: ``tokens`` positions, ``word_counts`` (``|V|``, of the input tokens),
    per output band label ``(sum of h h^T (d x d), positions)``, per layer matrix name
    ``(sum of x x^T (in x in), rows)``."""

    tokens: int
    word_counts: torch.Tensor
    hidden: Dict[str, Tuple[torch.Tensor, int]] = field(default_factory=dict)
    inputs: Dict[str, Tuple[torch.Tensor, int]] = field(default_factory=dict)


@dataclass
class GroupReport:
    """One refactored group: ``name``, ``rank``, relative error at half the rank in the plain and the
    whitened basis, ``losses`` (``rank``, relative, summing to 1, non-increasing) and ``share``: what
    the group's relative losses weigh against other groups' (a band: the share of the calibration
    tokens that are its words, add-one; a layer matrix: 1), for an allocation across groups."""

    name: str
    rank: int
    plain_half: float
    whitened_half: float
    losses: torch.Tensor
    share: float = 1.0


def _accumulate(store: dict, key: str, x: torch.Tensor) -> None:
    x = x.reshape(-1, x.shape[-1]).float()
    moment = x.t() @ x
    if key in store:
        s, n = store[key]
        store[key] = (s.add_(moment), n + x.shape[0])
    else:
        store[key] = (moment, x.shape[0])


@torch.no_grad()
def collect_statistics(model, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                       features: Callable[[torch.Tensor], torch.Tensor], num_words: int) -> CalibrationStats:
    """Runs ``batches`` of ``(tokens (B, T), next tokens (B, T))`` through ``model`` (a
    :class:`PrunableModel` at full rank; eval mode, gates bypassed) and collects
    :class:`CalibrationStats`. ``features(tokens)`` -> the hidden states ``(B, T, d)`` the adaptive
    softmax scores; the layer matrices' inputs come from forward pre-hooks. The moments are float32
    sums (the factorization is exact whatever they are; they only order the components)."""
    stats = CalibrationStats(0, torch.zeros(num_words, dtype=torch.float64))
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: _accumulate(stats.inputs, name, args[0]))
             for name, m in model.flop_layer_matrices()]
    outputs = [s for s in model.flop_bands() if s.module.has_output]
    model.train()
    model.eval()  # a mode switch also clears a segment memory (Transformer-XL): the stream starts fresh
    try:
        with gates_bypassed(model):
            for tokens, targets in batches:
                stats.tokens += tokens.numel()
                stats.word_counts += torch.bincount(tokens.reshape(-1).cpu(), minlength=num_words).double()
                h = features(tokens)
                h = h.reshape(-1, h.shape[-1])
                t = targets.reshape(-1)
                for slot in outputs:
                    lo, hi = slot.vocab
                    # the head scores every position; a tail cluster only where the target is its word
                    rows = h if lo == 0 else h[(t >= lo) & (t < hi)]
                    _accumulate(stats.hidden, slot.label, rows)
    finally:
        for hook in hooks:
            hook.remove()
    return stats


def _moment(store: dict, key: str, dim: int, device) -> torch.Tensor:
    """The mean second moment, or the identity where nothing was seen (no evidence: isotropic)."""
    if key not in store or store[key][1] == 0:
        return torch.eye(dim, dtype=torch.float64, device=device)
    s, n = store[key]
    return s.double().to(device) / n


def _report(name: str, rank: int, sv: torch.Tensor, plain_tail: float) -> GroupReport:
    energy = sv.pow(2)
    total = float(energy.sum())
    half = rank // 2
    losses = _pad((energy / total if total > 0 else energy)[None], rank)[0].float()
    return GroupReport(name, rank, plain_tail / total if total > 0 else 0.0,
                       float(energy[half:].sum()) / total if total > 0 else 0.0, losses)


@torch.no_grad()
def refactor_linear(name: str, module, stats: CalibrationStats) -> GroupReport:
    """Replaces ``module``'s ``P``, ``Q`` (a :class:`GatedLowRankLinear`) by the whitened factors of
    their product, ``P Q`` unchanged."""
    weight = module.left.double() @ module.right.double()
    chol = cholesky_factor(_moment(stats.inputs, name, module.in_features, weight.device))
    left, right, sv = whitened_linear(weight, chol)
    # the error of keeping half the components in the basis the module had (flop-convert's plain SVD)
    plain_tail = dropped_error(module.left, chol.t() @ module.right.double().t(), module.rank // 2)
    module.left.copy_(_pad(left, module.rank).to(module.left.dtype))
    module.right.copy_(_pad(right.t(), module.rank).t().to(module.right.dtype))
    return _report(name, module.rank, sv, plain_tail)


def band_metrics(band, f: torch.Tensor, hidden: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """``(projections B_j, metrics G_j)`` of a band's criterion (the module docstring) for word
    weights ``f`` and output second moment ``hidden``."""
    a = band.emb.double() * f.sqrt()[:, None]
    gram = a.t() @ a
    b_in = None if band.in_proj is None else band.in_proj.double()
    b_out = band.output_proj.double() if band.has_output else None
    if b_in is not None:
        n_in = float((gram * (b_in.t() @ b_in)).sum()) or 1.0
        eye = torch.eye(b_in.shape[0], dtype=torch.float64, device=b_in.device)
    if b_out is not None:
        n_out = float((gram * (b_out.t() @ hidden @ b_out)).sum()) or 1.0
    if b_out is None:
        return [b_in], [eye / n_in ** 0.5]
    if b_in is None:
        return [b_out], [cholesky_factor(hidden) / n_out ** 0.5]
    if band.tie_proj:
        return [b_in], [cholesky_factor(eye / n_in + hidden / n_out)]
    return [b_in, b_out], [eye / n_in ** 0.5, cholesky_factor(hidden) / n_out ** 0.5]


@torch.no_grad()
def refactor_band(slot, stats: CalibrationStats) -> GroupReport:
    """Replaces a band's ``A``, ``B_in``, ``B_out`` by the whitened factors of its maps (unchanged)."""
    band = slot.module
    lo, hi = slot.vocab
    counts = stats.word_counts[lo:hi].to(band.emb.device)
    f = (counts + 1.0) / (stats.tokens + stats.word_counts.numel())
    dim = band.output_dim if band.has_output else band.dim
    hidden = _moment(stats.hidden, slot.label, dim, band.emb.device)
    projs, metrics = band_metrics(band, f, hidden)
    a, new_projs, sv = whitened_shared_factors(band.emb, projs, metrics, f)
    x = band.emb.double() * f.sqrt()[:, None]
    y = torch.cat([g.t() @ b for b, g in zip(projs, metrics)], dim=0)
    plain_tail = dropped_error(x, y, band.rank // 2)
    band.emb.copy_(_pad(a, band.rank).to(band.emb.dtype))
    names = ["in_proj"] if band.in_proj is not None else []
    if band.has_output and not band.tie_proj:
        names.append("out_proj")
    for name, b in zip(names, new_projs):
        getattr(band, name).copy_(_pad(b, band.rank).to(band.emb.dtype))
    report = _report(slot.label, band.rank, sv, plain_tail)
    report.share = float(f.sum())
    return report


def refactor_model(model, stats: CalibrationStats) -> List[GroupReport]:
    """Every band, then every layer matrix, of ``model`` refactored in its whitened basis."""
    return ([refactor_band(slot, stats) for slot in model.flop_bands()]
            + [refactor_linear(name, m, stats) for name, m in model.flop_layer_matrices()])


@torch.no_grad()
def init_gates_from_losses(groups, slope: float, keep_prob=None) -> None:
    """Initial gates that know what each component costs: for every ``(module, losses)`` in ``groups``
    (a gated group of rank ``n`` and its relative losses ``l_i``), ``logit P(z_i > 0) = b + slope *
    log(l_i / l_0)``, with the shift ``b`` (bisection) such that ``E[L0] = sum_i P(z_i > 0)`` is
    ``n p``, ``p`` = ``keep_prob`` or :meth:`HardConcrete.dense_keep_prob`: the expected size is the
    default start's (the dense one), the eval mask keeps every component, and the components that
    cost least start the closest to being dropped (their eval values may start below 1)."""
    for module, losses in groups:
        gate = module.gate
        p = gate.dense_keep_prob(gate.n) if keep_prob is None else float(keep_prob)
        ell = losses.double().clamp_min(1e-30)
        rel = slope * (ell / ell[0]).log()
        lo, hi = -60.0, 60.0
        for _ in range(100):
            mid = (lo + hi) / 2
            if float(torch.sigmoid(mid + rel).sum()) < gate.n * p:
                lo = mid
            else:
                hi = mid
        # the logit of P(z > 0) is log_alpha - beta log(-l / r)
        log_alpha = (hi + rel) + gate.temperature * math.log(-gate.limit_l / gate.limit_r)
        gate.log_alpha_raw.copy_(((log_alpha.to(gate.log_alpha_raw) - gate.log_alpha_offset) / gate.lr_scale))
