"""A HuggingFace Transformer-XL directory -> FLOP checkpoint + fairseq ``dict.txt`` (``flop-convert DIR OUT.pt``).

The directory holds ``config.json``, ``model.safetensors`` or ``pytorch_model.bin`` (read as weights
only: ``safetensors`` or ``torch.load(weights_only=True)``) and, where there is one, the tokenizer's
vocabulary: ``vocab.pkl`` (a pickle of the tokenizer's whole ``__dict__``: read with
:class:`_VocabUnpickler`, which builds only plain containers and stubs every other class, so
nothing in the file runs) or ``vocab.txt`` (one symbol per line), then the tokenizer's added tokens
(``added_tokens.json``, ``tokenizer_config.json``) at their ids.

fairseq's dictionary puts ``<s> <pad> </s> <unk>`` at 0..3; the model's ``<eos>`` becomes ``</s>``
and its ``<unk>`` ``<unk>``, the two symbols it lacks get probability 0 (:data:`MISSING_LOGIT`),
and the other words keep their order, so each band's cutoff moves by the same count.
"""

import collections
import json
import os
import pickle
from typing import List, Optional, Tuple

import torch

from .checkpoint import CheckpointError, build_model, save_checkpoint_atomic

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hf_directory(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


class _Stub:
    """Stands for any class the vocabulary pickle names: accepts any arguments and state."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        return _Stub()


class _VocabUnpickler(pickle.Unpickler):
    """Builds plain containers only; every other global (``re._compile``, sacremoses, transformers'
    ``Trie`` and ``AddedToken``, ``copyreg`` helpers) becomes :class:`_Stub`, so no code from the
    file is imported or run."""

    SAFE = {("collections", "OrderedDict"): collections.OrderedDict,
            ("collections", "Counter"): collections.Counter,
            ("builtins", "set"): set, ("builtins", "frozenset"): frozenset}

    def find_class(self, module, name):
        return self.SAFE.get((module, name), _Stub)


def read_vocabulary(directory: str, vocab_size: Optional[int] = None) -> Optional[List[str]]:
    """The model's symbols by index, or None without a vocabulary file: the tokenizer's ``idx2sym``
    (``vocab.pkl``, else ``vocab.txt``) followed by its added tokens at their ids
    (:func:`read_added_tokens`) below ``vocab_size`` (one the model lacks has no embedding)."""
    pkl, txt = os.path.join(directory, "vocab.pkl"), os.path.join(directory, "vocab.txt")
    if os.path.isfile(pkl):
        with open(pkl, "rb") as f:
            data = _VocabUnpickler(f).load()
        if isinstance(data, dict) and isinstance(data.get("idx2sym"), list):
            symbols = [str(s) for s in data["idx2sym"]]
        elif isinstance(data, dict) and isinstance(data.get("sym2idx"), dict):
            symbols = [s for s, _ in sorted(data["sym2idx"].items(), key=lambda kv: kv[1])]
        else:
            raise CheckpointError(f"{pkl}: no idx2sym or sym2idx in the tokenizer's vocabulary")
    elif os.path.isfile(txt):
        with open(txt, encoding="utf-8") as f:
            symbols = [line.split()[0] for line in f if line.strip()]
    else:
        return None
    for i, token in sorted(read_added_tokens(directory).items()):
        if i < len(symbols):
            if symbols[i] != token:
                raise CheckpointError(f"{directory}: the tokenizer adds {token!r} at id {i}, which its vocabulary "
                                      f"gives to {symbols[i]!r}")
        elif vocab_size is None or i < vocab_size:
            if i != len(symbols):
                raise CheckpointError(f"{directory}: the tokenizer adds {token!r} at id {i}, after a gap "
                                      f"(its vocabulary and added tokens end at id {len(symbols) - 1})")
            symbols.append(token)
    return symbols


def read_added_tokens(directory: str) -> dict:
    """``{id: token}`` of the tokenizer's added tokens: HF's ``TransfoXLTokenizer`` adds ``<formula>``
    (at the vocabulary's length) whenever its vocabulary file lacks it, and records it in
    ``added_tokens.json`` (``{token: id}``) and ``tokenizer_config.json``'s ``added_tokens_decoder``
    (``{id: {"content": token}}``); both are read, and must agree."""
    found = {}
    added, config = os.path.join(directory, "added_tokens.json"), os.path.join(directory, "tokenizer_config.json")
    pairs = []
    if os.path.isfile(added):
        with open(added, encoding="utf-8") as f:
            pairs += [(int(i), str(t)) for t, i in json.load(f).items()]
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            decoder = json.load(f).get("added_tokens_decoder") or {}
        pairs += [(int(i), str(t["content"] if isinstance(t, dict) else t)) for i, t in decoder.items()]
    for i, token in pairs:
        if found.setdefault(i, token) != token:
            raise CheckpointError(f"{directory}: the tokenizer's files give id {i} to both {found[i]!r} and {token!r}")
    return found


def read_weights(directory: str) -> dict:
    for name in WEIGHT_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(path)
            return torch.load(path, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{directory}: no {' or '.join(WEIGHT_FILES)}")


def fairseq_order(symbols: List[str], eos: Optional[int], unk: Optional[int], cutoffs: List[int]
                  ) -> Tuple[List[int], List[int], List[str]]:
    """``(order, cutoffs, dict_symbols)``: ``order[n]`` the model index of fairseq word ``n`` (-1:
    none), the fairseq band cutoffs, and the symbols ``dict.txt`` lists (those after the 4 specials)."""
    if symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]:  # a model trained on a fairseq dictionary
        return list(range(len(symbols))), list(cutoffs), symbols[4:]
    found = [i for i in (eos, unk) if i is not None]
    if any(i >= cutoffs[0] for i in found):
        raise CheckpointError("the model's <eos>/<unk> are not in its first band; fairseq needs them at 2 and 3")
    order = [-1, -1, -1 if eos is None else eos, -1 if unk is None else unk]
    rest = [j for j in range(len(symbols)) if j not in found]
    dict_symbols = [symbols[j] for j in rest]
    specials = {"<s>", "<pad>", "</s>", "<unk>"}
    bad = [s for s in dict_symbols if s in specials or not s or any(c.isspace() for c in s)]
    if bad or len(set(dict_symbols)) != len(dict_symbols):
        raise CheckpointError(f"the vocabulary has symbols fairseq's dict.txt cannot hold: {bad[:5] or 'duplicates'}")
    shift = 4 - len(found)
    return order + rest, [c + shift for c in cutoffs], dict_symbols


def _hf_reference_logprobs(config: dict, weights: dict, tokens: torch.Tensor, segments: int):
    """HF's own log-probs for ``tokens`` ``(B, T)`` in ``segments`` segments with memory, from an
    empty memory and as HF starts when called without ``mems`` (``mem_len`` zero vectors):
    ``{"empty": (B, T, V), "zeros": (B, T, V)}``; None without ``transformers``."""
    try:
        from transformers import TransfoXLConfig, TransfoXLLMHeadModel
    except ImportError:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = TransfoXLLMHeadModel(TransfoXLConfig(**config)).eval()
    hf.load_state_dict(weights, strict=False)  # tied tensors saved once
    hf.tie_weights()
    empty = [torch.empty(0, tokens.size(0), int(config["d_model"]))] * int(config["n_layer"])
    found = {}
    with torch.no_grad():
        for name, mems in (("empty", empty), ("zeros", None)):
            out = []
            for seg in tokens.chunk(segments, dim=1):
                res = hf(input_ids=seg, mems=mems, return_dict=True)
                mems = res.mems
                out.append(res.prediction_scores)
            found[name] = torch.cat(out, dim=1)
    return found


def _flop_logprobs(model, tokens: torch.Tensor, segments: int, zeros: bool) -> torch.Tensor:
    """The converted model's log-probs for ``tokens`` ``(B, T)`` (fairseq ids), as :func:`_hf_reference_logprobs`."""
    net = model.decoder.net
    mems, out = net.initial_memory(tokens.size(0), net.embed_tokens.bands[0].emb, zeros=zeros), []
    for seg in tokens.chunk(segments, dim=1):
        h, mems = net.forward_segment(seg.t(), mems)
        out.append(net.adaptive_softmax.get_log_prob(h.transpose(0, 1), None))
    return torch.cat(out, dim=1)


def convert_hf(directory: str, out_path: str, dict_out: Optional[str] = None, init_keep_prob=None,
               tolerance: float = 1e-4, data_aware=None) -> dict:
    """Writes the FLOP checkpoint (arch ``flop_transformer_xl``) and ``dict.txt`` (``dict_out``, default
    next to ``out_path``); checks the function against HF's where ``transformers`` is installed, under
    both memory conventions: from an empty memory (Transformer-XL's, the converted model's default)
    and from ``mem_len`` zero vectors (HF's without ``mems``; the model option ``init_zero_mems``).
    Anything wrong with the directory is a :class:`CheckpointError`, raised before anything is written.
    ``data_aware`` (a :class:`~.calibration.DataAwareOptions`): the data-aware basis, as ``flop-convert``
    of a fairseq checkpoint (its calibration directory holds data preprocessed with this ``dict.txt``)."""
    from .calibration import DataAwareOptions

    try:
        return _convert_hf(directory, out_path, dict_out, init_keep_prob, tolerance, data_aware or DataAwareOptions())
    except (ValueError, KeyError, TypeError, OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{directory}: not a Transformer-XL directory flop-convert can read: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _write_dictionary(path: str, text: str) -> None:
    """Through a temporary file and a rename (the caller has refused a file of other content)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _convert_hf(directory, out_path, dict_out, init_keep_prob, tolerance, data_aware) -> dict:
    from ..core import count_params
    from .calibration import LOSSES_KEY, apply_data_aware
    from ..models.transformer_xl.from_hf import cfg_from_hf, init_from_hf

    dict_out = dict_out or os.path.join(os.path.dirname(os.path.abspath(out_path)), "dict.txt")
    for target in (out_path, dict_out):
        if not os.path.isdir(os.path.dirname(os.path.abspath(target))):
            raise CheckpointError(f"{os.path.dirname(os.path.abspath(target))}: output directory does not exist")
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    weights = read_weights(directory)
    vocab_size = int(config["vocab_size"])
    symbols = read_vocabulary(directory, vocab_size)
    if symbols is None:
        symbols = [f"<hf{j}>" for j in range(vocab_size)]
        eos, unk = config.get("eos_token_id", 0), None
    else:
        if len(symbols) != vocab_size:
            raise CheckpointError(f"vocabulary of {len(symbols)} symbols (the tokenizer's vocabulary file and added "
                                  f"tokens) for a model of {vocab_size}")
        eos = symbols.index("<eos>") if "<eos>" in symbols else config.get("eos_token_id")
        unk = symbols.index("<unk>") if "<unk>" in symbols else None
    order, cutoffs, dict_symbols = fairseq_order(symbols, eos, unk, list(config["cutoffs"]))
    dict_text = "".join(f"{s} {len(dict_symbols) - i}\n" for i, s in enumerate(dict_symbols))
    if os.path.exists(dict_out) and open(dict_out, encoding="utf-8").read() != dict_text:
        raise CheckpointError(f"{dict_out} exists and holds another vocabulary; choose another path with --dict")
    cfg_model = {"_name": "flop_transformer_xl", **cfg_from_hf(config, cutoffs),
                 "flop_init_keep_prob": init_keep_prob, "flop_temperature": 2.0 / 3.0,
                 # written out: fairseq's --model-overrides only replaces options a checkpoint holds
                 "init_zero_mems": False,
                 "max_target_positions": int(config.get("tgt_len") or 1024)}
    stream = data_aware.stream(len(order))
    model = build_model(cfg_model, len(order))
    init_from_hf(model.decoder.net, weights, config, order)
    done = apply_data_aware(model, data_aware, stream, len(order), init_keep_prob)
    model.eval()

    # the function check: the same token stream through both, 3 segments with memory
    g = torch.Generator().manual_seed(0)
    hf_tokens = torch.randint(0, vocab_size, (2, 24), generator=g)
    inverse = torch.empty(vocab_size, dtype=torch.long)
    inverse[torch.tensor([o for o in order if o >= 0])] = torch.tensor([n for n, o in enumerate(order) if o >= 0])
    ref = _hf_reference_logprobs(config, weights, hf_tokens, 3)
    diffs = {}
    if ref is not None:
        from ..core import gates_bypassed

        with torch.no_grad(), gates_bypassed(model):
            for name in ("empty", "zeros"):
                ours = _flop_logprobs(model, inverse[hf_tokens], 3, zeros=name == "zeros")
                diffs[name] = (ours[:, :, inverse] - ref[name]).abs().max().item()
        if not max(diffs.values()) <= tolerance:
            raise CheckpointError(f"the converted model differs from HuggingFace's (max |log p| difference "
                                  f"{max(diffs.values()):.2e})")

    tokens = int(config.get("tgt_len") or 128)
    state = {
        "cfg": {"_name": None, "common": {}, "model": cfg_model, "criterion": {"_name": "adaptive_loss"},
                "task": {"_name": "truncated_bptt_lm", "data": os.path.dirname(os.path.abspath(dict_out)),
                         "tokens_per_sample": tokens, "max_target_positions": cfg_model["max_target_positions"]}},
        "model": model.state_dict(), "args": None, "criterion": None,
        # what fairseq's checkpoint loading expects of a fresh model: no updates yet
        "optimizer_history": [{"criterion_name": "AdaptiveLoss", "optimizer_name": "none",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0}}, "last_optimizer_state": None,
    }
    if "losses" in done:
        state[LOSSES_KEY] = done["losses"]
    size = save_checkpoint_atomic(state, out_path, os.path.join(directory, "config.json"))
    _write_dictionary(dict_out, dict_text)  # after the checkpoint: a failed conversion writes neither
    return {"arch": "flop_transformer_xl", "max_logprob_diff": diffs.get("empty"),
            "max_logprob_diff_zero_mems": diffs.get("zeros"), "file_bytes": size, "dict": dict_out,
            "num_words": len(order), "cutoffs": cutoffs, "counts": count_params(model),
            "groups": len(model.flop_bands()) + len(model.flop_layer_matrices()), **done}
