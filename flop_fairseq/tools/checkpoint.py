"""Reading, building and atomically writing fairseq checkpoints: shared by the command-line
tools, the demo and the benchmarks."""

import collections
import os
import tempfile
from types import SimpleNamespace

import torch


def quiet_logging() -> None:
    """Warnings and errors only: the tools print their own results (fairseq and matplotlib
    log at INFO/DEBUG level on import otherwise)."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)


class CheckpointError(Exception):
    """A checkpoint the tools cannot use; the message says why and what to do."""


def load_checkpoint(path: str) -> dict:
    """A fairseq checkpoint read with ``torch.load(weights_only=True)`` whatever the torch version
    (a file that would run code when unpickled is refused, not executed; the pre-hydra types of
    :mod:`.pickle_allowlist` are allowed), then upgraded as fairseq's ``load_checkpoint_to_cpu``
    does (pre-hydra ``args`` checkpoints get a ``cfg``: :mod:`.pre_hydra`) and, for a dense arch
    that a FLOP model converts, what its state dict's old layout implies made explicit (the
    model's ``upgrade_dense_state``). One-line errors for a missing, truncated or foreign file."""
    import warnings

    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    from . import pickle_allowlist, pre_hydra

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    pickle_allowlist.register()
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on the way to its error
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or unsafe files
        first = str(e).splitlines()[0] if str(e) else ""
        if "weights only" in first.lower():
            raise CheckpointError(f"{path}: not loaded: corrupt, or it holds Python objects other than "
                                  "tensors and plain containers, which could run code (refused, not executed)")
        raise CheckpointError(f"{path}: not a readable fairseq checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {first}")
    if not isinstance(state, dict) or "model" not in state or (state.get("cfg") is None and state.get("args") is None):
        raise CheckpointError(f"{path}: not a fairseq checkpoint (no 'model' and 'cfg' entries)")
    if state.get("cfg") is not None:
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
        state = checkpoint_utils._upgrade_state_dict(state)
    else:
        state = pre_hydra.config_from_args(state, path)
    _upgrade_dense_layout(state, path)
    return state


def _upgrade_dense_layout(state: dict, path: str) -> None:
    from ..models import flop_model_for_dense_arch

    found = flop_model_for_dense_arch(model_name(state["cfg"]["model"]))
    if found is not None:
        try:
            found[0].upgrade_dense_state(state["cfg"]["model"], state["model"])
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}")


def model_name(cfg_model) -> str:
    """The arch a checkpoint's model config names (fairseq's ``_name``, or ``arch`` in old ones)."""
    if hasattr(cfg_model, "get"):
        return str(cfg_model.get("_name") or cfg_model.get("arch") or "")
    # a legacy model's config stays the checkpoint's argparse.Namespace
    return str(getattr(cfg_model, "_name", None) or getattr(cfg_model, "arch", None) or "")


def stub_task(num_words: int):
    """A task with a placeholder dictionary of ``num_words`` symbols (fairseq's specials at
    0..3, so ``pad() == 1``): enough to build a language model without its data directory."""
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(num_words - len(d)):
        d.add_symbol(f"<w{i}>")
    return SimpleNamespace(source_dictionary=d, target_dictionary=d, dictionary=d)


def build_model(cfg_model, num_words: int):
    """Builds the model ``cfg_model`` describes (a dict or DictConfig), in float32 on the CPU."""
    from fairseq import models
    from omegaconf import OmegaConf

    from .. import models as flop_models  # noqa: F401  (registers the FLOP models with fairseq)

    cfg = OmegaConf.create(cfg_model) if isinstance(cfg_model, dict) else cfg_model
    return models.build_model(cfg, stub_task(num_words))


def save_checkpoint_atomic(state: dict, path: str, source: str) -> int:
    """Writes ``state`` to ``path`` through a temporary file and a rename, so a failure
    leaves nothing half-written; refuses to overwrite ``source``. Returns the file size."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(state.get("cfg")):
        # plain containers, as fairseq saves them: torch.load(weights_only=True) refuses DictConfig
        state = dict(state, cfg=OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True))
    # numbers an old training state holds as numpy scalars, as Python numbers: torch's default
    # weights-only loading (fairseq's own commands without the plugin) then reads the file
    state = {k: v if k == "model" else _python_numbers(v) for k, v in state.items()}
    if os.path.exists(path) and os.path.samefile(path, source):
        raise CheckpointError(f"{path}: the output would overwrite the input checkpoint; choose another path")
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise CheckpointError(f"{out_dir}: output directory does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=out_dir)
    except OSError as e:
        raise CheckpointError(f"{out_dir}: cannot write the output there ({e.strerror})")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(f"{path}: cannot write the output ({e.strerror}); nothing was written")
        raise
    return os.path.getsize(path)


def _python_numbers(obj):
    """``obj`` with every numpy scalar in its dicts, lists and tuples replaced by the Python number it holds."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if type(obj) in (dict, collections.OrderedDict):
        return type(obj)((k, _python_numbers(v)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_python_numbers(v) for v in obj)
    return obj


def build_and_load(cfg_model, model_cls, model_state, path: str):
    """The model ``cfg_model`` describes, at the vocabulary ``model_cls`` reads from ``model_state``,
    with those weights loaded (through fairseq's ``load_state_dict``, which upgrades the key
    layouts of older fairseq releases; then every key must fit), in eval mode; a one-line
    :class:`CheckpointError` when they do not fit."""
    try:
        model = build_model(cfg_model, model_cls.vocab_size_from_state(model_state))
        found = model.load_state_dict(model_state, strict=False)
    except (RuntimeError, ValueError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: {detail[:300]}")
    missing, unexpected = found.missing_keys, found.unexpected_keys
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes, in this fairseq's key layout or an "
            f"older one it upgrades: {len(missing)} missing ({', '.join(missing[:2])}), "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:2])})")
    return model.eval()


def load_flop_model(path: str):
    """``(state, model)`` for a FLOP checkpoint, gated or compact, in eval mode; refuses anything else."""
    from ..models import flop_model_for_arch

    state = load_checkpoint(path)
    cfg_model = state["cfg"]["model"]
    name = model_name(cfg_model)
    cls = flop_model_for_arch(name)
    if cls is None:
        raise CheckpointError(f"{path}: not a FLOP model (arch '{name}'); convert a dense checkpoint "
                              "with flop-convert first")
    return state, build_and_load(cfg_model, cls, state["model"], path)


def load_any_model(path: str):
    """``(state, model, dense_prunable)`` for a FLOP or a dense checkpoint that a FLOP model converts
    from; ``dense_prunable`` lists the dense model's prunable tensors (None for a FLOP model)."""
    from ..models import flop_model_for_arch, flop_model_for_dense_arch

    state = load_checkpoint(path)
    name = model_name(state["cfg"]["model"])
    if flop_model_for_arch(name) is not None:
        return (*load_flop_model(path), None)
    found = flop_model_for_dense_arch(name)
    if found is None:
        raise CheckpointError(f"{path}: arch '{name}' is neither a FLOP model nor one flop-convert takes")
    model = build_and_load(state["cfg"]["model"], found[0], state["model"], path)
    return state, model, found[0].dense_prunable_tensors(model)
