/* Inspection of a partitioned graph: the `gimc check` table and the
 * `gimc graph` Graphviz output. Both read the graph only. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cost.h"
#include "gim_compiler.h"
#include "gim_train.h"
#include "gim_util.h"

/* ---- number formatting ---------------------------------------------------------- */

char *gim_fmt_count(int64_t v, char *buf, size_t n) {
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%" PRId64, v < 0 ? -v : v);
    size_t at = 0;
    if (v < 0 && at + 1 < n) buf[at++] = '-';
    for (int i = 0; i < len && at + 1 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0 && at + 1 < n) buf[at++] = ',';
        if (at + 1 < n) buf[at++] = digits[i];
    }
    buf[at] = 0;
    return buf;
}

char *gim_fmt_si(double v, const char *unit, char *buf, size_t n) {
    static const char *prefix[] = {"", "k", "M", "G", "T", "P"};
    int p = 0;
    while (fabs(v) >= 999.95 && p < 5) { v /= 1000; p++; }
    if (p == 0) snprintf(buf, n, "%.0f %s", v, unit);
    else snprintf(buf, n, "%.1f %s%s", v, prefix[p], unit);
    return buf;
}

/* ---- gimc check -------------------------------------------------------------------- */

/* One row per module, then the total, per example (a call's cost / batch):
 *
 *   module  loss            ops       params  act floats/ex  memory/ex    forward/ex       step/ex
 *        1  infonce           7       12,640        298,368     1.2 MB    44.4 MFLOP   133.0 MFLOP
 */
void gim_print_check_table(FILE *out, const gim_graph *g) {
    double batch = g->batch > 0 ? (double)g->batch : 1;
    fprintf(out, "model %s: %d module%s, batch %" PRId64 "%s\n\n", g->model_name ? g->model_name : "?", g->n_modules,
            g->n_modules == 1 ? "" : "s", g->batch, g->e2e ? ", end to end" : "");
    fprintf(out, "%6s  %-13s %5s %12s %14s %10s %13s %13s\n", "module", "loss", "ops", "params", "act floats/ex",
            "memory/ex", "forward/ex", "step/ex");
    gim_cost total = {0};
    char a[64], b[64], c[64], e[64], f[64];
    for (int m = 0; m < g->n_modules; m++) {
        const gim_module *mod = &g->modules[m];
        gim_cost k = gim_module_cost(g, mod);
        total.n_ops += k.n_ops;
        total.n_params += k.n_params;
        total.act_floats += k.act_floats;
        total.fwd_flops += k.fwd_flops;
        total.step_flops += k.step_flops;
        fprintf(out, "%6d  %-13s %5" PRId64 " %12s %14s %10s %13s %13s\n", m + 1,
                mod->loss ? gim_op_name(mod->loss->op) : "-", k.n_ops, gim_fmt_count(k.n_params, a, sizeof a),
                gim_fmt_count((int64_t)llround((double)k.act_floats / batch), b, sizeof b),
                gim_fmt_si(4.0 * (double)k.act_floats / batch, "B", f, sizeof f),
                gim_fmt_si(k.fwd_flops / batch, "FLOP", c, sizeof c),
                gim_fmt_si(k.step_flops / batch, "FLOP", e, sizeof e));
    }
    fprintf(out, "%6s  %-13s %5" PRId64 " %12s %14s %10s %13s %13s\n", "total", "", total.n_ops,
            gim_fmt_count(total.n_params, a, sizeof a),
            gim_fmt_count((int64_t)llround((double)total.act_floats / batch), b, sizeof b),
            gim_fmt_si(4.0 * (double)total.act_floats / batch, "B", f, sizeof f),
            gim_fmt_si(total.fwd_flops / batch, "FLOP", c, sizeof c),
            gim_fmt_si(total.step_flops / batch, "FLOP", e, sizeof e));
    fprintf(out, "\nper example; activations are the float32 values a step keeps for its backward pass.\n"
                 "a training step of batch %" PRId64 ": %s, %s of activations\n",
            g->batch, gim_fmt_si(total.step_flops, "FLOP", a, sizeof a),
            gim_fmt_si(4.0 * (double)total.act_floats, "B", b, sizeof b));
}

/* ---- placement over ranks ------------------------------------------------------- */

int gim_choose_placement(const gim_graph *g, int ranks, const char *given, int *rank_of, char *err, size_t errlen) {
    if (given) return gim_placement_parse(given, g->n_modules, ranks, rank_of, err, errlen);
    double *cost = calloc((size_t)g->n_modules, sizeof(double));
    if (!cost) return gim_errf(err, errlen, "out of memory");
    for (int m = 0; m < g->n_modules; m++) cost[m] = gim_module_cost(g, &g->modules[m]).step_flops;
    int rc = gim_placement_balance(cost, g->n_modules, ranks, rank_of, err, errlen);
    free(cost);
    return rc;
}

/* Bytes rank r sends rank r + 1 per batch: every value made at rank <= r
 * (model inputs at rank 0) that a module at rank > r reads. */
static double bytes_after(const gim_graph *g, const int *rank_of, int r) {
    double bytes = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        const gim_node *n = gim_node_at(g, i);
        int from = n->module < 0 ? 0 : rank_of[n->module];
        if (from > r) continue;
        bool read = false;
        for (int m = 0; m < g->n_modules && !read; m++) {
            if (rank_of[m] <= r) continue;
            const gim_module *mod = &g->modules[m];
            for (int k = 0; k < mod->inputs.len; k++) read = read || mod->inputs.items[k] == n;
        }
        if (read) bytes += 4.0 * (double)gim_shape_numel(&n->shape);
    }
    return bytes;
}

void gim_print_placement(FILE *out, const gim_graph *g, int ranks, const int *rank_of) {
    double total = 0, worst = 0;
    double *share = calloc((size_t)ranks, sizeof(double));
    if (!share) return;
    for (int m = 0; m < g->n_modules; m++) {
        double f = gim_module_cost(g, &g->modules[m]).step_flops;
        share[rank_of[m]] += f;
        total += f;
    }
    fprintf(out, "\nplacement on %d rank%s (mpirun -np %d), per batch of %" PRId64 ":\n", ranks, ranks == 1 ? "" : "s",
            ranks, g->batch);
    fprintf(out, "%6s  %-12s %14s %8s %16s\n", "rank", "modules", "step FLOPs", "share", "sends/batch");
    for (int r = 0; r < ranks; r++) {
        int a = -1, z = -1;
        for (int m = 0; m < g->n_modules; m++)
            if (rank_of[m] == r) {
                if (a < 0) a = m;
                z = m;
            }
        char mods[32], fl[64], by[64];
        if (a == z) snprintf(mods, sizeof mods, "%d", a + 1);
        else snprintf(mods, sizeof mods, "%d-%d", a + 1, z + 1);
        if (r + 1 < ranks) gim_fmt_si(bytes_after(g, rank_of, r), "B", by, sizeof by);
        else snprintf(by, sizeof by, "-");
        fprintf(out, "%6d  %-12s %14s %7.1f%% %16s\n", r, mods, gim_fmt_si(share[r], "FLOP", fl, sizeof fl),
                total > 0 ? 100 * share[r] / total : 0, by);
        if (share[r] > worst) worst = share[r];
    }
    fprintf(out, "\npredicted speed-up over one process: %.2fx (1 / the largest share), if every rank has its own\n"
                 "cores and the network carries the bytes above per batch at the ranks' step rate\n",
            worst > 0 ? total / worst : 1.0);
    free(share);
}

/* ---- gimc graph ---------------------------------------------------------------------- */

static void dot_str(FILE *out, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        if ((unsigned char)*s >= 32) fputc(*s, out);
    }
}

static void dot_node(FILE *out, const gim_node *n, const char *indent) {
    char sh[200];
    fprintf(out, "%sn%d [label=\"", indent, n->id);
    if (n->op == GIM_OP_INPUT || n->op == GIM_OP_LABELS) {
        fprintf(out, "%s ", gim_op_name(n->op));
        dot_str(out, n->name ? n->name : "?");
        fprintf(out, "\\n%s%s\"", n->is_int ? "i32" : "", gim_shape_str(&n->shape, sh, sizeof sh));
        fprintf(out, ", shape=ellipse");
    } else if (n->op == GIM_OP_PARAM) {
        dot_str(out, n->name ? n->name : "param");
        fprintf(out, "\\n%s\", shape=note, fontsize=8", gim_shape_str(&n->shape, sh, sizeof sh));
    } else {
        fprintf(out, "%s\\n%s", gim_op_name(n->op), gim_shape_str(&n->shape, sh, sizeof sh));
        if (n->name) {
            fprintf(out, "\\n");
            dot_str(out, n->name);
        }
        fprintf(out, "\"");
        if (n->is_backward) fprintf(out, ", style=filled, fillcolor=\"#eeeeee\"");
        else if (n->op == GIM_OP_INFONCE || n->op == GIM_OP_CROSS_ENTROPY)
            fprintf(out, ", style=filled, fillcolor=\"#ffe4b5\"");
        else if (n->op == GIM_OP_GRADIENT_BLOCK) fprintf(out, ", style=dashed");
    }
    fprintf(out, "];\n");
}

void gim_print_dot(FILE *out, const gim_graph *g, bool backward) {
    fprintf(out, "digraph \"");
    dot_str(out, g->model_name ? g->model_name : "model");
    fprintf(out, "\" {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n");
    fprintf(out, "  edge [fontname=\"Helvetica\", fontsize=8];\n");
    for (int i = 0; i < g->inputs.len; i++) dot_node(out, g->inputs.items[i], "  ");
    for (int m = 0; m < g->n_modules; m++) {
        const gim_module *mod = &g->modules[m];
        fprintf(out, "  subgraph cluster_m%d {\n    label=\"module %d%s%s\";\n    style=rounded;\n", m + 1, m + 1,
                mod->loss ? ": " : "", mod->loss ? gim_op_name(mod->loss->op) : "");
        for (int i = 0; i < mod->params.len; i++) dot_node(out, mod->params.items[i], "    ");
        for (int i = 0; i < mod->nodes.len; i++) dot_node(out, mod->nodes.items[i], "    ");
        if (backward)
            for (int i = 0; i < mod->bwd_nodes.len; i++) dot_node(out, mod->bwd_nodes.items[i], "    ");
        fprintf(out, "  }\n");
    }
    /* Nodes outside every module (e.g. the losses an end-to-end run drops). */
    for (int i = 0; i < g->nodes.len; i++) {
        const gim_node *n = gim_node_at(g, i);
        if (n->module < 0 && n->op != GIM_OP_INPUT && n->op != GIM_OP_LABELS && (!n->is_backward || backward))
            dot_node(out, n, "  ");
    }
    for (int i = 0; i < g->nodes.len; i++) {
        const gim_node *n = gim_node_at(g, i);
        if (n->is_backward && !backward) continue;
        for (int j = 0; j < n->n_in; j++) {
            const gim_node *in = n->in[j];
            fprintf(out, "  n%d -> n%d", in->id, n->id);
            if (n->op == GIM_OP_GRADIENT_BLOCK && !g->e2e)
                fprintf(out, " [style=dashed, color=red, label=\"no gradient\"]");
            else if (n->is_backward)
                fprintf(out, " [color=gray]");
            else if (in->op == GIM_OP_PARAM)
                fprintf(out, " [color=gray, arrowsize=0.5]");
            fprintf(out, ";\n");
        }
    }
    if (g->output) fprintf(out, "  output [shape=plaintext];\n  n%d -> output;\n", g->output->id);
    fprintf(out, "}\n");
}
