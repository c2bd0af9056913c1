/* Conv-family code generators (conv2d, conv1d, linear, patches, pools and
 * their backward ops): the JIT-compiled generated code against the plain-C
 * references of ref_conv.c on random inputs with odd shapes; every backward
 * op against central finite differences, in double, of the reference
 * forward: the gradient of f = Σ dy ⊙ op(x, w) with respect to x and w.
 *
 * Large cases (the batched-GEMM chunking, the one-image and 1×1 paths) are
 * checked through directional derivatives along random directions, which
 * test the whole gradient with two reference evaluations each.
 *
 * Most cases run through a bare JIT in this file (the op generators alone,
 * scratch from cg_conv.c's fallback); test_conv_planned runs them through the
 * module code generator (tests/harness_jit.h), with the planner's scratch.
 *
 * `test_op_conv --bench [N]` times the canonical model's six convolutions (B =
 * 1152 patches of 8x8), and smaller 2x2 and 1x1 layers, under several
 * lowering policies (N: layer N alone); with
 * OPENBLAS_NUM_THREADS=1 it reports thread CPU time, which the shared
 * machine's load disturbs little. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cg.h"
#include "gim_runtime.h"
#include "gim_util.h"
#include "graph.h"
#include "harness_jit.h"
#include "harness_op.h"
#include "ref_conv.h"
#include "testutil.h"

/* ---- a minimal JIT: one function computing the given nodes --------------------- */

/* The pass pipeline: O0 keeps the many small test compilations quick; the
 * lowering-path tests, the planned-scratch tests (through the harness) and
 * the benchmark use O2, as gimc does. */
static const char *jit_passes = "default<O0>";

/* The conv-family generators of targets[0..nt), compiled (harness_op.h). */
static int jit_build(const gim_graph *g, gim_node *const *targets, int nt, hop_jit *out) {
    return hop_build(g, targets, nt, cg_conv_ops, jit_passes, false, out);
}

/* Compiles and runs once. Returns 0, or -1 (reported). */
static int jit_run(const gim_graph *g, gim_node *const *targets, int nt, float **bufs) {
    return hop_run(g, targets, nt, cg_conv_ops, jit_passes, false, bufs, 0, 0);
}

/* ---- graphs, data, comparisons ----------------------------------------------------- */

static gim_node *node(gim_graph *g, gim_op op, int n_in, gim_node **in, int rank, const int64_t *d) {
    gim_node *n = gim_node_new(g, op, n_in, in, (gim_loc){0});
    n->shape = gim_shape_make(rank, d);
    return n;
}

static gim_node *input(gim_graph *g, int rank, const int64_t *d) {
    return node(g, GIM_OP_INPUT, 0, NULL, rank, d);
}

static float *rand_f(int64_t n, unsigned seed) {
    float *f = gim_xmalloc(sizeof(float) * (size_t)(n ? n : 1));
    gim_test_fill(f, (size_t)n, seed, -1.0f, 1.0f);
    return f;
}

static double *to_d(const float *f, int64_t n) {
    double *d = gim_xmalloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

/* |a − b| <= atol + rtol |b| everywhere; reports the first miss. */
static int close_fd(const char *what, const float *a, const double *b, int64_t n, double atol, double rtol) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= atol + rtol * fabs(b[i]))) {
            fprintf(stderr, "\n  %s[%lld]: got %.9g, want %.9g\n", what, (long long)i, a[i], b[i]);
            return 0;
        }
    return 1;
}

/* f(ctx) = Σ dy ⊙ forward(...), evaluated in double by a reference. */
typedef hop_fd_fn fd_fn;

/* Checks the gradient g (float, from generated code) of f with respect to the
 * n doubles at x: element by element by central differences when n is small,
 * else along three random directions v: ⟨g, v⟩ against (f(x+hv) − f(x−hv)) / 2h.
 * terms: how many products one gradient element sums (for the float tolerance). */
static int check_grad(const char *what, fd_fn f, void *ctx, double *x, int64_t n, const float *g, double h,
                      int64_t terms) {
    double atol = 1e-5 + 2e-6 * (double)terms;
    if (n <= 400) {
        int ok = 1;
        for (int64_t i = 0; i < n && ok; i++) {
            double want = hop_fd(f, ctx, x, i, h);
            if (!(fabs(g[i] - want) <= atol + 1e-3 * fabs(want))) {
                fprintf(stderr, "\n  %s[%lld]: got %.9g, finite difference %.9g\n", what, (long long)i, g[i], want);
                ok = 0;
            }
        }
        return ok;
    }
    double *x0 = gim_xmalloc(sizeof(double) * (size_t)n);
    memcpy(x0, x, sizeof(double) * (size_t)n);
    float *v = rand_f(n, 977);
    int ok = 1;
    for (int dir = 0; dir < 3 && ok; dir++) {
        gim_test_fill(v, (size_t)n, 1000 + dir, -1.0f, 1.0f);
        double dot = 0, mag = 0;
        for (int64_t i = 0; i < n; i++) {
            dot += (double)g[i] * v[i];
            mag += fabs((double)g[i] * v[i]);
        }
        for (int64_t i = 0; i < n; i++) x[i] = x0[i] + h * v[i];
        double fp = f(ctx);
        for (int64_t i = 0; i < n; i++) x[i] = x0[i] - h * v[i];
        double fm = f(ctx);
        memcpy(x, x0, sizeof(double) * (size_t)n);
        double want = (fp - fm) / (2 * h);
        if (!(fabs(dot - want) <= 1e-4 * mag + 1e-6)) {
            fprintf(stderr, "\n  %s along direction %d: got %.9g, finite difference %.9g (scale %.3g)\n", what,
                    dir, dot, want, mag);
            ok = 0;
        }
    }
    gim_free(v);
    gim_free(x0);
    return ok;
}

static double dot_d(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* cg_conv.c's lowering policy knobs (not in any header). */
extern int64_t cg_conv_chunk_cap;   /* floats of scratch per GEMM chunk */
extern int cg_conv_wide_all;        /* batch every op, not only the weight gradient */
extern int cg_conv_wgrad_t;         /* weight gradient as dWᵀ = cols · dYᵗᵀ */
extern int64_t cg_conv_narrow_pixels, cg_conv_narrow_cap, cg_conv_short_k;   /* narrow 2-d forwards batched */
extern int cg_conv_winograd;         /* 3x3 stride-1 convs by Winograd */
extern int cg_winograd_f4;           /* F(4x4, 3x3) where the lanes layout applies */
extern int cg_winograd_f4_wgrad;
extern int64_t cg_winograd_chunk_cap, cg_winograd_wgrad_cap, cg_winograd_f4_cap;
bool cg_winograd_applies(const gim_node *n);
int cg_winograd_tile(const gim_node *n);

/* ---- convolutions ---------------------------------------------------------------- */

typedef struct conv_case {
    int lead_rank;
    int64_t lead[2];
    int64_t C, H, W, O, k, s, p;   /* conv1d: H = 1, W = T */
    bool bias, one_d;
} conv_case;

typedef struct conv_fd {
    const conv_case *cc;
    int64_t B, Ho, Wo;
    double *x, *w, *dy, *y;
} conv_fd;

static void conv_ref(const conv_fd *f, const double *b, double *y) {
    const conv_case *cc = f->cc;
    if (cc->one_d) ref_conv1d(f->x, f->B, cc->C, cc->W, f->w, b, cc->O, cc->k, cc->s, cc->p, y);
    else ref_conv2d(f->x, f->B, cc->C, cc->H, cc->W, f->w, b, cc->O, cc->k, cc->s, cc->p, y);
}

static double conv_f(void *p) {
    conv_fd *f = p;
    conv_ref(f, NULL, f->y);
    return dot_d(f->dy, f->y, f->B * f->cc->O * f->Ho * f->Wo);
}

/* Runs the forward and both backward ops through the whole code generator
 * (memory planner, per-node functions, the planned scratch in a NaN-filled
 * work arena) rather than this file's bare JIT: x, w, b, dy in; y, dx, dw out. */
static int run_conv_planned(const conv_case *cc, const gim_node *x, const gim_node *w, const gim_node *y,
                            const gim_node *dx, const gim_node *dw, float **bufs, const gim_node *b,
                            const gim_node *dy) {
    hj_graph *h = hj_new(1);
    gim_node *hx = hj_input(h, x->shape), *hw = hj_input(h, w->shape), *hb = hj_input(h, b->shape);
    gim_node *hdy = hj_input(h, dy->shape);
    bool one_d = cc->one_d;
    double at[5] = {(double)cc->O, (double)cc->k, (double)cc->s, (double)cc->p, cc->bias};
    gim_node *hy = cc->bias ? hj_op(h, one_d ? GIM_OP_CONV1D : GIM_OP_CONV2D, y->shape, HJ_IN(hx, hw, hb), 5, at)
                            : hj_op(h, one_d ? GIM_OP_CONV1D : GIM_OP_CONV2D, y->shape, HJ_IN(hx, hw), 5, at);
    gim_node *hdx = hj_op(h, one_d ? GIM_OP_CONV1D_BWD_DATA : GIM_OP_CONV2D_BWD_DATA, dx->shape, HJ_IN(hdy, hw), 4, at);
    gim_node *hdw = hj_op(h, one_d ? GIM_OP_CONV1D_BWD_WEIGHT : GIM_OP_CONV2D_BWD_WEIGHT, dw->shape, HJ_IN(hdy, hx),
                          4, at);
    int rc = hj_compile(h, HJ_OUT(hy, hdx, hdw));
    if (rc == 0)
        rc = hj_run(h, (const void *[]){bufs[x->id], bufs[w->id], bufs[b->id], bufs[dy->id]},
                    (float *[]){bufs[y->id], bufs[dx->id], bufs[dw->id]});
    hj_free(h);
    return rc;
}

static bool conv_planned;   /* check_conv runs through run_conv_planned */
static bool expect_winograd;   /* check_conv asserts its three ops take Winograd */
static int expect_tile;        /* and, when not 0, that all three take F(m×m) */

/* Forward against the reference, then both backward ops against finite
 * differences of the reference forward. */
static void check_conv(const conv_case *cc, unsigned seed) {
    gim_graph *g = gim_graph_new();
    int64_t B = 1, d[8];
    int r = 0;
    for (int i = 0; i < cc->lead_rank; i++) B *= d[r++] = cc->lead[i];
    int64_t Ho = cc->one_d ? 1 : (cc->H + 2 * cc->p - cc->k) / cc->s + 1;
    int64_t Wo = (cc->W + 2 * cc->p - cc->k) / cc->s + 1;
    int64_t xd[8], yd[8], wd[4] = {cc->O, cc->C, cc->k, cc->k};
    memcpy(xd, d, sizeof d);
    memcpy(yd, d, sizeof d);
    int xr = r, yr = r;
    xd[xr++] = cc->C;
    yd[yr++] = cc->O;
    if (!cc->one_d) { xd[xr++] = cc->H; yd[yr++] = Ho; }
    xd[xr++] = cc->W;
    yd[yr++] = Wo;
    int wr = cc->one_d ? 3 : 4;
    gim_node *x = input(g, xr, xd), *w = input(g, wr, wd), *b = input(g, 1, &cc->O), *dy = input(g, yr, yd);
    gim_node *in[3] = {x, w, b};
    gim_node *y = node(g, cc->one_d ? GIM_OP_CONV1D : GIM_OP_CONV2D, cc->bias ? 3 : 2, in, yr, yd);
    y->attr[0] = (double)cc->O;
    y->attr[1] = (double)cc->k;
    y->attr[2] = (double)cc->s;
    y->attr[3] = (double)cc->p;
    y->attr[4] = cc->bias;
    gim_node *bin[2] = {dy, w};
    gim_node *dx = node(g, cc->one_d ? GIM_OP_CONV1D_BWD_DATA : GIM_OP_CONV2D_BWD_DATA, 2, bin, xr, xd);
    gim_node *win[2] = {dy, x};
    gim_node *dw = node(g, cc->one_d ? GIM_OP_CONV1D_BWD_WEIGHT : GIM_OP_CONV2D_BWD_WEIGHT, 2, win, wr, wd);
    for (int i = 0; i < 4; i++) dx->attr[i] = dw->attr[i] = y->attr[i];

    int64_t nx = gim_shape_numel(&x->shape), nw = gim_shape_numel(&w->shape), ny = gim_shape_numel(&y->shape);
    float *bufs[9] = {0};
    bufs[x->id] = rand_f(nx, seed);
    bufs[w->id] = rand_f(nw, seed + 1);
    bufs[b->id] = rand_f(cc->O, seed + 2);
    bufs[dy->id] = rand_f(ny, seed + 3);
    bufs[y->id] = rand_f(ny, 5);   /* garbage: the op must overwrite it */
    bufs[dx->id] = rand_f(nx, 6);
    bufs[dw->id] = rand_f(nw, 7);
    if (expect_winograd) CU_ASSERT(cg_winograd_applies(y) && cg_winograd_applies(dx) && cg_winograd_applies(dw));
    if (expect_tile)
        CU_ASSERT(cg_winograd_tile(y) == expect_tile && cg_winograd_tile(dx) == expect_tile &&
                  cg_winograd_tile(dw) == expect_tile);
    gim_node *targets[3] = {y, dx, dw};
    int rc = conv_planned ? run_conv_planned(cc, x, w, y, dx, dw, bufs, b, dy) : jit_run(g, targets, 3, bufs);
    CU_ASSERT_FATAL(rc == 0);

    conv_fd f = {cc, B, Ho, Wo, to_d(bufs[x->id], nx), to_d(bufs[w->id], nw), to_d(bufs[dy->id], ny),
                 gim_xmalloc(sizeof(double) * (size_t)ny)};
    double *bd = to_d(bufs[b->id], cc->O);
    double *want = gim_xmalloc(sizeof(double) * (size_t)ny);
    conv_ref(&f, cc->bias ? bd : NULL, want);
    int64_t K = cc->C * cc->k * (cc->one_d ? 1 : cc->k);
    char what[160];
    snprintf(what, sizeof what, "%s B=%lld C=%lld %lldx%lld O=%lld k=%lld s=%lld p=%lld", cc->one_d ? "conv1d" : "conv2d",
             (long long)B, (long long)cc->C, (long long)cc->H, (long long)cc->W, (long long)cc->O, (long long)cc->k,
             (long long)cc->s, (long long)cc->p);
    if (!close_fd(what, bufs[y->id], want, ny, 1e-5 + 2e-6 * (double)K, 1e-4)) CU_FAIL("forward");
    /* dx[i] sums at most O·k² products; dw[j] sums B·Ho·Wo. */
    if (!check_grad("dx", conv_f, &f, f.x, nx, bufs[dx->id], 1e-2, cc->O * K / cc->C)) CU_FAIL("bwd data");
    if (!check_grad("dw", conv_f, &f, f.w, nw, bufs[dw->id], 1e-2, B * Ho * Wo)) CU_FAIL("bwd weight");
    for (int i = 0; i < 9; i++) gim_free(bufs[i]);
    gim_free(f.x); gim_free(f.w); gim_free(f.dy); gim_free(f.y); gim_free(bd); gim_free(want);
    gim_graph_free(g);
}

static void test_conv2d_small(void) {
    static const conv_case cases[] = {
        {1, {2}, 1, 7, 7, 3, 3, 1, 1, true, false},
        {1, {3}, 3, 7, 11, 5, 3, 2, 0, true, false},
        {2, {2, 2}, 5, 11, 7, 2, 5, 3, 2, false, false},
        {1, {1}, 3, 5, 5, 4, 1, 1, 0, true, false},
        {1, {2}, 2, 6, 9, 3, 1, 2, 1, true, false},
        {2, {1, 3}, 1, 8, 8, 2, 3, 1, 1, true, false},
        {1, {2}, 3, 5, 5, 2, 5, 1, 2, false, false},
        {1, {2}, 2, 3, 3, 3, 3, 3, 0, true, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_conv(&cases[i], 10 + 7 * (unsigned)i);
}

static void test_conv1d_small(void) {
    static const conv_case cases[] = {
        {1, {2}, 3, 1, 37, 4, 3, 1, 1, true, true},
        {2, {2, 3}, 1, 1, 11, 2, 5, 2, 2, false, true},
        {1, {3}, 5, 1, 13, 3, 1, 3, 0, true, true},
        {1, {1}, 2, 1, 37, 3, 4, 3, 1, true, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_conv(&cases[i], 100 + 7 * (unsigned)i);
}

/* Shapes that take the other lowering paths: several full GEMM chunks plus a
 * partial one (the canonical model's 3x3 on 8x8 patches), one image per
 * chunk, and the 1x1 direct GEMM. */
static void test_conv2d_paths(void) {
    jit_passes = "default<O2>";
    int64_t cap = cg_conv_chunk_cap;
    cg_conv_chunk_cap = (int64_t)1 << 18;   /* the chunk counts the cases were written for */
    static const conv_case cases[] = {
        {1, {30}, 32, 8, 8, 8, 3, 1, 1, true, false},       /* 1 MB chunks: 2 of 13 images + 4 */
        {1, {2}, 8, 37, 37, 8, 5, 1, 2, true, false},        /* an image exceeds a chunk */
        {1, {3}, 5, 17, 19, 7, 1, 1, 0, true, false},        /* 1x1 direct */
        {1, {40}, 32, 8, 8, 64, 3, 2, 1, true, false},       /* stride 2, one chunk */
        {1, {100}, 64, 4, 4, 128, 3, 2, 1, true, false},     /* 2x2 outputs: batched forward too */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_conv(&cases[i], 200 + 7 * (unsigned)i);
    cg_conv_chunk_cap = cap;   /* and with the default chunks */
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_conv(&cases[i], 230 + 7 * (unsigned)i);
    jit_passes = "default<O0>";
}

/* The forward of a conv2d with few outputs an image, by output position
 * (compiler/cg_conv_window.c): each case runs with it and, for comparison,
 * through im2col. Classes of positions from a 3×3 stride-2 kernel (4 and 2
 * rows by 4 and 2 columns), a 5×5 stride-3 one on a non-square image, a
 * 1×1 kernel (one class), no bias, several chunks and a partial one, and a
 * grid of 4 images (the model's lead dimensions). */
static void test_conv2d_window(void) {
    jit_passes = "default<O2>";
    static const conv_case cases[] = {
        {1, {40}, 32, 8, 8, 64, 3, 2, 1, true, false},       /* 4x4 outputs: 4 classes, 9 interior */
        {1, {300}, 64, 4, 4, 128, 3, 2, 1, true, false},     /* 2x2: 124 images a chunk, 2 + 52 */
        {1, {3}, 3, 7, 11, 5, 5, 3, 2, false, false},        /* 3x4 outputs, no bias */
        {1, {6}, 4, 6, 6, 8, 1, 2, 0, true, false},          /* 1x1 stride 2: one class */
        {2, {2, 2}, 5, 4, 4, 7, 3, 1, 1, true, false},       /* stride 1, channels too few for Winograd */
    };
    int64_t pixels = cg_conv_window_pixels;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* the shapes the window takes, and only while it is on */
        gim_graph *g = gim_graph_new();
        const conv_case *cc = &cases[i];
        int64_t B = 1;
        for (int d = 0; d < cc->lead_rank; d++) B *= cc->lead[d];
        int64_t Ho = (cc->H + 2 * cc->p - cc->k) / cc->s + 1, Wo = (cc->W + 2 * cc->p - cc->k) / cc->s + 1;
        int64_t xd[4] = {B, cc->C, cc->H, cc->W}, wd[4] = {cc->O, cc->C, cc->k, cc->k}, yd[4] = {B, cc->O, Ho, Wo};
        gim_node *in[2] = {input(g, 4, xd), input(g, 4, wd)};
        gim_node *y = node(g, GIM_OP_CONV2D, 2, in, 4, yd);
        y->attr[0] = (double)cc->O, y->attr[1] = (double)cc->k, y->attr[2] = (double)cc->s, y->attr[3] = (double)cc->p;
        CU_ASSERT(!cg_winograd_applies(y) && cg_conv_window_applies(y));
        cg_conv_window_pixels = 0;
        CU_ASSERT(!cg_conv_window_applies(y));
        cg_conv_window_pixels = pixels;
        gim_graph_free(g);
        check_conv(cc, 300 + 7 * (unsigned)i);
        cg_conv_window = 0;
        check_conv(cc, 300 + 7 * (unsigned)i);
        cg_conv_window = 1;
    }
    jit_passes = "default<O0>";
}

/* 3x3, stride 1, pad 1 with enough channels: Winograd (compiler/cg_winograd.c)
 * for the forward and both gradients; each case runs with F(4x4, 3x3) where
 * it applies, with F(2x2, 3x3) only, and, for comparison, through im2col.
 * Several chunks and a partial one, odd sizes (half tiles), a one-row image,
 * no bias, images of one F(2x2) tile (the layout with vectors along
 * channels: 2x2, 1x2, 1x1), F(4x4) on planes of whole vectors (4x4, 8x8,
 * 16x16, and 2x4: one partial tile), and the planned scratch. */
static void test_conv2d_winograd(void) {
    jit_passes = "default<O2>";
    cg_conv_dense = 0;   /* it would take the one-tile images */
    static const conv_case cases[] = {
        {1, {30}, 32, 8, 8, 32, 3, 1, 1, true, false},      /* 4 images a chunk: 7 chunks + 2 */
        {1, {5}, 16, 7, 9, 24, 3, 1, 1, true, false},       /* odd: a last row and column of half tiles */
        {2, {2, 3}, 24, 2, 2, 40, 3, 1, 1, false, false},   /* one tile an image, no bias */
        {1, {3}, 48, 1, 5, 16, 3, 1, 1, true, false},       /* one row */
        {1, {7}, 16, 2, 2, 16, 3, 1, 1, true, false},       /* one tile: vectors along channels */
        {1, {5}, 16, 1, 2, 32, 3, 1, 1, true, false},       /* one tile of two pixels */
        {1, {9}, 32, 1, 1, 16, 3, 1, 1, true, false},       /* one pixel */
        {1, {300}, 16, 2, 2, 16, 3, 1, 1, true, false},     /* one tile: 128 images a chunk, 2 + 44 */
        {1, {130}, 96, 2, 2, 96, 3, 1, 1, true, false},     /* large dU: 4 weight-gradient parts of 7 chunks */
        {1, {9}, 16, 4, 4, 24, 3, 1, 1, true, false},       /* F(4x4): one tile an image */
        {1, {7}, 24, 2, 4, 16, 3, 1, 1, true, false},       /* F(4x4): one partial tile (2 of 4 rows) */
        {1, {5}, 24, 8, 8, 16, 3, 1, 1, false, false},      /* F(4x4): 2x2 tiles, no bias */
        {1, {2}, 16, 16, 16, 16, 3, 1, 1, true, false},     /* F(4x4): 4x4 tiles */
    };
    enum { N_CASES = sizeof cases / sizeof *cases, FIRST_F4 = 9 };
    for (int mode = 0; mode < 3; mode++) {   /* F(4x4) where it applies; F(2x2) only; im2col */
        cg_conv_winograd = mode < 2;
        cg_winograd_f4 = mode == 0;
        expect_winograd = mode < 2;
        expect_tile = mode == 0 ? 4 : 0;
        for (size_t i = FIRST_F4; i < N_CASES; i++) check_conv(&cases[i], 700 + 7 * (unsigned)i);
        expect_tile = 0;
        for (size_t i = 0; i < FIRST_F4; i++) check_conv(&cases[i], 700 + 7 * (unsigned)i);
    }
    cg_conv_winograd = 1;
    cg_winograd_f4 = 1;
    expect_winograd = true;
    /* F(4x4)'s chunks: 7 images a chunk, so 9 images are a chunk and a partial one */
    int64_t f4_cap = cg_winograd_f4_cap;
    cg_winograd_f4_cap = 7 * 36 * (16 + 24);
    expect_tile = 4;
    check_conv(&cases[FIRST_F4], 800);
    cg_winograd_f4_cap = f4_cap;
    conv_planned = true;
    check_conv(&cases[FIRST_F4 + 2], 771);
    expect_tile = 0;
    check_conv(&cases[0], 750);
    check_conv(&cases[1], 757);
    check_conv(&cases[4], 764);
    conv_planned = false;
    expect_winograd = false;
    cg_conv_dense = 1;
    jit_passes = "default<O0>";
}

/* Whether the dense path takes a case's forward and both gradients; builds
 * the three nodes the way check_conv does. */
static bool dense_takes(const conv_case *cc) {
    gim_graph *g = gim_graph_new();
    int64_t B = 1;
    for (int i = 0; i < cc->lead_rank; i++) B *= cc->lead[i];
    int64_t Ho = cc->one_d ? 1 : (cc->H + 2 * cc->p - cc->k) / cc->s + 1;
    int64_t Wo = (cc->W + 2 * cc->p - cc->k) / cc->s + 1;
    int r = cc->one_d ? 3 : 4;
    int64_t xd[4] = {B, cc->C, cc->H, cc->W}, yd[4] = {B, cc->O, Ho, Wo}, wd[4] = {cc->O, cc->C, cc->k, cc->k};
    if (cc->one_d) xd[2] = cc->W, yd[2] = Wo;
    gim_node *x = input(g, r, xd), *w = input(g, r, wd), *dy = input(g, r, yd);
    gim_node *in[2] = {x, w}, *bin[2] = {dy, w}, *win[2] = {dy, x};
    gim_node *ops[3] = {node(g, cc->one_d ? GIM_OP_CONV1D : GIM_OP_CONV2D, 2, in, r, yd),
                        node(g, cc->one_d ? GIM_OP_CONV1D_BWD_DATA : GIM_OP_CONV2D_BWD_DATA, 2, bin, r, xd),
                        node(g, cc->one_d ? GIM_OP_CONV1D_BWD_WEIGHT : GIM_OP_CONV2D_BWD_WEIGHT, 2, win, r, wd)};
    bool all = true;
    for (int o = 0; o < 3; o++) {
        ops[o]->attr[0] = (double)cc->O, ops[o]->attr[1] = (double)cc->k;
        ops[o]->attr[2] = (double)cc->s, ops[o]->attr[3] = (double)cc->p;
        all = all && cg_conv_dense_applies(ops[o]);
    }
    gim_graph_free(g);
    return all;
}

/* A fused ReLU (forward) and a fused ReLU gradient (data gradient, its mask
 * y a third input), in one compilation with the unfused ops: the fused
 * outputs must be exactly max(y, 0) and (mask > 0 ? dx : 0), the bits of the
 * RELU and RELU_BWD nodes fusion replaces (the unfused ops themselves are
 * checked against the references by check_conv). */
static void check_conv_fused(const conv_case *cc, unsigned seed) {
    gim_graph *g = gim_graph_new();
    int64_t B = cc->lead[0];
    int64_t Ho = (cc->H + 2 * cc->p - cc->k) / cc->s + 1, Wo = (cc->W + 2 * cc->p - cc->k) / cc->s + 1;
    int64_t xd[4] = {B, cc->C, cc->H, cc->W}, yd[4] = {B, cc->O, Ho, Wo}, wd[4] = {cc->O, cc->C, cc->k, cc->k};
    gim_node *x = input(g, 4, xd), *w = input(g, 4, wd), *b = input(g, 1, &cc->O), *dy = input(g, 4, yd);
    gim_node *m = input(g, 4, xd);
    gim_node *in[3] = {x, w, b}, *bin[3] = {dy, w, m};
    int nin = cc->bias ? 3 : 2;
    gim_node *ops[4] = {node(g, GIM_OP_CONV2D, nin, in, 4, yd), node(g, GIM_OP_CONV2D, nin, in, 4, yd),
                        node(g, GIM_OP_CONV2D_BWD_DATA, 2, bin, 4, xd), node(g, GIM_OP_CONV2D_BWD_DATA, 3, bin, 4, xd)};
    for (int o = 0; o < 4; o++) {
        ops[o]->attr[0] = (double)cc->O, ops[o]->attr[1] = (double)cc->k;
        ops[o]->attr[2] = (double)cc->s, ops[o]->attr[3] = (double)cc->p;
    }
    ops[0]->attr[4] = ops[1]->attr[4] = cc->bias;
    ops[1]->attr[GIM_FUSED_RELU] = ops[3]->attr[GIM_FUSED_RELU] = 1;
    int64_t nx = B * cc->C * cc->H * cc->W, ny = B * cc->O * Ho * Wo;
    float *bufs[9] = {0};
    int64_t sizes[9] = {nx, cc->O * cc->C * cc->k * cc->k, cc->O, ny, nx, ny, ny, nx, nx};
    for (int i = 0; i < 9; i++) bufs[i] = rand_f(sizes[i], seed + (unsigned)i);
    CU_ASSERT_FATAL(jit_run(g, ops, 4, bufs) == 0);
    const float *y = bufs[ops[0]->id], *yf = bufs[ops[1]->id], *dx = bufs[ops[2]->id], *dxf = bufs[ops[3]->id];
    const float *mask = bufs[m->id];
    int64_t bad = 0, pos = 0;
    for (int64_t i = 0; i < ny; i++) {
        pos += y[i] > 0;
        bad += yf[i] != (y[i] > 0 ? y[i] : 0.0f);
    }
    CU_ASSERT(bad == 0 && pos > 0 && pos < ny);
    bad = 0;
    for (int64_t i = 0; i < nx; i++) bad += dxf[i] != (mask[i] > 0 ? dx[i] : 0.0f);
    CU_ASSERT(bad == 0);
    for (int i = 0; i < 9; i++) gim_free(bufs[i]);
    gim_graph_free(g);
}

/* Convolutions whose every output sees every input pixel, as one dense
 * layer (compiler/cg_conv_dense.c): forward and both gradients, each case
 * with the path and, for comparison, without (Winograd, the window or
 * im2col). 2x2 images with odd channel counts, with and without bias, 1x1
 * and 1x2 images, a stride-2 kernel, 3x3 images under a 5x5 kernel, a grid
 * of images (the model's lead dimensions), conv1d of lengths 2 and 1;
 * several row items with an uneven cut; the planned scratch; and the fused
 * ReLU and ReLU gradient. */
static void test_conv2d_dense(void) {
    jit_passes = "default<O2>";
    static const conv_case cases[] = {
        {1, {13}, 9, 2, 2, 7, 3, 1, 1, true, false},         /* 2x2, odd channels */
        {1, {11}, 9, 2, 2, 7, 3, 1, 1, false, false},        /* no bias */
        {1, {45}, 16, 2, 2, 40, 3, 1, 1, true, false},       /* Winograd's one-tile shape otherwise */
        {1, {9}, 5, 1, 1, 6, 3, 1, 1, true, false},          /* 1x1 image */
        {1, {6}, 4, 1, 1, 3, 1, 1, 0, true, false},          /* 1x1 kernel on a 1x1 image */
        {1, {7}, 6, 1, 2, 5, 3, 1, 1, true, false},          /* 1x2 image */
        {1, {8}, 3, 2, 2, 5, 3, 2, 1, true, false},          /* stride 2: one output */
        {1, {5}, 3, 3, 3, 4, 5, 1, 2, true, false},          /* 3x3 under 5x5: 81 pairs */
        {2, {3, 4}, 7, 2, 2, 9, 3, 1, 1, true, false},       /* a grid of images */
        {1, {10}, 6, 1, 2, 5, 3, 1, 1, true, true},          /* conv1d, length 2 */
        {1, {10}, 6, 1, 1, 5, 3, 1, 1, false, true},         /* conv1d, length 1 */
    };
    static const conv_case wide = {1, {4}, 3, 4, 4, 5, 3, 1, 1, true, false};   /* windows miss pixels */
    CU_ASSERT(!dense_takes(&wide));
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const conv_case *cc = &cases[i];
        CU_ASSERT(dense_takes(cc));
        check_conv(cc, 800 + 7 * (unsigned)i);
        if (!cc->one_d && cc->lead_rank == 1) check_conv_fused(cc, 850 + 7 * (unsigned)i);
        cg_conv_dense = 0;
        CU_ASSERT(!dense_takes(cc));
        check_conv(cc, 800 + 7 * (unsigned)i);
        if (!cc->one_d && cc->lead_rank == 1) check_conv_fused(cc, 850 + 7 * (unsigned)i);
        cg_conv_dense = 1;
    }
    /* many row items, cut unevenly (45 rows into 11; 13 into 3) */
    int64_t rows = cg_conv_dense_rows;
    cg_conv_dense_rows = 4;
    check_conv(&cases[2], 880);
    check_conv_fused(&cases[0], 883);
    check_conv(&cases[9], 886);
    cg_conv_dense_rows = rows;
    conv_planned = true;
    check_conv(&cases[0], 890);
    check_conv(&cases[9], 897);
    conv_planned = false;
    jit_passes = "default<O0>";
}

/* The same and the small shapes with every op batched over images (the
 * forward's and data gradient's transposes), in the default 1 MB chunks,
 * and the weight gradient accumulated directly in dw (not transposed). */
static void test_conv_all_wide(void) {
    int64_t cap = cg_conv_chunk_cap;
    cg_conv_wide_all = 1;
    cg_conv_wgrad_t = 0;
    cg_conv_chunk_cap = (int64_t)1 << 18;
    test_conv2d_paths();
    test_conv2d_small();
    test_conv1d_small();
    cg_conv_wide_all = 0;
    cg_conv_wgrad_t = 1;
    cg_conv_chunk_cap = cap;
}

/* Through the module code generator, whose planner provides the scratch:
 * the default policy and every op batched. */
static void test_conv_planned(void) {
    static const conv_case cases[] = {
        {1, {30}, 32, 8, 8, 8, 3, 1, 1, true, false},
        {2, {2, 3}, 3, 7, 11, 5, 3, 2, 2, false, false},
        {1, {3}, 3, 1, 37, 4, 3, 1, 1, true, true},
    };
    conv_planned = true;
    for (int wide = 0; wide < 2; wide++) {
        cg_conv_wide_all = wide;
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_conv(&cases[i], 600 + 7 * (unsigned)i);
    }
    cg_conv_wide_all = 0;
    conv_planned = false;
}

/* ---- linear -------------------------------------------------------------------------- */

typedef struct lin_fd {
    int64_t B, C, O;
    double *x, *w, *dy, *y;
} lin_fd;

static double lin_f(void *p) {
    lin_fd *f = p;
    ref_linear(f->x, f->B, f->C, f->w, NULL, f->O, f->y);
    return dot_d(f->dy, f->y, f->B * f->O);
}

static void check_linear(int lead_rank, const int64_t *lead, int64_t C, int64_t O, bool bias, unsigned seed) {
    gim_graph *g = gim_graph_new();
    int64_t xd[4], yd[4], B = 1;
    for (int i = 0; i < lead_rank; i++) B *= xd[i] = yd[i] = lead[i];
    xd[lead_rank] = C;
    yd[lead_rank] = O;
    int64_t wd[2] = {O, C};
    gim_node *x = input(g, lead_rank + 1, xd), *w = input(g, 2, wd), *b = input(g, 1, &O);
    gim_node *dy = input(g, lead_rank + 1, yd);
    gim_node *in[3] = {x, w, b};
    gim_node *y = node(g, GIM_OP_LINEAR, bias ? 3 : 2, in, lead_rank + 1, yd);
    y->attr[0] = (double)O;
    y->attr[1] = bias;
    gim_node *bin[2] = {dy, w}, *win[2] = {dy, x};
    gim_node *dx = node(g, GIM_OP_LINEAR_BWD_DATA, 2, bin, lead_rank + 1, xd);
    gim_node *dw = node(g, GIM_OP_LINEAR_BWD_WEIGHT, 2, win, 2, wd);
    float *bufs[7] = {0};
    bufs[x->id] = rand_f(B * C, seed);
    bufs[w->id] = rand_f(O * C, seed + 1);
    bufs[b->id] = rand_f(O, seed + 2);
    bufs[dy->id] = rand_f(B * O, seed + 3);
    bufs[y->id] = rand_f(B * O, 1);
    bufs[dx->id] = rand_f(B * C, 2);
    bufs[dw->id] = rand_f(O * C, 3);
    gim_node *targets[3] = {y, dx, dw};
    CU_ASSERT_FATAL(jit_run(g, targets, 3, bufs) == 0);
    lin_fd f = {B, C, O, to_d(bufs[x->id], B * C), to_d(bufs[w->id], O * C), to_d(bufs[dy->id], B * O),
                gim_xmalloc(sizeof(double) * (size_t)(B * O))};
    double *bd = to_d(bufs[b->id], O), *want = gim_xmalloc(sizeof(double) * (size_t)(B * O));
    ref_linear(f.x, B, C, f.w, bias ? bd : NULL, O, want);
    CU_ASSERT(close_fd("linear", bufs[y->id], want, B * O, 1e-5 + 2e-6 * (double)C, 1e-4));
    CU_ASSERT(check_grad("linear dx", lin_f, &f, f.x, B * C, bufs[dx->id], 1e-2, O));
    CU_ASSERT(check_grad("linear dw", lin_f, &f, f.w, O * C, bufs[dw->id], 1e-2, B));
    for (int i = 0; i < 7; i++) gim_free(bufs[i]);
    gim_free(f.x); gim_free(f.w); gim_free(f.dy); gim_free(f.y); gim_free(bd); gim_free(want);
    gim_graph_free(g);
}

static void test_linear(void) {
    int64_t l1[1] = {7}, l2[2] = {3, 5}, l3[1] = {1};
    check_linear(1, l1, 5, 3, true, 300);
    check_linear(2, l2, 11, 4, false, 310);
    check_linear(1, l3, 1, 1, true, 320);
    check_linear(1, l1, 37, 13, true, 330);
}

/* ---- patches ------------------------------------------------------------------------ */

typedef struct patch_fd {
    int64_t N, C, H, W, s, st, ny;
    double *x, *dy, *y;
} patch_fd;

static double patch_f(void *p) {
    patch_fd *f = p;
    ref_patches(f->x, f->N, f->C, f->H, f->W, f->s, f->st, f->y);
    return dot_d(f->dy, f->y, f->ny);
}

static void check_patches(int64_t N, int64_t C, int64_t H, int64_t W, int64_t s, int64_t st, unsigned seed) {
    gim_graph *g = gim_graph_new();
    int64_t Gh = (H - s) / st + 1, Gw = (W - s) / st + 1;
    int64_t xd[4] = {N, C, H, W}, yd[6] = {N, Gh, Gw, C, s, s};
    gim_node *x = input(g, 4, xd), *dy = input(g, 6, yd);
    gim_node *y = node(g, GIM_OP_PATCHES, 1, &x, 6, yd);
    gim_node *dx = node(g, GIM_OP_PATCHES_BWD, 1, &dy, 4, xd);
    y->attr[0] = dx->attr[0] = (double)s;
    y->attr[1] = dx->attr[1] = (double)st;
    int64_t nx = N * C * H * W, ny = gim_shape_numel(&y->shape);
    float *bufs[4] = {0};
    bufs[x->id] = rand_f(nx, seed);
    bufs[dy->id] = rand_f(ny, seed + 1);
    bufs[y->id] = rand_f(ny, 1);
    bufs[dx->id] = rand_f(nx, 2);
    gim_node *targets[2] = {y, dx};
    CU_ASSERT_FATAL(jit_run(g, targets, 2, bufs) == 0);
    patch_fd f = {N, C, H, W, s, st, ny, to_d(bufs[x->id], nx), to_d(bufs[dy->id], ny),
                  gim_xmalloc(sizeof(double) * (size_t)ny)};
    double *want = gim_xmalloc(sizeof(double) * (size_t)ny);
    ref_patches(f.x, N, C, H, W, s, st, want);
    CU_ASSERT(close_fd("patches", bufs[y->id], want, ny, 0, 0));   /* a copy: exact */
    CU_ASSERT(check_grad("patches dx", patch_f, &f, f.x, nx, bufs[dx->id], 1.0, 4));
    for (int i = 0; i < 4; i++) gim_free(bufs[i]);
    gim_free(f.x); gim_free(f.dy); gim_free(f.y); gim_free(want);
    gim_graph_free(g);
}

static void test_patches(void) {
    check_patches(2, 1, 28, 28, 8, 4, 400);    /* the canonical 6x6 grid */
    check_patches(1, 3, 7, 11, 3, 2, 410);
    check_patches(3, 2, 5, 5, 2, 3, 420);
    check_patches(1, 1, 5, 7, 5, 1, 430);
}

/* ---- pools -------------------------------------------------------------------------- */

typedef struct pool_fd {
    bool is_max;
    int64_t B, H, W, k, st, ny;
    double *x, *dy, *y;
} pool_fd;

static double pool_f(void *p) {
    pool_fd *f = p;
    if (f->is_max) ref_maxpool2d(f->x, f->B, f->H, f->W, f->k, f->st, f->y);
    else ref_avgpool2d(f->x, f->B, f->H, f->W, f->k, f->st, f->y);
    return dot_d(f->dy, f->y, f->ny);
}

static void check_pool(bool is_max, int64_t N, int64_t C, int64_t H, int64_t W, int64_t k, int64_t st,
                       unsigned seed) {
    gim_graph *g = gim_graph_new();
    int64_t Ho = (H - k) / st + 1, Wo = (W - k) / st + 1;
    int64_t xd[4] = {N, C, H, W}, yd[4] = {N, C, Ho, Wo};
    gim_node *x = input(g, 4, xd), *dy = input(g, 4, yd);
    gim_node *y = node(g, is_max ? GIM_OP_MAXPOOL2D : GIM_OP_AVGPOOL2D, 1, &x, 4, yd);
    gim_node *bin[2] = {dy, x};
    gim_node *dx = node(g, is_max ? GIM_OP_MAXPOOL2D_BWD : GIM_OP_AVGPOOL2D_BWD, is_max ? 2 : 1, bin, 4, xd);
    y->attr[0] = dx->attr[0] = (double)k;
    y->attr[1] = dx->attr[1] = (double)st;
    int64_t nx = N * C * H * W, ny = N * C * Ho * Wo;
    float *bufs[4] = {0};
    bufs[x->id] = rand_f(nx, seed);
    bufs[dy->id] = rand_f(ny, seed + 1);
    bufs[y->id] = rand_f(ny, 1);
    bufs[dx->id] = rand_f(nx, 2);
    gim_node *targets[2] = {y, dx};
    CU_ASSERT_FATAL(jit_run(g, targets, 2, bufs) == 0);
    pool_fd f = {is_max, N * C, H, W, k, st, ny, to_d(bufs[x->id], nx), to_d(bufs[dy->id], ny),
                 gim_xmalloc(sizeof(double) * (size_t)ny)};
    double *want = gim_xmalloc(sizeof(double) * (size_t)ny);
    pool_f(&f);
    memcpy(want, f.y, sizeof(double) * (size_t)ny);
    CU_ASSERT(close_fd(is_max ? "maxpool" : "avgpool", bufs[y->id], want, ny, 1e-6, 1e-5));
    /* max: h small enough that no window's maximum changes place */
    CU_ASSERT(check_grad(is_max ? "maxpool dx" : "avgpool dx", pool_f, &f, f.x, nx, bufs[dx->id],
                         is_max ? 1e-6 : 1e-2, k * k));
    for (int i = 0; i < 4; i++) gim_free(bufs[i]);
    gim_free(f.x); gim_free(f.dy); gim_free(f.y); gim_free(want);
    gim_graph_free(g);
}

static void test_pools(void) {
    for (int m = 0; m < 2; m++) {
        check_pool(m, 2, 3, 7, 7, 2, 2, 500);
        check_pool(m, 1, 1, 11, 7, 3, 1, 510);
        check_pool(m, 2, 2, 8, 8, 3, 3, 520);
        check_pool(m, 1, 5, 5, 5, 5, 5, 530);
        check_pool(m, 3, 2, 9, 6, 2, 1, 540);
    }
}

/* Ties: every window of a constant image has its maximum everywhere; the
 * gradient goes to the window's first element (row-major). With k = 2,
 * stride 1 on 3x3, the windows start at (0,0), (0,1), (1,0), (1,1): dx is dy
 * placed at those positions and zero elsewhere. */
static void test_maxpool_ties(void) {
    gim_graph *g = gim_graph_new();
    int64_t xd[3] = {1, 3, 3}, yd[3] = {1, 2, 2};
    gim_node *x = input(g, 3, xd), *dy = input(g, 3, yd);
    gim_node *y = node(g, GIM_OP_MAXPOOL2D, 1, &x, 3, yd);
    gim_node *bin[2] = {dy, x};
    gim_node *dx = node(g, GIM_OP_MAXPOOL2D_BWD, 2, bin, 3, xd);
    y->attr[0] = dx->attr[0] = 2;
    y->attr[1] = dx->attr[1] = 1;
    float xv[9] = {2, 2, 2, 2, 2, 2, 2, 2, 2}, dyv[4] = {1, 10, 100, 1000}, yv[4], dxv[9];
    float *bufs[4] = {xv, dyv, yv, dxv};
    gim_node *targets[2] = {y, dx};
    CU_ASSERT_FATAL(jit_run(g, targets, 2, bufs) == 0);
    for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(yv[i], 2.0f);
    float want[9] = {1, 10, 0, 100, 1000, 0, 0, 0, 0};
    for (int i = 0; i < 9; i++) CU_ASSERT_EQUAL(dxv[i], want[i]);
    gim_graph_free(g);
}

/* ---- micro-benchmark (`test_op_conv --bench`): the canonical model's convolutions ---- */


static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* CPU time of this thread: with OPENBLAS_NUM_THREADS=1 everything runs
 * here, and CPU time is far less disturbed by other load than wall time. */
static bool bench_cpu_time;

static double cpu_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double best_ms(hop_jit *j, float **bufs, int runs) {
    double t[32];
    j->fn(bufs, 0, 0);   /* warm-up */
    for (int r = 0; r < runs; r++) {
        double t0 = bench_cpu_time ? cpu_ms() : now_ms();
        j->fn(bufs, 0, 0);
        t[r] = (bench_cpu_time ? cpu_ms() : now_ms()) - t0;
    }
    for (int a = 0; a < runs; a++)
        for (int b = a + 1; b < runs; b++)
            if (t[b] < t[a]) { double x = t[a]; t[a] = t[b]; t[b] = x; }
    return t[0];   /* the best: the machine is shared, and others' load only adds */
}

/* only: run just that layer (1-based), 0 for all */
static void bench(int only) {
    jit_passes = "default<O2>";
    const char *nt = getenv("OPENBLAS_NUM_THREADS");
    bench_cpu_time = nt && strcmp(nt, "1") == 0;
    printf("timing: %s\n", bench_cpu_time ? "thread CPU time (OPENBLAS_NUM_THREADS=1)" : "wall clock");
    /* the canonical model's six, then 2x2 and 1x1 layers the dense path
     * takes, with fewer channels (where it must still win to be taken) */
    static const struct { int64_t C, O, s, H; } layers[] = {
        {1, 32, 1, 8}, {32, 32, 1, 8}, {32, 64, 2, 8}, {64, 64, 1, 4}, {64, 128, 2, 4}, {128, 128, 1, 2},
        {8, 8, 1, 2}, {16, 16, 1, 2}, {32, 32, 1, 2}, {64, 64, 1, 2}, {128, 128, 1, 1},
    };
    enum { CANONICAL = 6 };
    /* narrow: 0 keeps one image per forward / data-gradient GEMM; else
     * every non-Winograd 2-d forward and data gradient is batched in chunks
     * of that many floats (cg_conv_narrow_cap). */
    static const struct {
        int64_t cap;
        int wide_all, wgrad_t, wino;
        int64_t wino_cap, wgrad_cap, narrow, window;
        int dense;   /* the dense path (cg_conv_dense.c) on */
        const char *name;
        int f2;         /* F(2x2, 3x3) only */
        int64_t f4cap;  /* F(4x4, 3x3)'s chunks (0: the default) */
    } caps[] = {
        {1, 0, 0, 0, 0, 0, 0, 0, 0, "per image", 0, 0}, {(int64_t)1 << 18, 0, 1, 0, 0, 0, 0, 0, 0, "im2col", 0, 0},
        {(int64_t)1 << 18, 0, 1, 1, (int64_t)1 << 15, (int64_t)1 << 16, 0, 0, 0, "wino 128K/256K", 0, 0},
        {(int64_t)1 << 18, 0, 1, 1, (int64_t)1 << 16, (int64_t)1 << 18, 0, 0, 0, "wino 256K/1M", 0, 0},
        {(int64_t)1 << 18, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 19, 0, 0, 0, "wino 512K/2M", 0, 0},
        {(int64_t)1 << 18, 0, 1, 1, (int64_t)1 << 18, (int64_t)1 << 20, 0, 0, 0, "wino 1M/4M", 0, 0},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 13, 0, 0, "batched 32K", 0, 0},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 14, 0, 0, "batched 64K", 0, 0},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 15, 0, 0, "batched 128K", 0, 0},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 16, 0, 0, "batched 256K", 0, 0},
        {(int64_t)1 << 15, 0, 1, 0, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 15, (int64_t)1 << 18, 0, "window, no wino", 0, 0},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 15, (int64_t)1 << 16, 0, "window 256K", 0, 0},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 15, (int64_t)1 << 18, 0, "window 1M", 0, 0},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 15, (int64_t)1 << 18, 0, "window 1M, F2", 1, 0},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 15, (int64_t)1 << 18, 0, "F4 512K", 0, (int64_t)1 << 17},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 15, (int64_t)1 << 18, 0, "F4 2M", 0, (int64_t)1 << 19},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 15, (int64_t)1 << 18, 0, "F4 4M", 0, (int64_t)1 << 20},
        {(int64_t)1 << 15, 0, 1, 1, (int64_t)1 << 17, (int64_t)1 << 18, (int64_t)1 << 15, (int64_t)1 << 18, 1, "dense", 0, 0},
    };
    const int64_t B = 1152, k = 3, p = 1, f4_cap = cg_winograd_f4_cap;
    printf("B=%lld 3x3 pad 1; best ms (GFLOP/s) per op; lowering policies (see cg_conv.c)\n",
           (long long)B);
    double total[sizeof caps / sizeof *caps] = {0};
    for (size_t l = 0; l < sizeof layers / sizeof *layers; l++) {
        if (only > 0 && (size_t)only != l + 1) continue;
        int64_t C = layers[l].C, O = layers[l].O, s = layers[l].s, H = layers[l].H, Ho = (H + 2 * p - k) / s + 1;
        double flops = 2.0 * B * O * Ho * Ho * C * k * k;
        int64_t xd[4] = {B, C, H, H}, yd[4] = {B, O, Ho, Ho}, wd[4] = {O, C, k, k};
        /* the GEMM alone, at full width */
        float *A = rand_f(O * C * k * k, 1), *Bm = rand_f(C * k * k * B * Ho * Ho, 2), *Cm = rand_f(O * B * Ho * Ho, 3);
        double t0 = now_ms();
        for (int r = 0; r < 5; r++)
            gim_rt_sgemm(0, 0, O, B * Ho * Ho, C * k * k, 1.0f, A, C * k * k, Bm, B * Ho * Ho, 0.0f, Cm, B * Ho * Ho);
        double gemm_ms = (now_ms() - t0) / 5;
        gim_free(A); gim_free(Bm); gim_free(Cm);
        printf("layer %zu: %lld->%lld s%lld %lldx%lld, %.2f GFLOP per op; one wide GEMM alone %.2f ms (%.1f GFLOP/s)\n",
               l + 1, (long long)C, (long long)O, (long long)s, (long long)H, (long long)H, flops / 1e9, gemm_ms,
               flops / gemm_ms / 1e6);
        /* Build every variant first, then time them round-robin so that the
         * shared machine's changing load falls on all of them alike. */
        enum { NCAP = sizeof caps / sizeof *caps };
        gim_graph *g = gim_graph_new();
        gim_node *x = input(g, 4, xd), *w = input(g, 4, wd), *b = input(g, 1, &O), *dy = input(g, 4, yd);
        gim_node *in[3] = {x, w, b}, *bin[2] = {dy, w}, *win[2] = {dy, x};
        gim_node *y = node(g, GIM_OP_CONV2D, 3, in, 4, yd);
        gim_node *dx = node(g, GIM_OP_CONV2D_BWD_DATA, 2, bin, 4, xd);
        gim_node *dw = node(g, GIM_OP_CONV2D_BWD_WEIGHT, 2, win, 4, wd);
        double at[4] = {(double)O, (double)k, (double)s, (double)p};
        for (int i = 0; i < 4; i++) y->attr[i] = dx->attr[i] = dw->attr[i] = at[i];
        y->attr[4] = 1;
        float *bufs[7];
        int64_t sizes[7] = {B * C * H * H, O * C * k * k, O, B * O * Ho * Ho, B * O * Ho * Ho, B * C * H * H,
                            O * C * k * k};
        for (int i = 0; i < 7; i++) bufs[i] = rand_f(sizes[i], 10 + i);
        gim_node *ops[3] = {y, dx, dw};
        hop_jit jits[NCAP][3];
        double best[NCAP][3];
        for (int ci = 0; ci < NCAP; ci++) {
            cg_conv_chunk_cap = caps[ci].cap;
            cg_conv_wide_all = caps[ci].wide_all;
            cg_conv_wgrad_t = caps[ci].wgrad_t;
            cg_conv_winograd = caps[ci].wino;
            cg_winograd_chunk_cap = caps[ci].wino_cap;
            cg_winograd_wgrad_cap = caps[ci].wgrad_cap;
            cg_conv_narrow_pixels = caps[ci].narrow ? INT64_MAX : 0;
            cg_conv_short_k = caps[ci].narrow ? 32 : 0;
            cg_conv_narrow_cap = caps[ci].narrow;
            cg_conv_window = caps[ci].window > 0;
            cg_conv_window_cap = caps[ci].window;
            cg_winograd_f4 = !caps[ci].f2;
            cg_winograd_f4_wgrad = !caps[ci].f2;
            cg_winograd_f4_cap = caps[ci].f4cap ? caps[ci].f4cap : f4_cap;
            cg_conv_dense = caps[ci].dense;
            double t0 = now_ms();
            for (int o = 0; o < 3; o++) {
                if (jit_build(g, &ops[o], 1, &jits[ci][o]) != 0) exit(1);
                if (getenv("GIM_BENCH_ADDRS"))
                    fprintf(stderr, "addr layer %zu policy %d op %d: %p\n", l + 1, ci, o, (void *)(uintptr_t)jits[ci][o].fn);
                best[ci][o] = 1e30;
            }
            if (ci == 1) printf("  compile (default policy, 3 ops, O2): %.0f ms\n", now_ms() - t0);
        }
        for (int rep = 0; rep < 5; rep++)
            for (int ci = 0; ci < NCAP; ci++)
                for (int o = 0; o < 3; o++) {
                    double ms = best_ms(&jits[ci][o], bufs, 2);
                    if (ms < best[ci][o]) best[ci][o] = ms;
                }
        const char *names[3] = {"fwd", "bwd_data", "bwd_weight"};
        for (int ci = 0; ci < NCAP; ci++) {
            printf("  %-14s", caps[ci].name);
            for (int o = 0; o < 3; o++) {
                if (l < CANONICAL) total[ci] += best[ci][o];
                printf("  %s %7.2f ms (%5.1f)", names[o], best[ci][o], flops / best[ci][o] / 1e6);
                hop_free(&jits[ci][o]);
            }
            printf("\n");
        }
        for (int i = 0; i < 7; i++) gim_free(bufs[i]);
        gim_graph_free(g);
    }
    for (size_t ci = 0; ci < sizeof caps / sizeof *caps; ci++)
        if (only == 0) printf("total over the six canonical layers, fwd + both bwd, %s: %.1f ms\n", caps[ci].name, total[ci]);
    cg_conv_dense = 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        bench(argc > 2 ? atoi(argv[2]) : 0);
        return 0;
    }
    static const gim_test tests[] = {
        {"conv2d forward and gradients, small odd shapes", test_conv2d_small},
        {"conv1d forward and gradients", test_conv1d_small},
        {"conv2d forward by output position", test_conv2d_window},
        {"conv2d lowering paths: chunked GEMM, one image, 1x1", test_conv2d_paths},
        {"conv2d 3x3 stride 1 by Winograd F(4x4, 3x3) and F(2x2, 3x3), and by im2col", test_conv2d_winograd},
        {"conv2d and conv1d as dense layers where windows cover the image", test_conv2d_dense},
        {"conv with every op batched over images", test_conv_all_wide},
        {"conv through the module code generator (planned scratch)", test_conv_planned},
        {"linear forward and gradients", test_linear},
        {"patches forward and gradient", test_patches},
        {"avg and max pools forward and gradients", test_pools},
        {"maxpool ties go to the first maximum", test_maxpool_ties},
        {NULL, NULL},
    };
    return gim_run_suite("op_conv", tests);
}
