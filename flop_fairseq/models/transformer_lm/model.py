"""``flop_transformer_lm``: fairseq's transformer LM with FLOP adaptive input/softmax bands
and, optionally, FLOP-factorized decoder layers."""

import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq import options
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerDecoder
from fairseq.models.transformer_lm import (
    TransformerLanguageModel,
    TransformerLanguageModelConfig,
    transformer_lm_baevski_gbw,
    transformer_lm_baevski_wiki103,
)
from fairseq.utils import safe_getattr
import torch
from torch import nn

from ...core import (
    AugmentedLagrangian,
    GatedLowRankBand,
    GatedLowRankLinear,
    LowRankAdaptiveInput,
    LowRankAdaptiveSoftmax,
    PrunableModel,
    adaptive_band_slots,
    band_slices,
    complete_cutoff,
    match_structure,
)
from . import dense

logger = logging.getLogger(__name__)

# The matrices of a decoder layer that --flop-decoder-layers factorizes.
LAYER_MATRICES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")


@dataclass
class FlopTransformerLanguageModelConfig(TransformerLanguageModelConfig):
    flop_decoder_layers: bool = field(
        default=False,
        metadata={"help": "also factorize the attention and FFN matrices of every decoder layer "
                          "(FLOP's generic factorization), pruned in the same parameter budget"},
    )
    flop_init_keep_prob: Optional[float] = field(
        default=None,
        metadata={"help": "initial keep probability P(z > 0) of every hard-concrete gate (default: "
                          "max(0.99, 1 - 0.45/rank), which keeps the eval-mode mask at exactly 1, so a "
                          "converted model starts as the dense one; lower values prune sooner)"},
    )
    flop_temperature: float = field(
        default=2.0 / 3.0, metadata={"help": "temperature beta of the hard-concrete gates"}
    )
    flop_layer_rank_ratio: float = field(
        default=1.0,
        metadata={"help": "with --flop-decoder-layers: the rank of each factorized matrix as a fraction of "
                          "min(in, out) (1: full rank, the dense function; below 0.5 the factors cost less "
                          "than the dense matrix from the first update; flop-convert reports the SVD "
                          "truncation error)"},
    )


def _cutoff(value: Optional[str], vocab_size: int) -> List[int]:
    return complete_cutoff(options.eval_str_list(value, type=int), vocab_size)


def build_bands(args, vocab_size: int, padding_idx: int):
    """The FLOP bands of the adaptive input and softmax: ``(input_bands, output_bands, cutoff)``.

    With ``--tie-adaptive-weights`` each band is one :class:`GatedLowRankBand` used
    by both (the same object in both lists). The head band's tied output uses the
    band embedding with no projection while its input goes through one, so it
    keeps its own output factor (``|V_0| + 2d`` per component); tail bands share
    their projection with ``--tie-adaptive-proj`` (``|V_i| + d``), else carry two.
    Ranks are fairseq's band dims ``d_i = dim // factor^i``; each band's
    ``dense_count`` is the parameter count of the dense fairseq band it replaces.
    """
    gate_kw = dict(init_keep_prob=args.flop_init_keep_prob, temperature=args.flop_temperature)
    d_in, d_model, d_out = args.decoder_input_dim, args.decoder_embed_dim, args.decoder_output_dim
    if not args.adaptive_input or args.adaptive_softmax_cutoff is None:
        raise ValueError(
            "flop_transformer_lm prunes adaptive input and adaptive softmax bands: "
            "set --adaptive-input with --adaptive-input-cutoff and --adaptive-softmax-cutoff"
        )
    in_cut = _cutoff(args.adaptive_input_cutoff, vocab_size)
    out_cut = _cutoff(args.adaptive_softmax_cutoff, vocab_size)
    slices = band_slices(in_cut)
    if args.tie_adaptive_weights:
        if in_cut != out_cut or args.adaptive_input_factor != args.adaptive_softmax_factor or d_in != d_out:
            raise ValueError(
                "--tie-adaptive-weights needs equal input/softmax cutoffs and factors and "
                "--decoder-input-dim equal to --decoder-output-dim"
            )
        bands = []
        for i, words in enumerate(slices):
            rank = int(d_in // args.adaptive_input_factor ** i)
            tie_proj = i > 0 and args.tie_adaptive_proj
            # dense: band embedding + input projection (+ the softmax's own projection if untied)
            dense = len(words) * rank + d_model * rank + (0 if i == 0 or tie_proj else d_out * rank)
            bands.append(GatedLowRankBand(
                len(words), rank, d_model, has_input=True, has_output=True, tie_proj=tie_proj,
                padding_idx=padding_idx if i == 0 else None, dense_count=dense, output_dim=d_out, **gate_kw,
            ))
        return bands, bands, in_cut
    inputs = [
        GatedLowRankBand(
            len(words), int(d_in // args.adaptive_input_factor ** i), d_model, has_input=True, has_output=False,
            padding_idx=padding_idx if i == 0 else None,
            dense_count=(len(words) + d_model) * int(d_in // args.adaptive_input_factor ** i), **gate_kw,
        )
        for i, words in enumerate(slices)
    ]
    outputs = []
    for i, words in enumerate(band_slices(out_cut)):
        rank = d_out if i == 0 else int(d_out // args.adaptive_softmax_factor ** i)
        dense = len(words) * d_out if i == 0 else (len(words) + d_out) * rank
        outputs.append(GatedLowRankBand(
            len(words), rank, d_model, has_input=False, has_output=True, dense_count=dense, output_dim=d_out,
            **gate_kw,
        ))
    return inputs, outputs, out_cut


class FlopTransformerDecoder(TransformerDecoder):
    """fairseq's ``TransformerDecoder`` with a :class:`LowRankAdaptiveSoftmax` and, with
    ``--flop-decoder-layers``, :class:`GatedLowRankLinear` attention/FFN matrices."""

    def __init__(self, args, dictionary, embed_tokens, output_bands, output_cutoff):
        # the base class calls the build_* hooks below with a TransformerConfig that
        # lacks the FLOP options, so they are handed over here
        self._flop_output = (output_bands, output_cutoff)
        self._flop_layers = (
            safe_getattr(args, "flop_decoder_layers", False), args.flop_init_keep_prob, args.flop_temperature,
            args.flop_layer_rank_ratio,
        )
        super().__init__(args, dictionary, embed_tokens, no_encoder_attn=True)
        del self._flop_output, self._flop_layers

    def build_output_projection(self, args, dictionary, embed_tokens):
        bands, cutoff = self._flop_output
        self.adaptive_softmax = LowRankAdaptiveSoftmax(
            bands, cutoff, args.decoder_output_dim, dropout=args.adaptive_softmax_dropout
        )

    def build_decoder_layer(self, args, no_encoder_attn=False):
        layer = super().build_decoder_layer(args, no_encoder_attn)
        enabled, init_keep_prob, temperature, rank_ratio = self._flop_layers
        if enabled:
            factorize_layer(layer, init_keep_prob, temperature, rank_ratio)
        return layer


def factorize_layer(layer: nn.Module, init_keep_prob: float, temperature: float, rank_ratio: float = 1.0) -> None:
    """In place: the attention and FFN ``nn.Linear`` of ``layer`` become
    :class:`GatedLowRankLinear` of rank ``ceil(rank_ratio * min(in, out))``, randomly
    initialised with a dense layer's variance: no SVD here, since the weights are either
    trained from scratch or loaded (``flop-convert`` computes the SVD of the dense model's
    weights once)."""
    for path in LAYER_MATRICES:
        parent_path, attr = path.rsplit(".", 1) if "." in path else ("", path)
        parent = layer.get_submodule(parent_path) if parent_path else layer
        dense = getattr(parent, attr)
        rank = max(1, math.ceil(rank_ratio * min(dense.in_features, dense.out_features)))
        setattr(parent, attr, GatedLowRankLinear(
            dense.in_features, dense.out_features, rank=rank, bias=dense.bias is not None,
            init_keep_prob=init_keep_prob, temperature=temperature,
        ).to(dense.weight.dtype))
    # fairseq's fused attention path reads q_proj.weight etc.; factorized projections have none
    layer.self_attn._set_skip_embed_dim_check()


@register_model("flop_transformer_lm", dataclass=FlopTransformerLanguageModelConfig)
class FlopTransformerLanguageModel(TransformerLanguageModel, PrunableModel):
    """Transformer LM whose adaptive input/softmax bands (and optionally decoder
    layers) are FLOP low-rank products ``P diag(z) Q`` with hard-concrete gates.

    ``flop_lagrangian`` (an :class:`AugmentedLagrangian`) holds the lambdas and the
    position in the target schedule, so they are saved with the model. A compacted
    checkpoint (``flop-compact``) has plain low-rank modules of the kept ranks and
    no Lagrangian; :meth:`load_state_dict` rebuilds the modules in the form the
    checkpoint holds, so the same arch loads gated and compact checkpoints.
    """

    # fairseq's dense archs this model converts from (flop-convert), and the FLOP arch of each
    DENSE_ARCHS = dense.DENSE_ARCHS

    def __init__(self, decoder):
        super().__init__(decoder)
        self.flop_lagrangian = AugmentedLagrangian()
        self.flop_decoder_layers = False

    def flop_bands(self):
        return adaptive_band_slots(self.decoder.embed_tokens, self.decoder.adaptive_softmax)

    def flop_layer_matrices(self):
        if not self.flop_decoder_layers:
            return []
        return [(f"decoder.layers.{i}.{path}", layer.get_submodule(path))
                for i, layer in enumerate(self.decoder.layers) for path in LAYER_MATRICES]

    @staticmethod
    def vocab_size_from_state(model_state) -> int:
        return dense.vocab_size_from_state(model_state)

    @staticmethod
    def upgrade_dense_state(cfg_model, model_state) -> None:
        dense.upgrade_dense_state(cfg_model, model_state)

    @staticmethod
    def dense_prunable_tensors(dense_model):
        return dense.band_tensors(dense_model)

    @torch.no_grad()
    def init_from_dense(self, dense_model, cfg_model) -> dict:
        return dense.init_from_dense(self, dense_model, tied=bool(cfg_model.get("tie_adaptive_weights")))

    @classmethod
    def hub_models(cls):
        return {}

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """fairseq's hub loader, able to read pre-hydra checkpoints (see the plugin)."""
        from ...tools import pickle_allowlist

        pickle_allowlist.register()
        return super().from_pretrained(*args, **kwargs)

    @classmethod
    def build_model(cls, args, task):
        try:
            return cls._build(args, task)
        except ValueError as e:  # a setting that cannot work: one line, before any training
            raise SystemExit(f"flop_transformer_lm: {e}")

    @classmethod
    def _build(cls, args, task):
        _flop_defaults(args)
        if safe_getattr(args, "decoder_layers_to_keep", None):
            args.decoder_layers = len(args.decoder_layers_to_keep.split(","))
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(args, "tokens_per_sample", 1024)
        if safe_getattr(args, "character_embeddings", False):
            raise ValueError("flop_transformer_lm does not support --character-embeddings")
        dictionary = task.source_dictionary
        input_bands, output_bands, cutoff = build_bands(args, len(dictionary), dictionary.pad())
        embed_tokens = LowRankAdaptiveInput(
            input_bands, complete_cutoff(options.eval_str_list(args.adaptive_input_cutoff, type=int),
                                         len(dictionary)),
            args.decoder_embed_dim, dictionary.pad(),
        )
        decoder = FlopTransformerDecoder(args, task.target_dictionary, embed_tokens, output_bands, cutoff)
        model = cls(decoder)
        # a compact layer matrix may be a plain nn.Linear: only the config says it was pruned
        model.flop_decoder_layers = bool(args.flop_decoder_layers)
        return model

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        words, types = len(self.decoder.dictionary), dense.vocab_size_from_state(state_dict)
        if words != types:
            raise SystemExit(f"flop_transformer_lm: the checkpoint was trained with {types:,} types, this "
                             f"dictionary has {words:,}: give the data directory (dict.txt) it was trained on")
        match_structure(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


def _flop_defaults(args):
    args.flop_decoder_layers = safe_getattr(args, "flop_decoder_layers", False)
    args.flop_init_keep_prob = safe_getattr(args, "flop_init_keep_prob", None)
    args.flop_temperature = safe_getattr(args, "flop_temperature", 2.0 / 3.0)
    args.flop_layer_rank_ratio = safe_getattr(args, "flop_layer_rank_ratio", 1.0)
    if not 0.0 < args.flop_layer_rank_ratio <= 1.0:
        raise ValueError(f"--flop-layer-rank-ratio must be in (0, 1], got {args.flop_layer_rank_ratio}")
    # adaptive input/softmax are what FLOP prunes: on by default
    args.adaptive_input = safe_getattr(args, "adaptive_input", True)


@register_model_architecture("flop_transformer_lm", "flop_transformer_lm_wiki103")
def flop_transformer_lm_wiki103(args):
    """fairseq's ``transformer_lm_wiki103`` (Baevski & Auli 2019): 16 layers, d=1024,
    tied adaptive input/softmax with cutoffs 20000,60000 and factor 4."""
    _flop_defaults(args)
    transformer_lm_baevski_wiki103(args)


@register_model_architecture("flop_transformer_lm", "flop_transformer_lm_gbw")
def flop_transformer_lm_gbw(args):
    """fairseq's ``transformer_lm_gbw`` (set the adaptive cutoffs for your vocabulary)."""
    _flop_defaults(args)
    transformer_lm_baevski_gbw(args)
