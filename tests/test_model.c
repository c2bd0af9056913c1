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
#include "harness_model.h"
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

static gim_exec_model *compile(variant v, bool e2e) {
    char src[2048];
    snprintf(src, sizeof src, tiny_fmt, v.width2, v.steps2, v.neg2, v.steps3);
    return gim_hm_compile("tiny", src, BATCH, e2e);
}

/* The base greedy model, compiled once and shared by the tests that only run it. */
static gim_exec_model *base_model_cache;
static gim_exec_model *base_model(void) {
    if (!base_model_cache) base_model_cache = compile(base, false);
    return base_model_cache;
}

typedef gim_hm_run run;
#define run_new gim_hm_run_new
#define run_free gim_hm_run_free
#define run_step gim_hm_step
#define run_all gim_hm_step_all
#define norm2 gim_hm_norm2

static float *input_x(run *r) { return gim_hm_input(r, "x"); }

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

    /* Nothing flows back at run time either: module 2's step leaves the
     * values it reads from module 1 (its input slots) untouched. */
    const gim_exec_module *m2 = &a->modules[1];
    CU_ASSERT_TRUE_FATAL(m2->n_inputs > 0);
    for (int i = 0; i < m2->n_inputs; i++) {
        int slot = m2->inputs[i];
        size_t bytes = (size_t)a->slots[slot].numel * 4;
        void *before = malloc(bytes);
        memcpy(before, ra->slots[slot], bytes);
        run_step(ra, 1, 2, SEED, 1e-3f, 0);
        CU_ASSERT_EQUAL(memcmp(before, ra->slots[slot], bytes), 0);
        free(before);
    }
    run_free(ra);
    run_free(rb);
    gim_exec_model_free(b);
}

/* (2) Each module's step gradients are the derivatives of its own loss
 * (gim_hm_grad_check: central differences, tolerances argued there).
 *
 * The parameters are first scaled by 2: conv and ReLU are positively
 * homogeneous (conv(x; s·w, s·b) = s·conv(x; w, b)), so module k's activations
 * grow by s^k. At PyTorch's initial scale the later modules' scores are ~1e-3
 * and their losses nearly flat (slopes near the float32 noise floor of a
 * finite difference); scaled, every module's slopes stand well above it. */
static void test_gradient_check(void) {
    gim_exec_model *em = base_model();
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    run *r = run_new(em, SEED);
    make_batch(input_x(r), 2);
    gim_hm_scale_params(r, 2.0f);
    /* Module m reads module m−1's exports: run the forward chain once. */
    run_all(r, 3, SEED, 0.0f, GIM_CALL_NO_UPDATE, NULL);
    for (int m = 0; m < em->n_modules; m++) CU_ASSERT_EQUAL(gim_hm_grad_check(r, m, 3, SEED, 0, 0), 0);
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

/* (4) The same seed gives bit-identical losses: two runs from fresh state
 * (initialisation, negatives and data all from the seed). */
static void test_reproducible(void) {
    enum { STEPS = 20 };
    static float l1[STEPS * 3], l2[STEPS * 3];
    gim_exec_model *a = base_model();
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    train(a, STEPS, l1);
    train(a, STEPS, l2);
    CU_ASSERT_EQUAL(memcmp(l1, l2, sizeof l1), 0);
    /* The losses moved: the runs are not trivially equal. */
    CU_ASSERT_NOT_EQUAL(l1[0], l1[3 * (STEPS - 1)]);
}

/* (4b) One work arena shared by the modules, as the trainer runs them one
 * at a time: the same bits as an arena per module. Before each module steps
 * the shared arena is filled with NaN, so a module that read anything an
 * earlier call (its own or another module's) left there would show it. */
static void test_shared_work_arena(void) {
    enum { STEPS = 12 };
    gim_exec_model *em = base_model();
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    run *own = run_new(em, SEED), *shared = run_new(em, SEED);
    int64_t most = 0;
    for (int m = 0; m < em->n_modules; m++)
        if (em->modules[m].n_work_floats > most) most = em->modules[m].n_work_floats;
    float *arena = gim_malloc_aligned((size_t)most * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(arena);
    float **kept = gim_calloc((size_t)em->n_modules, sizeof(float *));
    for (int m = 0; m < em->n_modules; m++) {
        kept[m] = shared->work[m];
        shared->work[m] = arena;
    }
    float nan = nanf("");
    bool same = true;
    for (int t = 1; t <= STEPS; t++) {
        make_batch(input_x(own), 10u + (unsigned)(t % 4));
        make_batch(input_x(shared), 10u + (unsigned)(t % 4));
        for (int m = 0; m < em->n_modules; m++) {
            for (int64_t i = 0; i < most; i++) arena[i] = nan;
            float a = run_step(own, m, (uint64_t)t, SEED, 1e-2f, 0);
            float b = run_step(shared, m, (uint64_t)t, SEED, 1e-2f, 0);
            same &= memcmp(&a, &b, sizeof a) == 0 && isfinite(a);
        }
    }
    CU_ASSERT_TRUE(same);
    for (int m = 0; m < em->n_modules; m++) {
        size_t bytes = (size_t)em->modules[m].n_param_floats * sizeof(float);
        CU_ASSERT_EQUAL(memcmp(own->params[m], shared->params[m], bytes), 0);
        shared->work[m] = kept[m];
    }
    gim_free(kept);
    gim_free(arena);
    run_free(own);
    run_free(shared);
}

/* (4c) ReLU fusion (compiler/fuse.c) changes no bit: a model whose ReLUs
 * follow an im2col convolution (one input channel; four channels), a
 * Winograd one (16 -> 16 on 8x8, and on 2x2: one tile an image) and whose
 * ReLU gradients follow both kinds of data gradient and spatial_mean's, trained fused and unfused: the same losses and
 * parameters; and the fused model's gradients match finite differences. */
static const char *fuse_src =
    "model fusing {\n"
    "    input x: [batch, 1, 12, 12]\n"
    "    p = patches(x, size=8, stride=4)\n"
    "    h1 = relu(conv2d(relu(conv2d(p, 16, k=3, pad=1)), 16, k=3, pad=1))\n"
    "    infonce(spatial_mean(h1), steps=1, negatives=4)\n"
    "    h2 = relu(conv2d(relu(conv2d(gradient_block(h1), 4, k=3, stride=2, pad=1)), 4, k=3, pad=1))\n"
    "    infonce(spatial_mean(h2), steps=1, negatives=4)\n"
    "    h3 = relu(conv2d(relu(conv2d(gradient_block(h2), 16, k=3, stride=2, pad=1)), 16, k=3, pad=1))\n"
    "    infonce(spatial_mean(h3), steps=1, negatives=4)\n"
    "    output spatial_mean(h3)\n"
    "}\n";

static void test_fusion_same_bits(void) {
    enum { STEPS = 6 };
    gim_hm_fuse = false;
    gim_exec_model *plain = gim_hm_compile("fusing", fuse_src, BATCH, false);
    CU_ASSERT_EQUAL(gim_hm_fused, 0);
    gim_hm_fuse = true;
    gim_exec_model *fused = gim_hm_compile("fusing", fuse_src, BATCH, false);
    /* six ReLUs into their convolutions; the six ReLU gradients into the three
     * data gradients and the three spatial_mean gradients before them */
    CU_ASSERT_EQUAL(gim_hm_fused, 12);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plain);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fused);
    run *a = run_new(plain, SEED), *b = run_new(fused, SEED);
    bool same = true;
    for (int t = 1; t <= STEPS; t++) {
        make_batch(input_x(a), 20u + (unsigned)t);
        make_batch(input_x(b), 20u + (unsigned)t);
        float la[3], lb[3];
        run_all(a, (uint64_t)t, SEED, 1e-2f, 0, la);
        run_all(b, (uint64_t)t, SEED, 1e-2f, 0, lb);
        same &= memcmp(la, lb, sizeof la) == 0 && isfinite(la[0]) && isfinite(la[1]) && isfinite(la[2]);
    }
    CU_ASSERT_TRUE(same);
    for (int m = 0; m < 3; m++)
        CU_ASSERT_EQUAL(memcmp(a->params[m], b->params[m], (size_t)plain->modules[m].n_param_floats * 4), 0);
    /* the fused convolutions' gradients, against finite differences */
    for (int m = 0; m < 3; m++) CU_ASSERT_EQUAL(gim_hm_grad_check(b, m, 3, SEED, 0, 0), 0);
    run_free(a);
    run_free(b);
    gim_exec_model_free(plain);
    gim_exec_model_free(fused);
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
    gim_hm_scale_params(r, 3.0f);   /* see test_gradient_check: slopes above the noise */
    int m = -1;
    const gim_param_info *w1 = gim_hm_find_param(r, "conv2d.1/w", &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w1);
    CU_ASSERT_EQUAL(m, 0);
    run_step(r, 0, 3, SEED, 0.0f, GIM_CALL_NO_UPDATE);
    CU_ASSERT_TRUE(norm2(r->grads[0] + w1->offset, w1->numel) > 1e-6);
    CU_ASSERT_EQUAL(gim_hm_grad_check(r, 0, 3, SEED, w1->offset, w1->numel), 0);

    /* The greedy module 1 sees another loss: another gradient for the same weights. */
    gim_exec_model *gm = base_model();
    CU_ASSERT_PTR_NOT_NULL_FATAL(gm);
    run *rg = run_new(gm, SEED);
    make_batch(input_x(rg), 2);
    gim_hm_scale_params(rg, 3.0f);
    int mg = -1;
    const gim_param_info *w1g = gim_hm_find_param(rg, "conv2d.1/w", &mg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w1g);
    CU_ASSERT_EQUAL(mg, 0);
    CU_ASSERT_EQUAL(memcmp(rg->params[0] + w1g->offset, r->params[0] + w1->offset, (size_t)w1->numel * 4), 0);
    run_step(rg, 0, 3, SEED, 0.0f, GIM_CALL_NO_UPDATE);
    CU_ASSERT_NOT_EQUAL(memcmp(rg->grads[0] + w1g->offset, r->grads[0] + w1->offset, (size_t)w1->numel * 4), 0);
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
        {"one work arena for all modules: the same bits", test_shared_work_arena},
        {"ReLUs fused into convolutions: the same bits, gradients checked", test_fusion_same_bits},
        {"e2e: the last loss reaches module 1", test_e2e},
        {NULL, NULL},
    };
    int rc = gim_run_suite("model", tests);
    gim_exec_model_free(base_model_cache);
    return rc;
}
