"""Whitened ("data-aware") factorizations: every rank component's singular value measures what
dropping it costs on the data, not the weights' Frobenius norm (SVD-LLM, Wang et al. 2024).

Layer matrix ``W`` (``out x in``) with inputs ``x`` of second moment ``C = E[x x^T] = L L^T``:
``E ||(W - W') x||^2 = ||(W - W') L||_F^2``, so the SVD ``W L = U S V^T`` gives factors
``P = U S^1/2`` and ``Q = S^1/2 V^T L^-1`` with ``P Q = W`` exactly, and dropping component ``i``
costs exactly ``s_i^2`` of output error (the errors of several dropped components add).

A band: word factor ``A`` (``|V| x r``) shared by maps ``M_j = A B_j^T`` (the input embedding, the
output scores), each error measured as ``||F^1/2 (M_j - M_j') G_j||_F^2`` with word weights ``F``
(diagonal) and a column metric ``G_j``. One SVD of the stacked whitened form
``F^1/2 A [G_1^T B_1; G_2^T B_2 ...]^T = U S V^T`` orders the shared components by the sum of the
errors: ``A' = F^-1/2 U S^1/2``, ``[G_j^T B_j'] = V S^1/2`` (``B_j' = G_j^-T`` of its block), the
product of every map unchanged. (:mod:`.data_aware` says which ``F`` and ``G_j`` a band gets.)
"""

from typing import List, Sequence, Tuple

import torch

from .svd import svd_of_product


def cholesky_factor(moment: torch.Tensor, rel_ridge: float = 1e-6) -> torch.Tensor:
    """Lower-triangular ``L`` (float64) with ``L L^T = C + eps I``, ``C`` (``n x n``) a second moment:
    ``eps`` is ``rel_ridge`` times the mean of ``diag(C)`` (1 for a zero ``C``), raised tenfold
    until the Cholesky succeeds, so a singular ``C`` (a dead input, fewer samples than
    dimensions) still gives an invertible factor."""
    c = moment.double()
    c = (c + c.t()) / 2
    scale = float(c.diagonal().mean()) if c.numel() else 1.0
    eps = rel_ridge * (scale if scale > 0 else 1.0)
    eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    for _ in range(12):
        factor, info = torch.linalg.cholesky_ex(c + eps * eye)
        if int(info) == 0:
            return factor
        eps *= 10.0
    raise ValueError("the input second moment is not positive semi-definite (NaN in the calibration?)")


def whitened_linear(weight: torch.Tensor, chol: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``W`` (``out x in``), ``L`` (``in x in``, :func:`cholesky_factor` of the inputs' ``C``) -> ``P``
    (``out x q``), ``Q`` (``q x in``), ``s`` (``q``), ``q = min(out, in)``, float64, with ``P Q = W`` and
    ``s_i^2`` the output error ``E||Δy||^2`` of dropping component ``i`` (largest first)."""
    chol = chol.to(weight.device)
    u, s, vh = torch.linalg.svd(weight.double() @ chol, full_matrices=False)
    root = s.sqrt()
    right = torch.linalg.solve_triangular(chol, root[:, None] * vh, upper=False, left=False)
    return u * root, right, s


def whitened_shared_factors(emb: torch.Tensor, projs: Sequence[torch.Tensor], metrics: Sequence[torch.Tensor],
                            word_weight: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor], torch.Tensor]:
    """``A`` (``|V| x r``), ``B_j`` (``d_j x r``), ``G_j`` (``d_j x d_j``, lower triangular, invertible),
    ``f`` (``|V|``, positive) -> ``A'`` (``|V| x q``), ``[B_j']``, ``s`` (``q``), float64, with
    ``A' B_j'^T = A B_j^T`` for every ``j`` and ``s_i^2`` the weighted error
    ``sum_j ||F^1/2 ΔM_j G_j||_F^2`` of dropping component ``i`` (see the module docstring)."""
    root_f = word_weight.double().sqrt()[:, None]
    x = emb.double() * root_f
    y = torch.cat([g.double().t() @ b.double() for b, g in zip(projs, metrics)], dim=0)
    u, s, v = svd_of_product(x, y)
    root = s.sqrt()
    a = u * root / root_f
    vs = v * root
    out, lo = [], 0
    for b, g in zip(projs, metrics):
        block = vs[lo:lo + b.shape[0]]
        out.append(torch.linalg.solve_triangular(g.double().t(), block, upper=True))
        lo += b.shape[0]
    return a, out, s


def dropped_error(x: torch.Tensor, y: torch.Tensor, keep: int) -> float:
    """``||x[:, keep:] y[:, keep:]^T||_F^2`` for factors ``x`` (``n x r``), ``y`` (``m x r``), through the
    ``r x r`` Gram matrices: the error of keeping the first ``keep`` components of ``x y^T``."""
    xt, yt = x[:, keep:].double(), y[:, keep:].double()
    return float(((xt.t() @ xt) * (yt.t() @ yt)).sum())
