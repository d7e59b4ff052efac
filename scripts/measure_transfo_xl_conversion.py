#!/usr/bin/env python
"""``flop-convert`` of a HuggingFace Transformer-XL at the published ``transfo-xl-wt103`` size:
wall time, peak memory and the function check's differences (both memory conventions)::

    python scripts/measure_transfo_xl_conversion.py WORK_DIR [--keep] [--eval-lm]

WORK_DIR gets ``hf/`` (``config.json`` of transfo-xl-wt103 and random weights: 18 layers,
d 1024, div_val 4, cutoffs 20000/40000/200000, 267,735 types, untied r biases, same_length,
clamp_len 1000, memory 1600) and the converted checkpoint; ``--keep`` leaves them there. The
directory is made in a process of its own, so the figures are the conversion's alone. Needs
``transformers`` (the test requirements) and about 5 GB of memory and 3 GB of disk.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

# huggingface.co/transfo-xl/transfo-xl-wt103 config.json (inference settings included)
WT103_CONFIG = {
    "adaptive": True, "attn_type": 0, "clamp_len": 1000, "cutoffs": [20000, 40000, 200000], "d_embed": 1024,
    "d_head": 64, "d_inner": 4096, "d_model": 1024, "div_val": 4, "dropatt": 0.0, "dropout": 0.1,
    "eos_token_id": 0, "init": "normal", "init_range": 0.01, "init_std": 0.02, "layer_norm_epsilon": 1e-5,
    "mem_len": 1600, "n_head": 16, "n_layer": 18, "pre_lnorm": False, "proj_init_std": 0.01, "same_length": True,
    "sample_softmax": -1, "tgt_len": 128, "tie_projs": [False, True, True, True], "untie_r": True,
    "vocab_size": 267735,
}

_MAKE = """
import sys, warnings, torch, transformers
warnings.simplefilter("ignore")
torch.manual_seed(0)
cfg = transformers.TransfoXLConfig(**{config})
model = transformers.TransfoXLLMHeadModel(cfg).eval()
with torch.no_grad():  # HF initialises biases at 0 and projections tiny: make every term count
    for name, p in model.named_parameters():
        if "bias" in name or "cluster" in name:
            p.normal_(0.0, 0.5)
model.save_pretrained(sys.argv[1])
"""


_HF_LOSS = """
import json, sys, warnings, torch, transformers
warnings.simplefilter("ignore")
hf = transformers.TransfoXLLMHeadModel.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor(json.load(open(sys.argv[2]))).view(1, -1)
seg, out = 64, {{}}
for name, mems in (("empty", [torch.empty(0, 1, hf.config.d_model)] * hf.config.n_layer), ("zeros", None)):
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, ids.size(1), seg):
            res = hf(input_ids=ids[:, s:s + seg], mems=mems, return_dict=True)
            mems = res.mems
            for t in range(seg - 1):  # truncated_bptt_lm scores no target for a segment's last token
                total -= res.prediction_scores[0, t, ids[0, s + t + 1]].item()
                count += 1
    out[name] = total / count / {log2}
print(json.dumps(out))
"""


def _eval_lm_against_hf(work_dir, hf, ckpt, env):
    """fairseq-eval-lm of the conversion over one row of three 64-token segments, from an empty
    memory and with ``init_zero_mems``, and HF's loss on the same tokens both ways (base 2)."""
    import math
    import random

    with open(os.path.join(work_dir, "dict.txt"), encoding="utf-8") as f:
        words = [line.split()[0] for line in f]
    rng = random.Random(0)
    line = [rng.choice(words) for _ in range(3 * 64 - 1)]
    with open(os.path.join(work_dir, "test.txt"), "w", encoding="utf-8") as f:
        f.write(" ".join(line) + "\n")  # 191 words and </s>: three segments
    # HF ids: the directory has no vocabulary, so dict.txt names HF's word j "<hfj>"; fairseq's
    # </s> is the model's <eos> (eos_token_id 0)
    with open(os.path.join(work_dir, "ids.json"), "w") as f:
        json.dump([int(w[3:-1]) for w in line] + [0], f)
    bin_dir = os.path.join(work_dir, "bin")
    shutil.rmtree(bin_dir, ignore_errors=True)
    tool = os.path.join(os.path.dirname(sys.executable), "fairseq-")
    subprocess.run([tool + "preprocess", "--only-source", "--srcdict", os.path.join(work_dir, "dict.txt"),
                    "--testpref", os.path.join(work_dir, "test.txt"), "--destdir", bin_dir, "--workers", "1"],
                   check=True, env=env, capture_output=True)
    from flop_fairseq.plugin import user_dir_path
    from flop_fairseq.tools.fairseq_log import parse_eval_lm

    found = {}
    for name, overrides in (("empty", {}), ("zeros", {"init_zero_mems": True})):
        proc = subprocess.run([tool + "eval-lm", bin_dir, "--user-dir", user_dir_path(), "--task", "truncated_bptt_lm",
                               "--path", ckpt, "--cpu", "--tokens-per-sample", "64", "--batch-size", "1",
                               "--gen-subset", "test", "--model-overrides", repr(overrides)],
                              env=env, capture_output=True, text=True)
        found[f"eval_lm_loss2_{name}"] = parse_eval_lm(proc.stdout + proc.stderr)["loss_base2"]
    hf_loss = json.loads(subprocess.run(
        [sys.executable, "-c", _HF_LOSS.format(log2=math.log(2)), hf, os.path.join(work_dir, "ids.json")],
        check=True, env=env, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    found.update({f"hf_loss2_{k}": round(v, 4) for k, v in hf_loss.items()})
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir")
    parser.add_argument("--keep", action="store_true", help="keep the HF directory and the conversion")
    parser.add_argument("--eval-lm", action="store_true",
                        help="then fairseq-eval-lm over three 64-token segments against HF's loss, under both "
                             "memory conventions")
    args = parser.parse_args(argv)
    hf, out = os.path.join(args.work_dir, "hf"), os.path.join(args.work_dir, "txl_init.pt")
    os.makedirs(args.work_dir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if not os.path.isfile(os.path.join(hf, "config.json")):
        print(f"writing {hf} (random weights at the transfo-xl-wt103 configuration)", flush=True)
        subprocess.run([sys.executable, "-c", _MAKE.format(config=repr(WT103_CONFIG)), hf], check=True, env=env)
    exe = os.path.join(os.path.dirname(sys.executable), "flop-convert")
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.Popen([exe, hf, out, "--dict", os.path.join(args.work_dir, "dict.txt")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    print(output.strip())
    rc = os.waitstatus_to_exitcode(status)
    found = re.search(r"\| = (\S+) from an empty memory .*, (\S+) from mem_len zero vectors", output)
    result = {"rc": rc, "wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2),
              "max_logprob_diff_empty_memory": float(found.group(1)) if found else None,
              "max_logprob_diff_zero_memory": float(found.group(2)) if found else None,
              "threads": env["OMP_NUM_THREADS"], "load_1min_before": round(load_before, 2),
              "load_1min_after": round(os.getloadavg()[0], 2)}
    if rc == 0 and args.eval_lm:
        result.update(_eval_lm_against_hf(args.work_dir, hf, out, env))
    print(json.dumps(result))
    if not args.keep:
        for path in (hf, out):
            shutil.rmtree(path) if os.path.isdir(path) else os.path.exists(path) and os.unlink(path)
    return rc


if __name__ == "__main__":
    sys.exit(main())
