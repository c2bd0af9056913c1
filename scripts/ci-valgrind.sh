#!/usr/bin/env bash
# Runs gimc under valgrind (memcheck): `gimc check` on the Fashion-MNIST
# model, `gimc ir` (LLVM codegen and optimisation) and a few training steps
# of a tiny model on a tiny IDX data set, then one more after --resume
# (the checkpoint reader), the sequential schedule with a bf16 cache and --refresh
# stopped and resumed inside a period. Any memcheck error or leak (definite or possible)
# fails it (--error-exitcode=1). scripts/valgrind.supp holds the only
# suppression: glibc's thread-stack cache (see the file); it may only ever
# list frames of glibc or LLVM, each with the reason, never a frame of ours.
#
#   scripts/ci-valgrind.sh [BUILD_DIR]      # default: build (scripts/test.sh's)
set -euo pipefail
cd "$(dirname "$0")/.."
b=${1:-build}
command -v valgrind >/dev/null || { echo "ci-valgrind: valgrind not installed: run scripts/setup.sh" >&2; exit 1; }
if [ ! -x "$b/compiler/gimc" ]; then
    cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$b" -j2 --target gimc >/dev/null
fi
gimc=$(cd "$b" && pwd)/compiler/gimc
work=$(mktemp -d "${TMPDIR:-/tmp}/gim-valgrind.XXXXXX")
trap 'rm -rf "$work"' EXIT

vg=(valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,possible --num-callers=30)
# where an uninitialised value came from: twice as slow, so only when asked
[ -n "${VALGRIND_TRACK_ORIGINS:-}" ] && vg+=(--track-origins=yes)
[ -f scripts/valgrind.supp ] && vg+=(--suppressions=scripts/valgrind.supp)
export OPENBLAS_NUM_THREADS=1

# IDX files of 8x8 images: n images [n, 8, 8] and n labels in 0..9.
be32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }
idx_images() { { be32 2051; be32 "$2"; be32 8; be32 8; LC_ALL=C awk -v n="$2" 'BEGIN { for (i = 0; i < n * 64; i++) printf "%c", (i * 37) % 251 }'; } >"$1"; }
idx_labels() { { be32 2049; be32 "$2"; LC_ALL=C awk -v n="$2" 'BEGIN { for (i = 0; i < n; i++) printf "%c", i % 10 }'; } >"$1"; }
mkdir -p "$work/data"
idx_images "$work/data/train-images-idx3-ubyte" 64
idx_labels "$work/data/train-labels-idx1-ubyte" 64
idx_images "$work/data/t10k-images-idx3-ubyte" 32
idx_labels "$work/data/t10k-labels-idx1-ubyte" 32
cat >"$work/tiny.gim" <<'GIM'
model tiny {
    input x: [batch, 1, 8, 8]
    p = patches(x, size=4, stride=2)
    h1 = relu(conv2d(p, 4, k=3, pad=1))
    infonce(spatial_mean(h1), steps=2, negatives=4)
    h2 = relu(conv2d(gradient_block(h1), 4, k=3, pad=1))
    infonce(spatial_mean(h2), steps=2, negatives=4)
    output spatial_mean(h2)
}
train {
    batch 8
    seed 0
}
GIM

status=0
run() {
    local name=$1
    shift
    local start=$(date +%s)
    local rc=0
    timeout 900 "${vg[@]}" "$gimc" "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
    if [ $rc -eq 0 ]; then
        echo "ci-valgrind: gimc $* : clean ($(( $(date +%s) - start ))s)"
    else
        status=1
        echo "ci-valgrind: gimc $* : FAILED (status $rc; 1: memcheck errors, 124: timeout)" >&2
        tail -80 "$work/$name.err" >&2
    fi
}
run check check models/fashion_gim.gim
run ir ir "$work/tiny.gim" --module 2 --fn step -O2
run train train "$work/tiny.gim" --data "$work/data" --steps 3 --out "$work/run"
run resume train "$work/tiny.gim" --data "$work/data" --steps 4 --resume --out "$work/run"
grep -q "^resuming from" "$work/resume.out" || { echo "ci-valgrind: the --resume run did not resume" >&2; status=1; }
# the caches of module outputs: sequential in bf16; --refresh stopped inside a period and
# resumed (its cache rebuilt from refresh.safetensors)
run seq_bf16 train "$work/tiny.gim" --data "$work/data" --steps 2 --schedule sequential --cache-dtype bf16 --out "$work/seq"
run refresh train "$work/tiny.gim" --data "$work/data" --epochs 3 --refresh 2 --steps 10 --out "$work/ref"
run refresh_resume train "$work/tiny.gim" --data "$work/data" --epochs 3 --refresh 2 --steps 12 --resume --out "$work/ref"
grep -q "^refresh (epoch 1)" "$work/refresh_resume.out" || { echo "ci-valgrind: the --refresh resume did not rebuild its cache" >&2; status=1; }

# audio: a tree of two speakers (FLAC and WAV, 8 and 16 kHz: decoding and
# conversion), trained from the decoded cache, then the speaker probe from it
for s in 1 2; do
    mkdir -p "$work/audio/$s/1"
    for u in 1 2 3; do
        sox -n -r 16000 -b 16 "$work/audio/$s/1/$u.flac" synth 0.1 sine $((200 * s + 30 * u))
        sox -n -r 8000 -b 16 "$work/audio/$s/1/$u-8k.wav" synth 0.1 sine $((200 * s + 30 * u))
    done
done
cat >"$work/audio.gim" <<'GIM'
model tiny_audio {
    input x: [batch, 1, 256]
    h1 = relu(conv1d(x, 4, k=8, stride=4, pad=2))
    infonce(transpose(h1, 1, 2), steps=2, negatives=3)
    output h1
}
train {
    batch 4
}
GIM
run audio-train train "$work/audio.gim" --data "$work/audio" --steps 3 --out "$work/arun"
run audio-eval eval "$work/audio.gim" --data "$work/audio" --weights "$work/arun/weights.safetensors" --compare-random
exit $status
