"""The WikiText-2 benchmark (``python -m benchmarks.wikitext2``, :mod:`.__main__`): the settings
and the table of methods (:mod:`.settings`), the step graph (:mod:`.graph`) with its cost model
(:mod:`.estimate`), the parameter counts of a run's models (:mod:`.counts`), what is read from
fairseq's logs (:mod:`.logs`), the results record (:mod:`.collect`), the report
(:mod:`.report`, :mod:`.report_sections`, the frozen :mod:`.short_regime`) and its figure
(:mod:`.plot`)."""
