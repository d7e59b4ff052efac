"""The WikiText-103 shape (267,735 types) without WikiText-103: the preset's counts on the meta
device, and convert -> fairseq-train -> compact at the full vocabulary with one layer."""

import numpy as np
import pytest
import torch

from conftest import REPO, eval_lm, report_json, run

WT103_TYPES = 267_735  # fairseq's WikiText-103 dictionary, specials included


def _build(arch, **overrides):
    from flop_fairseq.tools.checkpoint import build_model

    cfg = {"_name": arch, "tokens_per_sample": 3072, "max_target_positions": 3072, **overrides}
    with torch.device("meta"):  # shapes only: 250M parameters cost no memory
        return build_model(cfg, WT103_TYPES)


@pytest.mark.parametrize("layers", [False, True])
def test_wiki103_preset_counts_match_fairseqs_dense_model(layers):
    flop = _build("flop_transformer_lm_wiki103", flop_decoder_layers=layers)
    dense = _build("transformer_lm_wiki103")
    assert sum(p.numel() for p in dense.parameters()) == 246_932_928
    bands = flop.flop_bands()
    assert [(s.side, s.vocab, s.module.rank) for s in bands] == [
        ("tied", (0, 20000), 1024), ("tied", (20000, 60000), 256), ("tied", (60000, WT103_TYPES), 64)]
    # each band replaces fairseq's embedding E_i (|V_i| x d_i) and projection P_i (d x d_i), which the
    # tied softmax shares
    dense_bands = [sum(p.numel() for p in emb.parameters()) for emb in dense.decoder.embed_tokens.embeddings]
    assert [s.module.dense_params() for s in bands] == dense_bands == [21_528_576, 10_502_144, 13_360_576]
    assert sum(dense_bands) == sum(p.numel() for p in type(flop).dense_prunable_tensors(dense))
    matrices = flop.flop_layer_matrices()
    if layers:
        dense_layers = [dense.get_submodule(name) for name, _ in matrices]
        assert len(matrices) == 16 * 6
        assert [m.rank for _, m in matrices] == [min(d.in_features, d.out_features) for d in dense_layers]
        assert sum(m.dense_params() for _, m in matrices) == sum(d.weight.numel() for d in dense_layers) \
            == 16 * (4 * 1024 * 1024 + 2 * 1024 * 4096)
    else:
        assert matrices == []


def _wt103_shaped_data(root):
    """A data-bin with fairseq's WikiText-103 vocabulary size and a few hundred tokens of text."""
    from flop_fairseq.demo.pseudo_words import make_words

    words = make_words(WT103_TYPES - 4, np.random.default_rng(0))
    raw = root / "raw"
    raw.mkdir()
    # frequency counts decreasing with rank, so fairseq keeps the order (and the bands) as given
    with open(raw / "dict.txt", "w") as f:
        f.writelines(f"{w} {WT103_TYPES - i}\n" for i, w in enumerate(words))
    rng = np.random.default_rng(1)
    for split, n in (("train", 2000), ("valid", 200), ("test", 200)):
        # words from every band: the head, the middle and the rare tail
        ids = np.concatenate([rng.integers(0, 20000, n // 2), rng.integers(20000, WT103_TYPES - 4, n // 2)])
        rng.shuffle(ids)
        with open(raw / f"{split}.txt", "w") as f:
            for line in np.array_split(words[ids], n // 20):
                f.write(" ".join(line) + "\n")
    out = root / "bin"
    run("fairseq-preprocess", "--only-source", "--srcdict", raw / "dict.txt", "--trainpref", raw / "train.txt",
        "--validpref", raw / "valid.txt", "--testpref", raw / "test.txt", "--destdir", out, "--workers", "1")
    return str(out)


def test_full_vocabulary_convert_train_compact(tmp_path):
    data = _wt103_shaped_data(tmp_path)
    with open(f"{data}/dict.txt") as f:
        assert 4 + sum(1 for _ in f) == WT103_TYPES
    common = [data, "--task", "language_modeling", "--tokens-per-sample", "64", "--max-tokens", "128",
              "--optimizer", "adam", "--lr", "0.0001", "--cpu", "--seed", "1", "--ddp-backend", "legacy_ddp",
              "--num-workers", "0", "--no-epoch-checkpoints", "--decoder-layers", "1",
              "--max-target-positions", "64"]
    run("fairseq-train", *common, "--arch", "transformer_lm_wiki103", "--criterion", "adaptive_loss",
        "--max-update", "1", "--save-dir", tmp_path / "dense")
    init = tmp_path / "flop_init.pt"
    out = run("flop-convert", tmp_path / "dense/checkpoint_last.pt", init).stdout
    assert float(out.split("= ")[1].split()[0]) < 1e-3
    run("fairseq-train", *common, "--user-dir", f"{REPO}/user_dir", "--arch", "flop_transformer_lm_wiki103",
        "--criterion", "flop_adaptive_loss", "--target-sparsity", "0.5", "--finetune-from-model", init,
        "--max-update", "2", "--save-dir", tmp_path / "flop")
    gated = tmp_path / "flop/checkpoint_last.pt"
    compact = tmp_path / "compact.pt"
    run("flop-compact", gated, compact)
    rep = report_json(compact)
    assert rep["num_updates"] == 2 and [b["vocab"][1] for b in rep["bands"]] == [20000, 60000, WT103_TYPES]
    assert rep["band_params"] == 21_528_576 + 10_502_144 + 13_360_576
    g_loss, _ = eval_lm(data, gated)
    c_loss, _ = eval_lm(data, compact)
    assert abs(g_loss - c_loss) / g_loss < 1e-4
