/* Cost model: parameters, activation memory and FLOPs of a module.
 *
 * FLOPs count multiply-adds as 2 and every other arithmetic operation as 1;
 * data movement (patches, transpose, views) counts nothing. They are per call
 * of the module (the whole batch).
 *
 * A training step is forward + backward (+ an optimizer update, a few FLOPs
 * per parameter, negligible and not counted). The backward of an op with
 * learned weights (conv, linear, gru, infonce) computes both the gradient of
 * its input and of its weights, each about as costly as the forward, so we
 * count it as 2x the forward; the backward of any other op as 1x. Hence
 *     step = sum over ops of fwd(op) * (weights(op) ? 3 : 2).
 * For models/fashion_gim.gim at batch 32 that gives about 16.5 GFLOP (the
 * convolutions' 5.48 GFLOP forward, times 3, plus the InfoNCE losses). */
#include "cost.h"
#include "gim_compiler.h"

typedef double (*flop_fn)(const gim_node *n);

typedef struct cost_rule {
    flop_fn fwd;       /* forward FLOPs of one call */
    bool weights;      /* has learned weights: backward costs 2x forward */
} cost_rule;

static double numel(const gim_node *n) { return (double)gim_shape_numel(&n->shape); }
static double numel_in(const gim_node *n, int i) { return (double)gim_shape_numel(&n->in[i]->shape); }
static int64_t in_last(const gim_node *n, int i, int k) {
    const gim_shape *s = &n->in[i]->shape;
    return s->d[s->rank - k];
}

static double flop_none(const gim_node *n) { return 0; }
static double flop_elementwise(const gim_node *n) { return numel(n); }
static double flop_input_sized(const gim_node *n) { return numel_in(n, 0); }

/* y[o, p] = sum over C*k*k of w * x (+ b): 2 C k k FLOPs per output (+1 bias) */
static double flop_conv2d(const gim_node *n) {
    double k = (double)gim_attr_i(n, 1);
    return numel(n) * (2.0 * (double)in_last(n, 0, 3) * k * k + (gim_attr_i(n, 4) ? 1 : 0));
}
static double flop_conv1d(const gim_node *n) {
    double k = (double)gim_attr_i(n, 1);
    return numel(n) * (2.0 * (double)in_last(n, 0, 2) * k + (gim_attr_i(n, 4) ? 1 : 0));
}
static double flop_linear(const gim_node *n) {
    return numel(n) * (2.0 * (double)in_last(n, 0, 1) + (gim_attr_i(n, 1) ? 1 : 0));
}
static double flop_pool(const gim_node *n) {
    double k = (double)gim_attr_i(n, 0);
    return numel(n) * k * k;
}
/* Per step t: two matrix-vector products (3H x C and 3H x H) and ~12H gate math. */
static double flop_gru(const gim_node *n) {
    const gim_shape *x = &n->in[0]->shape;
    double h = (double)gim_attr_i(n, 0), c = (double)x->d[2], nt = (double)(x->d[0] * x->d[1]);
    return nt * (2.0 * 3 * h * (c + h) + 12 * h);
}
/* Per step k and position with a target: W_k c (2 Cz Cc), 1 + negatives dot
 * products (2 Cz each), a log-sum-exp over the candidates (~3 each). */
static double flop_infonce(const gim_node *n) {
    const gim_shape *z = &n->in[0]->shape;
    double cz = (double)z->d[z->rank - 1], cc = (double)in_last(n, 1, 1);
    double cand = 1.0 + (double)gim_attr_i(n, 1);
    int64_t steps = gim_attr_i(n, 0), rows = z->d[1];
    double per_row = z->rank == 4 ? (double)(z->d[0] * z->d[2]) : (double)z->d[0];
    double total = 0;
    for (int64_t k = 1; k <= steps && k < rows; k++)
        total += per_row * (double)(rows - k) * (2 * cz * cc + cand * (2 * cz + 3));
    return total;
}
static double flop_cross_entropy(const gim_node *n) { return 4.0 * numel_in(n, 0); }

static const cost_rule cost_rules[GIM_OP_COUNT] = {
    [GIM_OP_INPUT] = {flop_none, false},
    [GIM_OP_LABELS] = {flop_none, false},
    [GIM_OP_PARAM] = {flop_none, false},
    [GIM_OP_PATCHES] = {flop_none, false},
    [GIM_OP_CONV2D] = {flop_conv2d, true},
    [GIM_OP_CONV1D] = {flop_conv1d, true},
    [GIM_OP_LINEAR] = {flop_linear, true},
    [GIM_OP_RELU] = {flop_elementwise, false},
    [GIM_OP_TANH] = {flop_elementwise, false},
    [GIM_OP_SIGMOID] = {flop_elementwise, false},
    [GIM_OP_LEAKY_RELU] = {flop_elementwise, false},
    [GIM_OP_ADD] = {flop_elementwise, false},
    [GIM_OP_SUB] = {flop_elementwise, false},
    [GIM_OP_MUL] = {flop_elementwise, false},
    [GIM_OP_SCALE] = {flop_elementwise, false},
    [GIM_OP_SHIFT] = {flop_elementwise, false},
    [GIM_OP_AVGPOOL2D] = {flop_pool, false},
    [GIM_OP_MAXPOOL2D] = {flop_pool, false},
    [GIM_OP_SPATIAL_MEAN] = {flop_input_sized, false},
    [GIM_OP_MEAN] = {flop_input_sized, false},
    [GIM_OP_RESHAPE] = {flop_none, false},
    [GIM_OP_TRANSPOSE] = {flop_none, false},
    [GIM_OP_GRU] = {flop_gru, true},
    [GIM_OP_GRADIENT_BLOCK] = {flop_none, false},
    [GIM_OP_INFONCE] = {flop_infonce, true},
    [GIM_OP_CROSS_ENTROPY] = {flop_cross_entropy, false},
    /* The one internal op in forward graphs: a select per weight. */
    [GIM_OP_CONV2D_MASK] = {flop_elementwise, false},
    /* Other internal ops are never costed on their own: a step's backward is
     * estimated from the forward ops above. */
};

bool gim_cost_rule_exists(gim_op op) {
    return op < GIM_OP_COUNT && (cost_rules[op].fwd != NULL || gim_op_info(op)->kind == GIM_OPK_INTERNAL);
}

double gim_node_fwd_flops(const gim_node *n) {
    return cost_rules[n->op].fwd ? cost_rules[n->op].fwd(n) : 0;
}

/* Views alias their source and hold no memory of their own. */
static bool is_view(const gim_node *n) {
    return n->op == GIM_OP_RESHAPE || n->op == GIM_OP_GRADIENT_BLOCK || n->op == GIM_OP_SLICE;
}

gim_cost gim_module_cost(const gim_graph *g, const gim_module *m) {
    gim_cost c = {0};
    for (int i = 0; i < m->params.len; i++) c.n_params += gim_shape_numel(&((gim_node *)m->params.items[i])->shape);
    for (int i = 0; i < m->nodes.len; i++) {
        const gim_node *n = m->nodes.items[i];
        c.n_ops++;
        if (!is_view(n)) c.act_floats += gim_shape_numel(&n->shape);
        double f = gim_node_fwd_flops(n);
        c.fwd_flops += f;
        c.step_flops += f * (cost_rules[n->op].weights ? 3 : 2);
        if ((n->op == GIM_OP_CONV2D || n->op == GIM_OP_CONV1D) && n->attr[GIM_FUSED_RELU] != 0) {
            /* a fused ReLU (gim_fuse), counted as the RELU node it replaced */
            c.fwd_flops += numel(n);
            c.step_flops += 2 * numel(n);
        }
    }
    return c;
}
