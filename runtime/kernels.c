/* Kernels generated code calls by name: the SGEMM wrapper (cut over the
 * thread pool), and the symbol table the JIT registers them from.
 * Convolutions' im2col and col2im are generated code (compiler/cg_conv.c),
 * specialised to each layer's shape. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "gim_runtime.h"
#include "rt_internal.h"

static void sgemm1(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                   float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

/* A product cut over the pool: blocks of the rows of C (by_rows) or of its
 * columns. The cut dimension is `units` units of GIM_RT_SGEMM_UNIT; item t of
 * the loop over `parts` items is the units [t·units/parts, (t+1)·units/parts). */
typedef struct sgemm_job {
    int ta, tb, by_rows;
    int64_t M, N, K, lda, ldb, ldc, units, parts;
    float alpha, beta;
    const float *A, *B;
    float *C;
} sgemm_job;

static void sgemm_part(void *env, int64_t begin, int64_t end, int part) {
    (void)part;
    const sgemm_job *j = env;
    int64_t b = begin * j->units / j->parts * GIM_RT_SGEMM_UNIT;
    int64_t e = end * j->units / j->parts * GIM_RT_SGEMM_UNIT;
    if (j->by_rows) {
        if (e > j->M) e = j->M;
        const float *A = j->ta ? j->A + b : j->A + b * j->lda;
        sgemm1(j->ta, j->tb, e - b, j->N, j->K, j->alpha, A, j->lda, j->B, j->ldb, j->beta,
               j->C + b * j->ldc, j->ldc);
    } else {
        if (e > j->N) e = j->N;
        const float *B = j->tb ? j->B + b * j->ldb : j->B + b;
        sgemm1(j->ta, j->tb, j->M, e - b, j->K, j->alpha, j->A, j->lda, B, j->ldb, j->beta,
               j->C + b, j->ldc);
    }
}

/* Products of at least GIM_RT_SGEMM_SPLIT_FLOPS outside a parallel loop are
 * cut into blocks of whole GIM_RT_SGEMM_UNIT rows or columns (the larger
 * dimension) over the pool (OpenBLAS itself runs one thread; see pool.c).
 * The cut is a function of the shape alone, so the result does not depend on
 * the thread count. */
#define SGEMM_SPLIT_FLOPS GIM_RT_SGEMM_SPLIT_FLOPS
#define SGEMM_UNIT GIM_RT_SGEMM_UNIT

int64_t gim_rt_sgemm_parts(int64_t M, int64_t N, int64_t K) {
    int64_t big = M >= N ? M : N, units = (big + SGEMM_UNIT - 1) / SGEMM_UNIT;
    int64_t parts = units < GIM_RT_PARTS ? units : GIM_RT_PARTS;
    /* Every block packs the operand the blocks share (all of B when cut by
     * rows, all of A by columns) again; when that operand outgrows the
     * cache, the copies cost as much as a narrow block's arithmetic. Then
     * the blocks are at least GIM_RT_SGEMM_WIDE wide, and a power of two of
     * them (2, 4, ...: even shares for 2 or 4 threads). */
    int64_t shared = M >= N ? K * N : M * K;
    if (shared > GIM_RT_SGEMM_SHARED_FLOATS) {
        int64_t cap = 2;
        for (int64_t v = 4; v <= GIM_RT_PARTS; v *= 2)
            if (big / GIM_RT_SGEMM_WIDE >= v) cap = v;
        if (parts > cap) parts = cap;
    }
    return parts;
}

void gim_rt_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                  float *C, int64_t ldc) {
    double flops = 2.0 * (double)M * (double)N * (double)K;
    int64_t big = M >= N ? M : N;
    if (flops < SGEMM_SPLIT_FLOPS || big < 2 * SGEMM_UNIT || gim_rt_in_parallel()) {
        sgemm1(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    sgemm_job j = {.ta = trans_a, .tb = trans_b, .by_rows = M >= N, .M = M, .N = N, .K = K,
                   .lda = lda, .ldb = ldb, .ldc = ldc, .units = (big + SGEMM_UNIT - 1) / SGEMM_UNIT,
                   .parts = gim_rt_sgemm_parts(M, N, K), .alpha = alpha, .beta = beta,
                   .A = A, .B = B, .C = C};
    gim_rt_parallel_for(j.parts, sgemm_part, &j);
}

/* Every symbol generated code may call. Registering their addresses with the
 * JIT as absolute symbols means a call resolves even when the linker dropped
 * a library no C code called directly (Debian links --as-needed). */
#define RT_SYMBOLS(X)                                                                        \
    X(gim_rt_rand_below) X(gim_rt_rand_u64) X(gim_rt_rand_uniform)          \
    X(gim_rt_sgemm) X(gim_rt_parallel_for) X(cblas_sgemm) X(cblas_sgemv) X(cblas_saxpy)            \
    X(cblas_sdot) X(expf) X(logf) X(tanhf) X(sqrtf) X(powf) X(fmaxf) X(fminf) X(log1pf)      \
    X(expm1f) X(exp) X(log) X(pow) X(sqrt) X(tanh) X(memset) X(memcpy) X(memmove)

#define RT_NAME(f) #f,
#define RT_ADDR(f) (void *)&f,
static const char *const rt_names[] = {RT_SYMBOLS(RT_NAME)};
static void *const rt_addrs[] = {RT_SYMBOLS(RT_ADDR)};

int gim_rt_symbols(const char *const **names, void *const **addrs) {
    *names = rt_names;
    *addrs = rt_addrs;
    return (int)(sizeof rt_names / sizeof rt_names[0]);
}
