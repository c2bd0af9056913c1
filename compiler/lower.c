/* Lowering: the AST of a program -> the graph IR.
 *
 * Walks the model body with an environment of names. Values are evaluated
 * eagerly: numbers, bools, strings and lists at compile time, tensors as
 * graph nodes. Every call of a def is inlined with its own scope, so each
 * call creates its own parameters; a call of an op creates one node (and the
 * op's learned parameters, docs/internals.md), and runs the op's shape rule.
 *
 * Names: a node is named by its call path, `<callee>.<n>/.../<op>.<m>`, where
 * n, m count the calls of that name within the enclosing body instance from
 * 1; its parameters append `/w`, `/b`, `/w_ih`, ... (infonce: `/w`).
 *
 * Errors are reported where they occur and lowering goes on with a poison
 * value, which every later use accepts silently, so independent errors are
 * all reported once and their consequences not at all. */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "config.h"
#include "gim_compiler.h"
#include "shape.h"
#include "suggest.h"

/* Inlining depth past which a chain of calls is refused (recursion is caught
 * exactly before this; the limit bounds pathological non-recursive nesting). */
#define LOWER_MAX_DEPTH 64
/* Nodes after inlining past which a model is refused (calls doubling at each
 * of many levels would otherwise exhaust memory). */
#define LOWER_MAX_NODES 100000
/* Expressions nested (through inlined calls) past this depth are refused
 * before they exhaust the C stack (a few hundred bytes a level). */
#define LOWER_MAX_NESTING 1500
/* Integer arguments are bounded so that shape arithmetic cannot overflow. */
#define LOWER_MAX_INT ((int64_t)1 << 40)

/* ---- values ------------------------------------------------------------------ */

typedef enum lower_kind {
    LV_NONE,     /* a def that returned nothing */
    LV_POISON,   /* the result of an error already reported */
    LV_INT, LV_FLOAT, LV_BOOL, LV_STRING, LV_LIST, LV_TENSOR,
} lower_kind;

typedef struct lower_val {
    lower_kind k;
    int64_t i;                 /* INT, BOOL */
    double f;                  /* FLOAT */
    const char *s;             /* STRING */
    struct lower_val *items;   /* LIST */
    int n;
    gim_node *t;               /* TENSOR */
} lower_val;

static const lower_val lv_poison = {.k = LV_POISON};
static const lower_val lv_none = {.k = LV_NONE};

static const char *lv_what(const lower_val *v) {
    switch (v->k) {
    case LV_NONE: return "nothing";
    case LV_POISON: return "an invalid value";
    case LV_INT: return "an integer";
    case LV_FLOAT: return "a float";
    case LV_BOOL: return "a bool";
    case LV_STRING: return "a string";
    case LV_LIST: return "a list";
    case LV_TENSOR: return "a tensor";
    }
    return "?";
}

static bool lv_is_number(const lower_val *v) { return v->k == LV_INT || v->k == LV_FLOAT; }
static double lv_num(const lower_val *v) { return v->k == LV_INT ? (double)v->i : v->f; }

/* ---- scopes --------------------------------------------------------------------- */

typedef struct lower_binding {
    const char *name;
    lower_val v;
    struct lower_binding *next;
} lower_binding;

typedef struct lower_count {
    const char *name;
    int n;
    struct lower_count *next;
} lower_count;

/* One body instance: the model, or one inlined call of a def. */
typedef struct lower_scope {
    lower_binding *vars;       /* newest first; rebinding shadows */
    lower_count *counts;       /* calls per callee name in this body */
    const char *path;          /* prefix of node names: "" or "conv_pair.1/" */
    const gim_def *def;        /* NULL for the model body */
    bool has_return;
    lower_val ret;
} lower_scope;

typedef struct lower_ctx {
    gim_diag *d;
    const gim_program *p;
    gim_graph *g;
    int64_t batch;
    const gim_def *stack[LOWER_MAX_DEPTH];   /* defs being inlined, outermost first */
    gim_loc stack_loc[LOWER_MAX_DEPTH];
    int depth;
    uint64_t next_stream;                    /* rng streams of the losses: 1, 2, ... */
    bool too_big;                            /* LOWER_MAX_NODES reached (reported once) */
    int nesting;                             /* lower_expr frames active */
    bool too_deep;                           /* LOWER_MAX_NESTING reached (reported once) */
    const gim_stmt *output_stmt;
} lower_ctx;

static void lower_bind(lower_ctx *L, lower_scope *S, const char *name, lower_val v) {
    lower_binding *b = gim_arena_alloc(L->g->arena, sizeof *b);
    b->name = name;
    b->v = v;
    b->next = S->vars;
    S->vars = b;
}

static const lower_val *lower_lookup(lower_scope *S, const char *name) {
    for (lower_binding *b = S->vars; b; b = b->next)
        if (!strcmp(b->name, name)) return &b->v;
    return NULL;
}

/* The next call number of `name` in this body: 1, 2, ... */
static int lower_count_call(lower_ctx *L, lower_scope *S, const char *name) {
    for (lower_count *c = S->counts; c; c = c->next)
        if (!strcmp(c->name, name)) return ++c->n;
    lower_count *c = gim_arena_alloc(L->g->arena, sizeof *c);
    c->name = name;
    c->n = 1;
    c->next = S->counts;
    S->counts = c;
    return 1;
}

static const char *lower_call_name(lower_ctx *L, lower_scope *S, const char *callee) {
    return gim_arena_printf(L->g->arena, "%s%s.%d", S->path, callee, lower_count_call(L, S, callee));
}

static const gim_def *lower_find_def(lower_ctx *L, const char *name) {
    for (int i = 0; i < L->p->n_defs; i++)
        if (L->p->defs[i] && !strcmp(L->p->defs[i]->name, name)) return L->p->defs[i];
    return NULL;
}

/* ---- nodes ------------------------------------------------------------------------ */

/* False (after reporting once) when the model grows past LOWER_MAX_NODES. */
static bool lower_room(lower_ctx *L, gim_loc loc) {
    if (L->g->nodes.len < LOWER_MAX_NODES) return true;
    if (!L->too_big) gim_error(L->d, loc, "the model has more than %d ops after inlining calls", LOWER_MAX_NODES);
    L->too_big = true;
    return false;
}

static gim_node *lower_param(lower_ctx *L, const char *owner, const char *suffix, gim_shape s, double bound,
                             gim_loc loc) {
    gim_node *p = gim_node_new(L->g, GIM_OP_PARAM, 0, NULL, loc);
    p->shape = s;
    p->attr[0] = bound;
    p->name = gim_arena_printf(L->g->arena, "%s/%s", owner, suffix);
    return p;
}

static gim_shape shp(int rank, int64_t a, int64_t b, int64_t c, int64_t d) {
    gim_shape s = {.rank = rank};
    int64_t v[4] = {a, b, c, d};
    for (int i = 0; i < rank; i++) s.d[i] = v[i];
    return s;
}

/* Finishes a node built from `tmp` (inputs and attrs, shape-checked): appends
 * the op's learned parameters after the data inputs, creates the node, and
 * checks its shape again with the parameters in place. */
static lower_val lower_emit(lower_ctx *L, lower_scope *S, gim_node *tmp, const char *callee, gim_loc loc) {
    char msg[600];
    if (!lower_room(L, loc)) return lv_poison;
    if (gim_infer_shape(tmp, msg, sizeof msg)) {
        gim_error(L->d, loc, "%s", msg);
        return lv_poison;
    }
    const char *name = lower_call_name(L, S, callee);
    gim_node *in[GIM_MAX_IN];
    int n_in = tmp->n_in;
    for (int i = 0; i < n_in; i++) in[i] = tmp->in[i];
    const gim_shape *x = &tmp->in[0]->shape;
    switch (tmp->op) {
    case GIM_OP_CONV2D: {
        /* w [out, C, k, k], b [out]; bound 1/sqrt(C k k) */
        int64_t out = gim_attr_i(tmp, 0), k = gim_attr_i(tmp, 1), c = x->d[x->rank - 3];
        double bound = 1.0 / sqrt((double)c * (double)k * (double)k);
        in[n_in++] = lower_param(L, name, "w", shp(4, out, c, k, k), bound, loc);
        if (gim_attr_i(tmp, 4)) in[n_in++] = lower_param(L, name, "b", shp(1, out, 0, 0, 0), bound, loc);
        break;
    }
    case GIM_OP_CONV1D: {
        int64_t out = gim_attr_i(tmp, 0), k = gim_attr_i(tmp, 1), c = x->d[x->rank - 2];
        double bound = 1.0 / sqrt((double)c * (double)k);
        in[n_in++] = lower_param(L, name, "w", shp(3, out, c, k, 0), bound, loc);
        if (gim_attr_i(tmp, 4)) in[n_in++] = lower_param(L, name, "b", shp(1, out, 0, 0, 0), bound, loc);
        break;
    }
    case GIM_OP_LINEAR: {
        int64_t out = gim_attr_i(tmp, 0), c = x->d[x->rank - 1];
        double bound = 1.0 / sqrt((double)c);
        in[n_in++] = lower_param(L, name, "w", shp(2, out, c, 0, 0), bound, loc);
        if (gim_attr_i(tmp, 1)) in[n_in++] = lower_param(L, name, "b", shp(1, out, 0, 0, 0), bound, loc);
        break;
    }
    case GIM_OP_GRU: {
        /* w_ih [3H, C], w_hh [3H, H], b_ih [3H], b_hh [3H]; bound 1/sqrt(H) */
        int64_t h = gim_attr_i(tmp, 0), c = x->d[2];
        double bound = 1.0 / sqrt((double)h);
        in[n_in++] = lower_param(L, name, "w_ih", shp(2, 3 * h, c, 0, 0), bound, loc);
        in[n_in++] = lower_param(L, name, "w_hh", shp(2, 3 * h, h, 0, 0), bound, loc);
        in[n_in++] = lower_param(L, name, "b_ih", shp(1, 3 * h, 0, 0, 0), bound, loc);
        in[n_in++] = lower_param(L, name, "b_hh", shp(1, 3 * h, 0, 0, 0), bound, loc);
        break;
    }
    case GIM_OP_INFONCE: {
        /* W [K, Cz, Cc]; bound 1/sqrt(Cc) */
        int64_t k = gim_attr_i(tmp, 0), cz = x->d[x->rank - 1];
        const gim_shape *c = &tmp->in[1]->shape;
        int64_t cc = c->d[c->rank - 1];
        in[n_in++] = lower_param(L, name, "w", shp(3, k, cz, cc, 0), 1.0 / sqrt((double)cc), loc);
        break;
    }
    default:
        break;
    }
    /* a parameter's size is not checked by any shape rule: check it here */
    for (int i = tmp->n_in; i < n_in; i++)
        if (gim_shape_numel_checked(&in[i]->shape) < 0) {
            char b[200];
            gim_error(L->d, loc, "parameter '%s' too large: %s has more than 2^40 elements", in[i]->name,
                      gim_shape_str(&in[i]->shape, b, sizeof b));
            return lv_poison;
        }
    if (tmp->op == GIM_OP_CONV2D && gim_attr_i(tmp, GIM_CONV2D_MASK_ATTR) != GIM_MASK_NONE) {
        /* A masked convolution reads its weights through the mask, so the
         * masked-out entries neither act nor learn (their gradient is masked
         * too, by the mask's own backward rule). */
        gim_node *m = gim_node_new(L->g, GIM_OP_CONV2D_MASK, 1, &in[1], loc);
        m->attr[0] = tmp->attr[GIM_CONV2D_MASK_ATTR];
        m->name = gim_arena_printf(L->g->arena, "%s/w_masked", name);
        if (gim_infer_shape(m, msg, sizeof msg)) {
            gim_error(L->d, loc, "internal error masking weights: %s", msg);
            return lv_poison;
        }
        in[1] = m;
    }
    gim_node *n = gim_node_new(L->g, tmp->op, n_in, in, loc);
    memcpy(n->attr, tmp->attr, sizeof n->attr);
    n->shape = tmp->shape;
    n->name = name;
    if (gim_infer_shape(n, msg, sizeof msg)) {
        gim_error(L->d, loc, "internal error after adding parameters: %s", msg);
        return lv_poison;
    }
    if (n->op == GIM_OP_INFONCE || n->op == GIM_OP_CROSS_ENTROPY) {
        n->rng_stream = ++L->next_stream;   /* losses numbered 1, 2, ... in source order */
        gim_ptrvec_push(L->g->arena, &L->g->losses, n);
    }
    return (lower_val){.k = LV_TENSOR, .t = n};
}

/* A one-input node with one float attribute (SCALE, SHIFT). */
static __attribute__((noinline)) lower_val lower_unary_attr(lower_ctx *L, lower_scope *S, gim_op op, gim_node *x, double s, gim_loc loc) {
    gim_node tmp = {.op = op, .n_in = 1, .in = {x}};
    tmp.attr[0] = s;
    return lower_emit(L, S, &tmp, gim_op_name(op), loc);
}

/* ---- expressions ---------------------------------------------------------------- */

static lower_val lower_expr(lower_ctx *L, lower_scope *S, const gim_expr *e);
static lower_val lower_call(lower_ctx *L, lower_scope *S, const gim_expr *e, bool statement);

static lower_val lower_name(lower_ctx *L, lower_scope *S, const gim_expr *e) {
    const lower_val *v = lower_lookup(S, e->name);
    if (v) return *v;
    if (!strcmp(e->name, "batch")) return (lower_val){.k = LV_INT, .i = L->batch};
    if (gim_op_lookup(e->name) != GIM_OP_COUNT || lower_find_def(L, e->name)) {
        gim_error(L->d, e->loc, "'%s' is a function; call it as %s(...)", e->name, e->name);
        return lv_poison;
    }
    gim_suggest s;
    gim_suggest_init(&s, e->name);
    for (lower_binding *b = S->vars; b; b = b->next) gim_suggest_add(&s, b->name);
    gim_suggest_add(&s, "batch");
    const char *best = gim_suggest_best(&s);
    if (best) gim_error(L->d, e->loc, "unknown name '%s'; did you mean '%s'?", e->name, best);
    else gim_error(L->d, e->loc, "unknown name '%s'", e->name);
    /* Bind it as poison so later uses of the same name stay quiet. */
    lower_bind(L, S, e->name, lv_poison);
    return lv_poison;
}

/* Compile-time arithmetic on numbers: int op int stays an integer except for
 * `/`, which is a float division as in Python. */
static lower_val lower_arith(lower_ctx *L, const gim_expr *e, const lower_val *a, const lower_val *b) {
    if (a->k == LV_INT && b->k == LV_INT && e->op != '/') {
        int64_t r = 0;
        bool ovf = false;
        switch (e->op) {
        case '+': ovf = __builtin_add_overflow(a->i, b->i, &r); break;
        case '-': ovf = __builtin_sub_overflow(a->i, b->i, &r); break;
        case '*': ovf = __builtin_mul_overflow(a->i, b->i, &r); break;
        }
        if (ovf) {
            gim_error(L->d, e->loc, "integer overflow in '%c'", e->op);
            return lv_poison;
        }
        return (lower_val){.k = LV_INT, .i = r};
    }
    double x = lv_num(a), y = lv_num(b), r = 0;
    switch (e->op) {
    case '+': r = x + y; break;
    case '-': r = x - y; break;
    case '*': r = x * y; break;
    case '/':
        if (y == 0) {
            gim_error(L->d, e->rhs->loc, "division by zero");
            return lv_poison;
        }
        r = x / y;
        break;
    }
    return (lower_val){.k = LV_FLOAT, .f = r};
}

/* a + b, a - b, a * b on tensors (same shape) and with scalars:
 *   t * s, s * t -> scale(t, s)     t / s -> scale(t, 1/s)
 *   t + s, s + t -> shift(t, s)     t - s -> shift(t, -s)    s - t -> shift(scale(t, -1), s) */
static __attribute__((noinline)) lower_val lower_binary(lower_ctx *L, lower_scope *S, const gim_expr *e) {
    lower_val a = lower_expr(L, S, e->lhs), b = lower_expr(L, S, e->rhs);
    if (a.k == LV_POISON || b.k == LV_POISON) return lv_poison;
    if (lv_is_number(&a) && lv_is_number(&b)) return lower_arith(L, e, &a, &b);
    bool ta = a.k == LV_TENSOR, tb = b.k == LV_TENSOR;
    if ((ta && a.t->is_int) || (tb && b.t->is_int)) {
        gim_error(L->d, (ta && a.t->is_int) ? e->lhs->loc : e->rhs->loc,
                  "labels (int32) can only be the labels of cross_entropy; '%c' expects float data", e->op);
        return lv_poison;
    }
    if (ta && tb) {
        gim_op op = e->op == '+' ? GIM_OP_ADD : e->op == '-' ? GIM_OP_SUB : e->op == '*' ? GIM_OP_MUL : GIM_OP_COUNT;
        if (op == GIM_OP_COUNT) {
            gim_error(L->d, e->loc, "'/' between two tensors is not supported; divide by a number");
            return lv_poison;
        }
        gim_node tmp = {.op = op, .n_in = 2, .in = {a.t, b.t}};
        return lower_emit(L, S, &tmp, gim_op_name(op), e->loc);
    }
    if ((ta && lv_is_number(&b)) || (tb && lv_is_number(&a))) {
        gim_node *t = ta ? a.t : b.t;
        double s = ta ? lv_num(&b) : lv_num(&a);
        switch (e->op) {
        case '*': return lower_unary_attr(L, S, GIM_OP_SCALE, t, s, e->loc);
        case '+': return lower_unary_attr(L, S, GIM_OP_SHIFT, t, s, e->loc);
        case '-':
            if (ta) return lower_unary_attr(L, S, GIM_OP_SHIFT, t, -s, e->loc);
            {
                lower_val neg = lower_unary_attr(L, S, GIM_OP_SCALE, t, -1.0, e->loc);
                if (neg.k != LV_TENSOR) return neg;
                return lower_unary_attr(L, S, GIM_OP_SHIFT, neg.t, s, e->loc);
            }
        case '/':
            if (!ta) {
                gim_error(L->d, e->loc, "a number divided by a tensor is not supported");
                return lv_poison;
            }
            if (s == 0) {
                gim_error(L->d, e->rhs->loc, "division by zero");
                return lv_poison;
            }
            return lower_unary_attr(L, S, GIM_OP_SCALE, t, 1.0 / s, e->loc);
        }
    }
    gim_error(L->d, e->loc, "'%c' needs numbers or tensors; got %s and %s", e->op, lv_what(&a), lv_what(&b));
    return lv_poison;
}

static lower_val lower_expr_at(lower_ctx *L, lower_scope *S, const gim_expr *e);

static lower_val lower_expr(lower_ctx *L, lower_scope *S, const gim_expr *e) {
    if (!e || L->too_deep) return lv_poison;
    if (L->nesting >= LOWER_MAX_NESTING) {
        gim_error(L->d, e->loc, "expressions nested more than %d deep after inlining calls", LOWER_MAX_NESTING);
        L->too_deep = true;
        return lv_poison;
    }
    L->nesting++;
    lower_val v = lower_expr_at(L, S, e);
    L->nesting--;
    return v;
}

static lower_val lower_expr_at(lower_ctx *L, lower_scope *S, const gim_expr *e) {
    switch (e->kind) {
    case GIM_EXPR_INT: return (lower_val){.k = LV_INT, .i = e->ival};
    case GIM_EXPR_FLOAT: return (lower_val){.k = LV_FLOAT, .f = e->fval};
    case GIM_EXPR_BOOL: return (lower_val){.k = LV_BOOL, .i = e->ival ? 1 : 0};
    case GIM_EXPR_STRING: return (lower_val){.k = LV_STRING, .s = e->sval};
    case GIM_EXPR_NAME: return lower_name(L, S, e);
    case GIM_EXPR_CALL: return lower_call(L, S, e, false);
    case GIM_EXPR_BINARY: return lower_binary(L, S, e);
    case GIM_EXPR_NEG: {
        lower_val v = lower_expr(L, S, e->lhs);
        if (v.k == LV_INT) {
            if (v.i == INT64_MIN) {
                gim_error(L->d, e->loc, "integer overflow in '-'");
                return lv_poison;
            }
            v.i = -v.i;
            return v;
        }
        if (v.k == LV_FLOAT) { v.f = -v.f; return v; }
        if (v.k == LV_TENSOR && v.t->is_int) {
            gim_error(L->d, e->lhs->loc, "labels (int32) can only be the labels of cross_entropy; '-' expects float data");
            return lv_poison;
        }
        if (v.k == LV_TENSOR) return lower_unary_attr(L, S, GIM_OP_SCALE, v.t, -1.0, e->loc);
        if (v.k == LV_POISON) return v;
        gim_error(L->d, e->loc, "'-' needs a number or a tensor; got %s", lv_what(&v));
        return lv_poison;
    }
    case GIM_EXPR_LIST: {
        lower_val v = {.k = LV_LIST, .n = e->n_args};
        v.items = gim_arena_alloc(L->g->arena, sizeof(lower_val) * (size_t)(e->n_args ? e->n_args : 1));
        bool poison = false;
        for (int i = 0; i < e->n_args; i++) {
            v.items[i] = lower_expr(L, S, e->args[i].value);
            if (v.items[i].k == LV_POISON) poison = true;
        }
        return poison ? lv_poison : v;
    }
    case GIM_EXPR_INDEX:
        gim_error(L->d, e->loc, "'%s[...]' is only allowed in an input declaration (input y: labels[batch])",
                  e->name ? e->name : "");
        return lv_poison;
    }
    return lv_poison;
}

/* ---- argument binding ---------------------------------------------------------------- */

/* "f takes at most N arguments (a, b); got M": kept out of lower_bind_args,
 * whose frame is on the recursion path of nested calls. */
static __attribute__((noinline)) void lower_arity_error(lower_ctx *L, const gim_expr *call, const gim_arg *arg,
                                                        const char *const *names, int n) {
    char list[400] = "";
    for (int i = 0; i < n; i++) {
        if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, names[i], sizeof list - strlen(list) - 1);
    }
    int n_pos = 0;
    for (int j = 0; j < call->n_args; j++) n_pos += !call->args[j].name;
    gim_error(L->d, arg->value->loc, "%s takes at most %d argument%s (%s); got %d", call->name, n, n == 1 ? "" : "s",
              list, n_pos);
}

/* Binds a call's arguments to a parameter list (names[0..n)), positional
 * first, then by keyword. val[i]/given[i]/at[i] receive the i-th parameter's
 * value. Returns false after reporting an arity or keyword error. */
static bool lower_bind_args(lower_ctx *L, lower_scope *S, const gim_expr *call, const char *const *names, int n,
                            lower_val *val, bool *given, gim_loc *at) {
    bool ok = true;
    for (int i = 0; i < n; i++) given[i] = false;
    int positional = 0;
    for (int a = 0; a < call->n_args; a++) {
        const gim_arg *arg = &call->args[a];
        int slot = -1;
        if (!arg->name) {
            slot = positional++;
            if (slot >= n) {
                lower_arity_error(L, call, arg, names, n);
                ok = false;
                break;
            }
        } else {
            for (int i = 0; i < n; i++)
                if (!strcmp(names[i], arg->name)) slot = i;
            if (slot < 0) {
                gim_suggest s;
                gim_suggest_init(&s, arg->name);
                for (int i = 0; i < n; i++) gim_suggest_add(&s, names[i]);
                const char *best = gim_suggest_best(&s);
                if (best)
                    gim_error(L->d, arg->name_loc, "%s has no argument '%s'; did you mean '%s'?", call->name, arg->name,
                              best);
                else
                    gim_error(L->d, arg->name_loc, "%s has no argument '%s'", call->name, arg->name);
                ok = false;
                continue;
            }
        }
        if (given[slot]) {
            gim_error(L->d, arg->name ? arg->name_loc : arg->value->loc, "argument '%s' of %s given twice", names[slot],
                      call->name);
            ok = false;
            continue;
        }
        given[slot] = true;
        at[slot] = arg->value->loc;
        val[slot] = lower_expr(L, S, arg->value);
    }
    return ok;
}

/* Converts v to op parameter p's type into the scratch node; false after
 * reporting a type error. */
static bool lower_op_arg(lower_ctx *L, const gim_expr *call, const gim_opparam *p, const lower_val *v, gim_loc at,
                         gim_node *tmp) {
    const char *want = NULL;
    switch (p->type) {
    case GIM_PT_TENSOR:
    case GIM_PT_OPT_TENSOR:
        if (v->k == LV_TENSOR && v->t->is_int != (tmp->op == GIM_OP_CROSS_ENTROPY && p->slot == 1)) {
            if (v->t->is_int)
                gim_error(L->d, at, "labels (int32) can only be the labels of cross_entropy; argument '%s' of %s expects float data",
                          p->name, call->name);
            else
                gim_error(L->d, at, "argument 'labels' of cross_entropy expects labels (an `input y: labels[batch]`); got float data");
            return false;
        }
        if (v->k == LV_TENSOR) {
            tmp->in[p->slot] = v->t;
            return true;
        }
        want = "a tensor";
        break;
    case GIM_PT_INT: {
        int64_t iv;
        if (v->k == LV_INT) iv = v->i;
        else if (v->k == LV_FLOAT && v->f == floor(v->f) && fabs(v->f) < 9e15) iv = (int64_t)v->f;
        else { want = "an integer"; break; }
        if (iv > LOWER_MAX_INT || iv < -LOWER_MAX_INT) {
            gim_error(L->d, at, "argument '%s' of %s is out of range: %" PRId64, p->name, call->name, iv);
            return false;
        }
        tmp->attr[p->slot] = (double)iv;
        return true;
    }
    case GIM_PT_FLOAT:
        if (lv_is_number(v) && isfinite(lv_num(v))) {
            tmp->attr[p->slot] = lv_num(v);
            return true;
        }
        want = "a number";
        break;
    case GIM_PT_BOOL:
        if (v->k == LV_BOOL) {
            tmp->attr[p->slot] = (double)v->i;
            return true;
        }
        want = "true or false";
        break;
    case GIM_PT_LIST:
        if (v->k == LV_LIST && v->n >= 1 && v->n <= GIM_MAX_RANK) {
            for (int i = 0; i < v->n; i++) {
                if (v->items[i].k != LV_INT || v->items[i].i > LOWER_MAX_INT || v->items[i].i < -1) {
                    gim_error(L->d, at, "argument '%s' of %s expects a list of dimensions (integers >= 1, or -1)",
                              p->name, call->name);
                    return false;
                }
                tmp->shape.d[i] = v->items[i].i;
            }
            tmp->shape.rank = v->n;
            return true;
        }
        want = "a list of 1 to 8 integers";
        break;
    case GIM_PT_CHOICE: {
        char list[200] = "";
        for (int i = 0; i < p->n_choices; i++) {
            if (v->k == LV_STRING && !strcmp(v->s, p->choices[i])) {
                tmp->attr[p->slot] = i;
                return true;
            }
            size_t at_len = strlen(list);
            snprintf(list + at_len, sizeof list - at_len, "%s\"%s\"", i ? ", " : "", p->choices[i]);
        }
        if (v->k == LV_STRING)
            gim_error(L->d, at, "argument '%s' of %s expects one of %s; got \"%s\"", p->name, call->name, list, v->s);
        else
            gim_error(L->d, at, "argument '%s' of %s expects one of %s; got %s", p->name, call->name, list, lv_what(v));
        return false;
    }
    }
    gim_error(L->d, at, "argument '%s' of %s expects %s; got %s", p->name, call->name, want, lv_what(v));
    return false;
}

static bool lower_is_loss(gim_op op) { return op == GIM_OP_INFONCE || op == GIM_OP_CROSS_ENTROPY; }

/* name(args) where name is an op of ops.def. */
/* A call's bound arguments; on the heap, as nested calls recurse through
 * lower_op_call. */
typedef struct lower_args {
    const char *names[GIM_MAX_ATTR + GIM_MAX_IN];
    lower_val val[GIM_MAX_ATTR + GIM_MAX_IN];
    bool given[GIM_MAX_ATTR + GIM_MAX_IN];
    gim_loc at[GIM_MAX_ATTR + GIM_MAX_IN];
} lower_args;

/* The node of an op call from its bound arguments. */
static __attribute__((noinline)) lower_val lower_op_build(lower_ctx *L, lower_scope *S, const gim_expr *e, gim_op op,
                                                          const lower_args *a, bool ok) {
    const gim_opinfo *info = gim_op_info(op);
    gim_node tmp = {.op = op};
    /* Defaults of the signature first; then the given arguments. */
    for (int i = 0; i < info->n_params; i++) {
        const gim_opparam *p = &info->params[i];
        if (p->type != GIM_PT_TENSOR && p->type != GIM_PT_OPT_TENSOR && p->has_default)
            tmp.attr[p->slot] = p->default_value;
    }
    bool poison = false;
    for (int i = 0; i < info->n_params; i++) {
        const gim_opparam *p = &info->params[i];
        if (!a->given[i]) {
            if (!p->has_default) {
                gim_error(L->d, e->loc, "%s: missing argument '%s'", e->name, p->name);
                ok = false;
            }
            continue;
        }
        if (a->val[i].k == LV_POISON) { poison = true; continue; }
        if (!lower_op_arg(L, e, p, &a->val[i], a->at[i], &tmp)) ok = false;
    }
    if (!ok || poison) return lv_poison;
    tmp.n_in = info->n_tensor_params;
    if (op == GIM_OP_INFONCE && !tmp.in[1]) tmp.in[1] = tmp.in[0];   /* no context: z is its own context */
    return lower_emit(L, S, &tmp, e->name, e->loc);
}

/* name(args) where name is an op of ops.def. */
static lower_val lower_op_call(lower_ctx *L, lower_scope *S, const gim_expr *e, gim_op op, bool statement) {
    const gim_opinfo *info = gim_op_info(op);
    if (lower_is_loss(op) && !statement) {
        gim_error(L->d, e->loc, "%s is a loss; it must stand alone as a statement", e->name);
        return lv_poison;
    }
    lower_args *a = gim_xmalloc(sizeof *a);
    for (int i = 0; i < info->n_params; i++) a->names[i] = info->params[i].name;
    bool ok = lower_bind_args(L, S, e, a->names, info->n_params, a->val, a->given, a->at);
    lower_val v = lower_op_build(L, S, e, op, a, ok);
    gim_free(a);
    return v;
}

static void lower_body(lower_ctx *L, lower_scope *S, const gim_stmt *body, int n);

/* name(args) where name is a def: inlined in a fresh scope holding only its
 * parameters (defs see no caller's names). */
static __attribute__((noinline)) lower_val lower_def_call(lower_ctx *L, lower_scope *S, const gim_expr *e,
                                                          const gim_def *def) {
    for (int i = 0; i < L->depth; i++)
        if (L->stack[i] == def) {
            if (i == L->depth - 1)
                gim_error(L->d, e->loc, "'%s' calls itself; recursion is not supported", def->name);
            else
                gim_error(L->d, e->loc, "recursive call of '%s' (through '%s'); recursion is not supported", def->name,
                          L->stack[L->depth - 1]->name);
            gim_note(L->d, L->stack_loc[i], "'%s' is called from here", def->name);
            return lv_poison;
        }
    if (L->depth >= LOWER_MAX_DEPTH) {
        gim_error(L->d, e->loc, "calls nested more than %d deep", LOWER_MAX_DEPTH);
        return lv_poison;
    }
    int n = def->n_params;
    const char **names = gim_arena_alloc(L->g->arena, sizeof(char *) * (size_t)(n + 1));
    lower_val *val = gim_arena_alloc(L->g->arena, sizeof(lower_val) * (size_t)(n + 1));
    bool *given = gim_arena_alloc(L->g->arena, sizeof(bool) * (size_t)(n + 1));
    gim_loc *at = gim_arena_alloc(L->g->arena, sizeof(gim_loc) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) names[i] = def->params[i].name;
    bool ok = lower_bind_args(L, S, e, names, n, val, given, at);
    for (int i = 0; i < n; i++)
        if (!given[i] && !def->params[i].default_value) {
            gim_error(L->d, e->loc, "%s: missing argument '%s'", def->name, def->params[i].name);
            ok = false;
        }
    if (!ok) return lv_poison;

    lower_scope inner = {.def = def};
    inner.path = gim_arena_printf(L->g->arena, "%s/", lower_call_name(L, S, def->name));
    L->stack[L->depth] = def;
    L->stack_loc[L->depth] = e->loc;
    L->depth++;
    for (int i = 0; i < n; i++) {
        /* A default is evaluated at the call, in the callee's scope, so it
         * may use the parameters before it. */
        lower_val v = given[i] ? val[i] : lower_expr(L, &inner, def->params[i].default_value);
        lower_bind(L, &inner, def->params[i].name, v);
    }
    lower_body(L, &inner, def->body, def->n_body);
    L->depth--;
    if (L->too_big || L->too_deep) return lv_poison;
    return inner.has_return ? inner.ret : lv_none;
}

/* "unknown function 'conv2'; did you mean 'conv2d'?" among ops and defs. */
static __attribute__((noinline)) void lower_unknown_function(lower_ctx *L, const gim_expr *e) {
    gim_suggest s;
    gim_suggest_init(&s, e->name);
    for (int i = 0; i < GIM_OP_COUNT; i++)
        if (gim_op_info((gim_op)i)->kind == GIM_OPK_USER) gim_suggest_add(&s, gim_op_name((gim_op)i));
    for (int i = 0; i < L->p->n_defs; i++)
        if (L->p->defs[i]) gim_suggest_add(&s, L->p->defs[i]->name);
    const char *best = gim_suggest_best(&s);
    if (best) gim_error(L->d, e->loc, "unknown function '%s'; did you mean '%s'?", e->name, best);
    else gim_error(L->d, e->loc, "unknown function '%s'", e->name);
}

static lower_val lower_call(lower_ctx *L, lower_scope *S, const gim_expr *e, bool statement) {
    if (L->too_big) return lv_poison;   /* reported once; stop expanding calls */
    gim_op op = gim_op_lookup(e->name);
    if (op != GIM_OP_COUNT) return lower_op_call(L, S, e, op, statement);
    const gim_def *def = lower_find_def(L, e->name);
    if (def) return lower_def_call(L, S, e, def);
    lower_unknown_function(L, e);
    /* Evaluate the arguments anyway: their own errors are independent. */
    for (int i = 0; i < e->n_args; i++) lower_expr(L, S, e->args[i].value);
    return lv_poison;
}

/* ---- statements -------------------------------------------------------------------- */

/* input name: [dims]  |  input name: labels[dims] */
static void lower_input(lower_ctx *L, lower_scope *S, const gim_stmt *st) {
    const gim_expr *e = st->value;
    bool labels = e && e->kind == GIM_EXPR_INDEX;
    if (!e || (e->kind != GIM_EXPR_LIST && !labels)) {
        gim_error(L->d, st->loc, "input '%s' needs a shape: [dims] or labels[batch]", st->name);
        lower_bind(L, S, st->name, lv_poison);
        return;
    }
    if (lower_lookup(S, st->name)) {
        gim_error(L->d, st->name_loc, "'%s' is already defined", st->name);
        return;
    }
    gim_shape s = {.rank = e->n_args};
    bool ok = e->n_args >= 1 && e->n_args <= GIM_MAX_RANK;
    if (!ok) gim_error(L->d, e->loc, "an input has 1 to %d dimensions; got %d", GIM_MAX_RANK, e->n_args);
    for (int i = 0; ok && i < e->n_args; i++) {
        lower_val v = lower_expr(L, S, e->args[i].value);
        if (v.k == LV_POISON) { ok = false; break; }
        if (v.k != LV_INT || v.i < 1 || v.i > LOWER_MAX_INT) {
            gim_error(L->d, e->args[i].value->loc, "a dimension must be a positive integer or `batch`; got %s",
                      lv_what(&v));
            ok = false;
            break;
        }
        s.d[i] = v.i;
    }
    if (ok && labels && s.rank != 1) {
        gim_error(L->d, e->loc, "labels have one dimension: labels[batch]");
        ok = false;
    }
    if (ok && gim_shape_numel_checked(&s) < 0) {
        char b[200];
        gim_error(L->d, e->loc, "tensor too large: %s has more than 2^40 elements", gim_shape_str(&s, b, sizeof b));
        ok = false;
    }
    if (!ok || !lower_room(L, st->loc)) {
        lower_bind(L, S, st->name, lv_poison);
        return;
    }
    gim_node *n = gim_node_new(L->g, labels ? GIM_OP_LABELS : GIM_OP_INPUT, 0, NULL, st->name_loc);
    n->shape = s;
    n->is_int = labels;
    n->name = gim_arena_strdup(L->g->arena, st->name);
    gim_ptrvec_push(L->g->arena, &L->g->inputs, n);
    lower_bind(L, S, st->name, (lower_val){.k = LV_TENSOR, .t = n});
}

static void lower_stmt(lower_ctx *L, lower_scope *S, const gim_stmt *st) {
    bool in_model = S->def == NULL;
    switch (st->kind) {
    case GIM_STMT_INPUT:
        if (!in_model) {
            gim_error(L->d, st->loc, "'input' is only allowed in a model");
            return;
        }
        lower_input(L, S, st);
        return;
    case GIM_STMT_ASSIGN: {
        lower_val v = lower_expr(L, S, st->value);
        if (v.k == LV_NONE) {
            gim_error(L->d, st->value->loc, "'%s' returns nothing", st->value->name ? st->value->name : "this");
            v = lv_poison;
        }
        lower_bind(L, S, st->name, v);
        return;
    }
    case GIM_STMT_EXPR: {
        const gim_expr *e = st->value;
        if (e && e->kind == GIM_EXPR_CALL) {
            gim_op op = gim_op_lookup(e->name);
            if (op != GIM_OP_COUNT && lower_is_loss(op)) {
                lower_call(L, S, e, true);
                return;
            }
            if (op == GIM_OP_COUNT && lower_find_def(L, e->name)) {
                /* A def called for its losses; a value it returns is unused. */
                lower_val v = lower_call(L, S, e, true);
                if (v.k != LV_NONE && v.k != LV_POISON)
                    gim_error(L->d, e->loc, "expression result unused; only a loss may stand alone");
                return;
            }
        }
        lower_val v = lower_expr(L, S, e);
        if (v.k != LV_POISON) gim_error(L->d, e->loc, "expression result unused; only a loss may stand alone");
        return;
    }
    case GIM_STMT_OUTPUT: {
        if (!in_model) {
            gim_error(L->d, st->loc, "'output' is only allowed in a model; a def returns its value");
            return;
        }
        lower_val v = lower_expr(L, S, st->value);
        if (L->output_stmt) {
            gim_error(L->d, st->loc, "the model already has an output");
            gim_note(L->d, L->output_stmt->loc, "first output here");
            return;
        }
        L->output_stmt = st;
        if (v.k == LV_TENSOR) L->g->output = v.t;
        else if (v.k != LV_POISON) gim_error(L->d, st->value->loc, "output expects a tensor; got %s", lv_what(&v));
        return;
    }
    case GIM_STMT_RETURN:
        if (in_model) {
            gim_error(L->d, st->loc, "'return' is only allowed in a def; a model uses `output`");
            return;
        }
        S->ret = lower_expr(L, S, st->value);
        S->has_return = true;
        return;
    }
}

static void lower_body(lower_ctx *L, lower_scope *S, const gim_stmt *body, int n) {
    for (int i = 0; i < n && !S->has_return && !L->too_big && !L->too_deep; i++) lower_stmt(L, S, &body[i]);
}

/* Values nothing reads (neither a loss, nor the output, nor another op) are
 * computed for nothing: a warning at each such end of a chain. */
static void lower_warn_unused(gim_diag *d, gim_graph *g) {
    int *readers = gim_calloc((size_t)g->nodes.len + 1, sizeof *readers);
    if (!readers) return;
    for (int i = 0; i < g->nodes.len; i++) {
        const gim_node *n = gim_node_at(g, i);
        for (int j = 0; j < n->n_in; j++) readers[n->in[j]->id]++;
    }
    for (int i = 0; i < g->nodes.len; i++) {
        const gim_node *n = gim_node_at(g, i);
        if (readers[i] || n == g->output || n->op == GIM_OP_PARAM || n->op == GIM_OP_INFONCE ||
            n->op == GIM_OP_CROSS_ENTROPY)
            continue;
        if (n->op == GIM_OP_INPUT || n->op == GIM_OP_LABELS)
            gim_warning(d, n->loc, "input '%s' is never used", n->name);
        else
            gim_warning(d, n->loc, "the result of %s is never used", gim_op_name(n->op));
    }
    gim_free(readers);
}

gim_graph *gim_lower(gim_diag *d, const gim_program *p, int64_t batch) {
    int errors0 = d->n_errors;
    if (!p) return NULL;
    if (!p->model) {
        gim_loc at = {.src = p->main, .line = 1, .col = 1};
        gim_error(d, at, "no model in this file; a model file needs `model name { ... }`");
        return NULL;
    }
    if (batch < 1 || batch > GIM_MAX_BATCH) {
        gim_error(d, (gim_loc){0}, "batch must be between 1 and %" PRId64 "; got %" PRId64, GIM_MAX_BATCH, batch);
        return NULL;
    }
    lower_ctx L = {.d = d, .p = p, .g = gim_graph_new(), .batch = batch};
    L.g->batch = batch;
    L.g->model_name = gim_arena_strdup(L.g->arena, p->model->name ? p->model->name : "model");
    L.g->model_loc = p->model->loc;
    /* A def named like an op would never be called: the op wins. */
    for (int i = 0; i < p->n_defs; i++)
        if (p->defs[i] && gim_op_lookup(p->defs[i]->name) != GIM_OP_COUNT)
            gim_error(d, p->defs[i]->loc, "def '%s' has the name of a built-in op; choose another name",
                      p->defs[i]->name);
    lower_scope model = {.path = ""};
    lower_body(&L, &model, p->model->body, p->model->n_body);
    if (d->n_errors > errors0) {
        gim_graph_free(L.g);
        return NULL;
    }
    lower_warn_unused(d, L.g);
    return L.g;
}
