/* Golden diagnostics: every tests/golden/syntax/NAME.gim that has a NAME.err
 * beside it is parsed (as "syntax/NAME.gim", from tests/golden, with
 * syntax/lib as the stdlib) and what the parser prints must equal NAME.err
 * byte for byte. .gim files without a .err are helpers (imported files). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gim_lang.h"
#include "testutil.h"

/* Parses one golden file; returns the diagnostics text (heap). */
static char *golden_diagnostics(const char *rel_path, int *n_errors) {
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    size_t len;
    char *text = gim_read_file(rel_path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    gim_diag d;
    gim_diag_init(&d, out);
    gim_arena *arena = gim_arena_new();
    gim_program *p = gim_parse_program_text(&d, arena, rel_path, text, len, "syntax/lib");
    CU_ASSERT_PTR_NOT_NULL(p);
    *n_errors = d.n_errors;
    gim_arena_free(arena);
    gim_diag_release(&d);
    gim_free(text);
    fclose(out);
    return buf;
}

static void test_golden_syntax_errors(void) {
    CU_ASSERT_EQUAL_FATAL(chdir(GIM_TEST_DIR "/golden"), 0);
    DIR *dir = opendir("syntax");
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    int checked = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".gim") != 0) continue;
        char gim[512], err[512];
        snprintf(gim, sizeof gim, "syntax/%s", e->d_name);
        snprintf(err, sizeof err, "syntax/%.*s.err", (int)(n - 4), e->d_name);
        size_t elen;
        char *expected = gim_read_file(err, &elen);
        if (!expected) continue;    /* a helper file */
        int n_errors = 0;
        char *got = golden_diagnostics(gim, &n_errors);
        bool same = strcmp(got, expected) == 0;
        if (!same)
            fprintf(stderr, "\n--- %s: expected ---\n%s--- got ---\n%s---\n", gim, expected, got);
        CU_ASSERT(same);
        CU_ASSERT(n_errors > 0);    /* every golden file is a bad one */
        checked++;
        free(got);
        gim_free(expected);
    }
    closedir(dir);
    /* bad_char, unterminated_string, missing_paren, missing_brace, bad_statement,
     * two_errors, import_missing, import_cycle_a, duplicate_def(_import),
     * two_models, mismatched_bracket, import_in_def, bad_escape, huge_int */
    CU_ASSERT(checked >= 15);
}

int main(void) {
    static const gim_test tests[] = {
        {"golden syntax errors", test_golden_syntax_errors},
        {NULL, NULL},
    };
    return gim_run_suite("syntax_errors", tests);
}
