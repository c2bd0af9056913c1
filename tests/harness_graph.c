#include "harness_graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gim_util.h"
#include "testutil.h"

/* The graphs' source locations point into their diagnostics' source table,
 * so each diagnostics object lives until exit. */
#define HG_MAX_KEPT 256
static gim_diag hg_kept[HG_MAX_KEPT];
static int hg_n_kept;

static void hg_release_all(void) {
    for (int i = 0; i < hg_n_kept; i++) gim_diag_release(&hg_kept[i]);
}

static gim_diag *hg_new_diag(FILE *out) {
    if (hg_n_kept == 0) atexit(hg_release_all);
    gim_diag *d = hg_n_kept < HG_MAX_KEPT ? &hg_kept[hg_n_kept++] : NULL;
    if (!d) abort();   /* a test program compiling more than HG_MAX_KEPT models */
    gim_diag_init(d, out);
    return d;
}

gim_graph *hg_compile(const char *src, int64_t batch, bool partition, bool e2e, char **messages) {
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    gim_diag *d = hg_new_diag(out);
    gim_arena *arena = gim_arena_new();
    gim_graph *g = NULL;
    gim_program *p = gim_parse_program_text(d, arena, "test.gim", src, strlen(src), GIM_SOURCE_DIR "/stdlib");
    if (p && d->n_errors == 0) {
        gim_train_config cfg;
        gim_train_config_defaults(&cfg);
        if (gim_config_from_program(d, p, &cfg) == 0) {
            g = gim_lower(d, p, batch);
            if (g && partition && gim_partition(d, g, e2e)) {
                gim_graph_free(g);
                g = NULL;
            }
        }
    }
    if (d->n_errors && g) {
        gim_graph_free(g);
        g = NULL;
    }
    d->out = stderr;   /* the memory stream closes here; the diag lives on */
    gim_arena_free(arena);
    fclose(out);
    if (messages) *messages = gim_xstrdup(buf ? buf : "");
    free(buf);
    return g;
}

gim_graph *hg_ok(const char *src, int64_t batch, bool partition, bool e2e) {
    char *m;
    gim_graph *g = hg_compile(src, batch, partition, e2e, &m);
    if (!g) fprintf(stderr, "\nunexpected errors:\n%s", m);
    gim_free(m);
    return g;
}

char *hg_fails(const char *src, int64_t batch, bool partition, bool e2e) {
    char *m;
    gim_graph *g = hg_compile(src, batch, partition, e2e, &m);
    CU_ASSERT_PTR_NULL(g);
    gim_graph_free(g);
    return m;
}

void hg_expect_error(const char *src, int64_t batch, bool partition, bool e2e, const char *needle) {
    char *m = hg_fails(src, batch, partition, e2e);
    bool found = strstr(m, needle) != NULL;
    CU_ASSERT(found);
    if (!found) fprintf(stderr, "\nwanted \"%s\" in:\n%s", needle, m);
    gim_free(m);
}

bool hg_shape_is(const gim_node *n, int rank, const int64_t *d) {
    if (!n || n->shape.rank != rank) return false;
    for (int i = 0; i < rank; i++)
        if (n->shape.d[i] != d[i]) return false;
    return true;
}

gim_node *hg_find(const gim_graph *g, const char *name) {
    for (int i = 0; i < g->nodes.len; i++) {
        gim_node *n = gim_node_at(g, i);
        if (n->name && !strcmp(n->name, name)) return n;
    }
    return NULL;
}

int hg_count(const gim_graph *g, gim_op op) {
    int c = 0;
    for (int i = 0; i < g->nodes.len; i++) c += gim_node_at(g, i)->op == op;
    return c;
}

int64_t hg_module_params(const gim_module *m) {
    int64_t n = 0;
    for (int i = 0; i < m->params.len; i++) n += gim_shape_numel(&((gim_node *)m->params.items[i])->shape);
    return n;
}
