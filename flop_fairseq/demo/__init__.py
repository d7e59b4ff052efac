"""``make demo``: the whole FLOP pipeline on a generated corpus (:mod:`.pipeline`), and the
synthetic corpus it trains on (:mod:`.corpus`)."""
