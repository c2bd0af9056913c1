/* The compiler's public interface: each stage of the pipeline, in order.
 *
 *   gim_parse_program   (lang/)   source -> AST
 *   gim_config_from_program       train block -> gim_train_config
 *   gim_lower                     AST -> graph (functions inlined, shapes inferred)
 *   gim_partition                 graph -> modules cut at gradient_block
 *   gim_autodiff                  each module + its backward nodes
 *   gim_fuse                      ReLU into the convolutions around it
 *   gim_plan / gim_codegen        LLVM module per model
 *   gim_jit                       native code -> gim_exec_model (runtime/)
 *
 * Every stage reports user errors through gim_diag and returns -1 / NULL
 * after reporting; it never exits. */
#ifndef GIM_COMPILER_H
#define GIM_COMPILER_H

#include <stdio.h>

#include "gim_lang.h"
#include "gim_runtime.h"
#include "graph.h"

/* Reads the program's train block into cfg (which holds defaults or earlier
 * values); unknown keys and bad values are located errors. */
int gim_config_from_program(gim_diag *d, const gim_program *p, gim_train_config *cfg);

/* Lowers the program's model to a graph with `batch` bound. Inlines every
 * def call (each call its own parameters), infers every shape, reports
 * unknown names, arity and shape errors at their source locations. Returns
 * NULL if any error was reported. */
gim_graph *gim_lower(gim_diag *d, const gim_program *p, int64_t batch);

/* Cuts the graph into modules at gradient_block (or, with e2e, keeps one
 * module holding every node and only the last loss). Errors: a module with
 * no loss, a loss reading two modules, an output nothing computes. */
int gim_partition(gim_diag *d, gim_graph *g, bool e2e);

/* Adds each module's backward nodes and parameter gradients. */
int gim_autodiff(gim_diag *d, gim_graph *g);
/* Does op have a backward rule (every user op does; sources and internal ops
 * do not)? For the op-table coverage test. */
bool gim_autodiff_has_rule(gim_op op);

/* Fuses each ReLU into the convolution before it and each ReLU gradient into
 * the convolution data gradient before it, where nothing else reads the
 * convolution's output (compiler/fuse.c). After gim_autodiff, before code
 * generation; the graph then computes the same bits. Returns how many. */
int gim_fuse(gim_graph *g);

/* Cost of one module per call (whole batch): parameters, activation floats
 * (forward values kept for backward), FLOPs forward and for a training step. */
typedef struct gim_cost {
    int64_t n_ops, n_params, act_floats;
    double fwd_flops, step_flops;
} gim_cost;
gim_cost gim_module_cost(const gim_graph *g, const gim_module *m);

/* `gimc check`: the table of modules. */
void gim_print_check_table(FILE *out, const gim_graph *g);
/* Module -> rank for `ranks` ranks: `given` (--placement) parsed, else the
 * split that balances the modules' step FLOPs. -1 with err set. */
int gim_choose_placement(const gim_graph *g, int ranks, const char *given, int *rank_of, char *err, size_t errlen);
/* `gimc check --ranks R`: each rank's modules, share of the step FLOPs,
 * bytes it sends per batch, and the predicted speed-up. */
void gim_print_placement(FILE *out, const gim_graph *g, int ranks, const int *rank_of);
/* `gimc graph`: Graphviz DOT, a cluster per module, blocked edges dashed. */
void gim_print_dot(FILE *out, const gim_graph *g, bool backward);

/* Code generation options. */
typedef struct gim_cg_options {
    int opt_level;               /* 0..3 */
    const gim_train_config *cfg; /* optimizer settings compiled into step code */
} gim_cg_options;

/* Compiles every module and returns the runnable model, or NULL after
 * reporting. The graph must be partitioned and differentiated. */
gim_exec_model *gim_jit(gim_diag *d, const gim_graph *g, const gim_cg_options *o);

/* The runtime's view of the model (slots, parameters, memory sizes) without
 * compiling it: step and forward are NULL. For reading and checking weights
 * (gim_export); free with gim_exec_model_free. */
gim_exec_model *gim_describe(gim_diag *d, const gim_graph *g, const gim_cg_options *o);

/* `gimc export` (compiler/export.c): an object file whose one external
 * function, <prefix>_features, computes module `module`'s features (its
 * feature slot, as gim_extract_features returns them) for any number of
 * examples, with the parameters embedded; it calls OpenBLAS, libm and libc
 * only. The header declares it. The graph must be differentiated and fused
 * as for gim_jit. */
typedef struct gim_export_options {
    int module;                     /* 0-based */
    const char *prefix;             /* a C identifier */
    const char *model_file;         /* named in the header */
    const gim_exec_model *layout;   /* gim_describe of the same graph */
    float *const *params;           /* per module: its packed parameters */
} gim_export_options;
int gim_export(gim_diag *d, const gim_graph *g, const gim_cg_options *o, const gim_export_options *x, FILE *obj,
               FILE *header);

/* `gimc ir`: LLVM IR of one module's function (before optimisation when
 * opt_level is 0), its assembly, or an object file. module -1: all. */
typedef enum gim_ir_what { GIM_IR_LLVM, GIM_IR_ASM, GIM_IR_OBJECT } gim_ir_what;
int gim_emit_ir(gim_diag *d, const gim_graph *g, const gim_cg_options *o, int module,
                const char *fn /* "forward", "step" or NULL for both */,
                gim_ir_what what, FILE *out);

#endif
