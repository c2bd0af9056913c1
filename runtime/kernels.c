/* Kernels generated code calls by name: im2col/col2im for convolutions, the
 * SGEMM wrapper, and the symbol table the JIT registers them from. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "gim_runtime.h"
#include "rt_internal.h"

/* The output columns ow whose input column iw = ow*sw - pw + kj lies in
 * [0, W): ow in [*lo, *hi). Padding is then handled by two memsets per row
 * and the valid run is a plain (often unit-stride) copy, with no per-element
 * bounds test. */
static void valid_range(int64_t W, int64_t Wo, int64_t sw, int64_t pw, int64_t kj, int64_t *lo,
                        int64_t *hi) {
    int64_t a = pw - kj;              /* need ow*sw >= a */
    int64_t l = a <= 0 ? 0 : (a + sw - 1) / sw;
    int64_t b = W + pw - kj;          /* need ow*sw < b */
    int64_t h = b <= 0 ? 0 : (b + sw - 1) / sw;
    if (h > Wo) h = Wo;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* Valid ranges for every kernel offset of one axis, computed once per call
 * (they hold two divisions each, too slow to redo per row). Kernels wider
 * than RT_MAX_K fall back to computing per row. */
#define RT_MAX_K 32

/* cols[(c*kh + ki)*kw + kj][oh*Wo + ow] = x[c][oh*sh - ph + ki][ow*sw - pw + kj],
 * zero where the input index falls in the padding. Rows are written as a
 * zero run, a copy run and a zero run: plain loops for the short runs of
 * small images (a memcpy call costs more than the 2-8 floats such a run
 * holds), memcpy for long ones. */
void gim_rt_im2col(const float *x, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                   int64_t sh, int64_t sw, int64_t ph, int64_t pw, float *cols) {
    int64_t Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1;
    if (H + 2 * ph < kh || W + 2 * pw < kw || Ho <= 0 || Wo <= 0) return;
    int64_t wlo[RT_MAX_K], whi[RT_MAX_K], hlo[RT_MAX_K], hhi[RT_MAX_K];
    for (int64_t k = 0; k < kw && k < RT_MAX_K; k++) valid_range(W, Wo, sw, pw, k, &wlo[k], &whi[k]);
    for (int64_t k = 0; k < kh && k < RT_MAX_K; k++) valid_range(H, Ho, sh, ph, k, &hlo[k], &hhi[k]);
    const int64_t P = Ho * Wo;
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int64_t ki = 0; ki < kh; ki++) {
            int64_t ohlo, ohhi;
            if (ki < RT_MAX_K) { ohlo = hlo[ki]; ohhi = hhi[ki]; }
            else valid_range(H, Ho, sh, ph, ki, &ohlo, &ohhi);
            for (int64_t kj = 0; kj < kw; kj++) {
                float *restrict row = cols + ((c * kh + ki) * kw + kj) * P;
                int64_t lo, hi;
                if (kj < RT_MAX_K) { lo = wlo[kj]; hi = whi[kj]; }
                else valid_range(W, Wo, sw, pw, kj, &lo, &hi);
                for (int64_t i = 0; i < ohlo * Wo; i++) row[i] = 0.0f;
                for (int64_t oh = ohlo; oh < ohhi; oh++) {
                    float *restrict dst = row + oh * Wo;
                    /* src[ow*sw] is x[c][ih][iw] */
                    const float *restrict src = xc + (oh * sh - ph + ki) * W - pw + kj;
                    for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                    if (sw == 1 && hi - lo >= 16)
                        memcpy(dst + lo, src + lo, sizeof(float) * (size_t)(hi - lo));
                    else if (sw == 1)
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow];
                    else
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * sw];
                    for (int64_t ow = hi; ow < Wo; ow++) dst[ow] = 0.0f;
                }
                for (int64_t i = ohhi * Wo; i < P; i++) row[i] = 0.0f;
            }
        }
    }
}

/* The adjoint of im2col: every column entry is added back to the input
 * element it was copied from; entries that came from padding are dropped. */
void gim_rt_col2im(const float *cols, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                   int64_t sh, int64_t sw, int64_t ph, int64_t pw, float *dx) {
    int64_t Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1;
    if (H + 2 * ph < kh || W + 2 * pw < kw || Ho <= 0 || Wo <= 0) return;
    int64_t wlo[RT_MAX_K], whi[RT_MAX_K], hlo[RT_MAX_K], hhi[RT_MAX_K];
    for (int64_t k = 0; k < kw && k < RT_MAX_K; k++) valid_range(W, Wo, sw, pw, k, &wlo[k], &whi[k]);
    for (int64_t k = 0; k < kh && k < RT_MAX_K; k++) valid_range(H, Ho, sh, ph, k, &hlo[k], &hhi[k]);
    const int64_t P = Ho * Wo;
    for (int64_t c = 0; c < C; c++) {
        float *dc = dx + c * H * W;
        for (int64_t ki = 0; ki < kh; ki++) {
            int64_t ohlo, ohhi;
            if (ki < RT_MAX_K) { ohlo = hlo[ki]; ohhi = hhi[ki]; }
            else valid_range(H, Ho, sh, ph, ki, &ohlo, &ohhi);
            for (int64_t kj = 0; kj < kw; kj++) {
                const float *restrict row = cols + ((c * kh + ki) * kw + kj) * P;
                int64_t lo, hi;
                if (kj < RT_MAX_K) { lo = wlo[kj]; hi = whi[kj]; }
                else valid_range(W, Wo, sw, pw, kj, &lo, &hi);
                for (int64_t oh = ohlo; oh < ohhi; oh++) {
                    const float *restrict src = row + oh * Wo;
                    float *restrict dst = dc + (oh * sh - ph + ki) * W - pw + kj;
                    if (sw == 1)
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow] += src[ow];
                    else
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow * sw] += src[ow];
                }
            }
        }
    }
}

static void sgemm1(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                   float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

/* A product cut over the pool: blocks of the rows of C (by_rows) or of its
 * columns, block t being the pool's part t of the cut dimension. */
typedef struct sgemm_job {
    int ta, tb, by_rows;
    int64_t M, N, K, lda, ldb, ldc, unit;
    float alpha, beta;
    const float *A, *B;
    float *C;
} sgemm_job;

static void sgemm_part(void *env, int64_t begin, int64_t end, int part) {
    (void)part;
    const sgemm_job *j = env;
    int64_t b = begin * j->unit, e = end * j->unit;
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

/* Products of at least SGEMM_SPLIT_FLOPS outside a parallel loop are cut into
 * blocks of SGEMM_UNIT rows or columns (the larger dimension) over the pool
 * (OpenBLAS itself runs one thread; see pool.c). The cut is a function of the
 * shape alone, so the result does not depend on the thread count. */
#define SGEMM_SPLIT_FLOPS (1 << 22)
#define SGEMM_UNIT 32

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
                   .lda = lda, .ldb = ldb, .ldc = ldc, .unit = SGEMM_UNIT, .alpha = alpha,
                   .beta = beta, .A = A, .B = B, .C = C};
    gim_rt_parallel_for((big + SGEMM_UNIT - 1) / SGEMM_UNIT, sgemm_part, &j);
}

/* Every symbol generated code may call. Registering their addresses with the
 * JIT as absolute symbols means a call resolves even when the linker dropped
 * a library no C code called directly (Debian links --as-needed). */
#define RT_SYMBOLS(X)                                                                        \
    X(gim_rt_rand_below) X(gim_rt_rand_u64) X(gim_rt_rand_uniform) X(gim_rt_im2col)          \
    X(gim_rt_col2im) X(gim_rt_sgemm) X(gim_rt_parallel_for) X(cblas_sgemm) X(cblas_sgemv) X(cblas_saxpy)            \
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
