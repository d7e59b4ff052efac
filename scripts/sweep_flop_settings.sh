#!/usr/bin/env bash
# The FLOP settings sweep behind BENCHMARKS.md ("FLOP sparsity trajectories and tuning"):
# prunes the short-regime WikiText-2 benchmark's dense model (after `scripts/benchmark_wikitext2.py --mode short`) with one set of
# flop_adaptive_loss settings per run of the grid, compacts, evaluates on valid and test,
# appends one line per run to SWEEP_DIR/results.txt and records it in the sweep's TSV
# (benchmarks/wikitext2/sweep.tsv, which BENCHMARKS.md renders). Settings are chosen on
# validation perplexity; test is printed for the record.
#
#   bash scripts/sweep_flop_settings.sh [BENCH_DIR] [SWEEP_DIR] [CONFIGS] [TSV]
#
# BENCH_DIR: the benchmark's work directory (default bench_run/short); SWEEP_DIR: where runs
# go (default BENCH_DIR/sweep); TSV: the grid and results file (default
# benchmarks/wikitext2/sweep.tsv); CONFIGS: a file of lines
#   NAME flop   TARGET UPDATES WARMUP LAMBDA_LR_SCALE GATE_LR_SCALE LAMBDA2_INIT
#   NAME agp    TARGET UPDATES RAMP_END_UPDATE
#   NAME svdft  UPDATES RANK0,RANK1,...     (SVD truncation to given band ranks + fine-tuning)
# (default: the TSV's grid, `python -m flop_fairseq.bench.sweep grid`). Runs whose results
# line exists in SWEEP_DIR/results.txt are skipped.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$(realpath "${1:-$REPO/bench_run/short}")
SWEEP=$(realpath -m "${2:-$BENCH/sweep}")
CONFIGS=${3:-}
TSV=$(realpath -m "${4:-$REPO/benchmarks/wikitext2/sweep.tsv}")
V=$REPO/.venv/bin
DATA=$BENCH/../data/bin
DENSE=$BENCH/dense/ckpt/checkpoint_last.pt
INIT=$BENCH/convert/flop_init.pt
for f in "$DATA/dict.txt" "$DENSE" "$INIT"; do
    [ -f "$f" ] || { echo "sweep: $f is missing; run 'scripts/benchmark_wikitext2.py --mode short' first" >&2; exit 2; }
done
mkdir -p "$SWEEP"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONWARNINGS=ignore

bench_flags() { "$V/python" "$REPO/scripts/benchmark_wikitext2.py" flags "$@"; }  # one flag per line
mapfile -t MODEL < <(bench_flags model)
FLOP=(--arch flop_transformer_lm "${MODEL[@]}" --user-dir "$REPO/user_dir")

evaluate() {  # CKPT DIR -> "valid=… test=…"
    local s eval_flags
    for s in valid test; do
        mapfile -t eval_flags < <(bench_flags eval $s)
        "$V/fairseq-eval-lm" "$DATA" --user-dir "$REPO/user_dir" --path "$1" "${eval_flags[@]}" \
            > "$2/eval_$s.log" 2>&1
    done
    echo "valid=$(grep -o 'Perplexity: [0-9.]*' "$2/eval_valid.log" | cut -d' ' -f2)" \
         "test=$(grep -o 'Perplexity: [0-9.]*' "$2/eval_test.log" | cut -d' ' -f2)"
}

kept() {  # CKPT -> "sparsity=… ranks=…"
    "$V/flop-report" "$1" --json | "$V/python" -c '
import json, sys
r = json.load(sys.stdin)
print("sparsity=%.4f ranks=%s" % (r["sparsity"], "/".join(str(b["kept"]) for b in r["bands"])))'
}

run_one() {
    local name=$1 kind=$2; shift 2
    local d=$SWEEP/$name
    grep -q "^$name " "$SWEEP/results.txt" 2>/dev/null && return 0
    rm -rf "$d"; mkdir -p "$d"
    local train
    case $kind in
    flop)
        local t=$1 u=$2 w=$3 ll=$4 gl=$5 l2=$6
        mapfile -t train < <(bench_flags train "$u")
        "$V/fairseq-train" "$DATA" "${train[@]}" "${FLOP[@]}" --criterion flop_adaptive_loss \
            --target-sparsity "$t" --sparsity-warmup-updates "$w" --lambda-lr-scale "$ll" --gate-lr-scale "$gl" \
            --lambda2-init "$l2" --finetune-from-model "$INIT" --save-dir "$d/ckpt" > "$d/train.log" 2>&1
        "$V/flop-compact" "$d/ckpt/checkpoint_last.pt" "$d/compact.pt" > "$d/compact.log" 2>&1
        echo "$name flop target=$t updates=$u warmup=$w lambda_lr_scale=$ll gate_lr_scale=$gl lambda2_init=$l2" \
             "$(kept "$d/compact.pt") $(evaluate "$d/compact.pt" "$d")" ;;
    agp)
        local t=$1 u=$2 e=$3
        mapfile -t train < <(bench_flags train "$u")
        "$V/python" "$REPO/scripts/agp_train.py" "$DATA" "${train[@]}" --arch transformer_lm \
            "${MODEL[@]}" --criterion agp_adaptive_loss --agp-target-sparsity "$t" --agp-end-update "$e" \
            --finetune-from-model "$DENSE" --save-dir "$d/ckpt" > "$d/train.log" 2>&1
        "$V/python" "$REPO/scripts/agp_train.py" finalize "$d/ckpt/checkpoint_last.pt" "$d/agp.pt" --sparsity "$t" \
            > "$d/finalize.log" 2>&1
        echo "$name agp target=$t updates=$u ramp_end=$e $(evaluate "$d/agp.pt" "$d")" ;;
    svdft)
        local u=$1 ranks=$2
        mapfile -t train < <(bench_flags train "$u")
        "$V/python" "$REPO/scripts/benchmark_wikitext2.py" svd-truncate "$INIT" "$d/svd_gated.pt" --ranks "$ranks" \
            > "$d/alloc.json"
        "$V/flop-compact" "$d/svd_gated.pt" "$d/svd_compact.pt" > "$d/compact.log" 2>&1
        "$V/fairseq-train" "$DATA" "${train[@]}" "${FLOP[@]}" --criterion adaptive_loss \
            --finetune-from-model "$d/svd_compact.pt" --save-dir "$d/ckpt" > "$d/train.log" 2>&1
        echo "$name svdft updates=$u svd_ranks=$ranks $(kept "$d/ckpt/checkpoint_last.pt") $(evaluate "$d/ckpt/checkpoint_last.pt" "$d")" ;;
    *) echo "sweep: unknown kind '$kind' in line '$name $kind $*'" >&2; exit 2 ;;
    esac | tee -a "$SWEEP/results.txt"
    "$V/python" -m flop_fairseq.bench.sweep record "$TSV" -- "$(tail -n 1 "$SWEEP/results.txt")"
}

if [ -n "$CONFIGS" ]; then grid=$(cat "$CONFIGS"); else grid=$("$V/python" -m flop_fairseq.bench.sweep grid "$TSV"); fi
while read -r line; do
    [ -z "${line// }" ] || [ "${line:0:1}" = "#" ] && continue
    # shellcheck disable=SC2086
    run_one $line
done <<< "$grid"
echo "sweep: results in $SWEEP/results.txt and $TSV"
