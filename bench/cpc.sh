#!/usr/bin/env bash
# Times models/cpc_audio.gim in gim and the same model in PyTorch (bench/cpc_torch.py)
# side by side in one run, and prints ms/step, peak RSS, GFLOP/s and gim ÷ SGEMM:
#   1. the hardware yardstick: OpenBLAS SGEMM (bench/sgemm.c), all cores, and on one
#      thread (its GFLOP per CPU-second, the rate a core gives when it runs); then the three
#      products of module 1's InfoNCE alone, the ceiling for a step that is mostly them
#      (InfoNCE is about 85 % of its FLOPs);
#   2. gim:     gimc bench models/cpc_audio.gim --steps N  (3 warm-up steps, synthetic batches)
#   3. the image model for comparison: gimc bench models/fashion_gim.gim --steps 30
#   4. PyTorch: bench/cpc_torch.py --bench --steps N       (1 warm-up step)
# The load average is noted before each; compare the ratios, not the absolute times. On a
# loaded machine the wall times measure the other users; the efficiency column (GFLOP per
# CPU-second of all threads ÷ one-thread SGEMM's) does not depend on them as much.
#
# usage: bench/cpc.sh [--steps N] [--gimc PATH] [--batch B] [--threads T] [--out DIR]
#                     [--no-gim] [--no-torch]
# gimc: --gimc, else $GIMC, else build-rel/compiler/gimc, else build/compiler/gimc.
# env: PYTHON (default /usr/bin/python3, which has python3-torch: bench/setup.sh)
set -uo pipefail

cd "$(dirname "$0")/.."

STEPS=3
BATCH=8
GIMC=${GIMC:-}
OUT=""
THREADS=""
RUN_GIM=1
RUN_TORCH=1
PYTHON=${PYTHON:-/usr/bin/python3}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --gimc) GIMC=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-gim) RUN_GIM=0; shift ;;
        --no-torch) RUN_TORCH=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench/cpc.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

. bench/lib.sh
bench_start cpc

note_load "start"
bench_sgemm
[ -x "$SGEMM" ] && "$SGEMM" ${THREADS:+--threads "$THREADS"} | tee "$OUT/sgemm.json"
[ -x "$SGEMM" ] && "$SGEMM" --threads 1 2048 | tee "$OUT/sgemm1.json"
# The products that are most of cpc_audio's arithmetic (its InfoNCE, about 85 %), alone, on as
# many threads as gim: module 1's InfoNCE per chunk of 1365 positions (compiler/cg_loss.c, cg_nce_chunk_floats
# / (12 steps x 512)): the predictions c Wt, dc = dpred W and dW = dpredt c.
[ -x "$SGEMM" ] && "$SGEMM" ${THREADS:+--threads "$THREADS"} 1365x6144x512:nt 1365x512x6144:nn 6144x512x1365:tn \
    | tee "$OUT/products.json"

if [ "$RUN_GIM" = 1 ]; then
    if [ -z "$GIMC" ]; then
        for g in build-rel/compiler/gimc build/compiler/gimc; do
            [ -x "$g" ] && { GIMC=$g; break; }
        done
    fi
    if [ -z "$GIMC" ] || [ ! -x "$GIMC" ]; then
        echo "bench/cpc: gimc not found (cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release &&" \
             "cmake --build build-rel --target gimc; or --gimc PATH) - skipping gim"
        RUN_GIM=0
    fi
fi
if [ "$RUN_TORCH" = 1 ] && ! "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "bench/cpc: $PYTHON cannot import torch (run bench/setup.sh) - skipping PyTorch"
    RUN_TORCH=0
fi

if [ "$RUN_GIM" = 1 ]; then
    note_load "gim"
    "$GIMC" bench models/cpc_audio.gim --steps "$STEPS" --batch "$BATCH" ${THREADS:+--threads "$THREADS"} \
        >"$OUT/gim.json" 2>"$OUT/gim.err" || echo "bench/cpc: gimc bench failed: $(tail -n 3 "$OUT/gim.err")"
    grep '"ms_per_step"' "$OUT/gim.json"
    note_load "image"
    "$GIMC" bench models/fashion_gim.gim --steps 30 ${THREADS:+--threads "$THREADS"} \
        >"$OUT/image.json" 2>"$OUT/image.err" || echo "bench/cpc: gimc bench (image) failed: $(tail -n 3 "$OUT/image.err")"
fi
if [ "$RUN_TORCH" = 1 ]; then
    note_load "pytorch"
    "$PYTHON" bench/cpc_torch.py --bench --steps "$STEPS" --batch "$BATCH" ${THREADS:+--threads "$THREADS"} \
        >"$OUT/torch.json" 2>"$OUT/torch.err" || echo "bench/cpc: cpc_torch.py failed: $(tail -n 3 "$OUT/torch.err")"
    grep '"ms_per_step"' "$OUT/torch.json"
fi
note_load "end"

echo
"$PYTHON" - "$OUT" <<'EOF' | tee "$OUT/report.md"
import json, os, sys
run = sys.argv[1]
def line(name):
    try:
        with open(os.path.join(run, name)) as f:
            for l in f:
                if l.startswith("{") and ("ms_per_step" in l or "sizes" in l or "gflops" in l):
                    return json.loads(l)
    except (OSError, ValueError):
        pass
    return None
sg, gim, pt = line("sgemm.json"), line("gim.json"), line("torch.json")
sg1, img, prod = line("sgemm1.json"), line("image.json"), line("products.json")
for d, err in ((gim, "gim.err"), (img, "image.err")):
    try:   # gimc bench prints its CPU time per step (all threads) on stderr only
        with open(os.path.join(run, err)) as fh:
            for l in fh:
                if l.strip().startswith("cpu") and d:
                    d["cpu_ms_per_step"] = float(l.split()[1])
    except (OSError, ValueError):
        pass
core = sg1 and sg1.get("cpu_gflops_2048_median")   # one-thread SGEMM, GFLOP per CPU-second
def per_cpu(d):
    if not d or not d.get("cpu_ms_per_step") or not d.get("flops_per_step"):
        return None
    return d["flops_per_step"] / (d["cpu_ms_per_step"] / 1e3) / 1e9
peak = None
if sg:   # the 2048 product's median rate (bench/sgemm.c), else the best median
    peak = sg.get("gflops_2048_median") or max((e.get("median_gflops", 0) for e in sg.get("sgemm", [])), default=None)
f = lambda d, k, n=1: "n/a" if not d or d.get(k) is None else f"{d[k]:.{n}f}"
r = lambda a, b, k: "n/a" if not a or not b or not b.get(k) else f"{a[k] / b[k]:.2f}"
print("| impl | ms/step | ÷ PyTorch | CPU ms/step (all threads) | ÷ PyTorch | peak RSS MB | ÷ PyTorch | GFLOP/s | ÷ SGEMM |")
print("|---|---|---|---|---|---|---|---|---|")
for name, d in (("gim", gim), ("PyTorch", pt)):
    div = "n/a" if not d or not peak else f"{d['gflops'] / peak:.2f}"
    print(f"| {name} | {f(d, 'ms_per_step')} | {r(d, pt, 'ms_per_step')} | {f(d, 'cpu_ms_per_step')} | "
          f"{r(d, pt, 'cpu_ms_per_step')} | {f(d, 'peak_rss_mb')} | "
          f"{r(d, pt, 'peak_rss_mb')} | {f(d, 'gflops')} | {div} |")
print(f"\nSGEMM (2048, median) {peak} GFLOP/s; FLOPs per step: gim {gim and gim.get('flops_per_step')}, "
      f"PyTorch (nominal, same count) {pt and pt.get('flops_per_step')}")
def executed(d):   # the products the step runs (gimc bench's products_per_step) per CPU-second
    if not d or not d.get("cpu_ms_per_step") or not d.get("products_per_step"):
        return None
    return d["products_per_step"] / (d["cpu_ms_per_step"] / 1e3) / 1e9
print("\n| per CPU-second | GFLOP per CPU-s | ÷ one-thread SGEMM's | products executed, GFLOP per CPU-s | ÷ one-thread SGEMM's |")
print("|---|---|---|---|---|")
for name, d in (("gim cpc_audio", gim), ("gim fashion_gim (image)", img), ("PyTorch cpc_audio", pt)):
    r, e = per_cpu(d), executed(d)
    print(f"| {name} | {'n/a' if r is None else f'{r:.1f}'} | "
          f"{'n/a' if r is None or not core else f'{r / core:.2f}'} | {'n/a' if e is None else f'{e:.1f}'} | "
          f"{'n/a' if e is None or not core else f'{e / core:.2f}'} |")
print(f"| SGEMM 2048, one thread | {core if core else 'n/a'} | 1.00 | | |")
if prod and prod.get("sgemm"):   # the three products' FLOPs over the CPU time they took together
    flop = [2.0 * e["m"] * e["n"] * e["k"] for e in prod["sgemm"]]
    alone = sum(flop) / sum(x / e["cpu_gflops_median"] for x, e in zip(flop, prod["sgemm"]))
    print(f"| module 1's InfoNCE products alone ({prod['threads']} threads) | {alone:.1f} | "
          f"{'n/a' if not core else f'{alone / core:.2f}'} | | |")
    mine = executed(gim)
    if mine:
        print(f"\ncpc_audio's step executes its products at {mine / alone:.2f} of the rate they reach alone "
              "on this machine.")
EOF
