#!/usr/bin/env bash
# Downloads the published Transformer-XL WikiText-103 model (HuggingFace's transfo-xl-wt103:
# config.json, pytorch_model.bin, vocab.pkl) into DEST_DIR, for flop-convert DEST_DIR OUT.pt.
#
#   scripts/download-transfo-xl-wt103.sh DEST_DIR
#
# Needs internet. Files go to a temporary directory next to DEST_DIR, moved into place at the end.
set -euo pipefail
die() { echo "$(basename "$0"): error: $*" >&2; exit 1; }
[ $# -eq 1 ] || { echo "usage: $(basename "$0") DEST_DIR" >&2; exit 2; }
dest=${1%/}
[ -e "$dest" ] && die "$dest exists; choose a new directory"
command -v curl >/dev/null || die "curl not found"
base=${TRANSFO_XL_URL:-https://huggingface.co/transfo-xl/transfo-xl-wt103/resolve/main}
tmp=$(mktemp -d "$(dirname "$dest")/.download-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for f in config.json pytorch_model.bin vocab.pkl; do
    echo "downloading $f"
    curl -fL --retry 3 -o "$tmp/$f" "$base/$f" || die "could not download $base/$f"
done
mv "$tmp" "$dest"
trap - EXIT
echo "wrote $dest; next: flop-convert $dest txl_init.pt --dict txl_dict.txt"
