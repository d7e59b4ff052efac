"""The small adaptive-input/softmax ``transformer_lm`` of the demo, the WikiText-2 benchmark
and the tests: d = 128, two layers of four heads, tied bands; each passes its own cutoffs."""

from typing import List, Optional


def small_model_flags(cutoffs: str, ffn: int = 512, factor: Optional[int] = None) -> List[str]:
    """fairseq-train's model flags for adaptive ``cutoffs`` (``"2000,10000"``), an FFN of ``ffn``
    and the bands' dim divided by ``factor`` from one to the next (fairseq's default 4 if None)."""
    flags = ["--adaptive-input", "--adaptive-input-cutoff", cutoffs, "--adaptive-softmax-cutoff", cutoffs]
    if factor is not None:
        flags += ["--adaptive-input-factor", str(factor), "--adaptive-softmax-factor", str(factor)]
    return flags + ["--tie-adaptive-weights", "--tie-adaptive-proj", "--decoder-embed-dim", "128",
                    "--decoder-input-dim", "128", "--decoder-output-dim", "128", "--decoder-ffn-embed-dim", str(ffn),
                    "--decoder-layers", "2", "--decoder-attention-heads", "4"]
