#!/usr/bin/env bash
# Builds everything with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DGIM_SANITIZE=ON, in build-asan/) and runs the whole ctest suite under
# them. Any ASan report, any UBSan report (-fno-sanitize-recover: the first
# one aborts) and any leak LeakSanitizer finds at exit fails the test it
# happens in; the tests that run gimc as a child check its exit status, so a
# report there fails them too.
#
# Leaks: LSAN_OPTIONS points at scripts/lsan.supp, which may only name
# LLVM-internal frames (libLLVM's global state), never ours. It is empty of
# rules today: nothing in LLVM leaked in our runs.
#
#   scripts/ci-sanitize.sh [ctest args...]     # e.g. -R test_hostile
set -euo pipefail
cd "$(dirname "$0")/.."
b=build-asan
jobs=$(nproc)
[ "$jobs" -le 2 ] || jobs=2
cmake -S . -B "$b" -DGIM_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$b" -j"$jobs" >"$b/build.log" 2>&1 || { tail -50 "$b/build.log"; echo "ci-sanitize: build failed" >&2; exit 1; }
export ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1
export LSAN_OPTIONS=suppressions=$PWD/scripts/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "$b" --output-on-failure -j"$jobs" "$@"
