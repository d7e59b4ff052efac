"""Helpers shared by the core tests (plain PyTorch, no fairseq)."""

import math

import torch
from torch import nn

from flop_fairseq.core import BandSlot, GatedLowRankBand, GatedLowRankLinear, HardConcrete, PrunableModel

BETA = 2.0 / 3.0
# log_alpha at and above which the eval-mode value of a kept gate is exactly 1
SATURATION = BETA * math.log(11.0)


def set_log_alpha(gate: HardConcrete, values) -> None:
    values = torch.as_tensor(values, dtype=torch.float32)
    with torch.no_grad():
        gate.log_alpha_raw.copy_((values - gate.log_alpha_offset) / gate.lr_scale)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class SharedBandModel(nn.Module, PrunableModel):
    def __init__(self):
        super().__init__()
        self.band = GatedLowRankBand(50, 8, 10, tie_proj=True)
        self.inp = self.band
        self.out = self.band
        self.lin = GatedLowRankLinear(10, 12, bias=True)
        self.plain = nn.Linear(10, 3)

    def flop_bands(self):
        return [BandSlot(0, "tied", (0, 50), "b0", self.band)]

    def flop_layer_matrices(self):
        return [("lin", self.lin)]


