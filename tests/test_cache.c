/* Caches of module outputs: bfloat16 conversion (exact values, ties to
 * even, NaN and infinities); the sequential schedule with a bf16 cache
 * (half the bytes, still learning); refusal when the output directory's
 * file system lacks room (a real small tmpfs) with nothing left behind;
 * --refresh N: losses fall, module 1 is untouched by it, module 2 reads the
 * cache, a resumed run equals the uninterrupted one, and the usage errors. */
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gim_checkpoint.h"
#include "gim_util.h"
#include "harness_train.h"
#include "testutil.h"
#include "train_internal.h"

static const char *data12;     /* 256 + 128 images of 12 x 12 */
static const char *model2;     /* 2 modules */

static void setup(void) {
    if (data12) return;
    data12 = tt_dataset("c12", 12, 256, 128, true);
    model2 = tt_model("ctiny2.gim", 12, 2);
}

static uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float float_of(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* ---- bfloat16 ------------------------------------------------------------------- */

/* Every bf16 value (all 65536 bit patterns but NaNs) widens to a float
 * that narrows back to the same bits; NaNs stay NaN. */
static void test_bf16_exact_round_trip(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float x = rt_f32_from_bf16((uint16_t)h);
        CU_ASSERT_EQUAL(bits_of(x), h << 16);
        uint16_t back = rt_bf16_from_f32(x);
        if (isnan(x)) bad += !isnan(rt_f32_from_bf16(back)) || (back & 0x8000) != (h & 0x8000);
        else bad += back != h;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(rt_bf16_from_f32(1.0f), 0x3f80);
    CU_ASSERT_EQUAL(rt_bf16_from_f32(-2.0f), 0xc000);
    CU_ASSERT_EQUAL(rt_bf16_from_f32(0.0f), 0x0000);
    CU_ASSERT_EQUAL(rt_bf16_from_f32(-0.0f), 0x8000);
}

/* A float halfway between two bf16 values goes to the one with an even
 * last bit; a hair above or below goes to the nearer one. */
static void test_bf16_ties_to_even(void) {
    /* 1 + 2^-8 lies halfway between 1 (0x3f80, even) and 1 + 2^-7 (0x3f81) */
    CU_ASSERT_EQUAL(rt_bf16_from_f32(float_of(0x3f808000u)), 0x3f80);
    /* 1 + 3 * 2^-8: halfway between 0x3f81 (odd) and 0x3f82 (even) */
    CU_ASSERT_EQUAL(rt_bf16_from_f32(float_of(0x3f818000u)), 0x3f82);
    CU_ASSERT_EQUAL(rt_bf16_from_f32(float_of(0x3f808001u)), 0x3f81);
    CU_ASSERT_EQUAL(rt_bf16_from_f32(float_of(0x3f807fffu)), 0x3f80);
    CU_ASSERT_EQUAL(rt_bf16_from_f32(float_of(0xbf818000u)), 0xbf82);   /* sign aside, the same */
    /* a tie that carries into the exponent: 0x3fff8000 -> 0x4000 (2.0) */
    CU_ASSERT_EQUAL(rt_bf16_from_f32(float_of(0x3fff8000u)), 0x4000);
    /* every tie, exhaustively over the upper bits: even result, and the
     * nearer of the two otherwise */
    int bad = 0;
    for (uint32_t hi = 0; hi < 0x7f80; hi++) {
        uint32_t tie = hi << 16 | 0x8000u;
        uint16_t want = (hi & 1) ? (uint16_t)(hi + 1) : (uint16_t)hi;
        bad += rt_bf16_from_f32(float_of(tie)) != want;
        bad += rt_bf16_from_f32(float_of(tie - 1)) != hi;
        bad += rt_bf16_from_f32(float_of(tie + 1)) != hi + 1;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_bf16_nan_inf(void) {
    CU_ASSERT_EQUAL(rt_bf16_from_f32(INFINITY), 0x7f80);
    CU_ASSERT_EQUAL(rt_bf16_from_f32(-INFINITY), 0xff80);
    CU_ASSERT(isinf(rt_f32_from_bf16(0x7f80)) && rt_f32_from_bf16(0x7f80) > 0);
    /* a NaN whose payload is all in the dropped bits stays a NaN */
    float nan_low = float_of(0x7f800001u), nan_neg = float_of(0xff800001u);
    CU_ASSERT(isnan(nan_low));
    CU_ASSERT(isnan(rt_f32_from_bf16(rt_bf16_from_f32(nan_low))));
    CU_ASSERT(isnan(rt_f32_from_bf16(rt_bf16_from_f32(NAN))));
    CU_ASSERT_EQUAL(rt_bf16_from_f32(nan_neg) & 0x8000, 0x8000);
    CU_ASSERT(isnan(rt_f32_from_bf16(rt_bf16_from_f32(nan_neg))));
    /* beyond bf16's largest finite value (0x7f7f) rounds to infinity; the
     * largest float below the midpoint stays finite */
    CU_ASSERT_EQUAL(rt_bf16_from_f32(FLT_MAX), 0x7f80);
    CU_ASSERT_EQUAL(rt_bf16_from_f32(float_of(0x7f7f7fffu)), 0x7f7f);
}

/* ---- the sequential cache: size, room, bf16 ---------------------------------- */

/* The "N bytes" of a line starting with `prefix` in `text`; -1 if none. */
static int64_t stated_bytes(const char *text, const char *prefix) {
    const char *at = text ? strstr(text, prefix) : NULL;
    if (!at) return -1;
    const char *open = strchr(at, '(');
    long long b;
    if (!open || sscanf(open, "(%lld bytes", &b) != 1) return -1;
    return b;
}

/* Entries of dir whose name starts with ".cache." */
static int cache_files_in(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += !strncmp(e->d_name, ".cache.", 7);
    closedir(d);
    return n;
}

/* The sequential schedule with f32 and bf16 caches: bf16 states exactly
 * half the bytes, and module 2 still learns on it (mean of its last 8
 * steps below its first 8). No cache file is left in the output
 * directory. Then a tmpfs with room for the bf16 cache and not the f32
 * one: f32 is refused before training (exit 1, naming the directory and
 * the ways out, nothing left behind) and bf16 trains there. */
static void test_sequential_bf16_and_room(void) {
    setup();
    int64_t bytes[2] = {-1, -1};
    const char *dtypes[2] = {"f32", "bf16"};
    for (int t = 0; t < 2; t++) {
        char name[32];
        snprintf(name, sizeof name, "seq_%s", dtypes[t]);
        const char *out = tt_path(name);
        char *so = NULL, *se = NULL;
        int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --epochs 3 --threads 1 --schedule sequential "
                         "--cache-dtype %s", model2, data12, out, dtypes[t]);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc) fprintf(stderr, "\n%s: %s\n", dtypes[t], se);
        bytes[t] = stated_bytes(so, "module 1: caching its outputs");
        CU_ASSERT(tt_has(so, dtypes[t]));
        CU_ASSERT_EQUAL(cache_files_in(out), 0);
        tt_row *rows = NULL;
        int n = tt_metrics(out, &rows);
        CU_ASSERT_EQUAL(tt_count(rows, n, 2), 48);
        double first = tt_mean_loss(rows, n, 2, 8, false), last = tt_mean_loss(rows, n, 2, 8, true);
        CU_ASSERT(last < first - 0.05);
        if (!(last < first - 0.05)) fprintf(stderr, "\n%s module 2: first %.4f last %.4f\n", dtypes[t], first, last);
        gim_free(rows);
        gim_free(so);
        gim_free(se);
    }
    CU_ASSERT(bytes[0] > 0 && bytes[1] > 0);
    CU_ASSERT_EQUAL(bytes[1] * 2, bytes[0]);

    /* a file system too small for f32: between the two sizes, plus room
     * for the checkpoints and metrics */
    const char *mnt = tt_path("small_fs");
    CU_ASSERT_FATAL(mkdir(mnt, 0755) == 0);
    char opts[64];
    snprintf(opts, sizeof opts, "size=%lldk", (long long)((bytes[1] + bytes[0]) / 2 / 1024));
    if (mount("tmpfs", mnt, "tmpfs", 0, opts)) {
        fprintf(stderr, "\n  skipped: cannot mount a small tmpfs (%s): the refusal is not tested here\n",
                strerror(errno));
        return;
    }
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --epochs 1 --threads 1 --schedule sequential",
                     model2, data12, mnt);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "not enough disk"));
    CU_ASSERT(tt_has(se, mnt));
    CU_ASSERT(tt_has(se, "--cache-dtype bf16"));
    CU_ASSERT(tt_has(se, "--out"));
    char need[64];
    snprintf(need, sizeof need, "(%lld bytes)", (long long)bytes[0]);
    CU_ASSERT(tt_has(se, need));
    CU_ASSERT(!tt_has(so, "module 1: training"));   /* refused up front */
    CU_ASSERT_EQUAL(cache_files_in(mnt), 0);
    if (rc != 1) fprintf(stderr, "\nf32 on a small disk: %s\n%s\n", so, se);
    gim_free(so);
    gim_free(se);
    rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --epochs 1 --threads 1 --schedule sequential "
                 "--cache-dtype bf16", model2, data12, mnt);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\nbf16 on a small disk: %s\n%s\n", so, se);
    CU_ASSERT_EQUAL(cache_files_in(mnt), 0);
    gim_free(so);
    gim_free(se);
    CU_ASSERT(umount(mnt) == 0);
}

/* ---- --refresh ------------------------------------------------------------------ */

/* --refresh 2 over 4 epochs: every module's loss falls; module 1, which
 * reads only the data, has the simultaneous schedule's losses step for
 * step; module 2's first step (the cache from module 1's initial
 * parameters, which is also what module 1 makes live in step 1) equals
 * the simultaneous one, and its later steps do not (module 1 has moved on
 * since the cache was made). */
static void test_refresh_learns(void) {
    setup();
    const char *a = tt_path("refresh_lower"), *sim = tt_path("refresh_sim");
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' --epochs 4 --threads 1 --refresh 2", model2,
                     data12, a);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT(tt_has(so, "refresh (epoch 1)"));
    CU_ASSERT(tt_has(so, "refresh (epoch 3)"));
    CU_ASSERT(!tt_has(so, "refresh (epoch 2)"));
    CU_ASSERT_EQUAL(cache_files_in(a), 0);
    gim_free(so);
    gim_free(se);
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' --epochs 4 --threads 1", model2,
                                  data12, sim), 0);
    tt_row *r = NULL, *q = NULL;
    int n = tt_metrics(a, &r), nq = tt_metrics(sim, &q);
    CU_ASSERT_FATAL(n == 2 * 64 && nq == n);
    for (int mi = 1; mi <= 2; mi++) {
        double first = tt_mean_loss(r, n, mi, 8, false), last = tt_mean_loss(r, n, mi, 8, true);
        CU_ASSERT(last < first - 0.1);
        if (!(last < first - 0.1)) fprintf(stderr, "\nrefresh module %d: first %.4f last %.4f\n", mi, first, last);
    }
    int same1 = 0, same2 = 0, first2 = 0;
    for (int i = 0; i < n; i++) {
        CU_ASSERT_FATAL(r[i].step == q[i].step && r[i].module == q[i].module);
        if (r[i].module == 1) same1 += r[i].loss == q[i].loss;
        else if (r[i].step == 1) first2 = r[i].loss == q[i].loss;
        else same2 += r[i].loss == q[i].loss;
    }
    CU_ASSERT_EQUAL(same1, 64);
    CU_ASSERT_EQUAL(first2, 1);
    CU_ASSERT(same2 < 4);
    gim_free(r);
    gim_free(q);
}

/* A: 3 epochs with --refresh 2 uninterrupted. B: stopped at step 10
 * (inside the first period, whose cache came from the initial parameters,
 * which the checkpoint no longer holds), resumed to step 40 (inside the
 * second period), resumed to the end. Same weights and losses as A. */
static void test_refresh_resume_exact(void) {
    setup();
    const char *a = tt_path("refresh_a"), *b = tt_path("refresh_b");
    const char *args = "--epochs 3 --threads 1 --seed 3 --refresh 2";
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' %s", model2, data12, a, args), 0);
    CU_ASSERT_EQUAL_FATAL(tt_gimc(NULL, NULL, "train -O0 '%s' --data '%s' --out '%s' %s --steps 10", model2, data12, b,
                                  args), 0);
    CU_ASSERT(!tt_same_file(tt_weights(a), tt_weights(b)));
    char *so = NULL, *se = NULL;
    int rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' %s --steps 40 --resume", model2, data12, b, args);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\n%s\n", se);
    CU_ASSERT(tt_has(so, "resuming"));
    gim_free(so);
    gim_free(se);
    rc = tt_gimc(&so, &se, "train -O0 '%s' --data '%s' --out '%s' %s --resume", model2, data12, b, args);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc) fprintf(stderr, "\n%s\n", se);
    gim_free(so);
    gim_free(se);
    CU_ASSERT(tt_same_file(tt_weights(a), tt_weights(b)));
    tt_row *ra = NULL, *rb = NULL;
    int na = tt_metrics(a, &ra), nb = tt_metrics(b, &rb);
    bool same = na == 2 * 48 && na == nb;
    for (int i = 0; same && i < na; i++) same = ra[i].step == rb[i].step && ra[i].loss == rb[i].loss;
    CU_ASSERT(same);
    gim_free(ra);
    gim_free(rb);
    /* resumed with another period, or without: refused, naming it */
    rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' --epochs 4 --resume", model2, data12, b);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT(tt_has(se, "--refresh 2"));
    gim_free(se);
}

static void test_refresh_usage(void) {
    setup();
    static const struct {
        const char *args, *says;
    } cases[] = {
        {"--refresh 2 --schedule async", "--schedule async"},
        {"--refresh 2 --schedule sequential", "--schedule sequential"},
        {"--refresh 2 --e2e", "--e2e"},
        {"--refresh 0", "--refresh expects a positive number"},
        {"--refresh x", "--refresh expects a positive number"},
        {"--cache-dtype f16 --schedule sequential", "--cache-dtype expects f32 or bf16"},
        {"--cache-dtype bf16", "--cache-dtype applies to"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *se = NULL;
        int rc = tt_gimc(NULL, &se, "train -O0 '%s' --data '%s' --out '%s' %s", model2, data12, tt_path("usage"),
                         cases[i].args);
        CU_ASSERT_EQUAL(rc, 2);
        CU_ASSERT(tt_has(se, cases[i].says));
        if (rc != 2 || !tt_has(se, cases[i].says)) fprintf(stderr, "\n%s: %d %s\n", cases[i].args, rc, se);
        gim_free(se);
    }
}

int main(void) {
    static const gim_test tests[] = {
        {"bf16: every value round-trips", test_bf16_exact_round_trip},
        {"bf16: ties to even", test_bf16_ties_to_even},
        {"bf16: NaN and infinities", test_bf16_nan_inf},
        {"sequential: bf16 halves the cache; no room refused", test_sequential_bf16_and_room},
        {"--refresh: losses fall, module 2 reads the cache", test_refresh_learns},
        {"--refresh: resume = uninterrupted", test_refresh_resume_exact},
        {"--refresh and --cache-dtype usage errors", test_refresh_usage},
        {NULL, NULL},
    };
    return tt_cleanup(gim_run_suite("cache", tests));
}
