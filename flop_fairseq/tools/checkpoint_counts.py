"""The parameter counts of a checkpoint file, dense or FLOP, under the counter's names."""

import dataclasses
import io
import os

import torch

from ..core import count_params
from .checkpoint import load_any_model


@torch.no_grad()
def checkpoint_counts(path: str) -> dict:
    """:class:`~flop_fairseq.core.counting.ParamCounts` of the checkpoint's model as a dict, plus
    ``file_bytes`` (the file as written) and ``model_bytes`` (its weights alone, saved by torch);
    the layer matrices' counts are its decoder layers' attention/FFN matrices (:func:`layer_matrices`)."""
    from ..models import layer_matrices

    _, model, dense_prunable = load_any_model(path)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    out = dataclasses.asdict(count_params(model, dense_prunable, layer_matrices(model)))
    out.update(file_bytes=os.path.getsize(path), model_bytes=buf.tell())
    return out
