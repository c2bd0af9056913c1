#!/usr/bin/env bash
# Installs what the benchmarks need beyond the build (scripts/setup.sh): Debian's PyTorch
# and NumPy for bench/fashion_torch.py. Idempotent: installed packages are left alone.
set -euo pipefail

packages=(python3 python3-numpy python3-torch libopenblas-dev dataset-fashion-mnist)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "bench/setup: all packages present"
else
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "bench/setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Debian packages live in Debian's interpreter; another python3 earlier on PATH
# (pyenv, a virtualenv) will not see them.
/usr/bin/python3 -c 'import torch, numpy; print("bench/setup: torch", torch.__version__, "numpy", numpy.__version__)'
