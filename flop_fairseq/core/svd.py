"""SVD initialisation of factorized bands from a dense adaptive input/softmax.

Every band map here is ``M = X Y^T`` with a tall ``X`` (``|V_i| x d_i``, the band
embedding) and a short ``Y``; ``M``'s singular vectors come from a QR of ``X``
and an SVD of the small ``R Y^T``, so a 207k-word band costs no more than a QR.
Components are ordered by singular value (most important first) and split
evenly, ``A = U S^1/2`` and ``B = V S^1/2``, so ``A B^T = M`` exactly at full rank.
"""

from typing import Optional, Tuple

import torch


def _pad(t: torch.Tensor, rank: int) -> torch.Tensor:
    """Zero components past the matrix rank (a band with fewer words than its dim)."""
    if t.shape[1] >= rank:
        return t[:, :rank]
    return torch.cat([t, t.new_zeros(t.shape[0], rank - t.shape[1])], dim=1)


def svd_of_product(x: torch.Tensor, y: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``U, S, V`` of ``M = x y^T`` (``y = I`` when None), computed in float64.

    ``x``: ``(n, k)`` with ``n >= k`` typical; ``y``: ``(m, k)``. Returns ``U``
    ``(n, q)``, ``S`` ``(q,)``, ``V`` ``(m, q)`` with ``q = min(n, k, m)``.
    """
    x = x.double()
    q, r = torch.linalg.qr(x)
    small = r if y is None else r @ y.double().t()
    u, s, vh = torch.linalg.svd(small, full_matrices=False)
    return q @ u, s, vh.t()


def factor_tied_band(emb: torch.Tensor, proj: torch.Tensor, rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A tail band with tied projection: ``M = E P^T`` (``E`` ``(V, d_i)``, ``P`` ``(d, d_i)``).

    Returns ``A`` ``(V, rank)`` and ``B`` ``(d, rank)`` with ``A B^T = M``: the
    input embeds ``w`` as ``B A[w]^T = P E[w]^T`` and the softmax scores ``A B^T h``.
    """
    u, s, v = svd_of_product(emb, proj)
    root = s.sqrt()
    return _pad(u * root, rank), _pad(v * root, rank)


def factor_shared_embedding(
    emb: torch.Tensor,
    in_proj: Optional[torch.Tensor],
    out_proj: Optional[torch.Tensor],
    rank: int,
    identity_output: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """A band whose embedding ``E`` (``(V, d_i)``) is shared by an input projection
    ``P`` (``(d, d_i)``: input ``P E[w]^T``) and an output projection ``Q``
    (``(d_i, d_out)``: logits ``E Q h``). ``identity_output`` means ``Q = I``: fairseq's
    tied head band scores ``E h`` directly.

    With ``E = U S V^T``: ``A = U S^1/2``, ``B_in = P V S^1/2``, ``B_out = Q^T V S^1/2``.
    Returns ``(A, B_in, B_out)``, each with ``rank`` columns (None where no projection).
    """
    u, s, v = svd_of_product(emb)
    root = s.sqrt()
    a = _pad(u * root, rank)
    vs = v * root  # (d_i, q)
    b_in = None if in_proj is None else _pad(in_proj.double() @ vs, rank)
    if identity_output:
        b_out = _pad(vs, rank)
    elif out_proj is None:
        b_out = None
    else:
        b_out = _pad(out_proj.double().t() @ vs, rank)
    return a, b_in, b_out
