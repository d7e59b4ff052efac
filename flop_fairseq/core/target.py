"""The range of a target sparsity, checked once here: every boundary (the criterion's config,
``flop-compact``, the benchmarks' tools) turns the :class:`ValueError` into its one-line error."""


def check_target_sparsity(value: float, name: str = "target sparsity") -> float:
    """``value`` as a float if it is in [0, 1) (1 would prune everything), else a
    :class:`ValueError` naming it ``name`` (a boundary passes its flag, ``--target-sparsity``)."""
    t = float(value)
    if not 0.0 <= t < 1.0:  # also refuses NaN
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return t
