/* Reverse-mode automatic differentiation, one module at a time.
 *
 * Preconditions (gim_partition has run): every forward node has its shape and
 * module; each gim_module lists its forward nodes, inputs, params and loss.
 *
 * For each module with a loss, the backward pass is built from ordinary graph
 * nodes (is_backward = true, module = the module's index) appended to the
 * graph and listed, in order, in module->bwd_nodes; module->grads[i] is the
 * gradient of module->params[i] (NULL when that parameter does not reach the
 * loss). The seed is the loss itself: the loss ops' backward ops take no
 * upstream gradient (d loss / d loss = 1).
 *
 * Only nodes on a path from one of the module's parameters to its loss are
 * differentiated ("needs grad" is marked forward from the parameters,
 * "reaches loss" backward from the loss). Gradients are built in reverse
 * topological order, one rule per op from the table `rules`; gradients that
 * meet at a tensor are summed with ADD nodes ("add or set"). A gradient_block
 * passes no gradient (greedy: every module learns alone) or the identity
 * (end to end, g->e2e), so in greedy mode no gradient node is ever made for a
 * node of another module.
 *
 * Postconditions (checked by ad_verify_after): every backward node has the
 * shape of the tensor it is the gradient of (packed multi-output buffers are
 * rank 1 and exactly as long as their parts), every parameter gradient has its
 * parameter's shape, and backward nodes read only this module's nodes, its
 * inputs and its own backward nodes. */
#include <stdlib.h>
#include <string.h>

#include "gim_compiler.h"
#include "graph.h"
#include "shape.h"

typedef struct ad_ctx {
    gim_diag *d;
    gim_graph *g;
    gim_module *m;
    int n_fwd;            /* forward nodes are the ids below this */
    bool *is_param;       /* by node id: a parameter of this module */
    bool *needs;          /* by node id: depends on a parameter of this module */
    bool *reaches;        /* by node id: the loss depends on it */
    gim_node **grad;      /* by node id: the gradient accumulated so far, or NULL */
    int errors;           /* internal errors the verifiers found */
} ad_ctx;

/* A backward rule: given forward node n and dy = d loss / d n (NULL for the
 * loss, the root), adds the gradients of n's inputs with ad_acc. Returns 0, or
 * -1 after reporting. */
typedef int (*ad_rule)(ad_ctx *c, gim_node *n, gim_node *dy);

/* ---- helpers ------------------------------------------------------------------ */

static const char *ad_fwd_name(ad_ctx *c, const gim_node *x) {
    if (x->name) return x->name;
    return gim_arena_printf(c->g->arena, "%%%d", x->id);
}

/* A backward node computing (a part of) the gradient of forward tensor `of`,
 * made by the rule of forward node `at` (its source location). */
static gim_node *ad_node(ad_ctx *c, gim_op op, int n_in, gim_node *const *in, gim_shape shape,
                         const gim_node *of, const gim_node *at) {
    gim_node *b = gim_node_new(c->g, op, n_in, in, at->loc);
    b->shape = shape;
    b->is_backward = true;
    b->module = c->m->index;
    b->name = gim_arena_printf(c->g->arena, "grad/%s", ad_fwd_name(c, of));
    gim_ptrvec_push(c->g->arena, &c->m->bwd_nodes, b);
    return b;
}

static gim_node *ad_node1(ad_ctx *c, gim_op op, gim_node *a, gim_shape shape, const gim_node *of,
                          const gim_node *at) {
    return ad_node(c, op, 1, &a, shape, of, at);
}

static gim_node *ad_node2(ad_ctx *c, gim_op op, gim_node *a, gim_node *b, gim_shape shape,
                          const gim_node *of, const gim_node *at) {
    gim_node *in[2] = {a, b};
    return ad_node(c, op, 2, in, shape, of, at);
}

/* Does forward tensor x get a gradient (on a path from a parameter to the loss)? */
static bool ad_wants(const ad_ctx *c, const gim_node *x) {
    return x->id < c->n_fwd && c->needs[x->id] && c->reaches[x->id];
}

/* Add or set: grad[x] += gx. */
static void ad_acc(ad_ctx *c, gim_node *x, gim_node *gx, const gim_node *at) {
    gim_node *old = c->grad[x->id];
    c->grad[x->id] = old ? ad_node2(c, GIM_OP_ADD, old, gx, x->shape, x, at) : gx;
}

/* A view of part of a packed gradient buffer: floats [offset, offset + |x|). */
static gim_node *ad_slice(ad_ctx *c, gim_node *packed, int64_t offset, gim_node *x, const gim_node *at) {
    gim_node *s = ad_node1(c, GIM_OP_SLICE, packed, x->shape, x, at);
    s->attr[0] = (double)offset;
    return s;
}

static gim_shape ad_rank1(int64_t n) {
    return gim_shape_make(1, &n);
}

/* ---- the rules, one per user op ------------------------------------------------ */

/* patches: y[n, i, j, c, u, v] = x[n, c, i·stride + u, j·stride + v]
 *   dx[n, c, h, w] = Σ_{(i, j, u, v): i·stride + u = h, j·stride + v = w} dy[n, i, j, c, u, v]
 * (overlapping patches add up): PATCHES_BWD. */
static int ad_patches(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    gim_node *dx = ad_node1(c, GIM_OP_PATCHES_BWD, dy, x->shape, x, n);
    dx->attr[0] = n->attr[0];
    dx->attr[1] = n->attr[1];
    ad_acc(c, x, dx, n);
    return 0;
}

/* Shared by conv2d and conv1d (y = w ⋆ x + b, a cross-correlation):
 *   dx = dy ⋆ᵀ w      (the transposed convolution: CONV*_BWD_DATA(dy, w))
 *   dw = dy ⋆ x       (correlating dy with x over batch and positions:
 *                      CONV*_BWD_WEIGHT(dy, x))
 *   db[o] = Σ_{batch, positions} dy[..., o, ...]   (BIAS_BWD, axis = the channel axis) */
static int ad_conv(ad_ctx *c, gim_node *n, gim_node *dy, gim_op bwd_data, gim_op bwd_weight, int spatial) {
    gim_node *x = n->in[0], *w = n->in[1];
    if (ad_wants(c, x)) {
        gim_node *dx = ad_node2(c, bwd_data, dy, w, x->shape, x, n);
        for (int i = 0; i < 4; i++) dx->attr[i] = n->attr[i];   /* out k stride pad */
        ad_acc(c, x, dx, n);
    }
    if (ad_wants(c, w)) {
        gim_node *dw = ad_node2(c, bwd_weight, dy, x, w->shape, w, n);
        for (int i = 0; i < 4; i++) dw->attr[i] = n->attr[i];
        ad_acc(c, w, dw, n);
    }
    if (n->n_in > 2 && ad_wants(c, n->in[2])) {
        gim_node *b = n->in[2];
        gim_node *db = ad_node1(c, GIM_OP_BIAS_BWD, dy, b->shape, b, n);
        db->attr[0] = dy->shape.rank - 1 - spatial;
        ad_acc(c, b, db, n);
    }
    return 0;
}

/* conv2d: x [..., C, H, W], w [out, C, k, k], y [..., out, H', W']; see ad_conv. */
static int ad_conv2d(ad_ctx *c, gim_node *n, gim_node *dy) {
    return ad_conv(c, n, dy, GIM_OP_CONV2D_BWD_DATA, GIM_OP_CONV2D_BWD_WEIGHT, 2);
}

/* conv1d: x [..., C, T], w [out, C, k], y [..., out, T']; see ad_conv. */
static int ad_conv1d(ad_ctx *c, gim_node *n, gim_node *dy) {
    return ad_conv(c, n, dy, GIM_OP_CONV1D_BWD_DATA, GIM_OP_CONV1D_BWD_WEIGHT, 1);
}

/* conv2d_mask: y = w ⊙ M with M a constant 0/1 mask (the same for every
 * [out, C] kernel);  dw = dy ⊙ M, the same op applied to dy: the entries a
 * masked convolution never uses get a zero gradient. */
static int ad_conv2d_mask(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *w = n->in[0];
    if (!ad_wants(c, w)) return 0;
    gim_node *dw = ad_node1(c, GIM_OP_CONV2D_MASK, dy, w->shape, w, n);
    dw->attr[0] = n->attr[0];
    ad_acc(c, w, dw, n);
    return 0;
}

/* linear: y = x wᵀ + b, x [..., C], w [out, C]
 *   dx = dy w                         (LINEAR_BWD_DATA)
 *   dw = Σ_batch dyᵀ x                (LINEAR_BWD_WEIGHT)
 *   db = Σ_batch dy                   (BIAS_BWD, axis = the last) */
static int ad_linear(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0], *w = n->in[1];
    if (ad_wants(c, x)) ad_acc(c, x, ad_node2(c, GIM_OP_LINEAR_BWD_DATA, dy, w, x->shape, x, n), n);
    if (ad_wants(c, w)) ad_acc(c, w, ad_node2(c, GIM_OP_LINEAR_BWD_WEIGHT, dy, x, w->shape, w, n), n);
    if (n->n_in > 2 && ad_wants(c, n->in[2])) {
        gim_node *b = n->in[2];
        gim_node *db = ad_node1(c, GIM_OP_BIAS_BWD, dy, b->shape, b, n);
        db->attr[0] = dy->shape.rank - 1;
        ad_acc(c, b, db, n);
    }
    return 0;
}

/* An elementwise op whose derivative is read off its output y (or input):
 * dx = dy ⊙ f'(·), computed by op(dy, reads). */
static int ad_pointwise(ad_ctx *c, gim_node *n, gim_node *dy, gim_op op, gim_node *reads) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    ad_acc(c, x, ad_node2(c, op, dy, reads, x->shape, x, n), n);
    return 0;
}

/* relu: y = max(x, 0);  dx = dy ⊙ [y > 0]   (RELU_BWD(dy, y)) */
static int ad_relu(ad_ctx *c, gim_node *n, gim_node *dy) {
    return ad_pointwise(c, n, dy, GIM_OP_RELU_BWD, n);
}

/* tanh: y = tanh x;  dx = dy ⊙ (1 − y²)   (TANH_BWD(dy, y)) */
static int ad_tanh(ad_ctx *c, gim_node *n, gim_node *dy) {
    return ad_pointwise(c, n, dy, GIM_OP_TANH_BWD, n);
}

/* sigmoid: y = σ(x);  dx = dy ⊙ y ⊙ (1 − y)   (SIGMOID_BWD(dy, y)) */
static int ad_sigmoid(ad_ctx *c, gim_node *n, gim_node *dy) {
    return ad_pointwise(c, n, dy, GIM_OP_SIGMOID_BWD, n);
}

/* leaky_relu: y = x if x > 0 else slope·x;  dx = dy ⊙ (x > 0 ? 1 : slope)
 * (LEAKY_RELU_BWD(dy, x, slope): reads x, since y alone loses the sign when
 * slope ≤ 0). */
static int ad_leaky_relu(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    gim_node *dx = ad_node2(c, GIM_OP_LEAKY_RELU_BWD, dy, x, x->shape, x, n);
    dx->attr[0] = n->attr[0];
    ad_acc(c, x, dx, n);
    return 0;
}

/* add: y = a + b (same shapes: no broadcasting);  da = dy, db = dy */
static int ad_add(ad_ctx *c, gim_node *n, gim_node *dy) {
    for (int i = 0; i < 2; i++)
        if (ad_wants(c, n->in[i])) ad_acc(c, n->in[i], dy, n);
    return 0;
}

/* sub: y = a − b;  da = dy, db = −dy   (SCALE(dy, −1)) */
static int ad_sub(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *a = n->in[0], *b = n->in[1];
    if (ad_wants(c, a)) ad_acc(c, a, dy, n);
    if (ad_wants(c, b)) {
        gim_node *neg = ad_node1(c, GIM_OP_SCALE, dy, b->shape, b, n);
        neg->attr[0] = -1;
        ad_acc(c, b, neg, n);
    }
    return 0;
}

/* mul: y = a ⊙ b;  da = dy ⊙ b, db = dy ⊙ a   (MUL nodes; y = x ⊙ x gets
 * both terms, 2 x dy, by accumulation) */
static int ad_mul(ad_ctx *c, gim_node *n, gim_node *dy) {
    for (int i = 0; i < 2; i++) {
        gim_node *x = n->in[i], *other = n->in[1 - i];
        if (ad_wants(c, x)) ad_acc(c, x, ad_node2(c, GIM_OP_MUL, dy, other, x->shape, x, n), n);
    }
    return 0;
}

/* scale: y = s·x;  dx = s·dy   (SCALE(dy, s)) */
static int ad_scale(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    gim_node *dx = ad_node1(c, GIM_OP_SCALE, dy, x->shape, x, n);
    dx->attr[0] = n->attr[0];
    ad_acc(c, x, dx, n);
    return 0;
}

/* shift: y = x + s;  dx = dy   (no node: the same buffer) */
static int ad_shift(ad_ctx *c, gim_node *n, gim_node *dy) {
    if (ad_wants(c, n->in[0])) ad_acc(c, n->in[0], dy, n);
    return 0;
}

/* avgpool2d: y[.., i, j] = (1/k²) Σ_{u,v<k} x[.., i·s + u, j·s + v]
 *   dx[.., h, w] = (1/k²) Σ_{(i, j, u, v): i·s + u = h, j·s + v = w} dy[.., i, j]   (AVGPOOL2D_BWD) */
static int ad_avgpool2d(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    gim_node *dx = ad_node1(c, GIM_OP_AVGPOOL2D_BWD, dy, x->shape, x, n);
    dx->attr[0] = n->attr[0];
    dx->attr[1] = n->attr[1];
    ad_acc(c, x, dx, n);
    return 0;
}

/* maxpool2d: y[.., i, j] = max_{u,v<k} x[.., i·s + u, j·s + v]
 *   dx[.., h, w] = Σ_{windows (i, j) whose argmax is (h, w)} dy[.., i, j]
 * (MAXPOOL2D_BWD(dy, x) recomputes the argmax from x) */
static int ad_maxpool2d(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    gim_node *dx = ad_node2(c, GIM_OP_MAXPOOL2D_BWD, dy, x, x->shape, x, n);
    dx->attr[0] = n->attr[0];
    dx->attr[1] = n->attr[1];
    ad_acc(c, x, dx, n);
    return 0;
}

/* spatial_mean: y[.., c] = (1/HW) Σ_{h,w} x[.., c, h, w];  dx[.., c, h, w] = dy[.., c] / HW
 * (SPATIAL_MEAN_BWD) */
static int ad_spatial_mean(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    ad_acc(c, x, ad_node1(c, GIM_OP_SPATIAL_MEAN_BWD, dy, x->shape, x, n), n);
    return 0;
}

/* mean over axis a: y = (1/d_a) Σ_i x[.., i, ..];  dx[.., i, ..] = dy[.., ..] / d_a
 * (MEAN_BWD, the broadcast back along a) */
static int ad_mean(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    gim_node *dx = ad_node1(c, GIM_OP_MEAN_BWD, dy, x->shape, x, n);
    dx->attr[0] = n->attr[0];
    ad_acc(c, x, dx, n);
    return 0;
}

/* reshape: y = x viewed with another shape (same row-major order);
 * dx = dy viewed with x's shape (RESHAPE) */
static int ad_reshape(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    ad_acc(c, x, ad_node1(c, GIM_OP_RESHAPE, dy, x->shape, x, n), n);
    return 0;
}

/* transpose(a, b): y = x with axes a and b swapped; the swap is its own inverse:
 * dx = transpose(dy, a, b) */
static int ad_transpose(ad_ctx *c, gim_node *n, gim_node *dy) {
    gim_node *x = n->in[0];
    if (!ad_wants(c, x)) return 0;
    gim_node *dx = ad_node1(c, GIM_OP_TRANSPOSE, dy, x->shape, x, n);
    dx->attr[0] = n->attr[0];
    dx->attr[1] = n->attr[1];
    ad_acc(c, x, dx, n);
    return 0;
}

/* gru: h_t = GRU(x_t, h_{t−1}), y = [h_1 .. h_T] (gates r, z, n; h_0 = 0).
 * Backpropagation through time over every step, done by one op:
 *   GRU_BWD(dy, x, y, w_ih, w_hh, b_ih, b_hh) = [dx | dw_ih | dw_hh | db_ih | db_hh]
 * packed in that order; each part is read through a SLICE view. */
static int ad_gru(ad_ctx *c, gim_node *n, gim_node *dy) {
    int64_t total = 0;
    for (int i = 0; i < 5; i++) total += gim_shape_numel(&n->in[i]->shape);
    gim_node *in[7] = {dy, n->in[0], n, n->in[1], n->in[2], n->in[3], n->in[4]};
    gim_node *packed = ad_node(c, GIM_OP_GRU_BWD, 7, in, ad_rank1(total), n, n);
    packed->attr[0] = n->attr[0];
    int64_t offset = 0;
    for (int i = 0; i < 5; i++) {
        gim_node *x = n->in[i];
        if (ad_wants(c, x)) ad_acc(c, x, ad_slice(c, packed, offset, x, n), n);
        offset += gim_shape_numel(&x->shape);
    }
    return 0;
}

/* gradient_block: y = x.  Greedy: dx = 0 — nothing flows back, the module
 * below learns from its own loss alone (and x never "needs grad" here, so this
 * rule is not even reached). End to end (g->e2e): dx = dy, the identity. */
static int ad_gradient_block(ad_ctx *c, gim_node *n, gim_node *dy) {
    if (c->g->e2e && ad_wants(c, n->in[0])) ad_acc(c, n->in[0], dy, n);
    return 0;
}

/* infonce (the root; d loss / d loss = 1):
 *   L = (1/K) Σ_k mean_p [ −f_k(z_{p+k}, c_p) + log Σ_{j ∈ {pos} ∪ neg} exp f_k(z_j, c_p) ],
 *   f_k(a, c) = aᵀ W_k c
 * With softmax weights π_j over the candidates: dL/dz_j gets (π_j − [j = pos]) W_k c_p,
 * dL/dc_p gets Σ_j (π_j − [j = pos]) W_kᵀ z_j, dL/dW_k gets Σ_j (π_j − [j = pos]) z_j c_pᵀ,
 * each times 1/(K·positions_k). INFONCE_BWD(z, c, W) computes them all, drawing the same
 * negatives (same rng_stream), packed [dz | dc | dW | L] (L the loss itself, which a
 * training step takes from here: codegen's emit_step). Without context, c is z, so z's
 * gradient is dz + dc (two accumulations into z). */
static int ad_infonce(ad_ctx *c, gim_node *n, gim_node *dy) {
    if (dy) {
        gim_error(c->d, n->loc, "internal: infonce is not the root of module %d's backward pass",
                  c->m->index + 1);
        return -1;
    }
    gim_node *z = n->in[0], *ctx = n->in[1], *w = n->in[2];
    int64_t total = gim_shape_numel(&z->shape) + gim_shape_numel(&ctx->shape) + gim_shape_numel(&w->shape) + 1;
    gim_node *packed = ad_node(c, GIM_OP_INFONCE_BWD, 3, n->in, ad_rank1(total), n, n);
    packed->attr[0] = n->attr[0];   /* steps */
    packed->attr[1] = n->attr[1];   /* negatives */
    packed->rng_stream = n->rng_stream;
    int64_t offset = 0;
    for (int i = 0; i < 3; i++) {
        gim_node *x = n->in[i];
        if (ad_wants(c, x)) ad_acc(c, x, ad_slice(c, packed, offset, x, n), n);
        offset += gim_shape_numel(&x->shape);
    }
    return 0;
}

/* cross_entropy (the root): L = (1/N) Σ_n [ log Σ_j exp l[n, j] − l[n, y_n] ]
 *   dl[n, j] = (softmax(l[n])_j − [j = y_n]) / N   (CROSS_ENTROPY_BWD(logits, labels));
 * labels are integers and get no gradient. */
static int ad_cross_entropy(ad_ctx *c, gim_node *n, gim_node *dy) {
    if (dy) {
        gim_error(c->d, n->loc, "internal: cross_entropy is not the root of module %d's backward pass",
                  c->m->index + 1);
        return -1;
    }
    gim_node *logits = n->in[0];
    if (!ad_wants(c, logits)) return 0;
    ad_acc(c, logits, ad_node2(c, GIM_OP_CROSS_ENTROPY_BWD, logits, n->in[1], logits->shape, logits, n), n);
    return 0;
}

/* One rule per user op, and per internal op lowering puts in the forward
 * graph (conv2d_mask). Sources are leaves (a parameter's gradient is the
 * result); the other internal ops (views, backward ops) are made by this pass
 * and never differentiated again: they have no rule. */
static const ad_rule rules[GIM_OP_COUNT] = {
    [GIM_OP_PATCHES] = ad_patches,
    [GIM_OP_CONV2D] = ad_conv2d,
    [GIM_OP_CONV1D] = ad_conv1d,
    [GIM_OP_CONV2D_MASK] = ad_conv2d_mask,
    [GIM_OP_LINEAR] = ad_linear,
    [GIM_OP_RELU] = ad_relu,
    [GIM_OP_TANH] = ad_tanh,
    [GIM_OP_SIGMOID] = ad_sigmoid,
    [GIM_OP_LEAKY_RELU] = ad_leaky_relu,
    [GIM_OP_ADD] = ad_add,
    [GIM_OP_SUB] = ad_sub,
    [GIM_OP_MUL] = ad_mul,
    [GIM_OP_SCALE] = ad_scale,
    [GIM_OP_SHIFT] = ad_shift,
    [GIM_OP_AVGPOOL2D] = ad_avgpool2d,
    [GIM_OP_MAXPOOL2D] = ad_maxpool2d,
    [GIM_OP_SPATIAL_MEAN] = ad_spatial_mean,
    [GIM_OP_MEAN] = ad_mean,
    [GIM_OP_RESHAPE] = ad_reshape,
    [GIM_OP_TRANSPOSE] = ad_transpose,
    [GIM_OP_GRU] = ad_gru,
    [GIM_OP_GRADIENT_BLOCK] = ad_gradient_block,
    [GIM_OP_INFONCE] = ad_infonce,
    [GIM_OP_CROSS_ENTROPY] = ad_cross_entropy,
};

/* For tests/test_optable.c: does op have a backward rule? */
bool gim_autodiff_has_rule(gim_op op) {
    return op < GIM_OP_COUNT && rules[op] != NULL;
}

/* ---- verifiers ------------------------------------------------------------------ */

static bool ad_in_module(const ad_ctx *c, const gim_node *x) {
    return x->module == c->m->index || c->is_param[x->id];
}

static bool ad_is_input(const ad_ctx *c, const gim_node *x) {
    for (int i = 0; i < c->m->inputs.len; i++)
        if (c->m->inputs.items[i] == x) return true;
    return false;
}

/* Before: the module's forward nodes are what the rules read: shaped, inputs
 * before them, the arity each rule expects. */
static int ad_verify_before(ad_ctx *c) {
    gim_module *m = c->m;
    int errors = 0;
    for (int i = 0; i < m->params.len; i++) {
        gim_node *p = m->params.items[i];
        if (p->op != GIM_OP_PARAM) {
            gim_error(c->d, p->loc, "internal: module %d parameter %d is a %s", m->index + 1, i, gim_op_name(p->op));
            errors++;
        }
    }
    if (m->loss && ((m->loss->op != GIM_OP_INFONCE && m->loss->op != GIM_OP_CROSS_ENTROPY) ||
                    m->loss->module != m->index || m->loss->id >= c->n_fwd)) {
        gim_error(c->d, m->loss->loc, "internal: module %d's loss is a %s of module %d", m->index + 1,
                  gim_op_name(m->loss->op), m->loss->module + 1);
        errors++;
    }
    for (int i = 0; i < m->nodes.len; i++) {
        gim_node *n = m->nodes.items[i];
        if (n->is_backward || n->id >= c->n_fwd) {
            gim_error(c->d, n->loc, "internal: module %d lists backward node %%%d as forward", m->index + 1, n->id);
            errors++;
            continue;
        }
        for (int j = 0; j < n->n_in; j++)
            if (!n->in[j] || n->in[j]->id >= n->id) {
                gim_error(c->d, n->loc, "internal: node %%%d reads a later node", n->id);
                errors++;
            }
        int want = -1;
        switch (n->op) {
        case GIM_OP_CONV2D: case GIM_OP_CONV1D: case GIM_OP_LINEAR: {
            int slot = n->op == GIM_OP_LINEAR ? 1 : 4;   /* the bias flag */
            want = n->attr[slot] != 0 ? 3 : 2;
            break;
        }
        case GIM_OP_GRU: want = 5; break;
        case GIM_OP_INFONCE: want = 3; break;
        case GIM_OP_ADD: case GIM_OP_SUB: case GIM_OP_MUL: case GIM_OP_CROSS_ENTROPY: want = 2; break;
        default: break;
        }
        if (want >= 0 && n->n_in != want) {
            gim_error(c->d, n->loc, "internal: %s node %%%d has %d inputs, expected %d",
                      gim_op_name(n->op), n->id, n->n_in, want);
            errors++;
        }
    }
    return errors ? -1 : 0;
}

static void ad_shape_error(ad_ctx *c, const gim_node *b, const char *what, const gim_shape *want) {
    char s1[160], s2[160];
    gim_error(c->d, b->loc, "internal: backward node %%%d (%s, %s) has shape %s, %s %s", b->id,
              gim_op_name(b->op), b->name, gim_shape_str(&b->shape, s1, sizeof s1), what,
              gim_shape_str(want, s2, sizeof s2));
    c->errors++;
}

/* After: each backward node passes its op's shape rule with the shape it was
 * given and has the shape of the tensor it is the gradient of; nothing outside
 * this module is read except the module's inputs' forward values; every
 * gradient belongs to this module. */
static int ad_verify_after(ad_ctx *c) {
    gim_module *m = c->m;
    c->errors = 0;
    for (int i = 0; i < m->bwd_nodes.len; i++) {
        gim_node *b = m->bwd_nodes.items[i];
        if (!b->is_backward || b->module != m->index || b->id < c->n_fwd) {
            gim_error(c->d, b->loc, "internal: node %%%d is not a backward node of module %d", b->id, m->index + 1);
            c->errors++;
            continue;
        }
        for (int j = 0; j < b->n_in; j++) {
            gim_node *x = b->in[j];
            bool ok = x->id < b->id &&
                      (x->is_backward ? x->module == m->index : (ad_in_module(c, x) || ad_is_input(c, x)));
            if (!ok) {
                gim_error(c->d, b->loc, "internal: backward node %%%d of module %d reads %%%d of module %d",
                          b->id, m->index + 1, x->id, x->module + 1);
                c->errors++;
            }
        }
        /* The op's shape rule (shape.c) on a copy: it recomputes what the
         * inputs determine and validates what only the creator knows. */
        gim_node probe = *b;
        char msg[256];
        if (gim_infer_shape(&probe, msg, sizeof msg)) {
            gim_error(c->d, b->loc, "internal: backward node %%%d (%s): %s", b->id, b->name, msg);
            c->errors++;
        } else if (!gim_shape_eq(&probe.shape, &b->shape)) {
            ad_shape_error(c, b, "but its inputs make it", &probe.shape);
        }
    }
    /* Every gradient is a gradient of this module's tensor, shaped like it. */
    for (int id = 0; id < c->n_fwd; id++) {
        gim_node *gx = c->grad[id], *x = gim_node_at(c->g, id);
        if (!gx) continue;
        if (!ad_in_module(c, x)) {
            gim_error(c->d, x->loc, "internal: module %d made a gradient for %%%d of module %d",
                      m->index + 1, x->id, x->module + 1);
            c->errors++;
        }
        if (!gim_shape_eq(&gx->shape, &x->shape)) ad_shape_error(c, gx, "but is the gradient of", &x->shape);
    }
    if (m->grads.len != m->params.len) {
        gim_error(c->d, c->g->model_loc, "internal: module %d has %d gradients for %d parameters",
                  m->index + 1, m->grads.len, m->params.len);
        c->errors++;
    }
    for (int i = 0; i < m->grads.len && i < m->params.len; i++) {
        gim_node *p = m->params.items[i], *gp = m->grads.items[i];
        if (gp && !gim_shape_eq(&gp->shape, &p->shape)) ad_shape_error(c, gp, "but its parameter is", &p->shape);
    }
    return c->errors ? -1 : 0;
}

/* ---- the pass ------------------------------------------------------------------- */

/* A gradient flows along edge n.in[i] unless it enters a gradient_block in
 * greedy mode or carries integers (labels). */
static bool ad_edge(const ad_ctx *c, const gim_node *n, int i) {
    if (n->op == GIM_OP_GRADIENT_BLOCK && !c->g->e2e) return false;
    return !n->in[i]->is_int;
}

static int ad_module(ad_ctx *c) {
    gim_module *m = c->m;
    gim_graph *g = c->g;
    if (m->bwd_nodes.len || m->grads.len) {
        gim_error(c->d, g->model_loc, "internal: module %d is already differentiated", m->index + 1);
        return -1;
    }
    if (ad_verify_before(c)) return -1;

    for (int i = 0; i < m->params.len; i++) c->is_param[((gim_node *)m->params.items[i])->id] = true;
    if (m->loss) {
        /* needs grad: forward from the parameters, within the module. */
        for (int id = 0; id < c->n_fwd; id++) {
            gim_node *n = gim_node_at(g, id);
            if (c->is_param[id]) { c->needs[id] = true; continue; }
            if (!ad_in_module(c, n)) continue;
            for (int j = 0; j < n->n_in; j++)
                if (ad_edge(c, n, j) && c->needs[n->in[j]->id]) c->needs[id] = true;
        }
        /* reaches loss: backward from the loss. */
        c->reaches[m->loss->id] = true;
        for (int id = m->loss->id; id >= 0; id--) {
            gim_node *n = gim_node_at(g, id);
            if (!c->reaches[id] || !ad_in_module(c, n)) continue;
            for (int j = 0; j < n->n_in; j++)
                if (ad_edge(c, n, j)) c->reaches[n->in[j]->id] = true;
        }
        /* The gradients, in reverse topological order: when a node's rule runs,
         * every consumer of it has run, so its gradient is complete. */
        for (int id = m->loss->id; id >= 0; id--) {
            gim_node *n = gim_node_at(g, id);
            if (!ad_wants(c, n) || !ad_in_module(c, n) || n->op == GIM_OP_PARAM) continue;
            gim_node *dy = c->grad[id];
            if (n != m->loss && !dy) continue;   /* only reached through blocked paths */
            ad_rule rule = rules[n->op];
            if (!rule) {
                gim_error(c->d, n->loc, "internal: no backward rule for %s", gim_op_name(n->op));
                return -1;
            }
            if (rule(c, n, n == m->loss ? NULL : dy)) return -1;
        }
    }
    for (int i = 0; i < m->params.len; i++)
        gim_ptrvec_push(g->arena, &m->grads, c->grad[((gim_node *)m->params.items[i])->id]);
    return ad_verify_after(c);
}

int gim_autodiff(gim_diag *d, gim_graph *g) {
    int n_fwd = g->nodes.len;
    ad_ctx c = {.d = d, .g = g, .n_fwd = n_fwd};
    c.is_param = gim_calloc((size_t)n_fwd + 1, sizeof *c.is_param);
    c.needs = gim_calloc((size_t)n_fwd + 1, sizeof *c.needs);
    c.reaches = gim_calloc((size_t)n_fwd + 1, sizeof *c.reaches);
    c.grad = gim_calloc((size_t)n_fwd + 1, sizeof *c.grad);
    int rc = 0;
    if (!c.is_param || !c.needs || !c.reaches || !c.grad) {
        gim_error(d, g->model_loc, "out of memory in autodiff");
        rc = -1;
    }
    for (int mi = 0; rc == 0 && mi < g->n_modules; mi++) {
        c.m = &g->modules[mi];
        memset(c.is_param, 0, (size_t)n_fwd * sizeof *c.is_param);
        memset(c.needs, 0, (size_t)n_fwd * sizeof *c.needs);
        memset(c.reaches, 0, (size_t)n_fwd * sizeof *c.reaches);
        memset(c.grad, 0, (size_t)n_fwd * sizeof *c.grad);
        rc = ad_module(&c);
    }
    gim_free(c.is_param);
    gim_free(c.needs);
    gim_free(c.reaches);
    gim_free(c.grad);
    return rc;
}
