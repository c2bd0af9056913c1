#!/usr/bin/env bash
# The speech job (./scripts/run.sh speech) once per seed, to see the spread of its speaker
# probe: for each seed S, gimc train models/cpc_audio_small.gim --seed S and gimc eval
# --compare-random --seed S (the seed fixes the split, the initialisation, the crops and
# the probe). Prints, per seed, the wall time of training and of the probe, the load
# average before each, and the probe's table; then one line per module with the trained
# and random test accuracy of every seed. Seed 0 is exactly the documented job.
#
# usage: bench/speech.sh [--seeds "0 1"] [--gimc PATH] [--data DIR] [--out DIR] [--steps N]
# --steps N trains N steps instead of the job's 900 (to try the script, not to measure).
# gimc: --gimc, else $GIMC, else build-release/compiler/gimc (scripts/run.sh's), else
# build/compiler/gimc. data: made with gimc data speech when absent (default data/speech).
set -uo pipefail

cd "$(dirname "$0")/.."

SEEDS="0 1"
GIMC=${GIMC:-}
DATA=data/speech
OUT=build-bench/speech-$(date -u +%Y%m%dT%H%M%S)
STEPS=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
    --seeds) SEEDS=${2:?--seeds needs a list}; shift 2 ;;
    --gimc) GIMC=${2:?--gimc needs a path}; shift 2 ;;
    --data) DATA=${2:?--data needs a directory}; shift 2 ;;
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --steps) STEPS=(--steps "${2:?--steps needs a number}"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench/speech.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ -z "$GIMC" ]; then
    for g in build-release/compiler/gimc build/compiler/gimc; do
        [ -x "$g" ] && { GIMC=$g; break; }
    done
fi
[ -n "$GIMC" ] && [ -x "$GIMC" ] || { echo "bench/speech.sh: no gimc (build it, or --gimc PATH)" >&2; exit 1; }
mkdir -p "$OUT" || exit 1
if [ ! -d "$DATA" ]; then
    mkdir -p "$(dirname "$DATA")" && "$GIMC" data speech -o "$DATA" || exit 1
fi

load() { cut -d' ' -f1-3 /proc/loadavg; }
status=0
for s in $SEEDS; do
    run=$OUT/seed$s
    echo "== seed $s: training (load $(load))"
    t0=$(date +%s)
    if ! "$GIMC" train models/cpc_audio_small.gim --data "$DATA" --out "$run" --seed "$s" "${STEPS[@]}" >"$run.train.log" 2>&1; then
        echo "training failed: $run.train.log" >&2; status=1; continue
    fi
    t1=$(date +%s)
    grep '^done after' "$run.train.log"
    echo "== seed $s: probe (load $(load))"
    if ! "$GIMC" eval models/cpc_audio_small.gim --data "$DATA" --weights "$run/weights.safetensors" \
        --compare-random --seed "$s" >"$run.eval.log" 2>&1; then
        echo "probe failed: $run.eval.log" >&2; status=1; continue
    fi
    t2=$(date +%s)
    sed -n '/^module /,/^results:/p' "$run.eval.log"
    echo "seed $s: training $((t1 - t0)) s, probe $((t2 - t1)) s (load now $(load))"
done
echo "== test accuracy per module, trained / random, by seed"
for s in $SEEDS; do
    awk -v s="$s" '/^module /{on=1; next} /^results:/{on=0} on && NF >= 6 {
        printf "seed %s  module %s  %s / %s\n", s, $1, $4, $6 }' "$OUT/seed$s.eval.log" 2>/dev/null
done
echo "logs and runs: $OUT"
exit $status
