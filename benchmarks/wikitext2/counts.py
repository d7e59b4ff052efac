"""The counter's counts of every model of a run, in one process (``params.json``)::

    python -m benchmarks.wikitext2.counts LABEL=CHECKPOINT ...

Each checkpoint's :func:`~flop_fairseq.tools.checkpoint_counts.checkpoint_counts`: the named
counts of ``flop_fairseq.core.count_params``, the decoder layers' attention/FFN matrices
included (what a whole-model budget counts), file and weights bytes.
"""

import argparse
import json


def main(argv=None) -> None:
    from flop_fairseq.tools.checkpoint import CheckpointError, quiet_logging
    from flop_fairseq.tools.checkpoint_counts import checkpoint_counts

    p = argparse.ArgumentParser(prog="python -m benchmarks.wikitext2.counts")
    p.add_argument("models", nargs="+", help="LABEL=CHECKPOINT")
    a = p.parse_args(argv)
    bad = [m for m in a.models if "=" not in m]
    if bad:
        p.error(f"models are LABEL=CHECKPOINT, got {bad[0]!r}")
    quiet_logging()
    try:
        counts = {label: checkpoint_counts(path) for label, path in (m.split("=", 1) for m in a.models)}
    except CheckpointError as e:
        raise SystemExit(f"counts: {e}")
    print(json.dumps(counts, indent=2))


if __name__ == "__main__":
    main()
