/* Loss-family ops (infonce, cross_entropy, gru): the plain-C references'
 * analytic gradients against central finite differences, in double; the
 * generated code against the references. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gim_util.h"
#include "ref_loss.h"
#include "testutil.h"

static double *rand_d(size_t n, unsigned seed, double lo, double hi) {
    float *f = gim_xmalloc(sizeof(float) * (n ? n : 1));
    gim_test_fill(f, n, seed, (float)lo, (float)hi);
    double *d = gim_xmalloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    gim_free(f);
    return d;
}

/* |a − b| <= atol + rtol |b| for every element; reports the first miss. */
static int close_d(const char *what, const double *a, const double *b, size_t n, double atol, double rtol) {
    for (size_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= atol + rtol * fabs(b[i]))) {
            fprintf(stderr, "\n  %s[%zu]: %.9g vs %.9g\n", what, i, a[i], b[i]);
            return 0;
        }
    return 1;
}

/* ---- finite differences of the references ---------------------------------- */

typedef double (*fd_fn)(void *ctx);

/* Central differences of f with respect to every element of x. */
static void fd_grad(fd_fn f, void *ctx, double *x, size_t n, double h, double *g) {
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double fp = f(ctx);
        x[i] = x0 - h;
        double fm = f(ctx);
        x[i] = x0;
        g[i] = (fp - fm) / (2 * h);
    }
}

typedef struct infonce_case {
    ref_infonce_cfg cfg;
    double *z, *c, *W;
    bool shared;            /* c is z (no context=) */
} infonce_case;

static double infonce_f(void *p) {
    infonce_case *ic = p;
    return ref_infonce(&ic->cfg, ic->z, ic->shared ? ic->z : ic->c, ic->W);
}

static void check_infonce_fd(ref_infonce_cfg cfg, bool shared, unsigned seed) {
    if (shared) cfg.Cc = cfg.Cz;
    int64_t P = ref_infonce_positions(&cfg);
    size_t nz = P * cfg.Cz, nc = P * cfg.Cc, nw = cfg.K * cfg.Cz * cfg.Cc;
    infonce_case ic = {cfg, rand_d(nz, seed, -1, 1), rand_d(nc, seed + 1, -1, 1),
                       rand_d(nw, seed + 2, -1, 1), shared};
    double *dz = gim_xmalloc(sizeof(double) * nz), *dc = gim_xmalloc(sizeof(double) * nc);
    double *dW = gim_xmalloc(sizeof(double) * nw);
    double *gz = gim_xmalloc(sizeof(double) * nz), *gc = gim_xmalloc(sizeof(double) * nc);
    double *gW = gim_xmalloc(sizeof(double) * nw);
    ref_infonce_bwd(&cfg, ic.z, shared ? ic.z : ic.c, ic.W, dz, dc, dW);
    fd_grad(infonce_f, &ic, ic.z, nz, 1e-5, gz);
    fd_grad(infonce_f, &ic, ic.W, nw, 1e-5, gW);
    if (shared) {
        for (size_t i = 0; i < nz; i++) dz[i] += dc[i];
    } else {
        fd_grad(infonce_f, &ic, ic.c, nc, 1e-5, gc);
        CU_ASSERT(close_d("dc", dc, gc, nc, 1e-8, 1e-5));
    }
    CU_ASSERT(close_d("dz", dz, gz, nz, 1e-8, 1e-5));
    CU_ASSERT(close_d("dW", dW, gW, nw, 1e-8, 1e-5));
    /* The gradient is not trivially zero. */
    double norm = 0;
    for (size_t i = 0; i < nw; i++) norm += fabs(dW[i]);
    CU_ASSERT(norm > 1e-4);
    gim_free(ic.z); gim_free(ic.c); gim_free(ic.W);
    gim_free(dz); gim_free(dc); gim_free(dW); gim_free(gz); gim_free(gc); gim_free(gW);
}

static void test_ref_infonce_seq_fd(void) {
    for (int K = 1; K <= 3; K++) {
        ref_infonce_cfg cfg = {.grid = false, .N = 2, .len = 5, .Cz = 3, .Cc = 4, .K = K,
                               .negatives = 3, .seed = 7, .stream = 1, .step = 2};
        check_infonce_fd(cfg, false, 10 + K);
        check_infonce_fd(cfg, true, 20 + K);
    }
}

static void test_ref_infonce_grid_fd(void) {
    for (int K = 1; K <= 3; K++) {
        ref_infonce_cfg cfg = {.grid = true, .N = 2, .len = 4, .Cz = 5, .Cc = 3, .K = K,
                               .negatives = 4, .seed = 3, .stream = 2, .step = 1};
        check_infonce_fd(cfg, false, 30 + K);
        check_infonce_fd(cfg, true, 40 + K);
    }
}

/* The loss by hand for one position, one negative: −s_pos + log(e^s_pos + e^s_neg). */
static void test_ref_infonce_by_hand(void) {
    ref_infonce_cfg cfg = {.grid = false, .N = 1, .len = 2, .Cz = 1, .Cc = 1, .K = 1,
                           .negatives = 1, .seed = 5, .stream = 1, .step = 0};
    double z[2] = {0.5, -2.0}, c[2] = {3.0, 7.0}, W[1] = {0.25};
    int64_t neg = ref_infonce_negative(&cfg, 1, 0, 0);
    CU_ASSERT(neg == 0 || neg == 1);
    double pred = 0.25 * 3.0, spos = z[1] * pred, sneg = z[neg] * pred;
    double want = -spos + log(exp(spos) + exp(sneg));
    CU_ASSERT_DOUBLE_EQUAL(ref_infonce(&cfg, z, c, W), want, 1e-12);
}

/* Negatives: in range, a pure function of the counter, different across
 * steps and streams. */
static void test_ref_infonce_negatives(void) {
    ref_infonce_cfg a = {.grid = true, .N = 3, .len = 5, .Cz = 2, .Cc = 2, .K = 3,
                         .negatives = 16, .seed = 11, .stream = 1, .step = 4};
    ref_infonce_cfg b = a, s = a;
    b.step = 5;
    s.stream = 2;
    int64_t P = ref_infonce_positions(&a);
    int same_step = 0, same_stream = 0, total = 0;
    for (int64_t k = 1; k <= a.K; k++)
        for (int64_t p = 0; p < P; p++)
            for (int64_t j = 0; j < a.negatives; j++) {
                int64_t x = ref_infonce_negative(&a, k, p, j);
                CU_ASSERT_FATAL(x >= 0 && x < P);
                CU_ASSERT(x == ref_infonce_negative(&a, k, p, j));
                same_step += x == ref_infonce_negative(&b, k, p, j);
                same_stream += x == ref_infonce_negative(&s, k, p, j);
                total++;
            }
    /* Independent draws agree with probability 1/P = 1/75. */
    CU_ASSERT(same_step < total / 10);
    CU_ASSERT(same_stream < total / 10);
}

static double ce_logits_f(void *p);
typedef struct ce_case { int64_t N, C; double *l; int32_t *lab; } ce_case;
static double ce_logits_f(void *p) {
    ce_case *c = p;
    return ref_cross_entropy(c->N, c->C, c->l, c->lab);
}

static void test_ref_cross_entropy_fd(void) {
    int32_t lab[5] = {0, 6, 3, 2, 6};
    ce_case cc = {5, 7, rand_d(35, 3, -3, 3), lab};
    double d[35], g[35];
    ref_cross_entropy_bwd(cc.N, cc.C, cc.l, cc.lab, d);
    fd_grad(ce_logits_f, &cc, cc.l, 35, 1e-6, g);
    CU_ASSERT(close_d("dlogits", d, g, 35, 1e-9, 1e-6));
    /* by hand: two classes, logits (0, log 3), label 1: −log(3/4) */
    double l2[2] = {0, log(3.0)};
    int32_t one = 1;
    CU_ASSERT_DOUBLE_EQUAL(ref_cross_entropy(1, 2, l2, &one), -log(0.75), 1e-12);
    /* out-of-range labels contribute nothing */
    int32_t bad[2] = {-1, 9};
    CU_ASSERT_DOUBLE_EQUAL(ref_cross_entropy(2, 7, cc.l, bad), 0.0, 0.0);
    gim_free(cc.l);
}

typedef struct gru_case {
    int64_t N, T, C, H;
    double *x, *wi, *wh, *bi, *bh, *dy, *y;
} gru_case;

/* Σ y ⊙ dy: its gradient is the backward given upstream dy. */
static double gru_f(void *p) {
    gru_case *g = p;
    ref_gru(g->N, g->T, g->C, g->H, g->x, g->wi, g->wh, g->bi, g->bh, g->y);
    double s = 0;
    for (int64_t i = 0; i < g->N * g->T * g->H; i++) s += g->y[i] * g->dy[i];
    return s;
}

static void test_ref_gru_fd(void) {
    for (int T = 1; T <= 4; T++) {
        gru_case g = {2, T, 3, 5, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
        int64_t H = g.H, C = g.C, NTC = g.N * T * C, NTH = g.N * T * H;
        g.x = rand_d(NTC, 50 + T, -1, 1);
        g.wi = rand_d(3 * H * C, 60 + T, -0.8, 0.8);
        g.wh = rand_d(3 * H * H, 70 + T, -0.8, 0.8);
        g.bi = rand_d(3 * H, 80 + T, -0.5, 0.5);
        g.bh = rand_d(3 * H, 90 + T, -0.5, 0.5);
        g.dy = rand_d(NTH, 100 + T, -1, 1);
        g.y = gim_xmalloc(sizeof(double) * NTH);
        double *dx = gim_xmalloc(sizeof(double) * NTC), *dwi = gim_xmalloc(sizeof(double) * 3 * H * C);
        double *dwh = gim_xmalloc(sizeof(double) * 3 * H * H), *dbi = gim_xmalloc(sizeof(double) * 3 * H);
        double *dbh = gim_xmalloc(sizeof(double) * 3 * H), *fd = gim_xmalloc(sizeof(double) * 3 * H * H + NTC);
        ref_gru_bwd(g.N, T, C, H, g.x, g.wi, g.wh, g.bi, g.bh, g.dy, dx, dwi, dwh, dbi, dbh);
        fd_grad(gru_f, &g, g.x, NTC, 1e-6, fd);
        CU_ASSERT(close_d("dx", dx, fd, NTC, 1e-8, 1e-6));
        fd_grad(gru_f, &g, g.wi, 3 * H * C, 1e-6, fd);
        CU_ASSERT(close_d("dw_ih", dwi, fd, 3 * H * C, 1e-8, 1e-6));
        fd_grad(gru_f, &g, g.wh, 3 * H * H, 1e-6, fd);
        CU_ASSERT(close_d("dw_hh", dwh, fd, 3 * H * H, 1e-8, 1e-6));
        fd_grad(gru_f, &g, g.bi, 3 * H, 1e-6, fd);
        CU_ASSERT(close_d("db_ih", dbi, fd, 3 * H, 1e-8, 1e-6));
        fd_grad(gru_f, &g, g.bh, 3 * H, 1e-6, fd);
        CU_ASSERT(close_d("db_hh", dbh, fd, 3 * H, 1e-8, 1e-6));
        gim_free(g.x); gim_free(g.wi); gim_free(g.wh); gim_free(g.bi); gim_free(g.bh);
        gim_free(g.dy); gim_free(g.y);
        gim_free(dx); gim_free(dwi); gim_free(dwh); gim_free(dbi); gim_free(dbh); gim_free(fd);
    }
}

/* One step by hand, H = 1, C = 1, T = 1: h = (1 − z) n with h_0 = 0. */
static void test_ref_gru_by_hand(void) {
    double x = 0.7, wi[3] = {0.3, -0.2, 0.5}, wh[3] = {0.1, 0.4, -0.6}, bi[3] = {0.05, 0.1, -0.1};
    double bh[3] = {-0.2, 0.3, 0.25}, y;
    ref_gru(1, 1, 1, 1, &x, wi, wh, bi, bh, &y);
    double r = 1 / (1 + exp(-(0.3 * x + 0.05 - 0.2)));
    double z = 1 / (1 + exp(-(-0.2 * x + 0.1 + 0.3)));
    double n = tanh(0.5 * x - 0.1 + r * 0.25);
    CU_ASSERT_DOUBLE_EQUAL(y, (1 - z) * n, 1e-12);
}

static const gim_test tests[] = {
    {"ref_infonce_by_hand", test_ref_infonce_by_hand},
    {"ref_infonce_negatives", test_ref_infonce_negatives},
    {"ref_infonce_seq_fd", test_ref_infonce_seq_fd},
    {"ref_infonce_grid_fd", test_ref_infonce_grid_fd},
    {"ref_cross_entropy_fd", test_ref_cross_entropy_fd},
    {"ref_gru_by_hand", test_ref_gru_by_hand},
    {"ref_gru_fd", test_ref_gru_fd},
    {NULL, NULL},
};

int main(void) { return gim_run_suite("op_loss", tests); }
