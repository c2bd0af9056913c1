/* Fusing ReLU into the ops around it, after autodiff and before code
 * generation:
 *
 *   y = relu(conv(x))                  the convolution applies max(·, 0) as it
 *                                      writes its output; y becomes a view of it
 *   d = relu_bwd(conv_bwd_data(dy), y) the data gradient takes y as a third input
 *                                      and keeps its output only where y > 0;
 *                                      d becomes a view of it
 *   d = relu_bwd(spatial_mean_bwd(dz), y)   the same: y a second input
 *
 * A pass over memory-bound elementwise work saved each time, and the
 * convolution's pre-activation buffer with it. Only when the convolution's
 * output has no other reader (not a module's export or input, not a
 * gradient, not the model's output): the values are then the same bits as
 * the unfused graph's (the epilogue computes what RELU and RELU_BWD compute,
 * in the same order). */
#include "gim_compiler.h"

/* Who else holds n: anything but a node's input. */
static void mark_held(int *readers, const gim_node *n) {
    if (n) readers[n->id] += 2;   /* never 1: never fused */
}

static bool is_conv_fwd(gim_op op) { return op == GIM_OP_CONV2D || op == GIM_OP_CONV1D; }
static bool is_conv_bwd_data(gim_op op) { return op == GIM_OP_CONV2D_BWD_DATA || op == GIM_OP_CONV1D_BWD_DATA; }

/* Turns n into a view of its first input (same shape: a reshape that moves
 * nothing). */
static void make_view(gim_node *n, gim_node *src) {
    n->op = GIM_OP_RESHAPE;
    n->n_in = 1;
    n->in[0] = src;
    for (int i = 0; i < GIM_MAX_ATTR; i++) n->attr[i] = 0;
}

int gim_fuse(gim_graph *g) {
    if (!g || g->n_modules == 0) return 0;
    int nn = g->nodes.len;
    int *readers = gim_arena_alloc(g->arena, (size_t)nn * sizeof *readers);
    for (int i = 0; i < nn; i++) readers[i] = 0;
    for (int mi = 0; mi < g->n_modules; mi++) {
        const gim_module *m = &g->modules[mi];
        for (int pass = 0; pass < 2; pass++) {
            const gim_ptrvec *v = pass ? &m->bwd_nodes : &m->nodes;
            for (int i = 0; i < v->len; i++) {
                const gim_node *n = v->items[i];
                for (int j = 0; j < n->n_in; j++) readers[n->in[j]->id]++;
            }
        }
        for (int i = 0; i < m->exports.len; i++) mark_held(readers, m->exports.items[i]);
        for (int i = 0; i < m->inputs.len; i++) mark_held(readers, m->inputs.items[i]);
        for (int i = 0; i < m->grads.len; i++) mark_held(readers, m->grads.items[i]);
        mark_held(readers, m->loss);
    }
    mark_held(readers, g->output);
    for (int i = 0; i < g->losses.len; i++) mark_held(readers, g->losses.items[i]);

    int fused = 0;
    for (int mi = 0; mi < g->n_modules; mi++) {
        const gim_module *m = &g->modules[mi];
        for (int pass = 0; pass < 2; pass++) {
            const gim_ptrvec *v = pass ? &m->bwd_nodes : &m->nodes;
            for (int i = 0; i < v->len; i++) {
                gim_node *n = v->items[i];
                if (n->n_in < 1) continue;
                gim_node *src = n->in[0];
                if (readers[src->id] != 1 || src->module != n->module) continue;
                if (n->op == GIM_OP_RELU && is_conv_fwd(src->op) && src->attr[GIM_FUSED_RELU] == 0) {
                    src->attr[GIM_FUSED_RELU] = 1;
                    make_view(n, src);
                    fused++;
                } else if (n->op == GIM_OP_RELU_BWD &&
                           ((is_conv_bwd_data(src->op) && src->n_in == 2) ||
                            (src->op == GIM_OP_SPATIAL_MEAN_BWD && src->n_in == 1)) &&
                           src->attr[GIM_FUSED_RELU] == 0) {
                    src->in[src->n_in++] = n->in[1];   /* y, after the op's own inputs */
                    src->attr[GIM_FUSED_RELU] = 1;
                    make_view(n, src);
                    fused++;
                }
            }
        }
    }
    return fused;
}
