"""A synthetic, English-like, word-level corpus for offline demos and tests.

Plain Python and numpy: no torch, no fairseq.

The generating process
----------------------
* ``num_types`` pronounceable pseudo-words (syllables, unique, frequent words
  shorter), with a Zipf-Mandelbrot unigram distribution
  ``pi(k) ~ (k + 2.7) ** -1.1`` over frequency rank ``k``. Adaptive-softmax bands
  such as ``2000,10000`` get a head of frequent words and long tails.
* Every sentence draws a latent *topic* ``z`` (uniform over ``num_topics``) and a
  length ``L`` in 5..40; its first word is drawn from ``pi``, and each next word
  from a mixture of three Markov kernels, every one of which leaves ``pi``
  stationary, so the marginal of every position is exactly ``pi``:

  - a topic-specific sparse *collocation* kernel (weight 0.6): the quantile
    coupling of ``pi`` with itself under two random word orders; a word's
    successors are the few words whose intervals overlap its own, so rare words
    have one or two fixed successors and frequent words a broad but fixed set;
  - a *class* kernel shared by all topics (weight 0.3): every word belongs to
    one of ``num_classes`` classes, classes follow a sparse class-transition
    matrix, and the word is drawn from its class in proportion to ``pi``;
  - unigram noise (weight 0.1): ``pi`` itself.

  A bigram model can learn the class and collocation structure; a longer
  context can also infer the sentence's topic.

Reference numbers (per word, end of sentence not counted): ``unigram_ppl`` is
``exp(H(pi))``. Measured on the test split: ``bigram_ppl``, the perplexity of the
exact bigram conditional of the process (topic marginalised), what a perfect
bigram model would get; ``model_ppl``, the exact perplexity of the full process
(topic marginalised per sentence), what a perfect model would get.
``model_ppl_with_eos`` also scores the end of every sentence, as fairseq's
language-model validation does (one ``</s>`` per line).

CLI: ``python -m flop_fairseq.demo.corpus OUT_DIR [--types N] [--train-tokens N]
[--valid-tokens N] [--test-tokens N] [--seed S]``.
"""

import argparse
import math
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from .pseudo_words import make_words
from .quantile_coupling import intervals, second_order

__all__ = ["generate_corpus", "SyntheticLM", "main"]

MIN_LEN, MAX_LEN = 5, 40
MIN_TYPES = 50
ZIPF_EXPONENT = 1.1
ZIPF_OFFSET = 2.7
MIX_WORD, MIX_CLASS, MIX_NOISE = 0.6, 0.3, 0.1
SPLITS = ("train", "valid", "test")

class SyntheticLM:
    """The generating process: vocabulary, kernels, sampling and exact scoring."""

    def __init__(
        self,
        num_types: int,
        seed: int = 1,
        num_topics: int = 4,
        num_classes: int = 64,
        mix: Tuple[float, float, float] = (MIX_WORD, MIX_CLASS, MIX_NOISE),
    ):
        if num_types < MIN_TYPES:
            raise ValueError(f"num_types must be >= {MIN_TYPES}, got {num_types}")
        if num_classes < 1 or num_topics < 1:
            raise ValueError("need num_classes >= 1 and num_topics >= 1")
        self.num_types = V = int(num_types)
        self.num_topics = K = int(num_topics)
        self.num_classes = C = min(int(num_classes), V)
        self.seed = int(seed)
        self.mix = tuple(float(m) / sum(mix) for m in mix)
        ss = np.random.SeedSequence([self.seed, V])
        # one stream for the structure, one per split (valid/test never depend on train size)
        rng, *split_rngs = [np.random.default_rng(s) for s in ss.spawn(1 + len(SPLITS))]
        self._split_rngs = dict(zip(SPLITS, split_rngs))

        ranks = np.arange(1, V + 1, dtype=np.float64)
        pi = (ranks + ZIPF_OFFSET) ** -ZIPF_EXPONENT
        self.pi = pi / pi.sum()
        self.cum_pi = np.cumsum(self.pi)
        self.words = make_words(V, rng)

        # Class kernel: class c -> class c' with Q[c, c'] (stationary rho), then a word by pi.
        self.cls = rng.integers(0, C, size=V)
        self.cls[:C] = rng.permutation(C)  # no empty class
        rho = np.bincount(self.cls, weights=self.pi, minlength=C)
        J = np.zeros((C, C))
        for _ in range(3):
            lo_a, hi_a = intervals(rho, rng.permutation(C))
            _, lo_b, hi_b = second_order(rho, lo_a, hi_a, rng)
            J += np.clip(np.minimum(hi_a[:, None], hi_b[None, :]) - np.maximum(lo_a[:, None], lo_b[None, :]), 0, None)
        J = J / 3 * 0.9 + 0.1 * np.outer(rho, rho)  # a little class noise
        self.class_trans = J / J.sum(1, keepdims=True)
        self.class_cum = np.cumsum(self.class_trans, 1)
        self.class_cum[:, -1] = 1.0
        self.rho = rho
        # words sorted by class; within-class cumulative probabilities offset by class id
        order = np.lexsort((np.arange(V), self.cls))
        self._by_class = order
        within = self.pi[order] / rho[self.cls[order]]
        cum = np.cumsum(within)
        starts = np.searchsorted(self.cls[order], np.arange(C))
        cum -= np.concatenate([[0.0], cum[starts[1:] - 1]])[self.cls[order]]
        self._class_cum = self.cls[order] + np.minimum(cum, 1.0)
        self._class_cum[np.r_[starts[1:] - 1, V - 1]] = np.arange(1, C + 1)

        # Topic collocation kernels: quantile couplings of pi with itself.
        self.a_lo = np.empty((K, V)); self.a_hi = np.empty((K, V))
        self.b_lo = np.empty((K, V)); self.b_hi = np.empty((K, V))
        self._b_hi_sorted = np.empty((K, V)); self._b_order = np.empty((K, V), dtype=np.int64)
        for z in range(K):
            self.a_lo[z], self.a_hi[z] = intervals(self.pi, rng.permutation(V))
            # of a few candidate B orders keep the one with the least self-transition mass
            # (frequent words would otherwise repeat themselves: "to to to")
            perm, self.b_lo[z], self.b_hi[z] = second_order(self.pi, self.a_lo[z], self.a_hi[z], rng)
            self._b_order[z] = perm
            self._b_hi_sorted[z] = self.b_hi[z][perm]

        lens = np.arange(MIN_LEN, MAX_LEN + 1)
        pmf = lens ** 3.0 * np.exp(-lens / 6.0)
        self.len_pmf = pmf / pmf.sum()

    # ------------------------------------------------------------------ sampling
    def sample(self, num_tokens: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens, lengths, topics)`` with exactly ``num_tokens`` tokens."""
        if num_tokens < MIN_LEN:
            raise ValueError(f"a split needs at least {MIN_LEN} tokens, got {num_tokens}")
        n_guess = int(num_tokens / (self.len_pmf @ np.arange(MIN_LEN, MAX_LEN + 1)) * 1.1) + 2
        lengths = rng.choice(np.arange(MIN_LEN, MAX_LEN + 1), size=n_guess, p=self.len_pmf)
        while lengths.sum() < num_tokens:
            more = rng.choice(np.arange(MIN_LEN, MAX_LEN + 1), size=n_guess, p=self.len_pmf)
            lengths = np.concatenate([lengths, more])
        n = int(np.searchsorted(np.cumsum(lengths), num_tokens)) + 1
        if MIN_LEN * n > num_tokens:  # too little slack to shorten: drop the last, grow the others
            n -= 1
        lengths = lengths[:n].copy()
        # fewer than MAX_LEN tokens too many or too few: adjust sentences from the end
        excess = int(lengths.sum()) - num_tokens
        i = n - 1
        while excess != 0:
            step = min(excess, lengths[i] - MIN_LEN) if excess > 0 else max(excess, lengths[i] - MAX_LEN)
            lengths[i] -= step
            excess -= step
            i -= 1
        topics = rng.integers(0, self.num_topics, size=n)

        out = np.full((n, MAX_LEN), -1, dtype=np.int64)
        cur = self._sample_unigram(rng, n)
        out[:, 0] = cur
        for t in range(1, MAX_LEN):
            act = np.nonzero(lengths > t)[0]
            if act.size == 0:
                break
            cur = self._step(rng, out[act, t - 1], topics[act])
            out[act, t] = cur
        tokens = out[out >= 0]  # row-major: sentences in order
        assert tokens.size == num_tokens
        return tokens, lengths, topics

    def _sample_unigram(self, rng, n):
        idx = np.searchsorted(self.cum_pi, rng.random(n) * self.cum_pi[-1], side="right")
        return np.minimum(idx, self.num_types - 1)

    def _step(self, rng, prev, topics):
        n = prev.size
        r = rng.random(n)
        nxt = np.empty(n, dtype=np.int64)
        # collocation kernel: uniform point in prev's A-interval, the word whose B-interval holds it
        mw, mc, _ = self.mix
        m = r < mw
        if m.any():
            z, w = topics[m], prev[m]
            x = self.a_lo[z, w] + rng.random(m.sum()) * (self.a_hi[z, w] - self.a_lo[z, w])
            nxt[m] = self._lookup_b(z, x)
        # class kernel
        m2 = (r >= mw) & (r < mw + mc)
        if m2.any():
            c = self.cls[prev[m2]]
            u = rng.random(m2.sum())
            c_next = np.minimum((self.class_cum[c] < u[:, None]).sum(1), self.num_classes - 1)
            y = c_next + rng.random(m2.sum())
            idx = np.minimum(np.searchsorted(self._class_cum, y, side="right"), self.num_types - 1)
            nxt[m2] = self._by_class[idx]
        m3 = r >= mw + mc
        if m3.any():
            nxt[m3] = self._sample_unigram(rng, m3.sum())
        return nxt

    def _lookup_b(self, z, x):
        out = np.empty(x.size, dtype=np.int64)
        for k in np.unique(z):
            sel = z == k
            j = np.minimum(np.searchsorted(self._b_hi_sorted[k], x[sel], side="right"), self.num_types - 1)
            out[sel] = self._b_order[k, j]
        return out

    # ------------------------------------------------------------------- scoring
    def transition_logprobs(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """``log P_z(nxt | prev)`` for every topic ``z``: shape ``(len(prev), num_topics)``."""
        prev, nxt = np.asarray(prev), np.asarray(nxt)
        overlap = np.clip(
            np.minimum(self.a_hi[:, prev], self.b_hi[:, nxt]) - np.maximum(self.a_lo[:, prev], self.b_lo[:, nxt]),
            0.0,
            None,
        )
        word = overlap / self.pi[prev]
        cn = self.cls[nxt]
        klass = self.class_trans[self.cls[prev], cn] * self.pi[nxt] / self.rho[cn]
        mw, mc, mn = self.mix
        p = mw * word + mc * klass + mn * self.pi[nxt]
        return np.log(p).T

    def score(self, tokens: np.ndarray, lengths: np.ndarray) -> Dict[str, float]:
        """Exact per-word perplexities of ``tokens`` under the process (see module doc)."""
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        is_start = np.zeros(tokens.size, dtype=bool)
        is_start[starts] = True
        prev = np.concatenate([[0], tokens[:-1]])
        lp = self.transition_logprobs(prev, tokens)  # (n, K)
        lp[is_start] = 0.0
        first = np.log(self.pi[tokens[starts]])
        # oracle bigram: P(v|w) = mean_z P_z(v|w)  (the topic is independent of the previous word)
        bigram = np.logaddexp.reduce(lp, axis=1) - math.log(self.num_topics)
        bigram[is_start] = 0.0
        per_topic = np.add.reduceat(lp, starts, axis=0) - math.log(self.num_topics)  # (S, K)
        sent = first + np.logaddexp.reduce(per_topic, axis=1)
        n = tokens.size
        ll_model = float(sent.sum())
        ll_len = float(np.log(self.len_pmf[np.clip(lengths, MIN_LEN, MAX_LEN) - MIN_LEN]).sum())
        return {
            "unigram_ppl": float(np.exp(-(self.pi * np.log(self.pi)).sum())),
            "empirical_unigram_ppl": float(np.exp(-np.log(self.pi[tokens]).mean())),
            "bigram_ppl": float(np.exp(-(first.sum() + bigram.sum()) / n)),
            "model_ppl": float(np.exp(-ll_model / n)),
            "model_ppl_with_eos": float(np.exp(-(ll_model + ll_len) / (n + lengths.size))),
        }

    def render(self, tokens: np.ndarray, lengths: np.ndarray) -> str:
        """One sentence per line, tokens separated by single spaces."""
        sep = np.full(tokens.size, " ", dtype=object)
        sep[np.cumsum(lengths) - 1] = "\n"
        return "".join((self.words[tokens] + sep).tolist())


def _check_size(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def generate_corpus(
    out_dir: str,
    num_types: int = 30000,
    train_tokens: int = 600_000,
    valid_tokens: int = 60_000,
    test_tokens: int = 60_000,
    seed: int = 1,
    num_topics: int = 4,
    num_classes: int = 64,
) -> Dict:
    """Write ``train.txt``, ``valid.txt``, ``test.txt`` into ``out_dir``; return stats.

    Raises ``ValueError`` for bad sizes or an ``out_dir`` that is an existing file;
    nothing is written then. Files are written to temporary names and renamed at
    the end, so a failure leaves no half-written split.
    """
    t0 = time.perf_counter()
    num_types = _check_size("num_types", num_types, MIN_TYPES)
    sizes = {
        "train": _check_size("train_tokens", train_tokens, MIN_LEN),
        "valid": _check_size("valid_tokens", valid_tokens, MIN_LEN),
        "test": _check_size("test_tokens", test_tokens, MIN_LEN),
    }
    _check_size("num_topics", num_topics, 1)
    _check_size("num_classes", num_classes, 1)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir exists and is not a directory: {out_dir}")

    lm = SyntheticLM(num_types, seed=seed, num_topics=num_topics, num_classes=num_classes)
    texts, stats = {}, {"out_dir": out_dir, "num_types": num_types, "seed": int(seed)}
    for split in SPLITS:
        tokens, lengths, _ = lm.sample(sizes[split], lm._split_rngs[split])
        texts[split] = lm.render(tokens, lengths)
        stats[f"{split}_tokens"] = int(tokens.size)
        stats[f"{split}_sentences"] = int(lengths.size)
        stats[f"{split}_types"] = int(np.unique(tokens).size)
        if split == "test":
            stats.update(lm.score(tokens, lengths))

    os.makedirs(out_dir, exist_ok=True)
    tmp_paths: List[str] = []
    try:
        for split in SPLITS:
            tmp = os.path.join(out_dir, f".{split}.txt.tmp{os.getpid()}")
            tmp_paths.append(tmp)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(texts[split])
        stats["files"] = {}
        for split, tmp in zip(SPLITS, tmp_paths):
            path = os.path.join(out_dir, f"{split}.txt")
            os.replace(tmp, path)
            stats["files"][split] = path
    finally:
        for tmp in tmp_paths:
            if os.path.exists(tmp):
                os.remove(tmp)
    stats["seconds"] = time.perf_counter() - t0
    return stats


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


class _OneLineErrorParser(argparse.ArgumentParser):
    """Bad input: one line on stderr, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: Optional[List[str]] = None) -> int:
    parser = _OneLineErrorParser(
        prog="python -m flop_fairseq.demo.corpus",
        description="Write a synthetic English-like word-level corpus (train/valid/test.txt).",
    )
    parser.add_argument("out_dir", help="output directory (created if missing)")
    size = dict(metavar="N")
    parser.add_argument("--types", type=_int_at_least(MIN_TYPES), default=30000, help="vocabulary (default 30000)", **size)
    parser.add_argument("--train-tokens", type=_int_at_least(MIN_LEN), default=600_000, help="default 600000", **size)
    parser.add_argument("--valid-tokens", type=_int_at_least(MIN_LEN), default=60_000, help="default 60000", **size)
    parser.add_argument("--test-tokens", type=_int_at_least(MIN_LEN), default=60_000, help="default 60000", **size)
    parser.add_argument("--seed", type=_int_at_least(0), default=1, metavar="S", help="default 1")
    args = parser.parse_args(argv)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        parser.error(f"out_dir exists and is not a directory: {args.out_dir}")
    try:
        s = generate_corpus(
            args.out_dir,
            num_types=args.types,
            train_tokens=args.train_tokens,
            valid_tokens=args.valid_tokens,
            test_tokens=args.test_tokens,
            seed=args.seed,
        )
    except (ValueError, OSError) as e:
        parser.error(str(e))
    print(f"wrote {s['out_dir']}: {s['num_types']} types, seed {s['seed']}, {s['seconds']:.1f}s")
    for split in SPLITS:
        print(
            f"  {split}.txt: {s[f'{split}_tokens']} tokens, {s[f'{split}_sentences']} sentences, "
            f"{s[f'{split}_types']} distinct types"
        )
    print(
        f"  reference ppl per word on test: unigram {s['unigram_ppl']:.1f}, best bigram {s['bigram_ppl']:.1f}, "
        f"generating process {s['model_ppl']:.1f} ({s['model_ppl_with_eos']:.1f} counting end of sentence)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
