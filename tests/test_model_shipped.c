/* The shipped models (in models/) through parse, lower, partition and
 * autodiff, greedy and end to end: every module's every parameter gets a
 * gradient of its own shape, the backward nodes pass the verifier, none is
 * dead (unused), and no backward node reads another module's backward nodes. The
 * graph alone: no code is generated here (test_model.c runs a model). */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "gim_compiler.h"
#include "testutil.h"

static void check_model(const char *file, bool e2e) {
    char path[512];
    snprintf(path, sizeof path, "%s/models/%s", GIM_SOURCE_DIR, file);
    char stdlib[512];
    snprintf(stdlib, sizeof stdlib, "%s/stdlib", GIM_SOURCE_DIR);
    gim_diag d;
    gim_diag_init(&d, stderr);
    gim_arena *arena = gim_arena_new();
    gim_program *p = gim_parse_program(&d, arena, path, stdlib);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL_FATAL(d.n_errors, 0);
    gim_graph *g = gim_lower(&d, p, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL_FATAL(gim_partition(&d, g, e2e), 0);
    int n_fwd = g->nodes.len;
    CU_ASSERT_EQUAL_FATAL(gim_autodiff(&d, g), 0);
    CU_ASSERT_EQUAL(d.n_errors, 0);
    CU_ASSERT_TRUE(g->nodes.len > n_fwd);
    int n_params = 0, bwd_listed = 0;
    for (int k = 0; k < g->n_modules; k++) {
        gim_module *m = &g->modules[k];
        CU_ASSERT_PTR_NOT_NULL(m->loss);
        CU_ASSERT_EQUAL_FATAL(m->grads.len, m->params.len);
        for (int i = 0; i < m->params.len; i++) {
            gim_node *w = m->params.items[i], *gw = m->grads.items[i];
            if (!gw) fprintf(stderr, "%s%s: no gradient for %s\n", file, e2e ? " (e2e)" : "", w->name);
            CU_ASSERT_PTR_NOT_NULL_FATAL(gw);
            CU_ASSERT_TRUE(gim_shape_eq(&gw->shape, &w->shape));
            CU_ASSERT_TRUE(gw->is_backward && gw->module == k);
        }
        n_params += m->params.len;
        bwd_listed += m->bwd_nodes.len;
        for (int i = 0; i < m->bwd_nodes.len; i++) {
            gim_node *b = m->bwd_nodes.items[i];
            CU_ASSERT_TRUE(b->is_backward && b->module == k && b->id >= n_fwd);
            for (int j = 0; j < b->n_in; j++)
                if (b->in[j]->is_backward) CU_ASSERT_EQUAL(b->in[j]->module, k);
            /* No dead backward node: each is a parameter's gradient or read
             * by a later backward node. */
            bool used = false;
            for (int j = 0; j < m->grads.len && !used; j++) used = m->grads.items[j] == b;
            for (int j = i + 1; j < m->bwd_nodes.len && !used; j++) {
                const gim_node *later = m->bwd_nodes.items[j];
                for (int q = 0; q < later->n_in; q++) used |= later->in[q] == b;
            }
            if (!used) fprintf(stderr, "%s: dead backward node %%%d %s\n", file, b->id, b->name);
            CU_ASSERT_TRUE(used);
        }
    }
    CU_ASSERT_TRUE(n_params > 0);
    CU_ASSERT_EQUAL(bwd_listed, g->nodes.len - n_fwd);
    if (e2e) CU_ASSERT_EQUAL(g->n_modules, 1);
    gim_graph_free(g);
    gim_arena_free(arena);
    gim_diag_release(&d);
}

static void test_fashion_gim(void) { check_model("fashion_gim.gim", false); check_model("fashion_gim.gim", true); }
static void test_fashion_supervised(void) { check_model("fashion_supervised.gim", false); }
static void test_gim_vision(void) { check_model("gim_vision.gim", false); check_model("gim_vision.gim", true); }
static void test_cpc_audio(void) { check_model("cpc_audio.gim", false); check_model("cpc_audio.gim", true); }

int main(void) {
    static const gim_test tests[] = {
        {"fashion_gim, greedy and e2e", test_fashion_gim},
        {"fashion_supervised", test_fashion_supervised},
        {"gim_vision, greedy and e2e", test_gim_vision},
        {"cpc_audio, greedy and e2e", test_cpc_audio},
        {NULL, NULL},
    };
    return gim_run_suite("model_shipped", tests);
}
