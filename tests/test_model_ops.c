/* Every backward rule against the real code generators: small models, each
 * written in .gim and compiled through the whole pipeline, whose module
 * gradients are checked against central finite differences of the module's
 * loss (harness_model.c explains the tolerances). Between them the models use
 * every user op, with gradients flowing into every input that can take one
 * (conv data, patches, linear data, GRU input, InfoNCE context). */
#include <stdio.h>
#include <string.h>

#include "gim_compiler.h"
#include "harness_model.h"
#include "testutil.h"

#define BATCH 4
static const uint64_t SEED = 11;

/* CPC-style sequence model: conv1d twice (the second strided, so the first
 * gets a data gradient), leaky_relu, transpose, linear + tanh, a second linear
 * (data gradient), a GRU as context; InfoNCE with context=. */
static const char *seq_src =
    "model seq {\n"
    "    input x: [batch, 3, 16]\n"
    "    h0 = conv1d(x, 4, k=3, pad=1)\n"
    "    h = leaky_relu(conv1d(h0, 4, k=3, stride=2, pad=1), slope=0.1)\n"
    "    z = tanh(linear(transpose(h, 1, 2), 5))\n"
    "    c = gru(linear(z, 5), 6)\n"
    "    infonce(z, steps=2, negatives=3, context=c)\n"
    "    output c\n"
    "}\n";

/* Supervised image model: conv2d, patches of its output, conv2d over the
 * patches, sigmoid, both poolings, the elementwise arithmetic, reshape, mean,
 * linear, cross_entropy. */
static const char *sup_src =
    "model sup {\n"
    "    input x: [batch, 2, 8, 8]\n"
    "    input y: labels[batch]\n"
    "    h0 = conv2d(x, 2, k=3, pad=1)\n"
    "    p = patches(h0, size=4, stride=2)\n"
    "    h = conv2d(p, 3, k=3, pad=1)\n"
    "    a = avgpool2d(sigmoid(h), 2)\n"
    "    m = maxpool2d(h, 2)\n"
    "    s = (a - m) * a + m * 0.5 + 1.0\n"
    "    f = mean(reshape(s, [-1, 9, 12]), 1)\n"
    "    logits = linear(f, 5)\n"
    "    cross_entropy(logits, y)\n"
    "    output logits\n"
    "}\n";

static void check_model(const char *name, const char *src, float scale) {
    gim_exec_model *em = gim_hm_compile(name, src, BATCH, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    CU_ASSERT_EQUAL(em->n_modules, 1);
    gim_hm_run *r = gim_hm_run_new(em, SEED);
    float *x = gim_hm_input(r, "x");
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    for (int s = 0; s < em->n_slots; s++)
        if (em->slots[s].producer < 0 && !em->slots[s].is_labels)
            gim_test_fill(r->slots[s], (size_t)em->slots[s].numel, 5u + (unsigned)s, -1.0f, 1.0f);
    int32_t *y = gim_hm_input(r, "y");
    if (y)
        for (int i = 0; i < BATCH; i++) y[i] = (i * 3 + 1) % 5;
    gim_hm_scale_params(r, scale);
    CU_ASSERT_EQUAL(gim_hm_grad_check(r, 0, 1, SEED, 0, 0), 0);
    /* Every parameter reaches the loss: none has an all-zero gradient. */
    const gim_exec_module *mod = &em->modules[0];
    for (int i = 0; i < mod->n_params; i++) {
        const gim_param_info *pi = &mod->params[i];
        double gn = gim_hm_norm2(r->grads[0] + pi->offset, pi->numel);
        if (!(gn > 0)) fprintf(stderr, "%s: no gradient for %s\n", name, pi->name);
        CU_ASSERT_TRUE(gn > 0);
    }
    gim_hm_run_free(r);
    gim_exec_model_free(em);
}

static void test_seq(void) { check_model("seq", seq_src, 1.0f); }

/* The products seq's step executes (cg_products.c), by hand, batch 4, in FLOPs
 * (2 per multiply-add):
 *   conv1d 3→4, k 3, 16 frames: forward and weight gradient (x has none)  2 × 2·4·4·16·3·3
 *   conv1d 4→4, k 3, stride 2, 8 frames: forward, data, weight            3 × 2·4·4·8·4·3
 *   linear 4→5 and 5→5 over 32 rows: forward, data, weight                3 × 2·32·4·5, 3 × 2·32·5·5
 *   gru 5→6 over 32 rows: input and hidden projections, backward twice    3 × 2·32·18·(5 + 6)
 *   InfoNCE's backward (it yields the loss): the predictions, dc and dW over
 *   the 32 positions, 3 × 2·32·6·(2·5), and three passes over 4 candidates
 *   at the 4·7 + 4·6 positions with a target, 3 × 2·5·4·52. */
static void test_seq_products(void) {
    gim_exec_model *em = gim_hm_compile("seq", seq_src, BATCH, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    double want = 2 * 2.0 * 4 * 4 * 16 * 3 * 3 + 3 * 2.0 * 4 * 4 * 8 * 4 * 3 + 3 * 2.0 * 32 * 4 * 5 +
                  3 * 2.0 * 32 * 5 * 5 + 3 * 2.0 * 32 * 18 * (5 + 6) + 3 * 2.0 * 32 * 6 * 10 + 3 * 2.0 * 5 * 4 * 52;
    CU_ASSERT_DOUBLE_EQUAL(em->modules[0].step_products, want, 0.5);
    if (em->modules[0].step_products != want)
        fprintf(stderr, "seq: %.0f products, by hand %.0f\n", em->modules[0].step_products, want);
    gim_exec_model_free(em);
}
static void test_sup(void) { check_model("sup", sup_src, 1.0f); }

int main(void) {
    static const gim_test tests[] = {
        {"conv1d, leaky_relu, transpose, linear, tanh, gru, infonce(context=)", test_seq},
        {"seq: the products a step executes", test_seq_products},
        {"conv2d, patches, sigmoid, pools, sub/mul/add/scale/shift, reshape, mean, cross_entropy", test_sup},
        {NULL, NULL},
    };
    return gim_run_suite("model_ops", tests);
}
