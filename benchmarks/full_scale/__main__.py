"""``python -m benchmarks.full_scale``: the full-scale speed benchmark (:mod:`.bench`)."""

from .bench import main

main()
