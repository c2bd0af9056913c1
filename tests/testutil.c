#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gim_util.h"

int gim_run_suite(const char *suite, const gim_test *tests) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite(suite, NULL, NULL);
    for (const gim_test *t = tests; t->name; t++)
        CU_add_test(s, t->name, t->fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    return (failed || run == 0) ? 1 : 0;
}

const char *gim_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s/gimtest.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
    }
    return dir;
}

/* Every path handed out, kept reachable until exit (so LeakSanitizer, in the
 * sanitizer build, does not count them as leaks). */
static char **tmp_paths;
static size_t n_tmp_paths, cap_tmp_paths;

const char *gim_tmppath(const char *name) {
    char *path = gim_xmalloc(strlen(gim_tmpdir()) + strlen(name) + 2);
    sprintf(path, "%s/%s", gim_tmpdir(), name);
    if (n_tmp_paths == cap_tmp_paths) {
        cap_tmp_paths = cap_tmp_paths ? 2 * cap_tmp_paths : 64;
        tmp_paths = gim_xrealloc(tmp_paths, cap_tmp_paths * sizeof *tmp_paths);
    }
    tmp_paths[n_tmp_paths++] = path;
    return path;
}

const char *gim_tmpfile(const char *name, const char *text, size_t len) {
    const char *path = gim_tmppath(name);
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    fwrite(text, 1, len, f);
    fclose(f);
    return path;
}

static char *slurp(const char *path) {
    size_t n;
    char *s = gim_read_file(path, &n);
    return s ? s : gim_xstrdup("");
}

int gim_run_gimc(const char *args, char **out, char **err) {
    char o[512], e[512];
    static int count;
    snprintf(o, sizeof o, "%s/gimc.%d.out", gim_tmpdir(), count);
    snprintf(e, sizeof e, "%s/gimc.%d.err", gim_tmpdir(), count++);
    size_t n = strlen(GIMC_PATH) + strlen(args) + 2 * 512 + 32;
    char *cmd = gim_xmalloc(n);
    snprintf(cmd, n, "'%s' %s >'%s' 2>'%s' </dev/null", GIMC_PATH, args, o, e);
    int st = system(cmd);
    gim_free(cmd);
    if (out) *out = slurp(o);
    if (err) *err = slurp(e);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

void gim_test_fill(float *x, size_t n, unsigned seed, float lo, float hi) {
    unsigned s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        x[i] = lo + (hi - lo) * (float)((s >> 8) * (1.0 / 16777216.0));
    }
}
