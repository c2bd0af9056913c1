#!/usr/bin/env bash
# Installs every Debian package gim needs to build, test and train (Open MPI
# for distributed training, libsndfile/libsamplerate for audio, espeak-ng and
# sox to synthesise a speech corpus, gnuplot for run reports), plus any
# package names given as arguments (bench/setup.sh adds PyTorch's).
# Idempotent: packages already present are left alone. Run as root (or with sudo).
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    flex bison
    llvm-16-dev libclang-rt-16-dev clang-16
    libopenblas-dev
    libcunit1-dev
    zlib1g-dev
    dataset-fashion-mnist
    valgrind
    openmpi-bin libopenmpi-dev
    libsndfile1-dev libsamplerate0-dev
    espeak-ng sox
    gnuplot-nox
    "$@"
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all packages present"
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
