"""Speed, memory and size of dense, gated and compact FLOP models at the WikiText-103 shapes
(random weights): :mod:`.bench` makes the checkpoints and measures, :mod:`.measure` holds the
measurements that run as their own process, :mod:`.report` renders the record
(``runs.jsonl``) as the "Full scale" section of BENCHMARKS.md."""
