#!/usr/bin/python3
"""Prints the markdown table of a bench/run.sh run from its JSON files.

usage: bench/report.py RUN_DIR

RUN_DIR holds (any may be missing; a missing one shows as "n/a"):
    sgemm.json                   bench-sgemm's line
    gim_greedy.json, gim_e2e.json      `gimc bench` output (the line with the matching "mode")
    torch_greedy.json, torch_e2e.json  bench/fashion_torch.py --bench lines
    load.txt                     uptime lines taken during the run
The JSON line formats are in bench/README.md.
"""

import json
import os
import sys


def json_lines(path):
    """Every line of the file that parses as a JSON object."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        out.append(obj)
    except OSError:
        pass
    return out


def bench_line(path, mode):
    """The timing line of `mode`: one with that "mode" (or no "mode" key) and ms_per_step."""
    for obj in json_lines(path):
        if "ms_per_step" in obj and obj.get("mode", mode) == mode:
            return obj
    return None


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio(a, b, digits=2):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.{digits}f}"


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    run = sys.argv[1]
    sgemm = next(iter(json_lines(os.path.join(run, "sgemm.json"))), None)
    peak = None
    if sgemm:
        peak = sgemm.get("gflops_2048_median")
        sizes = ", ".join(f"{s['n']}: {s['median_gflops']:.0f}" for s in sgemm["sgemm"])
        print(f"OpenBLAS SGEMM, {sgemm['threads']} threads, median GFLOP/s by size: {sizes}\n")
    else:
        print("OpenBLAS SGEMM: n/a (bench-sgemm did not run)\n")

    print("| mode | gim ms/step | PyTorch ms/step | gim ÷ PyTorch time | gim GFLOP/s "
          "| gim ÷ SGEMM | gim peak RSS MB | PyTorch peak RSS MB | gim ÷ PyTorch RSS "
          "| gim compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for mode in ("greedy", "e2e"):
        g = bench_line(os.path.join(run, f"gim_{mode}.json"), mode)
        t = bench_line(os.path.join(run, f"torch_{mode}.json"), mode)
        g_ms = g.get("ms_per_step") if g else None
        t_ms = t.get("ms_per_step") if t else None
        g_gf = None
        if g:
            g_gf = g.get("gflops")
            if g_gf is None and g.get("flops_per_step") and g_ms:
                g_gf = g["flops_per_step"] / (g_ms * 1e-3) * 1e-9
            if g_gf is None and t and g_ms:
                g_gf = t["flops_per_step"] / (g_ms * 1e-3) * 1e-9
                notes.append(f"{mode}: gim printed no FLOP count; GFLOP/s uses PyTorch's "
                             "nominal count")
        g_rss = g.get("peak_rss_mb") if g else None
        t_rss = t.get("peak_rss_mb") if t else None
        print(f"| {mode} | {fmt(g_ms)} | {fmt(t_ms)} | {ratio(g_ms, t_ms)} | {fmt(g_gf)} "
              f"| {ratio(g_gf, peak)} | {fmt(g_rss)} | {fmt(t_rss)} | {ratio(g_rss, t_rss)} "
              f"| {fmt(g.get('compile_s') if g else None, 2)} |")
        if g and g.get("products_per_step") and g.get("cpu_ms_per_step"):
            per_cpu = g["products_per_step"] / (g["cpu_ms_per_step"] * 1e-3) * 1e-9
            core = sgemm.get("cpu_gflops_2048_median") if sgemm else None
            notes.append(f"{mode}: gim's step executes {g['products_per_step'] / 1e9:.2f} GFLOP of products "
                         f"(Winograd's and the other paths' own counts, docs/cli.md), {per_cpu:.1f} GFLOP per "
                         f"CPU-second" + (f", {per_cpu / core:.2f} of SGEMM's {core:.1f} (2048², per CPU-second)" if core else ""))
        if g and g.get("activation_bytes"):
            notes.append(f"{mode}: gim planned activation memory per module (MB): " +
                         ", ".join(f"{b / 2**20:.1f}" for b in g["activation_bytes"]))
    for n in notes:
        print(f"\n- {n}")
    try:
        with open(os.path.join(run, "load.txt")) as f:
            print("\nLoad during the run (uptime):\n")
            for line in f:
                print(f"    {line.rstrip()}")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
