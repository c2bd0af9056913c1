#!/usr/bin/env bash
# The main job: sets up (Debian packages), builds, trains the default model
# (models/fashion_gim.gim, one epoch on Fashion-MNIST) and prints the linear
# probe's accuracy per module, trained beside randomly initialised, and writes
# the run's page (runs/fashion_gim/report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# A Release build of its own, so the test build (build/) keeps its settings.
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-release -j"$(nproc)" --target gimc
out=runs/fashion_gim
./build-release/compiler/gimc train models/fashion_gim.gim --out "$out" "$@"
./build-release/compiler/gimc eval models/fashion_gim.gim --weights "$out/weights.safetensors" --compare-random
./build-release/compiler/gimc report "$out"
