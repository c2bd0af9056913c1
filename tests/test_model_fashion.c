/* The shipped Greedy InfoMax model, models/fashion_gim.gim, compiled through
 * the real pipeline at batch 2 and checked module by module: each module's
 * step gradients are the derivatives of its own loss (central finite
 * differences, gim_hm_grad_check), including the strided conv pairs of
 * modules 2 and 3; and end to end, module 1's first convolution gets the
 * derivative of the last loss. */
#include <stdio.h>
#include <string.h>

#include "cg.h"
#include "gim_compiler.h"
#include "harness_model.h"
#include "testutil.h"

#define BATCH 2
static const uint64_t SEED = 3;

static gim_exec_model *compile_fashion(bool e2e) {
    char path[512];
    snprintf(path, sizeof path, "%s/models/fashion_gim.gim", GIM_SOURCE_DIR);
    size_t len;
    char *src = gim_read_file(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src);
    /* Registered next to the real file, so `import "conv.gim"` resolves. */
    char name[512];
    snprintf(name, sizeof name, "%s/models/fashion_gim", GIM_SOURCE_DIR);
    gim_exec_model *em = gim_hm_compile(name, src, BATCH, e2e);
    gim_free(src);
    return em;
}

/* Images: smooth random patterns in [0, 1], like normalised pixels. */
static void fill_images(float *x, int n) {
    gim_test_fill(x, (size_t)n * 784, 21, 0.0f, 1.0f);
    for (int i = 0; i < n; i++)
        for (int h = 1; h < 28; h++)
            for (int w = 0; w < 28; w++) x[i * 784 + h * 28 + w] = 0.5f * (x[i * 784 + h * 28 + w] + x[i * 784 + (h - 1) * 28 + w]);
}

static void test_greedy(void) {
    gim_exec_model *em = compile_fashion(false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    CU_ASSERT_EQUAL_FATAL(em->n_modules, 3);
    gim_hm_run *r = gim_hm_run_new(em, SEED);
    float *x = gim_hm_input(r, "x");
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    fill_images(x, BATCH);
    /* Larger weights than PyTorch's initial ones (conv and ReLU are
     * positively homogeneous: module k's activations grow by 2.3^(2k)), so
     * that every module's slopes, module 3's included, stand well above the
     * float32 noise floor of a finite difference. The check holds at any
     * parameters; at the initial scale module 3's |g| is ~1e-3. */
    gim_hm_scale_params(r, 2.3f);
    gim_hm_step_all(r, 1, SEED, 0.0f, GIM_CALL_NO_UPDATE, NULL);
    for (int m = 0; m < em->n_modules; m++) CU_ASSERT_EQUAL(gim_hm_grad_check(r, m, 1, SEED, 0, 0), 0);
    gim_hm_run_free(r);
    gim_exec_model_free(em);
}

static void test_e2e(void) {
    gim_exec_model *em = compile_fashion(true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    CU_ASSERT_EQUAL_FATAL(em->n_modules, 1);
    gim_hm_run *r = gim_hm_run_new(em, SEED);
    fill_images(gim_hm_input(r, "x"), BATCH);
    gim_hm_scale_params(r, 2.3f);   /* as in test_greedy */
    int m = -1;
    const gim_param_info *w = gim_hm_find_param(r, "conv_pair.1/conv2d.1/w", &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_EQUAL(gim_hm_grad_check(r, 0, 1, SEED, w->offset, w->numel), 0);
    gim_hm_run_free(r);
    gim_exec_model_free(em);
}

/* The products a step executes (cg_products.c), by hand, per patch (36 per
 * image, 72 at batch 2), in multiply-adds; the first conv of each module
 * runs forward and weight gradient only (its input has no gradient):
 *   m1: 1→32 on 8×8 (im2col)   2 × 64·9·1·32               =    36,864
 *       32→32 on 8×8 (F(4×4))   3 × 4 tiles·36·32·32        =   442,368
 *   m2: 32→64, stride 2 → 4×4   forward by output position, 121 taps inside
 *                                 the image (11 rows × 11 columns, summed over
 *                                 the outputs): 121·32·64 = 247,808; weight
 *                                 gradient (im2col) 16·9·32·64 = 294,912
 *       64→64 on 4×4 (F(4×4))   3 × 1 tile·36·64·64         =   442,368
 *   m3: 64→128, stride 2 → 2×2  forward 25 taps (5 × 5): 25·64·128 = 204,800;
 *                                 weight gradient 4·9·64·128 = 294,912
 *       128→128 on 2×2 (dense)  3 × (4·128)·(4·128)         =   786,432
 * InfoNCE's backward over P = 72 positions, 3 steps, width C: the
 * predictions, dc and dW (3 × P·C·3C) and three passes over 17 candidates
 * at each of the 2·(30 + 24 + 18) = 144 positions with a target (3 × 17·144·C).
 * With Winograd, the dense path and the forward by output position off,
 * every layer multiplies as im2col does: 3 × 64·9·32·32, 3 × 16·9·64·64 and
 * 3 × 4·9·128·128, and the stride-2 layers 2 × 16·9·32·64, 2 × 4·9·64·128. */
static double nce_products(double C) { return 2.0 * (3 * 72 * C * 3 * C + 3 * 17 * 144 * C); }

static void check_products(const double conv_macs[3]) {
    gim_exec_model *em = compile_fashion(false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    CU_ASSERT_EQUAL_FATAL(em->n_modules, 3);
    const double C[3] = {32, 64, 128};
    for (int m = 0; m < 3; m++) {
        double want = 2.0 * 72 * conv_macs[m] + nce_products(C[m]);
        CU_ASSERT_DOUBLE_EQUAL(em->modules[m].step_products, want, 0.5);
        CU_ASSERT(em->modules[m].step_products < em->modules[m].step_flops);
    }
    gim_exec_model_free(em);
}

static void test_products(void) {
    check_products((const double[3]){36864 + 442368, 247808 + 294912 + 442368, 204800 + 294912 + 786432});
    int wino = cg_conv_winograd, dense = cg_conv_dense, window = cg_conv_window;
    cg_conv_winograd = 0, cg_conv_dense = 0, cg_conv_window = 0;
    check_products((const double[3]){36864 + 3 * 64 * 9 * 32 * 32, 589824 + 3 * 16 * 9 * 64 * 64,
                                     589824 + 3 * 4 * 9 * 128 * 128});
    cg_conv_winograd = wino, cg_conv_dense = dense, cg_conv_window = window;
}

int main(void) {
    static const gim_test tests[] = {
        {"fashion_gim: every module's gradients", test_greedy},
        {"fashion_gim --e2e: the last loss reaches conv 1", test_e2e},
        {"fashion_gim: the products a step executes, by path", test_products},
        {NULL, NULL},
    };
    return gim_run_suite("model_fashion", tests);
}
