"""fairseq-aware work shared by the command-line tools, the demo and the benchmarks:
checkpoints (:mod:`.checkpoint`, :mod:`.checkpoint_counts`; fairseq's pre-hydra ones: :mod:`.pre_hydra`,
:mod:`.pickle_allowlist`), dense -> FLOP conversion
(:mod:`.convert`; a HuggingFace Transformer-XL: :mod:`.hf_transfo_xl`), compaction (:mod:`.compact`), the report (:mod:`.report`), function
checks (:mod:`.equivalence`) and fairseq's printed output (:mod:`.fairseq_log`)."""
