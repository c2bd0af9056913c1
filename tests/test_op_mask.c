/* Masked convolutions (conv2d(..., mask="A"|"B")) and the PixelCNN-style
 * context of stdlib/pixelcnn.gim:
 *   - the conv2d_mask generator against the plain-C reference of ref_conv.c
 *     (a 2-d statement of the mask; the generator uses a raster index);
 *   - a small grid model with masked convolutions of both types and odd
 *     sizes: every gradient of the module against central finite differences,
 *     and exactly zero gradients on the masked-out weights;
 *   - causality of the shipped pixelcnn_context: changing the grid at rows
 *     > i (and, PixelCNN's raster order, at positions after (i, j)) never
 *     changes the context at row i (at positions up to (i, j)), while a change
 *     at (i, j) itself does reach the context at (i, j). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"
#include "gim_compiler.h"
#include "gim_util.h"
#include "graph.h"
#include "harness_model.h"
#include "harness_op.h"
#include "ref_conv.h"
#include "shape.h"
#include "testutil.h"

/* ---- the mask op against the reference ------------------------------------- */

static void check_mask_op(int64_t O, int64_t C, int64_t k, int mask) {
    gim_graph *g = gim_graph_new();
    int64_t d[4] = {O, C, k, k};
    gim_node *w = gim_node_new(g, GIM_OP_INPUT, 0, NULL, (gim_loc){0});
    w->shape = gim_shape_make(4, d);
    gim_node *y = gim_node_new(g, GIM_OP_CONV2D_MASK, 1, &w, (gim_loc){0});
    y->attr[0] = mask;
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(gim_infer_shape(y, msg, sizeof msg), 0);
    int64_t n = O * C * k * k;
    float *wf = gim_xmalloc(sizeof(float) * (size_t)n), *yf = gim_xmalloc(sizeof(float) * (size_t)n);
    gim_test_fill(wf, (size_t)n, 7u + (unsigned)k, -1.0f, 1.0f);
    /* The last position of a kernel is masked (but for k = 1 with B): there y
     * must be an exact 0 whatever w holds, NaN included. */
    bool nan_masked = k > 1 || mask == GIM_MASK_A;
    if (nan_masked) wf[n - 1] = NAN;
    for (int64_t i = 0; i < n; i++) yf[i] = 12345.0f;
    double *wd = gim_xmalloc(sizeof(double) * (size_t)n), *yd = gim_xmalloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) wd[i] = wf[i];
    ref_conv2d_mask(wd, O, C, k, mask == GIM_MASK_B, yd);
    float *bufs[2] = {wf, yf};
    CU_ASSERT_EQUAL_FATAL(hop_run(g, &y, 1, cg_elementwise_ops, "default<O0>", false, bufs, 0, 0), 0);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        bool same = nan_masked && i == n - 1 ? yf[i] == 0.0f && !signbit(yf[i]) : (double)yf[i] == yd[i];
        if (!same && bad++ < 3)
            fprintf(stderr, "\nconv2d_mask k=%lld mask=%d: y[%lld] = %g, reference %g", (long long)k, mask,
                    (long long)i, (double)yf[i], yd[i]);
    }
    CU_ASSERT_EQUAL(bad, 0);
    gim_free(wf);
    gim_free(yf);
    gim_free(wd);
    gim_free(yd);
    gim_graph_free(g);
}

static void test_mask_op(void) {
    for (int mask = GIM_MASK_A; mask <= GIM_MASK_B; mask++)
        for (int64_t k = 1; k <= 7; k += 2) check_mask_op(3, 5, k, mask);
}

/* ---- gradients through masked convolutions --------------------------------- */

#define BATCH 3
static const uint64_t SEED = 5;

/* A 5×5 grid of 3-vectors; z = linear, the context = two masked convolutions
 * (a 5×5 of type A, then a 3×3 of type B) over the grid in [N, C, G, G]. */
static const char *grid_src =
    "model masked {\n"
    "    input x: [batch, 5, 5, 3]\n"
    "    z = tanh(linear(x, 4))\n"
    "    g = transpose(transpose(z, 1, 3), 2, 3)\n"
    "    h = tanh(conv2d(g, 5, k=5, pad=2, mask=\"A\"))\n"
    "    h = conv2d(h, 3, k=3, pad=1, mask=\"B\")\n"
    "    c = transpose(transpose(h, 2, 3), 1, 3)\n"
    "    infonce(z, steps=2, negatives=3, context=c)\n"
    "    output c\n"
    "}\n";

/* Weights w [O, C, k, k] of `suffix`: how many masked entries have a nonzero
 * gradient, and the gradient's norm over the kept entries. */
static void masked_grads(gim_hm_run *r, const char *suffix, int64_t k, int mask, int *leaks, double *kept_norm) {
    int m;
    const gim_param_info *pi = gim_hm_find_param(r, suffix, &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pi);
    const float *gw = r->grads[m] + pi->offset;
    int64_t keep = gim_mask_keep(mask, k);
    *leaks = 0;
    *kept_norm = 0;
    for (int64_t i = 0; i < pi->numel; i++) {
        if (i % (k * k) >= keep) *leaks += gw[i] != 0.0f;
        else *kept_norm += (double)gw[i] * gw[i];
    }
}

static void test_masked_grad(void) {
    gim_exec_model *em = gim_hm_compile("masked", grid_src, BATCH, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    CU_ASSERT_EQUAL_FATAL(em->n_modules, 1);
    gim_hm_run *r = gim_hm_run_new(em, SEED);
    float *x = gim_hm_input(r, "x");
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    gim_test_fill(x, BATCH * 5 * 5 * 3, 17u, -1.0f, 1.0f);
    CU_ASSERT_EQUAL(gim_hm_grad_check(r, 0, 1, SEED, 0, 0), 0);
    int leaks;
    double norm;
    masked_grads(r, "conv2d.1/w", 5, GIM_MASK_A, &leaks, &norm);
    CU_ASSERT_EQUAL(leaks, 0);
    CU_ASSERT(norm > 0);
    masked_grads(r, "conv2d.2/w", 3, GIM_MASK_B, &leaks, &norm);
    CU_ASSERT_EQUAL(leaks, 0);
    CU_ASSERT(norm > 0);
    gim_hm_run_free(r);
    gim_exec_model_free(em);
}

/* ---- causality of the shipped context -------------------------------------- */

#define G 5
#define CZ 4

/* stdlib/pixelcnn.gim followed by a model reading x directly as the grid z. */
static char *causal_src(void) {
    size_t len;
    char *lib = gim_read_file(GIM_SOURCE_DIR "/stdlib/pixelcnn.gim", &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(lib);
    const char *model =
        "model causal {\n"
        "    input x: [batch, 5, 5, 4]\n"
        "    z = linear(x, 4)\n"
        "    c = pixelcnn_context(x, 6)\n"
        "    infonce(z, steps=1, negatives=2, context=c)\n"
        "    output c\n"
        "}\n";
    char *src = gim_xmalloc(len + strlen(model) + 2);
    memcpy(src, lib, len);
    src[len] = '\n';
    strcpy(src + len + 1, model);
    gim_free(lib);
    return src;
}

typedef struct causal_run {
    gim_hm_run *r;
    float *x, *c;
    float x0[BATCH * G * G * CZ];
} causal_run;

/* The context for the current x (a step that updates nothing). */
static void causal_eval(causal_run *cr) {
    gim_hm_step(cr->r, 0, 1, SEED, 0.0f, GIM_CALL_NO_UPDATE);
}

/* Sets x to x0 plus 1 at every grid position p (raster index i·G + j) with
 * lo <= p < hi, every example and channel. */
static void causal_perturb(causal_run *cr, int lo, int hi) {
    memcpy(cr->x, cr->x0, sizeof cr->x0);
    for (int n = 0; n < BATCH; n++)
        for (int p = lo; p < hi; p++)
            for (int ch = 0; ch < CZ; ch++) cr->x[(n * G * G + p) * CZ + ch] += 1.0f;
}

/* Does c differ from ref at some grid position in [lo, hi)? */
static bool causal_differs(const float *c, const float *ref, int64_t cc, int lo, int hi) {
    for (int n = 0; n < BATCH; n++)
        for (int p = lo; p < hi; p++)
            if (memcmp(c + (n * G * G + p) * cc, ref + (n * G * G + p) * cc, sizeof(float) * (size_t)cc)) return true;
    return false;
}

static void test_pixelcnn_causal(void) {
    char *src = causal_src();
    gim_exec_model *em = gim_hm_compile("causal", src, BATCH, false);
    gim_free(src);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    causal_run cr = {.r = gim_hm_run_new(em, SEED)};
    cr.x = gim_hm_input(cr.r, "x");
    CU_ASSERT_PTR_NOT_NULL_FATAL(cr.x);
    CU_ASSERT_FATAL(em->output_slot >= 0 && em->slots[em->output_slot].numel == BATCH * G * G * 6);
    cr.c = cr.r->slots[em->output_slot];
    const int64_t cc = 6, nc = BATCH * G * G * cc;
    /* Weights scaled up and x spread out, so that ReLUs are active in every
     * layer and a dependence, where there is one, shows. */
    gim_hm_scale_params(cr.r, 3.0f);
    gim_test_fill(cr.x0, BATCH * G * G * CZ, 23u, -1.0f, 1.0f);
    memcpy(cr.x, cr.x0, sizeof cr.x0);
    causal_eval(&cr);
    float *ref = gim_xmalloc(sizeof(float) * (size_t)nc);
    memcpy(ref, cr.c, sizeof(float) * (size_t)nc);

    int row_leaks = 0, raster_leaks = 0, blind = 0;
    /* Rows: a change in rows > i leaves rows <= i as they were. */
    for (int i = 0; i + 1 < G; i++) {
        causal_perturb(&cr, (i + 1) * G, G * G);
        causal_eval(&cr);
        if (causal_differs(cr.c, ref, cc, 0, (i + 1) * G)) {
            fprintf(stderr, "\npixelcnn_context: rows > %d change the context at rows <= %d", i, i);
            row_leaks++;
        }
    }
    /* Raster order (mask B): a change after (i, j) leaves every position up
     * to (i, j) as it was; a change at (i, j) itself reaches (i, j). */
    for (int p = 0; p < G * G; p++) {
        causal_perturb(&cr, p + 1, G * G);
        causal_eval(&cr);
        if (causal_differs(cr.c, ref, cc, 0, p + 1)) {
            fprintf(stderr, "\npixelcnn_context: positions after %d change the context at or before it", p);
            raster_leaks++;
        }
        causal_perturb(&cr, p, p + 1);
        causal_eval(&cr);
        if (!causal_differs(cr.c, ref, cc, p, p + 1)) blind++;
    }
    CU_ASSERT_EQUAL(row_leaks, 0);
    CU_ASSERT_EQUAL(raster_leaks, 0);
    /* the context does read the grid (else the checks above prove nothing) */
    CU_ASSERT_EQUAL(blind, 0);
    gim_free(ref);
    gim_hm_run_free(cr.r);
    gim_exec_model_free(em);
}

int main(void) {
    static const gim_test tests[] = {
        {"conv2d_mask against the reference, k 1..7, A and B", test_mask_op},
        {"masked conv2d gradients (finite differences, masked entries zero)", test_masked_grad},
        {"pixelcnn_context is causal over rows and raster order", test_pixelcnn_causal},
        {NULL, NULL},
    };
    return gim_run_suite("op_mask", tests);
}
