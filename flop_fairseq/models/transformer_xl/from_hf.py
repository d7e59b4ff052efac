"""A HuggingFace ``TransfoXLLMHeadModel`` (transformers 4.35 names) as a FLOP Transformer-XL computing
the same function: its config as ``flop_transformer_xl`` options, its weights (a state dict) as SVD
factors of every band and layer matrix. Plain PyTorch; reading the directory is
:mod:`flop_fairseq.tools.hf_transfo_xl`'s job.

Vocabulary: ``order[n]`` is the HF index of the FLOP model's word ``n``, or -1 for a symbol the HF
model lacks (fairseq's ``<s>`` and ``<pad>``): its embedding is 0 and its output bias
:data:`MISSING_LOGIT`, so its probability is 0 to float precision and no other word's changes.
Every word must stay in its band (the converter shifts the cutoffs accordingly)."""

from typing import Dict, List, Mapping, Optional

import torch

from .bands import factor_band

MISSING_LOGIT = -1.0e4

# HuggingFace config keys -> flop_transformer_xl options
_SAME = ("n_layer", "d_model", "n_head", "d_head", "d_inner", "d_embed", "div_val", "untie_r", "pre_lnorm",
         "mem_len", "clamp_len", "same_length", "dropout", "dropatt")


def cfg_from_hf(config: Mapping, cutoffs: Optional[List[int]] = None) -> Dict:
    """``flop_transformer_xl`` model options for a HuggingFace ``TransfoXLConfig`` (a dict);
    ``cutoffs`` replaces the config's (the converted vocabulary's band boundaries)."""
    if config.get("attn_type", 0) != 0:
        raise ValueError(f"attn_type {config.get('attn_type')}: only relative attention (0) is supported")
    if config.get("sample_softmax", -1) > 0 or not config.get("adaptive", True):
        raise ValueError("only the adaptive softmax of Transformer-XL (adaptive=True, no sample_softmax) is supported")
    out = {k: config[k] for k in _SAME if k in config}
    out["d_embed"] = int(config.get("d_embed", config["d_model"]))
    out["cutoffs"] = ",".join(str(int(c)) for c in (cutoffs if cutoffs is not None else config["cutoffs"]))
    out["untie_weight"] = not config.get("tie_word_embeddings", True)
    n_bands = len(config["cutoffs"]) + 1
    projs = list(config.get("tie_projs", [False] + [True] * (n_bands - 1)))
    out["tie_projs"] = ",".join("1" if p else "0" for p in (projs + [False] * n_bands)[:n_bands])
    out["layer_norm_eps"] = float(config.get("layer_norm_epsilon", 1e-5))
    return out


class _HF:
    """Accessors for the HF state dict, resolving the tensors that saving dropped because tied."""

    def __init__(self, state: Mapping[str, torch.Tensor], config: Mapping):
        self.s, self.c = state, config
        self.div_val = int(config.get("div_val", 1))
        self.d_model = int(config["d_model"])
        self.d_embed = int(config.get("d_embed", self.d_model))
        self.tie_weight = config.get("tie_word_embeddings", True)
        n = len(config["cutoffs"]) + 1
        self.tie_projs = (list(config.get("tie_projs", [False] + [True] * (n - 1))) + [False] * n)[:n]
        self.ends = [0] + list(config["cutoffs"]) + [int(config["vocab_size"])]

    def get(self, key):
        t = self.s.get(key)
        return None if t is None else t.detach().float()

    def in_emb(self, i):
        if self.div_val == 1:
            return self.get("transformer.word_emb.emb_layers.0.weight")[self.ends[i]:self.ends[i + 1]]
        return self.get(f"transformer.word_emb.emb_layers.{i}.weight")

    def in_proj(self, i):
        if self.div_val == 1:
            return self.get("transformer.word_emb.emb_projs.0") if self.d_model != self.d_embed else None
        return self.get(f"transformer.word_emb.emb_projs.{i}")

    def out_layer(self, i, what):
        j = 0 if self.div_val == 1 else i
        t = self.get(f"crit.out_layers.{j}.{what}")
        if t is None and what == "weight" and self.tie_weight:
            t = self.get(f"transformer.word_emb.emb_layers.{j}.weight")
        if t is None:
            raise KeyError(f"crit.out_layers.{j}.{what} missing from the HuggingFace weights")
        return t[self.ends[i]:self.ends[i + 1]] if self.div_val == 1 else t

    def out_proj(self, i):
        if self.div_val == 1 and self.d_model == self.d_embed:
            return None
        t = self.get(f"crit.out_projs.{i}")
        if t is None and self.tie_projs[i]:
            t = self.in_proj(i)
        if t is None:
            raise KeyError(f"crit.out_projs.{i} missing from the HuggingFace weights")
        return t


def _rows(t: torch.Tensor, rows: List[int], fill: float = 0.0) -> torch.Tensor:
    """``t`` re-indexed by ``rows`` (-1: a new row of ``fill``)."""
    out = t.new_full((len(rows),) + t.shape[1:], fill)
    idx = torch.tensor(rows, dtype=torch.long)
    have = idx >= 0
    out[have] = t[idx[have]]
    return out


@torch.no_grad()
def init_from_hf(net, state: Mapping[str, torch.Tensor], config: Mapping, order: List[int]) -> None:
    """Sets every weight of ``net`` (a :class:`TransformerXLNetwork` built with :func:`cfg_from_hf`'s
    options for a vocabulary of ``len(order)`` words) from the HF state dict ``state``."""
    hf = _HF(state, config)
    emb_in, soft = net.embed_tokens, net.adaptive_softmax
    lo = 0
    for i, hi in enumerate(soft.cutoff):
        rows = [o - hf.ends[i] if o >= 0 else -1 for o in order[lo:hi]]
        if any(r >= 0 and not 0 <= r < hf.ends[i + 1] - hf.ends[i] for r in rows):
            raise ValueError(f"words of band {i} come from another HuggingFace band")
        e_in = _rows(hf.in_emb(i), rows)
        w_out = _rows(hf.out_layer(i, "weight"), rows)
        soft.biases[i].copy_(_rows(hf.out_layer(i, "bias"), rows, MISSING_LOGIT))
        bands = [(emb_in.bands[i], e_in, hf.in_proj(i), hf.out_proj(i))]
        if emb_in.bands[i] is not soft.bands[i]:
            bands = [(emb_in.bands[i], e_in, hf.in_proj(i), None), (soft.bands[i], w_out, None, hf.out_proj(i))]
        for band, e, p, q in bands:
            a, b_in, b_out = factor_band(e, p, q, band.rank)
            band.emb.copy_(a)
            if band.in_proj is not None:
                band.in_proj.copy_(b_in)
            if band.out_proj is not None:
                band.out_proj.copy_(b_out)
        lo = hi
    q0 = hf.out_proj(0)
    cw = hf.get("crit.cluster_weight")
    if cw is not None and cw.numel():
        soft.class_proj.weight.copy_(cw if q0 is None else cw @ q0.t())
        soft.class_proj.bias.copy_(hf.get("crit.cluster_bias"))
    if net.r_w_bias is not None:
        for name in ("r_w_bias", "r_r_bias"):
            t = hf.get(f"transformer.{name}")
            getattr(net, name).copy_(t if t is not None else hf.get(f"transformer.layers.0.dec_attn.{name}"))
    for li, layer in enumerate(net.layers):
        p = f"transformer.layers.{li}."
        attn, ff = layer.dec_attn, layer.pos_ff
        q, k, v = hf.get(p + "dec_attn.qkv_net.weight").chunk(3, dim=0)
        for mod, w in ((attn.q_proj, q), (attn.k_proj, k), (attn.v_proj, v),
                       (attn.r_net, hf.get(p + "dec_attn.r_net.weight")), (attn.o_net, hf.get(p + "dec_attn.o_net.weight"))):
            mod.init_from_dense(w)
        ff.fc1.init_from_dense(hf.get(p + "pos_ff.CoreNet.0.weight"), hf.get(p + "pos_ff.CoreNet.0.bias"))
        ff.fc2.init_from_dense(hf.get(p + "pos_ff.CoreNet.3.weight"), hf.get(p + "pos_ff.CoreNet.3.bias"))
        for mod, key in ((attn.layer_norm, "dec_attn.layer_norm"), (ff.layer_norm, "pos_ff.layer_norm")):
            mod.weight.copy_(hf.get(p + key + ".weight"))
            mod.bias.copy_(hf.get(p + key + ".bias"))
        if attn.r_w_bias is not None:
            attn.r_w_bias.copy_(hf.get(p + "dec_attn.r_w_bias"))
            attn.r_r_bias.copy_(hf.get(p + "dec_attn.r_r_bias"))
