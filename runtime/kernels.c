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

/* cols[(c*kh + ki)*kw + kj][oh*Wo + ow] = x[c][oh*sh - ph + ki][ow*sw - pw + kj],
 * zero where the input index falls in the padding. */
void gim_rt_im2col(const float *x, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                   int64_t sh, int64_t sw, int64_t ph, int64_t pw, float *cols) {
    int64_t Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1;
    if (H + 2 * ph < kh || W + 2 * pw < kw || Ho <= 0 || Wo <= 0) return;
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (int64_t ki = 0; ki < kh; ki++) {
            for (int64_t kj = 0; kj < kw; kj++) {
                float *row = cols + ((c * kh + ki) * kw + kj) * Ho * Wo;
                int64_t lo, hi;
                valid_range(W, Wo, sw, pw, kj, &lo, &hi);
                for (int64_t oh = 0; oh < Ho; oh++) {
                    float *dst = row + oh * Wo;
                    int64_t ih = oh * sh - ph + ki;
                    if (ih < 0 || ih >= H) {
                        memset(dst, 0, sizeof(float) * (size_t)Wo);
                        continue;
                    }
                    if (lo > 0) memset(dst, 0, sizeof(float) * (size_t)lo);
                    const float *src = xc + ih * W - pw + kj;   /* src[ow*sw] is x[ih][iw] */
                    if (sw == 1) {
                        if (hi > lo) memcpy(dst + lo, src + lo, sizeof(float) * (size_t)(hi - lo));
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * sw];
                    }
                    if (hi < Wo) memset(dst + hi, 0, sizeof(float) * (size_t)(Wo - hi));
                }
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
    for (int64_t c = 0; c < C; c++) {
        float *dc = dx + c * H * W;
        for (int64_t ki = 0; ki < kh; ki++) {
            for (int64_t kj = 0; kj < kw; kj++) {
                const float *row = cols + ((c * kh + ki) * kw + kj) * Ho * Wo;
                int64_t lo, hi;
                valid_range(W, Wo, sw, pw, kj, &lo, &hi);
                for (int64_t oh = 0; oh < Ho; oh++) {
                    int64_t ih = oh * sh - ph + ki;
                    if (ih < 0 || ih >= H) continue;
                    const float *src = row + oh * Wo;
                    float *dst = dc + ih * W - pw + kj;
                    if (sw == 1) {
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow] += src[ow];
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow * sw] += src[ow];
                    }
                }
            }
        }
    }
}

void gim_rt_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                  float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

/* Every symbol generated code may call. Registering their addresses with the
 * JIT as absolute symbols means a call resolves even when the linker dropped
 * a library no C code called directly (Debian links --as-needed). */
#define RT_SYMBOLS(X)                                                                        \
    X(gim_rt_rand_below) X(gim_rt_rand_u64) X(gim_rt_rand_uniform) X(gim_rt_im2col)          \
    X(gim_rt_col2im) X(gim_rt_sgemm) X(cblas_sgemm) X(cblas_sgemv) X(cblas_saxpy)            \
    X(cblas_sdot) X(expf) X(logf) X(tanhf) X(sqrtf) X(powf) X(fmaxf) X(fminf) X(log1pf)      \
    X(expm1f) X(exp) X(log) X(memset) X(memcpy) X(memmove)

#define RT_NAME(f) #f,
#define RT_ADDR(f) (void *)&f,
static const char *const rt_names[] = {RT_SYMBOLS(RT_NAME)};
static void *const rt_addrs[] = {RT_SYMBOLS(RT_ADDR)};

int gim_rt_symbols(const char *const **names, void *const **addrs) {
    *names = rt_names;
    *addrs = rt_addrs;
    return (int)(sizeof rt_names / sizeof rt_names[0]);
}
