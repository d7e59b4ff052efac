"""flop_transformer_xl: relative attention against a slow reference, segment memory, equivalence with
HuggingFace's TransfoXLLMHeadModel (transformers 4.35.2), the WikiText-103 presets' parameter counts,
compaction, and fairseq-train / flop-compact / fairseq-eval-lm / flop-convert end to end."""

import copy
import json
import math
import os
import pickle
import re
import warnings
from types import SimpleNamespace

import pytest
import torch

from cli_driver import Batch
from conftest import REPO, USER_DIR
from flop_fairseq.core import compact_model, count_params, gated_modules
from flop_fairseq.models.transformer_xl.attention import RelMultiHeadAttention, rel_shift
from flop_fairseq.models.transformer_xl.bands import ProjectionFreeBand
from flop_fairseq.models.transformer_xl.from_hf import cfg_from_hf, init_from_hf
from flop_fairseq.models.transformer_xl.layer import PositionalEmbedding
from flop_fairseq.models.transformer_xl.model import spec_from_cfg
from flop_fairseq.models.transformer_xl.network import TransformerXLNetwork, TxlSpec
from flop_fairseq.tools.checkpoint import CheckpointError
from flop_fairseq.tools.fairseq_log import parse_eval_lm
from flop_fairseq.tools.hf_transfo_xl import read_vocabulary

torch.set_num_threads(1)
SMALL = dict(vocab_size=60, cutoffs=[10, 30], d_model=16, n_head=2, d_head=8, d_inner=32, n_layer=2, dropout=0.0)


def test_rel_shift_puts_distance_i_plus_mlen_minus_j_at_i_j():
    qlen, mlen = 4, 3
    klen = qlen + mlen
    # column c of x holds distance klen - 1 - c (Transformer-XL's R order)
    x = (klen - 1 - torch.arange(klen)).float().expand(qlen, klen)[:, :, None] + 100 * torch.arange(qlen)[:, None, None]
    y = rel_shift(x)[:, :, 0]
    for i in range(qlen):
        for j in range(i + mlen + 1):
            assert y[i, j] == (i + mlen - j) + 100 * i


@pytest.mark.parametrize("pre_lnorm", [False, True])
def test_attention_matches_slow_reference(pre_lnorm):
    torch.manual_seed(0)
    n_head, d_head, d, qlen, mlen, bsz = 2, 4, 8, 5, 3, 2
    attn = RelMultiHeadAttention(n_head, d, d_head, dropout=0.0, pre_lnorm=pre_lnorm, own_biases=True).eval()
    with torch.no_grad():
        attn.layer_norm.weight.normal_(1.0, 0.3)
        attn.layer_norm.bias.normal_(0.0, 0.3)
    w, mems = torch.randn(qlen, bsz, d), torch.randn(mlen, bsz, d)
    klen = qlen + mlen
    r = PositionalEmbedding(d)(torch.arange(klen - 1, -1, -1.0))
    mask = torch.triu(torch.ones(qlen, klen, dtype=torch.bool), diagonal=1 + mlen)
    with torch.no_grad():
        fast = attn(w, r, mask, mems)
        cat = torch.cat([mems, w], 0)
        inp = attn.layer_norm(cat) if pre_lnorm else cat
        ref = torch.zeros(qlen, bsz, d)
        for b in range(bsz):
            heads = []
            for n in range(n_head):
                sl = slice(n * d_head, (n + 1) * d_head)
                scores = torch.full((qlen, klen), -math.inf)
                for i in range(qlen):
                    q = attn.q_proj(inp[mlen + i, b])[sl]
                    for j in range(i + mlen + 1):  # causal: keys up to the query's own position
                        k = attn.k_proj(inp[j, b])[sl]
                        dist = torch.tensor([float(i + mlen - j)])
                        rk = attn.r_net(PositionalEmbedding(d)(dist)[0, 0])[sl]
                        scores[i, j] = ((q + attn.r_w_bias[n]) @ k + (q + attn.r_r_bias[n]) @ rk) / math.sqrt(d_head)
                prob = scores.softmax(dim=1)
                heads.append(prob @ torch.stack([attn.v_proj(inp[j, b])[sl] for j in range(klen)]))
            out = attn.o_net(torch.cat(heads, dim=1))
            ref[:, b] = w[:, b] + out if pre_lnorm else attn.layer_norm(w[:, b] + out)
    assert (fast - ref).abs().max() < 1e-5


@pytest.mark.parametrize("pre_lnorm", [False, True])
def test_memory_gives_second_segment_the_uncached_context(pre_lnorm):
    torch.manual_seed(0)
    net = TransformerXLNetwork(TxlSpec(**SMALL, div_val=2, mem_len=7, pre_lnorm=pre_lnorm, untie_r=True)).eval()
    tokens = torch.randint(0, 60, (3, 13))
    with torch.no_grad():
        first, second = net(tokens[:, :6]), net(tokens[:, 6:])  # the memory holds the 6 positions of the first
        net.mem_len = 13
        whole, _ = net.forward_segment(tokens.t(), None)
    whole = whole.transpose(0, 1)
    assert (first - whole[:, :6]).abs().max() < 1e-5
    assert (second - whole[:, 6:]).abs().max() < 1e-5
    assert net.memory.mems is not None and net.memory.mems[0].shape == (7, 3, 16)
    net.train()  # a switch between training and evaluation starts a new stream
    assert net.memory.mems is None


def test_memory_keeps_only_mem_len_positions():
    torch.manual_seed(0)
    net = TransformerXLNetwork(TxlSpec(**SMALL, mem_len=4)).eval()
    tokens = torch.randint(0, 60, (2, 12))
    with torch.no_grad():
        outs = [net(seg) for seg in tokens.split(4, dim=1)]
        # the third segment's memory is the 4 positions of the second (their states given the first)
        _, mems = net.forward_segment(tokens[:, :8].t(), None)
        h3, _ = net.forward_segment(tokens[:, 8:].t(), mems)
        whole, _ = net.forward_segment(tokens.t(), None)
    assert [m.shape for m in mems] == [(4, 2, 16)] * 2
    assert (outs[2] - h3.transpose(0, 1)).abs().max() < 1e-5
    assert (outs[2] - whole[8:].transpose(0, 1)).abs().max() > 1e-3  # the first segment is out of reach


def _log_probs(net, h):
    return net.adaptive_softmax.get_log_prob(h.transpose(0, 1), None)


@pytest.mark.parametrize("kw", [dict(mem_len=20), dict(mem_len=5, same_length=True), dict(mem_len=20, clamp_len=3),
                                dict(mem_len=5, pre_lnorm=True, div_val=2), dict(mem_len=5, clamp_len=3)])
def test_incremental_decoding_equals_recomputation(kw):
    """One token a step from cached keys and values = the whole context recomputed: one segment over all
    12 positions while they fit in memory or every query sees mem_len keys (same_length), else one-token
    segments through the memory of hidden states (the prompt longer than mem_len)."""
    torch.manual_seed(0)
    net = TransformerXLNetwork(TxlSpec(**SMALL, untie_r=True, **kw)).eval()
    tokens = torch.randint(0, 60, (12, 3))
    with torch.no_grad():
        state = {}
        steps = torch.cat([net.forward_step(tokens[t:t + 1], state) for t in range(12)])
        if kw["mem_len"] >= 11 or kw.get("same_length"):
            ref = net.forward_segment(tokens, None)[0]
        else:
            ref = torch.cat([net(tokens[t:t + 1].t()).transpose(0, 1) for t in range(12)])
            assert (steps - net.forward_segment(tokens, None)[0]).abs().max() > 1e-3  # the context is cut
        assert (_log_probs(net, steps) - _log_probs(net, ref)).abs().max() < 1e-5
        assert state["k.0"].shape == (min(12, kw["mem_len"]), 3, 16)
        chunks = {}  # a prompt of at most mem_len + 1 positions given at once, then one token a step
        two = torch.cat([net.forward_step(tokens[:4], chunks)] + [net.forward_step(tokens[t:t + 1], chunks)
                                                                  for t in range(4, 8)])
        assert (two - steps[:8]).abs().max() < 1e-5


def _tiny_txl_model(mem_len):
    from flop_fairseq.models.transformer_xl.model import FlopTransformerXLModel
    from flop_fairseq.tools.checkpoint import stub_task

    cfg = SimpleNamespace(n_layer=2, d_model=16, n_head=2, d_head=8, d_inner=32, cutoffs="10,30", mem_len=mem_len,
                          dropout=0.0, untie_r=True, div_val=2, d_embed=16)
    return FlopTransformerXLModel.build_model(cfg, stub_task(60)).eval()


def test_beam_search_scores_are_the_log_probs_of_each_hypothesis():
    """fairseq's beam search reorders the incremental state every step: each hypothesis's positional
    scores must be its own tokens' log-probabilities, recomputed through the memory one token a segment."""
    from fairseq.sequence_generator import SequenceGenerator

    torch.manual_seed(0)
    model = _tiny_txl_model(mem_len=4)
    with torch.no_grad():
        for m in model.modules():  # a peaked distribution, so that beams overtake each other
            if isinstance(m, torch.nn.Linear) or hasattr(m, "left"):
                for p in m.parameters():
                    p.mul_(3.0)
    gen = SequenceGenerator([model], model.decoder.dictionary, beam_size=4, max_len_b=12, min_len=12)
    prompt = torch.tensor([[7, 8, 9]])
    with torch.no_grad():
        hypos = gen.generate([model], {"net_input": {"src_tokens": prompt, "src_lengths": torch.tensor([3])}},
                             prefix_tokens=prompt)[0]
        assert len({tuple(h["tokens"].tolist()) for h in hypos}) == 4
        for h in hypos:
            inputs = torch.cat([torch.tensor([model.decoder.dictionary.eos()]), h["tokens"][:-1]])
            model.decoder.net.memory.reset()
            feats = torch.cat([model.decoder(inputs[None, t:t + 1])[0] for t in range(len(inputs))], dim=1)
            lp = model.decoder.net.adaptive_softmax.get_log_prob(feats, None)[0]
            ref = lp.gather(1, h["tokens"][:, None])[:, 0]
            assert (h["positional_scores"] - ref).abs().max() < 1e-5


def _hf_model(div_val, d_embed, tie_projs, untie_r, tie_weight=True, **kw):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.TransfoXLConfig(
        vocab_size=60, cutoffs=[10, 30], d_model=16, d_embed=d_embed, n_head=2, d_head=8, d_inner=32, n_layer=2,
        div_val=div_val, mem_len=6, dropout=0.0, dropatt=0.0, untie_r=untie_r, tie_projs=tie_projs,
        tie_word_embeddings=tie_weight, eos_token_id=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.TransfoXLLMHeadModel(cfg).eval()
    with torch.no_grad():  # HF initialises biases at 0 and projections tiny: make every term count
        for name, p in hf.named_parameters():
            if "bias" in name or "cluster" in name:
                p.normal_(0.0, 0.5)
            elif "proj" in name:
                p.normal_(0.0, 0.3)
    return hf


def _hf_segments(hf, tokens, seg_len, hf_default_mems=False):
    """HF's log-probs over segments, from an empty memory (or, ``hf_default_mems``, called without
    ``mems`` at first, as its users call it: it then starts from ``mem_len`` zero vectors)."""
    mems = None if hf_default_mems else [torch.empty(0, tokens.size(0), hf.config.d_model)] * hf.config.n_layer
    out = []
    with torch.no_grad():
        for seg in tokens.split(seg_len, dim=1):
            res = hf(input_ids=seg, mems=mems, return_dict=True)
            mems = res.mems
            out.append(res.prediction_scores)
    return torch.cat(out, dim=1)


HF_CASES = {
    "div1-noproj": dict(div_val=1, d_embed=16, tie_projs=[False, True, True], untie_r=False),
    "div1-proj-untied": dict(div_val=1, d_embed=24, tie_projs=[False, False, True], untie_r=True),
    "div2-tied-samelen": dict(div_val=2, d_embed=16, tie_projs=[True, True, True], untie_r=True,
                              same_length=True, clamp_len=3),
    "div2-untied-prelnorm": dict(div_val=2, d_embed=16, tie_projs=[False, False, True], untie_r=False, pre_lnorm=True),
    "div2-untied-weights": dict(div_val=2, d_embed=16, tie_projs=[False, True, True], untie_r=True, tie_weight=False),
}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_same_log_probs_as_huggingface_over_segments_with_memory(case):
    hf = _hf_model(**HF_CASES[case])
    config = hf.config.to_dict()
    # fairseq's order: <s>, <pad> (absent from the model), <eos> (HF 0), <unk> (HF 5), the rest
    order = [-1, -1, 0, 5] + [j for j in range(60) if j not in (0, 5)]
    spec = spec_from_cfg(SimpleNamespace(**cfg_from_hf(config, [12, 32])), len(order), padding_idx=1)
    net = TransformerXLNetwork(spec).eval()
    init_from_hf(net, hf.state_dict(), config, order)
    inverse = torch.tensor([order.index(j) for j in range(60)])
    tokens = torch.randint(0, 60, (2, 15))
    ref = _hf_segments(hf, tokens, 5)
    mems, out = None, []
    with torch.no_grad():
        for seg in inverse[tokens].split(5, dim=1):
            h, mems = net.forward_segment(seg.t(), mems)
            out.append(net.adaptive_softmax.get_log_prob(h.transpose(0, 1), None))
    ours = torch.cat(out, dim=1)
    assert (ours[:, :, inverse] - ref).abs().max() < 1e-4
    assert ours[:, :, :2].exp().max() == 0  # the symbols HF lacks cannot take probability


def test_compaction_keeps_the_function_and_the_count():
    torch.manual_seed(0)
    # div_val 1, no projections: a band of 100 or more words pruned by a third is smaller factorized
    net = TransformerXLNetwork(TxlSpec(**dict(SMALL, vocab_size=600, cutoffs=[100, 300]), mem_len=5)).eval()
    modules = [m for _, m in gated_modules(net)]
    with torch.no_grad():
        for i, m in enumerate(modules):
            if i % 2:  # prune a third of every other group; the rest keep full rank
                m.gate.log_alpha_raw[: m.rank // 3] = -20.0
    tokens = torch.randint(0, 600, (2, 8))
    with torch.no_grad():
        before = net.adaptive_softmax.get_log_prob(net.forward_segment(tokens.t())[0].transpose(0, 1), None)
        total = sum(m.remaining_prunable_params() + m.unpruned_params() for m in modules)
        others = sum(p.numel() for p in net.parameters()) - sum(p.numel() for m in modules for p in m.parameters())
        compact = compact_model(copy.deepcopy(net))
        after = compact.adaptive_softmax.get_log_prob(compact.forward_segment(tokens.t())[0].transpose(0, 1), None)
    assert (before - after).abs().max() < 1e-5
    assert sum(p.numel() for p in compact.parameters()) == others + total
    kinds = [type(b).__name__ for b in compact.embed_tokens.bands]
    assert "ProjectionFreeBand" in kinds and "LowRankBand" in kinds, kinds


WT103_TYPES = 267_735


@pytest.mark.parametrize("arch,expected", [
    ("flop_transformer_xl_wt103_base", (151_123_537, 151_119_838)),
    ("flop_transformer_xl_wt103_large", (285_205_322,)),
])
def test_wt103_preset_parameter_counts(arch, expected):
    from flop_fairseq.tools.checkpoint import build_model

    model = build_model({"_name": arch, "max_target_positions": 384}, WT103_TYPES)
    total = count_params(model).total_params
    for value in expected:
        assert abs(total - value) <= 0.001 * value, (total, value)
    bands = model.flop_bands()
    assert [(s.side, s.vocab) for s in bands] == [
        ("tied", (0, 20000)), ("tied", (20000, 40000)), ("tied", (40000, 200000)), ("tied", (200000, WT103_TYPES))]
    n_layer = 16 if "base" in arch else 18
    assert len(model.flop_layer_matrices()) == 7 * n_layer
    transformers = pytest.importorskip("transformers")
    kw = dict(d_model=410, d_embed=410, n_head=10, d_head=41, d_inner=2100, n_layer=16, div_val=1) \
        if "base" in arch else {}
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.TransfoXLLMHeadModel(transformers.TransfoXLConfig(vocab_size=WT103_TYPES, **kw))
    assert total == sum(p.numel() for p in hf.parameters())  # the same model, tied tensors once


def test_vocabulary_pickle_runs_nothing(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    with open(tmp_path / "vocab.pkl", "wb") as f:
        pickle.dump({"idx2sym": ["<eos>", "a"], "hook": Evil()}, f)
    assert read_vocabulary(str(tmp_path)) == ["<eos>", "a"]
    assert not (tmp_path / "pwned").exists()


def test_added_tokens_join_the_vocabulary_at_their_ids(tmp_path):
    (tmp_path / "vocab.txt").write_text("<eos>\na\n<unk>\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {
        "0": {"content": "<eos>"}, "3": {"content": "<formula>"}, "4": {"content": "<extra>"}}}))
    assert read_vocabulary(str(tmp_path), 5) == ["<eos>", "a", "<unk>", "<formula>", "<extra>"]
    # an added token at an id the model does not have is not the model's
    assert read_vocabulary(str(tmp_path), 4) == ["<eos>", "a", "<unk>", "<formula>"]
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<other>": 3}))
    with pytest.raises(CheckpointError, match="give id 3 to both"):
        read_vocabulary(str(tmp_path), 5)


# The CLI calls of a test run in one process (tests/cli_driver.py), each through its console
# script's entry point: a process per call spent most of these tests' time importing fairseq.
def _eval_lm(batch, data, path, mem_len, tokens=16, batch_size=4, **overrides):
    """Adds a fairseq-eval-lm call to ``batch``; returns a function giving its parsed result."""
    key = batch.add("fairseq-eval-lm", data, "--user-dir", USER_DIR, "--task", "truncated_bptt_lm", "--path", path,
                    "--cpu", "--tokens-per-sample", tokens, "--batch-size", batch_size, "--gen-subset", "test",
                    "--model-overrides", repr({"mem_len": mem_len, **overrides}))

    def result():
        proc = batch[key]
        res = parse_eval_lm(proc.stdout + proc.stderr)
        assert res, proc.stdout + proc.stderr
        return res
    return result


def test_fairseq_train_compact_eval_lm(tmp_path):
    from flop_fairseq.demo.corpus import generate_corpus

    generate_corpus(str(tmp_path / "raw"), num_types=500, train_tokens=8000, valid_tokens=1500, test_tokens=1500,
                    seed=3)
    tiny_data = tmp_path / "bin"
    batch = Batch()
    batch.add("fairseq-preprocess", "--only-source", "--trainpref", tmp_path / "raw/train.txt", "--validpref",
              tmp_path / "raw/valid.txt", "--testpref", tmp_path / "raw/test.txt", "--destdir", tiny_data,
              "--workers", "1")
    # div_val 1 and d_embed = d_model: projection-free bands, compacted to their dense form
    batch.add(
        "fairseq-train", tiny_data, "--user-dir", USER_DIR, "--task", "truncated_bptt_lm", "--tokens-per-sample", "16",
        "--batch-size", "4", "--arch", "flop_transformer_xl", "--n-layer", "2", "--d-model", "32", "--n-head", "2",
        "--d-head", "16", "--d-inner", "64", "--cutoffs", "100,300", "--mem-len", "16", "--criterion",
        "flop_adaptive_loss", "--target-sparsity", "0.3", "--sparsity-warmup-updates", "20", "--optimizer", "adam",
        "--lr", "0.003", "--max-update", "60", "--ddp-backend", "legacy_ddp", "--cpu", "--num-workers", "0",
        "--no-epoch-checkpoints", "--log-format", "simple", "--save-dir", tmp_path / "ckpt", "--seed", "1")
    gated = tmp_path / "ckpt/checkpoint_last.pt"
    report = batch.add("flop-report", gated, "--json")
    compact = batch.add("flop-compact", gated, tmp_path / "compact.pt")
    a, b = _eval_lm(batch, tiny_data, gated, 32), _eval_lm(batch, tiny_data, tmp_path / "compact.pt", 32)
    batch.run(tmp_path / "driver", cwd=REPO)
    report = json.loads(batch[report].stdout)
    assert report["gated"] and len(report["bands"]) == 3 and report["layers"]["matrices"] == 14
    out = batch[compact].stdout
    assert f"total_params {report['total_params']:,}" in out, out
    a, b = a(), b()
    assert a["ppl"] == b["ppl"] and math.isfinite(a["ppl"])
    # sampling and scoring through fairseq's hub interface, from the gated and the compact checkpoint
    from flop_fairseq.models.transformer_xl import FlopTransformerXLModel

    samples, scores = [], []
    for name in ("ckpt/checkpoint_last.pt", "compact.pt"):
        hub = FlopTransformerXLModel.from_pretrained(str(tmp_path), name, data_name_or_path=str(tiny_data)).eval()
        prompt = open(tmp_path / "raw/test.txt").read().split()[:5]
        torch.manual_seed(0)
        samples.append(hub.sample(" ".join(prompt), sampling=True, max_len_b=25, min_len=25))
        scores.append(hub.score(samples[-1])["positional_scores"])
        both = hub.score([" ".join(prompt), samples[-1]])  # each sentence scored without the other's memory
        assert (both[1]["positional_scores"] - scores[-1]).abs().max() < 1e-5
        assert hub.sample(" ".join(prompt), beam=3, max_len_b=25, min_len=25).split()[:5] == prompt
    assert samples[0] == samples[1] and samples[0].split()[:5] == prompt and len(samples[0].split()) == 25
    assert (scores[0] - scores[1]).abs().max() < 1e-5


# the options of the model _hf_directory saves, as fairseq-train flags
HF_DIR_ARCH = ["--n-layer", "2", "--d-model", "16", "--d-embed", "16", "--n-head", "2", "--d-head", "8", "--d-inner", "32",
               "--div-val", "2", "--cutoffs", "12,32", "--tie-projs", "0,1,1", "--untie-r", "--mem-len", "6",
               "--dropout", "0", "--dropatt", "0"]


def _hf_directory(root):
    """A tiny random HF model of 60 types saved with HF's tokenizer, whose vocabulary file lacks
    ``<formula>``: the tokenizer adds it (id 59, added_tokens.json), and the model counts it."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("sacremoses")
    words = ["<eos>", "the", "a", "<unk>"] + [f"w{i}" for i in range(55)] + ["<formula>"]
    (root / "src_vocab.txt").write_text("\n".join(words[:-1]) + "\n")
    hf = _hf_model(div_val=2, d_embed=16, tie_projs=[False, True, True], untie_r=True)
    hf.save_pretrained(root / "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.TransfoXLTokenizer(vocab_file=str(root / "src_vocab.txt")).save_pretrained(root / "hf")
    return hf, words


def test_flop_convert_huggingface_directory_then_eval_lm_and_prune(tmp_path):
    hf, words = _hf_directory(tmp_path)
    assert (tmp_path / "hf/vocab.pkl").exists()
    assert read_vocabulary(str(tmp_path / "hf"), 60) == words  # <formula> from the added tokens
    batch = Batch()
    convert = batch.add("flop-convert", tmp_path / "hf", tmp_path / "flop.pt", "--dict", tmp_path / "dict.txt")
    # a token stream of whole segments: 2 rows x 4 segments of 8 tokens, lines end in <eos> (fairseq's </s>)
    g = torch.Generator().manual_seed(1)
    rows, seg, n_seg = 2, 8, 4
    ids, text, left = [], [], rows * seg * n_seg
    while left:
        n = min(int(torch.randint(2, 9, (1,), generator=g)), left - 1) if left > 10 else left - 1
        line = [words[int(i)] for i in torch.randint(1, 60, (n,), generator=g)]
        text.append(" ".join(line))
        ids += [words.index(w) for w in line] + [0]
        left -= n + 1
    (tmp_path / "test.txt").write_text("\n".join(text) + "\n")
    batch.add("fairseq-preprocess", "--only-source", "--srcdict", tmp_path / "dict.txt", "--testpref",
              tmp_path / "test.txt", "--destdir", tmp_path / "bin", "--workers", "1")
    res = _eval_lm(batch, str(tmp_path / "bin"), tmp_path / "flop.pt", 6, tokens=seg, batch_size=rows)
    res_zeros = _eval_lm(batch, str(tmp_path / "bin"), tmp_path / "flop.pt", 6, tokens=seg, batch_size=rows,
                         init_zero_mems=True)
    # pruning starts from the converted checkpoint
    batch.add(
        "fairseq-train", tmp_path / "bin", "--user-dir", USER_DIR, "--task", "truncated_bptt_lm", "--train-subset",
        "test", "--valid-subset", "test", "--tokens-per-sample", seg, "--batch-size", rows, "--arch",
        "flop_transformer_xl", *HF_DIR_ARCH, "--finetune-from-model", tmp_path / "flop.pt", "--criterion",
        "flop_adaptive_loss", "--target-sparsity", "0.2", "--optimizer", "adam", "--lr", "0.001", "--max-update", "4",
        "--ddp-backend", "legacy_ddp", "--cpu", "--num-workers", "0", "--save-dir", tmp_path / "pruned",
        "--no-epoch-checkpoints", "--no-save-optimizer-state")
    batch.run(tmp_path / "driver", cwd=REPO)
    out = batch[convert].stdout
    found = re.search(r"gates bypassed\)\| = (\S+) from an empty memory .*, (\S+) from mem_len zero vectors", out)
    assert found and max(float(found.group(1)), float(found.group(2))) < 1e-4, out
    # HuggingFace on the same rows: row b holds segments b*n_seg .. (b+1)*n_seg - 1; the last
    # position of every segment has no target in fairseq's truncated_bptt_lm
    stream = torch.tensor(ids).view(rows, n_seg * seg)
    hf_loss = {}
    for hf_default_mems in (False, True):
        logp = _hf_segments(hf, stream, seg, hf_default_mems)
        total, count = 0.0, 0
        for t in range(n_seg * seg):
            if t % seg != seg - 1:
                total -= logp[torch.arange(rows), t, stream[:, t + 1]].sum().item()
                count += rows
        hf_loss[hf_default_mems] = total / count / math.log(2)
    assert abs(res()["loss_base2"] - hf_loss[False]) < 2e-4
    assert abs(res_zeros()["loss_base2"] - hf_loss[True]) < 2e-4
    assert abs(hf_loss[True] - hf_loss[False]) > 1e-3  # the two conventions differ
    assert (tmp_path / "pruned/checkpoint_last.pt").exists()


def test_projection_free_band_counts_only_its_words():
    band = ProjectionFreeBand(50, 16)
    assert sum(p.numel() for p in band.parameters()) == 50 * 16 == band.rank * band.params_per_component()
    assert "in_proj" not in band.state_dict()
