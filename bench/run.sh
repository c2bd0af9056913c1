#!/usr/bin/env bash
# Runs gim's benchmark in one go on this machine and prints the comparison table:
#   1. the hardware yardstick: OpenBLAS SGEMM (bench/sgemm.c), all cores;
#   2. gim:     gimc bench MODEL --steps N        (greedy), and again with --e2e;
#   3. PyTorch: bench/fashion_torch.py --bench --steps N   (greedy), and with --e2e;
# then bench/report.py: gim ÷ PyTorch step time, gim GFLOP/s ÷ SGEMM GFLOP/s,
# gim ÷ PyTorch peak RSS. gim and PyTorch alternate so that both see similar load.
#
# usage: bench/run.sh [--steps N] [--gimc PATH | --build] [--model FILE] [--out DIR]
#                     [--threads T] [--no-gim] [--no-torch]
# --threads T: SGEMM, gim and PyTorch all on T threads (default: all cores)
# --build: configure and build gimc (Release) in build-bench/gim first; otherwise gimc is
#        $GIMC, --gimc, build/compiler/gimc, the newest uninstrumented build*/compiler/gimc,
#        or gimc on PATH. env: PYTHON (default /usr/bin/python3, which has python3-torch)
#
# A missing gimc, model, `bench` command or PyTorch is reported and skipped; the table
# then shows n/a for what did not run. Raw JSON lines are kept in the output directory.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

STEPS=50
GIMC=${GIMC:-}
MODEL=models/fashion_gim.gim
OUT=""
RUN_GIM=1
RUN_TORCH=1
BUILD=0
THREADS=""
PYTHON=${PYTHON:-/usr/bin/python3}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS=$2; shift 2 ;;
        --gimc) GIMC=$2; shift 2 ;;
        --model) MODEL=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-gim) RUN_GIM=0; shift ;;
        --no-torch) RUN_TORCH=0; shift ;;
        --build) BUILD=1; shift ;;
        --threads) THREADS=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

. bench/lib.sh
bench_start run

# --- 1. SGEMM yardstick ---------------------------------------------------------------
note_load "start"
bench_sgemm
if [ -x "$SGEMM" ]; then
    "$SGEMM" ${THREADS:+--threads "$THREADS"} | tee "$OUT/sgemm.json"
fi

# --- locate (or build) gimc --------------------------------------------------------------
# cache_value DIR KEY: a CMake cache entry of a build directory ("" if absent).
cache_value() { sed -n "s/^$2:[A-Z]*=//p" "$1/CMakeCache.txt" 2>/dev/null; }
# An instrumented gimc (sanitizers, fuzzing) would measure the instrumentation.
instrumented() {
    local dir=$1
    [ "$(cache_value "$dir" GIM_SANITIZE)" = ON ] || [ "$(cache_value "$dir" GIM_FUZZ)" = ON ] \
        || grep -q -- '-fsanitize' "$dir/CMakeCache.txt" 2>/dev/null
}
if [ "$RUN_GIM" = 1 ] && [ "$BUILD" = 1 ]; then
    echo "bench: building gimc (Release) in build-bench/gim"
    cmake -S . -B build-bench/gim -DCMAKE_BUILD_TYPE=Release >/dev/null \
        && cmake --build build-bench/gim --target gimc -j2 >/dev/null \
        && GIMC=build-bench/gim/compiler/gimc \
        || echo "bench: building gimc failed"
fi
if [ "$RUN_GIM" = 1 ] && [ -z "$GIMC" ]; then
    # build/ (scripts/test.sh's), else the newest uninstrumented build*/, else PATH
    for g in build/compiler/gimc $(ls -t build*/compiler/gimc 2>/dev/null); do
        dir=${g%/compiler/gimc}
        if [ -x "$g" ] && ! instrumented "$dir"; then GIMC=$g; break; fi
    done
    [ -n "$GIMC" ] || GIMC=$(command -v gimc || true)
fi
if [ "$RUN_GIM" = 1 ]; then
    if [ -z "$GIMC" ] || [ ! -x "$GIMC" ]; then
        echo "bench: gimc not found (build it: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release &&" \
             "cmake --build build --target gimc; or pass --gimc PATH) - skipping gim"
        RUN_GIM=0
    elif [ ! -f "$MODEL" ]; then
        echo "bench: model $MODEL not found - skipping gim"
        RUN_GIM=0
    else
        dir=$(dirname "$(dirname "$GIMC")")
        echo "bench: gimc = $GIMC (build type: $(cache_value "$dir" CMAKE_BUILD_TYPE || true))"
        instrumented "$dir" && echo "bench: warning: $GIMC is built with sanitizers; its times mean little"
    fi
fi
if [ "$RUN_TORCH" = 1 ] && ! "$PYTHON" -c 'import torch, numpy' 2>/dev/null; then
    echo "bench: $PYTHON cannot import torch and numpy (run bench/setup.sh) - skipping PyTorch"
    RUN_TORCH=0
fi

# gim_bench MODE [extra args]: runs gimc bench, keeps its stdout; explains a failure.
gim_bench() {
    local mode=$1; shift
    local out="$OUT/gim_$mode.json" err="$OUT/gim_$mode.err" rc
    note_load "gim $mode"
    timeout 3600 "$GIMC" bench "$MODEL" --steps "$STEPS" ${THREADS:+--threads "$THREADS"} "$@" \
        >"$out" 2>"$err"
    rc=$?
    if grep -q '"ms_per_step"' "$out"; then
        grep '"ms_per_step"' "$out"
    else
        echo "bench: gimc bench ($mode) gave no timing line (exit $rc): $(tail -n 3 "$err" | tr '\n' ' ')"
        [ "$rc" = 2 ] && echo "bench: (exit 2 is bad usage: is 'gimc bench' implemented?)"
    fi
    return 0
}

torch_bench() {
    local mode=$1; shift
    note_load "pytorch $mode"
    "$PYTHON" bench/fashion_torch.py --bench --steps "$STEPS" ${THREADS:+--threads "$THREADS"} "$@" \
        2>"$OUT/torch_$mode.err" | tee "$OUT/torch_$mode.json"
}

# --- 2/3. gim and PyTorch, greedy then end to end -------------------------------------
[ "$RUN_GIM" = 1 ] && gim_bench greedy
[ "$RUN_TORCH" = 1 ] && torch_bench greedy
[ "$RUN_GIM" = 1 ] && gim_bench e2e --e2e
[ "$RUN_TORCH" = 1 ] && torch_bench e2e --e2e
# gimc bench may print both modes in one run (spec/cli.md): if the --e2e run gave no
# timing line, use the e2e line of the first run.
if [ "$RUN_GIM" = 1 ] && ! grep -q '"ms_per_step"' "$OUT/gim_e2e.json" \
        && grep -q '"mode": *"e2e"' "$OUT/gim_greedy.json"; then
    grep '"mode": *"e2e"' "$OUT/gim_greedy.json" >"$OUT/gim_e2e.json"
fi
note_load "end"

# --- table ------------------------------------------------------------------------------
echo
"$PYTHON" bench/report.py "$OUT" | tee "$OUT/report.md"
