"""Calibration data for the data-aware conversion: a fairseq-preprocessed directory streamed as
contiguous token rows, and the FLOP model's statistics and refactorization on it
(:mod:`flop_fairseq.core.data_aware`), on the GPU when there is one."""

import os
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch

from .checkpoint import CheckpointError

DEFAULT_TOKENS = 262_144
# checkpoint entry: gated group name -> each component's relative loss times the group's share (GroupReport)
LOSSES_KEY = "flop_component_losses"
ROWS = 8  # contiguous streams per batch (a Transformer-XL carries each row's memory to the next segment)


def read_stream(data_dir: str, subset: str, num_words: int, tokens: int) -> torch.Tensor:
    """The first ``tokens + 1`` token ids (fewer if the split is shorter) of ``data_dir``'s ``subset``
    split as one 1-d stream (sentences with their end-of-sentence symbols, as fairseq's language
    modeling task reads them). One-line :class:`CheckpointError` for a missing directory, dictionary
    or split, a dictionary of another size than the model's, or an empty split."""
    from fairseq.data import Dictionary, data_utils

    if tokens <= 0:
        raise CheckpointError(f"--calibration-tokens must be positive, got {tokens}")
    dict_path = os.path.join(data_dir, "dict.txt")
    if not os.path.isfile(dict_path):
        raise CheckpointError(f"{data_dir}: no dict.txt: give a fairseq-preprocess output directory to --calibration")
    dictionary = Dictionary.load(dict_path)
    if len(dictionary) != num_words:
        raise CheckpointError(f"{data_dir}: its dictionary has {len(dictionary):,} types, the model {num_words:,}: "
                              "give the data directory the model was trained on")
    dataset = data_utils.load_indexed_dataset(os.path.join(data_dir, subset), dictionary)
    if dataset is None:
        raise CheckpointError(f"{data_dir}: no '{subset}' split ({subset}.bin/.idx): choose one with "
                              "--calibration-subset")
    pieces: List[torch.Tensor] = []
    have = 0
    for i in range(len(dataset)):
        if have > tokens:
            break
        item = dataset[i].long()
        pieces.append(item)
        have += item.numel()
    if have < 2:
        raise CheckpointError(f"{data_dir}: the '{subset}' split holds no tokens to calibrate on")
    return torch.cat(pieces)[: tokens + 1]


def stream_batches(stream: torch.Tensor, seq_len: int, device) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """``(tokens (B, T), next tokens (B, T))`` chunks of ``stream`` split into ``ROWS`` contiguous rows
    (fewer for a short stream), consecutive chunks continuing each row."""
    rows = max(1, min(ROWS, (stream.numel() - 1) // 2))
    length = (stream.numel() - 1) // rows
    src = stream[: rows * length].view(rows, length)
    tgt = stream[1: rows * length + 1].view(rows, length)
    for lo in range(0, length, seq_len):
        yield src[:, lo:lo + seq_len].to(device), tgt[:, lo:lo + seq_len].to(device)


def calibrate(model, stream: torch.Tensor, num_words: int) -> dict:
    """Refactors every group of ``model`` (a FLOP model at full rank) in its data-aware basis from the
    token ``stream``. Returns ``{"reports": [GroupReport], "tokens", "seconds", "device",
    "peak_gpu_bytes"}``; the model is back on the CPU."""
    from ..core.data_aware import collect_statistics, refactor_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.time()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.to(device)
    seq_len = max(1, min(int(model.decoder.max_positions() or 512), 512))
    with torch.no_grad():
        stats = collect_statistics(model, stream_batches(stream, seq_len, device),
                                   lambda t: model.decoder(t, features_only=True)[0], num_words)
        reports = refactor_model(model, stats)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    model.to("cpu")
    return {"reports": reports, "tokens": stats.tokens, "seconds": time.time() - start, "device": device.type,
            "peak_gpu_bytes": peak}


def summary_lines(reports) -> List[str]:
    """Per band, and per kind of layer matrix (mean over layers), the relative error of keeping
    half the rank: plain SVD basis vs whitened."""
    lines, kinds = [], {}
    for r in reports:
        if "." not in r.name:
            lines.append(f"  band {r.name} (rank {r.rank}): plain {r.plain_half:.4f}, whitened {r.whitened_half:.4f}")
        else:
            kinds.setdefault(r.name.rsplit(".", 1)[1] if "layers." in r.name else r.name, []).append(r)
    for kind, rs in kinds.items():
        n = len(rs)
        lines.append(f"  layer matrices *.{kind} ({n}, rank {rs[0].rank}): plain "
                     f"{sum(r.plain_half for r in rs) / n:.4f}, whitened {sum(r.whitened_half for r in rs) / n:.4f}"
                     + (" (mean)" if n > 1 else ""))
    return lines


@dataclass
class DataAwareOptions:
    """``flop-convert``'s data-aware options: the calibration directory (None: plain SVD), its token
    count and split; equal-rms factor scales; the slope of the gates' start from the losses (None: the
    uniform start)."""

    data: Optional[str] = None
    tokens: int = DEFAULT_TOKENS
    subset: str = "train"
    balance_factors: bool = False
    gate_slope: Optional[float] = None

    def stream(self, num_words: int) -> Optional[torch.Tensor]:
        """The calibration tokens (None without ``data``), read before any work so that bad input
        fails first."""
        if self.gate_slope is not None and self.data is None:
            raise CheckpointError("--gate-init-slope needs --calibration (it starts the gates from the losses)")
        return None if self.data is None else read_stream(self.data, self.subset, num_words, self.tokens)


def apply_data_aware(model, options: DataAwareOptions, stream: Optional[torch.Tensor], num_words: int,
                     init_keep_prob=None) -> dict:
    """The data-aware steps on a freshly converted full-rank FLOP ``model``: refactorization from the
    calibration ``stream``, gates from the losses, factor scales. Returns what :func:`calibrate` does
    (empty without a stream), with ``losses`` (gated group name -> relative losses times the group's
    share, what :mod:`.truncate` allocates by) and ``scales``."""
    from ..core import gated_modules
    from ..core.data_aware import init_gates_from_losses
    from ..core.factor_scales import balance_factor_scales

    out = {}
    if stream is not None:
        out = calibrate(model, stream, num_words)
        names = {id(m): n for n, m in gated_modules(model)}
        modules = [s.module for s in model.flop_bands()] + [m for _, m in model.flop_layer_matrices()]
        out["losses"] = {names[id(m)]: r.losses * r.share for m, r in zip(modules, out["reports"])}
        if options.gate_slope is not None:
            init_gates_from_losses([(m, r.losses) for m, r in zip(modules, out["reports"])], options.gate_slope,
                                   init_keep_prob)
    if options.balance_factors:
        out["scales"] = balance_factor_scales(model)
    return out
