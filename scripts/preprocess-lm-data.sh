#!/usr/bin/env bash
# Binarizes a word-level language-model corpus for fairseq:
#
#   scripts/preprocess-lm-data.sh SRC_DIR DEST_DIR [extra fairseq-preprocess args]
#
# SRC_DIR holds wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens (WikiText)
# or train.txt, valid.txt, test.txt (python -m flop_fairseq.demo.corpus). Runs
#   fairseq-preprocess --only-source --trainpref .. --validpref .. --testpref ..
#       --destdir DEST_DIR --workers $WORKERS
# with the fairseq-preprocess of the repository's .venv when there is one (or of
# $VENV), else the one on PATH. WORKERS defaults to the number of CPUs.
# The output is built in a temporary directory next to DEST_DIR and moved into
# place at the end, so a failed run leaves no half-written DEST_DIR. An existing
# DEST_DIR with a dict.txt is refused unless FORCE=1 (then it is replaced).
set -euo pipefail

die() { echo "$(basename "$0"): error: $*" >&2; exit 1; }

if [ $# -lt 2 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    echo "usage: $(basename "$0") SRC_DIR DEST_DIR [extra fairseq-preprocess args]" >&2
    [ $# -ge 1 ] && { [ "$1" = "-h" ] || [ "$1" = "--help" ]; } && exit 0
    exit 2
fi
src=$1
dest=${2%/}
shift 2

[ -e "$src" ] || die "source directory not found: $src"
[ -d "$src" ] || die "source is not a directory: $src"
[ -n "$dest" ] || die "empty DEST_DIR"

prefixes=()
for split in train valid test; do
    if [ -f "$src/wiki.$split.tokens" ]; then
        prefixes+=("$src/wiki.$split.tokens")
    elif [ -f "$src/$split.txt" ]; then
        prefixes+=("$src/$split.txt")
    else
        die "missing $split split in $src: neither wiki.$split.tokens nor $split.txt"
    fi
    [ -s "${prefixes[-1]}" ] || die "empty $split split: ${prefixes[-1]}"
done

if [ -e "$dest" ] && [ ! -d "$dest" ]; then
    die "destination exists and is not a directory: $dest"
fi
if [ -f "$dest/dict.txt" ] && [ "${FORCE:-0}" != 1 ]; then
    die "$dest already holds a binarized corpus (dict.txt); remove it or set FORCE=1"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
preprocess=""
for venv in "${VENV:-}" "$repo/.venv"; do
    if [ -n "$venv" ] && [ -x "$venv/bin/fairseq-preprocess" ]; then
        preprocess="$venv/bin/fairseq-preprocess"
        break
    fi
done
if [ -z "$preprocess" ]; then
    preprocess=$(command -v fairseq-preprocess || true)
fi
[ -n "$preprocess" ] || die "fairseq-preprocess not found (no $repo/.venv; run make setup, or put fairseq on PATH)"

workers=${WORKERS:-$(nproc 2>/dev/null || echo 1)}
case $workers in
    '' | *[!0-9]* | 0) die "WORKERS must be a positive integer, got '$workers'" ;;
esac

parent=$(dirname "$dest")
mkdir -p "$parent" || die "cannot create $parent"
tmp="$parent/.$(basename "$dest").tmp.$$"
rm -rf "$tmp"
mkdir "$tmp" || die "cannot create a temporary directory in $parent"
trap 'rm -rf "$tmp"' EXIT

echo "preprocess: $src -> $dest (workers $workers, $preprocess)"
start=$(date +%s)
if ! "$preprocess" --only-source \
    --trainpref "${prefixes[0]}" --validpref "${prefixes[1]}" --testpref "${prefixes[2]}" \
    --destdir "$tmp" --workers "$workers" "$@"; then
    die "fairseq-preprocess failed (see the messages above); $dest left unchanged"
fi
[ -f "$tmp/dict.txt" ] && [ -f "$tmp/train.bin" ] || die "fairseq-preprocess wrote no dict.txt/train.bin"

if [ -d "$dest" ]; then
    rm -f "$dest"/dict.txt "$dest"/{train,valid,test}.{bin,idx} "$dest"/preprocess.log
    mv "$tmp"/* "$dest"/
else
    mv "$tmp" "$dest"
fi
echo "preprocess: wrote $dest: dictionary of $(( $(wc -l < "$dest/dict.txt") + 4 )) types (dict.txt plus 4 special symbols), $(( $(date +%s) - start ))s"
