/* Partition (compiler/partition.c): modules cut at gradient_block, their
 * inputs, exports, parameters and losses; the errors; end to end. */
#include <string.h>

#include "harness_graph.h"
#include "shape.h"
#include "testutil.h"

static const char *three_modules =
    "import \"conv.gim\"\n"
    "model m {\n"
    "    input x: [batch, 1, 28, 28]\n"
    "    p  = patches(x, size=8, stride=4)\n"
    "    h1 = conv_pair(p, 4)\n"
    "    infonce(spatial_mean(h1), steps=2, negatives=3)\n"
    "    h2 = conv_pair(gradient_block(h1), 8, stride=2)\n"
    "    infonce(spatial_mean(h2), steps=2, negatives=3)\n"
    "    h3 = conv_pair(gradient_block(h2), 16, stride=2)\n"
    "    infonce(spatial_mean(h3), steps=2, negatives=3)\n"
    "    output spatial_mean(h3)\n"
    "}\n";

static bool contains(const gim_ptrvec *v, const gim_node *n) {
    for (int i = 0; i < v->len; i++)
        if (v->items[i] == n) return true;
    return false;
}

static char *errors_of(const char *src, bool e2e) { return hg_fails(src, 2, true, e2e); }

static void errors_with(const char *src, bool e2e, const char *needle) {
    hg_expect_error(src, 2, true, e2e, needle);
}

static void test_three_modules(void) {
    gim_graph *g = hg_ok(three_modules, 2, true, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL_FATAL(g->n_modules, 3);
    gim_node *x = hg_find(g, "x"), *h1 = hg_find(g, "conv_pair.1/relu.2"), *h2 = hg_find(g, "conv_pair.2/relu.2");
    gim_node *gb1 = hg_find(g, "gradient_block.1"), *gb2 = hg_find(g, "gradient_block.2");
    CU_ASSERT_FATAL(x && h1 && h2 && gb1 && gb2);
    /* model inputs belong to no module; the block starts the next one, its
     * input stays in the earlier one */
    CU_ASSERT_EQUAL(x->module, -1);
    CU_ASSERT_EQUAL(hg_find(g, "patches.1")->module, 0);
    CU_ASSERT_EQUAL(h1->module, 0);
    CU_ASSERT_EQUAL(gb1->module, 1);
    CU_ASSERT_EQUAL(h2->module, 1);
    CU_ASSERT_EQUAL(gb2->module, 2);
    CU_ASSERT_EQUAL(g->output->module, 2);
    for (int k = 0; k < 3; k++) {
        gim_module *mod = &g->modules[k];
        CU_ASSERT_EQUAL(mod->index, k);
        /* one loss, the k-th infonce */
        CU_ASSERT_PTR_EQUAL(mod->loss, g->losses.items[k]);
        /* two convs with bias and one W */
        CU_ASSERT_EQUAL(mod->params.len, 5);
        for (int i = 0; i < mod->params.len; i++) {
            gim_node *p = mod->params.items[i];
            CU_ASSERT(p->op == GIM_OP_PARAM && p->module == k);
        }
        /* nodes: this module's computing nodes, in order, no params/inputs */
        for (int i = 0; i < mod->nodes.len; i++) {
            gim_node *n = mod->nodes.items[i];
            CU_ASSERT(n->module == k && n->op != GIM_OP_PARAM && n->op != GIM_OP_INPUT);
            if (i) CU_ASSERT(((gim_node *)mod->nodes.items[i - 1])->id < n->id);
        }
        /* the representation the loss reads is exported (for the probe) */
        CU_ASSERT(contains(&mod->exports, mod->loss->in[0]));
    }
    CU_ASSERT(contains(&g->modules[0].inputs, x));
    CU_ASSERT_EQUAL(g->modules[0].inputs.len, 1);
    CU_ASSERT(contains(&g->modules[1].inputs, h1) && g->modules[1].inputs.len == 1);
    CU_ASSERT(contains(&g->modules[2].inputs, h2) && g->modules[2].inputs.len == 1);
    CU_ASSERT(contains(&g->modules[0].exports, h1));
    CU_ASSERT(contains(&g->modules[1].exports, h2));
    CU_ASSERT(contains(&g->modules[2].exports, g->output));
    CU_ASSERT(!g->e2e);
    /* 7 ops in module 1: patches, conv, relu, conv, relu, spatial_mean, infonce */
    CU_ASSERT_EQUAL(g->modules[0].nodes.len, 7);
    gim_graph_free(g);
}

static void test_end_to_end(void) {
    gim_graph *g = hg_ok(three_modules, 2, true, true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL_FATAL(g->n_modules, 1);
    CU_ASSERT(g->e2e);
    gim_module *mod = &g->modules[0];
    /* the last loss only; the others (and their W) are left out */
    CU_ASSERT_PTR_EQUAL(mod->loss, g->losses.items[2]);
    CU_ASSERT_EQUAL(((gim_node *)g->losses.items[0])->module, -1);
    CU_ASSERT_EQUAL(hg_find(g, "infonce.1/w")->module, -1);
    CU_ASSERT_EQUAL(mod->params.len, 6 * 2 + 1);
    /* every other computing node, blocks included */
    int computing = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        gim_node *n = gim_node_at(g, i);
        if (n->op != GIM_OP_PARAM && n->op != GIM_OP_INPUT) computing++;
    }
    CU_ASSERT_EQUAL(mod->nodes.len, computing - 2);
    CU_ASSERT(contains(&mod->nodes, hg_find(g, "gradient_block.2")));
    gim_graph_free(g);
}

static void test_module_without_loss(void) {
    errors_with("model m {\n"
                "    input x: [batch, 2, 16]\n"
                "    h1 = conv1d(x, 4, k=3)\n"
                "    infonce(transpose(h1, 1, 2), steps=2)\n"
                "    h2 = conv1d(gradient_block(h1), 4, k=3)\n"
                "    output h2\n"
                "}\n",
                false, "test.gim:5:17: error: module 2 has no loss");
    /* a model with no loss at all partitions (train refuses it later) */
    gim_graph *g = hg_ok("model m {\n    input x: [batch, 3]\n    h = linear(x, 2)\n"
                         "    output linear(gradient_block(h), 2)\n}\n",
                         2, true, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL(g->n_modules, 2);
    CU_ASSERT_PTR_NULL(g->modules[0].loss);
    gim_graph_free(g);
}

static void test_two_losses(void) {
    char *m = errors_of("model m {\n"
                        "    input x: [batch, 2, 16]\n"
                        "    z = transpose(conv1d(x, 4, k=3), 1, 2)\n"
                        "    infonce(z, steps=2)\n"
                        "    infonce(z, steps=1)\n"
                        "    output z\n"
                        "}\n",
                        false);
    CU_ASSERT(strstr(m, "test.gim:5:5: error: module 1 has two losses") != NULL);
    CU_ASSERT(strstr(m, "test.gim:4:5: note: its first loss is here") != NULL);
    gim_free(m);
}

static void test_loss_reading_two_modules(void) {
    errors_with("model m {\n"
                "    input x: [batch, 2, 16]\n"
                "    z1 = transpose(conv1d(x, 4, k=3), 1, 2)\n"
                "    infonce(z1, steps=2)\n"
                "    z2 = linear(gradient_block(z1), 4)\n"
                "    infonce(z2, steps=2, context=z1)\n"
                "    output z2\n"
                "}\n",
                false, "test.gim:6:5: error: this loss reads values of module 1 and module 2");
    /* any op mixing two modules without a block */
    errors_with("model m {\n"
                "    input x: [batch, 3]\n"
                "    a = linear(x, 3)\n"
                "    b = linear(gradient_block(a), 3)\n"
                "    output a + b\n"
                "}\n",
                false, "'add' reads values of module 1 and module 2");
    /* end to end, the same model is one module and fine */
    gim_graph *g = hg_ok("model m {\n    input x: [batch, 3]\n    a = linear(x, 3)\n"
                         "    b = linear(gradient_block(a), 3)\n    output a + b\n}\n",
                         2, true, true);
    CU_ASSERT_PTR_NOT_NULL(g);
    gim_graph_free(g);
}

/* A block on a model input cuts nothing; two blocks in a row make an empty
 * module, which has no loss. */
static void test_blocks_on_inputs(void) {
    gim_graph *g = hg_ok("model m {\n    input x: [batch, 2, 16]\n"
                         "    z = transpose(conv1d(gradient_block(x), 4, k=3), 1, 2)\n"
                         "    infonce(z, steps=2)\n    output z\n}\n",
                         2, true, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL(g->n_modules, 1);
    gim_graph_free(g);
    errors_with("model m {\n    input x: [batch, 2, 16]\n"
                "    z = transpose(conv1d(x, 4, k=3), 1, 2)\n    infonce(z, steps=2)\n"
                "    y = relu(gradient_block(gradient_block(z)))\n    infonce(y, steps=2)\n    output y\n}\n",
                false, "test.gim:5:29: error: module 2 has no loss");
}

static void test_loss_on_nothing(void) {
    char *m = errors_of("model m {\n    input x: [batch, 2, 16]\n"
                        "    z = transpose(conv1d(x, 4, k=3), 1, 2)\n    infonce(z, steps=2)\n"
                        "    infonce(relu(gradient_block(z)), steps=2)\n    output z\n}\n",
                        false);
    CU_ASSERT(strstr(m, "test.gim:5:5: error: this loss trains nothing: module 2 computes nothing") != NULL);
    CU_ASSERT(strstr(m, "test.gim:4:") == NULL);   /* module 1 is fine */
    gim_free(m);
}

static void test_output_errors(void) {
    errors_with("model m {\n    input x: [batch, 3]\n    h = linear(x, 2)\n}\n", false,
                "test.gim:1:7: error: model 'm' has no output");
    errors_with("model m {\n    input x: [batch, 3]\n    output x\n}\n", false, "nothing computes it");
}

/* A graph built by hand, without source: two modules, one labels input. */
static void test_hand_built(void) {
    gim_graph *g = gim_graph_new();
    gim_loc nowhere = {0};
    char msg[300];
    gim_node *x = gim_node_new(g, GIM_OP_INPUT, 0, NULL, nowhere);
    x->shape = (gim_shape){.rank = 2, .d = {4, 3}};
    gim_node *y = gim_node_new(g, GIM_OP_LABELS, 0, NULL, nowhere);
    y->shape = (gim_shape){.rank = 1, .d = {4}};
    y->is_int = true;
    gim_node *w = gim_node_new(g, GIM_OP_PARAM, 0, NULL, nowhere);
    w->shape = (gim_shape){.rank = 2, .d = {5, 3}};
    gim_node *in1[] = {x, w};
    gim_node *lin = gim_node_new(g, GIM_OP_LINEAR, 2, in1, nowhere);
    lin->attr[0] = 5;
    lin->attr[1] = 0;
    CU_ASSERT_EQUAL(gim_infer_shape(lin, msg, sizeof msg), 0);
    gim_node *gb = gim_node_new(g, GIM_OP_GRADIENT_BLOCK, 1, &lin, nowhere);
    CU_ASSERT_EQUAL(gim_infer_shape(gb, msg, sizeof msg), 0);
    gim_node *ce_in[] = {gb, y};
    gim_node *ce = gim_node_new(g, GIM_OP_CROSS_ENTROPY, 2, ce_in, nowhere);
    CU_ASSERT_EQUAL(gim_infer_shape(ce, msg, sizeof msg), 0);
    gim_ptrvec_push(g->arena, &g->losses, ce);
    g->output = lin;
    gim_diag d;
    FILE *sink = tmpfile();
    gim_diag_init(&d, sink);
    /* module 1 (the linear) has no loss, and module 2's loss trains nothing */
    CU_ASSERT_EQUAL(gim_partition(&d, g, false), -1);
    CU_ASSERT_EQUAL(d.n_errors, 2);
    CU_ASSERT_EQUAL(g->n_modules, 2);
    CU_ASSERT_EQUAL(lin->module, 0);
    CU_ASSERT_EQUAL(ce->module, 1);
    gim_graph_free(g);
    gim_diag_release(&d);
    fclose(sink);
}

int main(void) {
    static const gim_test tests[] = {
        {"three modules", test_three_modules},
        {"end to end", test_end_to_end},
        {"module without loss", test_module_without_loss},
        {"two losses in a module", test_two_losses},
        {"loss reading two modules", test_loss_reading_two_modules},
        {"blocks on inputs", test_blocks_on_inputs},
        {"loss on a module that computes nothing", test_loss_on_nothing},
        {"output errors", test_output_errors},
        {"hand-built graph", test_hand_built},
        {NULL, NULL},
    };
    return gim_run_suite("partition", tests);
}
