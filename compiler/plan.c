/* Memory planning: where each value of one module lives.
 *
 * Preconditions: the graph is partitioned (and, for backward nodes,
 * differentiated); every node read by m's nodes is one of m's nodes, inputs
 * or parameters.
 *
 * Classes (cg_where): model inputs and earlier modules' exports come in
 * call->inputs; parameters in call->params; an export computed by this module
 * is written straight into its call->outputs slot; a parameter's gradient
 * straight into call->grads; views alias their source. Everything else gets
 * a 64-byte aligned piece of call->work.
 *
 * Work pieces are reused: walking the module in execution order (forward
 * nodes, then backward nodes), a value's piece is allocated when its node
 * runs and freed after its last reader ran (a view's readers count as its
 * source's readers). Forward values the backward pass reads therefore stay
 * live across the boundary: they are the activations. A node's output never
 * shares memory with its inputs or its scratch, since inputs are freed only
 * after the node. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "codegen.h"

#define ALIGN_FLOATS 16   /* 64 bytes */

bool cg_is_view(gim_op op) {
    return op == GIM_OP_RESHAPE || op == GIM_OP_GRADIENT_BLOCK || op == GIM_OP_SLICE;
}

/* The view root as this module sees it: a module input that is itself a
 * view in the module that made it (a fused ReLU's output, see fuse.c) is a
 * root here. */
const gim_node *cg_plan_root(const cg_plan *p, const gim_node *n, int64_t *offset) {
    int64_t off = 0;
    while (cg_is_view(n->op) && p->where[n->id] != CG_AT_INPUT) {
        if (n->op == GIM_OP_SLICE) off += gim_attr_i(n, 0);
        n = n->in[0];
    }
    if (offset) *offset = off;
    return n;
}

/* The root of export i when the export is a whole view of it (no offset, the
 * same size), else NULL. */
static const gim_node *whole_view_root(const cg_plan *p, int i) {
    const gim_node *n = p->exports.items[i];
    int64_t off = 0;
    const gim_node *r = cg_plan_root(p, n, &off);
    return r != n && off == 0 && gim_shape_numel(&r->shape) == gim_shape_numel(&n->shape) ? r : NULL;
}

bool cg_export_in_place(const cg_plan *p, int i) {
    const gim_node *n = p->exports.items[i], *r = whole_view_root(p, i);
    if (p->where[n->id] == CG_AT_OUTPUT && p->index[n->id] == i) return true;
    return r && p->where[r->id] == CG_AT_OUTPUT && p->index[r->id] == i;
}

/* ---- a first-fit allocator over [0, high) ---- */

typedef struct piece { int64_t off, size; int owner; } piece;

typedef struct allocator {
    piece *live;       /* sorted by offset */
    int n, cap;
    int64_t high;
} allocator;

static int64_t alloc_piece(allocator *a, int64_t size, int owner) {
    size = (size + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    if (size == 0) size = ALIGN_FLOATS;
    int64_t at = 0;
    int pos = 0;
    for (; pos < a->n; pos++) {
        if (a->live[pos].off - at >= size) break;
        at = a->live[pos].off + a->live[pos].size;
    }
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->live = gim_xrealloc(a->live, (size_t)a->cap * sizeof *a->live);
    }
    memmove(&a->live[pos + 1], &a->live[pos], (size_t)(a->n - pos) * sizeof *a->live);
    a->live[pos] = (piece){at, size, owner};
    a->n++;
    if (at + size > a->high) a->high = at + size;
    return at;
}

static void free_piece(allocator *a, int owner) {
    for (int i = 0; i < a->n; i++)
        if (a->live[i].owner == owner) {
            memmove(&a->live[i], &a->live[i + 1], (size_t)(a->n - i - 1) * sizeof *a->live);
            a->n--;
            return;
        }
}

/* ---- the plan ---- */

static int64_t numel_checked(const gim_node *n, bool *overflow) {
    int64_t v = 1;
    for (int i = 0; i < n->shape.rank; i++)
        if (n->shape.d[i] < 0 || gim_mul_overflows(v, n->shape.d[i], &v)) {
            *overflow = true;
            return 0;
        }
    return v;
}

static double gib(int64_t floats) { return (double)floats * 4.0 / (1024.0 * 1024.0 * 1024.0); }

int cg_plan_module(gim_diag *d, const gim_graph *g, const gim_module *m, gim_arena *arena, cg_plan *p) {
    int nn = g->nodes.len;
    int mi = m->index + 1;
    memset(p, 0, sizeof *p);
    p->g = g;
    p->m = m;
    p->where = gim_arena_alloc(arena, (size_t)nn * sizeof *p->where);
    p->offset = gim_arena_alloc(arena, (size_t)nn * sizeof *p->offset);
    p->index = gim_arena_alloc(arena, (size_t)nn * sizeof *p->index);
    p->scratch = gim_arena_alloc(arena, (size_t)nn * sizeof *p->scratch);
    p->param_offset = gim_arena_alloc(arena, (size_t)(m->params.len + 1) * sizeof *p->param_offset);
    for (int i = 0; i < nn; i++) p->scratch[i] = -1;

    /* Sizes, with overflow caught before anything is multiplied further. */
    int n_seq = m->nodes.len + m->bwd_nodes.len;
    const gim_node **seq = gim_arena_alloc(arena, (size_t)(n_seq + 1) * sizeof *seq);
    for (int i = 0; i < m->nodes.len; i++) seq[i] = m->nodes.items[i];
    for (int i = 0; i < m->bwd_nodes.len; i++) seq[m->nodes.len + i] = m->bwd_nodes.items[i];
    int n_fwd = m->nodes.len;
    for (int i = 0; i < n_seq; i++) {
        bool ovf = false;
        int64_t ne = numel_checked(seq[i], &ovf);
        if (ovf || ne > CG_MAX_FLOATS) {
            char sb[200], size[64];
            if (ovf) snprintf(size, sizeof size, "more than 2^63 bytes");
            else snprintf(size, sizeof size, "%.1f GiB", gib(ne));
            gim_error(d, seq[i]->loc, "module %d: the value %s of shape %s is too large (%s; the limit is %.0f GiB)",
                      mi, seq[i]->name ? seq[i]->name : gim_arena_printf(arena, "%s.%d", gim_op_name(seq[i]->op), seq[i]->id),
                      gim_shape_str(&seq[i]->shape, sb, sizeof sb), size, gib(CG_MAX_FLOATS));
            return -1;
        }
    }

    /* Inputs. */
    for (int i = 0; i < m->inputs.len; i++) {
        const gim_node *n = m->inputs.items[i];
        p->where[n->id] = CG_AT_INPUT;
        p->index[n->id] = i;
    }
    /* Parameters, packed in module order. */
    int64_t poff = 0;
    for (int i = 0; i < m->params.len; i++) {
        const gim_node *n = m->params.items[i];
        bool ovf = false;
        int64_t ne = numel_checked(n, &ovf);
        p->param_offset[i] = poff;
        if (ovf || __builtin_add_overflow(poff, ne, &poff) || poff > CG_MAX_FLOATS) {
            gim_error(d, n->loc, "module %d: the parameters need more than %.0f GiB", mi, gib(CG_MAX_FLOATS));
            return -1;
        }
        p->where[n->id] = CG_AT_PARAM;
        p->offset[n->id] = p->param_offset[i];
    }
    p->param_offset[m->params.len] = poff;
    p->n_param_floats = poff;

    /* Exports: the module's, then its representation when not among them:
     * the z its InfoNCE reads, or the loss's context c (`context=`) when the
     * model outputs c (an autoregressive module, probed on its context as the
     * method's audio experiments do; a context the model does not output, such
     * as a PixelCNN's over the patch grid, only serves the loss). */
    for (int i = 0; i < m->exports.len; i++) gim_ptrvec_push(arena, &p->exports, m->exports.items[i]);
    p->feature = m->exports.len ? m->exports.len - 1 : -1;
    if (m->loss && m->loss->op == GIM_OP_INFONCE) {
        const gim_node *z = m->loss->in[0];
        if (m->loss->n_in > 1 && m->loss->in[1] != z && m->loss->in[1] == g->output) z = m->loss->in[1];
        p->feature = -1;
        for (int i = 0; i < p->exports.len; i++)
            if (p->exports.items[i] == z) p->feature = i;
        if (p->feature < 0) {
            p->feature = p->exports.len;
            gim_ptrvec_push(arena, &p->exports, (void *)z);
        }
    }

    /* Every computed value: view, in-place export, in-place gradient, or work. */
    for (int i = 0; i < n_seq; i++) {
        const gim_node *n = seq[i];
        if (p->where[n->id] != CG_AT_NONE) continue;
        if (cg_is_view(n->op)) {
            p->where[n->id] = CG_AT_VIEW;
            p->offset[n->id] = n->op == GIM_OP_SLICE ? gim_attr_i(n, 0) : 0;
        } else if (n->op == GIM_OP_INPUT || n->op == GIM_OP_LABELS || n->op == GIM_OP_PARAM) {
            gim_error(d, n->loc, "internal: module %d reads %s node %%%d that is not among its inputs or parameters",
                      mi, gim_op_name(n->op), n->id);
            return -1;
        } else {
            p->where[n->id] = CG_AT_WORK;
        }
    }
    for (int i = 0; i < p->exports.len; i++) {
        const gim_node *n = p->exports.items[i];
        if (p->where[n->id] == CG_AT_WORK) {
            p->where[n->id] = CG_AT_OUTPUT;
            p->index[n->id] = i;
        }
    }
    /* An export that is a whole view of a work value (a fused ReLU's output,
     * a reshape): the value itself is written into the slot, no copy. */
    for (int i = 0; i < p->exports.len; i++) {
        const gim_node *r = whole_view_root(p, i);
        if (r && p->where[r->id] == CG_AT_WORK) {
            p->where[r->id] = CG_AT_OUTPUT;
            p->index[r->id] = i;
        }
    }
    for (int i = 0; i < m->grads.len && i < m->params.len; i++) {
        const gim_node *gr = m->grads.items[i];
        const gim_node *pa = m->params.items[i];
        if (gr && p->where[gr->id] == CG_AT_WORK && gr->is_backward &&
            gim_shape_numel(&gr->shape) == gim_shape_numel(&pa->shape)) {
            p->where[gr->id] = CG_AT_GRAD;
            p->offset[gr->id] = p->param_offset[i];
        }
    }

    /* Last use of each work value, in doubled positions: node k runs at 2k;
     * the exports are copied at 2·n_fwd − 1 (end of forward), gradients at
     * 2·n_seq (end of backward). */
    int64_t *last = gim_arena_alloc(arena, (size_t)nn * sizeof *last);
    for (int i = 0; i < nn; i++) last[i] = -1;
    for (int k = 0; k < n_seq; k++) {
        const gim_node *n = seq[k];
        if (p->where[n->id] == CG_AT_WORK && last[n->id] < 2 * k) last[n->id] = 2 * k;
        for (int j = 0; j < n->n_in; j++) {
            const gim_node *r = cg_plan_root(p, n->in[j], NULL);
            if (p->where[r->id] == CG_AT_NONE) {
                gim_error(d, n->loc, "internal: module %d: %s node %%%d reads %%%d, which the module does not hold",
                          mi, gim_op_name(n->op), n->id, n->in[j]->id);
                return -1;
            }
            if (p->where[r->id] == CG_AT_WORK && last[r->id] < 2 * k) last[r->id] = 2 * k;
        }
    }
    for (int i = 0; i < p->exports.len; i++) {
        const gim_node *r = cg_plan_root(p, p->exports.items[i], NULL);
        if (p->where[r->id] == CG_AT_WORK && last[r->id] < 2 * n_fwd - 1) last[r->id] = 2 * n_fwd - 1;
    }
    for (int i = 0; i < m->grads.len; i++) {
        const gim_node *gr = m->grads.items[i];
        if (!gr) continue;
        const gim_node *r = cg_plan_root(p, gr, NULL);
        if (p->where[r->id] == CG_AT_WORK) last[r->id] = 2 * n_seq;
    }

    /* Pieces freed after position 2k: bucket the work values by last use. */
    gim_ptrvec *dies = gim_arena_alloc(arena, (size_t)(n_seq + 1) * sizeof *dies);
    for (int k = 0; k < n_seq; k++) {
        const gim_node *n = seq[k];
        if (p->where[n->id] != CG_AT_WORK) continue;
        int at = (int)(last[n->id] / 2);   /* freed after node `at` */
        if (at > n_seq) at = n_seq;
        gim_ptrvec_push(arena, &dies[at], (void *)n);
    }

    allocator a = {0};
    int64_t act = 0;
    for (int k = 0; k < n_seq; k++) {
        const gim_node *n = seq[k];
        if (p->where[n->id] == CG_AT_WORK) {
            bool ovf = false;
            p->offset[n->id] = alloc_piece(&a, numel_checked(n, &ovf), n->id);
            if (k < n_fwd && last[n->id] >= 2 * n_fwd) act += gim_shape_numel(&n->shape);
        }
        int64_t s = cg_is_view(n->op) ? 0 : cg_scratch_floats(n);
        if (s > 0) {
            p->scratch[n->id] = alloc_piece(&a, s, -1 - n->id);
            free_piece(&a, -1 - n->id);
        }
        /* Values whose last use is the end of forward (export copies) die
         * with the last forward node, after the copies run. */
        for (int i = 0; i < dies[k].len; i++) free_piece(&a, ((gim_node *)dies[k].items[i])->id);
        if (k == n_fwd - 1) p->peak_fwd_floats = a.high;
        if (a.high > CG_MAX_FLOATS) break;
    }
    gim_free(a.live);
    if (n_fwd == 0) p->peak_fwd_floats = 0;
    p->work_floats = a.high;
    p->act_floats = act;
    if (p->work_floats > CG_MAX_FLOATS) {
        gim_error(d, m->loss ? m->loss->loc : g->model_loc,
                  "module %d: its buffers need more than %.1f GiB of memory (the limit is %.0f GiB)", mi,
                  gib(p->work_floats), gib(CG_MAX_FLOATS));
        return -1;
    }
    return 0;
}
