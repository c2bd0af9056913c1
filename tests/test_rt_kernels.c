/* im2col/col2im against a direct definition, their adjointness, convolution
 * through im2col + SGEMM against a nested-loop convolution, SGEMM
 * transposes, and the JIT symbol table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gim_runtime.h"
#include "gim_util.h"
#include "testutil.h"

typedef struct geom { int64_t C, H, W, kh, kw, sh, sw, ph, pw; } geom;

static const geom geoms[] = {
    {1, 5, 5, 3, 3, 1, 1, 0, 0},  {2, 6, 7, 3, 3, 1, 1, 1, 1},  {3, 8, 8, 3, 3, 2, 2, 1, 1},
    {2, 7, 9, 5, 3, 2, 3, 2, 1},  {1, 4, 4, 1, 1, 1, 1, 0, 0},  {2, 5, 6, 4, 2, 3, 1, 0, 2},
    {1, 3, 3, 3, 3, 1, 1, 2, 2},  {4, 9, 9, 3, 3, 2, 2, 0, 0},  {1, 2, 2, 3, 3, 1, 1, 1, 1},
    {3, 10, 6, 2, 4, 1, 2, 1, 3},
    {2, 5, 40, 3, 3, 1, 1, 1, 1},   /* long rows (the memcpy path) */
    {1, 3, 41, 1, 35, 1, 1, 0, 2},  /* a kernel wider than the precomputed ranges */
    {1, 36, 3, 34, 2, 1, 1, 1, 0},  /* and taller */
};

static int64_t out_h(const geom *g) { return (g->H + 2 * g->ph - g->kh) / g->sh + 1; }
static int64_t out_w(const geom *g) { return (g->W + 2 * g->pw - g->kw) / g->sw + 1; }

/* The definition, one element at a time with explicit bounds tests. */
static float naive_col(const float *x, const geom *g, int64_t r, int64_t p) {
    int64_t Wo = out_w(g);
    int64_t c = r / (g->kh * g->kw), ki = r / g->kw % g->kh, kj = r % g->kw;
    int64_t oh = p / Wo, ow = p % Wo;
    int64_t ih = oh * g->sh - g->ph + ki, iw = ow * g->sw - g->pw + kj;
    if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) return 0.0f;
    return x[(c * g->H + ih) * g->W + iw];
}

static void test_im2col_definition(void) {
    for (size_t t = 0; t < sizeof geoms / sizeof geoms[0]; t++) {
        const geom *g = &geoms[t];
        int64_t rows = g->C * g->kh * g->kw, P = out_h(g) * out_w(g);
        float *x = gim_xmalloc(sizeof(float) * (size_t)(g->C * g->H * g->W));
        float *cols = gim_xmalloc(sizeof(float) * (size_t)(rows * P));
        gim_test_fill(x, (size_t)(g->C * g->H * g->W), (unsigned)t + 1, -1, 1);
        for (int64_t i = 0; i < rows * P; i++) cols[i] = 12345.0f;   /* every entry must be written */
        gim_rt_im2col(x, g->C, g->H, g->W, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, cols);
        int bad = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t p = 0; p < P; p++) bad += cols[r * P + p] != naive_col(x, g, r, p);
        CU_ASSERT_EQUAL(bad, 0);
        gim_free(x);
        gim_free(cols);
    }
}

/* <im2col(x), y> == <x, col2im(y)> for random x, y (float64 sums). Also
 * col2im accumulates: dx starts non-zero and keeps its value. */
static void test_adjoint(void) {
    for (size_t t = 0; t < sizeof geoms / sizeof geoms[0]; t++) {
        const geom *g = &geoms[t];
        int64_t nx = g->C * g->H * g->W, nc = g->C * g->kh * g->kw * out_h(g) * out_w(g);
        float *x = gim_xmalloc(sizeof(float) * (size_t)nx), *dx = gim_xmalloc(sizeof(float) * (size_t)nx);
        float *y = gim_xmalloc(sizeof(float) * (size_t)nc), *cols = gim_xmalloc(sizeof(float) * (size_t)nc);
        gim_test_fill(x, (size_t)nx, 100 + (unsigned)t, -1, 1);
        gim_test_fill(y, (size_t)nc, 200 + (unsigned)t, -1, 1);
        gim_rt_im2col(x, g->C, g->H, g->W, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, cols);
        for (int64_t i = 0; i < nx; i++) dx[i] = 0.5f;
        gim_rt_col2im(y, g->C, g->H, g->W, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, dx);
        double lhs = 0, rhs = 0, scale = 0;
        for (int64_t i = 0; i < nc; i++) { lhs += (double)cols[i] * y[i]; scale += fabs((double)cols[i] * y[i]); }
        for (int64_t i = 0; i < nx; i++) rhs += (double)x[i] * (dx[i] - 0.5);
        CU_ASSERT(fabs(lhs - rhs) <= 1e-5 * (scale + 1));
        gim_free(x); gim_free(dx); gim_free(y); gim_free(cols);
    }
}

/* PyTorch's conv2d (cross-correlation, zero padding) as nested loops. */
static void naive_conv(const float *x, const float *w, const geom *g, int64_t Co, double *out) {
    int64_t Ho = out_h(g), Wo = out_w(g);
    for (int64_t o = 0; o < Co; o++)
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                double s = 0;
                for (int64_t c = 0; c < g->C; c++)
                    for (int64_t ki = 0; ki < g->kh; ki++)
                        for (int64_t kj = 0; kj < g->kw; kj++) {
                            int64_t ih = oh * g->sh - g->ph + ki, iw = ow * g->sw - g->pw + kj;
                            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) continue;
                            s += (double)x[(c * g->H + ih) * g->W + iw] *
                                 w[((o * g->C + c) * g->kh + ki) * g->kw + kj];
                        }
                out[(o * Ho + oh) * Wo + ow] = s;
            }
}

static void test_conv_via_gemm(void) {
    const int64_t Co = 5;
    for (size_t t = 0; t < sizeof geoms / sizeof geoms[0]; t++) {
        const geom *g = &geoms[t];
        int64_t K = g->C * g->kh * g->kw, P = out_h(g) * out_w(g);
        float *x = gim_xmalloc(sizeof(float) * (size_t)(g->C * g->H * g->W));
        float *w = gim_xmalloc(sizeof(float) * (size_t)(Co * K));
        float *cols = gim_xmalloc(sizeof(float) * (size_t)(K * P));
        float *y = gim_xmalloc(sizeof(float) * (size_t)(Co * P));
        double *ref = gim_xmalloc(sizeof(double) * (size_t)(Co * P));
        gim_test_fill(x, (size_t)(g->C * g->H * g->W), 300 + (unsigned)t, -1, 1);
        gim_test_fill(w, (size_t)(Co * K), 400 + (unsigned)t, -1, 1);
        gim_rt_im2col(x, g->C, g->H, g->W, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, cols);
        /* y [Co, P] = w [Co, K] . cols [K, P] */
        gim_rt_sgemm(0, 0, Co, P, K, 1.0f, w, K, cols, P, 0.0f, y, P);
        naive_conv(x, w, g, Co, ref);
        double worst = 0;
        for (int64_t i = 0; i < Co * P; i++) worst = fmax(worst, fabs(y[i] - ref[i]));
        CU_ASSERT(worst < 1e-5 * (double)K + 1e-6);
        gim_free(x); gim_free(w); gim_free(cols); gim_free(y); gim_free(ref);
    }
}

/* C = alpha op(A) op(B) + beta C for all four transpose combinations, with
 * leading dimensions larger than the logical widths. */
static void test_sgemm_transposes(void) {
    const int64_t M = 7, N = 5, K = 6, pad = 3;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
            int64_t lda = ac + pad, ldb = bc + pad, ldc = N + pad;
            float A[64 * 16], B[64 * 16], Cm[64 * 16];
            gim_test_fill(A, (size_t)(ar * lda), 7 + (unsigned)ta, -1, 1);
            gim_test_fill(B, (size_t)(br * ldb), 9 + (unsigned)tb, -1, 1);
            gim_test_fill(Cm, (size_t)(M * ldc), 11, -1, 1);
            double ref[7][5];
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    double s = 0;
                    for (int64_t k = 0; k < K; k++)
                        s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) *
                             (tb ? B[j * ldb + k] : B[k * ldb + j]);
                    ref[i][j] = 0.5 * s - 2.0 * Cm[i * ldc + j];
                }
            gim_rt_sgemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, -2.0f, Cm, ldc);
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) CU_ASSERT(fabs(Cm[i * ldc + j] - ref[i][j]) < 1e-5);
        }
}

/* A kernel larger than the padded input produces no columns and writes nothing. */
static void test_empty_output(void) {
    float x[4] = {1, 2, 3, 4}, cols[4] = {7, 7, 7, 7}, dx[4] = {0};
    gim_rt_im2col(x, 1, 2, 2, 5, 5, 1, 1, 1, 1, cols);
    gim_rt_col2im(cols, 1, 2, 2, 5, 5, 1, 1, 1, 1, dx);
    for (int i = 0; i < 4; i++) { CU_ASSERT_EQUAL(cols[i], 7.0f); CU_ASSERT_EQUAL(dx[i], 0.0f); }
}

static void test_symbols(void) {
    const char *const *names;
    void *const *addrs;
    int n = gim_rt_symbols(&names, &addrs);
    CU_ASSERT(n >= 6);
    int found = 0;
    for (int i = 0; i < n; i++) {
        CU_ASSERT_PTR_NOT_NULL(names[i]);
        CU_ASSERT_PTR_NOT_NULL(addrs[i]);
        for (int j = 0; j < i; j++) CU_ASSERT(strcmp(names[i], names[j]) != 0);
        if (!strcmp(names[i], "gim_rt_sgemm")) found += addrs[i] == (void *)&gim_rt_sgemm;
        if (!strcmp(names[i], "gim_rt_rand_below")) found += addrs[i] == (void *)&gim_rt_rand_below;
        if (!strcmp(names[i], "gim_rt_im2col")) found += addrs[i] == (void *)&gim_rt_im2col;
        if (!strcmp(names[i], "gim_rt_col2im")) found += addrs[i] == (void *)&gim_rt_col2im;
        if (!strcmp(names[i], "cblas_sgemm")) found++;
        if (!strcmp(names[i], "expf")) found += addrs[i] == (void *)&expf;
    }
    CU_ASSERT_EQUAL(found, 6);
}

int main(void) {
    static const gim_test tests[] = {
        {"im2col matches the definition", test_im2col_definition},
        {"col2im is the adjoint of im2col", test_adjoint},
        {"conv through im2col + sgemm = nested loops", test_conv_via_gemm},
        {"sgemm transposes and leading dims", test_sgemm_transposes},
        {"kernel larger than input", test_empty_output},
        {"symbol table", test_symbols},
        {NULL, NULL},
    };
    return gim_run_suite("rt_kernels", tests);
}
