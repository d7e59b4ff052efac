"""How long a benchmark run takes: a cost model per step and the runner's schedule, simulated.

The costs are measurements on this machine (AMD EPYC, 2 cores, 1 torch thread per process,
the WikiText-2 benchmark's model): seconds on a machine doing nothing but this benchmark. The
shared machine is rarely that quiet: the short-regime run (its record's ``timing``) took about
twice its estimate. :func:`simulate` replays :meth:`Runner._startable` (``jobs`` at once,
exclusive steps alone) on the estimates, so the wall time includes the waits of the graph.
"""

from typing import Dict

# one update of the dense model (2,048 tokens), beside one other job of the benchmark: the
# short-regime run's dense pre-training took 342 s for 1,000 updates (its small model ran beside it)
UPDATE_S = 0.34
# per-update cost relative to the dense model: measured as fairseq-train wps ratios (gated
# bands 0.96x the dense wps and compact 10%-model 1.27x in the short-regime speed runs; the
# gated whole model (--flop-decoder-layers, full-rank factors) 1,850 vs 2,450 wps back to
# back); AGP's masking and the compact whole models are guesses between those
FACTOR = {"dense": 1.0, "gated": 1.05, "gated_all": 1.3, "compact": 0.85, "compact_all": 0.7, "agp": 1.1}
# extra cost of a distilled update, in dense updates: the band-by-band KL over the whole
# vocabulary (5.5 s vs 0.6 s per update, back to back, chunk 256: about 8 more)
DISTILL_EXTRA = 8.0
START_S = 12.0  # a fairseq process: imports, data, checkpoint
TOOL_S = 15.0  # flop-convert / flop-compact / svd-truncate / scratch-init / finalize (with function checks)
EVAL_TOKENS_PER_S = 5000.0  # fairseq-eval-lm (full-vocabulary scorer), 1 thread
VALID_TOKENS_PER_S = 20000.0  # fairseq-train's validation (adaptive-loss path)
SPLIT_TOKENS = {"valid": 217_646, "test": 245_569}  # WikiText-2 with the benchmark's dictionary


def train_s(updates: int, kind: str = "dense", distill: bool = False, validations: int = 0,
            valid_fraction: float = 1.0) -> float:
    """One fairseq-train run of ``updates`` updates of a model of ``kind`` (:data:`FACTOR`),
    validating ``validations`` times on ``valid_fraction`` of the valid split."""
    per_update = UPDATE_S * (FACTOR[kind] + (DISTILL_EXTRA if distill else 0.0))
    return START_S + updates * per_update + validations * valid_fraction * SPLIT_TOKENS["valid"] / VALID_TOKENS_PER_S


def eval_s(split: str, shards: int = 1) -> float:
    """One fairseq-eval-lm run over ``1/shards`` of ``split``."""
    return START_S + SPLIT_TOKENS[split] / shards / EVAL_TOKENS_PER_S


def simulate(r, pending_only: bool = True) -> Dict[str, float]:
    """``wall_s`` and ``summed_s`` of the steps of runner ``r`` not yet done (``pending_only``;
    else all of them: the whole run's estimate), scheduled as :meth:`Runner.run` schedules
    them (``r.jobs`` at once, exclusive steps alone)."""
    pending = [n for n in r.order if not (pending_only and r.done(r.steps[n]))]
    finished = set(r.order) - set(pending)
    summed = sum(r.steps[n].est_s for n in pending)
    left = len(pending)
    t, running = 0.0, []  # (end time, step name)
    while pending or running:
        for n in r._startable(pending, finished, [{"step": r.steps[m]} for _, m in running]):
            pending.remove(n)
            running.append((t + r.steps[n].est_s, n))
        if not running:  # dependencies that never finish: Runner.run refuses the graph
            break
        running.sort()
        t, n = running.pop(0)
        finished.add(n)
    return {"wall_s": t, "summed_s": summed, "steps": left}
