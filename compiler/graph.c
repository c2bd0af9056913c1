/* The graph IR's core: the parsed op table, nodes, shapes, text dump. */
#include "graph.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static gim_opinfo op_table[GIM_OP_COUNT] = {
#define OP(id, nm, k, sig) [GIM_OP_##id] = {.name = nm, .kind = k, .signature = sig},
#include "ops.def"
#undef OP
};
static int op_table_ready;

/* Parses "x:t out:i k:i stride:i=1 bias:b=true mask:s(none|A|B)=none" into
 * info->params. The signatures are compile-time constants; a malformed one
 * is a bug. */
static void parse_signature(gim_opinfo *info) {
    const char *s = info->signature;
    int n_tensor = 0, n_attr = 0;
    while (*s) {
        while (*s == ' ') s++;
        if (!*s) break;
        const char *start = s;
        while (*s && *s != ':') s++;
        gim_opparam *p = &info->params[info->n_params++];
        p->name = strndup(start, (size_t)(s - start));
        s++; /* ':' */
        char t = *s++;
        switch (t) {
        case 't':
            if (*s == '?') { s++; p->type = GIM_PT_OPT_TENSOR; }
            else p->type = GIM_PT_TENSOR;
            break;
        case 'i': p->type = GIM_PT_INT; break;
        case 'f': p->type = GIM_PT_FLOAT; break;
        case 'b': p->type = GIM_PT_BOOL; break;
        case 'l': p->type = GIM_PT_LIST; break;
        case 's':
            /* s(a|b|c): the strings a choice accepts */
            p->type = GIM_PT_CHOICE;
            if (*s++ != '(') abort();
            for (;;) {
                const char *c = s;
                while (*s && *s != '|' && *s != ')') s++;
                if (!*s || s == c || p->n_choices == GIM_MAX_CHOICES) abort();
                p->choices[p->n_choices++] = strndup(c, (size_t)(s - c));
                if (*s++ == ')') break;
            }
            break;
        default: abort();
        }
        if (*s == '=') {
            s++;
            p->has_default = true;
            if (p->type == GIM_PT_CHOICE) {
                const char *c = s;
                while (*s && *s != ' ') s++;
                p->default_value = -1;
                for (int i = 0; i < p->n_choices; i++)
                    if (strlen(p->choices[i]) == (size_t)(s - c) && !strncmp(p->choices[i], c, (size_t)(s - c)))
                        p->default_value = i;
                if (p->default_value < 0) abort();
            } else if (!strncmp(s, "true", 4)) { p->default_value = 1; s += 4; }
            else if (!strncmp(s, "false", 5)) { p->default_value = 0; s += 5; }
            else p->default_value = strtod(s, (char **)&s);
        }
        if (p->type == GIM_PT_TENSOR || p->type == GIM_PT_OPT_TENSOR) {
            p->slot = n_tensor++;
            if (p->type == GIM_PT_OPT_TENSOR) p->has_default = true;
        } else {
            p->slot = n_attr++;
        }
    }
    info->n_tensor_params = n_tensor;
    info->n_attrs = n_attr;
}

static void ensure_table(void) {
    if (op_table_ready) return;
    for (int i = 0; i < GIM_OP_COUNT; i++) parse_signature(&op_table[i]);
    op_table_ready = 1;
}

const gim_opinfo *gim_op_info(gim_op op) {
    ensure_table();
    return &op_table[op];
}

const char *gim_op_name(gim_op op) { return op < GIM_OP_COUNT ? op_table[op].name : "?"; }

gim_op gim_op_lookup(const char *name) {
    ensure_table();
    for (int i = 0; i < GIM_OP_COUNT; i++)
        if (op_table[i].kind == GIM_OPK_USER && !strcmp(op_table[i].name, name)) return (gim_op)i;
    return GIM_OP_COUNT;
}

const char *gim_choice_name(const gim_opparam *p, double v) {
    int i = (int)v;
    return i >= 0 && i < p->n_choices ? p->choices[i] : "?";
}

/* ---- shapes ---- */

int64_t gim_shape_numel(const gim_shape *s) {
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++) n *= s->d[i];
    return n;
}

bool gim_shape_eq(const gim_shape *a, const gim_shape *b) {
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->d[i] != b->d[i]) return false;
    return true;
}

char *gim_shape_str(const gim_shape *s, char *buf, size_t n) {
    size_t at = 0;
    at += (size_t)snprintf(buf + at, n - at, "[");
    for (int i = 0; i < s->rank && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, i ? ", %" PRId64 : "%" PRId64, s->d[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
    return buf;
}

gim_shape gim_shape_make(int rank, const int64_t *d) {
    gim_shape s = {.rank = rank};
    for (int i = 0; i < rank; i++) s.d[i] = d[i];
    return s;
}

/* ---- graph ---- */

gim_graph *gim_graph_new(void) {
    gim_arena *a = gim_arena_new();
    gim_graph *g = gim_arena_alloc(a, sizeof *g);
    g->arena = a;
    return g;
}

void gim_graph_free(gim_graph *g) {
    if (g) gim_arena_free(g->arena);
}

gim_node *gim_node_new(gim_graph *g, gim_op op, int n_in, gim_node *const *in, gim_loc loc) {
    gim_node *n = gim_arena_alloc(g->arena, sizeof *n);
    n->id = g->nodes.len;
    n->op = op;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    n->loc = loc;
    n->module = -1;
    const gim_opinfo *info = gim_op_info(op);
    for (int i = 0; i < info->n_params; i++) {
        const gim_opparam *p = &info->params[i];
        if (p->type != GIM_PT_TENSOR && p->type != GIM_PT_OPT_TENSOR && p->has_default)
            n->attr[p->slot] = p->default_value;
    }
    gim_ptrvec_push(g->arena, &g->nodes, n);
    return n;
}

void gim_graph_print(FILE *out, const gim_graph *g) {
    for (int i = 0; i < g->nodes.len; i++) {
        const gim_node *n = gim_node_at(g, i);
        const gim_opinfo *info = gim_op_info(n->op);
        fprintf(out, "%%%d = %s(", n->id, info->name);
        for (int j = 0; j < n->n_in; j++) fprintf(out, j ? ", %%%d" : "%%%d", n->in[j]->id);
        fprintf(out, ")");
        for (int j = 0; j < info->n_params; j++) {
            const gim_opparam *p = &info->params[j];
            if (p->type == GIM_PT_TENSOR || p->type == GIM_PT_OPT_TENSOR || p->type == GIM_PT_LIST) continue;
            if (p->type == GIM_PT_FLOAT) fprintf(out, " %s=%g", p->name, n->attr[p->slot]);
            else if (p->type == GIM_PT_CHOICE) fprintf(out, " %s=%s", p->name, gim_choice_name(p, n->attr[p->slot]));
            else fprintf(out, " %s=%" PRId64, p->name, gim_attr_i(n, p->slot));
        }
        char sb[160];
        fprintf(out, " : %s%s", n->is_int ? "i32" : "", gim_shape_str(&n->shape, sb, sizeof sb));
        if (n->name) fprintf(out, "  # %s", n->name);
        if (n->loc.src) fprintf(out, " @%s:%d:%d", n->loc.src->path, n->loc.line, n->loc.col);
        if (n->module >= 0) fprintf(out, " m%d", n->module + 1);
        if (n->is_backward) fprintf(out, " bwd");
        fprintf(out, "\n");
    }
}
