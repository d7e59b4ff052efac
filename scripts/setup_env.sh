#!/usr/bin/env bash
# Creates .venv and installs flop-fairseq with everything it needs, once.
# A stamp keyed on setup.py, requirements.txt and this script skips the work
# when nothing changed. Never lets pip download a CUDA torch or torchaudio.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
FAIRSEQ_DIST=${FAIRSEQ_DIST:-ve-fairseq==0.12.3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

key=$(cat setup.py requirements.txt requirements-test.txt scripts/setup_env.sh | sha256sum | cut -c1-16)
stamp="$VENV/.flop-installed-$key"
[ -f "$stamp" ] && exit 0

start=$(date +%s)
[ -x "$PY" ] || python3 -m venv "$VENV"
pip() { "$PY" -m pip --disable-pip-version-check -q "$@"; }

# Keep a torch >= 2.1 the user already has (GPU users bring their own build).
if ! "$PY" -c 'import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 1))' 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC (CPU wheel where one is found locally)"
    pip install "$TORCH_SPEC"
fi
torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
constraints="$VENV/constraints.txt"
echo "torch==$torch_version" > "$constraints"

echo "setup: installing runtime requirements (torch $torch_version pinned)"
pip install -c "$constraints" -r requirements.txt
echo "setup: installing test requirements (transformers for the Transformer-XL reference; torch pinned)"
pip install -c "$constraints" -r requirements-test.txt
echo "setup: installing $FAIRSEQ_DIST without its declared deps (torchaudio would replace torch)"
pip install --no-deps "$FAIRSEQ_DIST"
pip install --no-deps -e .

"$PY" - <<'PY'
import importlib.util, sys, torch, fairseq, flop_fairseq
assert importlib.util.find_spec("torchaudio") is None, "torchaudio got installed"
print(f"setup: torch {torch.__version__}, fairseq {fairseq.__version__}, flop_fairseq {flop_fairseq.__version__}")
PY
rm -f "$VENV"/.flop-installed-*
touch "$stamp"
echo "setup: done in $(( $(date +%s) - start ))s"
