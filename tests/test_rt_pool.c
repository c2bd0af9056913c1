/* The runtime thread pool (runtime/pool.c) and the sgemm it cuts. */
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gim_runtime.h"
#include "testutil.h"

#define MAXN 4096

/* Records, per iteration, how often it ran and which part ran it; per part,
 * its range and the thread that ran it. */
typedef struct cover {
    atomic_int hits[MAXN];
    int part_of[MAXN];
    int64_t begin[GIM_RT_PARTS], end[GIM_RT_PARTS];
    atomic_int calls[GIM_RT_PARTS];
    atomic_int bad;
    atomic_int nested_ok;
    pthread_t who[GIM_RT_PARTS];
} cover;

static void record(void *env, int64_t b, int64_t e, int part) {
    cover *c = env;
    if (part < 0 || part >= GIM_RT_PARTS || b < 0 || e > MAXN || b >= e || !gim_rt_in_parallel()) {
        atomic_fetch_add(&c->bad, 1);
        return;
    }
    atomic_fetch_add(&c->calls[part], 1);
    c->begin[part] = b;
    c->end[part] = e;
    c->who[part] = pthread_self();
    for (int64_t i = b; i < e; i++) {
        atomic_fetch_add(&c->hits[i], 1);
        c->part_of[i] = part;
    }
}

static cover *run(int64_t n) {
    cover *c = calloc(1, sizeof *c);
    gim_rt_parallel_for(n, record, c);
    return c;
}

/* Every iteration exactly once; parts are the fixed cut [t·n/P, (t+1)·n/P). */
static void check_cover(const cover *c, int64_t n) {
    CU_ASSERT_EQUAL(atomic_load(&c->bad), 0);
    int64_t P = gim_rt_parts(n);
    for (int64_t i = 0; i < n; i++) CU_ASSERT_EQUAL_FATAL(atomic_load(&c->hits[i]), 1);
    for (int t = 0; t < P; t++) {
        int64_t b = n * t / P, e = n * (t + 1) / P;
        if (b == e) {
            CU_ASSERT_EQUAL(atomic_load(&c->calls[t]), 0);
            continue;
        }
        CU_ASSERT_EQUAL(atomic_load(&c->calls[t]), 1);
        CU_ASSERT_EQUAL(c->begin[t], b);
        CU_ASSERT_EQUAL(c->end[t], e);
    }
    for (int t = (int)P; t < GIM_RT_PARTS; t++) CU_ASSERT_EQUAL(atomic_load(&c->calls[t]), 0);
}

static void test_parts(void) {
    CU_ASSERT_EQUAL(gim_rt_parts(0), 0);
    CU_ASSERT_EQUAL(gim_rt_parts(-3), 0);
    CU_ASSERT_EQUAL(gim_rt_parts(1), 1);
    CU_ASSERT_EQUAL(gim_rt_parts(5), GIM_RT_PARTS < 5 ? GIM_RT_PARTS : 5);
    CU_ASSERT_EQUAL(gim_rt_parts(1000), GIM_RT_PARTS);
}

static void test_cover_sizes(void) {
    gim_rt_set_threads(2);
    int64_t sizes[] = {0, 1, 2, 3, 7, 8, 9, 100, 1152, MAXN};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        cover *c = run(sizes[k]);
        check_cover(c, sizes[k]);
        free(c);
    }
    CU_ASSERT_FALSE(gim_rt_in_parallel());
}

/* With 2 threads, both take part in a long loop (each part sleeps, so the
 * caller alone cannot finish all parts before the worker wakes). */
static void slow(void *env, int64_t b, int64_t e, int part) {
    record(env, b, e, part);
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void test_two_threads_used(void) {
    gim_rt_set_threads(2);
    cover *c = calloc(1, sizeof *c);
    gim_rt_parallel_for(64, slow, c);
    check_cover(c, 64);
    bool two = false;
    for (int t = 1; t < GIM_RT_PARTS; t++)
        if (!pthread_equal(c->who[t], c->who[0])) two = true;
    CU_ASSERT_TRUE(two);
    free(c);
}

/* One thread: every part runs on the caller, in order. */
static void test_one_thread(void) {
    gim_rt_set_threads(1);
    cover *c = run(100);
    check_cover(c, 100);
    for (int t = 0; t < GIM_RT_PARTS; t++) CU_ASSERT_TRUE(pthread_equal(c->who[t], pthread_self()));
    free(c);
    gim_rt_set_threads(2);
}

/* A loop started from inside a part runs inline, and covers its range. */
static void outer_part(void *env, int64_t b, int64_t e, int part) {
    cover **inner = env;
    (void)e;
    if (b != 0 && part != 0) return;
    cover *c = calloc(1, sizeof *c);
    gim_rt_parallel_for(37, record, c);
    inner[part] = c;
}

static void test_nested(void) {
    gim_rt_set_threads(2);
    cover *inner[GIM_RT_PARTS] = {0};
    gim_rt_parallel_for(16, outer_part, inner);
    CU_ASSERT_PTR_NOT_NULL_FATAL(inner[0]);
    check_cover(inner[0], 37);
    for (int t = 0; t < GIM_RT_PARTS; t++)
        if (inner[0]->calls[t]) CU_ASSERT_TRUE(pthread_equal(inner[0]->who[t], inner[0]->who[0]));
    free(inner[0]);
}

/* Two caller threads at once, many loops each: every loop still covers. */
static atomic_int caller_fail;
static void *caller(void *arg) {
    (void)arg;
    for (int r = 0; r < 200; r++) {
        int64_t n = 1 + (r * 37) % 300;
        cover *c = run(n);
        for (int64_t i = 0; i < n; i++)
            if (atomic_load(&c->hits[i]) != 1) atomic_fetch_add(&caller_fail, 1);
        if (atomic_load(&c->bad)) atomic_fetch_add(&caller_fail, 1);
        free(c);
    }
    return NULL;
}

static void test_concurrent_callers(void) {
    gim_rt_set_threads(2);
    pthread_t a, b;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&a, NULL, caller, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&b, NULL, caller, NULL), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CU_ASSERT_EQUAL(atomic_load(&caller_fail), 0);
}

/* C = A·B through gim_rt_sgemm, large enough to be cut over the pool, in
 * every transpose combination, against a double-precision reference; and the
 * same bits with 1 and 2 threads (the cut depends on the shape alone). */
static void ref_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                     float beta, const float *C0, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k];
                double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            C[i * ldc + j] = (float)(s + beta * C0[i * ldc + j]);
        }
}

static void test_sgemm_cut(void) {
    /* the last two share an operand of more than GIM_RT_SGEMM_SHARED_FLOATS
     * (B, K·N, cut by rows; A, M·K, by columns): two wide parts */
    int shapes[][3] = {{300, 70, 150}, {64, 500, 100}, {257, 255, 64}, {520, 40, 6600}, {40, 520, 6600}};
    for (size_t s = 0; s < 5; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
                float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N);
                float *C0 = malloc(sizeof(float) * (size_t)M * N), *C1 = malloc(sizeof(float) * (size_t)M * N);
                float *C2 = malloc(sizeof(float) * (size_t)M * N), *R = malloc(sizeof(float) * (size_t)M * N);
                uint32_t x = 12345;
                for (int i = 0; i < M * K; i++) A[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
                for (int i = 0; i < K * N; i++) B[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
                for (int i = 0; i < M * N; i++) C0[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f;
                memcpy(C1, C0, sizeof(float) * (size_t)M * N);
                memcpy(C2, C0, sizeof(float) * (size_t)M * N);
                gim_rt_set_threads(2);
                gim_rt_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.5f, C2, ldc);
                gim_rt_set_threads(1);
                gim_rt_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.5f, C1, ldc);
                gim_rt_set_threads(2);
                if ((double)M * N * K < 1e7) {
                    ref_gemm(ta, tb, M, N, K, A, lda, B, ldb, 0.5f, C0, R, ldc);
                } else {   /* the wide shapes: one uncut cblas_sgemm (the double loop takes seconds) */
                    memcpy(R, C0, sizeof(float) * (size_t)M * N);
                    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K,
                                1.0f, A, lda, B, ldb, 0.5f, R, ldc);
                }
                double maxerr = 0;
                for (int i = 0; i < M * N; i++) {
                    double d = C2[i] - R[i];
                    if (d < 0) d = -d;
                    if (d > maxerr) maxerr = d;
                }
                /* |terms| <= 0.25, sums of random sign: float rounding stays far below 1e-3 */
                CU_ASSERT(maxerr < 1e-3);
                CU_ASSERT_EQUAL(memcmp(C1, C2, sizeof(float) * (size_t)M * N), 0);
                free(A), free(B), free(C0), free(C1), free(C2), free(R);
            }
    }
}

/* The parts of a cut product: min(GIM_RT_PARTS, units of GIM_RT_SGEMM_UNIT),
 * but when the operand every part packs again is large, a power of two of
 * parts (at least two), each at least GIM_RT_SGEMM_WIDE rows or columns. */
static void test_sgemm_parts(void) {
    const int64_t W = GIM_RT_SGEMM_WIDE, U = GIM_RT_SGEMM_UNIT;
    int64_t big_k = GIM_RT_SGEMM_SHARED_FLOATS / 64 + 1;   /* K·64 floats shared: more than the limit */
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(300, 70, 150), GIM_RT_PARTS);
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(3 * U, 10, 50), 3);
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(8 * W, 64, big_k), GIM_RT_PARTS);   /* wide enough already */
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(5 * W + 5, 64, big_k), 4);
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(64, 5 * W + 5, big_k), 4);           /* by columns: A shared */
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(3 * W + 5, 64, big_k), 2);
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(W + 100, 64, big_k), 2);
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(W + 100, 64, big_k - 1), GIM_RT_PARTS > 12 ? 12 : GIM_RT_PARTS);
    /* module 1 of models/cpc_audio.gim, a chunk of 1365 positions: dc = dpred W,
     * 1365 x 512 x 6144, W shared; pred = c Wᵀ, A is 1365 x 512 */
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(1365, 512, 6144), 4);
    CU_ASSERT_EQUAL(gim_rt_sgemm_parts(1365, 6144, 512), GIM_RT_PARTS);
}

int main(void) {
    static const gim_test tests[] = {
        {"parts of n", test_parts},
        {"fixed cut covers every n", test_cover_sizes},
        {"two threads take part", test_two_threads_used},
        {"one thread runs inline", test_one_thread},
        {"nested loop runs inline", test_nested},
        {"concurrent callers", test_concurrent_callers},
        {"sgemm cut over the pool", test_sgemm_cut},
        {"sgemm parts: wide when the shared operand is large", test_sgemm_parts},
        {NULL, NULL},
    };
    return gim_run_suite("rt_pool", tests);
}
