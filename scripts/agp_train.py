#!/usr/bin/env python
"""AGP magnitude pruning of a dense fairseq model's band matrices (:mod:`flop_fairseq.bench.agp`)::

    # fairseq-train with the extra criterion ``agp_adaptive_loss`` registered
    python scripts/agp_train.py DATA --arch transformer_lm ... --criterion agp_adaptive_loss \\
        --agp-target-sparsity 0.9 --agp-end-update 300 --finetune-from-model dense.pt ...

    # zero the smallest weights of the trained checkpoint so that exactly the target
    # fraction of every band matrix is 0, and count them
    python scripts/agp_train.py finalize TRAINED.pt OUT.pt --sparsity 0.9 [--json]
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("flop_fairseq") is None:  # not installed, no PYTHONPATH snapshot
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flop_fairseq.bench.agp import main  # noqa: E402

if __name__ == "__main__":
    main()
