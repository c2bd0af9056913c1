/* Loss-family ops (infonce, cross_entropy, gru): the plain-C references'
 * analytic gradients against central finite differences, in double; the
 * generated code against the references. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cg.h"
#include "gim_runtime.h"
#include "gim_util.h"
#include "graph.h"
#include "harness_jit.h"
#include "harness_op.h"
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

/* Central differences of f with respect to every element of x. */
static void fd_grad(hop_fd_fn f, void *ctx, double *x, size_t n, double h, double *g) {
    for (size_t i = 0; i < n; i++) g[i] = hop_fd(f, ctx, x, (int64_t)i, h);
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


/* ---- a minimal JIT: one function running the given nodes' generators ---------- */

/* Compiles `void f(float **bufs, i64 step, i64 seed)` binding node i's buffer
 * to bufs[i], runs the loss-family generators of targets[0..nt) in order
 * (each node's scratch a module global: none is planned here), optimises at
 * O2 for the host and calls it. Returns 0, or -1 (reported) on failure. */
static int jit_run(const gim_graph *g, gim_node *const *targets, int nt, float **bufs, uint64_t step,
                   uint64_t seed) {
    return hop_run(g, targets, nt, cg_loss_ops, "default<O2>", true, bufs, step, seed);
}

static gim_node *mk(gim_graph *g, gim_op op, int n_in, gim_node **in, int rank, const int64_t *d) {
    gim_node *n = gim_node_new(g, op, n_in, in, (gim_loc){0});
    n->shape = gim_shape_make(rank, d);
    return n;
}

static float *to_f(const double *d, size_t n) {
    float *f = gim_xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) f[i] = (float)d[i];
    return f;
}

/* Rounds to float and back, so the reference sees exactly the JIT's inputs. */
static void round_f(double *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = (float)d[i];
}

/* |jit − ref| <= tol · max(1, max |ref|) elementwise; reports the first miss. */
static int close_fd(const char *what, const float *a, const double *b, size_t n, double tol) {
    double scale = 1;
    for (size_t i = 0; i < n; i++) scale = fabs(b[i]) > scale ? fabs(b[i]) : scale;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= tol * scale)) {
            fprintf(stderr, "\n  %s[%zu]: jit %.9g vs ref %.9g\n", what, i, a[i], b[i]);
            return 0;
        }
    return 1;
}

/* ---- infonce: generated code against the reference --------------------------------- */

typedef struct nce_run {
    ref_infonce_cfg cfg;
    bool shared;
    double *z, *c, *W;            /* inputs (float-representable) */
    float loss;                   /* JIT forward */
    float *packed;                /* JIT backward [dz | dc | dW | loss] */
} nce_run;

/* Builds z, c (or c = z), W, infonce and infonce_bwd; runs both generated. */
static int nce_jit(nce_run *r) {
    ref_infonce_cfg *cfg = &r->cfg;
    if (r->shared) cfg->Cc = cfg->Cz;
    int64_t P = ref_infonce_positions(cfg);
    size_t nz = P * cfg->Cz, nc = P * cfg->Cc, nw = cfg->K * cfg->Cz * cfg->Cc;
    gim_graph *g = gim_graph_new();
    int64_t dz4[4] = {cfg->N, cfg->len, cfg->grid ? cfg->len : cfg->Cz, cfg->Cz};
    int64_t dc4[4] = {cfg->N, cfg->len, cfg->grid ? cfg->len : cfg->Cc, cfg->Cc};
    int rank = cfg->grid ? 4 : 3;
    gim_node *z = mk(g, GIM_OP_INPUT, 0, NULL, rank, dz4);
    gim_node *c = r->shared ? z : mk(g, GIM_OP_INPUT, 0, NULL, rank, dc4);
    int64_t dw[3] = {cfg->K, cfg->Cz, cfg->Cc};
    gim_node *W = mk(g, GIM_OP_PARAM, 0, NULL, 3, dw);
    gim_node *in[3] = {z, c, W};
    gim_node *loss = mk(g, GIM_OP_INFONCE, 3, in, 0, NULL);
    int64_t total = nz + nc + nw + 1;      /* [dz | dc | dW | loss] */
    gim_node *bwd = mk(g, GIM_OP_INFONCE_BWD, 3, in, 1, &total);
    loss->attr[0] = bwd->attr[0] = (double)cfg->K;
    loss->attr[1] = bwd->attr[1] = (double)cfg->negatives;
    loss->rng_stream = bwd->rng_stream = cfg->stream;
    float **bufs = gim_xmalloc(sizeof(float *) * g->nodes.len);
    float *fz = to_f(r->z, nz), *fc = to_f(r->c, nc), *fw = to_f(r->W, nw);
    r->packed = gim_xmalloc(sizeof(float) * total);
    for (int64_t i = 0; i < total; i++) r->packed[i] = NAN;   /* every element must be written */
    bufs[z->id] = fz;
    bufs[c->id] = r->shared ? fz : fc;
    bufs[W->id] = fw;
    bufs[loss->id] = &r->loss;
    bufs[bwd->id] = r->packed;
    gim_node *targets[2] = {loss, bwd};
    int rc = jit_run(g, targets, 2, bufs, cfg->step, cfg->seed);
    gim_free(bufs); gim_free(fz); gim_free(fc); gim_free(fw);
    gim_graph_free(g);
    return rc;
}

static void nce_data(nce_run *r, unsigned seed) {
    if (r->shared) r->cfg.Cc = r->cfg.Cz;
    int64_t P = ref_infonce_positions(&r->cfg);
    r->z = rand_d(P * r->cfg.Cz, seed, -1, 1);
    r->c = rand_d(P * r->cfg.Cc, seed + 1, -1, 1);
    r->W = rand_d(r->cfg.K * r->cfg.Cz * r->cfg.Cc, seed + 2, -0.5, 0.5);
    round_f(r->z, P * r->cfg.Cz);
    round_f(r->c, P * r->cfg.Cc);
    round_f(r->W, r->cfg.K * r->cfg.Cz * r->cfg.Cc);
    if (r->shared) memcpy(r->c, r->z, sizeof(double) * P * r->cfg.Cz);
}

static void nce_free(nce_run *r) {
    gim_free(r->z); gim_free(r->c); gim_free(r->W); gim_free(r->packed);
}

/* JIT forward and backward against the reference, same step, seed, stream. */
static void check_infonce_jit(ref_infonce_cfg cfg, bool shared, unsigned seed) {
    nce_run r = {cfg, shared, NULL, NULL, NULL, 0, NULL};
    nce_data(&r, seed);
    CU_ASSERT_FATAL(nce_jit(&r) == 0);
    int64_t P = ref_infonce_positions(&r.cfg);
    size_t nz = P * r.cfg.Cz, nc = P * r.cfg.Cc, nw = r.cfg.K * r.cfg.Cz * r.cfg.Cc;
    double want = ref_infonce(&r.cfg, r.z, r.c, r.W);
    CU_ASSERT(fabs(r.loss - want) <= 2e-5 * (1 + fabs(want)));
    if (!(fabs(r.loss - want) <= 2e-5 * (1 + fabs(want)))) fprintf(stderr, "\n  loss: jit %.9g vs ref %.9g\n", r.loss, want);
    /* the backward's loss (what a training step returns) is the forward's, bit for bit */
    CU_ASSERT(memcmp(&r.packed[nz + nc + nw], &r.loss, sizeof(float)) == 0);
    double *dz = gim_xmalloc(sizeof(double) * nz), *dc = gim_xmalloc(sizeof(double) * nc);
    double *dW = gim_xmalloc(sizeof(double) * nw);
    ref_infonce_bwd(&r.cfg, r.z, r.c, r.W, dz, dc, dW);
    /* gradients are O(1/(K·M)); compare relative to the largest */
    double gmax = 0;
    for (size_t i = 0; i < nw; i++) gmax = fabs(dW[i]) > gmax ? fabs(dW[i]) : gmax;
    for (size_t i = 0; i < nz; i++) gmax = fabs(dz[i]) > gmax ? fabs(dz[i]) : gmax;
    CU_ASSERT(gmax > 0);
    for (size_t i = 0; i < nz; i++) dz[i] /= gmax;
    for (size_t i = 0; i < nc; i++) dc[i] /= gmax;
    for (size_t i = 0; i < nw; i++) dW[i] /= gmax;
    for (size_t i = 0; i < nz + nc + nw; i++) r.packed[i] /= (float)gmax;
    CU_ASSERT(close_fd("dz", r.packed, dz, nz, 1e-4));
    CU_ASSERT(close_fd("dc", r.packed + nz, dc, nc, 1e-4));
    CU_ASSERT(close_fd("dW", r.packed + nz + nc, dW, nw, 1e-4));
    gim_free(dz); gim_free(dc); gim_free(dW);
    nce_free(&r);
}

static void test_jit_infonce_seq(void) {
    for (int K = 1; K <= 3; K++)
        for (int shared = 0; shared <= 1; shared++) {
            ref_infonce_cfg cfg = {.grid = false, .N = 3, .len = 7, .Cz = 5, .Cc = 6, .K = K,
                                   .negatives = 5, .seed = 9, .stream = 1, .step = 3};
            check_infonce_jit(cfg, shared, 200 + 10 * K + shared);
        }
}

static void test_jit_infonce_grid(void) {
    for (int K = 1; K <= 3; K++)
        for (int shared = 0; shared <= 1; shared++) {
            ref_infonce_cfg cfg = {.grid = true, .N = 2, .len = 5, .Cz = 7, .Cc = 3, .K = K,
                                   .negatives = 7, .seed = 4, .stream = 3, .step = 1};
            check_infonce_jit(cfg, shared, 300 + 10 * K + shared);
        }
}

/* The paper's vision setting, scaled down: a 7×7 grid, 5 steps, 16 negatives. */
static void test_jit_infonce_grid_large(void) {
    ref_infonce_cfg cfg = {.grid = true, .N = 4, .len = 7, .Cz = 64, .Cc = 64, .K = 5,
                           .negatives = 16, .seed = 1234, .stream = 2, .step = 17};
    check_infonce_jit(cfg, true, 400);
    check_infonce_jit(cfg, false, 401);
}

/* Chunks of positions (cg_nce_chunk_floats lowered so that a chunk is 1, 2,
 * 5 or 13 positions, cutting samples and grid rows anywhere, the last chunk
 * partial): the same loss and gradients as the reference, with and without
 * a context of its own, in sequence and grid form, at odd sizes. */
static void test_jit_infonce_chunks(void) {
    int64_t keep = cg_nce_chunk_floats;
    const int64_t rows[] = {1, 2, 5, 13};
    for (int i = 0; i < 4; i++)
        for (int shared = 0; shared <= 1; shared++) {
            ref_infonce_cfg seq = {.grid = false, .N = 3, .len = 11, .Cz = 5, .Cc = 7, .K = 4,
                                   .negatives = 6, .seed = 5, .stream = 2, .step = 4};
            cg_nce_chunk_floats = rows[i] * seq.K * seq.Cz;
            check_infonce_jit(seq, shared, 1000 + 10 * i + shared);
            ref_infonce_cfg grid = {.grid = true, .N = 2, .len = 5, .Cz = 3, .Cc = 9, .K = 3,
                                    .negatives = 5, .seed = 6, .stream = 1, .step = 2};
            cg_nce_chunk_floats = rows[i] * grid.K * grid.Cz;
            check_infonce_jit(grid, shared, 1100 + 10 * i + shared);
        }
    cg_nce_chunk_floats = keep;
}

/* Rows of z wider than a vector with a tail (Cz = 21 = 16 + 5) and more
 * candidates than one pass of the gathers takes (13 negatives: 14 rows, a pass
 * of CG_DOTS_MAX = 12 and one of 2), in chunks of 1, 3 and all positions (the
 * sorted scatter across chunks, candidates drawn a step ahead). */
static void test_jit_infonce_wide_rows(void) {
    int64_t keep = cg_nce_chunk_floats;
    const int64_t rows[] = {1, 3, 1000};
    for (int i = 0; i < 3; i++)
        for (int shared = 0; shared <= 1; shared++) {
            ref_infonce_cfg cfg = {.grid = false, .N = 3, .len = 9, .Cz = 21, .Cc = 19, .K = 3,
                                   .negatives = 13, .seed = 77, .stream = 3, .step = 5};
            cg_nce_chunk_floats = rows[i] * cfg.K * cfg.Cz;
            check_infonce_jit(cfg, shared, 1300 + 10 * i + shared);
        }
    cg_nce_chunk_floats = keep;
}

/* The backward's buffers start from zero on every call: 9 samples (8 parallel
 * parts, each with its own partial dz, zeroed by the part itself) and steps
 * k >= len without targets; the same compiled code called again (its scratch
 * holding the last call's partials), and on one thread and on two, gives the
 * same bits, matching the reference. */
static void check_infonce_bwd_repeat(void) {
    ref_infonce_cfg cfg = {.grid = true, .N = 9, .len = 4, .Cz = 16, .Cc = 12, .K = 5,
                           .negatives = 6, .seed = 31, .stream = 2, .step = 7};
    nce_run r = {cfg, false, NULL, NULL, NULL, 0, NULL};
    nce_data(&r, 700);
    int64_t P = ref_infonce_positions(&r.cfg);
    size_t nz = P * cfg.Cz, nc = P * cfg.Cc, nw = cfg.K * cfg.Cz * cfg.Cc, total = nz + nc + nw + 1;
    gim_graph *g = gim_graph_new();
    int64_t dz4[4] = {cfg.N, cfg.len, cfg.len, cfg.Cz}, dc4[4] = {cfg.N, cfg.len, cfg.len, cfg.Cc};
    int64_t dw[3] = {cfg.K, cfg.Cz, cfg.Cc}, tot = (int64_t)total;
    gim_node *z = mk(g, GIM_OP_INPUT, 0, NULL, 4, dz4), *c = mk(g, GIM_OP_INPUT, 0, NULL, 4, dc4);
    gim_node *W = mk(g, GIM_OP_PARAM, 0, NULL, 3, dw);
    gim_node *bwd = mk(g, GIM_OP_INFONCE_BWD, 3, (gim_node *[]){z, c, W}, 1, &tot);
    bwd->attr[0] = (double)cfg.K;
    bwd->attr[1] = (double)cfg.negatives;
    bwd->rng_stream = cfg.stream;
    float *fz = to_f(r.z, nz), *fc = to_f(r.c, nc), *fw = to_f(r.W, nw);
    float *out[3];
    float **bufs = gim_xmalloc(sizeof(float *) * g->nodes.len);
    bufs[z->id] = fz, bufs[c->id] = fc, bufs[W->id] = fw;
    hop_jit j;
    CU_ASSERT_FATAL(hop_build(g, &bwd, 1, cg_loss_ops, "default<O2>", true, &j) == 0);
    int keep = gim_rt_threads();
    for (int run = 0; run < 3; run++) {
        gim_rt_set_threads(run == 2 ? 1 : 2);
        out[run] = gim_xmalloc(sizeof(float) * total);
        for (size_t i = 0; i < total; i++) out[run][i] = NAN;
        bufs[bwd->id] = out[run];
        j.fn(bufs, cfg.step, cfg.seed);
    }
    gim_rt_set_threads(keep);
    hop_free(&j);
    CU_ASSERT(memcmp(out[0], out[1], sizeof(float) * total) == 0);
    CU_ASSERT(memcmp(out[0], out[2], sizeof(float) * total) == 0);
    double *dz = gim_xmalloc(sizeof(double) * nz), *dc = gim_xmalloc(sizeof(double) * nc);
    double *dW = gim_xmalloc(sizeof(double) * nw);
    ref_infonce_bwd(&r.cfg, r.z, r.c, r.W, dz, dc, dW);
    double gmax = 0;
    for (size_t i = 0; i < nz; i++) gmax = fabs(dz[i]) > gmax ? fabs(dz[i]) : gmax;
    for (size_t i = 0; i < nz; i++) dz[i] /= gmax;
    for (size_t i = 0; i < nc; i++) dc[i] /= gmax;
    for (size_t i = 0; i < nw; i++) dW[i] /= gmax;
    for (size_t i = 0; i < total; i++) out[1][i] /= (float)gmax;
    CU_ASSERT(close_fd("dz", out[1], dz, nz, 1e-4));
    CU_ASSERT(close_fd("dc", out[1] + nz, dc, nc, 1e-4));
    CU_ASSERT(close_fd("dW", out[1] + nz + nc, dW, nw, 1e-4));
    for (int run = 0; run < 3; run++) gim_free(out[run]);
    gim_free(dz); gim_free(dc); gim_free(dW);
    gim_free(bufs); gim_free(fz); gim_free(fc); gim_free(fw);
    gim_graph_free(g);
    nce_free(&r);
}

/* ... in one chunk, and in chunks of 7 positions (the dz rows a part owns
 * then take records from several chunks). */
static void test_jit_infonce_bwd_repeat(void) {
    int64_t keep = cg_nce_chunk_floats;
    check_infonce_bwd_repeat();
    cg_nce_chunk_floats = 7 * 5 * 16;     /* 7 positions of K·Cz = 5·16 */
    check_infonce_bwd_repeat();
    cg_nce_chunk_floats = keep;
}

/* No negatives: the loss is exactly 0 (one candidate); no gradient. */
static void test_jit_infonce_no_negatives(void) {
    ref_infonce_cfg cfg = {.grid = false, .N = 2, .len = 4, .Cz = 3, .Cc = 3, .K = 2,
                           .negatives = 0, .seed = 1, .stream = 1, .step = 1};
    nce_run r = {cfg, false, NULL, NULL, NULL, 0, NULL};
    nce_data(&r, 500);
    CU_ASSERT_FATAL(nce_jit(&r) == 0);
    CU_ASSERT(fabs(r.loss) < 1e-6);
    int64_t total = ref_infonce_positions(&r.cfg) * (r.cfg.Cz + r.cfg.Cc) + r.cfg.K * r.cfg.Cz * r.cfg.Cc + 1;   /* and the loss */
    for (int64_t i = 0; i < total; i++) CU_ASSERT(fabs(r.packed[i]) < 1e-6);
    nce_free(&r);
}

/* The generated code draws the documented negatives: forward and backward
 * match the reference at the same call.step and stream, and the loss moves
 * when only the step or only the stream changes. */
static void test_jit_infonce_negatives(void) {
    ref_infonce_cfg cfg = {.grid = false, .N = 4, .len = 6, .Cz = 8, .Cc = 8, .K = 2,
                           .negatives = 4, .seed = 77, .stream = 1, .step = 5};
    nce_run r = {cfg, false, NULL, NULL, NULL, 0, NULL};
    nce_data(&r, 600);
    /* scores large enough that other negatives give a clearly different loss */
    for (int64_t i = 0; i < cfg.K * cfg.Cz * cfg.Cc; i++) r.W[i] *= 4;
    round_f(r.W, cfg.K * cfg.Cz * cfg.Cc);
    CU_ASSERT_FATAL(nce_jit(&r) == 0);
    double same = ref_infonce(&r.cfg, r.z, r.c, r.W);
    ref_infonce_cfg other_step = r.cfg, other_stream = r.cfg;
    other_step.step = 6;
    other_stream.stream = 2;
    double d_step = ref_infonce(&other_step, r.z, r.c, r.W), d_stream = ref_infonce(&other_stream, r.z, r.c, r.W);
    double tol = 2e-5 * (1 + fabs(same));
    CU_ASSERT(fabs(r.loss - same) <= tol);
    /* (with these seeds the means differ by 2.7e-3 and 0.63; tol is 1.2e-4) */
    CU_ASSERT(fabs(r.loss - d_step) > 10 * tol);
    CU_ASSERT(fabs(r.loss - d_stream) > 10 * tol);
    /* backward: matches the reference at this step, not at the next one */
    int64_t P = ref_infonce_positions(&r.cfg);
    size_t nz = P * cfg.Cz, nc = P * cfg.Cc, nw = cfg.K * cfg.Cz * cfg.Cc;
    double *dz = gim_xmalloc(sizeof(double) * nz), *dc = gim_xmalloc(sizeof(double) * nc);
    double *dW = gim_xmalloc(sizeof(double) * nw);
    ref_infonce_bwd(&r.cfg, r.z, r.c, r.W, dz, dc, dW);
    CU_ASSERT(close_fd("dz", r.packed, dz, nz, 1e-4));
    ref_infonce_cfg others[2] = {other_step, other_stream};
    for (int o = 0; o < 2; o++) {
        ref_infonce_bwd(&others[o], r.z, r.c, r.W, dz, dc, dW);
        double diff = 0;
        for (size_t i = 0; i < nz; i++) diff = fmax(diff, fabs(r.packed[i] - dz[i]));
        CU_ASSERT(diff > 1e-3);
    }
    gim_free(dz); gim_free(dc); gim_free(dW);
    /* a second run at the same step draws the same: bit-identical */
    float first = r.loss;
    float *packed = r.packed;
    r.packed = NULL;
    CU_ASSERT_FATAL(nce_jit(&r) == 0);
    CU_ASSERT(r.loss == first);
    CU_ASSERT(memcmp(packed, r.packed, sizeof(float) * (nz + nc + nw + 1)) == 0);
    gim_free(packed);
    nce_free(&r);
}

/* ---- cross_entropy ------------------------------------------------------------------ */

static void check_ce_jit(int64_t N, int64_t C, const int32_t *labels, unsigned seed, double spread) {
    double *l = rand_d(N * C, seed, -spread, spread);
    round_f(l, N * C);
    gim_graph *g = gim_graph_new();
    int64_t dl[2] = {N, C};
    gim_node *logits = mk(g, GIM_OP_INPUT, 0, NULL, 2, dl);
    gim_node *lab = mk(g, GIM_OP_LABELS, 0, NULL, 1, &N);
    lab->is_int = true;
    gim_node *in[2] = {logits, lab};
    gim_node *loss = mk(g, GIM_OP_CROSS_ENTROPY, 2, in, 0, NULL);
    gim_node *bwd = mk(g, GIM_OP_CROSS_ENTROPY_BWD, 2, in, 2, dl);
    float *fl = to_f(l, N * C), out = NAN, *dout = gim_xmalloc(sizeof(float) * N * C);
    float *bufs[4];
    bufs[logits->id] = fl;
    bufs[lab->id] = (float *)(void *)labels;
    bufs[loss->id] = &out;
    bufs[bwd->id] = dout;
    gim_node *targets[2] = {loss, bwd};
    CU_ASSERT_FATAL(jit_run(g, targets, 2, bufs, 1, 0) == 0);
    double want = ref_cross_entropy(N, C, l, labels);
    CU_ASSERT(fabs(out - want) <= 1e-5 * (1 + fabs(want)));
    double *d = gim_xmalloc(sizeof(double) * N * C);
    ref_cross_entropy_bwd(N, C, l, labels, d);
    CU_ASSERT(close_fd("dlogits", dout, d, N * C, 1e-6));
    gim_free(d); gim_free(l); gim_free(fl); gim_free(dout);
    gim_graph_free(g);
}

static void test_jit_cross_entropy(void) {
    int32_t lab[5] = {0, 6, 3, 2, 6};
    check_ce_jit(5, 7, lab, 700, 3);
    /* large logits: the max must be subtracted (exp(90) overflows float) */
    check_ce_jit(5, 7, lab, 701, 90);
    int32_t one[1] = {0};
    check_ce_jit(1, 1, one, 702, 1);
    /* an out-of-range label contributes nothing and gets no gradient */
    int32_t bad[4] = {2, -1, 10, 3};
    check_ce_jit(4, 10, bad, 703, 2);
}

/* ---- gru ------------------------------------------------------------------------------- */

static void check_gru_jit(int64_t N, int64_t T, int64_t C, int64_t H, unsigned seed) {
    int64_t NTC = N * T * C, NTH = N * T * H, H3 = 3 * H;
    double *x = rand_d(NTC, seed, -1, 1), *wi = rand_d(H3 * C, seed + 1, -0.7, 0.7);
    double *wh = rand_d(H3 * H, seed + 2, -0.7, 0.7), *bi = rand_d(H3, seed + 3, -0.5, 0.5);
    double *bh = rand_d(H3, seed + 4, -0.5, 0.5), *dy = rand_d(NTH, seed + 5, -1, 1);
    round_f(x, NTC); round_f(wi, H3 * C); round_f(wh, H3 * H); round_f(bi, H3); round_f(bh, H3);
    round_f(dy, NTH);
    gim_graph *g = gim_graph_new();
    int64_t dx3[3] = {N, T, C}, dy3[3] = {N, T, H}, dwi[2] = {H3, C}, dwh[2] = {H3, H};
    gim_node *nx = mk(g, GIM_OP_INPUT, 0, NULL, 3, dx3);
    gim_node *nwi = mk(g, GIM_OP_PARAM, 0, NULL, 2, dwi), *nwh = mk(g, GIM_OP_PARAM, 0, NULL, 2, dwh);
    gim_node *nbi = mk(g, GIM_OP_PARAM, 0, NULL, 1, &H3), *nbh = mk(g, GIM_OP_PARAM, 0, NULL, 1, &H3);
    gim_node *ndy = mk(g, GIM_OP_INPUT, 0, NULL, 3, dy3);
    gim_node *in[5] = {nx, nwi, nwh, nbi, nbh};
    gim_node *gru = mk(g, GIM_OP_GRU, 5, in, 3, dy3);
    int64_t total = NTC + H3 * C + H3 * H + 2 * H3;
    gim_node *bin[7] = {ndy, nx, gru, nwi, nwh, nbi, nbh};
    gim_node *bwd = mk(g, GIM_OP_GRU_BWD, 7, bin, 1, &total);
    gru->attr[0] = bwd->attr[0] = (double)H;
    float *fx = to_f(x, NTC), *fwi = to_f(wi, H3 * C), *fwh = to_f(wh, H3 * H), *fbi = to_f(bi, H3);
    float *fbh = to_f(bh, H3), *fdy = to_f(dy, NTH), *fy = gim_xmalloc(sizeof(float) * NTH);
    float *packed = gim_xmalloc(sizeof(float) * total);
    for (int64_t i = 0; i < total; i++) packed[i] = NAN;
    float *bufs[8];
    bufs[nx->id] = fx; bufs[nwi->id] = fwi; bufs[nwh->id] = fwh; bufs[nbi->id] = fbi; bufs[nbh->id] = fbh;
    bufs[ndy->id] = fdy; bufs[gru->id] = fy; bufs[bwd->id] = packed;
    gim_node *targets[2] = {gru, bwd};
    CU_ASSERT_FATAL(jit_run(g, targets, 2, bufs, 1, 0) == 0);
    double *y = gim_xmalloc(sizeof(double) * NTH);
    ref_gru(N, T, C, H, x, wi, wh, bi, bh, y);
    CU_ASSERT(close_fd("y", fy, y, NTH, 2e-6 * (double)(T + 1)));
    double *d = gim_xmalloc(sizeof(double) * total);
    ref_gru_bwd(N, T, C, H, x, wi, wh, bi, bh, dy, d, d + NTC, d + NTC + H3 * C, d + NTC + H3 * C + H3 * H,
                d + NTC + H3 * C + H3 * H + H3);
    double tol = 1e-5 * (double)(T + 1);
    CU_ASSERT(close_fd("dx", packed, d, NTC, tol));
    CU_ASSERT(close_fd("dw_ih", packed + NTC, d + NTC, H3 * C, tol));
    CU_ASSERT(close_fd("dw_hh", packed + NTC + H3 * C, d + NTC + H3 * C, H3 * H, tol));
    CU_ASSERT(close_fd("db_ih", packed + NTC + H3 * C + H3 * H, d + NTC + H3 * C + H3 * H, H3, tol));
    CU_ASSERT(close_fd("db_hh", packed + NTC + H3 * C + H3 * H + H3, d + NTC + H3 * C + H3 * H + H3, H3, tol));
    gim_free(x); gim_free(wi); gim_free(wh); gim_free(bi); gim_free(bh); gim_free(dy);
    gim_free(fx); gim_free(fwi); gim_free(fwh); gim_free(fbi); gim_free(fbh); gim_free(fdy); gim_free(fy);
    gim_free(packed); gim_free(y); gim_free(d);
    gim_graph_free(g);
}

static void test_jit_gru(void) {
    for (int T = 1; T <= 4; T++) check_gru_jit(2, T, 3, 5, 800 + T);
    check_gru_jit(3, 9, 7, 11, 850);
    check_gru_jit(1, 5, 1, 1, 860);
}


/* ---- the CPC context: infonce(z, context = gru(z)) against finite differences ---- */

/* L(z, W, w_ih, w_hh, b_ih, b_hh) = infonce(z, gru(z), W), in double. */
typedef struct cpc_case {
    ref_infonce_cfg cfg;
    int64_t H;
    double *z, *W, *wi, *wh, *bi, *bh, *c;
} cpc_case;

static double cpc_f(void *p) {
    cpc_case *q = p;
    ref_gru(q->cfg.N, q->cfg.len, q->cfg.Cz, q->H, q->z, q->wi, q->wh, q->bi, q->bh, q->c);
    return ref_infonce(&q->cfg, q->z, q->c, q->W);
}

/* |jit − fd| <= tol · max(1, max |fd|), with fd the central differences of cpc_f in x */
static int cpc_fd_close(const char *what, cpc_case *q, double *x, const float *jit, size_t n, double tol) {
    double *fd = gim_xmalloc(sizeof(double) * n);
    fd_grad(cpc_f, q, x, n, 1e-4, fd);
    int ok = close_fd(what, jit, fd, n, tol);
    gim_free(fd);
    return ok;
}

/* The generated GRU and sequence InfoNCE with that GRU as context, chained as
 * autodiff chains them (dz = the loss's own dz + gru_bwd(dc)), at odd sizes
 * (3 samples of 7 steps, 5 channels, 3 hidden units, chunks of 4 positions
 * that cut samples), checked directly against finite differences of the
 * double-precision composite. */
static void test_jit_gru_infonce_fd(void) {
    int64_t keep = cg_nce_chunk_floats;
    cpc_case q = {.cfg = {.grid = false, .N = 3, .len = 7, .Cz = 5, .Cc = 3, .K = 3, .negatives = 4,
                          .seed = 11, .stream = 1, .step = 6},
                  .H = 3};
    int64_t N = q.cfg.N, T = q.cfg.len, C = q.cfg.Cz, H = q.H, H3 = 3 * H, K = q.cfg.K;
    int64_t nz = N * T * C, nc = N * T * H, nw = K * C * H;
    cg_nce_chunk_floats = 4 * K * C;
    q.z = rand_d(nz, 1201, -1, 1), q.W = rand_d(nw, 1202, -1, 1);
    q.wi = rand_d(H3 * C, 1203, -0.8, 0.8), q.wh = rand_d(H3 * H, 1204, -0.8, 0.8);
    q.bi = rand_d(H3, 1205, -0.5, 0.5), q.bh = rand_d(H3, 1206, -0.5, 0.5);
    q.c = gim_xmalloc(sizeof(double) * nc);
    float *fz = to_f(q.z, nz), *fW = to_f(q.W, nw), *fwi = to_f(q.wi, H3 * C), *fwh = to_f(q.wh, H3 * H);
    float *fbi = to_f(q.bi, H3), *fbh = to_f(q.bh, H3), *fc = gim_xmalloc(sizeof(float) * nc), floss = NAN;
    float *nce = gim_xmalloc(sizeof(float) * (nz + nc + nw + 1));
    int64_t gtotal = nz + H3 * C + H3 * H + 2 * H3;
    float *gru = gim_xmalloc(sizeof(float) * gtotal);

    /* forward and the loss's backward: c = gru(z), infonce(z, c, W), infonce_bwd */
    gim_graph *g = gim_graph_new();
    int64_t dz3[3] = {N, T, C}, dc3[3] = {N, T, H}, dw3[3] = {K, C, H}, dwi[2] = {H3, C}, dwh[2] = {H3, H};
    gim_node *z = mk(g, GIM_OP_INPUT, 0, NULL, 3, dz3), *W = mk(g, GIM_OP_PARAM, 0, NULL, 3, dw3);
    gim_node *nwi = mk(g, GIM_OP_PARAM, 0, NULL, 2, dwi), *nwh = mk(g, GIM_OP_PARAM, 0, NULL, 2, dwh);
    gim_node *nbi = mk(g, GIM_OP_PARAM, 0, NULL, 1, &H3), *nbh = mk(g, GIM_OP_PARAM, 0, NULL, 1, &H3);
    gim_node *c = mk(g, GIM_OP_GRU, 5, (gim_node *[]){z, nwi, nwh, nbi, nbh}, 3, dc3);
    int64_t ntot = nz + nc + nw + 1;
    gim_node *loss = mk(g, GIM_OP_INFONCE, 3, (gim_node *[]){z, c, W}, 0, NULL);
    gim_node *bwd = mk(g, GIM_OP_INFONCE_BWD, 3, (gim_node *[]){z, c, W}, 1, &ntot);
    c->attr[0] = (double)H;
    loss->attr[0] = bwd->attr[0] = (double)K;
    loss->attr[1] = bwd->attr[1] = (double)q.cfg.negatives;
    loss->rng_stream = bwd->rng_stream = q.cfg.stream;
    /* the loss's dc is the GRU's upstream gradient */
    gim_node *dy = mk(g, GIM_OP_INPUT, 0, NULL, 3, dc3);
    gim_node *gb = mk(g, GIM_OP_GRU_BWD, 7, (gim_node *[]){dy, z, c, nwi, nwh, nbi, nbh}, 1, &gtotal);
    gb->attr[0] = (double)H;
    float **bufs = gim_xmalloc(sizeof(float *) * g->nodes.len);
    bufs[z->id] = fz, bufs[W->id] = fW, bufs[nwi->id] = fwi, bufs[nwh->id] = fwh, bufs[nbi->id] = fbi;
    bufs[nbh->id] = fbh, bufs[c->id] = fc, bufs[loss->id] = &floss, bufs[bwd->id] = nce;
    bufs[dy->id] = nce + nz, bufs[gb->id] = gru;
    CU_ASSERT_FATAL(jit_run(g, (gim_node *[]){c, loss, bwd, gb}, 4, bufs, q.cfg.step, q.cfg.seed) == 0);

    double want = cpc_f(&q);
    CU_ASSERT(fabs(floss - want) <= 2e-5 * (1 + fabs(want)));
    /* dz = the loss's own + the GRU's dx; every other gradient from one place */
    for (int64_t i = 0; i < nz; i++) nce[i] += gru[i];
    CU_ASSERT(cpc_fd_close("dz", &q, q.z, nce, (size_t)nz, 1e-4));
    CU_ASSERT(cpc_fd_close("dW", &q, q.W, nce + nz + nc, (size_t)nw, 1e-4));
    CU_ASSERT(cpc_fd_close("dw_ih", &q, q.wi, gru + nz, (size_t)(H3 * C), 1e-4));
    CU_ASSERT(cpc_fd_close("dw_hh", &q, q.wh, gru + nz + H3 * C, (size_t)(H3 * H), 1e-4));
    CU_ASSERT(cpc_fd_close("db_ih", &q, q.bi, gru + nz + H3 * C + H3 * H, (size_t)H3, 1e-4));
    CU_ASSERT(cpc_fd_close("db_hh", &q, q.bh, gru + nz + H3 * C + H3 * H + H3, (size_t)H3, 1e-4));
    /* the context's gradient is not trivially zero */
    double norm = 0;
    for (int64_t i = 0; i < H3 * H; i++) norm += fabs(gru[nz + H3 * C + i]);
    CU_ASSERT(norm > 1e-4);
    cg_nce_chunk_floats = keep;
    gim_free(bufs);
    gim_graph_free(g);
    gim_free(q.z); gim_free(q.W); gim_free(q.wi); gim_free(q.wh); gim_free(q.bi); gim_free(q.bh); gim_free(q.c);
    gim_free(fz); gim_free(fW); gim_free(fwi); gim_free(fwh); gim_free(fbi); gim_free(fbh); gim_free(fc);
    gim_free(nce); gim_free(gru);
}

/* ---- through the whole pipeline: planner (scratch in work), module codegen ---------- */

/* infonce and infonce_bwd as exports of a harness module: the planned-scratch
 * path (work is NaN-filled, so reading scratch before writing it shows). */
static void check_infonce_planned(ref_infonce_cfg cfg, bool shared, unsigned seed) {
    nce_run r = {cfg, shared, NULL, NULL, NULL, 0, NULL};
    nce_data(&r, seed);
    ref_infonce_cfg *q = &r.cfg;
    int64_t P = ref_infonce_positions(q);
    size_t nz = P * q->Cz, nc = P * q->Cc, nw = q->K * q->Cz * q->Cc;
    hj_graph *h = hj_new(q->N);
    gim_node *z = q->grid ? hj_input(h, HJ_SHAPE(q->N, q->len, q->len, q->Cz)) : hj_input(h, HJ_SHAPE(q->N, q->len, q->Cz));
    gim_node *c = shared ? z
                         : q->grid ? hj_input(h, HJ_SHAPE(q->N, q->len, q->len, q->Cc))
                                   : hj_input(h, HJ_SHAPE(q->N, q->len, q->Cc));
    gim_node *W = hj_input(h, HJ_SHAPE(q->K, q->Cz, q->Cc));
    gim_node *loss = hj_op(h, GIM_OP_INFONCE, HJ_SCALAR, HJ_IN(z, c, W), HJ_ATTR((double)q->K, (double)q->negatives));
    gim_node *bwd = hj_op(h, GIM_OP_INFONCE_BWD, HJ_SHAPE((int64_t)(nz + nc + nw + 1)), HJ_IN(z, c, W),
                          HJ_ATTR((double)q->K, (double)q->negatives));
    loss->rng_stream = bwd->rng_stream = q->stream;
    CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(loss, bwd)) == 0);
    CU_ASSERT(hj_work_floats(h) >= (int64_t)(2 * nz));    /* the backward's scratch was planned */
    float *fz = to_f(r.z, nz), *fc = to_f(r.c, nc), *fw = to_f(r.W, nw), fl = NAN;
    float *packed = gim_xmalloc(sizeof(float) * (nz + nc + nw + 1));
    int rc = shared ? hj_run_ex(h, (const void *[]){fz, fw}, (float *[]){&fl, packed}, q->step, q->seed)
                    : hj_run_ex(h, (const void *[]){fz, fc, fw}, (float *[]){&fl, packed}, q->step, q->seed);
    CU_ASSERT_FATAL(rc == 0);
    double want = ref_infonce(q, r.z, r.c, r.W);
    CU_ASSERT(fabs(fl - want) <= 2e-5 * (1 + fabs(want)));
    CU_ASSERT(memcmp(&packed[nz + nc + nw], &fl, sizeof(float)) == 0);   /* the backward's loss */
    double *d = gim_xmalloc(sizeof(double) * (nz + nc + nw));
    ref_infonce_bwd(q, r.z, r.c, r.W, d, d + nz, d + nz + nc);
    double gmax = 0;
    for (size_t i = 0; i < nz + nc + nw; i++) gmax = fmax(gmax, fabs(d[i]));
    for (size_t i = 0; i < nz + nc + nw; i++) d[i] /= gmax, packed[i] /= (float)gmax;
    CU_ASSERT(close_fd("packed", packed, d, nz + nc + nw, 1e-4));
    gim_free(fz); gim_free(fc); gim_free(fw); gim_free(packed); gim_free(d);
    nce_free(&r);
    hj_free(h);
}

static void test_planned_infonce(void) {
    ref_infonce_cfg seq = {.grid = false, .N = 3, .len = 9, .Cz = 6, .Cc = 5, .K = 3,
                           .negatives = 10, .seed = 21, .stream = 2, .step = 8};
    check_infonce_planned(seq, false, 900);
    check_infonce_planned(seq, true, 901);
    ref_infonce_cfg grid = {.grid = true, .N = 2, .len = 5, .Cz = 9, .Cc = 4, .K = 2,
                            .negatives = 16, .seed = 22, .stream = 1, .step = 1};
    check_infonce_planned(grid, false, 902);
    check_infonce_planned(grid, true, 903);
}

static void test_planned_gru(void) {
    int64_t N = 3, T = 5, C = 4, H = 6, H3 = 18, NTC = N * T * C, NTH = N * T * H;
    int64_t total = NTC + H3 * C + H3 * H + 2 * H3;
    double *x = rand_d(NTC, 1, -1, 1), *wi = rand_d(H3 * C, 2, -0.5, 0.5), *wh = rand_d(H3 * H, 3, -0.5, 0.5);
    double *bi = rand_d(H3, 4, -0.5, 0.5), *bh = rand_d(H3, 5, -0.5, 0.5), *dy = rand_d(NTH, 6, -1, 1);
    round_f(x, NTC); round_f(wi, H3 * C); round_f(wh, H3 * H); round_f(bi, H3); round_f(bh, H3); round_f(dy, NTH);
    hj_graph *h = hj_new(N);
    gim_node *nx = hj_input(h, HJ_SHAPE(N, T, C)), *nwi = hj_input(h, HJ_SHAPE(H3, C));
    gim_node *nwh = hj_input(h, HJ_SHAPE(H3, H)), *nbi = hj_input(h, HJ_SHAPE(H3)), *nbh = hj_input(h, HJ_SHAPE(H3));
    gim_node *ndy = hj_input(h, HJ_SHAPE(N, T, H));
    gim_node *y = hj_op(h, GIM_OP_GRU, HJ_SHAPE(N, T, H), HJ_IN(nx, nwi, nwh, nbi, nbh), HJ_ATTR((double)H));
    gim_node *bwd = hj_op(h, GIM_OP_GRU_BWD, HJ_SHAPE(total), HJ_IN(ndy, nx, y, nwi, nwh, nbi, nbh), HJ_ATTR((double)H));
    CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(y, bwd)) == 0);
    float *f[6] = {to_f(x, NTC), to_f(wi, H3 * C), to_f(wh, H3 * H), to_f(bi, H3), to_f(bh, H3), to_f(dy, NTH)};
    float *fy = gim_xmalloc(sizeof(float) * NTH), *packed = gim_xmalloc(sizeof(float) * total);
    CU_ASSERT_FATAL(hj_run(h, (const void *[]){f[0], f[1], f[2], f[3], f[4], f[5]}, (float *[]){fy, packed}) == 0);
    double *ry = gim_xmalloc(sizeof(double) * NTH), *d = gim_xmalloc(sizeof(double) * total);
    ref_gru(N, T, C, H, x, wi, wh, bi, bh, ry);
    ref_gru_bwd(N, T, C, H, x, wi, wh, bi, bh, dy, d, d + NTC, d + NTC + H3 * C, d + NTC + H3 * C + H3 * H,
                d + NTC + H3 * C + H3 * H + H3);
    CU_ASSERT(close_fd("y", fy, ry, NTH, 1e-5));
    CU_ASSERT(close_fd("packed", packed, d, total, 1e-5));
    for (int i = 0; i < 6; i++) gim_free(f[i]);
    gim_free(x); gim_free(wi); gim_free(wh); gim_free(bi); gim_free(bh); gim_free(dy);
    gim_free(fy); gim_free(packed); gim_free(ry); gim_free(d);
    hj_free(h);
}

static void test_planned_cross_entropy(void) {
    int64_t N = 6, C = 5;
    int32_t lab[6] = {4, 0, 2, 2, 1, 3};
    double *l = rand_d(N * C, 11, -4, 4);
    round_f(l, N * C);
    hj_graph *h = hj_new(N);
    gim_node *logits = hj_input(h, HJ_SHAPE(N, C)), *labels = hj_labels(h, N);
    gim_node *loss = hj_op(h, GIM_OP_CROSS_ENTROPY, HJ_SCALAR, HJ_IN(logits, labels), HJ_NOATTR);
    gim_node *bwd = hj_op(h, GIM_OP_CROSS_ENTROPY_BWD, HJ_SHAPE(N, C), HJ_IN(logits, labels), HJ_NOATTR);
    CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(loss, bwd)) == 0);
    float *fl = to_f(l, N * C), out = NAN, dl[30];
    CU_ASSERT_FATAL(hj_run(h, (const void *[]){fl, lab}, (float *[]){&out, dl}) == 0);
    double want = ref_cross_entropy(N, C, l, lab), d[30];
    ref_cross_entropy_bwd(N, C, l, lab, d);
    CU_ASSERT(fabs(out - want) <= 1e-5 * (1 + want));
    CU_ASSERT(close_fd("dlogits", dl, d, N * C, 1e-6));
    gim_free(l); gim_free(fl);
    hj_free(h);
}

static const gim_test tests[] = {
    {"ref_infonce_by_hand", test_ref_infonce_by_hand},
    {"ref_infonce_negatives", test_ref_infonce_negatives},
    {"ref_infonce_seq_fd", test_ref_infonce_seq_fd},
    {"ref_infonce_grid_fd", test_ref_infonce_grid_fd},
    {"ref_cross_entropy_fd", test_ref_cross_entropy_fd},
    {"ref_gru_by_hand", test_ref_gru_by_hand},
    {"ref_gru_fd", test_ref_gru_fd},
    {"jit_infonce_seq", test_jit_infonce_seq},
    {"jit_infonce_grid", test_jit_infonce_grid},
    {"jit_infonce_grid_large", test_jit_infonce_grid_large},
    {"jit_infonce_no_negatives", test_jit_infonce_no_negatives},
    {"jit_infonce_bwd_repeat", test_jit_infonce_bwd_repeat},
    {"jit_infonce_chunks", test_jit_infonce_chunks},
    {"jit_infonce_wide_rows", test_jit_infonce_wide_rows},
    {"jit_gru_infonce_fd", test_jit_gru_infonce_fd},
    {"jit_infonce_negatives", test_jit_infonce_negatives},
    {"jit_cross_entropy", test_jit_cross_entropy},
    {"jit_gru", test_jit_gru},
    {"planned_infonce", test_planned_infonce},
    {"planned_gru", test_planned_gru},
    {"planned_cross_entropy", test_planned_cross_entropy},
    {NULL, NULL},
};

int main(void) { return gim_run_suite("op_loss", tests); }
