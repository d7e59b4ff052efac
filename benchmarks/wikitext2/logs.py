"""What the benchmark reads from the logs of fairseq-train and fairseq-eval-lm (plain text)."""

import re
import statistics
from typing import List

from flop_fairseq.tools.fairseq_log import log_fields, parse_eval_lm

_EPOCH_FIELD = re.compile(r"\| (\w+) ([0-9.e+-]+)(?= \||$)")
TRAJECTORY_FIELDS = ("num_updates", "expected_sparsity", "hard_sparsity", "target", "lambda1", "lambda2", "loss")


def parse_eval(log_path: str) -> dict:
    """``{loss_base2, ppl, tokens, seconds, tokens_per_s}`` of a fairseq-eval-lm log."""
    with open(log_path, errors="replace") as f:
        res = parse_eval_lm(f.read())
    if res is None:
        raise SystemExit(f"benchmark: {log_path}: no perplexity / tokens/s line from fairseq-eval-lm")
    return res


def parse_train(log_path: str) -> dict:
    """Median ``wps`` of fairseq-train's ``train_inner`` log lines (the first interval, which
    includes start-up, left out when there are more) and the last line's loss/ppl/updates."""
    wps, last, summary = [], {}, []
    with open(log_path, errors="replace") as f:
        for line in f:
            if "| train_inner |" in line:
                kv = log_fields(line)
                if "wps" in kv:
                    wps.append(float(kv["wps"]))
                    last = kv
            elif "| train | epoch" in line:  # end-of-epoch averages: "| wps 5557.8 |"
                kv = dict(_EPOCH_FIELD.findall(line.rstrip()))
                if "wps" in kv:
                    summary.append(kv)
    if not wps and summary:  # fewer updates than one log interval
        wps, last = [float(summary[-1]["wps"])], summary[-1]
    if not wps:
        raise SystemExit(f"benchmark: {log_path}: no training statistics (train_inner / train lines)")
    used = wps[1:] if len(wps) > 1 else wps
    out = {"wps_median": statistics.median(used), "wps_intervals": wps}
    for k in ("loss", "ppl", "num_updates"):
        if k in last:
            out[f"last_{k}"] = float(last[k])
    return out


def flop_trajectory(log_path: str) -> List[dict]:
    """FLOP's logged expected / hard sparsity and kept ranks per log interval."""
    rows = []
    with open(log_path, errors="replace") as f:
        for line in f:
            if "| train_inner |" not in line:
                continue
            kv = log_fields(line)
            if "hard_sparsity" in kv:
                rows.append({k: float(v) for k, v in kv.items()
                             if k in TRAJECTORY_FIELDS or k.startswith("kept_")})
    return rows


def valid_curve(log_path: str) -> List[dict]:
    """``[{num_updates, loss, ppl}]`` of fairseq-train's validation lines (``| valid | ...``),
    in the log's order; an update validated twice (an epoch's end on an interval) once."""
    points = {}
    with open(log_path, errors="replace") as f:
        for line in f:
            if "| valid | epoch" not in line:
                continue
            kv = dict(_EPOCH_FIELD.findall(line.rstrip()))
            if {"num_updates", "loss", "ppl"} <= set(kv):
                n = int(float(kv["num_updates"]))
                points[n] = {"num_updates": n, "loss": float(kv["loss"]), "ppl": float(kv["ppl"])}
    return [points[n] for n in sorted(points)]
