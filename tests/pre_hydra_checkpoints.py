"""Rewrites a fairseq checkpoint as fairseq wrote it before hydra (what its published language
models are): the options as one flat ``argparse.Namespace`` under ``args``, no ``cfg``, numpy
scalars in the training state; optionally with the state-dict key names of older releases."""

import argparse

import numpy as np
import torch

_GROUP_NAMES = {"task": "task", "model": "arch", "criterion": "criterion", "optimizer": "optimizer",
                "lr_scheduler": "lr_scheduler"}


def old_key_names(model_state: dict, layers: int) -> dict:
    """The weights under fairseq 0.6-0.8's names: q/k/v fused into ``in_proj_weight`` (until 0.8),
    ``layer_norms.0/2`` for the layer norms (0.6) and the sinusoidal positions' ``_float_tensor``
    (until 0.10); the values are unchanged."""
    out = dict(model_state)
    for i in range(layers):
        p = f"decoder.layers.{i}."
        for what in ("weight", "bias"):
            out[f"{p}self_attn.in_proj_{what}"] = torch.cat(
                [out.pop(f"{p}self_attn.{n}_proj.{what}") for n in "qkv"], dim=0)
            out[f"{p}layer_norms.0.{what}"] = out.pop(f"{p}self_attn_layer_norm.{what}")
            out[f"{p}layer_norms.2.{what}"] = out.pop(f"{p}final_layer_norm.{what}")
    out["decoder.embed_positions._float_tensor"] = torch.FloatTensor(1)
    return out


def write_pre_hydra(src: str, dst: str, drop=(), old_keys: bool = False, **args_changes) -> None:
    """``src`` (a hydra-era checkpoint) written to ``dst`` in the pre-hydra layout; ``drop`` names
    options to leave out of ``args``, ``args_changes`` sets others; ``old_keys``: :func:`old_key_names`."""
    state = torch.load(src, map_location="cpu", weights_only=True)
    cfg = state.pop("cfg")
    flat = {}
    for group, values in cfg.items():
        if isinstance(values, dict):
            flat.update({k: v for k, v in values.items() if k != "_name"})
    flat.update({name: cfg[group]["_name"] for group, name in _GROUP_NAMES.items()})
    flat["lr"] = float(flat["lr"][0])  # a float before 0.10, a list since
    flat.update(args_changes)
    for name in drop:
        flat.pop(name, None)
    state["args"] = argparse.Namespace(**flat)
    state["extra_state"]["val_loss"] = np.float64(state["extra_state"].get("val_loss") or 9.5)
    state["extra_state"]["best"] = np.float32(9.25)
    last = state["optimizer_history"][-1]
    last["lr_scheduler_state"]["best"] = np.float64(9.5)
    last["num_updates"] = np.int64(last["num_updates"])
    if old_keys:
        state["model"] = old_key_names(state["model"], int(flat["decoder_layers"]))
    torch.save(state, dst)
