#!/usr/bin/env bash
# Gets WikiText-103 and binarizes it for fairseq: fairseq's
# examples/language_model/prepare-wikitext-103.sh followed by its README's
# fairseq-preprocess step, usable offline.
#
#   scripts/prepare-wikitext-103.sh [SOURCE] [DEST_DIR]
#
# SOURCE   nothing or an http(s) URL: download wikitext-103-v1.zip (default URL
#          below) into $DOWNLOAD_DIR, unless it is already there;
#          a local .zip: extract it into $DOWNLOAD_DIR;
#          a directory with wiki.{train,valid,test}.tokens, or with a
#          wikitext-103/ folder holding them: use it as it is.
# DEST_DIR default data-bin/wikitext-103.
# Environment: DOWNLOAD_DIR (default data), WORKERS (default: number of CPUs),
# FORCE=1 to replace an existing DEST_DIR, VENV (see preprocess-lm-data.sh), SRCDICT=dict.txt
# to binarize with a given dictionary (a published model's) instead of building one.
#
# The binarization itself is scripts/preprocess-lm-data.sh SRC_DIR DEST_DIR.
set -euo pipefail

URL_DEFAULT=https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip
ZIP_NAME=wikitext-103-v1.zip

die() { echo "$(basename "$0"): error: $*" >&2; exit 1; }
usage() { echo "usage: $(basename "$0") [URL | ZIP | DIR] [DEST_DIR]" >&2; }

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    -*) usage; die "unknown option: $1" ;;
esac
[ $# -le 2 ] || { usage; exit 2; }

source=${1:-$URL_DEFAULT}
dest=${2:-data-bin/wikitext-103}
download_dir=${DOWNLOAD_DIR:-data}
here=$(cd "$(dirname "$0")" && pwd)

# the directory under $1 that holds wiki.train.tokens, if any
find_tokens() {
    local f
    f=$(find "$1" -maxdepth 3 -name wiki.train.tokens -print 2>/dev/null | sort | head -n 1)
    [ -n "$f" ] && dirname "$f"
}

extract() {  # extract ZIP into $download_dir; prints the directory with the tokens
    local zip=$1 dir
    mkdir -p "$download_dir" || die "cannot create $download_dir"
    echo "prepare: extracting $zip into $download_dir" >&2
    if command -v unzip >/dev/null; then
        unzip -q -o "$zip" -d "$download_dir" >&2 || die "cannot extract $zip (not a valid zip?)"
    else
        python3 -m zipfile -e "$zip" "$download_dir" >&2 || die "cannot extract $zip (not a valid zip?)"
    fi
    dir=$(find_tokens "$download_dir") || die "$zip holds no wiki.train.tokens"
    echo "$dir"
}

case $source in
    http://* | https://* | ftp://*)
        zip="$download_dir/$ZIP_NAME"
        if [ -d "$download_dir/wikitext-103" ] && [ -f "$download_dir/wikitext-103/wiki.train.tokens" ]; then
            echo "prepare: $download_dir/wikitext-103 already extracted, skipping download"
            src_dir="$download_dir/wikitext-103"
        else
            if [ -f "$zip" ]; then
                echo "prepare: $zip already exists, skipping download"
            else
                mkdir -p "$download_dir" || die "cannot create $download_dir"
                echo "prepare: downloading $source"
                if command -v wget >/dev/null; then
                    wget -q --show-progress -O "$zip.part" "$source" || { rm -f "$zip.part"; die "download failed: $source (offline? pass a local zip or directory)"; }
                elif command -v curl >/dev/null; then
                    curl -fL --progress-bar -o "$zip.part" "$source" || { rm -f "$zip.part"; die "download failed: $source (offline? pass a local zip or directory)"; }
                else
                    die "neither wget nor curl found; download $source yourself and pass the zip"
                fi
                mv "$zip.part" "$zip"
            fi
            src_dir=$(extract "$zip")
        fi
        ;;
    *)
        [ -e "$source" ] || die "no such file or directory: $source"
        if [ -d "$source" ]; then
            if [ -f "$source/wiki.train.tokens" ] || [ -f "$source/train.txt" ]; then
                src_dir=$source
            elif [ -f "$source/wikitext-103/wiki.train.tokens" ]; then
                src_dir="$source/wikitext-103"
            else
                src_dir=$source  # preprocess-lm-data.sh names what is missing
            fi
        elif [ -f "$source" ]; then
            src_dir=$(extract "$source")
        else
            die "not a file or directory: $source"
        fi
        ;;
esac

exec bash "$here/preprocess-lm-data.sh" "$src_dir" "$dest" ${SRCDICT:+--srcdict "$SRCDICT"}
