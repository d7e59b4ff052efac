"""``flop_transformer_xl``: Transformer-XL with FLOP (importing this imports fairseq).

Plain-PyTorch modules: :mod:`.attention` (relative attention, relative shift), :mod:`.layer`,
:mod:`.bands` (Transformer-XL bands as FLOP bands), :mod:`.adaptive` (adaptive embedding and
projected adaptive softmax), :mod:`.memory` (segment recurrence), :mod:`.network` (the whole
network); :mod:`.compact_load` (loading compact checkpoints), :mod:`.model` (fairseq registration
and presets), :mod:`.from_hf` (weights of a HuggingFace ``TransfoXLLMHeadModel``).
"""

from .model import FlopTransformerXLModel

__all__ = ["FlopTransformerXLModel"]
