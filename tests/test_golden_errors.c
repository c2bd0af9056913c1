/* Golden diagnostics: every tests/golden/errors/NAME.gim, checked with
 * `gimc check NAME.gim` from that directory (so paths in messages are
 * stable), must exit 1 and print exactly NAME.err on stderr, nothing on
 * stdout. Adding a case is adding the two files. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gim_util.h"
#include "testutil.h"

#define GOLDEN_DIR GIM_TEST_DIR "/golden/errors"

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Prints the first differing line of two texts. */
static void show_difference(const char *name, const char *want, const char *got) {
    int line = 1;
    const char *w = want, *g = got;
    while (*w && *w == *g) {
        if (*w == '\n') line++;
        w++;
        g++;
    }
    fprintf(stderr, "\n%s: stderr differs from the .err file at line %d\n--- expected:\n%s--- got:\n%s", name, line,
            want, got);
}

static void test_every_golden_error(void) {
    char cwd[4096];
    CU_ASSERT_FATAL(getcwd(cwd, sizeof cwd) != NULL);
    CU_ASSERT_FATAL(chdir(GOLDEN_DIR) == 0);
    DIR *dir = opendir(".");
    CU_ASSERT_FATAL(dir != NULL);
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) && n < 256) {
        size_t len = strlen(e->d_name);
        if (len > 4 && !strcmp(e->d_name + len - 4, ".gim")) names[n++] = gim_xstrdup(e->d_name);
    }
    closedir(dir);
    qsort(names, (size_t)n, sizeof names[0], by_name);
    CU_ASSERT(n >= 12);   /* the cases the suite was written with */
    int failures = 0;
    for (int i = 0; i < n; i++) {
        char errpath[512], args[600];
        snprintf(errpath, sizeof errpath, "%.*s.err", (int)(strlen(names[i]) - 4), names[i]);
        size_t len;
        char *want = gim_read_file(errpath, &len);
        if (!want) {
            fprintf(stderr, "\n%s: missing %s\n", names[i], errpath);
            failures++;
            gim_free(names[i]);
            continue;
        }
        snprintf(args, sizeof args, "check '%s'", names[i]);
        char *out, *err;
        int status = gim_run_gimc(args, &out, &err);
        if (status != 1) {
            fprintf(stderr, "\n%s: exit status %d, expected 1\n", names[i], status);
            failures++;
        }
        if (strcmp(err, want)) {
            show_difference(names[i], want, err);
            failures++;
        }
        if (out[0]) {
            fprintf(stderr, "\n%s: unexpected output on stdout:\n%s", names[i], out);
            failures++;
        }
        gim_free(out);
        gim_free(err);
        gim_free(want);
        gim_free(names[i]);
    }
    CU_ASSERT_EQUAL(failures, 0);
    CU_ASSERT(chdir(cwd) == 0);
}

/* Each expected file really holds a located error, so a golden file cannot
 * silently be emptied. */
static void test_golden_files_hold_located_errors(void) {
    const char *cases[] = {"unknown_op", "unknown_kwarg", "wrong_arity", "shape_mismatch", "module_without_loss",
                           "loss_two_modules", "recursion", "missing_model", "batch_zero", NULL};
    for (int i = 0; cases[i]; i++) {
        char path[512], prefix[128];
        snprintf(path, sizeof path, GOLDEN_DIR "/%s.err", cases[i]);
        snprintf(prefix, sizeof prefix, "%s.gim:", cases[i]);
        char *text = gim_read_file(path, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(text);
        CU_ASSERT(strncmp(text, prefix, strlen(prefix)) == 0);
        CU_ASSERT(strstr(text, ": error: ") != NULL);
        CU_ASSERT(strstr(text, "^\n") != NULL);
        gim_free(text);
    }
}

int main(void) {
    static const gim_test tests[] = {
        {"every golden error", test_every_golden_error},
        {"golden files hold located errors", test_golden_files_hold_located_errors},
        {NULL, NULL},
    };
    return gim_run_suite("golden_errors", tests);
}
