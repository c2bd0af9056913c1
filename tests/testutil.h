/* Shared by the CUnit test programs: a runner, temp files, running gimc. */
#ifndef GIM_TESTUTIL_H
#define GIM_TESTUTIL_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stddef.h>

typedef struct gim_test {
    const char *name;
    void (*fn)(void);
} gim_test;

/* Runs one suite of tests; returns the process exit status (0 when all pass). */
int gim_run_suite(const char *suite, const gim_test *tests);

/* Writes text to a fresh file under a per-process temp dir; returns its path
 * (static storage per call, valid until exit). */
const char *gim_tmpfile(const char *name, const char *text, size_t len);
const char *gim_tmpdir(void);
/* A path `name` under gim_tmpdir() (not created); same lifetime. */
const char *gim_tmppath(const char *name);

/* Runs gimc with args (a shell-quoted string); captures stdout and stderr
 * (heap strings, caller frees) and returns the exit status, -1 if killed. */
int gim_run_gimc(const char *args, char **out, char **err);

/* Uniform floats in [lo, hi) from a fixed xorshift sequence. */
void gim_test_fill(float *x, size_t n, unsigned seed, float lo, float hi);

#endif
