/* Partition: cut the lowered graph into modules at gradient_block.
 *
 * Preconditions: the graph is lowered and shaped; every node has module -1.
 * Postconditions (on success):
 *   - every forward node that computes something has node->module >= 0;
 *     INPUT and LABELS nodes keep module -1 (they belong to no module: they
 *     come in through module inputs); a PARAM takes its consumer's module;
 *   - module.nodes holds the module's computing nodes in topological order,
 *     WITHOUT its PARAM nodes (those are in module.params) and without model
 *     inputs (in module.inputs);
 *   - module.inputs: model inputs and earlier modules' values read here, by id;
 *   - module.exports: this module's values read by another module or by the
 *     model's output, plus the z its InfoNCE loss reads (the module's
 *     representation, which the linear probe evaluates), by id;
 *   - module.loss: its one loss node, or NULL only when the model has none.
 *
 * Assignment: a GRADIENT_BLOCK node starts a new module (it belongs to the
 * new one; its input to the earlier one), except on a model input, where
 * there is nothing upstream to cut from. Any other node belongs to the one
 * module its inputs come from; a node computed from parameters alone (the
 * masked weights of a masked conv2d) belongs to the module of its reader, as
 * a parameter does; a node whose only inputs are model inputs (or
 * parameters, and nothing reads it) belongs to the first module. A node reading values of two
 * modules is an error: values cross modules only through gradient_block.
 * Every module has exactly one loss (none at all when the model has none),
 * and something with parameters for it to train.
 *
 * With e2e: one module holding every node; only the last loss is kept (the
 * others and their W parameters are left out, module -1). */
#include <string.h>

#include "gim_compiler.h"

static bool is_model_input(const gim_node *n) { return n->op == GIM_OP_INPUT || n->op == GIM_OP_LABELS; }

static bool is_loss(const gim_node *n) { return n->op == GIM_OP_INFONCE || n->op == GIM_OP_CROSS_ENTROPY; }

static void push_unique(gim_arena *a, gim_ptrvec *v, gim_node *n) {
    for (int i = 0; i < v->len; i++)
        if (v->items[i] == n) return;
    /* keep the vector sorted by id */
    gim_ptrvec_push(a, v, n);
    for (int i = v->len - 1; i > 0 && ((gim_node *)v->items[i - 1])->id > n->id; i--) {
        v->items[i] = v->items[i - 1];
        v->items[i - 1] = n;
    }
}

/* A node whose inputs are all parameters (a function of weights alone). */
static bool of_params_only(const gim_node *n) {
    if (n->n_in == 0 || n->op == GIM_OP_PARAM) return false;
    for (int j = 0; j < n->n_in; j++)
        if (n->in[j]->op != GIM_OP_PARAM) return false;
    return true;
}

/* Module of each computing node; returns the number of modules or -1. */
static int part_assign(gim_diag *d, gim_graph *g) {
    int n_modules = 1, errors = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        gim_node *n = gim_node_at(g, i);
        if (n->is_backward || n->op == GIM_OP_PARAM || is_model_input(n)) continue;
        if (of_params_only(n)) continue;   /* set from its reader, below */
        /* A block on a model input has nothing upstream to isolate: no cut. */
        if (n->op == GIM_OP_GRADIENT_BLOCK && !g->e2e && !is_model_input(n->in[0])) {
            n->module = n_modules++;
            continue;
        }
        int m = -1;
        const gim_node *first = NULL;
        for (int j = 0; j < n->n_in; j++) {
            const gim_node *in = n->in[j];
            if (in->module < 0 || in->op == GIM_OP_PARAM) continue;
            if (m < 0) { m = in->module; first = in; continue; }
            if (in->module != m) {
                errors++;
                int a = m < in->module ? m : in->module, b = m < in->module ? in->module : m;
                if (is_loss(n))
                    gim_error(d, n->loc, "this loss reads values of module %d and module %d; a loss must read the values of one module",
                              a + 1, b + 1);
                else
                    gim_error(d, n->loc, "'%s' reads values of module %d and module %d; values cross modules only through gradient_block",
                              gim_op_name(n->op), a + 1, b + 1);
                const gim_node *other = in->module == a ? in : first;
                if (other->loc.src) gim_note(d, other->loc, "the value from module %d is computed here", a + 1);
                break;
            }
        }
        n->module = m < 0 ? 0 : m;
    }
    /* Functions of parameters follow their (first) reader; read by nothing,
     * the first module. Readers come later in graph order. */
    for (int i = g->nodes.len - 1; i >= 0; i--) {
        gim_node *n = gim_node_at(g, i);
        if (n->is_backward) continue;
        for (int j = 0; j < n->n_in; j++)
            if (of_params_only(n->in[j]) && n->in[j]->module < 0) n->in[j]->module = n->module < 0 ? 0 : n->module;
    }
    for (int i = 0; i < g->nodes.len; i++) {
        gim_node *n = gim_node_at(g, i);
        if (!n->is_backward && of_params_only(n) && n->module < 0) n->module = 0;
    }
    if (g->e2e) n_modules = 1;
    return errors ? -1 : n_modules;
}

static int part_check_output(gim_diag *d, gim_graph *g) {
    if (!g->output) {
        gim_error(d, g->model_loc, "model '%s' has no output; add `output <expr>`", g->model_name ? g->model_name : "?");
        return -1;
    }
    if (g->output->module < 0) {
        gim_error(d, g->output->loc, "the output is a model input itself; nothing computes it");
        return -1;
    }
    return 0;
}

int gim_partition(gim_diag *d, gim_graph *g, bool e2e) {
    int errors0 = d->n_errors;
    g->e2e = e2e;
    int n_modules = part_assign(d, g);
    if (n_modules < 0) return -1;
    if (part_check_output(d, g)) return -1;

    gim_node *last_loss = g->losses.len ? g->losses.items[g->losses.len - 1] : NULL;
    if (e2e) {
        for (int i = 0; i < g->nodes.len; i++) {
            gim_node *n = gim_node_at(g, i);
            if (is_loss(n) && n != last_loss) n->module = -1;
        }
    }
    /* Parameters follow their consumer. */
    for (int i = 0; i < g->nodes.len; i++) {
        gim_node *n = gim_node_at(g, i);
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j]->op == GIM_OP_PARAM) n->in[j]->module = n->module;
    }

    g->n_modules = n_modules;
    g->modules = gim_arena_alloc(g->arena, sizeof(gim_module) * (size_t)n_modules);
    for (int m = 0; m < n_modules; m++) g->modules[m].index = m;

    for (int i = 0; i < g->nodes.len; i++) {
        gim_node *n = gim_node_at(g, i);
        if (n->is_backward || n->module < 0) continue;
        gim_module *mod = &g->modules[n->module];
        if (n->op == GIM_OP_PARAM) {
            gim_ptrvec_push(g->arena, &mod->params, n);
            continue;
        }
        gim_ptrvec_push(g->arena, &mod->nodes, n);
        for (int j = 0; j < n->n_in; j++) {
            gim_node *in = n->in[j];
            if (in->op == GIM_OP_PARAM) continue;
            if (in->module != n->module) {
                push_unique(g->arena, &mod->inputs, in);
                if (in->module >= 0) push_unique(g->arena, &g->modules[in->module].exports, in);
            }
        }
        if (is_loss(n)) {
            if (mod->loss) {
                gim_error(d, n->loc, "module %d has two losses; each module trains on exactly one", n->module + 1);
                gim_note(d, mod->loss->loc, "its first loss is here");
                continue;
            }
            mod->loss = n;
            if (n->op == GIM_OP_INFONCE) push_unique(g->arena, &mod->exports, n->in[0]);
        }
    }
    push_unique(g->arena, &g->modules[g->output->module].exports, g->output);

    /* A loss on a module that computes nothing learnable: only its own W. */
    for (int m = 0; m < n_modules; m++) {
        gim_module *mod = &g->modules[m];
        if (!mod->loss) continue;
        bool learns = false;
        for (int i = 0; i < mod->nodes.len && !learns; i++) {
            const gim_node *n = mod->nodes.items[i];
            for (int j = 0; n != mod->loss && j < n->n_in; j++) learns |= n->in[j]->op == GIM_OP_PARAM;
        }
        if (!learns)
            gim_error(d, mod->loss->loc, "this loss trains nothing: module %d computes nothing with parameters before it",
                      m + 1);
    }
    if (g->losses.len > 0) {
        for (int m = 0; m < n_modules; m++) {
            gim_module *mod = &g->modules[m];
            if (mod->loss) continue;
            /* Locate the module by its first node (the gradient_block that starts it). */
            gim_loc at = g->model_loc;
            for (int i = 0; i < mod->nodes.len; i++) {
                const gim_node *n = mod->nodes.items[i];
                if (n->loc.src) { at = n->loc; break; }
            }
            gim_error(d, at, "module %d has no loss; every module needs one (add a loss statement, e.g. infonce(...), on its values)",
                      m + 1);
        }
    }
    return d->n_errors > errors0 ? -1 : 0;
}
