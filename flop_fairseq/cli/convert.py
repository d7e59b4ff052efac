"""``flop-convert DENSE.pt OUT.pt``: a dense fairseq ``transformer_lm`` with adaptive
input/softmax becomes a FLOP checkpoint of the matching ``flop_transformer_lm`` arch
that computes the same function (gates start at exactly 1 in eval mode)."""

import argparse
import copy
import sys

import torch
from torch import nn

from ..band_svd import factor_shared_embedding, factor_tied_band
from ..factorized_linear import FactorizedLinear
from ..sparsity import gates_bypassed, sparsity_stats
from .checkpoint_io import CheckpointError, quiet_logging, build_model, load_checkpoint, save_checkpoint_atomic, vocab_size

FLOP_ARCHS = {"transformer_lm": "flop_transformer_lm", "transformer_lm_wiki103": "flop_transformer_lm_wiki103",
              "transformer_lm_baevski_wiki103": "flop_transformer_lm_wiki103",
              "transformer_lm_gbw": "flop_transformer_lm_gbw", "transformer_lm_baevski_gbw": "flop_transformer_lm_gbw"}


def _copy(param: torch.Tensor, value: torch.Tensor) -> None:
    param.data.copy_(value.to(param.dtype))


@torch.no_grad()
def init_bands_from_dense(flop_model, dense_model, tied: bool) -> None:
    """Fills every FLOP band with the SVD factors of the dense band it replaces."""
    f_in = flop_model.decoder.embed_tokens.bands
    f_out = flop_model.decoder.adaptive_softmax.bands
    d_in = dense_model.decoder.embed_tokens
    d_sm = dense_model.decoder.adaptive_softmax
    n_bands = len(f_in)
    if tied:
        for i in range(n_bands):
            emb, proj = d_in.weights_for_band(i)
            band = f_in[i]
            if i == 0:  # head: output scores E_0 h with no projection
                a, b_in, b_out = factor_shared_embedding(emb, proj, None, band.rank, identity_output=True)
            elif band.tie_proj:
                a, b_in = factor_tied_band(emb, proj, band.rank)
                b_out = None
            else:  # tail with its own softmax projection Q (d_i x d)
                q = d_sm.tail[i - 1][0].weight
                a, b_in, b_out = factor_shared_embedding(emb, proj, q, band.rank)
            _copy(band.emb, a)
            _copy(band.in_proj, b_in)
            if b_out is not None:
                _copy(band.out_proj, b_out)
        _copy(flop_model.decoder.adaptive_softmax.class_proj.weight, d_sm.head.class_proj.weight)
        return
    for i in range(n_bands):
        emb, proj = d_in.weights_for_band(i)
        a, b_in = factor_tied_band(emb, proj, f_in[i].rank)
        _copy(f_in[i].emb, a)
        _copy(f_in[i].in_proj, b_in)
    head = d_sm.head.weight
    v0 = f_out[0].num_words
    a, _, b_out = factor_shared_embedding(head[:v0], None, None, f_out[0].rank, identity_output=True)
    _copy(f_out[0].emb, a)
    _copy(f_out[0].out_proj, b_out)
    _copy(flop_model.decoder.adaptive_softmax.class_proj.weight, head[v0:])
    for i in range(1, len(f_out)):
        w1, w2 = d_sm.tail[i - 1][0].weight, d_sm.tail[i - 1][2].weight  # (d_i, d), (V_i, d_i)
        a, b_out = factor_tied_band(w2, w1.t(), f_out[i].rank)
        _copy(f_out[i].emb, a)
        _copy(f_out[i].out_proj, b_out)


@torch.no_grad()
def init_rest_from_dense(flop_model, dense_model) -> None:
    """Copies every non-band weight; dense layer matrices become SVD-initialised factorizations."""
    dense_modules = dict(dense_model.named_modules())
    for name, module in flop_model.named_modules():
        if isinstance(module, FactorizedLinear):
            ref = FactorizedLinear.from_dense(dense_modules[name], rank=module.rank)
            for p in ("left", "right", "bias"):
                if getattr(module, p) is not None:
                    _copy(getattr(module, p), getattr(ref, p))
    dense_state = dense_model.state_dict()
    for key, value in flop_model.state_dict().items():
        if key in dense_state and not key.startswith(("decoder.embed_tokens.", "decoder.adaptive_softmax.")):
            if dense_state[key].shape != value.shape:
                raise CheckpointError(f"parameter {key}: dense shape {tuple(dense_state[key].shape)} does not fit "
                                      f"{tuple(value.shape)}")
            value.copy_(dense_state[key])


@torch.no_grad()
def max_logprob_difference(a, b, num_words: int, length: int = 32, seed: int = 0) -> float:
    """Largest |log p_a - log p_b| over a random batch, both models in eval mode."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, num_words, (2, length), generator=g)
    out = []
    for m in (a, b):
        m.eval()
        net = m(tokens)
        out.append(m.get_normalized_probs(net, log_probs=True).double())
    return (out[0] - out[1]).abs().max().item()


def convert(dense_path: str, out_path: str, flop_decoder_layers: bool = False, init_keep_prob=None,
            tolerance: float = 1e-3, log=print) -> dict:
    from .. import models  # noqa: F401  (registers flop_transformer_lm with fairseq)

    state = load_checkpoint(dense_path)
    cfg_model = state["cfg"]["model"]
    if not isinstance(cfg_model, dict):
        from omegaconf import OmegaConf
        cfg_model = OmegaConf.to_container(cfg_model, resolve=True, enum_to_str=True)
    name = cfg_model.get("_name") or cfg_model.get("arch")
    if name is None or str(name).startswith("flop_"):
        raise CheckpointError(f"{dense_path}: already a FLOP checkpoint ({name}); flop-convert takes a dense one")
    if name not in FLOP_ARCHS:
        raise CheckpointError(f"{dense_path}: model '{name}' is not a fairseq transformer_lm; "
                              f"flop-convert supports {', '.join(sorted(FLOP_ARCHS))}")
    if not cfg_model.get("adaptive_input") or not cfg_model.get("adaptive_softmax_cutoff"):
        raise CheckpointError(f"{dense_path}: the model has no adaptive input and adaptive softmax; "
                              "FLOP prunes their frequency bands (train with --adaptive-input and "
                              "--adaptive-softmax-cutoff)")
    num_words = vocab_size(state["model"])
    dense = build_model(cfg_model, num_words)
    try:
        dense.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{dense_path}: weights do not fit the model its config describes: "
                              f"{str(e).splitlines()[0]}")

    flop_cfg = copy.deepcopy(cfg_model)
    flop_cfg["_name"] = FLOP_ARCHS[name]
    flop_cfg["flop_decoder_layers"] = bool(flop_decoder_layers)
    flop_cfg["flop_init_keep_prob"] = None if init_keep_prob is None else float(init_keep_prob)
    flop_cfg.setdefault("flop_temperature", 2.0 / 3.0)
    try:
        flop = build_model(flop_cfg, num_words)
    except (ValueError, AssertionError) as e:
        raise CheckpointError(f"{dense_path}: cannot build the FLOP model: {e}")
    init_bands_from_dense(flop, dense, tied=bool(cfg_model.get("tie_adaptive_weights")))
    init_rest_from_dense(flop, dense)

    with gates_bypassed(flop):
        diff = max_logprob_difference(dense, flop, num_words)
    log(f"flop-convert: function check: max |log p(dense) - log p(FLOP, gates bypassed)| = {diff:.2e}")
    if not diff <= tolerance:
        raise CheckpointError(f"conversion does not preserve the function (max log-prob difference {diff:.2e} "
                              f"> {tolerance}); please report this checkpoint's config")

    stats = sparsity_stats(flop)
    state["model"] = flop.state_dict()
    state["cfg"]["model"] = flop_cfg
    state["args"] = None
    state["criterion"] = None
    state.pop("last_optimizer_state", None)
    # a fresh start for the pruning schedule (fairseq hands this count to the model on load)
    state["optimizer_history"] = [dict(state["optimizer_history"][-1], num_updates=0)] \
        if state.get("optimizer_history") else []
    size = save_checkpoint_atomic(state, out_path, dense_path)
    total = sum(p.numel() for p in flop.parameters())
    log(f"flop-convert: wrote {out_path} ({size / 2**20:.1f} MiB): arch {flop_cfg['_name']}, "
        f"{len(stats.groups)} gated groups, {stats.prunable_params:,} prunable parameters (dense count), "
        f"{total:,} parameters in the gated model")
    return {"max_logprob_diff": diff, "prunable_params": stats.prunable_params, "groups": len(stats.groups)}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="flop-convert",
        description="Convert a dense fairseq transformer_lm checkpoint with adaptive input/softmax into a "
                    "FLOP checkpoint (flop_transformer_lm*) computing the same function.",
    )
    parser.add_argument("dense", help="dense fairseq checkpoint (e.g. checkpoints/checkpoint_best.pt)")
    parser.add_argument("output", help="path of the FLOP checkpoint to write")
    parser.add_argument("--flop-decoder-layers", action="store_true",
                        help="also factorize the attention and FFN matrices of every decoder layer")
    parser.add_argument("--init-keep-prob", type=float, default=None,
                        help="initial keep probability P(z > 0) of each gate (default max(0.99, 1 - 0.45/rank): "
                             "the eval mask starts at exactly 1; lower values start pruning sooner)")
    args = parser.parse_args(argv)
    quiet_logging()
    if args.init_keep_prob is not None and not 0.0 < args.init_keep_prob < 1.0:
        parser.error("--init-keep-prob must be in (0, 1)")
    try:
        convert(args.dense, args.output, args.flop_decoder_layers, args.init_keep_prob)
    except CheckpointError as e:
        sys.exit(f"flop-convert: error: {e}")


if __name__ == "__main__":
    main()
