"""The baselines FLOP is compared with: SVD truncation and small models from scratch
(:mod:`.svd`), AGP magnitude pruning's schedule, mask and finalisation (:mod:`.agp`; its
fairseq criterion is :mod:`benchmarks.agp_plugin`)."""
