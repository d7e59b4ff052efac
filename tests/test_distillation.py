"""Distillation from a frozen teacher (``--distill-teacher``): the band-by-band KL against the KL
of the full log-probability tensors, the gradient path, two real fairseq-train runs and the
one-line refusals of bad flags."""

import re

import pytest
import torch

from conftest import MODEL_ARGS, PRUNE_ARGS, TRAIN_ARGS, USER_DIR, run
from flop_fairseq.criterions.distill_adaptive_loss import DistillAdaptiveLoss, DistillAdaptiveLossConfig
from flop_fairseq.criterions.distillation import (Distiller, adaptive_kl, adaptive_kl_sum, load_teacher,
                                                  softmax_parts)
from flop_fairseq.criterions.flop_adaptive_loss import FlopAdaptiveLoss, FlopAdaptiveLossConfig
from flop_fairseq.tools.checkpoint import load_any_model, stub_task


@pytest.fixture(scope="module")
def models(dense_checkpoint, flop_init, compact_init):
    """kind -> model in eval mode, float64 (so the two KL computations agree far below 1e-5)."""
    paths = {"dense": dense_checkpoint, "gated": flop_init[0], "compact": compact_init}
    return {kind: load_any_model(path)[1].double().eval() for kind, path in paths.items()}


def _batch(vocab: int, pad: int = 1, bsz: int = 3, length: int = 17):
    """Random tokens ``(bsz, length)`` with the last 5 positions of row 0 padded."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, vocab, (bsz, length), generator=g)
    tokens[0, -5:] = pad
    return tokens


def _hidden(model, tokens):
    """The adaptive softmax's input ``(B, T, d)``."""
    return model(tokens)[0]


def _full_log_prob(asm, h):
    """``(N, |V|)`` log-probabilities built whole (``get_log_prob`` is the same but writes in place,
    so autograd cannot go through it): the gradient reference."""
    _, head, tail = softmax_parts(asm)
    n_words = asm.cutoff[0]
    log_head = torch.log_softmax(head(h), -1)
    bands = [log_head[:, :n_words]]
    for i in range(len(asm.cutoff) - 1):
        bands.append(torch.log_softmax(tail(i, h), -1) + log_head[:, n_words + i, None])
    return torch.cat(bands, -1)


def _full_kl(student, h_s, teacher, h_t):
    """Per-position KL ``(B*T,)`` from the two models' full ``(B, T, |V|)`` log-probabilities."""
    log_s = student.decoder.adaptive_softmax.get_log_prob(h_s, None)
    log_t = teacher.decoder.adaptive_softmax.get_log_prob(h_t, None)
    return (log_t.exp() * (log_t - log_s)).sum(-1).reshape(-1)


PAIRS = [("dense", "gated"), ("gated", "compact"), ("compact", "dense"), ("dense", "dense")]


@pytest.mark.parametrize("teacher_kind,student_kind", PAIRS)
def test_band_by_band_kl_equals_the_full_vocabulary_kl(models, teacher_kind, student_kind):
    teacher, student = models[teacher_kind], models[student_kind]
    tokens = _batch(student.decoder.adaptive_softmax.vocab_size)
    with torch.no_grad():
        h_t, h_s = _hidden(teacher, tokens), _hidden(student, tokens)
        # a nudge, so that a gated model and its compact copy (the same function) differ too
        h_s = h_s + 0.3 * torch.randn(h_s.shape, generator=torch.Generator().manual_seed(1), dtype=h_s.dtype)
        full = _full_kl(student, h_s, teacher, h_t)
        for chunk in (7, 1024):  # several chunks, and one
            banded = adaptive_kl(student.decoder.adaptive_softmax, h_s.reshape(-1, h_s.size(-1)),
                                 teacher.decoder.adaptive_softmax, h_t.reshape(-1, h_t.size(-1)),
                                 chunk_tokens=chunk)
            assert banded.shape == full.shape
            assert torch.allclose(banded, full, atol=1e-5, rtol=0), (banded - full).abs().max()
        # these softmaxes are linear in their input (no biases), so dividing every factor's logits
        # by T is the full KL at inputs h / T: the temperature's exact meaning
        tempered = adaptive_kl(student.decoder.adaptive_softmax, h_s.reshape(-1, h_s.size(-1)),
                               teacher.decoder.adaptive_softmax, h_t.reshape(-1, h_t.size(-1)), temperature=2.5)
        assert torch.allclose(tempered, _full_kl(student, h_s / 2.5, teacher, h_t / 2.5), atol=1e-5, rtol=0)
    assert full.min() > 1e-3  # a real divergence, not two zeros agreeing


@pytest.mark.parametrize("kind", ["dense", "gated", "compact"])
def test_kl_of_a_model_with_itself_is_zero(models, kind):
    model = models[kind]
    with torch.no_grad():
        h = _hidden(model, _batch(model.decoder.adaptive_softmax.vocab_size)).reshape(-1, 128)
        for t in (1.0, 3.0):
            kl = adaptive_kl(model.decoder.adaptive_softmax, h, model.decoder.adaptive_softmax, h, t, 10)
            assert kl.abs().max() < 1e-6


def test_banded_gradient_equals_the_full_kl_gradient(models):
    teacher, student = models["dense"], models["gated"]
    tokens = _batch(student.decoder.adaptive_softmax.vocab_size)
    with torch.no_grad():
        h_t = _hidden(teacher, tokens).reshape(-1, 128)
    h_s = _hidden(student, tokens).detach().reshape(-1, 128).requires_grad_(True)
    asm = student.decoder.adaptive_softmax
    grads = []
    for chunk in (9, 0, "plain", None):
        student.zero_grad()
        h_s.grad = None
        scale = 1.0
        if chunk == "plain":  # plain autograd through adaptive_kl
            kl = adaptive_kl(asm, h_s, teacher.decoder.adaptive_softmax, h_t, chunk_tokens=9).sum()
        elif chunk is not None:  # gradients taken band by band in the forward pass, in chunks of 9 or one;
            scale = 2.5          # backward scales them by the incoming gradient
            kl = scale * adaptive_kl_sum(asm, h_s, teacher.decoder.adaptive_softmax, h_t, chunk_tokens=chunk)
        else:
            log_s = _full_log_prob(asm, h_s)
            with torch.no_grad():
                assert torch.allclose(log_s.view(3, 17, -1), asm.get_log_prob(h_s.view(3, 17, 128), None))
                full = teacher.decoder.adaptive_softmax.get_log_prob(h_t.view(3, 17, 128), None).view(51, -1)
            kl = (full.exp() * (full - log_s)).sum()
        kl.backward()
        grads.append([g / scale for g in [h_s.grad] + [p.grad for p in asm.parameters() if p.grad is not None]])
    reference = grads.pop()
    for banded in grads:
        assert len(banded) == len(reference) > 1
        for a, b in zip(banded, reference):
            assert torch.allclose(a, b, atol=1e-8, rtol=1e-6)


def test_gradient_reaches_the_student_only_and_padding_is_masked(dense_checkpoint, flop_init):
    teacher = load_teacher(dense_checkpoint, load_any_model(dense_checkpoint)[1].decoder.adaptive_softmax.vocab_size,
                           "test")
    student = load_any_model(flop_init[0])[1].train()  # sampled gates and dropout, as in training
    distiller = Distiller(teacher, weight=0.5, temperature=2.0, chunk_tokens=16, name="test")
    tokens = _batch(student.decoder.adaptive_softmax.vocab_size)
    sample = {"net_input": {"src_tokens": tokens}, "target": tokens}
    net_output = student(tokens)
    kl = distiller.kl_sum(student, sample, net_output, padding_idx=1)
    kl.backward()
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    band_grads = [p.grad for p in student.decoder.adaptive_softmax.parameters()]
    assert band_grads and all(g is not None and g.abs().sum() > 0 for g in band_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.decoder.layers.parameters())
    # the KL over the 46 non-padding positions only
    student.eval()
    with torch.no_grad():
        h_s, h_t = _hidden(student, tokens), _hidden(teacher, tokens)
        keep = tokens.reshape(-1).ne(1)
        per_token = adaptive_kl(student.decoder.adaptive_softmax, h_s.reshape(-1, 128)[keep],
                                teacher.decoder.adaptive_softmax, h_t.reshape(-1, 128)[keep], 2.0)
        assert per_token.numel() == keep.sum() == 3 * 17 - 5
        assert torch.allclose(distiller.kl_sum(student, sample, (h_s,), padding_idx=1), per_token.sum())


def test_teacher_follows_the_students_dtype(dense_checkpoint, compact_init):
    teacher = load_teacher(dense_checkpoint, load_any_model(dense_checkpoint)[1].decoder.adaptive_softmax.vocab_size,
                           "test")
    student = load_any_model(compact_init)[1].eval()
    distiller = Distiller(teacher, 0.5, 1.0, 1024, "test")
    tokens = _batch(student.decoder.adaptive_softmax.vocab_size)
    sample = {"net_input": {"src_tokens": tokens}, "target": tokens}
    with torch.no_grad():
        exact = distiller.kl_sum(student, sample, student(tokens), padding_idx=1)
        student.to(torch.bfloat16)  # what --bf16 does to the model; the logits go to float32 for the KL
        low = distiller.kl_sum(student, sample, student(tokens), padding_idx=1)
    assert next(teacher.parameters()).dtype == torch.bfloat16
    assert low.dtype == torch.float32 and abs(low.item() - exact.item()) < 0.05 * exact.item()
    distiller.kl_sum(student.train(), sample, student(tokens), padding_idx=1).backward()  # half-precision grads
    grads = [p.grad for p in student.decoder.adaptive_softmax.parameters()]
    assert all(g is not None and g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------------------------------------
# fairseq-train


def _tensor_numel(obj) -> int:
    """Elements of every tensor anywhere in a checkpoint."""
    if torch.is_tensor(obj):
        return obj.numel()
    if isinstance(obj, dict):
        return sum(_tensor_numel(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_numel(v) for v in obj)
    return 0


def _assert_no_teacher_in(path, init_path):
    """The saved checkpoint holds the student's tensors and Adam's two moments of them, nothing more."""
    state = torch.load(path, weights_only=False)
    init = torch.load(init_path, weights_only=False)["model"]
    assert state["model"].keys() == init.keys()
    assert not state.get("criterion")
    model_numel = _tensor_numel(state["model"])
    assert _tensor_numel(state) <= 3 * model_numel + 10_000  # a teacher would add ~ its whole size


DISTILL_LOG = ["--log-interval", "2", "--max-update", "4", "--disable-validation"]


def _last_train_line(out):
    lines = [line for line in out.splitlines() if "train_inner" in line]
    assert lines, out[-3000:]
    return dict(re.findall(r"(\w+)=([-0-9.e]+)", lines[-1]))


def test_fairseq_train_prunes_with_a_dense_teacher(data_bin, dense_checkpoint, flop_init, tmp_path):
    proc = run("fairseq-train", data_bin, *TRAIN_ARGS, *PRUNE_ARGS, *DISTILL_LOG, "--finetune-from-model",
               flop_init[0], "--distill-teacher", dense_checkpoint, "--distill-temperature", "2",
               "--save-dir", tmp_path)
    final = _last_train_line(proc.stdout + proc.stderr)
    assert float(final["distill_kl"]) > 0 and 0 < float(final["distill_teacher_share"]) < 1
    assert "lagrangian" in final  # the FLOP terms are still there
    _assert_no_teacher_in(tmp_path / "checkpoint_last.pt", flop_init[0])


def test_fairseq_train_finetunes_a_compact_model_with_distill_adaptive_loss(data_bin, dense_checkpoint,
                                                                           compact_init, tmp_path):
    proc = run("fairseq-train", data_bin, *TRAIN_ARGS, "--user-dir", USER_DIR, "--arch", "flop_transformer_lm",
               *MODEL_ARGS, "--criterion", "distill_adaptive_loss", "--lr", "0.001", *DISTILL_LOG,
               "--finetune-from-model", compact_init, "--distill-teacher", dense_checkpoint,
               "--distill-weight", "0.7", "--save-dir", tmp_path)
    final = _last_train_line(proc.stdout + proc.stderr)
    assert float(final["distill_kl"]) > 0 and "distill_teacher_share" in final
    _assert_no_teacher_in(tmp_path / "checkpoint_last.pt", compact_init)


# ---------------------------------------------------------------------------------------------
# bad input


def test_missing_teacher_stops_fairseq_train_with_one_line(data_bin, flop_init, tmp_path):
    proc = run("fairseq-train", data_bin, *TRAIN_ARGS, *PRUNE_ARGS, "--finetune-from-model", flop_init[0],
               "--max-update", 1, "--save-dir", tmp_path, "--distill-teacher", tmp_path / "missing.pt",
               check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("flop_adaptive_loss: --distill-teacher") and "no such checkpoint" in last, proc.stderr
    assert "Traceback" not in proc.stderr


def _cfg(config_cls, **flags):
    base = dict(sentence_avg=False, ddp_backend="legacy_ddp")
    if config_cls is FlopAdaptiveLossConfig:
        base["lr"] = [0.001]
    return config_cls(**base, **flags)


@pytest.mark.parametrize("criterion,config_cls", [(FlopAdaptiveLoss, FlopAdaptiveLossConfig),
                                                  (DistillAdaptiveLoss, DistillAdaptiveLossConfig)])
def test_bad_distillation_flags_are_refused_with_one_line(criterion, config_cls, dense_checkpoint, tmp_path):
    vocab = load_any_model(dense_checkpoint)[1].decoder.adaptive_softmax.vocab_size
    cases = [
        (dict(distill_teacher=str(tmp_path / "missing.pt")), vocab, "no such checkpoint file"),
        (dict(distill_teacher=dense_checkpoint), vocab + 1, f"the teacher has {vocab:,} types"),
        (dict(distill_teacher=dense_checkpoint, distill_weight=1.5), vocab, "--distill-weight must be in [0, 1]"),
        (dict(distill_teacher=dense_checkpoint, distill_weight=-0.1), vocab, "--distill-weight must be in [0, 1]"),
        (dict(distill_teacher=dense_checkpoint, distill_temperature=0.0), vocab, "--distill-temperature must be > 0"),
        (dict(distill_teacher=dense_checkpoint, distill_chunk_tokens=-1), vocab, "--distill-chunk-tokens must be >= 0"),
    ]
    for flags, task_vocab, needle in cases:
        with pytest.raises(SystemExit) as e:
            criterion.build_criterion(_cfg(config_cls, **flags), stub_task(task_vocab))
        line = str(e.value)
        assert line.startswith(f"{criterion.NAME}: ") and needle in line and "\n" not in line, line
    ok = criterion.build_criterion(_cfg(config_cls, distill_teacher=dense_checkpoint), stub_task(vocab))
    assert ok.distiller is not None and ok.distiller.weight == 0.5 and ok.distiller.temperature == 1.0
    assert not list(ok.parameters()) and not ok.state_dict()  # the teacher is no part of the criterion


def test_different_cutoffs_are_refused(dense_checkpoint, flop_init):
    dense = load_any_model(dense_checkpoint)[1]
    teacher = load_teacher(dense_checkpoint, dense.decoder.adaptive_softmax.vocab_size, "distill_adaptive_loss")
    student = load_any_model(flop_init[0])[1]
    student.decoder.adaptive_softmax.cutoff = [400] + student.decoder.adaptive_softmax.cutoff[1:]
    with pytest.raises(SystemExit, match=r"^distill_adaptive_loss: the teacher's adaptive softmax cutoffs"):
        Distiller(teacher, 0.5, 1.0, 64, "distill_adaptive_loss").follow(student)
