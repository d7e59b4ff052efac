"""The synthetic corpus generator and the LM-data preprocessing script."""

import os
import re
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from flop_fairseq.demo.corpus import MAX_LEN, MIN_LEN, SyntheticLM, generate_corpus, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPES, TRAIN, VALID, TEST = 5000, 100_000, 10_000, 10_000


def _gen(path, seed=1, train=TRAIN, types=TYPES):
    return generate_corpus(str(path), num_types=types, train_tokens=train, valid_tokens=VALID, test_tokens=TEST, seed=seed)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus")
    stats = _gen(path)
    return path, stats


def _read(path, split):
    with open(os.path.join(path, f"{split}.txt"), encoding="utf-8") as f:
        return f.read()


def _ids(text, vocab):
    return [np.array([vocab.setdefault(w, len(vocab)) for w in line.split()]) for line in text.splitlines()]


def test_files_format_and_sizes(corpus):
    path, stats = corpus
    assert sorted(os.listdir(path)) == ["test.txt", "train.txt", "valid.txt"]
    for split, want in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        text = _read(path, split)
        assert text.endswith("\n") and "<eos>" not in text and "\n\n" not in text
        lines = text.splitlines()
        assert all(line == " ".join(line.split()) for line in lines)  # single spaces, no padding
        lengths = [len(line.split()) for line in lines]
        assert abs(sum(lengths) - want) <= 0.01 * want
        assert stats[f"{split}_tokens"] == sum(lengths) and stats[f"{split}_sentences"] == len(lines)
        assert min(lengths) >= MIN_LEN and max(lengths) <= MAX_LEN and len(set(lengths)) > 20


def test_vocabulary_looks_like_words():
    words = SyntheticLM(TYPES, seed=1).words
    assert len(set(words)) == TYPES
    assert all(re.fullmatch(r"[a-z]{2,}", w) for w in words)
    assert np.mean([len(w) for w in words[:100]]) < np.mean([len(w) for w in words[-1000:]])


def test_many_types_and_zipfian_ranks(corpus):
    path, stats = corpus
    counts = Counter(_read(path, "train").split())
    assert len(counts) == stats["train_types"] >= 0.4 * TYPES
    freq = np.array(sorted(counts.values(), reverse=True), dtype=float)
    ranks = np.arange(10, 1001)
    slope = np.polyfit(np.log(ranks), np.log(freq[ranks - 1]), 1)[0]
    assert -1.3 < slope < -0.7, slope
    # a head band of frequent words and a tail that still matters (adaptive softmax cutoffs)
    head = freq[:500].sum() / freq.sum()
    assert 0.5 < head < 0.9, head


def test_deterministic_per_seed(tmp_path, corpus):
    path, _ = corpus
    _gen(tmp_path / "same")
    for split in ("train", "valid", "test"):
        assert _read(tmp_path / "same", split) == _read(path, split)
    _gen(tmp_path / "other", seed=2)
    for split in ("train", "valid", "test"):
        assert _read(tmp_path / "other", split) != _read(path, split)
    # valid/test come from their own random streams: the train size does not change them
    _gen(tmp_path / "short", train=20_000)
    assert _read(tmp_path / "short", "test") == _read(path, "test")
    assert _read(tmp_path / "short", "train") != _read(path, "train")


def test_sequential_structure_is_learnable(corpus):
    """A Witten-Bell bigram estimated on train beats the unigram on test by far."""
    path, stats = corpus
    vocab = {}
    train, test = _ids(_read(path, "train"), vocab), _ids(_read(path, "test"), vocab)
    n = max(len(vocab), TYPES)
    flat = np.concatenate(train)
    uni = (np.bincount(flat, minlength=n) + 1.0) / (flat.size + n)
    prev = np.concatenate([s[:-1] for s in train])
    nxt = np.concatenate([s[1:] for s in train])
    keys, counts = np.unique(prev * n + nxt, return_counts=True)
    seen = np.bincount(prev, minlength=n)
    distinct = np.bincount(keys // n, minlength=n)

    tp = np.concatenate([s[:-1] for s in test])
    tn = np.concatenate([s[1:] for s in test])
    first = np.array([s[0] for s in test])
    k = tp * n + tn
    i = np.clip(np.searchsorted(keys, k), 0, keys.size - 1)
    c = np.where(keys[i] == k, counts[i], 0)
    lam = seen[tp] / np.maximum(seen[tp] + distinct[tp], 1)
    p_bigram = lam * c / np.maximum(seen[tp], 1) + (1 - lam) * uni[tn]
    n_test = first.size + tn.size
    unigram_ppl = np.exp(-(np.log(uni[first]).sum() + np.log(uni[tn]).sum()) / n_test)
    bigram_ppl = np.exp(-(np.log(uni[first]).sum() + np.log(p_bigram).sum()) / n_test)
    # measured: unigram ~590, estimated bigram ~190 (ratio ~0.33)
    assert bigram_ppl < 0.45 * unigram_ppl, (bigram_ppl, unigram_ppl)
    # the exact reference numbers of the generating process are ordered and consistent
    assert stats["model_ppl"] < stats["bigram_ppl"] < bigram_ppl < stats["unigram_ppl"]
    assert abs(stats["empirical_unigram_ppl"] / stats["unigram_ppl"] - 1) < 0.1


def test_bad_input_writes_nothing(tmp_path, capsys):
    target = tmp_path / "new"
    for kwargs in ({"train_tokens": -5}, {"num_types": 10}, {"valid_tokens": 0}, {"seed": -1}):
        with pytest.raises(ValueError):
            generate_corpus(str(target), **kwargs)
    assert not target.exists()
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    with pytest.raises(ValueError, match="not a directory"):
        generate_corpus(str(a_file), num_types=100, train_tokens=100, valid_tokens=10, test_tokens=10)

    for argv in ([str(target), "--train-tokens", "-5"], [str(target), "--types", "abc"], [str(a_file)]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error:" in err[0], err
    assert not target.exists() and a_file.read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_cli_prints_what_it_wrote(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flop_fairseq.demo.corpus", str(tmp_path / "c"), "--types", "300", "--train-tokens", "2000",
         "--valid-tokens", "200", "--test-tokens", "200", "--seed", "7"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "300 types" in out.stdout and "2000 tokens" in out.stdout and "unigram" in out.stdout
    assert sorted(os.listdir(tmp_path / "c")) == ["test.txt", "train.txt", "valid.txt"]


def _preprocess_available():
    return os.access(os.path.join(REPO, ".venv", "bin", "fairseq-preprocess"), os.X_OK) or shutil.which("fairseq-preprocess")


SCRIPT = os.path.join(REPO, "scripts", "preprocess-lm-data.sh")


def _script(*args):
    env = dict(os.environ, WORKERS="1")
    return subprocess.run(["bash", SCRIPT, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def test_preprocess_script_errors(tmp_path):
    out = _script(tmp_path / "missing", tmp_path / "bin")
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and "not found" in out.stderr
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.txt").write_text("a b c\n")
    out = _script(tmp_path / "src", tmp_path / "bin")
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and "valid" in out.stderr
    assert not (tmp_path / "bin").exists()


@pytest.mark.skipif(not _preprocess_available(), reason="fairseq-preprocess not installed")
def test_preprocess_script_binarizes(tmp_path):
    generate_corpus(str(tmp_path / "txt"), num_types=200, train_tokens=3000, valid_tokens=300, test_tokens=300)
    out = _script(tmp_path / "txt", tmp_path / "data-bin")
    assert out.returncode == 0, out.stderr[-2000:]
    files = set(os.listdir(tmp_path / "data-bin"))
    assert {"dict.txt", "train.bin", "train.idx", "valid.bin", "test.bin"} <= files
    n_dict = len((tmp_path / "data-bin" / "dict.txt").read_text().splitlines())
    assert 150 <= n_dict <= 208  # observed types, padded to a multiple of 8 with the 4 specials
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no temporary left behind
    again = _script(tmp_path / "txt", tmp_path / "data-bin")  # refuses to overwrite
    assert again.returncode != 0 and "FORCE=1" in again.stderr
