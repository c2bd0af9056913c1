/* gimc export: the exported encoder of examples/ (module 3 of
 * models/fashion_gim.gim, weights from a short training run at build time,
 * linked into this program) computes the features gim_extract_features
 * computes, bit for bit, for batch sizes that are and are not multiples of
 * the compiled one, without writing past the n examples asked for; the
 * example program, linked against the same object, dumps the same bits; the
 * object calls nothing of gim or LLVM; a weights file that does not fit the
 * model is refused naming the first difference; bad usage is status 2. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "fashion_gim_m3.h"
#include "gim_data.h"
#include "gim_train.h"
#include "gim_util.h"
#include "harness_model.h"
#include "harness_train.h"
#include "testutil.h"

#define BATCH 32   /* models/fashion_gim.gim's train block */

static gim_exec_model *em;
static gim_train_state st;
static gim_dataset ds;
static gim_examples test_set;   /* all 10,000 test images, normalised as gimc does */
static float *test_storage;

static void setup(void) {
    if (em) return;
    char path[512], name[512];
    snprintf(path, sizeof path, "%s/models/fashion_gim.gim", GIM_SOURCE_DIR);
    snprintf(name, sizeof name, "%s/models/fashion_gim", GIM_SOURCE_DIR);
    size_t len;
    char *src = gim_read_file(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    em = gim_hm_compile(name, src, BATCH, false);
    gim_free(src);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    char err[1024], note[1024];
    CU_ASSERT_EQUAL_FATAL(gim_train_state_init(&st, em, 0, err, sizeof err), 0);
    int rc = gim_weights_load_probe(em, &st, GIM_EXAMPLE_WEIGHTS, note, sizeof note, err, sizeof err);
    if (rc) fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    rc = gim_dataset_load("fashion-mnist", &ds, err, sizeof err);
    if (rc) fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL_FATAL(gim_dataset_examples(&ds, &ds.test, &test_set, &test_storage, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(test_set.x_numel, FASHION_GIM_M3_INPUT_SIZE);
}

/* gim's module-3 features of the first n test images (heap). */
static float *gim_features(int64_t n) {
    gim_examples ex = test_set;
    ex.n = n;
    float *feats[3] = {NULL, NULL, NULL};
    int64_t numel[3];
    char err[1024];
    int rc = gim_extract_features(em, &st, &ex, feats, numel, NULL, NULL, err, sizeof err);
    if (rc) fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(numel[2], FASHION_GIM_M3_FEATURES);
    gim_free(feats[0]);
    gim_free(feats[1]);
    return feats[2];
}

#define GUARD 4096
static const uint32_t POISON = 0x7fc0dead;   /* a NaN no computation produces */

static bool poisoned(const float *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + i, 4);
        if (u != POISON) return false;
    }
    return true;
}

static void poison(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) memcpy(p + i, &POISON, 4);
}

/* 100 = 3 batches and 4; 32 = one batch; 5 and 1: less than one. */
static void test_bits(void) {
    setup();
    static const int64_t counts[] = {100, BATCH, 5, 1};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        int64_t n = counts[c];
        size_t floats = (size_t)n * FASHION_GIM_M3_FEATURES;
        float *want = gim_features(n);
        float *got = gim_malloc((floats + GUARD) * sizeof *got);
        poison(got, floats + GUARD);
        /* a program whose OpenBLAS runs two threads: the call runs it on one
         * (as gim does) and gives the two back */
        openblas_set_num_threads(2);
        CU_ASSERT_EQUAL(fashion_gim_m3_features(test_set.x, n, got), 0);
        CU_ASSERT_EQUAL(openblas_get_num_threads(), 2);
        openblas_set_num_threads(1);   /* gim's pool set it so; gim_features relies on it */
        bool same = memcmp(want, got, floats * sizeof *got) == 0;
        CU_ASSERT(same);
        if (!same) {
            size_t i = 0;
            while (i < floats && !memcmp(want + i, got + i, 4)) i++;
            fprintf(stderr, "\nn=%lld: first difference at float %zu (example %zu): gim %.9g, export %.9g\n",
                    (long long)n, i, i / FASHION_GIM_M3_FEATURES, want[i], got[i]);
        }
        CU_ASSERT(poisoned(got + floats, GUARD));   /* nothing written past n examples */
        gim_free(want);
        gim_free(got);
    }
}

/* gim's own features do not depend on how many batches run side by side
 * (runtime/features.c: a lane per thread): one thread, two and three lanes
 * give the same bits over 100 examples (4 batches, the last partial). */
static void test_lanes(void) {
    setup();
    int keep = gim_rt_threads();
    size_t floats = (size_t)100 * FASHION_GIM_M3_FEATURES;
    gim_rt_set_threads(1);
    float *one = gim_features(100);
    for (int threads = 2; threads <= 3; threads++) {
        gim_rt_set_threads(threads);
        float *got = gim_features(100);
        size_t i = 0;
        while (i < floats && !memcmp(one + i, got + i, 4)) i++;
        CU_ASSERT_EQUAL(i, floats);
        if (i < floats)
            fprintf(stderr, "\n%d threads: first difference at float %zu: %.9g against %.9g on one\n", threads, i,
                    got[i], one[i]);
        gim_free(got);
    }
    gim_rt_set_threads(keep);
    gim_free(one);
}

static void test_empty_and_negative(void) {
    float out[GUARD];
    poison(out, GUARD);
    CU_ASSERT_EQUAL(fashion_gim_m3_features(NULL, 0, out), 0);
    CU_ASSERT_EQUAL(fashion_gim_m3_features(NULL, -1, out), -1);
    CU_ASSERT(poisoned(out, GUARD));
}

/* Runs a shell command; its stdout (heap) and exit status. */
static int run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    size_t cap = 1 << 16, len = 0;
    char *buf = gim_xmalloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (len + 1 == cap) buf = gim_xrealloc(buf, cap *= 2);
    }
    buf[len] = 0;
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The example, OpenBLAS on two threads: the features it dumps are gim's. */
static void test_example_program(void) {
    setup();
    const char *dump = gim_tmppath("example.f32");
    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=2 '%s' --count 100 --dump '%s'", GIM_EXAMPLE_BIN, dump);
    int rc = run(cmd, &out);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(tt_has(out, "100 test images, 4608 features each"));
    CU_ASSERT(tt_has(out, "nearest-neighbour accuracy among them: "));
    gim_free(out);
    size_t bytes;
    char *got = gim_read_file(dump, &bytes);
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_EQUAL_FATAL(bytes, (size_t)100 * FASHION_GIM_M3_FEATURES * sizeof(float));
    float *want = gim_features(100);
    CU_ASSERT(memcmp(want, got, bytes) == 0);
    gim_free(want);
    gim_free(got);
}

/* Undefined symbols: OpenBLAS, libm, libc only; defined: the one function. */
static void test_symbols(void) {
    static const char *const allowed[] = {
        "cblas_sgemm", "cblas_sgemv", "cblas_sdot", "cblas_saxpy", "expf", "logf", "tanhf", "sqrtf", "powf",
        "fmaxf", "fminf", "log1pf", "expm1f", "exp", "log", "pow", "sqrt", "tanh", "memcpy", "memset", "memmove",
        "aligned_alloc", "free", "openblas_get_num_threads", "openblas_set_num_threads", "__tls_get_addr", "_GLOBAL_OFFSET_TABLE_", NULL};
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "nm -u '%s'", GIM_EXAMPLE_OBJECT);
    CU_ASSERT_EQUAL_FATAL(run(cmd, &out), 0);
    int n_undef = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char sym[256];
        if (sscanf(line, " U %255s", sym) != 1) continue;
        n_undef++;
        bool ok = false;
        for (int i = 0; allowed[i]; i++) ok |= !strcmp(sym, allowed[i]);
        if (!ok) fprintf(stderr, "\nthe exported object needs '%s'\n", sym);
        CU_ASSERT(ok);
    }
    CU_ASSERT(n_undef > 0);   /* nm worked: it calls at least cblas_sgemm */
    gim_free(out);
    snprintf(cmd, sizeof cmd, "nm -g --defined-only '%s'", GIM_EXAMPLE_OBJECT);
    CU_ASSERT_EQUAL_FATAL(run(cmd, &out), 0);
    CU_ASSERT(tt_has(out, " T fashion_gim_m3_features\n"));
    CU_ASSERT_EQUAL(strchr(out, '\n'), strrchr(out, '\n'));   /* one line */
    gim_free(out);
    snprintf(cmd, sizeof cmd, "ldd '%s'", GIM_EXAMPLE_BIN);
    CU_ASSERT_EQUAL_FATAL(run(cmd, &out), 0);
    CU_ASSERT(tt_has(out, "libopenblas"));
    CU_ASSERT(!tt_has(out, "LLVM"));
    CU_ASSERT(!tt_has(out, "gim"));
    gim_free(out);
}

static bool exists(const char *dir, const char *file) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void test_mismatch_refused(void) {
    const char *data = tt_dataset("d12", 12, 64, 32, false);
    const char *model2 = tt_model("tiny2.gim", 12, 2), *model3 = tt_model("tiny3.gim", 12, 3);
    const char *two = tt_path("run_two"), *out = tt_path("exp");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 2", model2, data, two), 0);
    char *so = NULL, *se = NULL;
    /* the model it was trained for exports (module 2 by default) */
    int rc = tt_gimc(&so, &se, "export -O0 '%s' --weights '%s' -o '%s'", model2, tt_weights(two), out);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\n%s\n", se);
    CU_ASSERT(exists(out, "tiny2_m2.o") && exists(out, "tiny2_m2.h"));
    gim_free(so);
    gim_free(se);
    /* a parameter missing from the file: named, and nothing written */
    const char *out3 = tt_path("exp3");
    rc = tt_gimc(NULL, &se, "export -O0 '%s' --weights '%s' --module 1 -o '%s'", model3, tt_weights(two), out3);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "'conv2d.3/w'"));
    CU_ASSERT(tt_has(se, "weights.safetensors"));
    CU_ASSERT(!exists(out3, "tiny3_m1.o") && !exists(out3, "tiny3_m1.h"));
    gim_free(se);
    /* a shape: module 1 with 6 channels instead of 4 */
    static const char wide[] = "model tiny2 {\n"
                               "    input x: [batch, 1, 12, 12]\n"
                               "    p = patches(x, size=4, stride=2)\n"
                               "    h1 = relu(conv2d(p, 6, k=3, pad=1))\n"
                               "    infonce(spatial_mean(h1), steps=2, negatives=4)\n"
                               "    h2 = relu(conv2d(gradient_block(h1), 8, k=3, stride=2, pad=1))\n"
                               "    infonce(spatial_mean(h2), steps=2, negatives=4)\n"
                               "    output spatial_mean(h2)\n"
                               "}\n";
    const char *mw = gim_tmpfile("wide.gim", wide, sizeof wide - 1);
    rc = tt_gimc(NULL, &se, "export -O0 '%s' --weights '%s' -o '%s'", mw, tt_weights(two), tt_path("exp_wide"));
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "'conv2d.1/w'"));
    CU_ASSERT(tt_has(se, "[4, 1, 3, 3]") && tt_has(se, "[6, 1, 3, 3]"));
    gim_free(se);
    /* not a weights file at all */
    const char *junk = gim_tmpfile("junk.safetensors", "not safetensors", 15);
    rc = tt_gimc(NULL, &se, "export -O0 '%s' --weights '%s' -o '%s'", model2, junk, tt_path("exp_junk"));
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "junk.safetensors"));
    gim_free(se);
}

static void test_usage(void) {
    const char *model2 = tt_model("tiny2.gim", 12, 2);
    char *se = NULL;
    CU_ASSERT_EQUAL(tt_gimc(NULL, &se, "export '%s' -o '%s'", model2, tt_path("u1")), 2);
    CU_ASSERT(tt_has(se, "--weights"));
    gim_free(se);
    CU_ASSERT_EQUAL(tt_gimc(NULL, &se, "export '%s' --weights w.safetensors", model2), 2);
    CU_ASSERT(tt_has(se, "-o DIR"));
    gim_free(se);
    CU_ASSERT_EQUAL(tt_gimc(NULL, &se, "export '%s' --weights w --lr 1 -o d", model2), 2);
    gim_free(se);
    const char *data = tt_dataset("d12u", 12, 64, 32, false), *two = tt_path("run_u");
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --steps 1", model2, data, two), 0);
    CU_ASSERT_EQUAL(tt_gimc(NULL, &se, "export -O0 '%s' --weights '%s' --module 3 -o '%s'", model2, tt_weights(two),
                            tt_path("u3")),
                    2);
    CU_ASSERT(tt_has(se, "has 2 modules"));
    gim_free(se);
}

int main(void) {
    static const gim_test tests[] = {
        {"the exported features are gim's, bit for bit, at n = 100, 32, 5, 1", test_bits},
        {"gim's features are the same bits on one thread, two and three", test_lanes},
        {"n = 0 writes nothing, n < 0 is refused", test_empty_and_negative},
        {"the example program dumps gim's features", test_example_program},
        {"the object needs OpenBLAS, libm and libc only", test_symbols},
        {"weights that do not fit the model are refused", test_mismatch_refused},
        {"bad usage is status 2", test_usage},
        {NULL, NULL},
    };
    int rc = gim_run_suite("export", tests);
    if (em) {
        gim_train_state_free(&st, em);
        gim_exec_model_free(em);
    }
    gim_free(test_storage);
    gim_dataset_free(&ds);
    return rc;
}
