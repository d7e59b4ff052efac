"""After a non-editable install (a wheel), outside the checkout: ``--user-dir "$(flop-user-dir)"``
trains, and flop-compact, flop-report, fairseq-eval-lm and the hub interface work.

The training and the CLIs after it run in one process of the installed environment's python
(tests/cli_driver.py, which imports only the standard library before it calls them): a process
per call spent most of its time importing fairseq."""

import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from cli_driver import Batch
from conftest import MODEL_ARGS, REPO, TRAIN_ARGS


def sh(*cmd, cwd, env=None):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel of the project installed without dependencies into a fresh virtual environment
    that sees the project's environment (torch, fairseq) through a .pth line, not the checkout."""
    root = tmp_path_factory.mktemp("install")
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist", REPO,
       cwd=root)
    wheel = next((root / "dist").glob("flop_fairseq-*.whl"))
    venv = root / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    py = venv / "bin" / "python"
    site = sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).strip()
    # the project's environment after the venv's own site-packages: the wheel's package wins,
    # and the editable install's finder (a .pth of that environment) is not run
    with open(os.path.join(site, "project_env.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    sh(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel, cwd=root)
    return {"wheel": wheel, "bin": venv / "bin", "py": py, "root": root}


def test_wheel_ships_the_plugin(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for path in ("flop_fairseq/plugin/flop_fairseq_plugin/__init__.py", "flop_fairseq/core/counting.py",
                 "flop_fairseq/models/transformer_lm/model.py", "flop_fairseq/cli/user_dir.py"):
        assert path in names, path
    # the benchmarks stay beside the package: run from a checkout, not shipped half-working
    assert not [n for n in names if n.startswith(("benchmarks/", "flop_fairseq/bench/"))]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(installed["wheel"]).read(entry).decode()
    assert "flop-user-dir = flop_fairseq.cli.user_dir:main" in text


def test_pipeline_outside_the_checkout(installed, data_bin, tmp_path):
    b, py = installed["bin"], installed["py"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    user_dir = sh(b / "flop-user-dir", cwd=tmp_path, env=env).strip()
    assert user_dir.startswith(str(installed["root"])) and os.path.isdir(user_dir)
    where = sh(py, "-c", "import flop_fairseq; print(flop_fairseq.__file__)", cwd=tmp_path, env=env)
    assert where.startswith(str(installed["root"])), where
    save = tmp_path / "ckpt"
    batch = Batch()  # each call through the entry point its console script (or python -m) runs
    batch.add("fairseq-train", data_bin, *TRAIN_ARGS, "--user-dir", user_dir, "--arch", "flop_transformer_lm",
              *MODEL_ARGS, "--criterion", "flop_adaptive_loss", "--target-sparsity", "0.5", "--lr", "0.003",
              "--max-update", "2", "--save-dir", save)
    compact = batch.add("flop-compact", save / "checkpoint_last.pt", tmp_path / "compact.pt")
    report = batch.add("flop-report", tmp_path / "compact.pt")
    ev = batch.add("fairseq-eval-lm", data_bin, "--user-dir", user_dir, "--path", tmp_path / "compact.pt", "--cpu",
                   "--tokens-per-sample", "64", "--max-tokens", "1024", "--gen-subset", "test", check=False)
    batch.run(tmp_path / "driver", cwd=tmp_path, python=py, env=env)
    for key in (compact, report, ev):  # the installed package ran, not the checkout's
        assert batch[key].flop_fairseq.startswith(str(installed["root"])), batch[key].flop_fairseq
    assert "wrote" in batch[compact].stdout
    assert "compact FLOP model" in batch[report].stdout
    ev = batch[ev]
    assert ev.returncode == 0 and "Perplexity" in ev.stdout + ev.stderr, ev.stderr[-3000:]
    hub = ("from flop_fairseq.models import FlopTransformerLanguageModel as M\n"
           f"lm = M.from_pretrained({str(tmp_path)!r}, 'compact.pt', data_name_or_path={data_bin!r})\n"
           "print(lm.score('the')['positional_scores'].numel())")
    assert sh(py, "-c", hub, cwd=tmp_path, env=env).strip().splitlines()[-1] == "1"
