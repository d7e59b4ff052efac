"""fairseq's pre-hydra checkpoints (its published language models' layout: ``argparse.Namespace``
args, no cfg, numpy scalars in the training state) through every tool and fairseq's own commands
with the plugin, under torch's weights-only loading: the suite's dense model rewritten that way
(weights unchanged) converts, evaluates to exactly the hydra original's perplexity, compacts,
fine-tunes and loads in the hub."""

import os
import re
import subprocess
import sys

import pytest

from cli_driver import Batch
from conftest import MODEL_ARGS, PRUNE_ARGS, REPO, TRAIN_ARGS
from pre_hydra_checkpoints import write_pre_hydra


@pytest.fixture(scope="module")
def old(dense_checkpoint, tmp_path_factory):
    """{"args": the pre-hydra file, "old_keys": the same with fairseq 0.6-0.8's key names}."""
    root = tmp_path_factory.mktemp("pre_hydra")
    paths = {"args": str(root / "old.pt"), "old_keys": str(root / "old_keys.pt")}
    write_pre_hydra(dense_checkpoint, paths["args"])
    write_pre_hydra(dense_checkpoint, paths["old_keys"], old_keys=True)
    return paths


@pytest.fixture(scope="module")
def chain(old, dense_checkpoint, data_bin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre_hydra_chain")
    batch = Batch()
    keys = {
        "convert": batch.add("flop-convert", old["args"], tmp / "flop.pt"),
        "convert_old_keys": batch.add("flop-convert", old["old_keys"], tmp / "flop_old_keys.pt"),
        "eval_old": batch.eval_lm(data_bin, old["args"]),
        "eval_hydra": batch.eval_lm(data_bin, dense_checkpoint),
        "compact": batch.add("flop-compact", tmp / "flop.pt", tmp / "compact.pt"),
        "eval_compact": batch.eval_lm(data_bin, tmp / "compact.pt"),
        # the README's WikiText-103 step: the conversion pruned, distilled from the pre-hydra original
        "finetune": batch.add("fairseq-train", data_bin, *TRAIN_ARGS, *PRUNE_ARGS, "--finetune-from-model",
                              tmp / "flop.pt", "--distill-teacher", old["args"], "--max-update", "1",
                              "--save-dir", tmp / "ft"),
    }
    batch.run(tmp / "driver", cwd=REPO)
    return {"batch": batch, "tmp": tmp, **keys}


def _check_diff(stdout):
    return float(re.search(r"gates bypassed\)\| = (\S+)", stdout).group(1))


def test_pre_hydra_checkpoint_converts_with_the_function_check(chain):
    for key in ("convert", "convert_old_keys"):
        out = chain["batch"][chain[key]].stdout
        assert _check_diff(out) <= 1e-5, out
        assert "arch flop_transformer_lm" in out


def test_eval_lm_gives_the_hydra_originals_perplexity(chain):
    assert chain["eval_old"]() == chain["eval_hydra"]()


def test_compact_model_of_the_conversion_evaluates_and_fine_tunes(chain):
    # at the default keep probability every gate of the fresh conversion is 1: the dense function
    loss_compact, _ = chain["eval_compact"]()
    loss_dense, _ = chain["eval_hydra"]()
    assert abs(loss_compact - loss_dense) < 1e-3
    chain["batch"][chain["finetune"]]
    assert os.path.isfile(chain["tmp"] / "ft" / "checkpoint_last.pt")


def test_hub_loads_a_pre_hydra_checkpoint(old, data_bin):
    """A process of its own: nothing else has registered the allow-list with torch."""
    code = ("from flop_fairseq.models import FlopTransformerLanguageModel as M\n"
            f"lm = M.from_pretrained({os.path.dirname(old['args'])!r}, 'old.pt', data_name_or_path={data_bin!r})\n"
            "print(lm.score('the')['positional_scores'].numel())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "1", proc.stderr[-3000:]


def test_old_decoder_versions_lose_the_final_layer_norm_in_the_config():
    """What fairseq's loader decides from decoder.version <= 2 (before 0.7) is written into the
    config, so the FLOP model built from it has the dense model's structure."""
    import torch

    from flop_fairseq.models.transformer_lm.dense import upgrade_dense_state

    for version, dropped in ((None, True), (2.0, True), (3.0, False)):
        cfg, state = {"decoder_normalize_before": True}, {"decoder.adaptive_softmax.version": torch.LongTensor([1])}
        if version is not None:
            state["decoder.version"] = torch.Tensor([version])
        upgrade_dense_state(cfg, state)
        assert cfg.get("no_decoder_final_norm", False) is dropped
        assert float(state["decoder.version"][0]) == 3.0
    with pytest.raises(ValueError, match="before 0.6"):
        upgrade_dense_state({}, {"decoder.version": torch.Tensor([3]), "decoder.adaptive_softmax.head.weight": None})
