"""Checking that data-parallel replicas hold the same FLOP model (``--check-replicas``)."""

import torch
import torch.distributed as dist


@torch.no_grad()
def fingerprint(model) -> torch.Tensor:
    """``(3,)`` float64: the sum and the sum of squares of every parameter and buffer (gates'
    ``log_alpha`` and the Lagrange multipliers included), and their count. Replicas that differ
    anywhere by more than rounding give different fingerprints."""
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    flat = torch.cat([t.detach().double().flatten().cpu() for t in tensors])
    return torch.stack([flat.sum(), flat.pow(2).sum(), torch.tensor(float(flat.numel()), dtype=torch.float64)])


def check_replicas(model, num_updates: int) -> None:
    """Compares this process's fingerprint with every other rank's; exits with one line naming
    the update when they differ. A no-op outside a multi-process run."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    mine = fingerprint(model)
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    everyone = [torch.zeros_like(mine, device=backend_device) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine.to(backend_device))
    if any(not torch.equal(other.cpu(), mine) for other in everyone):
        raise SystemExit(f"flop_adaptive_loss: replicas differ before update {num_updates + 1} "
                         f"(fingerprints {[o.tolist() for o in everyone]})")
