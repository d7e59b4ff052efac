"""Reading, building and atomically writing fairseq checkpoints for the command-line tools."""

import os
import re
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
    """fairseq's ``load_checkpoint_to_cpu`` (which upgrades old ``args`` checkpoints to ``cfg``),
    with one-line errors for a missing, truncated or foreign file."""
    from fairseq import checkpoint_utils

    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except Exception as e:  # torch raises many types for damaged files
        raise CheckpointError(f"{path}: not a readable fairseq checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if not isinstance(state, dict) or "model" not in state or state.get("cfg") is None:
        raise CheckpointError(f"{path}: not a fairseq checkpoint (no 'model' and 'cfg' entries)")
    return state


def vocab_size(model_state: dict) -> int:
    """Vocabulary size from the adaptive input bands of a dense or FLOP state dict."""
    pattern = re.compile(r"^decoder\.embed_tokens\.(embeddings\.\d+\.0\.weight|bands\.\d+\.emb)$")
    sizes = [v.shape[0] for k, v in model_state.items() if pattern.match(k)]
    if not sizes:
        raise CheckpointError("the model has no adaptive input (decoder.embed_tokens.embeddings.*): "
                              "FLOP prunes adaptive input/softmax bands, train with --adaptive-input")
    return int(sum(sizes))


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

    cfg = OmegaConf.create(cfg_model) if isinstance(cfg_model, dict) else cfg_model
    return models.build_model(cfg, stub_task(num_words))


def save_checkpoint_atomic(state: dict, path: str, source: str) -> int:
    """Writes ``state`` to ``path`` through a temporary file and a rename, so a failure
    leaves nothing half-written; refuses to overwrite ``source``. Returns the file size."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(state.get("cfg")):
        # plain containers, as fairseq saves them: torch.load(weights_only=True) refuses DictConfig
        state = dict(state, cfg=OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True))
    if os.path.exists(path) and os.path.samefile(path, source):
        raise CheckpointError(f"{path}: the output would overwrite the input checkpoint; choose another path")
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise CheckpointError(f"{out_dir}: output directory does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return os.path.getsize(path)


def load_flop_model(path: str):
    """``(state, model)`` for a FLOP checkpoint, gated or compact; refuses anything else."""
    from .. import models  # noqa: F401  (registers flop_transformer_lm with fairseq)

    state = load_checkpoint(path)
    cfg_model = state["cfg"]["model"]
    name = (cfg_model.get("_name") if hasattr(cfg_model, "get") else None) or ""
    if not str(name).startswith("flop_transformer_lm"):
        raise CheckpointError(f"{path}: not a FLOP model (arch '{name}'); convert a dense checkpoint "
                              "with flop-convert first")
    model = build_model(cfg_model, vocab_size(state["model"]))
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the FLOP model its config describes: "
                              f"{str(e).splitlines()[0]}")
    model.eval()
    return state, model
