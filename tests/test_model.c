/* Whole-model tests: a tiny three-module Greedy InfoMax model written in .gim
 * source, compiled through the real pipeline
 *
 *     gim_parse_program_text -> gim_lower -> gim_partition -> gim_autodiff -> gim_jit
 *
 * and run through the gim_call ABI, one module after the other on the same
 * batch (the simultaneous schedule), parameters from gim_rt_init_params.
 *
 * What they pin down: a module's gradients do not depend on anything past its
 * gradient_block (greedy); each module's step gradients are the derivatives of
 * its own loss (central finite differences); Adam lowers every module's
 * InfoNCE loss; a seed fixes a run bit for bit; end to end, the last loss
 * reaches module 1's parameters through both blocks. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gim_compiler.h"
#include "gim_runtime.h"
#include "testutil.h"

#define BATCH 4

/* 12x12 images cut into a 5x5 grid of 4x4 patches (stride 2); three modules
 * of conv2d + relu, each with its own InfoNCE loss on the grid of patch
 * vectors. The %s slots vary module 2 and module 3 (their width and loss)
 * for the isolation test. */
static const char *tiny_fmt =
    "model tiny {\n"
    "    input x: [batch, 1, 12, 12]\n"
    "    p = patches(x, size=4, stride=2)\n"
    "    h1 = relu(conv2d(p, 4, k=3, pad=1))\n"
    "    infonce(spatial_mean(h1), steps=2, negatives=4)\n"
    "    h2 = relu(conv2d(gradient_block(h1), %d, k=3, pad=1))\n"
    "    infonce(spatial_mean(h2), steps=%d, negatives=%d)\n"
    "    h3 = relu(conv2d(gradient_block(h2), 4, k=3, pad=1))\n"
    "    infonce(spatial_mean(h3), steps=%d, negatives=4)\n"
    "    output spatial_mean(h3)\n"
    "}\n";

typedef struct variant {
    int width2, steps2, neg2, steps3;
} variant;

static const variant base = {4, 2, 4, 2};

/* ---- compiling ------------------------------------------------------------------- */

static gim_exec_model *compile(variant v, bool e2e) {
    char src[2048];
    snprintf(src, sizeof src, tiny_fmt, v.width2, v.steps2, v.neg2, v.steps3);
    gim_diag d;
    gim_diag_init(&d, stderr);
    gim_arena *arena = gim_arena_new();
    gim_exec_model *em = NULL;
    gim_program *p = gim_parse_program_text(&d, arena, "tiny.gim", src, strlen(src), NULL);
    gim_graph *g = NULL;
    if (p && d.n_errors == 0) g = gim_lower(&d, p, BATCH);
    if (g && gim_partition(&d, g, e2e) == 0 && gim_autodiff(&d, g) == 0) {
        gim_train_config cfg;
        gim_train_config_defaults(&cfg);
        cfg.batch = BATCH;
        gim_cg_options o = {.opt_level = 2, .cfg = &cfg};
        em = gim_jit(&d, g, &o);
    }
    gim_graph_free(g);
    gim_arena_free(arena);
    gim_diag_release(&d);
    return em;
}

/* The base greedy model, compiled once and shared by the tests that only run it. */
static gim_exec_model *base_model_cache;
static gim_exec_model *base_model(void) {
    if (!base_model_cache) base_model_cache = compile(base, false);
    return base_model_cache;
}

/* ---- running: every buffer of a run ------------------------------------------------ */

typedef struct run {
    gim_exec_model *em;
    void **slots;                 /* one buffer per slot */
    float **params, **grads, **opt, **work;
    const float ***ins;           /* per module: its input slot buffers */
    float ***outs;                /* per module: its export slot buffers */
} run;

static void *zalloc(int64_t floats) {
    return gim_malloc_aligned((size_t)(floats > 0 ? floats : 1) * sizeof(float));
}

static run *run_new(gim_exec_model *em, uint64_t seed) {
    run *r = calloc(1, sizeof *r);
    r->em = em;
    r->slots = calloc((size_t)em->n_slots, sizeof *r->slots);
    for (int s = 0; s < em->n_slots; s++) r->slots[s] = zalloc(em->slots[s].numel);
    int nm = em->n_modules;
    r->params = calloc((size_t)nm, sizeof(float *));
    r->grads = calloc((size_t)nm, sizeof(float *));
    r->opt = calloc((size_t)nm, sizeof(float *));
    r->work = calloc((size_t)nm, sizeof(float *));
    r->ins = calloc((size_t)nm, sizeof *r->ins);
    r->outs = calloc((size_t)nm, sizeof *r->outs);
    for (int m = 0; m < nm; m++) {
        const gim_exec_module *mod = &em->modules[m];
        r->params[m] = zalloc(mod->n_param_floats);
        r->grads[m] = zalloc(mod->n_param_floats);
        r->opt[m] = zalloc(mod->n_opt_floats);
        r->work[m] = zalloc(mod->n_work_floats);
        gim_rt_init_params(mod, r->params[m], seed);
        r->ins[m] = calloc((size_t)mod->n_inputs + 1, sizeof(float *));
        for (int i = 0; i < mod->n_inputs; i++) r->ins[m][i] = r->slots[mod->inputs[i]];
        r->outs[m] = calloc((size_t)mod->n_exports + 1, sizeof(float *));
        for (int i = 0; i < mod->n_exports; i++) r->outs[m][i] = r->slots[mod->exports[i]];
    }
    return r;
}

static void run_free(run *r) {
    if (!r) return;
    for (int m = 0; m < r->em->n_modules; m++) {
        gim_free(r->params[m]);
        gim_free(r->grads[m]);
        gim_free(r->opt[m]);
        gim_free(r->work[m]);
        free(r->ins[m]);
        free(r->outs[m]);
    }
    for (int s = 0; s < r->em->n_slots; s++) gim_free(r->slots[s]);
    free(r->slots);
    free(r->params);
    free(r->grads);
    free(r->opt);
    free(r->work);
    free(r->ins);
    free(r->outs);
    free(r);
}

/* The model input slot "x". */
static float *input_x(run *r) {
    for (int s = 0; s < r->em->n_slots; s++)
        if (r->em->slots[s].producer < 0 && !r->em->slots[s].is_labels) return r->slots[s];
    return NULL;
}

/* A batch of smooth images: each a sum of two random plane waves plus a
 * little noise, so that neighbouring patches are related (something InfoNCE
 * can learn to predict). Deterministic in `seed`. */
static void make_batch(float *x, unsigned seed) {
    float prm[BATCH * 6];
    gim_test_fill(prm, BATCH * 6, seed, 0.0f, 1.0f);
    float noise[BATCH * 144];
    gim_test_fill(noise, BATCH * 144, seed + 1000, -0.1f, 0.1f);
    for (int n = 0; n < BATCH; n++) {
        const float *q = prm + 6 * n;
        for (int h = 0; h < 12; h++)
            for (int w = 0; w < 12; w++)
                x[n * 144 + h * 12 + w] = sinf(0.2f + 0.8f * q[0] * (float)h + 6.28f * q[1]) +
                                          cosf(0.2f + 0.8f * q[2] * (float)w + 6.28f * q[3]) * q[4] +
                                          noise[n * 144 + h * 12 + w];
    }
}

static float run_step(run *r, int m, uint64_t step, uint64_t seed, float lr, int flags) {
    gim_call c = {
        .inputs = r->ins[m],
        .labels = NULL,
        .params = r->params[m],
        .grads = r->grads[m],
        .opt = r->opt[m],
        .work = r->work[m],
        .outputs = r->outs[m],
        .step = step,
        .seed = seed,
        .lr = lr,
        .flags = flags,
    };
    return r->em->modules[m].step(&c);
}

/* One simultaneous step: every module in order on the batch in x. */
static void run_all(run *r, uint64_t step, uint64_t seed, float lr, int flags, float *losses) {
    for (int m = 0; m < r->em->n_modules; m++) {
        float l = run_step(r, m, step, seed, lr, flags);
        if (losses) losses[m] = l;
    }
}

/* The parameter named `name` of module m, or NULL. */
static const gim_param_info *param(const run *r, int m, const char *name) {
    const gim_exec_module *mod = &r->em->modules[m];
    for (int i = 0; i < mod->n_params; i++)
        if (!strcmp(mod->params[i].name, name)) return &mod->params[i];
    return NULL;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The module (or -1) holding a parameter whose name ends in `suffix`, and its info. */
static const gim_param_info *find_param(const run *r, const char *suffix, int *module) {
    for (int m = 0; m < r->em->n_modules; m++) {
        const gim_exec_module *mod = &r->em->modules[m];
        for (int i = 0; i < mod->n_params; i++)
            if (has_suffix(mod->params[i].name, suffix)) {
                *module = m;
                return &mod->params[i];
            }
    }
    *module = -1;
    return NULL;
}

static double norm2(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

/* ---- tests ----------------------------------------------------------------------- */

static const uint64_t SEED = 7;

/* The pipeline produces three modules, each with a loss and parameters. */
static void test_compiles(void) {
    gim_exec_model *em = base_model();
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    CU_ASSERT_EQUAL(em->n_modules, 3);
    CU_ASSERT_EQUAL(em->batch, BATCH);
    for (int m = 0; m < em->n_modules; m++) {
        CU_ASSERT_TRUE(em->modules[m].has_loss);
        CU_ASSERT_PTR_NOT_NULL(em->modules[m].step);
        CU_ASSERT_TRUE(em->modules[m].n_params >= 3);   /* conv w, b and InfoNCE's W */
    }
}

/* (1) Greedy isolation: module 1's gradients are bit-identical whether the
 * modules behind its gradient_block are wider and train on different losses
 * or not; module 2's gradients do change (the variant is not a no-op). */
static void test_isolation(void) {
    variant other = {6, 1, 7, 3};
    gim_exec_model *a = base_model(), *b = compile(other, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    run *ra = run_new(a, SEED), *rb = run_new(b, SEED);
    make_batch(input_x(ra), 1);
    make_batch(input_x(rb), 1);
    float la[3], lb[3];
    run_all(ra, 1, SEED, 1e-3f, GIM_CALL_NO_UPDATE, la);
    run_all(rb, 1, SEED, 1e-3f, GIM_CALL_NO_UPDATE, lb);
    const gim_exec_module *ma = &a->modules[0], *mb = &b->modules[0];
    CU_ASSERT_EQUAL_FATAL(ma->n_param_floats, mb->n_param_floats);
    CU_ASSERT_EQUAL(memcmp(ra->params[0], rb->params[0], (size_t)ma->n_param_floats * 4), 0);
    CU_ASSERT_EQUAL(memcmp(ra->grads[0], rb->grads[0], (size_t)ma->n_param_floats * 4), 0);
    CU_ASSERT_EQUAL(memcmp(&la[0], &lb[0], sizeof(float)), 0);
    CU_ASSERT_TRUE(norm2(ra->grads[0], ma->n_param_floats) > 0);
    /* Module 2 differs (its width and loss changed): so does its loss. */
    CU_ASSERT_NOT_EQUAL(la[1], lb[1]);

    /* And after a real update of every module, module 1's parameters still agree. */
    run_all(ra, 1, SEED, 1e-3f, 0, NULL);
    run_all(rb, 1, SEED, 1e-3f, 0, NULL);
    CU_ASSERT_EQUAL(memcmp(ra->params[0], rb->params[0], (size_t)ma->n_param_floats * 4), 0);
    run_free(ra);
    run_free(rb);
    gim_exec_model_free(b);

    /* Only module 3's loss changed: modules 1 and 2 are bit-identical. */
    variant third = {4, 2, 4, 1};
    gim_exec_model *c = compile(third, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    ra = run_new(a, SEED);
    run *rc = run_new(c, SEED);
    make_batch(input_x(ra), 1);
    make_batch(input_x(rc), 1);
    float lc[3];
    run_all(ra, 1, SEED, 1e-3f, GIM_CALL_NO_UPDATE, la);
    run_all(rc, 1, SEED, 1e-3f, GIM_CALL_NO_UPDATE, lc);
    for (int m = 0; m < 2; m++) {
        int64_t n = a->modules[m].n_param_floats;
        CU_ASSERT_EQUAL_FATAL(n, c->modules[m].n_param_floats);
        CU_ASSERT_EQUAL(memcmp(ra->grads[m], rc->grads[m], (size_t)n * 4), 0);
        CU_ASSERT_EQUAL(memcmp(&la[m], &lc[m], sizeof(float)), 0);
    }
    CU_ASSERT_NOT_EQUAL(la[2], lc[2]);
    run_free(ra);
    run_free(rc);
    gim_exec_model_free(c);
}

/* Module m's loss at the current parameters (the step fixes the negatives). */
static double loss_at(run *r, int m, uint64_t step) {
    return run_step(r, m, step, SEED, 0.0f, GIM_CALL_NO_UPDATE);
}

/* Central differences of module m's loss against its step gradients g:
 * (L(p + εv) − L(p − εv)) / 2ε against g·v, along the gradient's own
 * direction (the largest signal), along random directions, and per coordinate.
 *
 * Why this is sound in float32: the loss (~log 5) is computed in float32, so
 * an evaluation is off by a few ulps of it; divided by 2ε that is the noise
 * floor `noise` = 8·FLT_EPSILON·|L| / 2ε (~8e-5 for ε = 1e-2), and the test
 * requires |g| to stand well above it (else it could not fail). The
 * truncation error is O(ε²) times third derivatives of a smooth function
 * (ReLU kinks: a step of ε crosses a few of the hundreds of pre-activations,
 * each one term of a mean). Tolerance: 2% of |g·v| + 0.5% of |g| + noise. A
 * wrong rule (a missing term, a sign, a factor, a slice at the wrong offset,
 * a bias summed over the wrong axis) is off by far more. */
static void grad_check_module(run *r, int m, uint64_t step, const int64_t *only_offset, int64_t only_numel) {
    const gim_exec_module *mod = &r->em->modules[m];
    int64_t n = mod->n_param_floats;
    int64_t lo = only_offset ? *only_offset : 0, hi = only_offset ? lo + only_numel : n;
    float *p0 = malloc((size_t)n * 4), *g = malloc((size_t)n * 4), *v = malloc((size_t)n * 4);
    memcpy(p0, r->params[m], (size_t)n * 4);
    double L = loss_at(r, m, step);
    memcpy(g, r->grads[m], (size_t)n * 4);
    for (int64_t i = 0; i < n; i++)
        if (i < lo || i >= hi) g[i] = 0;   /* checking part of the parameters */
    const float eps = 1e-2f;
    double noise = 8 * FLT_EPSILON * fmax(fabs(L), 1.0) / (2 * eps);
    double gn = norm2(g, n);
    if (getenv("GIM_TEST_VERBOSE"))
        fprintf(stderr, "module %d: loss %.6f |g| %.3g noise %.3g\n", m + 1, L, gn, noise);
    CU_ASSERT_TRUE(gn > 30 * noise);   /* else the check has no power */
    for (int dir = 0; dir < 4 + mod->n_params; dir++) {
        if (dir == 0) {
            for (int64_t i = 0; i < n; i++) v[i] = g[i];
        } else {
            gim_test_fill(v, (size_t)n, 100u + (unsigned)dir, -1.0f, 1.0f);
            /* after 3 directions over everything, one direction per parameter */
            const gim_param_info *pi = dir >= 4 ? &mod->params[dir - 4] : NULL;
            for (int64_t i = 0; i < n; i++)
                if (i < lo || i >= hi || (pi && (i < pi->offset || i >= pi->offset + pi->numel))) v[i] = 0;
        }
        double vn = norm2(v, n);
        if (vn == 0) continue;
        for (int64_t i = 0; i < n; i++) v[i] = (float)(v[i] / vn);
        double gv = 0;
        for (int64_t i = 0; i < n; i++) gv += (double)g[i] * v[i];
        for (int64_t i = 0; i < n; i++) r->params[m][i] = p0[i] + eps * v[i];
        double lp = loss_at(r, m, step);
        for (int64_t i = 0; i < n; i++) r->params[m][i] = p0[i] - eps * v[i];
        double lm = loss_at(r, m, step);
        memcpy(r->params[m], p0, (size_t)n * 4);
        double fd = (lp - lm) / (2.0 * eps);
        double tol = 0.02 * fabs(gv) + 0.005 * gn + noise;
        if (getenv("GIM_TEST_VERBOSE") || fabs(fd - gv) > tol)
            fprintf(stderr, "module %d direction %d%s%s: finite difference %.6g, gradient %.6g (tol %.3g)\n",
                    m + 1, dir, dir >= 4 ? " along " : "", dir >= 4 ? mod->params[dir - 4].name : "", fd, gv, tol);
        CU_ASSERT_TRUE(fabs(fd - gv) <= tol);
    }
    /* Per coordinate, on three elements of each parameter. */
    for (int i = 0; i < mod->n_params; i++) {
        const gim_param_info *pi = &mod->params[i];
        if (pi->offset < lo || pi->offset >= hi) continue;
        for (int64_t j = 0; j < 3 && j < pi->numel; j++) {
            int64_t at = pi->offset + j * (pi->numel / 3 > 0 ? pi->numel / 3 : 1);
            r->params[m][at] = p0[at] + eps;
            double lp = loss_at(r, m, step);
            r->params[m][at] = p0[at] - eps;
            double lm = loss_at(r, m, step);
            r->params[m][at] = p0[at];
            double fd = (lp - lm) / (2.0 * eps);
            double tol = 0.03 * fabs(g[at]) + 0.005 * gn + noise;
            if (getenv("GIM_TEST_VERBOSE") || fabs(fd - g[at]) > tol)
                fprintf(stderr, "module %d %s[%lld]: finite difference %.6g, gradient %.6g (tol %.3g)\n", m + 1,
                        pi->name, (long long)(at - pi->offset), fd, (double)g[at], tol);
            CU_ASSERT_TRUE(fabs(fd - g[at]) <= tol);
        }
    }
    memcpy(r->params[m], p0, (size_t)n * 4);
    free(p0);
    free(g);
    free(v);
}

/* Multiplies every parameter by s. Conv and ReLU are positively homogeneous
 * (conv(x; s·w, s·b) = s·conv(x; w, b)), so module k's activations grow by
 * s^k: at PyTorch's initial scale the later modules' scores are ~1e-3 and
 * their loss is flat (|g| near the float32 noise floor of a finite
 * difference); scaled, every module's loss has slopes a check can resolve. */
static void scale_params(run *r, float s) {
    for (int m = 0; m < r->em->n_modules; m++)
        for (int64_t i = 0; i < r->em->modules[m].n_param_floats; i++) r->params[m][i] *= s;
}

/* (2) Each module's step gradients are the derivatives of its own loss. */
static void test_gradient_check(void) {
    gim_exec_model *em = base_model();
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    run *r = run_new(em, SEED);
    make_batch(input_x(r), 2);
    scale_params(r, 2.0f);
    /* Module m reads module m−1's exports: run the forward chain once. */
    run_all(r, 3, SEED, 0.0f, GIM_CALL_NO_UPDATE, NULL);
    for (int m = 0; m < em->n_modules; m++) grad_check_module(r, m, 3, NULL, 0);
    run_free(r);
}

/* (3) 100 steps of Adam (lr 1e-2) cycling over four fixed batches lower every
 * module's InfoNCE loss: the mean of the last 5 steps is at least 10% below
 * the mean of the first 5 (measured: 15-35%; at the start every loss is
 * log 5 = 1.609, chance among 1 + 4 candidates). */
static void train(gim_exec_model *em, int steps, float *losses /* [steps][3] */) {
    run *r = run_new(em, SEED);
    float *x = input_x(r);
    for (int t = 1; t <= steps; t++) {
        make_batch(x, 10u + (unsigned)(t % 4));
        run_all(r, (uint64_t)t, SEED, 1e-2f, 0, losses + 3 * (t - 1));
    }
    run_free(r);
}

static void test_training_lowers_loss(void) {
    gim_exec_model *em = base_model();
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    enum { STEPS = 100 };
    static float losses[STEPS * 3];
    train(em, STEPS, losses);
    for (int m = 0; m < 3; m++) {
        double first = 0, last = 0;
        for (int t = 0; t < 5; t++) {
            first += losses[3 * t + m] / 5.0;
            last += losses[3 * (STEPS - 1 - t) + m] / 5.0;
        }
        fprintf(stderr, "module %d: mean loss of steps 1-5 %.4f, of steps %d-%d %.4f\n", m + 1, first,
                STEPS - 4, STEPS, last);
        CU_ASSERT_TRUE(isfinite(last));
        CU_ASSERT_TRUE(last < 0.9 * first);
    }
}

/* (4) The same seed gives bit-identical losses, with the model compiled anew. */
static void test_reproducible(void) {
    enum { STEPS = 20 };
    static float l1[STEPS * 3], l2[STEPS * 3];
    gim_exec_model *a = base_model();
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    train(a, STEPS, l1);
    gim_exec_model *b = compile(base, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    train(b, STEPS, l2);
    gim_exec_model_free(b);
    CU_ASSERT_EQUAL(memcmp(l1, l2, sizeof l1), 0);
    /* The losses moved: the runs are not trivially equal. */
    CU_ASSERT_NOT_EQUAL(l1[0], l1[3 * (STEPS - 1)]);
}

/* (5) End to end: one module, the last loss; its gradient reaches module 1's
 * convolution through both blocks, and is the derivative of that loss (which
 * greedy module 1's gradient is not: it differs from it). */
static void test_e2e(void) {
    gim_exec_model *em = compile(base, true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    CU_ASSERT_EQUAL_FATAL(em->n_modules, 1);
    run *r = run_new(em, SEED);
    make_batch(input_x(r), 2);
    scale_params(r, 3.0f);
    int m = -1;
    const gim_param_info *w1 = find_param(r, "conv2d.1/w", &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w1);
    CU_ASSERT_EQUAL(m, 0);
    run_step(r, 0, 3, SEED, 0.0f, GIM_CALL_NO_UPDATE);
    CU_ASSERT_TRUE(norm2(r->grads[0] + w1->offset, w1->numel) > 1e-6);
    grad_check_module(r, 0, 3, &w1->offset, w1->numel);

    /* The greedy module 1 sees another loss: another gradient for the same weights. */
    gim_exec_model *gm = base_model();
    CU_ASSERT_PTR_NOT_NULL_FATAL(gm);
    run *rg = run_new(gm, SEED);
    make_batch(input_x(rg), 2);
    scale_params(rg, 3.0f);
    int mg = -1;
    const gim_param_info *w1g = find_param(rg, "conv2d.1/w", &mg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w1g);
    CU_ASSERT_EQUAL(mg, 0);
    CU_ASSERT_EQUAL(memcmp(rg->params[0] + w1g->offset, r->params[0] + w1->offset, (size_t)w1->numel * 4), 0);
    run_step(rg, 0, 3, SEED, 0.0f, GIM_CALL_NO_UPDATE);
    CU_ASSERT_NOT_EQUAL(memcmp(rg->grads[0] + w1g->offset, r->grads[0] + w1->offset, (size_t)w1->numel * 4), 0);
    (void)param;
    run_free(rg);
    run_free(r);
    gim_exec_model_free(em);
}

int main(void) {
    static const gim_test tests[] = {
        {"tiny model compiles to three modules", test_compiles},
        {"greedy: module 1 unaffected by later modules", test_isolation},
        {"step gradients match finite differences", test_gradient_check},
        {"100 Adam steps lower every InfoNCE loss", test_training_lowers_loss},
        {"same seed, bit-identical losses", test_reproducible},
        {"e2e: the last loss reaches module 1", test_e2e},
        {NULL, NULL},
    };
    int rc = gim_run_suite("model", tests);
    gim_exec_model_free(base_model_cache);
    return rc;
}
