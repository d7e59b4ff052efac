"""Reading the text fairseq's command-line tools print (plain text: no fairseq import)."""

import re
from typing import Optional

_LOSS = re.compile(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+)")
_SPEED = re.compile(r"Evaluated ([0-9,]+) tokens in ([0-9.]+)s \(([0-9.]+) tokens/s\)")
_FIELD = re.compile(r"(\w+)=([0-9.e+-]+)")


def log_fields(line: str) -> dict:
    """The ``key=value`` numbers of a ``--log-format simple`` line (``train_inner`` and the like),
    values as strings: ``{"loss": "8.31", "num_updates": "250", ...}``."""
    return dict(_FIELD.findall(line))


def parse_eval_lm(text: str) -> Optional[dict]:
    """``{loss_base2, ppl, tokens, seconds, tokens_per_s}`` from ``fairseq-eval-lm``'s output
    (stdout and stderr together), or None when either summary line is missing."""
    loss, speed = _LOSS.search(text), _SPEED.search(text)
    if not loss or not speed:
        return None
    return {"loss_base2": float(loss.group(1)), "ppl": float(loss.group(2)),
            "tokens": int(speed.group(1).replace(",", "")), "seconds": float(speed.group(2)),
            "tokens_per_s": float(speed.group(3))}
