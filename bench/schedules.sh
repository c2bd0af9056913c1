#!/usr/bin/env bash
# The training schedules compared on one model: trains it under `simultaneous`,
# `sequential` (each module for all its epochs before the next starts) and
# `async`, and end to end (--e2e), each module seeing the same number of
# examples (--epochs N passes over the training set, per module), then probes
# every run with `gimc eval` and prints a table of test accuracy per module.
#
# usage: bench/schedules.sh [--gimc PATH] [--epochs N] [--train N] [--seed S]
#                           [--model FILE] [--out DIR] [--only LIST] [--table]
# --gimc PATH   gimc to run (default: $GIMC, else build-release/compiler/gimc,
#               else build/compiler/gimc)
# --epochs N    epochs per module (default 1)
# --train N     train (and fit the probes) on the first N training images of
#               Fashion-MNIST only (default: all 60,000); the test set stays whole.
#               The subset is written to DIR/data (IDX files).
# --seed S      seed of initialisation, data order, negatives and probe (default 0)
# --out DIR     where the runs go (default build-bench/schedules-<date>); each
#               schedule has DIR/<name>/ with its checkpoint, train.log, eval.log
# --only LIST   comma-separated subset of simultaneous,sequential,async,e2e
# --table       run nothing: print the table of the runs already in --out DIR
#
# The runs follow one another (never side by side: the machine is shared);
# each line of the table says how long training took and under what load it
# started. Everything runs under `nice`.
set -uo pipefail

cd "$(dirname "$0")/.."

GIMC=${GIMC:-}
EPOCHS=1
SEED=0
MODEL=models/fashion_gim.gim
OUT=""
ONLY="simultaneous,sequential,async,e2e"
TRAIN=""
TABLE_ONLY=0
FASHION=/usr/share/datasets/fashion-mnist

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --gimc) GIMC=$2; shift 2 ;;
        --epochs) EPOCHS=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --model) MODEL=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --train) TRAIN=$2; shift 2 ;;
        --table) TABLE_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench/schedules.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$GIMC" ]; then
    for g in build-release/compiler/gimc build/compiler/gimc; do
        if [ -x "$g" ]; then GIMC=$g; break; fi
    done
fi
if [ -z "$GIMC" ] || [ ! -x "$GIMC" ]; then
    echo "bench/schedules.sh: no gimc found; build one or pass --gimc PATH" >&2
    exit 2
fi
if [ ! -f "$MODEL" ]; then
    echo "bench/schedules.sh: no model file '$MODEL'" >&2
    exit 2
fi
case "$EPOCHS" in ''|*[!0-9]*) echo "bench/schedules.sh: --epochs expects a positive integer" >&2; exit 2 ;; esac

if [ "$TABLE_ONLY" = 1 ] && [ -z "$OUT" ]; then
    echo "bench/schedules.sh: --table needs --out DIR" >&2
    exit 2
fi
OUT=${OUT:-build-bench/schedules-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
DATA=()
SIZE="all 60,000"
[ -n "$TRAIN" ] && SIZE="the first $TRAIN"
if [ -n "$TRAIN" ] && [ "$TABLE_ONLY" = 0 ]; then
    case "$TRAIN" in ''|*[!0-9]*) echo "bench/schedules.sh: --train expects a positive integer" >&2; exit 2 ;; esac
    mkdir -p "$OUT/data"
    # the first N training images and labels (IDX: the count is the first dimension)
    python3 - "$FASHION" "$OUT/data" "$TRAIN" <<'PY' || exit 1
import gzip, struct, sys, os
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for name, item in (("train-images-idx3-ubyte", 784), ("train-labels-idx1-ubyte", 1)):
    with gzip.open(os.path.join(src, name + ".gz")) as f:
        raw = f.read()
    ndim = raw[3]
    head = 4 + 4 * ndim
    total = struct.unpack(">I", raw[4:8])[0]
    if n > total:
        sys.exit("bench/schedules.sh: --train %d is more than the %d training images" % (n, total))
    with open(os.path.join(dst, name), "wb") as f:
        f.write(raw[:4] + struct.pack(">I", n) + raw[8:head] + raw[head:head + n * item])
for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    link = os.path.join(dst, name)
    if not os.path.exists(link):
        os.symlink(os.path.join(src, name), link)
PY
    DATA=(--data "$OUT/data")
fi
echo "schedules: $MODEL, $EPOCHS epoch(s) per module over $SIZE training images, seed $SEED, gimc $GIMC; runs in $OUT"

# run NAME ARGS...: train into $OUT/NAME with ARGS, then probe; records the
# training time and the load at the start in $OUT/NAME/info.
run() {
    local name=$1; shift
    local dir=$OUT/$name
    mkdir -p "$dir"
    local load
    load=$(awk '{ print $1 }' /proc/loadavg)
    echo "== $name: training ($(date -u +%H:%M:%S) UTC, load $load)"
    local t0 t1
    t0=$(date +%s)
    if ! nice "$GIMC" train "$MODEL" --epochs "$EPOCHS" --seed "$SEED" --out "$dir" "${DATA[@]}" "$@" \
            > "$dir/train.log" 2>&1; then
        echo "   training failed; see $dir/train.log" >&2
        echo "status=failed" > "$dir/info"
        return 1
    fi
    t1=$(date +%s)
    grep -E '^(done|interrupted) after' "$dir/train.log" | sed 's/^/   /'
    echo "== $name: probing"
    if ! nice "$GIMC" eval "$MODEL" --weights "$dir/weights.safetensors" --seed "$SEED" "${DATA[@]}" \
            > "$dir/eval.log" 2> "$dir/eval.err"; then
        echo "   eval failed; see $dir/eval.err" >&2
        echo "status=failed" > "$dir/info"
        return 1
    fi
    printf 'status=ok\ntrain_s=%s\nload=%s\n' "$((t1 - t0))" "$load" > "$dir/info"
}

IFS=, read -r -a WANT <<< "$ONLY"
for w in "${WANT[@]}"; do
    [ "$TABLE_ONLY" = 1 ] && break
    case "$w" in
        simultaneous|sequential|async) run "$w" --schedule "$w" ;;
        e2e) run e2e --e2e ;;
        *) echo "bench/schedules.sh: unknown schedule '$w' in --only" >&2; exit 2 ;;
    esac
done

# The table: eval.log's rows are `module features train% test%`.
{
    echo
    echo "test accuracy of the linear probe per module: $EPOCHS epoch(s) per module over $SIZE training images, seed $SEED"
    echo
    echo "| training | module 1 | module 2 | module 3 | training time | load at start |"
    echo "|---|---|---|---|---|---|"
    for w in "${WANT[@]}"; do
        dir=$OUT/$w
        label=$w
        [ "$w" = e2e ] && label="end to end (--e2e)"
        if [ ! -f "$dir/info" ] || ! grep -q status=ok "$dir/info"; then
            echo "| $label | n/a | n/a | n/a | n/a | n/a |"
            continue
        fi
        accs=$(awk '$1 ~ /^[0-9]+$/ && $4 ~ /%$/ { sub(/%$/, "", $4); printf "%s %% | ", $4 }' "$dir/eval.log")
        secs=$(sed -n 's/^train_s=//p' "$dir/info")
        load=$(sed -n 's/^load=//p' "$dir/info")
        echo "| $label | ${accs}${secs} s | $load |"
    done
} | tee "$OUT/table.md"
