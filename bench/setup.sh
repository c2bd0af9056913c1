#!/usr/bin/env bash
# Installs what the benchmarks need: the build's packages (scripts/setup.sh) and
# Debian's PyTorch and NumPy for bench/fashion_torch.py. Idempotent.
set -euo pipefail

"$(dirname "$0")/../scripts/setup.sh" python3 python3-numpy python3-torch

# The Debian packages live in Debian's interpreter; another python3 earlier on PATH
# (pyenv, a virtualenv) will not see them.
/usr/bin/python3 -c 'import torch, numpy; print("bench/setup: torch", torch.__version__, "numpy", numpy.__version__)'
