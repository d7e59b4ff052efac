"""Pronounceable pseudo-words for the synthetic corpus: syllables drawn from weighted onset,
vowel and coda tables, frequent words shorter. Plain Python and numpy."""

import numpy as np

# syllable parts with weights: mostly simple consonant-vowel syllables
_ONSETS = [(c, 1.0) for c in "b c d f g h j k l m n p r s t v w y z".split()] + [
    (c, 0.12) for c in "bl br ch cl cr dr fl fr gl gr pl pr sc sh sk sl sm sn sp st str sw th tr wh".split()
] + [("", 2.0)]
_VOWELS = [(v, 1.0) for v in "a e i o u".split()] + [(v, 0.1) for v in "ai ea ee ie oa oo ou ay".split()]
_CODAS = [("", 6.0)] + [(c, 0.5) for c in "n r s t l m d k".split()] + [
    (c, 0.06) for c in "nd nt st rd rt ng ck sh th ll ss".split()
]


def make_words(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unique pronounceable pseudo-words, shorter ones for frequent ranks."""
    parts = []
    for table in (_ONSETS, _VOWELS, _CODAS):
        strings = np.array([t for t, _ in table], dtype=object)
        weights = np.array([w for _, w in table])
        parts.append((strings, weights / weights.sum()))
    nsyl = 1 + np.floor(0.7 * np.log10(np.arange(n) + 1.0) + 0.8 * rng.random(n) - 0.3).astype(int)
    nsyl = np.clip(nsyl, 1, 5)
    words = np.empty(n, dtype=object)
    seen = set()
    pending = np.arange(n)
    tries = 0
    while pending.size:
        k = nsyl[pending]
        cand = np.full(pending.size, "", dtype=object)
        for j in range(5):
            syl = np.full(pending.size, "", dtype=object)
            for strings, p in parts:
                syl = syl + strings[rng.choice(strings.size, size=pending.size, p=p)]
            more = k > j
            cand[more] = cand[more] + syl[more]
        left = []
        for i, w in zip(pending.tolist(), cand.tolist()):
            if w in seen or len(w) < 2:
                left.append(i)
            else:
                seen.add(w)
                words[i] = w
        pending = np.array(left, dtype=np.int64)
        tries += 1
        if tries % 4 == 0:
            nsyl[pending] = np.minimum(nsyl[pending] + 1, 5)
    return words
