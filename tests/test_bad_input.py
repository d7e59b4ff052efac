"""Every tool refuses bad input before any work: one line on stderr naming the problem, a
non-zero exit, no traceback, nothing written. One table; a new case is one line.

The rows run in one process (tests/cli_driver.py), each through the real entry point
of its console script: a process per row spent most of this file's time importing fairseq.
Only what needs processes of its own has them: the compaction the inputs need (so the
compacted-twice check compares two processes) and the SIGKILL test."""

import argparse
import os
import pickle
import random

import pytest
import torch

from cli_driver import drive
from conftest import MODEL_ARGS, REPO, TRAIN_ARGS, USER_DIR, run
from pre_hydra_checkpoints import write_pre_hydra

SENTINEL = "/tmp/flop_fairseq_test_unpickled_code_ran"


class _RunsCode:
    """Unpickling this calls ``os.system``: what a hostile checkpoint would do."""

    def __reduce__(self):
        return (os.system, (f"touch {SENTINEL}",))


def _inputs(tmp, dense, gated, compact):
    """name -> path of each kind of input."""
    files = {"dense": dense, "gated": gated, "compact": compact, "missing": str(tmp / "missing.pt")}
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "text.pt").write_text("this is not a checkpoint\n")
    # seeded: about 1 in 20 random files fails inside torch's legacy unpickler before its
    # weights-only check, which gives the other (equally one-line) "not a readable" message
    (tmp / "random.pt").write_bytes(random.Random(0).randbytes(4096))
    with open(gated, "rb") as f:
        (tmp / "truncated.pt").write_bytes(f.read()[: os.path.getsize(gated) // 2])
    torch.save({"weights": torch.zeros(3)}, tmp / "foreign.pt")
    for protocol in (2, 4):
        with open(tmp / f"code{protocol}.pt", "wb") as f:
            pickle.dump({"model": _RunsCode(), "cfg": {}}, f, protocol=protocol)
    # the allow-list of pre-hydra checkpoints admits a Namespace, not what its attributes would run
    torch.save({"model": {}, "args": argparse.Namespace(arch="transformer_lm", x=_RunsCode())},
               tmp / "code-args.pt")
    write_pre_hydra(dense, tmp / "old-arch.pt", arch="lstm_lm")
    write_pre_hydra(dense, tmp / "no-arch.pt", drop=["arch"])
    state = torch.load(dense, weights_only=True)
    state["model"] = {k.replace(".self_attn.k_proj.", ".self_attn.key."): v for k, v in state["model"].items()}
    torch.save(state, tmp / "unknown-keys.pt")
    files.update({k: str(tmp / f"{k}.pt") for k in ("empty", "text", "random", "truncated", "foreign", "code2",
                                                     "code4", "code-args", "old-arch", "no-arch", "unknown-keys")})
    return files


# (tool, input, what stderr names)
CASES = [(tool, name, needle) for tool in ("flop-convert", "flop-compact", "flop-report") for name, needle in (
    ("missing", "no such checkpoint file"),
    ("empty", "not a readable fairseq checkpoint"),
    ("text", "not a readable fairseq checkpoint"),
    ("truncated", "not a readable fairseq checkpoint"),
    ("random", "not loaded"),
    ("foreign", "not a fairseq checkpoint"),
    ("code2", "not loaded"),
    ("code4", "not loaded"),
    ("code-args", "not loaded"),
    ("no-arch", "no 'arch' in its argparse.Namespace"),
)] + [
    ("flop-convert", "old-arch", "model 'lstm_lm' is not one flop-convert takes"),
    ("flop-report", "old-arch", "not a FLOP model (arch 'lstm_lm')"),
    ("flop-convert", "unknown-keys", "in this fairseq's key layout or an older one it upgrades"),
    ("flop-compact", "dense", "not a FLOP model"),
    ("flop-report", "dense", "not a FLOP model"),
    ("flop-compact", "compact", "already compact"),
    ("flop-convert", "gated", "already a FLOP checkpoint"),
    ("flop-convert", "compact", "already a FLOP checkpoint"),
]



def _train_args(data_bin, save, **changes):
    """The suite's FLOP training command with flags replaced (value None drops a flag)."""
    flags, model = {}, list(MODEL_ARGS)
    i = 0
    while i < len(model):  # flag -> value ('' for a switch)
        has_value = i + 1 < len(model) and not model[i + 1].startswith("--")
        flags[model[i]] = model[i + 1] if has_value else ""
        i += 2 if has_value else 1
    flags.update({"--criterion": "flop_adaptive_loss", "--target-sparsity": "0.5"})
    flags.update(changes)
    args = [data_bin, *TRAIN_ARGS, "--user-dir", USER_DIR, "--arch", "flop_transformer_lm", "--max-update", "1",
            "--save-dir", save]
    for k, v in flags.items():
        if v is not None:
            args += [k] + ([v] if v else [])
    return args


# (what is changed, what the last line of fairseq-train's output names)
TRAIN_CASES = [
    ({"--target-sparsity": "1.0"}, "--target-sparsity must be in [0, 1)"),
    ({"--target-sparsity": "-0.1"}, "--target-sparsity must be in [0, 1)"),
    ({"--adaptive-input-cutoff": "1500,500", "--adaptive-softmax-cutoff": "1500,500"}, "must be increasing"),
    ({"--adaptive-input-cutoff": "500,99999", "--adaptive-softmax-cutoff": "500,99999"}, "larger than the vocabulary"),
    ({"--decoder-output-dim": "64"}, "--tie-adaptive-weights needs"),
    ({"--adaptive-softmax-cutoff": None}, "set --adaptive-input with --adaptive-input-cutoff"),
    ({"--flop-layer-rank-ratio": "1.5", "--flop-decoder-layers": ""}, "--flop-layer-rank-ratio must be in (0, 1]"),
    ({"--freeze-mask-update": "-5"}, "--freeze-mask-update must be >= 0"),
    ({"--freeze-mask-update": "5", "--bf16": ""}, "--freeze-mask-update does not work with --fp16/--bf16"),
]

# (flop-convert options after DENSE OUT, what the one line names): "{data}" is the suite's data-bin,
# "{other}" a copy whose dictionary has one word more
CALIBRATION_CASES = [
    (["--calibration", "{other}"], "its dictionary has 2,921 types, the model 2,920"),
    (["--calibration", "{data}", "--calibration-tokens", "0"], "--calibration-tokens must be positive"),
    (["--calibration", "{data}", "--calibration-subset", "nosuch"], "no 'nosuch' split"),
    (["--calibration", "{other}/no-such-dir"], "no dict.txt"),
    (["--gate-init-slope", "0.5"], "--gate-init-slope needs --calibration"),
    (["--calibration", "{data}", "--flop-decoder-layers", "--layer-rank-ratio", "0.5"],
     "--calibration needs the full layer rank"),
]

TXL_ARGS = ["--task", "truncated_bptt_lm", "--tokens-per-sample", "16", "--batch-size", "4", "--arch",
            "flop_transformer_xl", "--n-layer", "1", "--d-model", "16", "--n-head", "2", "--d-head", "8",
            "--d-inner", "32", "--mem-len", "16", "--criterion", "flop_adaptive_loss", "--optimizer", "adam",
            "--lr", "0.003", "--max-update", "1", "--ddp-backend", "legacy_ddp", "--cpu", "--num-workers", "0"]
# (flags appended to a working flop_transformer_xl command, what the last line names)
TXL_CASES = [
    (["--cutoffs", "300,100"], "flop_transformer_xl: adaptive cutoffs must be increasing"),
    (["--cutoffs", "100,300", "--div-val", "0"], "flop_transformer_xl: --div-val must be at least 1"),
    (["--cutoffs", "100,300", "--n-head", "0"], "flop_transformer_xl: --n-head must be at least 1"),
    (["--cutoffs", "100,300", "--target-sparsity", "1.0"], "--target-sparsity must be in [0, 1)"),
]


@pytest.fixture(scope="module")
def inputs(dense_checkpoint, pruned, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    compact = tmp / "compact.pt"
    run("flop-compact", pruned[0], compact)
    return _inputs(tmp, dense_checkpoint, pruned[0], str(compact))


def _rows(inputs, data_bin, tmp):
    """Every invocation of this file: {"id", "tool", "args", "watch" (a directory to list after), "fresh"}."""
    rows = []

    def row(row_id, tool, *args, fresh=False):
        watch = tmp / row_id
        watch.mkdir()
        rows.append({"id": row_id, "tool": tool, "args": [str(a) for a in args], "watch": str(watch),
                     "fresh": fresh})
        return watch

    # fairseq answering before our plugin is imported needs a process that has not imported it: first
    row("eval-lm-no-user-dir", "fairseq-eval-lm", data_bin, "--path", inputs["compact"], "--cpu",
        "--gen-subset", "test", fresh=True)
    for tool, name, _ in CASES:
        out = tmp / f"{tool}-{name}" / "out.pt"
        row(f"{tool}-{name}", tool, inputs[name], *([] if tool == "flop-report" else [out]))
    for tool in ("flop-convert", "flop-compact"):
        out = tmp / f"{tool}-missing-dir" / "no" / "such" / "dir" / "out.pt"
        row(f"{tool}-missing-dir", tool, inputs["dense" if tool == "flop-convert" else "gated"], out)
    row("compact-again", "flop-compact", inputs["gated"], tmp / "compact-again" / "compact.pt")
    for i, (changes, _) in enumerate(TRAIN_CASES):
        row(f"train-{i}", "fairseq-train", *_train_args(data_bin, tmp / f"train-{i}" / "ckpt", **changes))
    for i, (extra, _) in enumerate(TXL_CASES):
        row(f"txl-{i}", "fairseq-train", data_bin, "--user-dir", USER_DIR, *TXL_ARGS, *extra, "--save-dir",
            tmp / f"txl-{i}" / "ckpt")
    row("eval-lm-code-args", "fairseq-eval-lm", data_bin, "--user-dir", USER_DIR, "--path", inputs["code-args"],
        "--cpu", "--gen-subset", "test")
    for i, (extra, _) in enumerate(CALIBRATION_CASES):
        out = tmp / f"calibration-{i}" / "out.pt"
        row(f"calibration-{i}", "flop-convert", inputs["dense"], out,
            *(a.format(data=data_bin, other=tmp / "other-bin") for a in extra))
    row("truncate-no-losses", "flop-truncate", inputs["gated"], tmp / "truncate-no-losses" / "out.pt",
        "--sparsity", "0.5")
    row("eval-lm-other-dict", "fairseq-eval-lm", tmp / "other-bin", "--user-dir",
        f"{os.path.dirname(os.path.dirname(__file__))}/user_dir", "--path", inputs["compact"], "--cpu",
        "--gen-subset", "test")
    return rows


@pytest.fixture(scope="module")
def driven(inputs, data_bin, tmp_path_factory):
    """id -> the driver's result for every row (rc, stdout, stderr, last, files, sentinel)."""
    import shutil

    tmp = tmp_path_factory.mktemp("rows")
    shutil.copytree(data_bin, tmp / "other-bin")
    with open(tmp / "other-bin" / "dict.txt", "a") as f:
        f.write("zzzextraword 1\n")
    results, log = drive(_rows(inputs, data_bin, tmp), str(tmp), cwd=REPO)  # where run() starts the tools
    return {"results": results, "log": log, "tmp": tmp}


def _result(driven, row_id):
    res = driven["results"].get(row_id)
    assert res is not None, f"the driver gave no result for {row_id}: {driven['log']}"
    assert "error" not in res, res.get("error")
    return res


@pytest.mark.parametrize("tool,name,needle", CASES, ids=[f"{t}-{n}" for t, n, _ in CASES])
def test_bad_input_is_refused_in_one_line(driven, tool, name, needle):
    res = _result(driven, f"{tool}-{name}")
    assert res["rc"] != 0 and needle in res["stderr"], res["stderr"]
    assert res["stderr"].strip().count("\n") == 0 and "Traceback" not in res["stderr"], res["stderr"]
    assert res["files"] == []  # no output, no temporary file
    assert not res["sentinel"], "unpickling ran code"


@pytest.mark.parametrize("row_id,needle", [(f"calibration-{i}", n) for i, (_, n) in enumerate(CALIBRATION_CASES)]
                         + [("truncate-no-losses", "no component losses")])
def test_bad_calibration_input_is_refused_in_one_line(driven, row_id, needle):
    res = _result(driven, row_id)
    assert res["rc"] != 0 and needle in res["stderr"], res["stderr"]
    assert res["stderr"].strip().count("\n") == 0 and "Traceback" not in res["stderr"], res["stderr"]
    assert res["files"] == []


@pytest.mark.parametrize("tool", ["flop-convert", "flop-compact"])
def test_output_in_a_missing_directory_is_refused(driven, tool):
    res = _result(driven, f"{tool}-missing-dir")
    assert res["rc"] != 0 and "output directory does not exist" in res["stderr"], res["stderr"]
    assert res["stderr"].strip().count("\n") == 0
    assert res["files"] == []


def test_compacting_twice_gives_identical_tensors(driven, inputs):
    """The fixture's compaction (its own process) against the driver's, of the same checkpoint."""
    res = _result(driven, "compact-again")
    assert res["rc"] == 0, res["stderr"][-2000:]
    paths = (inputs["compact"], driven["tmp"] / "compact-again" / "compact.pt")
    a, b = (torch.load(p, weights_only=True)["model"] for p in paths)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("changes,needle", TRAIN_CASES, ids=[str(i) for i in range(len(TRAIN_CASES))])
def test_fairseq_train_refuses_bad_settings_in_one_line(driven, changes, needle):
    res = _result(driven, f"train-{TRAIN_CASES.index((changes, needle))}")
    assert res["rc"] != 0, res["stderr"][-2000:]
    assert needle in res["last"] and "Traceback" not in res["stderr"], res["stderr"][-2000:]
    assert "ckpt/checkpoint_last.pt" not in res["files"]


def test_eval_lm_with_another_dictionary_says_so(driven):
    res = _result(driven, "eval-lm-other-dict")
    last = res["last"]
    assert res["rc"] != 0 and "this dictionary has" in last and "Traceback" not in res["stderr"], last


def test_plugin_allow_list_still_refuses_code(driven):
    """fairseq's own loading, with the plugin's allow-list for pre-hydra checkpoints registered."""
    res = _result(driven, "eval-lm-code-args")
    assert res["rc"] != 0 and "Weights only load failed" in res["stderr"], res["stderr"][-2000:]
    assert not res["sentinel"], "unpickling ran code"


def test_eval_lm_without_user_dir_fails_as_the_readme_says(driven):
    """fairseq itself answers here, before our code is imported: the README quotes its last line."""
    res = _result(driven, "eval-lm-no-user-dir")
    assert res["rc"] != 0 and res["last"] == "KeyError: \"'_name'\"", res["stderr"][-2000:]


def test_compact_killed_at_any_moment_leaves_no_partial_output(inputs, tmp_path):
    """SIGKILL at several moments of flop-compact: the output is then absent or complete."""
    import subprocess
    import time

    from conftest import BIN

    out = tmp_path / "compact.pt"
    reference = None
    for delay in [0.5, 1.0, 2.0, 3.0] + [random.uniform(0.5, 6.0) for _ in range(2)]:
        if out.exists():
            out.unlink()
        proc = subprocess.Popen([os.path.join(BIN, "flop-compact"), inputs["gated"], str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if out.exists():  # finished before the kill: a complete file
            state = torch.load(out, weights_only=True)["model"]
            reference = reference or state
            assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


@pytest.mark.parametrize("extra,needle", TXL_CASES, ids=[str(i) for i in range(len(TXL_CASES))])
def test_transformer_xl_bad_settings_are_refused_in_one_line(driven, extra, needle):
    res = _result(driven, f"txl-{TXL_CASES.index((extra, needle))}")
    last = res["last"]
    assert res["rc"] != 0 and needle in last and "Traceback" not in res["stderr"], res["stderr"][-2000:]
    assert "ckpt/checkpoint_last.pt" not in res["files"]
