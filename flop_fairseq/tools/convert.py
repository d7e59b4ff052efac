"""Dense fairseq checkpoint -> FLOP checkpoint computing the same function (``flop-convert``)."""

import copy

from ..core import count_params, gates_bypassed
from .checkpoint import (
    CheckpointError,
    build_and_load,
    build_model,
    load_checkpoint,
    model_name,
    save_checkpoint_atomic,
)
from .calibration import LOSSES_KEY, DataAwareOptions, apply_data_aware
from .equivalence import check_logprobs, max_logprob_difference


def convert(dense_path: str, out_path: str, flop_decoder_layers: bool = False, init_keep_prob=None,
            tolerance: float = 1e-3, layer_rank_ratio: float = 1.0, data_aware: DataAwareOptions = None) -> dict:
    """Writes the FLOP checkpoint; returns what was done (sizes, counts, the function check, the
    largest relative SVD truncation error of a layer matrix, and :func:`apply_data_aware`'s results).
    Below full layer rank (``layer_rank_ratio < 1``) the function changes by design, so it is
    reported, not checked; the data-aware basis needs full rank (its components come from the dense
    matrix)."""
    from ..models import dense_archs, flop_model_for_arch, flop_model_for_dense_arch

    data_aware = data_aware or DataAwareOptions()
    if data_aware.data is not None and layer_rank_ratio < 1.0:
        raise CheckpointError("--calibration needs the full layer rank: truncate the converted model instead")

    state = load_checkpoint(dense_path)
    cfg_model = state["cfg"]["model"]
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg_model):  # (a legacy arch's config stays a Namespace: refused below)
        cfg_model = OmegaConf.to_container(cfg_model, resolve=True, enum_to_str=True)
    name = model_name(cfg_model)
    if flop_model_for_arch(name) is not None or name.startswith("flop_"):
        raise CheckpointError(f"{dense_path}: already a FLOP checkpoint ({name}); flop-convert takes a dense one")
    found = flop_model_for_dense_arch(name)
    if found is None:
        raise CheckpointError(f"{dense_path}: model '{name}' is not one flop-convert takes; "
                              f"it supports {', '.join(dense_archs())}")
    cls, flop_arch = found
    if not cfg_model.get("adaptive_input") or not cfg_model.get("adaptive_softmax_cutoff"):
        raise CheckpointError(f"{dense_path}: the model has no adaptive input and adaptive softmax; "
                              "FLOP prunes their frequency bands (train with --adaptive-input and "
                              "--adaptive-softmax-cutoff)")
    dense = build_and_load(cfg_model, cls, state["model"], dense_path)
    state["model"] = None  # the model holds the weights now (at full scale: a GB less at the peak)
    num_words = len(dense.decoder.dictionary)
    stream = data_aware.stream(num_words)

    flop_cfg = copy.deepcopy(cfg_model)
    flop_cfg["_name"] = flop_arch
    flop_cfg["flop_decoder_layers"] = bool(flop_decoder_layers)
    flop_cfg["flop_init_keep_prob"] = None if init_keep_prob is None else float(init_keep_prob)
    flop_cfg.setdefault("flop_temperature", 2.0 / 3.0)
    flop_cfg["flop_layer_rank_ratio"] = float(layer_rank_ratio)
    try:
        flop = build_model(flop_cfg, num_words)
        init = flop.init_from_dense(dense, cfg_model)
    except (ValueError, AssertionError, SystemExit) as e:  # the model refuses its settings with SystemExit
        raise CheckpointError(f"{dense_path}: cannot build the FLOP model: {e}")
    reference = check_logprobs(dense, num_words)
    del dense  # at full scale a GB less while the calibration runs
    init.update(apply_data_aware(flop, data_aware, stream, num_words, init_keep_prob))

    with gates_bypassed(flop):
        diff = max_logprob_difference(reference, flop, num_words)
    if layer_rank_ratio >= 1.0 and not diff <= tolerance:
        raise CheckpointError(f"conversion does not preserve the function (max log-prob difference {diff:.2e} "
                              f"> {tolerance}); please report this checkpoint's config")
    counts = count_params(flop)
    state["model"] = flop.state_dict()
    state["cfg"]["model"] = flop_cfg
    state["args"] = None
    state["criterion"] = None
    state.pop("last_optimizer_state", None)
    state.pop(LOSSES_KEY, None)
    if "losses" in init:  # what a truncation by losses across groups reads
        state[LOSSES_KEY] = init["losses"]
    # a fresh start for the pruning schedule (fairseq hands this count to the model on load)
    state["optimizer_history"] = [dict(state["optimizer_history"][-1], num_updates=0)] \
        if state.get("optimizer_history") else []
    size = save_checkpoint_atomic(state, out_path, dense_path)
    return {"arch": flop_arch, "max_logprob_diff": diff, "file_bytes": size, "groups": len(flop.flop_bands())
            + len(flop.flop_layer_matrices()), "counts": counts, **init}
