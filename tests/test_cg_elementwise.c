/* Generated code of the elementwise family against plain-C references
 * (ref_elementwise.c) on odd sizes, and every backward op against central
 * finite differences of the reference forward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gim_runtime.h"
#include "harness_jit.h"
#include "ref_elementwise.h"
#include "testutil.h"

static const int64_t sizes[] = {1, 7, 17, 31, 1003};
#define N_SIZES (int)(sizeof sizes / sizeof sizes[0])

/* Compiles op(in...) alone and runs it; returns the output (heap). */
static float *run_op(gim_op op, gim_shape out, int n_in, const gim_shape *in_shapes, const float *const *in_data,
                     int n_attr, const double *attr) {
    hj_graph *h = hj_new(1);
    gim_node *in[GIM_MAX_IN];
    for (int i = 0; i < n_in; i++) in[i] = hj_input(h, in_shapes[i]);
    gim_node *y = hj_op(h, op, out, n_in, in, n_attr, attr);
    float *res = calloc((size_t)gim_shape_numel(&out) + 1, sizeof *res);
    /* an element the generated code does not write stays NaN */
    for (int64_t i = 0; i < gim_shape_numel(&out); i++) res[i] = NAN;
    if (hj_compile(h, HJ_OUT(y)) != 0) {
        CU_FAIL("compile failed");
        for (int64_t i = 0; i < gim_shape_numel(&out); i++) res[i] = NAN;
    } else {
        hj_run(h, (const void *const *)in_data, (float *[]){res});
    }
    hj_free(h);
    return res;
}

static double *to_double(const float *x, int64_t n) {
    double *d = malloc((size_t)(n + 1) * sizeof *d);
    for (int64_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* |got - want| <= atol + rtol |want| everywhere; reports the first miss. */
static int close_all(const char *what, const float *got, const double *want, int64_t n, double atol, double rtol) {
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        if (!(err <= atol + rtol * fabs(want[i]))) {
            fprintf(stderr, "\n%s: element %lld of %lld: got %.9g, want %.9g\n", what, (long long)i, (long long)n,
                    got[i], want[i]);
            return 0;
        }
    }
    return 1;
}

/* ---- forward ops against the references ---- */

static void check_unary(gim_op op, double attr, double atol, double rtol) {
    for (int s = 0; s < N_SIZES; s++) {
        int64_t n = sizes[s];
        float *x = malloc((size_t)n * sizeof *x);
        gim_test_fill(x, (size_t)n, 11 + (unsigned)s, -6, 6);
        gim_shape sh = HJ_SHAPE(n);
        float *y = run_op(op, sh, 1, &sh, (const float *[]){x}, 1, &attr);
        double *xd = to_double(x, n), *want = malloc((size_t)n * sizeof *want);
        ref_ew_unary(op, attr, xd, want, n);
        CU_ASSERT(close_all(gim_op_name(op), y, want, n, atol, rtol));
        free(x), free(y), free(xd), free(want);
    }
}

static void test_relu(void) { check_unary(GIM_OP_RELU, 0, 0, 0); }
static void test_tanh(void) { check_unary(GIM_OP_TANH, 0, 1e-7, 4e-7); }
static void test_sigmoid(void) { check_unary(GIM_OP_SIGMOID, 0, 1e-7, 4e-7); }
static void test_leaky_relu(void) { check_unary(GIM_OP_LEAKY_RELU, 0.07, 0, 1e-7); }
static void test_scale(void) { check_unary(GIM_OP_SCALE, -2.5, 0, 1e-7); }
static void test_shift(void) { check_unary(GIM_OP_SHIFT, 0.75, 1e-6, 1e-7); }

/* tanh near 0 and far out: relative accuracy where tanh is tiny, ±1 where it saturates. */
static void test_tanh_range(void) {
    float x[] = {0.0f, 1e-6f, -1e-4f, 0.01f, 0.3999f, 0.4f, 0.4001f, -0.7f, 3.0f, 9.0f, -20.0f, 100.0f, -1e30f};
    int64_t n = (int64_t)(sizeof x / sizeof x[0]);
    gim_shape sh = HJ_SHAPE(n);
    float *y = run_op(GIM_OP_TANH, sh, 1, &sh, (const float *[]){x}, 0, NULL);
    double *xd = to_double(x, n), *want = malloc((size_t)n * sizeof *want);
    ref_ew_unary(GIM_OP_TANH, 0, xd, want, n);
    CU_ASSERT(close_all("tanh range", y, want, n, 1e-30, 4e-7));
    free(y), free(xd), free(want);
}

/* cg_exp through sigmoid: for x < −17, σ(x) = 1/(1 + e^{−x}) = e^x to 4e-8,
 * so σ checks e^{−x} over the range of normal results (x in [−87, −17]),
 * the last finite e^88 (σ subnormal), overflow to inf (σ = 0), infinities
 * and NaN. */
static void test_exp_range(void) {
    enum { M = 4000 };
    static float x[M + 8];
    int64_t n = 0;
    for (int i = 0; i < M; i++) x[n++] = -17.0f - 70.0f * (float)i / M;   /* [-87, -17]: normal results */
    float extra[] = {-88.0f, -95.5f, -103.0f, -104.5f, -200.0f, -INFINITY, INFINITY, NAN};
    for (int i = 0; i < 8; i++) x[n++] = extra[i];
    gim_shape sh = HJ_SHAPE(n);
    float *y = run_op(GIM_OP_SIGMOID, sh, 1, &sh, (const float *[]){x}, 0, NULL);
    double *xd = to_double(x, M), *want = malloc((size_t)M * sizeof *want);
    ref_ew_unary(GIM_OP_SIGMOID, 0, xd, want, M);
    CU_ASSERT(close_all("exp via sigmoid", y, want, M, 0, 4e-7));
    CU_ASSERT_DOUBLE_EQUAL(y[M + 0], 1.0 / (1.0 + exp(88.0)), 2e-44);      /* subnormal */
    CU_ASSERT_EQUAL(y[M + 1], 0.0f);                                      /* e^95.5 = inf in float */
    CU_ASSERT_EQUAL(y[M + 2], 0.0f);
    CU_ASSERT_EQUAL(y[M + 3], 0.0f);
    CU_ASSERT_EQUAL(y[M + 4], 0.0f);
    CU_ASSERT_EQUAL(y[M + 5], 0.0f);
    CU_ASSERT_EQUAL(y[M + 6], 1.0f);
    CU_ASSERT(isnan(y[M + 7]));
    free(y), free(xd), free(want);
}

static void check_binary(gim_op op, double attr, double rtol) {
    for (int s = 0; s < N_SIZES; s++) {
        int64_t n = sizes[s];
        float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
        gim_test_fill(a, (size_t)n, 3 + (unsigned)s, -3, 3);
        gim_test_fill(b, (size_t)n, 5 + (unsigned)s, -1, 1);
        gim_shape sh = HJ_SHAPE(n);
        gim_shape shs[2] = {sh, sh};
        float *y = run_op(op, sh, 2, shs, (const float *[]){a, b}, 1, &attr);
        double *ad = to_double(a, n), *bd = to_double(b, n), *want = malloc((size_t)n * sizeof *want);
        ref_ew_binary(op, attr, ad, bd, want, n);
        CU_ASSERT(close_all(gim_op_name(op), y, want, n, 1e-7, rtol));
        free(a), free(b), free(y), free(ad), free(bd), free(want);
    }
}

static void test_add(void) { check_binary(GIM_OP_ADD, 0, 1e-7); }
static void test_sub(void) { check_binary(GIM_OP_SUB, 0, 1e-7); }
static void test_mul(void) { check_binary(GIM_OP_MUL, 0, 1e-7); }

/* ---- activation backward ops against finite differences ----
 * dx = dy · f'(x), with f'(x) ≈ (f(x + h) − f(x − h)) / 2h on the double
 * reference; points within 2h of a kink (relu, leaky_relu at 0) skipped. */
static void check_act_bwd(gim_op fwd, gim_op bwd, double attr, bool takes_x) {
    for (int s = 0; s < N_SIZES; s++) {
        int64_t n = sizes[s];
        float *x = malloc((size_t)n * sizeof *x), *dy = malloc((size_t)n * sizeof *dy);
        float *second = malloc((size_t)n * sizeof *second);
        gim_test_fill(x, (size_t)n, 21 + (unsigned)s, -4, 4);
        gim_test_fill(dy, (size_t)n, 23 + (unsigned)s, -1, 1);
        double *xd = to_double(x, n), *yd = malloc((size_t)n * sizeof *yd);
        ref_ew_unary(fwd, attr, xd, yd, n);
        for (int64_t i = 0; i < n; i++) second[i] = takes_x ? x[i] : (float)yd[i];
        gim_shape sh = HJ_SHAPE(n), shs[2] = {sh, sh};
        float *dx = run_op(bwd, sh, 2, shs, (const float *[]){dy, second}, 1, &attr);
        const double h = 1e-4;
        int ok = 1;
        for (int64_t i = 0; i < n && ok; i++) {
            if (fabs(xd[i]) < 2 * h) continue;
            double xp = xd[i] + h, xm = xd[i] - h, fp, fm;
            ref_ew_unary(fwd, attr, &xp, &fp, 1);
            ref_ew_unary(fwd, attr, &xm, &fm, 1);
            double want = dy[i] * (fp - fm) / (2 * h);
            if (fabs(dx[i] - want) > 1e-5 + 1e-4 * fabs(want)) {
                fprintf(stderr, "\n%s at x=%g: got %g, want %g\n", gim_op_name(bwd), xd[i], dx[i], want);
                ok = 0;
            }
        }
        CU_ASSERT(ok);
        free(x), free(dy), free(second), free(xd), free(yd), free(dx);
    }
}

static void test_relu_bwd(void) { check_act_bwd(GIM_OP_RELU, GIM_OP_RELU_BWD, 0, false); }
static void test_tanh_bwd(void) { check_act_bwd(GIM_OP_TANH, GIM_OP_TANH_BWD, 0, false); }
static void test_sigmoid_bwd(void) { check_act_bwd(GIM_OP_SIGMOID, GIM_OP_SIGMOID_BWD, 0, false); }
static void test_leaky_relu_bwd(void) { check_act_bwd(GIM_OP_LEAKY_RELU, GIM_OP_LEAKY_RELU_BWD, 0.2, true); }

/* ---- reductions ---- */

/* Gradient of L(x) = Σ_o dy_o f(x)_o by central differences of the reference f
 * (linear here, so h = 1 is exact up to rounding). */
typedef void (*lin_fn)(const double *x, double *y, const int64_t *p);
static void fd_grad(lin_fn f, const int64_t *p, int64_t nx, int64_t ny, const double *dy, double *g) {
    double *x = calloc((size_t)nx, sizeof *x), *y = malloc((size_t)ny * sizeof *y);
    for (int64_t j = 0; j < nx; j++) {
        double lp = 0, lm = 0;
        x[j] = 1;
        f(x, y, p);
        for (int64_t o = 0; o < ny; o++) lp += dy[o] * y[o];
        x[j] = -1;
        f(x, y, p);
        for (int64_t o = 0; o < ny; o++) lm += dy[o] * y[o];
        x[j] = 0;
        g[j] = (lp - lm) / 2;
    }
    free(x), free(y);
}

static void f_spatial_mean(const double *x, double *y, const int64_t *p) { ref_spatial_mean(x, y, p[0], p[1]); }
static void f_mean(const double *x, double *y, const int64_t *p) { ref_mean(x, y, p[0], p[1], p[2]); }
static void f_broadcast(const double *x, double *y, const int64_t *p) { ref_broadcast(x, y, p[0], p[1], p[2]); }

static void test_spatial_mean(void) {
    /* x [2, 3, 5, 7] -> [2, 3]; and [1, 1, 1, 1] -> [1, 1] */
    int64_t shapes[2][4] = {{2, 3, 5, 7}, {1, 1, 1, 1}};
    for (int t = 0; t < 2; t++) {
        int64_t *d = shapes[t], outer = d[0] * d[1], hw = d[2] * d[3], n = outer * hw;
        float *x = malloc((size_t)n * sizeof *x);
        gim_test_fill(x, (size_t)n, 31, -2, 2);
        gim_shape xs = hj_shape(4, d);
        float *y = run_op(GIM_OP_SPATIAL_MEAN, HJ_SHAPE(d[0], d[1]), 1, &xs, (const float *[]){x}, 0, NULL);
        double *xd = to_double(x, n), *want = malloc((size_t)outer * sizeof *want);
        ref_spatial_mean(xd, want, outer, hw);
        CU_ASSERT(close_all("spatial_mean", y, want, outer, 1e-6, 1e-6));
        /* backward: dx = ∂(Σ dy·mean)/∂x */
        float *dy = malloc((size_t)outer * sizeof *dy);
        gim_test_fill(dy, (size_t)outer, 33, -1, 1);
        gim_shape dys = HJ_SHAPE(d[0], d[1]);
        float *dx = run_op(GIM_OP_SPATIAL_MEAN_BWD, xs, 1, &dys, (const float *[]){dy}, 0, NULL);
        double *dyd = to_double(dy, outer), *g = malloc((size_t)n * sizeof *g);
        fd_grad(f_spatial_mean, (int64_t[]){outer, hw}, n, outer, dyd, g);
        CU_ASSERT(close_all("spatial_mean_bwd", dx, g, n, 1e-6, 1e-5));
        free(x), free(y), free(xd), free(want), free(dy), free(dx), free(dyd), free(g);
    }
}

/* bias_bwd is the adjoint of broadcasting b along `axis`: db = ∂(Σ dy·bcast(b))/∂b. */
static void test_bias_bwd(void) {
    int64_t d[4] = {2, 5, 3, 7};
    int64_t n = 2 * 5 * 3 * 7;
    float *dy = malloc((size_t)n * sizeof *dy);
    gim_test_fill(dy, (size_t)n, 51, -1, 1);
    double *dyd = to_double(dy, n);
    gim_shape dys = hj_shape(4, d);
    for (int axis = 0; axis < 4; axis++) {
        int64_t outer = 1, inner = 1, len = d[axis];
        for (int i = 0; i < axis; i++) outer *= d[i];
        for (int i = axis + 1; i < 4; i++) inner *= d[i];
        float *db = run_op(GIM_OP_BIAS_BWD, HJ_SHAPE(len), 1, &dys, (const float *[]){dy}, 1, (double[]){axis});
        double *g = malloc((size_t)len * sizeof *g);
        fd_grad(f_broadcast, (int64_t[]){outer, len, inner}, len, n, dyd, g);
        CU_ASSERT(close_all("bias_bwd", db, g, len, 1e-5, 1e-5));
        free(db), free(g);
    }
    free(dy), free(dyd);
}

/* ---- reductions at sizes that run over the thread pool ----
 * From 2^16 floats the reductions cut their rows or channels into blocks
 * over the pool: each output element is still computed by one part in a
 * fixed order, so one thread and two give the same bits. */

/* run_op on one thread and on two; fails unless the outputs are the same bits. */
static float *run_op_threads(gim_op op, gim_shape out, int n_in, const gim_shape *in_shapes,
                             const float *const *in_data, int n_attr, const double *attr) {
    int keep = gim_rt_threads();
    gim_rt_set_threads(1);
    float *one = run_op(op, out, n_in, in_shapes, in_data, n_attr, attr);
    gim_rt_set_threads(2);
    float *two = run_op(op, out, n_in, in_shapes, in_data, n_attr, attr);
    gim_rt_set_threads(keep);
    int64_t n = gim_shape_numel(&out);
    if (memcmp(one, two, (size_t)n * sizeof *one) != 0) {
        fprintf(stderr, "\n%s: one thread and two threads differ\n", gim_op_name(op));
        CU_FAIL("results depend on the thread count");
    }
    free(two);
    return one;
}

static void test_spatial_mean_large(void) {
    /* hw 899 (a few rows per block) and hw 35 (many) */
    int64_t shapes[2][4] = {{3, 37, 29, 31}, {4, 600, 5, 7}};
    for (int t = 0; t < 2; t++) {
        int64_t *d = shapes[t], outer = d[0] * d[1], hw = d[2] * d[3], n = outer * hw;
        float *x = malloc((size_t)n * sizeof *x);
        gim_test_fill(x, (size_t)n, 131 + (unsigned)t, -2, 2);
        gim_shape xs = hj_shape(4, d), ys = HJ_SHAPE(d[0], d[1]);
        float *y = run_op_threads(GIM_OP_SPATIAL_MEAN, ys, 1, &xs, (const float *[]){x}, 0, NULL);
        double *xd = to_double(x, n), *want = malloc((size_t)outer * sizeof *want);
        ref_spatial_mean(xd, want, outer, hw);
        CU_ASSERT(close_all("spatial_mean (large)", y, want, outer, 1e-6, 1e-6));
        float *dy = malloc((size_t)outer * sizeof *dy);
        gim_test_fill(dy, (size_t)outer, 133 + (unsigned)t, -1, 1);
        float *dx = run_op_threads(GIM_OP_SPATIAL_MEAN_BWD, xs, 1, &ys, (const float *[]){dy}, 0, NULL);
        double *g = malloc((size_t)n * sizeof *g);
        for (int64_t i = 0; i < n; i++) g[i] = (double)dy[i / hw] / (double)hw;
        CU_ASSERT(close_all("spatial_mean_bwd (large)", dx, g, n, 1e-7, 1e-6));
        free(x), free(y), free(xd), free(want), free(dy), free(dx), free(g);
    }
}

/* mean and mean_bwd over each axis of x [d0, d1, d2]. Small: run_op, the
 * gradient against finite differences. Large (taking the pool's path):
 * run_op_threads (the same bits on 1 and 2 threads), the gradient against
 * its closed form dy / len (finite differences over 86,000 inputs would be
 * slow). */
static void check_mean(const int64_t d[3], unsigned seed, bool large) {
    int64_t n = d[0] * d[1] * d[2];
    float *x = malloc((size_t)n * sizeof *x);
    gim_test_fill(x, (size_t)n, seed, -2, 2);
    double *xd = to_double(x, n);
    gim_shape xs = hj_shape(3, d);
    for (int axis = 0; axis < 3; axis++) {
        int64_t outer = 1, inner = 1, len = d[axis], od[2];
        for (int i = 0; i < axis; i++) outer *= d[i];
        for (int i = axis + 1; i < 3; i++) inner *= d[i];
        for (int i = 0, k = 0; i < 3; i++)
            if (i != axis) od[k++] = d[i];
        int64_t ny = outer * inner;
        gim_shape ys = hj_shape(2, od);
        const float *xin[] = {x};
        float *y = large ? run_op_threads(GIM_OP_MEAN, ys, 1, &xs, xin, 1, (double[]){axis})
                         : run_op(GIM_OP_MEAN, ys, 1, &xs, xin, 1, (double[]){axis});
        double *want = malloc((size_t)ny * sizeof *want);
        ref_mean(xd, want, outer, len, inner);
        CU_ASSERT(close_all(large ? "mean (large)" : "mean", y, want, ny, 1e-6, 1e-6));
        float *dy = malloc((size_t)ny * sizeof *dy);
        gim_test_fill(dy, (size_t)ny, seed + 2 + (unsigned)axis, -1, 1);
        const float *dyin[] = {dy};
        float *dx = large ? run_op_threads(GIM_OP_MEAN_BWD, xs, 1, &ys, dyin, 1, (double[]){axis})
                          : run_op(GIM_OP_MEAN_BWD, xs, 1, &ys, dyin, 1, (double[]){axis});
        double *g = malloc((size_t)n * sizeof *g);
        if (large) {
            for (int64_t o = 0; o < outer; o++)
                for (int64_t k = 0; k < len; k++)
                    for (int64_t i = 0; i < inner; i++)
                        g[(o * len + k) * inner + i] = (double)dy[o * inner + i] / (double)len;
            CU_ASSERT(close_all("mean_bwd (large)", dx, g, n, 1e-7, 1e-6));
        } else {
            double *dyd = to_double(dy, ny);
            fd_grad(f_mean, (int64_t[]){outer, len, inner}, n, ny, dyd, g);
            CU_ASSERT(close_all("mean_bwd", dx, g, n, 1e-6, 1e-5));
            free(dyd);
        }
        free(y), free(want), free(dy), free(dx), free(g);
    }
    free(x), free(xd);
}

static void test_mean(void) { check_mean((const int64_t[]){3, 5, 17}, 41, false); }

/* [3, 7, 4099]: a row longer than a block (axes 0 and 1 cut it), and rows of
 * one float (axis 2). */
static void test_mean_large(void) { check_mean((const int64_t[]){3, 7, 4099}, 141, true); }

/* Channel blocks over the pool: rows of one float (inner 1, 9000 channels),
 * long rows (inner 4099) with and without outer rows. */
static void test_bias_bwd_large(void) {
    static const struct { int rank; int64_t d[3]; int axis; } cases[] = {
        {2, {20, 9000}, 1}, {3, {3, 9, 4099}, 1}, {3, {37, 41, 53}, 0}, {3, {37, 41, 53}, 2},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int64_t *d = cases[t].d;
        int rank = cases[t].rank, axis = cases[t].axis;
        int64_t outer = 1, inner = 1, len = d[axis], n = 1;
        for (int i = 0; i < rank; i++) n *= d[i];
        for (int i = 0; i < axis; i++) outer *= d[i];
        for (int i = axis + 1; i < rank; i++) inner *= d[i];
        float *dy = malloc((size_t)n * sizeof *dy);
        gim_test_fill(dy, (size_t)n, 151 + (unsigned)t, -1, 1);
        gim_shape dys = hj_shape(rank, d);
        float *db = run_op_threads(GIM_OP_BIAS_BWD, HJ_SHAPE(len), 1, &dys, (const float *[]){dy}, 1, (double[]){axis});
        double *want = calloc((size_t)len, sizeof *want);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t k = 0; k < len; k++)
                for (int64_t i = 0; i < inner; i++) want[k] += dy[(o * len + k) * inner + i];
        /* float sums of outer·inner terms of size <= 1 */
        CU_ASSERT(close_all("bias_bwd (large)", db, want, len, 1e-6 * (double)(outer * inner), 1e-5));
        free(dy), free(db), free(want);
    }
}

static void test_transpose(void) {
    int64_t d[4] = {2, 3, 5, 7};
    int64_t n = 2 * 3 * 5 * 7;
    float *x = malloc((size_t)n * sizeof *x);
    gim_test_fill(x, (size_t)n, 61, -5, 5);
    double *xd = to_double(x, n), *want = malloc((size_t)n * sizeof *want);
    gim_shape xs = hj_shape(4, d);
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) {
            int64_t yd[4] = {d[0], d[1], d[2], d[3]};
            yd[a] = d[b];
            yd[b] = d[a];
            float *y = run_op(GIM_OP_TRANSPOSE, hj_shape(4, yd), 1, &xs, (const float *[]){x}, 2, (double[]){a, b});
            ref_transpose(xd, want, d, 4, a, b);
            CU_ASSERT(close_all("transpose", y, want, n, 0, 0));
            free(y);
        }
    free(x), free(xd), free(want);
}

/* ---- views ---- */

/* relu(reshape(x)), relu(slice(x, 5)) and a slice export: views read their
 * source's memory at the right offset and emit nothing themselves. */
static void test_views(void) {
    hj_graph *h = hj_new(1);
    gim_node *x = hj_input(h, HJ_SHAPE(4, 6));
    gim_node *r = hj_op(h, GIM_OP_RESHAPE, HJ_SHAPE(3, 8), HJ_IN(x), HJ_NOATTR);
    gim_node *y1 = hj_op(h, GIM_OP_RELU, HJ_SHAPE(3, 8), HJ_IN(r), HJ_NOATTR);
    gim_node *t = hj_op(h, GIM_OP_SCALE, HJ_SHAPE(4, 6), HJ_IN(x), HJ_ATTR(2.0));
    gim_node *s = hj_op(h, GIM_OP_SLICE, HJ_SHAPE(2, 5), HJ_IN(t), HJ_ATTR(5));
    gim_node *y2 = hj_op(h, GIM_OP_RELU, HJ_SHAPE(2, 5), HJ_IN(s), HJ_NOATTR);
    gim_node *g = hj_op(h, GIM_OP_GRADIENT_BLOCK, HJ_SHAPE(4, 6), HJ_IN(t), HJ_NOATTR);
    CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(y1, y2, s, g)) == 0);
    float xs[24], o1[24], o2[10], o3[10], o4[24];
    gim_test_fill(xs, 24, 71, -1, 1);
    hj_run(h, (const void *[]){xs}, (float *[]){o1, o2, o3, o4});
    for (int i = 0; i < 24; i++) CU_ASSERT_EQUAL(o1[i], xs[i] > 0 ? xs[i] : 0.0f);
    for (int i = 0; i < 10; i++) {
        float v = 2 * xs[5 + i];
        CU_ASSERT_EQUAL(o2[i], v > 0 ? v : 0.0f);
        CU_ASSERT_EQUAL(o3[i], v);
    }
    for (int i = 0; i < 24; i++) CU_ASSERT_EQUAL(o4[i], 2 * xs[i]);
    hj_free(h);
}

int main(void) {
    static const gim_test tests[] = {
        {"relu", test_relu},
        {"tanh", test_tanh},
        {"tanh accuracy near 0 and saturation", test_tanh_range},
        {"sigmoid", test_sigmoid},
        {"exp over the float range (through sigmoid)", test_exp_range},
        {"leaky_relu", test_leaky_relu},
        {"scale", test_scale},
        {"shift", test_shift},
        {"add", test_add},
        {"sub", test_sub},
        {"mul", test_mul},
        {"relu_bwd vs finite differences", test_relu_bwd},
        {"tanh_bwd vs finite differences", test_tanh_bwd},
        {"sigmoid_bwd vs finite differences", test_sigmoid_bwd},
        {"leaky_relu_bwd vs finite differences", test_leaky_relu_bwd},
        {"spatial_mean and its backward", test_spatial_mean},
        {"mean over each axis and its backward", test_mean},
        {"bias_bwd over each axis", test_bias_bwd},
        {"spatial_mean and its backward over the pool", test_spatial_mean_large},
        {"mean and its backward over the pool", test_mean_large},
        {"bias_bwd over the pool", test_bias_bwd_large},
        {"transpose of every axis pair", test_transpose},
        {"views alias their source", test_views},
        {NULL, NULL},
    };
    return gim_run_suite("cg_elementwise", tests);
}
