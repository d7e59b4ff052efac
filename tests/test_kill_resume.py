"""A FLOP run killed with SIGKILL (at random moments after its first checkpoint, and while a
checkpoint is being written) and restarted with the same command ends in the state of a run
that was never interrupted: lambdas, gates, weights, optimizer, schedule and data position."""

import glob
import os
import random
import subprocess
import time

import torch

from conftest import BIN, PRUNE_ARGS, TRAIN_ARGS, run

UPDATES, INTERVAL = 40, 5


def _args(data_bin, flop_init, save):
    return [data_bin, *TRAIN_ARGS, *PRUNE_ARGS, "--finetune-from-model", flop_init, "--update-freq", "2",
            "--max-update", UPDATES, "--save-interval-updates", INTERVAL, "--save-dir", save]


def _kill_once(cmd, save, rng, during_write: bool) -> bool:
    """Starts ``cmd``; once ``checkpoint_last.pt`` exists, kills it with SIGKILL, either when a
    checkpoint file is being written (``during_write``, polled) or after a random delay.
    Returns False when the run finished before it could be killed."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    last = os.path.join(save, "checkpoint_last.pt")
    deadline = None
    while proc.poll() is None:
        if os.path.exists(last):
            if during_write and glob.glob(os.path.join(save, "*.tmp*")):
                break
            if not during_write:
                deadline = deadline or time.time() + rng.uniform(0.0, 6.0)
                if time.time() >= deadline:
                    break
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait()
    return True


def test_sigkill_and_restart_end_in_the_uninterrupted_state(data_bin, flop_init, tmp_path):
    seed = int(os.environ.get("FLOP_KILL_SEED", "0"))  # FLOP_KILL_SEED=N tries other moments
    rng = random.Random(seed)
    run("fairseq-train", *_args(data_bin, flop_init[0], tmp_path / "straight"))
    save = tmp_path / "killed"
    cmd = [os.path.join(BIN, "fairseq-train"), *_args(data_bin, flop_init[0], save)]
    kills = [_kill_once(cmd, str(save), rng, during) for during in (True, False, False)]
    assert any(kills), f"the run always finished before a kill (FLOP_KILL_SEED={seed})"
    print(f"FLOP_KILL_SEED={seed}: killed {kills} (during a checkpoint write, then at random moments)")
    run("fairseq-train", *cmd[1:])  # the same command, until it finishes
    a = torch.load(tmp_path / "straight/checkpoint_last.pt", weights_only=True)
    b = torch.load(save / "checkpoint_last.pt", weights_only=True)
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == UPDATES
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.allclose(a["model"][key].double(), b["model"][key].double(), atol=1e-6, rtol=0), \
            f"{key} (FLOP_KILL_SEED={seed}, kills {kills})"
    for sa, sb in zip(a["last_optimizer_state"]["state"].values(), b["last_optimizer_state"]["state"].values()):
        for k in sa:
            if torch.is_tensor(sa[k]):
                assert torch.allclose(sa[k].double(), sb[k].double(), atol=1e-6, rtol=0), k
    assert a["extra_state"]["train_iterator"] == b["extra_state"]["train_iterator"]
