"""The few non-tensor types fairseq's pre-hydra checkpoints hold, allowed under
``torch.load(weights_only=True)``; plain torch and numpy, no fairseq.

fairseq saved its checkpoints before 0.10 (and its published language models) with the
training options as an ``argparse.Namespace`` under ``args``, and training states that hold
numpy scalars (validation losses, the scheduler's ``best``). torch's weights-only unpickler
refuses both. Each type allowed here only builds data: a ``Namespace`` gets its attributes
set from an already-unpickled dict, a numpy dtype is made from its type code, and a numpy
scalar from a dtype and its raw bytes. Nothing that imports a module by name, calls a
function of the file's choosing or builds an object array is allowed, so a pickle that
would run code is still refused.
"""

import argparse
from typing import List

import torch

# numpy scalar types old training states hold (their dtypes are rebuilt, then set up, on load)
_SCALAR_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "float16", "float32", "float64", "longdouble", "complex64", "complex128")


def allowed_globals() -> List:
    """What :func:`register` allows: ``argparse.Namespace``, ``numpy.dtype`` with the dtype
    class of each numeric scalar type, and numpy's scalar reconstructor under the name pickles
    of numpy 1 and 2 give it."""
    import numpy as np

    try:  # numpy >= 2 moved numpy.core to numpy._core; files keep the name they were written with
        from numpy._core.multiarray import scalar
    except ImportError:
        from numpy.core.multiarray import scalar
    dtypes = [np.dtype] + [type(np.dtype(name)) for name in _SCALAR_DTYPES]
    own = f"{scalar.__module__}.{scalar.__name__}"
    names = {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"} - {own}
    return [argparse.Namespace, scalar, *dict.fromkeys(dtypes), *[(scalar, name) for name in sorted(names)]]


def register() -> bool:
    """Adds :func:`allowed_globals` to torch's weights-only allow-list (process-wide, so fairseq's own
    ``torch.load`` reads these checkpoints too); idempotent. False where torch has no allow-list
    (before 2.4: fairseq's commands then load with ``weights_only=False``, and the tools refuse
    a pre-hydra file)."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:
        return False
    have = getattr(torch.serialization, "get_safe_globals", list)()
    missing = [g for g in allowed_globals() if g not in have]
    if missing:
        try:
            add(missing)
        except (TypeError, AttributeError):  # torch 2.4 takes no (object, name) pairs
            add([g for g in missing if not isinstance(g, tuple)])
    return True
