#!/usr/bin/env bash
# Builds everything with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DGIM_SANITIZE=ON, in build-asan/) and runs the whole ctest suite under
# them. Any ASan report, any UBSan report (-fno-sanitize-recover: the first
# one aborts) and any leak LeakSanitizer finds at exit fails the test it
# happens in; the tests that run gimc as a child check its exit status, so a
# report there fails them too.
#
# Leaks: LSAN_OPTIONS points at scripts/lsan.supp, which may only name
# frames of a library's own global state (Open MPI's, which MPI_Finalize
# does not free), never ours.
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
# Open MPI's components are loaded with dlopen and built without frame
# pointers: LSan's fast unwinder stops inside them and cannot see the
# libmpi / libopen-pal frames the suppressions name. The MPI test (gimc under
# mpirun) therefore runs with the slow, complete unwinder, and the components
# stay mapped until exit so their frames have names.
export OMPI_MCA_mca_base_component_disable_dlclose=1
if [ $# -gt 0 ]; then
    LSAN_OPTIONS=$LSAN_OPTIONS:fast_unwind_on_malloc=0 ctest --test-dir "$b" --output-on-failure -j"$jobs" "$@"
    exit
fi
rc=0
ctest --test-dir "$b" --output-on-failure -j"$jobs" -E '^test_mpi$' || rc=1
LSAN_OPTIONS=$LSAN_OPTIONS:fast_unwind_on_malloc=0 ctest --test-dir "$b" --output-on-failure -R '^test_mpi$' || rc=1
exit $rc
