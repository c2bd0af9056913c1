/* Code generation internals shared by plan.c, codegen.c, jit.c and
 * cmd_ir.c. (Private to compiler/.)
 *
 *   cg_plan_module     where every value of one module lives (plan.c)
 *   cg_emit_module     LLVM functions gim_m<N>_step / gim_m<N>_forward (codegen.c)
 *   gim_jit / gim_emit_ir  optimise and compile them (jit.c)
 */
#ifndef GIM_CODEGEN_H
#define GIM_CODEGEN_H

#include <stdio.h>

#include <llvm-c/Core.h>

#include "cg.h"
#include "gim_compiler.h"

/* Where a value's buffer is. */
typedef enum cg_where {
    CG_AT_NONE,      /* not used by this module */
    CG_AT_INPUT,     /* call->inputs[index] (labels: call->labels when set) */
    CG_AT_PARAM,     /* call->params + offset */
    CG_AT_GRAD,      /* call->grads + offset: a parameter's gradient, computed in place */
    CG_AT_OUTPUT,    /* call->outputs[index]: an export computed in place */
    CG_AT_WORK,      /* call->work + offset */
    CG_AT_VIEW,      /* the buffer of in[0] + offset (RESHAPE, GRADIENT_BLOCK, SLICE) */
} cg_where;

/* The most floats any one module's buffers may take (64 GiB). */
#define CG_MAX_FLOATS ((int64_t)16 << 30)

/* A module's memory plan. Arrays are indexed by node id (graph-wide). */
typedef struct cg_plan {
    const gim_graph *g;
    const gim_module *m;
    cg_where *where;
    int64_t *offset;         /* floats: in params/grads/work, or a view's offset */
    int *index;              /* input or export slot index within the module */
    int64_t *scratch;        /* work offset of the node's scratch, -1 when none */
    gim_ptrvec exports;      /* m->exports, then the feature node if not among them */
    int feature;             /* index in exports of the representation (infonce z, or
                                its context when that is the model's output; else the
                                last export); -1 when none */
    int64_t n_param_floats;
    int64_t *param_offset;   /* per m->params index */
    int64_t work_floats;     /* the work arena, 64-byte aligned pieces */
    int64_t act_floats;      /* forward values the backward pass reads */
    int64_t peak_fwd_floats; /* the work arena high water mark during forward */
} cg_plan;

/* Plans module m: buffers for every value, reusing work memory once a value's
 * last reader (forward then backward order) has run. Returns 0, or -1 after
 * reporting (a module too large, an overflowing shape). Memory in arena. */
int cg_plan_module(gim_diag *d, const gim_graph *g, const gim_module *m, gim_arena *arena, cg_plan *p);

/* FLOPs of the products module m's training step executes (cg_products.c:
 * convolutions by the path they take, the loss from the backward pass). */
double cg_step_products(const gim_module *m, const cg_plan *p);

bool cg_is_view(gim_op op);
/* The view root of n (n itself if not a view; a module input counts as a
 * root) and the float offset of n in it. */
const gim_node *cg_plan_root(const cg_plan *p, const gim_node *n, int64_t *offset);
/* Whether export i is computed straight into its output slot (itself, or the
 * value it is a whole view of): no copy at the end of the forward pass. */
bool cg_export_in_place(const cg_plan *p, int i);

/* One LLVM module holding the step and forward functions of graph modules. */
typedef struct cg_module_fns {
    char step_name[32], forward_name[32];
    cg_plan plan;
    int64_t scratch_floats;   /* most scratch any node of the module uses (in the plan) */
} cg_module_fns;

/* Emits gim_m<N>_step and gim_m<N>_forward for graph module m into mod
 * (the plan is made here). which: bit 0 step, bit 1 forward. Runs the
 * verifier on the functions; returns 0 or -1 after reporting. */
int cg_emit_module(gim_diag *d, const gim_graph *g, const gim_module *m, const gim_cg_options *o,
                   LLVMModuleRef mod, gim_arena *arena, int which, cg_module_fns *out);

/* The same, cut into nparts LLVM modules so that several threads can
 * optimise and compile one graph module: the node functions are dealt out
 * to the parts by an estimate of their code size, get external names
 * (gim.m<N>.<id>.<node>), and are declared where they are called; part 0
 * also holds the step and forward functions. Every part must be emitted and
 * linked together. cg_emit_module is part 0 of 1 (internal names). */
int cg_emit_module_part(gim_diag *d, const gim_graph *g, const gim_module *m, const gim_cg_options *o,
                        LLVMModuleRef mod, gim_arena *arena, int which, int part, int nparts, cg_module_fns *out);

/* Node profiling (cg_profile.c): on when GIM_PROFILE is set at compile time. */
bool cg_profile_enabled(void);
int cg_profile_register(const char *label);
uint64_t gim_cg_prof_now(void);
void gim_cg_prof_add(int32_t id, uint64_t ns);

/* Ops whose generators are claimed by two families (printed to out);
 * returns their count. */
int cg_ops_check(FILE *out);

/* The slot table of the whole model, shared by gim_jit and the harness:
 * model inputs (graph->inputs) first, then each module's exports. */
int cg_slot_of(const gim_graph *g, const cg_plan *plans, const gim_node *n);

/* Host target machine for opt_level (0..3); NULL after reporting. Sets the
 * module's triple and data layout when mod is given. */
#include <llvm-c/TargetMachine.h>
LLVMTargetMachineRef cg_host_target(gim_diag *d, int opt_level);
void cg_set_target(LLVMModuleRef mod, LLVMTargetMachineRef tm);
/* Runs the new pass manager's default<On> pipeline; 0 or -1 after reporting. */
int cg_optimize(gim_diag *d, LLVMModuleRef mod, LLVMTargetMachineRef tm, int opt_level);

#endif
