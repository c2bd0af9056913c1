#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang-16, ASan and UBSan in
# build-fuzz/, and runs each for a bounded time (FUZZ_SECONDS, default 45)
# on the seed corpus: models/, stdlib/, the golden error files, the hand-made
# seeds in tests/fuzz/corpus/ and every regression file in tests/regress/.
#
#   scripts/ci-fuzz.sh                  # every target, 45 s each
#   FUZZ_SECONDS=600 scripts/ci-fuzz.sh frontend
#
# A crash, sanitizer report, leak, timeout (10 s per input) or allocation over
# 1 GiB is a failure: the input is saved as build-fuzz/artifacts/<kind>-<hash>
# and the script exits 1. Make it a regression test by copying it to
# tests/regress/frontend/NAME.gim (fuzz_frontend), tests/regress/readers/NAME
# (fuzz_readers: first byte even = safetensors, odd = IDX, as the target
# reads it), tests/regress/records/NAME (fuzz_records: first byte % 3 =
# 0 metrics.csv, 1 eval.json, 2 JSON) or tests/regress/audio/NAME (fuzz_audio:
# an audio file, first byte the crop); tests/test_regress.c runs every file there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-45}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frontend readers records audio)
jobs=${FUZZ_BUILD_JOBS:-$(nproc)}
[ "$jobs" -le 2 ] || jobs=2

clang=/usr/lib/llvm-16/bin/clang
[ -x "$clang" ] || { echo "ci-fuzz: $clang not found: run scripts/setup.sh" >&2; exit 1; }

b=build-fuzz
cmake -S . -B "$b" -DCMAKE_C_COMPILER="$clang" -DGIM_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$b" -j"$jobs" --target $(printf 'fuzz_%s ' "${targets[@]}") >"$b/fuzz-build.log" 2>&1 ||
    { cat "$b/fuzz-build.log"; echo "ci-fuzz: build failed" >&2; exit 1; }

mkdir -p "$b/artifacts"
# Seeds: assembled fresh each run so they follow the tree.
seed=$b/seeds
rm -rf "$seed"
mkdir -p "$seed/frontend" "$seed/readers" "$seed/records" "$seed/audio"
for f in models/*.gim stdlib/*.gim tests/golden/*/*.gim tests/golden/syntax/lib/*.gim \
         tests/fuzz/corpus/frontend/* tests/regress/frontend/*; do
    [ -f "$f" ] && cp "$f" "$seed/frontend/$(echo "$f" | tr / _)"
done
for f in tests/fuzz/corpus/readers/* tests/regress/readers/*; do
    [ -f "$f" ] && cp "$f" "$seed/readers/$(echo "$f" | tr / _)"
done
for f in tests/fuzz/corpus/records/* tests/regress/records/*; do
    [ -f "$f" ] && cp "$f" "$seed/records/$(echo "$f" | tr / _)"
done
for f in tests/fuzz/corpus/audio/* tests/regress/audio/*; do
    [ -f "$f" ] && cp "$f" "$seed/audio/$(echo "$f" | tr / _)"
done

status=0
for t in "${targets[@]}"; do
    corpus=$b/corpus/$t       # grows across local runs; fresh in CI
    mkdir -p "$corpus"
    dict=()
    [ "$t" = frontend ] && dict=(-dict=tests/fuzz/gim.dict)
    echo "ci-fuzz: fuzz_$t for ${seconds}s ($(ls "$seed/$t" | wc -l) seeds, $(ls "$corpus" | wc -l) in corpus)"
    log=$b/fuzz_$t.log
    start=$(date +%s)
    if ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
       "$b/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
           -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 \
           -artifact_prefix="$root/$b/artifacts/$t-" "${dict[@]}" "$corpus" "$seed/$t" >"$log" 2>&1; then
        echo "ci-fuzz: fuzz_$t: no failure in $(( $(date +%s) - start ))s;" \
             "$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') inputs run," \
             "corpus now $(ls "$corpus" | wc -l)"
    else
        status=1
        echo "ci-fuzz: fuzz_$t FAILED; the end of its log ($log):" >&2
        grep -v '^#' "$log" | tail -60 >&2
        echo "ci-fuzz: failing inputs:" >&2
        ls -1 "$b/artifacts/$t-"* >&2 2>/dev/null || true
    fi
done
exit $status
