# Shared by the bench/*.sh scripts (sourced, from the project's root).

# bench_start NAME: the results directory ($OUT, or build-bench/NAME-<UTC time>),
# made and announced; note_load LABEL appends the load average to its load.txt.
bench_start() {
    OUT=${OUT:-build-bench/$1-$(date -u +%Y%m%d-%H%M%S)}
    mkdir -p "$OUT"
    echo "bench/$1: results in $OUT"
}
note_load() { echo "$1: $(uptime)" | tee -a "$OUT/load.txt"; }

# bench_sgemm: builds the SGEMM yardstick (bench/sgemm.c) into $SGEMM when it
# is missing or older than its source; says so when it cannot.
SGEMM=build-bench/bench-sgemm
bench_sgemm() {
    if [ ! -x "$SGEMM" ] || [ bench/sgemm.c -nt "$SGEMM" ]; then
        mkdir -p build-bench
        cc -std=c11 -O2 -Wall -Wextra bench/sgemm.c -lopenblas -o "$SGEMM" \
            || echo "bench: could not build bench-sgemm (is libopenblas-dev installed? scripts/setup.sh)"
    fi
}
