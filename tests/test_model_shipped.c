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

/* The representation each module's probe reads (its feature slot), from the
 * layout gim_describe gives (no code): "name [d0, d1, ...]" per module. */
static void feature_slots(const char *file, int64_t batch, char out[][160], int max_modules, int *n_modules) {
    char path[512], stdlib[512];
    snprintf(path, sizeof path, "%s/models/%s", GIM_SOURCE_DIR, file);
    snprintf(stdlib, sizeof stdlib, "%s/stdlib", GIM_SOURCE_DIR);
    gim_diag d;
    gim_diag_init(&d, stderr);
    gim_arena *arena = gim_arena_new();
    gim_program *p = gim_parse_program(&d, arena, path, stdlib);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    gim_graph *g = gim_lower(&d, p, batch);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL_FATAL(gim_partition(&d, g, false), 0);
    CU_ASSERT_EQUAL_FATAL(gim_autodiff(&d, g), 0);
    gim_cg_options o = {.opt_level = 0, .cfg = NULL};
    gim_exec_model *em = gim_describe(&d, g, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(em);
    *n_modules = em->n_modules;
    for (int k = 0; k < em->n_modules && k < max_modules; k++) {
        int sl = em->modules[k].feature_slot;
        CU_ASSERT_FATAL(sl >= 0);
        const gim_slot_info *si = &em->slots[sl];
        int len = snprintf(out[k], 160, "%s [", si->name ? si->name : "?");
        for (int i = 0; i < si->rank && len < 140; i++)
            len += snprintf(out[k] + len, (size_t)(160 - len), "%s%lld", i ? ", " : "", (long long)si->shape[i]);
        snprintf(out[k] + len, (size_t)(160 - len), "]");
    }
    gim_exec_model_free(em);
    gim_graph_free(g);
    gim_arena_free(arena);
    gim_diag_release(&d);
}

/* Modules 1-5 of cpc_audio are probed on their frames, module 6 on the GRU's
 * context c (the model's output, as the method probes its autoregressive
 * module); the PixelCNN model's module 3 on z3, which it outputs, not on the
 * context its loss reads. */
static void test_feature_slots(void) {
    char f[8][160];
    int n = 0;
    feature_slots("cpc_audio.gim", 2, f, 8, &n);
    CU_ASSERT_EQUAL_FATAL(n, 6);
    const int64_t T[5] = {4095, 1023, 512, 257, 128};
    for (int k = 0; k < 5; k++) {
        char want[64];
        snprintf(want, sizeof want, "[2, %lld, 512]", (long long)T[k]);
        if (!strstr(f[k], want) || !strstr(f[k], "frames")) fprintf(stderr, "\n  module %d: %s\n", k + 1, f[k]);
        CU_ASSERT_PTR_NOT_NULL(strstr(f[k], want));
        CU_ASSERT_PTR_NOT_NULL(strstr(f[k], "frames"));
    }
    if (!strstr(f[5], "gru") || !strstr(f[5], "[2, 128, 256]")) fprintf(stderr, "\n  module 6: %s\n", f[5]);
    CU_ASSERT_PTR_NOT_NULL(strstr(f[5], "gru"));
    CU_ASSERT_PTR_NOT_NULL(strstr(f[5], "[2, 128, 256]"));
    feature_slots("fashion_gim_pixelcnn.gim", 2, f, 8, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    if (!strstr(f[2], "spatial_mean") || strstr(f[2], "pixelcnn")) fprintf(stderr, "\n  module 3: %s\n", f[2]);
    CU_ASSERT_PTR_NOT_NULL(strstr(f[2], "spatial_mean"));
    CU_ASSERT_PTR_NULL(strstr(f[2], "pixelcnn"));
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
        {"feature slots: cpc_audio's module 6 is its context, the PixelCNN model's module 3 its z", test_feature_slots},
        {NULL, NULL},
    };
    return gim_run_suite("model_shipped", tests);
}
