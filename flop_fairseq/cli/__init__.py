"""Console scripts: argument parsing and printing only; the work is in :mod:`flop_fairseq.tools`."""
