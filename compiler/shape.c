/* Shape inference: one rule per op of ops.def.
 *
 * Preconditions: a node's inputs already have their shapes; its attributes
 * are bound (lowering copies them from the call, autodiff from the forward
 * node). Postcondition of a successful rule: node->shape is set, every
 * dimension >= 1 (a rank-0 shape is a scalar), the element count is at most
 * GIM_MAX_NUMEL. Internal ops whose output shape only their creator knows
 * (SLICE, the *_BWD ops that produce a forward input's gradient) keep the
 * shape set by the creator; their rule validates what it can. */
#include "shape.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "gim_util.h"

typedef int (*shape_fn)(gim_node *n, char *msg, size_t len);

/* ---- helpers ---------------------------------------------------------------- */

/* "<op> expects <rule>; got <shape>" */
static int shape_expect(const gim_node *n, char *msg, size_t len, const gim_shape *got,
                        const char *rule, ...) __attribute__((format(printf, 5, 6)));
static int shape_expect(const gim_node *n, char *msg, size_t len, const gim_shape *got,
                        const char *rule, ...) {
    char r[256], s[200];
    va_list ap;
    va_start(ap, rule);
    vsnprintf(r, sizeof r, rule, ap);
    va_end(ap);
    snprintf(msg, len, "%s expects %s; got %s", gim_op_name(n->op), r,
             gim_shape_str(got, s, sizeof s));
    return -1;
}

static const gim_shape *in_shape(const gim_node *n, int i) { return &n->in[i]->shape; }

static int64_t last(const gim_shape *s, int k) { return s->d[s->rank - k]; }

/* Requires attr i >= lo; names the attribute from the op's signature. */
static int attr_at_least(const gim_node *n, int slot, int64_t lo, char *msg, size_t len) {
    int64_t v = gim_attr_i(n, slot);
    if (v >= lo) return 0;
    const gim_opinfo *info = gim_op_info(n->op);
    const char *name = "?";
    for (int i = 0; i < info->n_params; i++)
        if (info->params[i].slot == slot && info->params[i].type != GIM_PT_TENSOR &&
            info->params[i].type != GIM_PT_OPT_TENSOR)
            name = info->params[i].name;
    return gim_errf(msg, len, "%s expects %s >= %" PRId64 "; got %s=%" PRId64, gim_op_name(n->op), name,
                     lo, name, v);
}

/* Checks an optional learned parameter input against the expected shape. */
static int param_matches(const gim_node *n, int i, const gim_shape *want, const char *what, char *msg,
                         size_t len) {
    if (i >= n->n_in) return 0;
    if (gim_shape_eq(in_shape(n, i), want)) return 0;
    char a[200], b[200];
    return gim_errf(msg, len, "%s expects %s of shape %s; got %s", gim_op_name(n->op), what,
                     gim_shape_str(want, a, sizeof a), gim_shape_str(in_shape(n, i), b, sizeof b));
}

static gim_shape shape_of(int rank, ...) {
    gim_shape s = {.rank = rank};
    va_list ap;
    va_start(ap, rank);
    for (int i = 0; i < rank; i++) s.d[i] = va_arg(ap, int64_t);
    va_end(ap);
    return s;
}

/* ---- sources ---------------------------------------------------------------- */

/* INPUT, LABELS, PARAM: the creator sets the shape; dimensions must be >= 1. */
static int shape_source(gim_node *n, char *msg, size_t len) {
    for (int i = 0; i < n->shape.rank; i++)
        if (n->shape.d[i] < 1) {
            char s[200];
            return gim_errf(msg, len, "dimensions must be >= 1; got %s", gim_shape_str(&n->shape, s, sizeof s));
        }
    return 0;
}

/* ---- user ops ----------------------------------------------------------------- */

/* patches: [N, C, H, W] -> [N, Gh, Gw, C, s, s], G = (H - s)/stride + 1 */
static int shape_patches(gim_node *n, char *msg, size_t len) {
    const gim_shape *x = in_shape(n, 0);
    if (attr_at_least(n, 0, 1, msg, len) || attr_at_least(n, 1, 1, msg, len)) return -1;
    int64_t s = gim_attr_i(n, 0), st = gim_attr_i(n, 1);
    if (x->rank != 4 || x->d[2] < s || x->d[3] < s)
        return shape_expect(n, msg, len, x, "[N, C, H, W] with H, W >= size (%" PRId64 ")", s);
    n->shape = shape_of(6, x->d[0], (x->d[2] - s) / st + 1, (x->d[3] - s) / st + 1, x->d[1], s, s);
    return 0;
}

/* Output extent of a convolution or pooling window: (L + 2p - k)/s + 1. */
static int64_t window_out(int64_t l, int64_t k, int64_t s, int64_t p) { return (l + 2 * p - k) / s + 1; }

/* Common attribute checks of conv2d/conv1d: out k stride pad (slots 0..3). */
static int conv_attrs(gim_node *n, char *msg, size_t len) {
    if (attr_at_least(n, 0, 1, msg, len) || attr_at_least(n, 1, 1, msg, len) ||
        attr_at_least(n, 2, 1, msg, len) || attr_at_least(n, 3, 0, msg, len))
        return -1;
    return 0;
}

/* conv2d: x [..., C, H, W], w [out, C, k, k], b [out] -> [..., out, H', W'] */
static int shape_conv2d(gim_node *n, char *msg, size_t len) {
    if (conv_attrs(n, msg, len)) return -1;
    const gim_shape *x = in_shape(n, 0);
    int64_t out = gim_attr_i(n, 0), k = gim_attr_i(n, 1), st = gim_attr_i(n, 2), p = gim_attr_i(n, 3);
    if (x->rank < 3)
        return shape_expect(n, msg, len, x, "[..., C, H, W] (rank >= 3)");
    if (last(x, 2) + 2 * p < k || last(x, 1) + 2 * p < k)
        return shape_expect(n, msg, len, x, "[..., C, H, W] with H >= k after padding (k=%" PRId64 ", pad=%" PRId64 ")",
                            k, p);
    /* A causal mask means something only when output (i, j) sits over input
     * (i, j): the kernel's centre on it, so k odd, stride 1, pad k/2. */
    int64_t mask = gim_attr_i(n, GIM_CONV2D_MASK_ATTR);
    if (mask != GIM_MASK_NONE && (k % 2 == 0 || st != 1 || p != k / 2))
        return gim_errf(msg, len,
                        "conv2d with mask=\"%s\" needs an odd k, stride=1 and pad=k/2, so that output (i, j) is "
                        "centred on input (i, j); got k=%" PRId64 ", stride=%" PRId64 ", pad=%" PRId64,
                        mask == GIM_MASK_A ? "A" : "B", k, st, p);
    gim_shape w = shape_of(4, out, last(x, 3), k, k), b = shape_of(1, out);
    if (param_matches(n, 1, &w, "weights", msg, len) || param_matches(n, 2, &b, "bias", msg, len)) return -1;
    n->shape = *x;
    n->shape.d[x->rank - 3] = out;
    n->shape.d[x->rank - 2] = window_out(last(x, 2), k, st, p);
    n->shape.d[x->rank - 1] = window_out(last(x, 1), k, st, p);
    return 0;
}

/* conv2d_mask: w [out, C, k, k] -> the same shape; mask A or B */
static int shape_conv2d_mask(gim_node *n, char *msg, size_t len) {
    const gim_shape *w = in_shape(n, 0);
    int64_t mask = gim_attr_i(n, 0);
    if (mask != GIM_MASK_A && mask != GIM_MASK_B)
        return gim_errf(msg, len, "conv2d_mask expects mask A or B; got %" PRId64, mask);
    if (w->rank != 4 || w->d[2] != w->d[3] || w->d[2] % 2 == 0)
        return shape_expect(n, msg, len, w, "weights [out, C, k, k] with k odd");
    n->shape = *w;
    return 0;
}

/* conv1d: x [..., C, T], w [out, C, k], b [out] -> [..., out, T'] */
static int shape_conv1d(gim_node *n, char *msg, size_t len) {
    if (conv_attrs(n, msg, len)) return -1;
    const gim_shape *x = in_shape(n, 0);
    int64_t out = gim_attr_i(n, 0), k = gim_attr_i(n, 1), st = gim_attr_i(n, 2), p = gim_attr_i(n, 3);
    if (x->rank < 2)
        return shape_expect(n, msg, len, x, "[..., C, T] (rank >= 2)");
    if (last(x, 1) + 2 * p < k)
        return shape_expect(n, msg, len, x, "[..., C, T] with T >= k after padding (k=%" PRId64 ", pad=%" PRId64 ")",
                            k, p);
    gim_shape w = shape_of(3, out, last(x, 2), k), b = shape_of(1, out);
    if (param_matches(n, 1, &w, "weights", msg, len) || param_matches(n, 2, &b, "bias", msg, len)) return -1;
    n->shape = *x;
    n->shape.d[x->rank - 2] = out;
    n->shape.d[x->rank - 1] = window_out(last(x, 1), k, st, p);
    return 0;
}

/* linear: x [..., C], w [out, C], b [out] -> [..., out] */
static int shape_linear(gim_node *n, char *msg, size_t len) {
    if (attr_at_least(n, 0, 1, msg, len)) return -1;
    const gim_shape *x = in_shape(n, 0);
    if (x->rank < 1) return shape_expect(n, msg, len, x, "[..., C] (rank >= 1)");
    int64_t out = gim_attr_i(n, 0);
    gim_shape w = shape_of(2, out, last(x, 1)), b = shape_of(1, out);
    if (param_matches(n, 1, &w, "weights", msg, len) || param_matches(n, 2, &b, "bias", msg, len)) return -1;
    n->shape = *x;
    n->shape.d[x->rank - 1] = out;
    return 0;
}

/* relu, tanh, sigmoid, leaky_relu, scale, shift: y has x's shape. */
static int shape_same(gim_node *n, char *msg, size_t len) {
    n->shape = *in_shape(n, 0);
    return 0;
}

/* add, sub, mul: two tensors of one shape (no broadcasting). */
static int shape_binary(gim_node *n, char *msg, size_t len) {
    const gim_shape *a = in_shape(n, 0), *b = in_shape(n, 1);
    if (!gim_shape_eq(a, b)) {
        char sa[200], sb[200];
        return gim_errf(msg, len, "%s expects two tensors of the same shape; got %s and %s", gim_op_name(n->op),
                         gim_shape_str(a, sa, sizeof sa), gim_shape_str(b, sb, sizeof sb));
    }
    n->shape = *a;
    return 0;
}

/* avgpool2d, maxpool2d: [..., C, H, W] -> [..., C, H', W'], no padding, floor;
 * stride 0 means k. */
static int shape_pool2d(gim_node *n, char *msg, size_t len) {
    if (gim_attr_i(n, 1) == 0) n->attr[1] = n->attr[0];
    if (attr_at_least(n, 0, 1, msg, len) || attr_at_least(n, 1, 1, msg, len)) return -1;
    const gim_shape *x = in_shape(n, 0);
    int64_t k = gim_attr_i(n, 0), st = gim_attr_i(n, 1);
    if (x->rank < 3 || last(x, 2) < k || last(x, 1) < k)
        return shape_expect(n, msg, len, x, "[..., C, H, W] with H, W >= k (k=%" PRId64 ")", k);
    n->shape = *x;
    n->shape.d[x->rank - 2] = window_out(last(x, 2), k, st, 0);
    n->shape.d[x->rank - 1] = window_out(last(x, 1), k, st, 0);
    return 0;
}

/* spatial_mean: [..., C, H, W] -> [..., C] */
static int shape_spatial_mean(gim_node *n, char *msg, size_t len) {
    const gim_shape *x = in_shape(n, 0);
    if (x->rank < 3) return shape_expect(n, msg, len, x, "[..., C, H, W] (rank >= 3)");
    n->shape = *x;
    n->shape.rank -= 2;
    return 0;
}

/* Normalises axis attr `slot` of a rank-r tensor to 0 <= axis < r. */
static int norm_axis(gim_node *n, int slot, const gim_shape *x, const char *name, char *msg, size_t len) {
    int64_t a = gim_attr_i(n, slot);
    if (a < -x->rank || a >= x->rank)
        return shape_expect(n, msg, len, x, "%s in [%d, %d] for this rank; %s=%" PRId64 "", name, -x->rank,
                            x->rank - 1, name, a);
    if (a < 0) n->attr[slot] = (double)(a + x->rank);
    return 0;
}

/* mean(x, axis): removes axis. */
static int shape_mean(gim_node *n, char *msg, size_t len) {
    const gim_shape *x = in_shape(n, 0);
    if (x->rank < 1) return shape_expect(n, msg, len, x, "a tensor of rank >= 1");
    if (norm_axis(n, 0, x, "axis", msg, len)) return -1;
    int a = (int)gim_attr_i(n, 0);
    gim_shape s = {.rank = x->rank - 1};
    for (int i = 0, j = 0; i < x->rank; i++)
        if (i != a) s.d[j++] = x->d[i];
    n->shape = s;
    return 0;
}

/* reshape: the creator puts the requested dims (at most one -1) in
 * node->shape; the rule resolves -1 and checks the element count. */
static int shape_reshape(gim_node *n, char *msg, size_t len) {
    const gim_shape *x = in_shape(n, 0);
    int64_t have = gim_shape_numel_checked(x), known = 1;
    int infer = -1;
    char sa[200], sb[200];
    for (int i = 0; i < n->shape.rank; i++) {
        int64_t d = n->shape.d[i];
        if (d == -1 && infer < 0) { infer = i; continue; }
        if (d < 1)
            return gim_errf(msg, len, "reshape expects dimensions >= 1 and at most one -1; got %s",
                             gim_shape_str(&n->shape, sa, sizeof sa));
        if (gim_mul_overflows(known, d, &known) || known > GIM_MAX_NUMEL)
            return gim_errf(msg, len, "tensor too large: %s", gim_shape_str(&n->shape, sa, sizeof sa));
    }
    if (infer >= 0) {
        if (have % known)
            return gim_errf(msg, len, "reshape cannot infer -1 in %s: %" PRId64 " elements of %s are not a multiple of %" PRId64,
                             gim_shape_str(&n->shape, sa, sizeof sa), have, gim_shape_str(x, sb, sizeof sb), known);
        n->shape.d[infer] = have / known;
        known = have;
    }
    if (known != have)
        return gim_errf(msg, len, "reshape expects the same number of elements; got %s (%" PRId64 ") to %s (%" PRId64 ")",
                         gim_shape_str(x, sa, sizeof sa), have, gim_shape_str(&n->shape, sb, sizeof sb), known);
    return 0;
}

/* transpose(x, a, b): swaps axes a and b. */
static int shape_transpose(gim_node *n, char *msg, size_t len) {
    const gim_shape *x = in_shape(n, 0);
    if (x->rank < 1) return shape_expect(n, msg, len, x, "a tensor of rank >= 1");
    if (norm_axis(n, 0, x, "a", msg, len) || norm_axis(n, 1, x, "b", msg, len)) return -1;
    int a = (int)gim_attr_i(n, 0), b = (int)gim_attr_i(n, 1);
    n->shape = *x;
    n->shape.d[a] = x->d[b];
    n->shape.d[b] = x->d[a];
    return 0;
}

/* gru: x [N, T, C], w_ih [3H, C], w_hh [3H, H], b_ih [3H], b_hh [3H] -> [N, T, H] */
static int shape_gru(gim_node *n, char *msg, size_t len) {
    if (attr_at_least(n, 0, 1, msg, len)) return -1;
    const gim_shape *x = in_shape(n, 0);
    int64_t h = gim_attr_i(n, 0);
    if (x->rank != 3) return shape_expect(n, msg, len, x, "[N, T, C]");
    gim_shape wih = shape_of(2, 3 * h, x->d[2]), whh = shape_of(2, 3 * h, h), b = shape_of(1, 3 * h);
    if (param_matches(n, 1, &wih, "w_ih", msg, len) || param_matches(n, 2, &whh, "w_hh", msg, len) ||
        param_matches(n, 3, &b, "b_ih", msg, len) || param_matches(n, 4, &b, "b_hh", msg, len))
        return -1;
    n->shape = shape_of(3, x->d[0], x->d[1], h);
    return 0;
}

/* gradient_block: a view, x's shape. */

/* infonce: z [N, T, Cz] or [N, G, G, Cz]; c with z's leading shape; W [K, Cz, Cc]. */
static int shape_infonce(gim_node *n, char *msg, size_t len) {
    const gim_shape *z = in_shape(n, 0);
    if (attr_at_least(n, 0, 1, msg, len) || attr_at_least(n, 1, 1, msg, len)) return -1;
    int64_t k = gim_attr_i(n, 0);
    if (!(z->rank == 3 || (z->rank == 4 && z->d[1] == z->d[2])))
        return shape_expect(n, msg, len, z, "z [N, T, C] (a sequence) or [N, G, G, C] (a square grid)");
    if (z->d[1] <= k)
        return shape_expect(n, msg, len, z, "more than steps=%" PRId64 " positions along %s", k,
                            z->rank == 3 ? "T" : "the grid's rows");
    if (n->n_in >= 2 && n->in[1] != n->in[0]) {
        const gim_shape *c = in_shape(n, 1);
        bool ok = c->rank == z->rank;
        for (int i = 0; ok && i < z->rank - 1; i++) ok = c->d[i] == z->d[i];
        if (!ok) {
            char sz[200], sc[200];
            return gim_errf(msg, len, "infonce expects context with z's leading shape ([..., Cc] for z %s); got %s",
                             gim_shape_str(z, sz, sizeof sz), gim_shape_str(c, sc, sizeof sc));
        }
    }
    if (n->n_in >= 3) {
        gim_shape w = shape_of(3, k, last(z, 1), last(in_shape(n, 1), 1));
        if (param_matches(n, 2, &w, "W", msg, len)) return -1;
    }
    n->shape = (gim_shape){.rank = 0};
    return 0;
}

/* cross_entropy: logits [N, classes], labels int32 [N] -> scalar */
static int shape_cross_entropy(gim_node *n, char *msg, size_t len) {
    const gim_shape *x = in_shape(n, 0), *y = in_shape(n, 1);
    if (x->rank != 2) return shape_expect(n, msg, len, x, "logits [N, classes]");
    if (!n->in[1]->is_int)
        return gim_errf(msg, len, "cross_entropy expects labels (an `input y: labels[batch]`) as its second argument; got a float tensor");
    if (y->rank != 1 || y->d[0] != x->d[0]) {
        char sx[200], sy[200];
        return gim_errf(msg, len, "cross_entropy expects labels [N] for logits [N, classes]; got logits %s and labels %s",
                         gim_shape_str(x, sx, sizeof sx), gim_shape_str(y, sy, sizeof sy));
    }
    n->shape = (gim_shape){.rank = 0};
    return 0;
}

/* ---- internal ops ---------------------------------------------------------------- */

/* slice: shape set by the creator; the window must lie inside x. */
static int shape_slice(gim_node *n, char *msg, size_t len) {
    int64_t off = gim_attr_i(n, 0), have = gim_shape_numel_checked(in_shape(n, 0));
    int64_t want = gim_shape_numel_checked(&n->shape);
    if (off < 0 || want < 0 || off + want > have)
        return gim_errf(msg, len, "slice of %" PRId64 " floats at offset %" PRId64 " exceeds its source of %" PRId64,
                         want, off, have);
    return 0;
}

/* Backward ops whose result has the shape of input `i` (dy, or the forward value). */
static int shape_like_in0(gim_node *n, char *msg, size_t len) { n->shape = *in_shape(n, 0); return 0; }
static int shape_like_in1(gim_node *n, char *msg, size_t len) { n->shape = *in_shape(n, 1); return 0; }

/* Backward ops producing a forward input's gradient whose shape the creator
 * knows (conv data gradients, pooling, patches, means): keep it, and require
 * it to be set (rank >= 1 and at least as many elements as dy's rank-0 would). */
static int shape_creator(gim_node *n, char *msg, size_t len) {
    if (gim_shape_numel_checked(&n->shape) < 0)
        return gim_errf(msg, len, "%s: invalid shape set by its creator", gim_op_name(n->op));
    return 0;
}

/* conv2d_bwd_weight: dy [..., out, Ho, Wo], x [..., C, H, W] -> [out, C, k, k] */
static int shape_conv2d_bwd_weight(gim_node *n, char *msg, size_t len) {
    const gim_shape *x = in_shape(n, 1);
    if (x->rank < 3) return shape_expect(n, msg, len, x, "x [..., C, H, W]");
    n->shape = shape_of(4, gim_attr_i(n, 0), last(x, 3), gim_attr_i(n, 1), gim_attr_i(n, 1));
    return 0;
}

/* conv1d_bwd_weight: -> [out, C, k] */
static int shape_conv1d_bwd_weight(gim_node *n, char *msg, size_t len) {
    const gim_shape *x = in_shape(n, 1);
    if (x->rank < 2) return shape_expect(n, msg, len, x, "x [..., C, T]");
    n->shape = shape_of(3, gim_attr_i(n, 0), last(x, 2), gim_attr_i(n, 1));
    return 0;
}

/* bias_bwd: [..., d_axis, ...] -> [d_axis] */
static int shape_bias_bwd(gim_node *n, char *msg, size_t len) {
    const gim_shape *dy = in_shape(n, 0);
    if (dy->rank < 1) return shape_expect(n, msg, len, dy, "a tensor of rank >= 1");
    if (norm_axis(n, 0, dy, "axis", msg, len)) return -1;
    n->shape = shape_of(1, dy->d[gim_attr_i(n, 0)]);
    return 0;
}

/* linear_bwd_data: dy [..., out], w [out, C] -> [..., C] */
static int shape_linear_bwd_data(gim_node *n, char *msg, size_t len) {
    const gim_shape *dy = in_shape(n, 0), *w = in_shape(n, 1);
    if (dy->rank < 1 || w->rank != 2 || last(dy, 1) != w->d[0])
        return shape_expect(n, msg, len, dy, "dy [..., out] with w [out, C]");
    n->shape = *dy;
    n->shape.d[dy->rank - 1] = w->d[1];
    return 0;
}

/* linear_bwd_weight: dy [..., out], x [..., C] -> [out, C] */
static int shape_linear_bwd_weight(gim_node *n, char *msg, size_t len) {
    const gim_shape *dy = in_shape(n, 0), *x = in_shape(n, 1);
    if (dy->rank < 1 || x->rank != dy->rank) return shape_expect(n, msg, len, dy, "dy [..., out] with x [..., C]");
    n->shape = shape_of(2, last(dy, 1), last(x, 1));
    return 0;
}

/* gru_bwd: packed [dx | dw_ih | dw_hh | db_ih | db_hh] (rank 1) */
static int shape_gru_bwd(gim_node *n, char *msg, size_t len) {
    int64_t total = 0;
    for (int i = 1; i < n->n_in; i++)
        if (i != 2) total += gim_shape_numel(in_shape(n, i));   /* x, w_ih, w_hh, b_ih, b_hh */
    n->shape = shape_of(1, total);
    return 0;
}

/* infonce_bwd: packed [dz | dc | dW | loss] (rank 1) */
static int shape_infonce_bwd(gim_node *n, char *msg, size_t len) {
    n->shape = shape_of(1, gim_shape_numel(in_shape(n, 0)) + gim_shape_numel(in_shape(n, 1)) +
                               gim_shape_numel(in_shape(n, 2)) + 1);
    return 0;
}

/* ---- the table ------------------------------------------------------------------ */

static const shape_fn shape_rules[GIM_OP_COUNT] = {
    [GIM_OP_INPUT] = shape_source,
    [GIM_OP_LABELS] = shape_source,
    [GIM_OP_PARAM] = shape_source,
    [GIM_OP_PATCHES] = shape_patches,
    [GIM_OP_CONV2D] = shape_conv2d,
    [GIM_OP_CONV1D] = shape_conv1d,
    [GIM_OP_LINEAR] = shape_linear,
    [GIM_OP_RELU] = shape_same,
    [GIM_OP_TANH] = shape_same,
    [GIM_OP_SIGMOID] = shape_same,
    [GIM_OP_LEAKY_RELU] = shape_same,
    [GIM_OP_ADD] = shape_binary,
    [GIM_OP_SUB] = shape_binary,
    [GIM_OP_MUL] = shape_binary,
    [GIM_OP_SCALE] = shape_same,
    [GIM_OP_SHIFT] = shape_same,
    [GIM_OP_AVGPOOL2D] = shape_pool2d,
    [GIM_OP_MAXPOOL2D] = shape_pool2d,
    [GIM_OP_SPATIAL_MEAN] = shape_spatial_mean,
    [GIM_OP_MEAN] = shape_mean,
    [GIM_OP_RESHAPE] = shape_reshape,
    [GIM_OP_TRANSPOSE] = shape_transpose,
    [GIM_OP_GRU] = shape_gru,
    [GIM_OP_GRADIENT_BLOCK] = shape_same,
    [GIM_OP_INFONCE] = shape_infonce,
    [GIM_OP_CONV2D_MASK] = shape_conv2d_mask,
    [GIM_OP_CROSS_ENTROPY] = shape_cross_entropy,
    [GIM_OP_SLICE] = shape_slice,
    [GIM_OP_RELU_BWD] = shape_like_in0,
    [GIM_OP_TANH_BWD] = shape_like_in0,
    [GIM_OP_SIGMOID_BWD] = shape_like_in0,
    [GIM_OP_LEAKY_RELU_BWD] = shape_like_in0,
    [GIM_OP_CONV2D_BWD_DATA] = shape_creator,
    [GIM_OP_CONV2D_BWD_WEIGHT] = shape_conv2d_bwd_weight,
    [GIM_OP_CONV1D_BWD_DATA] = shape_creator,
    [GIM_OP_CONV1D_BWD_WEIGHT] = shape_conv1d_bwd_weight,
    [GIM_OP_BIAS_BWD] = shape_bias_bwd,
    [GIM_OP_LINEAR_BWD_DATA] = shape_linear_bwd_data,
    [GIM_OP_LINEAR_BWD_WEIGHT] = shape_linear_bwd_weight,
    [GIM_OP_PATCHES_BWD] = shape_creator,
    [GIM_OP_AVGPOOL2D_BWD] = shape_creator,
    [GIM_OP_MAXPOOL2D_BWD] = shape_like_in1,
    [GIM_OP_SPATIAL_MEAN_BWD] = shape_creator,
    [GIM_OP_MEAN_BWD] = shape_creator,
    [GIM_OP_GRU_BWD] = shape_gru_bwd,
    [GIM_OP_INFONCE_BWD] = shape_infonce_bwd,
    [GIM_OP_CROSS_ENTROPY_BWD] = shape_like_in0,
};

bool gim_shape_rule_exists(gim_op op) { return op < GIM_OP_COUNT && shape_rules[op] != NULL; }

int64_t gim_shape_numel_checked(const gim_shape *s) {
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++) {
        if (s->d[i] < 0) return -1;
        if (gim_mul_overflows(n, s->d[i], &n) || n > GIM_MAX_NUMEL) return -1;
    }
    return n;
}

int gim_infer_shape(gim_node *n, char *msg, size_t len) {
    msg[0] = 0;
    if (n->op >= GIM_OP_COUNT || !shape_rules[n->op])
        return gim_errf(msg, len, "internal error: no shape rule for op %d", (int)n->op);
    for (int i = 0; i < n->n_in; i++)
        if (!n->in[i]) return gim_errf(msg, len, "internal error: %s input %d missing", gim_op_name(n->op), i);
    if (shape_rules[n->op](n, msg, len)) return -1;
    if (n->shape.rank > GIM_MAX_RANK) return gim_errf(msg, len, "tensor rank exceeds %d", GIM_MAX_RANK);
    for (int i = 0; i < n->shape.rank; i++)
        if (n->shape.d[i] < 1) {
            char s[200];
            return gim_errf(msg, len, "%s would produce an empty tensor %s", gim_op_name(n->op),
                             gim_shape_str(&n->shape, s, sizeof s));
        }
    if (gim_shape_numel_checked(&n->shape) < 0) {
        char s[200];
        return gim_errf(msg, len, "tensor too large: %s has more than 2^40 elements",
                         gim_shape_str(&n->shape, s, sizeof s));
    }
    return 0;
}
