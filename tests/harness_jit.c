/* The JIT test harness (see harness_jit.h): a one-module graph built by
 * hand, compiled with gim_jit, run through its forward function. */
#include "harness_jit.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "gim_compiler.h"

struct hj_graph {
    gim_graph *g;
    int opt_level;
    gim_exec_model *model;
    char *errors;
};

gim_shape hj_shape(int rank, const int64_t *d) { return gim_shape_make(rank, d); }

hj_graph *hj_new(int64_t batch) {
    hj_graph *h = gim_xmalloc(sizeof *h);
    memset(h, 0, sizeof *h);
    h->g = gim_graph_new();
    h->g->batch = batch;
    h->g->model_name = "harness";
    h->opt_level = 2;
    return h;
}

void hj_free(hj_graph *h) {
    if (!h) return;
    if (h->model) gim_exec_model_free(h->model);
    gim_graph_free(h->g);
    free(h->errors);
    gim_free(h);
}

gim_graph *hj_graph_of(hj_graph *h) { return h->g; }
void hj_set_opt(hj_graph *h, int opt_level) { h->opt_level = opt_level; }

gim_node *hj_input(hj_graph *h, gim_shape s) {
    gim_node *n = gim_node_new(h->g, GIM_OP_INPUT, 0, NULL, (gim_loc){0});
    n->shape = s;
    n->name = gim_arena_printf(h->g->arena, "in%d", h->g->inputs.len);
    gim_ptrvec_push(h->g->arena, &h->g->inputs, n);
    return n;
}

gim_node *hj_labels(hj_graph *h, int64_t n) {
    gim_node *x = gim_node_new(h->g, GIM_OP_LABELS, 0, NULL, (gim_loc){0});
    x->shape = gim_shape_make(1, &n);
    x->is_int = true;
    x->name = gim_arena_printf(h->g->arena, "labels%d", h->g->inputs.len);
    gim_ptrvec_push(h->g->arena, &h->g->inputs, x);
    return x;
}

gim_node *hj_op(hj_graph *h, gim_op op, gim_shape out, int n_in, gim_node *const *in, int n_attr,
                const double *attr) {
    gim_node *n = gim_node_new(h->g, op, n_in, in, (gim_loc){0});
    n->shape = out;
    for (int i = 0; i < n_attr && i < GIM_MAX_ATTR; i++) n->attr[i] = attr[i];
    return n;
}

int hj_compile(hj_graph *h, int n_out, gim_node *const *out) {
    gim_graph *g = h->g;
    if (h->model) {
        gim_exec_model_free(h->model);
        h->model = NULL;
    }
    gim_module *m = gim_arena_alloc(g->arena, sizeof *m);
    for (int i = 0; i < g->nodes.len; i++) {
        gim_node *n = gim_node_at(g, i);
        n->module = 0;
        if (n->op != GIM_OP_INPUT && n->op != GIM_OP_LABELS) gim_ptrvec_push(g->arena, &m->nodes, n);
    }
    for (int i = 0; i < g->inputs.len; i++) gim_ptrvec_push(g->arena, &m->inputs, g->inputs.items[i]);
    for (int i = 0; i < n_out; i++) gim_ptrvec_push(g->arena, &m->exports, out[i]);
    g->modules = m;
    g->n_modules = 1;

    char *text = NULL;
    size_t len = 0;
    FILE *ef = open_memstream(&text, &len);
    gim_diag d;
    gim_diag_init(&d, ef);
    gim_cg_options o = {.opt_level = h->opt_level, .cfg = NULL};
    h->model = gim_jit(&d, g, &o);
    gim_diag_release(&d);
    fclose(ef);
    free(h->errors);
    h->errors = text;
    if (!h->model) {
        fprintf(stderr, "%s", text ? text : "");
        return -1;
    }
    return 0;
}

static float run(hj_graph *h, const void *const *in, float *const *out, uint64_t step, uint64_t seed, bool use_step) {
    const gim_exec_module *xm = &h->model->modules[0];
    size_t nw = (size_t)xm->n_work_floats + 16;
    float *work = gim_xmalloc(nw * sizeof(float));
    for (size_t i = 0; i < nw; i++) work[i] = NAN;
    const int32_t *labels = NULL;
    for (int i = 0; i < h->g->inputs.len; i++)
        if (((gim_node *)h->g->inputs.items[i])->op == GIM_OP_LABELS) labels = in[i];
    gim_call call = {
        .inputs = (const float *const *)in,
        .labels = labels,
        .params = NULL,
        .grads = NULL,
        .opt = NULL,
        .work = work,
        .outputs = out,
        .step = step,
        .seed = seed,
        .lr = 0,
        .flags = GIM_CALL_NO_UPDATE,
    };
    float loss = 0;
    if (use_step) loss = xm->step(&call);
    else xm->forward(&call);
    gim_free(work);
    return loss;
}

int hj_run_ex(hj_graph *h, const void *const *in, float *const *out, uint64_t step, uint64_t seed) {
    if (!h->model) return -1;
    run(h, in, out, step, seed, false);
    return 0;
}

float hj_run_step(hj_graph *h, const void *const *in, float *const *out) {
    if (!h->model) return NAN;
    return run(h, in, out, 1, 0, true);
}

int hj_run(hj_graph *h, const void *const *in, float *const *out) { return hj_run_ex(h, in, out, 1, 0); }

int64_t hj_work_floats(hj_graph *h) { return h->model ? h->model->modules[0].n_work_floats : -1; }

int hj_print_ir(hj_graph *h, int opt_level, FILE *out) {
    gim_diag d;
    gim_diag_init(&d, stderr);
    gim_cg_options o = {.opt_level = opt_level, .cfg = NULL};
    int rc = h->g->n_modules ? gim_emit_ir(&d, h->g, &o, 0, "forward", GIM_IR_LLVM, out) : -1;
    gim_diag_release(&d);
    return rc;
}

const char *hj_errors(hj_graph *h) { return h->errors ? h->errors : ""; }
