/* Per-node time profile of generated code, for performance work:
 * with GIM_PROFILE=1 in the environment when a model is compiled, every
 * node call in the step and forward functions is bracketed by clock reads,
 * and at exit a table of the nodes by total time goes to stderr. Off by
 * default: the generated code is then unchanged. The optimizer update is
 * timed as a row of its own, "m<N> optimizer (adam)" or "(sgd)". */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen.h"

typedef struct prof_entry {
    char *label;
    uint64_t ns, calls;
} prof_entry;

#define PROF_MAX 65536
static prof_entry *prof;
static int prof_n;

bool cg_profile_enabled(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("GIM_PROFILE");
        on = e && *e && strcmp(e, "0") != 0;
    }
    return on;
}

static int by_time(const void *a, const void *b) {
    const prof_entry *x = a, *y = b;
    return x->ns < y->ns ? 1 : x->ns > y->ns ? -1 : 0;
}

static void prof_report(void) {
    uint64_t total = 0;
    for (int i = 0; i < prof_n; i++) total += prof[i].ns;
    if (!total) return;
    qsort(prof, (size_t)prof_n, sizeof *prof, by_time);
    fprintf(stderr, "\ngim profile: time in generated node functions (%.1f ms in all)\n", (double)total / 1e6);
    fprintf(stderr, "%10s %7s %9s %6s  %s\n", "total ms", "calls", "ms/call", "%", "node");
    for (int i = 0; i < prof_n && prof[i].ns; i++)
        fprintf(stderr, "%10.2f %7llu %9.3f %5.1f%%  %s\n", (double)prof[i].ns / 1e6, (unsigned long long)prof[i].calls,
                (double)prof[i].ns / 1e6 / (double)(prof[i].calls ? prof[i].calls : 1),
                100.0 * (double)prof[i].ns / (double)total, prof[i].label);
}

int cg_profile_register(const char *label) {
    if (!prof) {
        prof = gim_xmalloc(PROF_MAX * sizeof *prof);
        memset(prof, 0, PROF_MAX * sizeof *prof);
        atexit(prof_report);
    }
    if (prof_n == PROF_MAX) return PROF_MAX - 1;
    prof[prof_n].label = gim_xstrdup(label);
    return prof_n++;
}

uint64_t gim_cg_prof_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

void gim_cg_prof_add(int32_t id, uint64_t ns) {
    __atomic_fetch_add(&prof[id].ns, ns, __ATOMIC_RELAXED);
    __atomic_fetch_add(&prof[id].calls, 1, __ATOMIC_RELAXED);
}
