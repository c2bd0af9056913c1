#!/usr/bin/env bash
# What a bfloat16 cache costs in probe accuracy: the sequential schedule on
# models/fashion_gim.gim, one epoch per module, once with --cache-dtype f32 and once with
# bf16, then `gimc eval` (the linear probe per module) of both.
#
# usage: bench/cache_dtype.sh [--gimc PATH] [--images N] [--out DIR]
# --images N: train on the first N Fashion-MNIST training images (default 60000, all;
#             the probe's test set is always the full 10,000). The f32 caches of all
#             60,000 take 24.72 GiB at their peak in DIR, the bf16 ones half.
#
# Module 1 reads only the data, so it trains identically under both: the bf16 run starts
# from the f32 run's checkpoint taken when module 1 has finished (--resume rebuilds the
# caches from it, as an uninterrupted bf16 run would build them). Logs and probes go to DIR.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
GIMC=${GIMC:-build/compiler/gimc}
IMAGES=60000
OUT=build-bench/cache-dtype
while [ $# -gt 0 ]; do
    case "$1" in
    --gimc) GIMC=$2; shift 2 ;;
    --images) IMAGES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--gimc PATH] [--images N] [--out DIR]" >&2; exit 2 ;;
    esac
done
[ -x "$GIMC" ] || { echo "$0: no gimc at $GIMC (build it, or pass --gimc)" >&2; exit 1; }
SRC=/usr/share/datasets/fashion-mnist
MODEL=$ROOT/models/fashion_gim.gim
mkdir -p "$OUT/data" && cd "$OUT" || exit 1

# the first N training images and labels, the full test set (IDX, gzip)
python3 - "$SRC" "$IMAGES" <<'EOF' || exit 1
import gzip, shutil, struct, sys
src, n = sys.argv[1], int(sys.argv[2])
with gzip.open(src + '/train-images-idx3-ubyte.gz') as f: d = f.read()
magic, total, r, c = struct.unpack('>IIII', d[:16])
n = min(n, total)
with gzip.open('data/train-images-idx3-ubyte.gz', 'wb') as g: g.write(struct.pack('>IIII', magic, n, r, c) + d[16:16 + n * r * c])
with gzip.open(src + '/train-labels-idx1-ubyte.gz') as f: d = f.read()
with gzip.open('data/train-labels-idx1-ubyte.gz', 'wb') as g: g.write(d[:4] + struct.pack('>I', n) + d[8:8 + n])
for x in ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'): shutil.copy(src + '/' + x, 'data/' + x)
EOF

uptime | tee load.txt
rm -rf f32 bf16
nice "$GIMC" train "$MODEL" --data data --schedule sequential --epochs 1 --out f32 > f32.log 2>&1 &
P=$!
while ! grep -q "module 1: caching" f32.log; do
    sleep 2
    kill -0 $P 2>/dev/null || { echo "$0: the f32 run ended early:" >&2; tail -5 f32.log >&2; exit 1; }
done
mkdir -p bf16 && cp f32/weights.safetensors f32/optimizer-*.safetensors f32/metrics.csv bf16/
nice "$GIMC" train "$MODEL" --data data --schedule sequential --epochs 1 --out bf16 --resume --cache-dtype bf16 \
    > bf16.log 2>&1 || { echo "$0: the bf16 run failed:" >&2; tail -5 bf16.log >&2; }
wait $P || { echo "$0: the f32 run failed:" >&2; tail -5 f32.log >&2; }
uptime | tee -a load.txt
for t in f32 bf16; do
    nice "$GIMC" eval "$MODEL" --data data --weights $t/weights.safetensors > eval_$t.log 2>&1 &
done
wait
uptime | tee -a load.txt
for t in f32 bf16; do
    echo "== $t cache"
    grep "caching its outputs" $t.log
    grep "^done" $t.log
    cat eval_$t.log
done
