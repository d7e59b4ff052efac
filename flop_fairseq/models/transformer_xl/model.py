"""``flop_transformer_xl``: Transformer-XL (Dai et al. 2019) as a fairseq language model whose adaptive
bands and attention/FFN matrices are FLOP low-rank products, pruned under one budget with
``flop_adaptive_loss``. Train and evaluate it with fairseq's ``truncated_bptt_lm`` task, which feeds
every batch row consecutive segments; the model keeps the memory per row."""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import FairseqDataclass
from fairseq.models import FairseqIncrementalDecoder, FairseqLanguageModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr
from omegaconf import II
import torch

from ...core import AugmentedLagrangian, PrunableModel, adaptive_band_slots, match_structure
from .compact_load import restructure_bands
from .hub import TxlHubInterface, register_truncated_bptt_lm
from .network import TransformerXLNetwork, TxlSpec


@dataclass
class FlopTransformerXLConfig(FairseqDataclass):
    # defaults: Transformer-XL's WikiText-103 base model (flop_transformer_xl_wt103_base)
    n_layer: int = field(default=16, metadata={"help": "number of layers"})
    d_model: int = field(default=410, metadata={"help": "model dimension"})
    n_head: int = field(default=10, metadata={"help": "attention heads"})
    d_head: int = field(default=41, metadata={"help": "dimension of each head"})
    d_inner: int = field(default=2100, metadata={"help": "FFN inner dimension"})
    d_embed: int = field(default=0, metadata={"help": "adaptive embedding dimension d_embed (0: d_model)"})
    div_val: int = field(default=1, metadata={"help": "band i has dimension d_embed / div_val^i"})
    cutoffs: str = field(default="20000,40000,200000", metadata={"help": "adaptive band cutoffs (those >= "
                                                                          "the vocabulary size are dropped)"})
    untie_weight: bool = field(default=False, metadata={"help": "separate input and output band embeddings"})
    tie_projs: str = field(default="0,1,1,1", metadata={
        "help": "per band, 1 if the softmax shares the input projection (Transformer-XL's tie_projs)"})
    untie_r: bool = field(default=False, metadata={"help": "per-layer r_w_bias / r_r_bias"})
    pre_lnorm: bool = field(default=False, metadata={"help": "layer norm before attention/FFN"})
    mem_len: int = field(default=150, metadata={"help": "cached hidden states per layer (0: no memory)"})
    clamp_len: int = field(default=-1, metadata={"help": "relative distances above this use this (-1: none)"})
    same_length: bool = field(default=False, metadata={"help": "every query attends to mem_len keys"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    dropatt: float = field(default=0.0, metadata={"help": "attention-probability dropout"})
    layer_norm_eps: float = field(default=1e-5, metadata={"help": "layer norm epsilon"})
    init_zero_mems: bool = field(default=False, metadata={
        "help": "start every stream with mem_len zero vectors of memory per layer, as HuggingFace's "
                "TransfoXLLMHeadModel does when called without mems (default: an empty memory, as "
                "Transformer-XL's own code)"})
    flop_init_keep_prob: Optional[float] = field(default=None, metadata={
        "help": "initial keep probability P(z > 0) of every gate (default max(0.99, 1 - 0.45/rank))"})
    flop_temperature: float = field(default=2.0 / 3.0, metadata={"help": "hard-concrete temperature"})
    max_target_positions: int = II("task.max_target_positions")


register_truncated_bptt_lm()
_DEFAULTS = FlopTransformerXLConfig()


def _get(cfg, name):
    return safe_getattr(cfg, name, getattr(_DEFAULTS, name))


def spec_from_cfg(cfg, vocab_size: int, padding_idx: int) -> TxlSpec:
    ints = [int(c) for c in str(_get(cfg, "cutoffs")).replace(" ", "").split(",") if c]
    projs = [c.strip().lower() in ("1", "true") for c in str(_get(cfg, "tie_projs")).split(",") if c.strip()]
    return TxlSpec(
        vocab_size=vocab_size, cutoffs=ints, d_model=_get(cfg, "d_model"), d_embed=_get(cfg, "d_embed") or None,
        n_head=_get(cfg, "n_head"), d_head=_get(cfg, "d_head"), d_inner=_get(cfg, "d_inner"),
        n_layer=_get(cfg, "n_layer"), div_val=_get(cfg, "div_val"), tie_weight=not _get(cfg, "untie_weight"),
        tie_projs=projs, untie_r=bool(_get(cfg, "untie_r")), pre_lnorm=bool(_get(cfg, "pre_lnorm")),
        mem_len=_get(cfg, "mem_len"), clamp_len=_get(cfg, "clamp_len"), same_length=bool(_get(cfg, "same_length")),
        dropout=_get(cfg, "dropout"), dropatt=_get(cfg, "dropatt"), layer_norm_eps=_get(cfg, "layer_norm_eps"),
        padding_idx=padding_idx, init_keep_prob=_get(cfg, "flop_init_keep_prob"),
        temperature=_get(cfg, "flop_temperature"), init_zero_mems=bool(_get(cfg, "init_zero_mems")),
    )


class FlopTransformerXLDecoder(FairseqIncrementalDecoder):
    """fairseq's view of :class:`TransformerXLNetwork`: ``forward(src_tokens)`` -> ``(features (B, T, d),
    {"attn": None})``;
    ``adaptive_softmax`` turns features into log-probabilities (fairseq's ``get_normalized_probs``)."""

    def __init__(self, dictionary, spec: TxlSpec, max_positions: int):
        super().__init__(dictionary)
        self.net = TransformerXLNetwork(spec)
        self._max_positions = max_positions

    @property
    def adaptive_softmax(self):
        return self.net.adaptive_softmax

    @adaptive_softmax.setter
    def adaptive_softmax(self, value):
        # FairseqDecoder.__init__ sets None before the network exists; the network owns the softmax
        if value is not None:
            raise AttributeError("the adaptive softmax belongs to decoder.net")

    @property
    def embed_tokens(self):
        return self.net.embed_tokens

    def forward(self, src_tokens, src_lengths=None, incremental_state=None, **kwargs):
        """Without ``incremental_state``: the next segment of each row's stream (the memory the network
        carries). With it (fairseq's ``SequenceGenerator``): ``src_tokens`` is the whole prefix so far
        and only the positions the state has not seen are computed, from its cached memory."""
        if incremental_state is None:
            return self.net(src_tokens), {"attn": None}
        state = self.get_incremental_state(incremental_state, "memory") or {}
        seen = int(state.pop("seen", 0))
        new = src_tokens[:, seen:]
        out = self.net.forward_step(new.t(), state).transpose(0, 1)
        state["seen"] = torch.tensor(seen + new.size(1))
        self.set_incremental_state(incremental_state, "memory", state)
        return out, {"attn": None}

    def extract_features(self, src_tokens, **kwargs):
        return self.forward(src_tokens, **kwargs)

    def reorder_incremental_state(self, incremental_state, new_order):
        state = self.get_incremental_state(incremental_state, "memory")
        if state is not None:
            self.net.reorder_state(state, new_order)
            self.set_incremental_state(incremental_state, "memory", state)

    def output_layer(self, features, **kwargs):
        raise NotImplementedError("scores come from adaptive_softmax (get_normalized_probs)")

    def max_positions(self):
        return self._max_positions


@register_model("flop_transformer_xl", dataclass=FlopTransformerXLConfig)
class FlopTransformerXLModel(FairseqLanguageModel, PrunableModel):
    """Transformer-XL with FLOP: every band a :class:`TxlGatedBand` (one gate vector shared by tied input
    and output), every q/k/v, ``r_net``, ``o_net`` and FFN matrix a :class:`GatedLowRankLinear`.
    ``flop_lagrangian`` holds the multipliers. :meth:`load_state_dict` rebuilds the modules in the form
    a checkpoint holds, so the same arch loads gated and compact checkpoints."""

    DENSE_ARCHS = {}  # no dense fairseq arch converts to it: flop-convert reads a HuggingFace directory

    def __init__(self, decoder):
        super().__init__(decoder)
        self.flop_lagrangian = AugmentedLagrangian()

    @classmethod
    def build_model(cls, cfg, task):
        dictionary = task.target_dictionary
        spec = spec_from_cfg(cfg, len(dictionary), dictionary.pad())
        try:
            spec.check()
        except ValueError as e:  # a setting that cannot work: one line, before any training
            raise SystemExit(f"flop_transformer_xl: {e}")
        max_positions = safe_getattr(cfg, "max_target_positions", None) or safe_getattr(
            task, "max_target_positions", None) or 1_000_000
        return cls(FlopTransformerXLDecoder(dictionary, spec, int(max_positions)))

    def flop_bands(self):
        return adaptive_band_slots(self.decoder.net.embed_tokens, self.decoder.net.adaptive_softmax)

    def flop_layer_matrices(self):
        return [(f"decoder.net.{name}", m) for name, m in self.decoder.net.layer_matrices()]

    @staticmethod
    def vocab_size_from_state(state_dict) -> int:
        biases = sorted((k for k in state_dict if k.startswith("decoder.net.adaptive_softmax.biases.")),
                        key=lambda k: int(k.rsplit(".", 1)[1]))
        return sum(int(state_dict[k].numel()) for k in biases)

    @classmethod
    def hub_models(cls):
        return {}

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".", **kwargs):
        """fairseq's hub interface (``score``, ``sample``, ``generate``) for a gated or compact checkpoint
        ``model_name_or_path/checkpoint_file``, with the dictionary of ``data_name_or_path``."""
        from fairseq import hub_utils

        loaded = hub_utils.from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path,
                                           archive_map=cls.hub_models(), **kwargs)
        return TxlHubInterface(loaded["args"], loaded["task"], loaded["models"])

    def max_decoder_positions(self):
        # the memory makes any length decodable: generation is bounded by its own max_len only
        return 1 << 30

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        words, types = len(self.decoder.dictionary), self.vocab_size_from_state(state_dict)
        if words != types:
            raise SystemExit(f"flop_transformer_xl: the checkpoint was trained with {types:,} types, this "
                             f"dictionary has {words:,}: give the data directory (dict.txt) it was trained on")
        restructure_bands(self.decoder.net, state_dict, "decoder.net.")
        match_structure(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


def _set(args, name, value):
    setattr(args, name, safe_getattr(args, name, value))


@register_model_architecture("flop_transformer_xl", "flop_transformer_xl_wt103_base")
def flop_transformer_xl_wt103_base(args):
    """Transformer-XL's WikiText-103 base model (``run_wt103_base.sh``): 16 layers, d 410, 10 heads of 41,
    FFN 2100, dropout 0.1, dropatt 0, memory 150, cutoffs 20000,40000,200000, div_val 1, tied
    weights, projections tied but the first (none exist at d_embed = d_model), per-layer r biases."""
    for name, value in dict(n_layer=16, d_model=410, n_head=10, d_head=41, d_inner=2100, d_embed=0, div_val=1,
                            cutoffs="20000,40000,200000", untie_weight=False, tie_projs="0,1,1,1", untie_r=True,
                            pre_lnorm=False, mem_len=150, clamp_len=-1, same_length=False, dropout=0.1,
                            dropatt=0.0).items():
        _set(args, name, value)


@register_model_architecture("flop_transformer_xl", "flop_transformer_xl_wt103_large")
def flop_transformer_xl_wt103_large(args):
    """The published ``transfo-xl-wt103``: 18 layers, d 1024, 16 heads of 64, FFN 4096, div_val 4,
    dropout and dropatt 0.2, untied r biases, projections tied but the first, training memory 384
    (evaluate with ``--model-overrides '{"mem_len": 1600, "clamp_len": 1000, "same_length": True}'``)."""
    for name, value in dict(n_layer=18, d_model=1024, n_head=16, d_head=64, d_inner=4096, d_embed=1024, div_val=4,
                            cutoffs="20000,40000,200000", untie_weight=False, tie_projs="0,1,1,1", untie_r=True,
                            pre_lnorm=False, mem_len=384, clamp_len=-1, same_length=False, dropout=0.2,
                            dropatt=0.2).items():
        _set(args, name, value)
