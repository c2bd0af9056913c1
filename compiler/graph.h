/* The graph IR: a dataflow graph of statically shaped float32 tensors.
 *
 * Built by lowering (lower.c) from the AST, shaped by shape.c, cut into
 * modules by partition.c, extended with backward nodes by autodiff.c, and
 * read by the code generator. Nodes are appended only; a node's inputs always
 * have smaller ids, so graph order is a topological order.
 *
 * All graph memory lives in the graph's arena. */
#ifndef GIM_GRAPH_H
#define GIM_GRAPH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gim_lang.h"
#include "gim_util.h"

#define GIM_MAX_RANK 8
#define GIM_MAX_IN 8
#define GIM_MAX_ATTR 8

typedef enum gim_op {
#define OP(id, name, kind, sig) GIM_OP_##id,
#include "ops.def"
#undef OP
    GIM_OP_COUNT
} gim_op;

typedef enum gim_op_kind { GIM_OPK_SOURCE, GIM_OPK_USER, GIM_OPK_INTERNAL } gim_op_kind;

/* One parameter of an op's signature, parsed from ops.def. */
typedef enum gim_ptype {
    GIM_PT_TENSOR, GIM_PT_OPT_TENSOR, GIM_PT_INT, GIM_PT_FLOAT, GIM_PT_BOOL, GIM_PT_LIST,
    GIM_PT_CHOICE,          /* one of a few strings; the attr holds its index */
} gim_ptype;

#define GIM_MAX_CHOICES 8

typedef struct gim_opparam {
    const char *name;
    gim_ptype type;
    bool has_default;
    double default_value;   /* numbers, bools, a choice's index; an optional tensor defaults to none */
    int slot;               /* index into in[] (tensors) or attr[] (others) */
    const char *choices[GIM_MAX_CHOICES];   /* GIM_PT_CHOICE: the strings, by index */
    int n_choices;
} gim_opparam;

typedef struct gim_opinfo {
    const char *name;
    gim_op_kind kind;
    const char *signature;
    gim_opparam params[GIM_MAX_ATTR + GIM_MAX_IN];
    int n_params;
    int n_tensor_params;    /* including optional ones */
    int n_attrs;
} gim_opinfo;

/* The parsed op table (parsed once, on first use). */
const gim_opinfo *gim_op_info(gim_op op);
const char *gim_op_name(gim_op op);
/* User op by source name; GIM_OP_COUNT if none. */
gim_op gim_op_lookup(const char *name);
/* The string of choice index v of a GIM_PT_CHOICE parameter ("?" if none). */
const char *gim_choice_name(const gim_opparam *p, double v);

/* ---- shapes ---------------------------------------------------------------- */

typedef struct gim_shape {
    int rank;                  /* 0: a scalar */
    int64_t d[GIM_MAX_RANK];
} gim_shape;

int64_t gim_shape_numel(const gim_shape *s);        /* 1 for a scalar */
bool gim_shape_eq(const gim_shape *a, const gim_shape *b);
/* "[32, 6, 6, 1, 8, 8]"; returns buf. */
char *gim_shape_str(const gim_shape *s, char *buf, size_t n);
gim_shape gim_shape_make(int rank, const int64_t *d);

/* ---- nodes ------------------------------------------------------------------ */

typedef struct gim_node gim_node;
struct gim_node {
    int id;                    /* index in graph->nodes; inputs have smaller ids */
    gim_op op;
    int n_in;
    gim_node *in[GIM_MAX_IN];
    double attr[GIM_MAX_ATTR]; /* op-specific, named by the op's signature */
    gim_shape shape;
    bool is_int;               /* int32 data (labels); everything else is float32 */

    const char *name;          /* path from the source, e.g. "conv_pair.2/conv2d.1";
                                  parameters end in "/w", "/b", ... */
    gim_loc loc;               /* the source expression that made it */
    int module;                /* 0-based module after partition; -1 before */
    bool is_backward;          /* created by autodiff */
    uint64_t rng_stream;       /* INFONCE(_BWD): which random stream draws negatives */
    void *user;                /* scratch for passes (must be cleared after use) */
};

static inline int64_t gim_attr_i(const gim_node *n, int i) { return (int64_t)n->attr[i]; }

/* conv2d's `mask` (attr 5) and conv2d_mask's (attr 0), in the order of the
 * strings in ops.def. */
enum { GIM_MASK_NONE = 0, GIM_MASK_A = 1, GIM_MASK_B = 2 };
#define GIM_CONV2D_MASK_ATTR 5

/* The first raster position of a k×k kernel that mask zeroes: positions
 * u·k + v at or after it are 0 (A: the centre and after, B: after the
 * centre); k·k for no mask. */
static inline int64_t gim_mask_keep(int mask, int64_t k) {
    int64_t centre = (k / 2) * k + k / 2;
    return mask == GIM_MASK_A ? centre : mask == GIM_MASK_B ? centre + 1 : k * k;
}

/* The attr slot gim_fuse sets on a node that computes a ReLU (convolutions)
 * or a ReLU gradient (convolution data gradients, spatial_mean_bwd) along
 * with its own result (compiler/fuse.c); past every op's own attrs. */
#define GIM_FUSED_RELU (GIM_MAX_ATTR - 1)

/* ---- modules ---------------------------------------------------------------- */

/* A module: everything between gradient blocks, with its own loss.
 * Valid after gim_partition(); grads valid after gim_autodiff(). */
typedef struct gim_module {
    int index;                 /* 0-based; printed 1-based to users */
    gim_ptrvec nodes;          /* forward nodes of this module, in topological order */
    gim_ptrvec inputs;         /* nodes of earlier modules (or model inputs) read here:
                                  a GRADIENT_BLOCK's input, or an INPUT/LABELS node */
    gim_ptrvec exports;        /* this module's nodes read by later modules or the output */
    gim_ptrvec params;         /* PARAM nodes */
    gim_node *loss;            /* INFONCE or CROSS_ENTROPY; NULL if none */
    gim_ptrvec bwd_nodes;      /* backward nodes, in topological order */
    gim_ptrvec grads;          /* grads.items[i] is the gradient of params.items[i] */
} gim_module;

typedef struct gim_graph {
    gim_arena *arena;
    gim_ptrvec nodes;          /* all nodes, topological */
    gim_ptrvec inputs;         /* INPUT and LABELS nodes, in declaration order */
    gim_ptrvec losses;         /* loss nodes, in source order */
    gim_node *output;          /* the model's `output` (NULL if none) */
    int64_t batch;             /* the bound batch size */
    const char *model_name;
    gim_loc model_loc;

    gim_module *modules;       /* after partition */
    int n_modules;
    bool e2e;                  /* end to end: blocks pass gradients, one loss */
} gim_graph;

gim_graph *gim_graph_new(void);
void gim_graph_free(gim_graph *g);
gim_node *gim_node_new(gim_graph *g, gim_op op, int n_in, gim_node *const *in, gim_loc loc);
static inline gim_node *gim_node_at(const gim_graph *g, int i) { return (gim_node *)g->nodes.items[i]; }

/* Prints the graph as text, one node per line:
 *   %12 = conv2d(%3, %10, %11) out=32 k=3 stride=1 pad=1 bias=1 : [32, 6, 6, 32, 8, 8]  # conv_pair.1/conv2d.1 @model.gim:8:10 m1 */
void gim_graph_print(FILE *out, const gim_graph *g);

#endif
