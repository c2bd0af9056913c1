/* Hostile source files and command lines: every one must end in a located
 * error and exit status 1 (2 for a bad command line, as docs/cli.md says),
 * never in a crash, a hang or a huge allocation (tests/harness_hostile.c
 * runs gimc under a timeout and a memory limit). */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gim_util.h"
#include "harness_hostile.h"
#include "testutil.h"

/* ---- batch ----------------------------------------------------------------------- */

/* In the train block a batch out of range is a located error (status 1); on
 * the command line it is a usage error (status 2, docs/cli.md). */
static void test_batch_bounds(void) {
    static const char *const batches[] = {"0", "1000000000", "-1", "99999999999999999999"};
    for (int i = 0; i < 4; i++) {
        char text[1024], args[1024];
        snprintf(text, sizeof text, "model m {\n    input x: [batch, 4]\n    output relu(x)\n}\ntrain {\n    batch %s\n}\n",
                 batches[i]);
        const char *path = hx_model("batch.gim", text);
        snprintf(args, sizeof args, "check '%s'", path);
        HX_EXPECT(hx_gimc(args), 1, "batch.gim:6:11: error:");
        snprintf(args, sizeof args, "check '%s' --batch %s", hx_model("ok.gim", hx_tiny), batches[i]);
        HX_EXPECT(hx_gimc(args), 2, "--batch expects an integer from 1 to");
        snprintf(args, sizeof args, "train '%s' --batch %s --steps 1", hx_model("ok.gim", hx_tiny), batches[i]);
        HX_EXPECT(hx_gimc(args), 2, "--batch expects an integer from 1 to");
    }
}

/* ---- shapes ----------------------------------------------------------------------- */

/* Shapes whose element counts, parameter counts or FLOPs overflow 64 bits
 * (or pass 2^40 elements): located errors at any batch, even the largest. */
static void test_overflowing_shapes(void) {
    static const char *const bodies[] = {
        "    input x: [batch, 4000000000, 4000000000, 4000000000]\n    output relu(x)\n",
        "    input x: [batch, 3037000500, 3037000500]\n    output relu(x)\n",
        "    input x: [batch, 4]\n    output linear(x, 9223372036854775807)\n",
        "    input x: [batch, 3000000000]\n    output linear(x, 3000000000)\n",
        "    input x: [batch, 4]\n    output reshape(x, [batch, 4294967296, 4294967296])\n",
        "    input x: [batch, 4]\n    output reshape(x, [-1, 4294967296, 4294967296, 4294967296])\n",
        "    input x: [batch, 3, 8, 8]\n    output conv2d(x, 2000000000, k=3, pad=2000000000)\n",
        "    input x: [batch, 3, 8, 8]\n    output conv2d(x, 4, k=4000000000, pad=2000000000)\n",
        /* the parameter, not the output, is what overflows: infonce's W [1, C, C] */
        "    input x: [batch, 4, 16]\n    h = linear(x, 4000000000)\n    infonce(h)\n    output h\n",
        "    input x: [batch, 4, 16]\n    h = gru(x, 2000000000)\n    infonce(h)\n    output h\n",
        "    input x: [batch, 4]\n    output x * 1e400\n",
        "    input x: [batch, 0]\n    output relu(x)\n",
    };
    static const char *const batches[] = {"1", "1048576"};
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++)
        for (int b = 0; b < 2; b++) {
            char text[1024], args[1024];
            snprintf(text, sizeof text, "model m {\n%s}\n", bodies[i]);
            snprintf(args, sizeof args, "check '%s' --batch %s", hx_model("shape.gim", text), batches[b]);
            HX_EXPECT(hx_gimc(args), 1, "shape.gim:");
            if (strstr(hx_err, "internal") || !strstr(hx_err, "shape.gim:"))
                fprintf(stderr, "\n  case %zu, batch %s:\n%s", i, batches[b], text);
            CU_ASSERT(strstr(hx_err, "internal") == NULL);
        }
}

/* ---- huge and malformed source ------------------------------------------------------ */

/* A file of `prefix`, `n` copies of `unit`, then `suffix`. */
static const char *hx_repeat(const char *name, const char *prefix, const char *unit, size_t n, const char *suffix) {
    size_t lp = strlen(prefix), lu = strlen(unit), ls = strlen(suffix), len = lp + lu * n + ls;
    char *t = gim_xmalloc(len + 1);
    memcpy(t, prefix, lp);
    for (size_t i = 0; i < n; i++) memcpy(t + lp + i * lu, unit, lu);
    memcpy(t + lp + lu * n, suffix, ls);
    const char *path = gim_tmpfile(name, t, len);
    gim_free(t);
    return path;
}

static void hx_check(const char *path, int want, const char *needle) {
    char args[1024];
    snprintf(args, sizeof args, "check '%s'", path);
    HX_EXPECT(hx_gimc(args), want, needle);
}

/* 10 MB lines: a name, a number, a string, a comment. Errors quote at most
 * a window of the line and a bounded message. */
static void test_long_lines(void) {
    size_t mb10 = 10u << 20;
    hx_check(hx_repeat("name.gim", "model m {\n    input x: [batch, 4]\n    output relu(", "a", mb10, ")\n}\n"), 1,
             "name.gim:3:17: error: unknown name 'aaaa");
    CU_ASSERT(strlen(hx_err) < 16384);
    hx_check(hx_repeat("num.gim", "model m {\n    input x: [batch, 4]\n    output x * ", "9", mb10, "\n}\n"), 1,
             "num.gim:3:16: error:");
    CU_ASSERT(strlen(hx_err) < 16384);
    hx_check(hx_repeat("str.gim", "import \"", "q", mb10, "\"\nmodel m {\n    input x: [batch, 4]\n    output x\n}\n"), 1,
             "str.gim:1:8: error:");
    CU_ASSERT(strlen(hx_err) < 16384);
    hx_check(hx_repeat("comment.gim", "# ", "c", mb10, "\nmodel m {\n    input x: [batch, 4]\n    output relu(x)\n}\n"),
             0, "");
}

/* Deep nesting: 10,000 parentheses, calls and lists, a 100,000-deep unary
 * minus, a 200,000-term sum, 100,000 unclosed parentheses. */
static void test_deep_nesting(void) {
    static const char head[] = "model m {\n    input x: [batch, 4]\n    output ";
    char *t = gim_xmalloc(10000 * (12 + 2) + 1024);
    static const char *const opens[] = {"(", "relu(", "reshape(x, ["};
    static const char *const closes[] = {")", ")", "])"};
    for (int k = 0; k < 3; k++) {
        size_t at = (size_t)sprintf(t, "%s", head);
        for (int i = 0; i < 10000; i++) at += (size_t)sprintf(t + at, "%s", opens[k]);
        at += (size_t)sprintf(t + at, "%s", k == 2 ? "" : "x");
        for (int i = 0; i < 10000; i++) at += (size_t)sprintf(t + at, "%s", closes[k]);
        at += (size_t)sprintf(t + at, "\n}\n");
        hx_check(gim_tmpfile("nest.gim", t, at), 1, "nest.gim:3:");
        CU_ASSERT(strstr(hx_err, "nested") != NULL);
    }
    gim_free(t);
    hx_check(hx_repeat("neg.gim", head, "-", 100000, "x\n}\n"), 1, "neg.gim:3:");
    hx_check(hx_repeat("sum.gim", head, "x + ", 200000, "x\n}\n"), 1, "sum.gim:3:");
    hx_check(hx_repeat("open.gim", head, "(", 100000, "\n"), 1, "open.gim:3:");
}

/* Many statements and defs: the op budget and the inlining depth are
 * errors, reached quickly. */
static void test_huge_files(void) {
    gim_sb sb = {0};
    gim_sb_puts(&sb, "model m {\n    input x: [batch, 4]\n    h0 = relu(x)\n");
    for (int i = 1; i < 120000; i++) gim_sb_printf(&sb, "    h%d = relu(h%d)\n", i, i - 1);
    gim_sb_puts(&sb, "    output h119999\n}\n");
    hx_check(gim_tmpfile("many.gim", sb.buf, sb.len), 1, "many.gim:");
    CU_ASSERT(hx_secs < 30);
    gim_sb_free(&sb);
    gim_sb sd = {0};
    gim_sb_puts(&sd, "def f0(x) {\n    return relu(x)\n}\n");
    for (int i = 1; i < 2000; i++) gim_sb_printf(&sd, "def f%d(x) {\n    return f%d(x)\n}\n", i, i - 1);
    gim_sb_puts(&sd, "model m {\n    input x: [batch, 4]\n    output f1999(x)\n}\n");
    hx_check(gim_tmpfile("defs.gim", sd.buf, sd.len), 1, "defs.gim:");
    CU_ASSERT(hx_secs < 30);
    gim_sb_free(&sd);
}

/* Not a model at all: random bytes (with NULs), a NUL alone, UTF-16, an
 * empty file, a directory, a missing file. */
static void test_binary_garbage(void) {
    uint8_t *g = gim_xmalloc(65536);
    uint32_t s = 7;
    for (int i = 0; i < 65536; i++) {
        s = s * 1664525u + 1013904223u;
        g[i] = (uint8_t)(s >> 24);
    }
    hx_check(gim_tmpfile("garbage.gim", (const char *)g, 65536), 1, "garbage.gim:1:");
    for (int i = 0; i < 65536; i++) g[i] = (uint8_t)(i % 3 ? 'a' : 0);
    hx_check(gim_tmpfile("nuls.gim", (const char *)g, 65536), 1, "nuls.gim:");
    gim_free(g);
    hx_check(gim_tmpfile("nul.gim", "model m {\0}\n", 12), 1, "nul.gim:1:");
    static const char utf16[] = "\xff\xfem\0o\0d\0e\0l\0 \0m\0 \0{\0}\0";
    hx_check(gim_tmpfile("utf16.gim", utf16, sizeof utf16 - 1), 1, "utf16.gim:1:");
    hx_check(gim_tmpfile("empty.gim", "", 0), 1, "empty.gim");
    hx_check(gim_tmpdir(), 1, "error");
    hx_check("/nonexistent/model.gim", 1, "/nonexistent/model.gim");
}

int main(void) {
    static const gim_test tests[] = {
        {"batch 0, 10^9, -1, 10^20", test_batch_bounds},
        {"shapes that overflow", test_overflowing_shapes},
        {"10 MB lines", test_long_lines},
        {"10,000-deep nesting", test_deep_nesting},
        {"huge files", test_huge_files},
        {"binary garbage, empty, directory, missing", test_binary_garbage},
        {NULL, NULL},
    };
    int rc = gim_run_suite("hostile source", tests);
    hx_release();
    return rc;
}
