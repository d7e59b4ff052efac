#!/usr/bin/env bash
# Downloads one of fairseq's published dense language models with adaptive input/softmax
# (model.pt, a pre-hydra checkpoint, and its dict.txt) into DEST_DIR, for flop-convert.
#
#   scripts/download-fairseq-lm.sh [NAME] DEST_DIR
#
# NAME: wiki103 (default; transformer_lm.wiki103.adaptive, adaptive_lm_wiki103.v2, 247M
# parameters) or gbw (transformer_lm.gbw.adaptive_huge, 1026M). Needs internet (curl or wget)
# and tar with bzip2. Files go to a temporary directory next to DEST_DIR, moved into place at
# the end, so a failed download leaves no DEST_DIR.
set -euo pipefail
die() { echo "$(basename "$0"): error: $*" >&2; exit 1; }
usage() { echo "usage: $(basename "$0") [wiki103|gbw] DEST_DIR" >&2; }
case $# in
    1) name=wiki103; dest=${1%/} ;;
    2) name=$1; dest=${2%/} ;;
    *) usage; exit 2 ;;
esac
base=${FAIRSEQ_LM_URL:-https://dl.fbaipublicfiles.com/fairseq/models/lm}
case $name in
    wiki103) archive=adaptive_lm_wiki103.v2.tar.bz2 ;;
    gbw) archive=adaptive_lm_gbw_huge.tar.bz2 ;;
    *) usage; die "unknown model: $name (wiki103 or gbw)" ;;
esac
[ -e "$dest" ] && die "$dest exists; choose a new directory"
tmp=$(mktemp -d "$(dirname "$dest")/.download-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "downloading $base/$archive"
if command -v curl >/dev/null; then
    curl -fL --retry 3 -o "$tmp/$archive" "$base/$archive" || die "could not download $base/$archive"
elif command -v wget >/dev/null; then
    wget -q --show-progress -O "$tmp/$archive" "$base/$archive" || die "could not download $base/$archive"
else
    die "neither curl nor wget found"
fi
tar -xjf "$tmp/$archive" -C "$tmp" || die "cannot extract $archive (bzip2 missing, or a damaged download?)"
rm "$tmp/$archive"
model=$(find "$tmp" -name model.pt -print -quit)
[ -n "$model" ] || die "$archive holds no model.pt"
mv "$(dirname "$model")" "$dest"
echo "wrote $dest (model.pt, dict.txt); next: flop-convert $dest/model.pt flop_init.pt"
