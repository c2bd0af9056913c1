#!/usr/bin/env bash
# The main job: sets up (Debian packages), builds, trains the default model
# (models/fashion_gim.gim, one epoch on Fashion-MNIST) and prints the linear
# probe's accuracy per module, trained beside randomly initialised, and writes
# the run's page (runs/fashion_gim/report.html).
#
#   ./scripts/run.sh [train options]          the image job
#   ./scripts/run.sh speech [train options]   the speech job: makes the synthetic
#       corpus data/speech (gimc data speech) if it is absent, trains
#       models/cpc_audio_small.gim on it and probes speakers per module
set -euo pipefail
cd "$(dirname "$0")/.."
job=image
if [ "${1:-}" = speech ]; then
    job=speech
    shift
fi
./scripts/setup.sh
# A Release build of its own, so the test build (build/) keeps its settings.
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-release -j"$(nproc)" --target gimc
gimc=./build-release/compiler/gimc
if [ "$job" = speech ]; then
    [ -d data/speech ] || { mkdir -p data && $gimc data speech -o data/speech; }
    out=runs/cpc_audio_small
    $gimc train models/cpc_audio_small.gim --data data/speech --out "$out" "$@"
    $gimc eval models/cpc_audio_small.gim --data data/speech --weights "$out/weights.safetensors" --compare-random
    exit 0
fi
out=runs/fashion_gim
$gimc train models/fashion_gim.gim --out "$out" "$@"
$gimc eval models/fashion_gim.gim --weights "$out/weights.safetensors" --compare-random
$gimc report "$out"
