#!/usr/bin/env bash
# Throughput of the schedules on one machine, side by side, beside what
# `gimc check --ranks R` predicts for R machines:
#   1. one process, --schedule simultaneous (all cores);
#   2. one process, --schedule async (a thread per module);
#   3. mpirun -np 2 and -np 3, --schedule async (replay buffers), and -np 3 lockstep;
# each `gimc train MODEL --steps N` on Fashion-MNIST, printing examples/s (batches
# module 1 took per second x batch), and for the MPI runs each module's steps,
# staleness, reuse and the bytes its rank sent per step.
#
# usage: bench/mpi.sh [--steps N] [--gimc PATH] [--model FILE] [--out DIR]
# gimc: --gimc, $GIMC, else build-rel/compiler/gimc, else build/compiler/gimc.
#
# On a machine with fewer cores than ranks the ranks share the cores: the MPI
# numbers then measure the transport's overhead, not a speed-up; the speed-up
# is `gimc check --ranks R`'s prediction for one rank per machine
# (docs/distributed.md).
set -uo pipefail

cd "$(dirname "$0")/.."
STEPS=40
GIMC=${GIMC:-}
MODEL=models/fashion_gim.gim
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS=$2; shift 2 ;;
        --gimc) GIMC=$2; shift 2 ;;
        --model) MODEL=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "bench/mpi.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$GIMC" ]; then
    for g in build-rel/compiler/gimc build/compiler/gimc; do [ -x "$g" ] && GIMC=$g && break; done
fi
[ -x "$GIMC" ] || { echo "bench/mpi.sh: no gimc (build it, or pass --gimc)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "bench/mpi.sh: mpirun not found (scripts/setup.sh installs Open MPI)" >&2; exit 1; }
OUT=${OUT:-$(mktemp -d /tmp/gim-mpi-bench.XXXXXX)}
mkdir -p "$OUT"
# Open MPI refuses root unless told twice (CI and containers run as root)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

echo "gimc: $GIMC   model: $MODEL   steps: $STEPS   cores: $(nproc)   load: $(uptime | sed 's/.*load average: //')"
echo
for r in 2 3; do
    echo "== gimc check --ranks $r"
    "$GIMC" check "$MODEL" --ranks "$r" | sed -n '/^placement/,$p'
    echo
done

# name, launcher, schedule
run() {
    local name=$1 launcher=$2 sched=$3
    local log="$OUT/$name.log"
    # shellcheck disable=SC2086
    nice $launcher "$GIMC" train "$MODEL" --steps "$STEPS" --schedule "$sched" --out "$OUT/$name" \
        --save-every 1000000 >"$log" 2>&1
    local rc=$?
    local rate
    rate=$(sed -n 's/.*steps in \([0-9.]*\) s (\([0-9.]*\) examples\/s).*/\2/p' "$log" | tail -1)
    printf '%-28s %10s examples/s%s\n' "$name" "${rate:-n/a}" "$([ $rc -ne 0 ] && echo "   (exit $rc, see $log)")"
    grep -E '^  m[0-9]+ rank' "$log" | sed 's/^/    /'
}

echo "== throughput (one machine, $(nproc) cores; side by side)"
run "one process, simultaneous" "" simultaneous
run "one process, async threads" "" async
run "mpirun -np 2, async" "mpirun --oversubscribe -np 2" async
run "mpirun -np 3, async" "mpirun --oversubscribe -np 3" async
run "mpirun -np 3, lockstep" "mpirun --oversubscribe -np 3" simultaneous
echo
echo "logs and checkpoints: $OUT"
