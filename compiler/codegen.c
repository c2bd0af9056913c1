/* LLVM IR for one module: gim_m<N>_step and gim_m<N>_forward.
 *
 * Each computing node becomes an internal function of its own,
 *
 *     void @"<node name>"(ptr %call, ptr noalias %out, ptr noalias %in0, ..., ptr noalias %scratch)
 *
 * whose body its op's generator (cg_ops.c) emits. Pointer arguments are
 * noalias — the planner never lets a node's output share memory with its
 * inputs or scratch, and inputs are only read — so the loop vectoriser needs
 * no run-time overlap checks. The step and forward functions are then flat
 * sequences of calls with the planned buffers (see plan.c):
 *
 *   step:    forward nodes; loss; export copies; backward nodes; gradients
 *            to call->grads; unless GIM_CALL_NO_UPDATE, the optimizer; return loss
 *            (an InfoNCE loss from its backward node: loss_in_backward)
 *   forward: the forward nodes the exports need; export copies
 *
 * Value names carry the source names, block names the ops, so `gimc ir`
 * reads like the model. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <llvm-c/Analysis.h>

#include "codegen.h"

_Static_assert(offsetof(gim_call, outputs) == 48 && offsetof(gim_call, step) == 56 &&
               offsetof(gim_call, seed) == 64 && offsetof(gim_call, lr) == 72 &&
               offsetof(gim_call, flags) == 76 && sizeof(gim_call) == 80,
               "gim_call layout differs from the one codegen emits");

/* Field numbers of gim_call in the LLVM struct type. */
enum { F_INPUTS, F_LABELS, F_PARAMS, F_GRADS, F_OPT, F_WORK, F_OUTPUTS, F_STEP, F_SEED, F_LR, F_FLAGS };

typedef struct emitter {
    cg_ctx c;
    cg_plan *plan;
    const gim_cg_options *o;
    gim_arena *arena;
    LLVMTypeRef call_t;
    LLVMValueRef *node_fn;   /* per node id: its function, made on first call */
    LLVMValueRef *ptr;       /* per node id: its buffer in the current top-level function */
    LLVMValueRef base[F_FLAGS + 1];   /* call fields loaded at entry of the current top-level function */
    int mi;                  /* module number, 1-based */
    int part, nparts;        /* this LLVM module's part of the graph module (cg_emit_module_part) */
    int *node_part;          /* per node id: the part that defines its function */
} emitter;

static const char *node_label(emitter *e, const gim_node *n) {
    if (n->name && !n->is_backward) return n->name;
    if (n->name) return gim_arena_printf(e->arena, "%s:%s", n->name, gim_op_name(n->op));
    return gim_arena_printf(e->arena, "%s.%d", gim_op_name(n->op), n->id);
}

static LLVMValueRef call_field(emitter *e, LLVMValueRef call, int field, LLVMTypeRef ty, const char *name) {
    cg_ctx *c = &e->c;
    LLVMValueRef p = LLVMBuildStructGEP2(c->b, e->call_t, call, (unsigned)field, "");
    LLVMValueRef v = LLVMBuildLoad2(c->b, ty, p, name);
    LLVMSetAlignment(v, field == F_LR || field == F_FLAGS ? 4 : 8);
    return v;
}

static void add_attr(cg_ctx *c, LLVMValueRef fn, unsigned idx, const char *name) {
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(c->ctx, kind, 0));
}

/* Loads step, seed, lr and labels from the call into the context. */
static void load_call_scalars(emitter *e, LLVMValueRef call) {
    cg_ctx *c = &e->c;
    c->call = call;
    c->step = call_field(e, call, F_STEP, c->i64, "step");
    c->seed = call_field(e, call, F_SEED, c->i64, "seed");
    c->lr = call_field(e, call, F_LR, c->f32, "lr");
    c->labels = call_field(e, call, F_LABELS, c->ptr, "labels");
}

/* Nodes whose calls emit_node_call makes (the others have no function). */
static bool has_function(const gim_node *n) {
    return !cg_is_view(n->op) && n->op != GIM_OP_INPUT && n->op != GIM_OP_LABELS && n->op != GIM_OP_PARAM;
}

/* ---- a node's function ---- */

static LLVMValueRef node_function(emitter *e, const gim_node *n) {
    if (e->node_fn[n->id]) return e->node_fn[n->id];
    cg_ctx *c = &e->c;
    cg_op_fn gen = cg_op_generator(n->op);
    int np = n->n_in + 3;
    LLVMTypeRef pt[GIM_MAX_IN + 3];
    for (int i = 0; i < np; i++) pt[i] = c->ptr;
    LLVMTypeRef fty = LLVMFunctionType(c->void_t, pt, (unsigned)np, 0);
    const char *fname = e->nparts > 1 ? gim_arena_printf(e->arena, "gim.m%d.%d.%s", e->mi, n->id, node_label(e, n))
                                      : node_label(e, n);
    LLVMValueRef fn = LLVMAddFunction(c->mod, fname, fty);
    LLVMSetLinkage(fn, e->nparts > 1 ? LLVMExternalLinkage : LLVMInternalLinkage);
    add_attr(c, fn, LLVMAttributeFunctionIndex, "nounwind");
    add_attr(c, fn, LLVMAttributeFunctionIndex, "noinline");
    for (int i = 1; i < np; i++) {
        add_attr(c, fn, (unsigned)i + 1, "noalias");
        add_attr(c, fn, (unsigned)i + 1, "nocapture");
    }
    e->node_fn[n->id] = fn;
    if (e->nparts > 1 && e->node_part[n->id] != e->part) return fn;   /* defined by another part */

    LLVMValueRef saved_fn = c->fn;
    LLVMBasicBlockRef saved_bb = LLVMGetInsertBlock(c->b);
    c->fn = fn;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, gim_op_name(n->op)));
    LLVMValueRef call = LLVMGetParam(fn, 0);
    LLVMSetValueName2(call, "call", 4);
    LLVMValueRef saved_scalars[4] = {c->call, c->step, c->seed, c->lr};
    LLVMValueRef saved_labels = c->labels;
    load_call_scalars(e, call);

    LLVMValueRef out = LLVMGetParam(fn, 1);
    const char *on = node_label(e, n);
    LLVMSetValueName2(out, on, strlen(on));
    for (int i = 0; i < n->n_in; i++) {
        LLVMValueRef a = LLVMGetParam(fn, (unsigned)i + 2);
        const char *in = node_label(e, n->in[i]);
        LLVMSetValueName2(a, in, strlen(in));
        c->buf[n->in[i]->id] = a;
    }
    c->buf[n->id] = out;
    LLVMValueRef scr = LLVMGetParam(fn, (unsigned)np - 1);
    LLVMSetValueName2(scr, "scratch", 7);
    c->scratch[n->id] = e->plan->scratch[n->id] >= 0 ? scr : NULL;

    int rc = gen ? gen(c, n) : cg_fail(c, n, "no code generator for op '%s'", gim_op_name(n->op));
    (void)rc;
    LLVMBuildRetVoid(c->b);

    for (int i = 0; i < n->n_in; i++) c->buf[n->in[i]->id] = NULL;
    c->buf[n->id] = NULL;
    c->scratch[n->id] = NULL;
    c->fn = saved_fn;
    c->call = saved_scalars[0];
    c->step = saved_scalars[1];
    c->seed = saved_scalars[2];
    c->lr = saved_scalars[3];
    c->labels = saved_labels;
    if (saved_bb) LLVMPositionBuilderAtEnd(c->b, saved_bb);
    return fn;
}

/* ---- buffers in a top-level function ---- */

static LLVMValueRef gep_floats(emitter *e, LLVMValueRef base, int64_t off, const char *name) {
    cg_ctx *c = &e->c;
    LLVMValueRef idx = cg_i64(c, off);
    return LLVMBuildInBoundsGEP2(c->b, c->f32, base, &idx, 1, name);
}

static LLVMValueRef slot_ptr(emitter *e, int field, int index, const char *name) {
    cg_ctx *c = &e->c;
    LLVMValueRef idx = cg_i64(c, index);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(c->b, c->ptr, e->base[field], &idx, 1, "");
    LLVMValueRef v = LLVMBuildLoad2(c->b, c->ptr, p, name);
    LLVMSetAlignment(v, 8);
    return v;
}

/* n's buffer, computed on first use. Top-level code is straight-line up to
 * the optimizer, so a pointer made at first use dominates every later use. */
static LLVMValueRef node_ptr(emitter *e, const gim_node *n) {
    if (e->ptr[n->id]) return e->ptr[n->id];
    cg_ctx *c = &e->c;
    const cg_plan *p = e->plan;
    const char *name = node_label(e, n);
    LLVMValueRef v = NULL;
    switch (p->where[n->id]) {
    case CG_AT_INPUT:
        v = slot_ptr(e, F_INPUTS, p->index[n->id], name);
        if (n->op == GIM_OP_LABELS) {
            /* Labels come in call->labels when the runtime sets it, else in the slot. */
            LLVMValueRef set = LLVMBuildIsNotNull(c->b, e->base[F_LABELS], "");
            v = LLVMBuildSelect(c->b, set, e->base[F_LABELS], v, name);
        }
        break;
    case CG_AT_PARAM: v = gep_floats(e, e->base[F_PARAMS], p->offset[n->id], name); break;
    case CG_AT_GRAD: v = gep_floats(e, e->base[F_GRADS], p->offset[n->id], name); break;
    case CG_AT_OUTPUT: v = slot_ptr(e, F_OUTPUTS, p->index[n->id], name); break;
    case CG_AT_WORK: v = gep_floats(e, e->base[F_WORK], p->offset[n->id], name); break;
    case CG_AT_VIEW: v = gep_floats(e, node_ptr(e, n->in[0]), p->offset[n->id], name); break;
    case CG_AT_NONE: v = LLVMConstPointerNull(c->ptr); break;
    }
    e->ptr[n->id] = v;
    return v;
}

static LLVMValueRef begin_toplevel(emitter *e, const char *fname, LLVMTypeRef ret) {
    cg_ctx *c = &e->c;
    LLVMTypeRef fty = LLVMFunctionType(ret, &c->ptr, 1, 0);
    LLVMValueRef fn = LLVMAddFunction(c->mod, fname, fty);
    add_attr(c, fn, LLVMAttributeFunctionIndex, "nounwind");
    add_attr(c, fn, 1, "nocapture");
    add_attr(c, fn, 1, "readonly");
    c->fn = fn;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
    LLVMValueRef call = LLVMGetParam(fn, 0);
    LLVMSetValueName2(call, "call", 4);
    static const char *fields[] = {"inputs", "labels.in", "params", "grads", "opt", "work", "outputs"};
    for (int f = F_INPUTS; f <= F_OUTPUTS; f++) e->base[f] = call_field(e, call, f, c->ptr, fields[f]);
    e->base[F_FLAGS] = call_field(e, call, F_FLAGS, c->i32, "flags");
    load_call_scalars(e, call);
    memset(e->ptr, 0, (size_t)c->graph->nodes.len * sizeof *e->ptr);
    return fn;
}

/* GIM_PROFILE: the clock before a timed call (NULL when not profiling), and
 * after it, adding the time to the table's row `label`. */
static LLVMValueRef prof_begin(emitter *e) {
    cg_ctx *c = &e->c;
    return cg_profile_enabled() ? cg_call(c, "gim_cg_prof_now", c->i64, NULL, 0, NULL) : NULL;
}

static void prof_end(emitter *e, LLVMValueRef t0, const char *label) {
    cg_ctx *c = &e->c;
    LLVMValueRef t1 = cg_call(c, "gim_cg_prof_now", c->i64, NULL, 0, NULL);
    int id = cg_profile_register(label);
    LLVMTypeRef t[2] = {c->i32, c->i64};
    LLVMValueRef a[2] = {cg_i32(c, id), LLVMBuildSub(c->b, t1, t0, "")};
    cg_call(c, "gim_cg_prof_add", c->void_t, a, 2, t);
}

/* Calls n's function with its planned buffers. */
static void emit_node_call(emitter *e, const gim_node *n) {
    cg_ctx *c = &e->c;
    if (!has_function(n)) return;
    LLVMValueRef fn = node_function(e, n);
    LLVMValueRef args[GIM_MAX_IN + 3];
    int k = 0;
    args[k++] = c->call;
    args[k++] = node_ptr(e, n);
    for (int i = 0; i < n->n_in; i++) args[k++] = node_ptr(e, n->in[i]);
    int64_t s = e->plan->scratch[n->id];
    args[k++] = s >= 0 ? gep_floats(e, e->base[F_WORK], s, "scratch") : LLVMConstPointerNull(c->ptr);
    LLVMValueRef t0 = prof_begin(e);
    LLVMBuildCall2(c->b, LLVMGlobalGetValueType(fn), fn, args, (unsigned)k, "");
    if (t0) {
        const char *fname = LLVMGetValueName(c->fn);
        prof_end(e, t0, gim_arena_printf(e->arena, "m%d %s%s", e->mi, node_label(e, n),
                                         strstr(fname, "forward") ? " (forward fn)" : ""));
    }
}

/* Exports that were not computed in place are copied into their slots. */
static void emit_export_copies(emitter *e) {
    cg_ctx *c = &e->c;
    const cg_plan *p = e->plan;
    for (int i = 0; i < p->exports.len; i++) {
        const gim_node *x = p->exports.items[i];
        if (cg_export_in_place(p, i)) continue;
        const char *name = gim_arena_printf(e->arena, "out.%s", node_label(e, x));
        LLVMValueRef dst = slot_ptr(e, F_OUTPUTS, i, name);
        cg_copy(c, dst, node_ptr(e, x), cg_i64(c, gim_shape_numel(&x->shape)));
    }
}

/* ---- the optimizer ---- */

/* Parameter counts from which the update runs over the pool, and its blocks.
 * The update is bound by memory (Adam reads 4 and writes 3 floats per
 * parameter): fashion_gim's module 2 (68k parameters) measured 0.046 ms
 * serial and 0.074 ms over the pool on the shared 2-core machine; its module
 * 3 (271k) about the same either way. */
#define OPT_PAR_MIN ((int64_t)1 << 18)
#define OPT_BLOCK ((int64_t)1 << 12)

/* Adam, in a function of its own so its pointers are noalias:
 *   g += wd·p; m = β1 m + (1 − β1) g; v = β2 v + (1 − β2) g²;
 *   p −= lr · (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)
 * computed as p −= a·m / (√(v·b) + ε) with a = lr/(1 − β1^t), b = 1/(1 − β2^t).
 * SGD with momentum μ:  g += wd·p; buf = μ buf + g; p −= lr · buf. */
static LLVMValueRef optimizer_function(emitter *e) {
    cg_ctx *c = &e->c;
    const gim_train_config *cfg = e->o ? e->o->cfg : NULL;
    bool adam = !cfg || cfg->optimizer == GIM_OPT_ADAM;
    double b1 = cfg ? cfg->beta1 : 0.9, b2 = cfg ? cfg->beta2 : 0.999, eps = cfg ? cfg->eps : 1e-8;
    double wd = cfg ? cfg->weight_decay : 0.0, mu = cfg ? cfg->momentum : 0.0;
    int64_t P = e->plan->n_param_floats;

    /* (params, grads, opt, lr, step) */
    LLVMTypeRef pt[5] = {c->ptr, c->ptr, c->ptr, c->f32, c->i64};
    LLVMTypeRef fty = LLVMFunctionType(c->void_t, pt, 5, 0);
    char name[64];
    snprintf(name, sizeof name, "gim_m%d.%s", e->mi, adam ? "adam" : "sgd");
    LLVMValueRef fn = LLVMAddFunction(c->mod, name, fty);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    add_attr(c, fn, LLVMAttributeFunctionIndex, "nounwind");
    add_attr(c, fn, LLVMAttributeFunctionIndex, "noinline");
    for (unsigned i = 1; i <= 3; i++) add_attr(c, fn, i, "noalias");
    static const char *pn[5] = {"params", "grads", "opt", "lr", "t"};
    for (unsigned i = 0; i < 5; i++) LLVMSetValueName2(LLVMGetParam(fn, i), pn[i], strlen(pn[i]));
    LLVMValueRef saved_fn = c->fn;
    LLVMBasicBlockRef saved_bb = LLVMGetInsertBlock(c->b);
    c->fn = fn;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, adam ? "adam" : "sgd"));
    LLVMValueRef params = LLVMGetParam(fn, 0), grads = LLVMGetParam(fn, 1), opt = LLVMGetParam(fn, 2);
    LLVMValueRef lr = LLVMGetParam(fn, 3), t = LLVMGetParam(fn, 4);

    /* The body runs in this function or in parallel parts of it, which take
     * only the values passed to them: no call state of the step function. */
    LLVMValueRef saved_state[5] = {c->call, c->step, c->seed, c->lr, c->labels};
    c->call = c->step = c->seed = c->lr = c->labels = NULL;
    LLVMValueRef v[6] = {params, grads, opt, NULL, NULL, NULL};
    int nv;
    if (adam) {
        /* Bias corrections in double: 1 − β^t. */
        /* t counts from 1; a 0 would divide by 1 − β^0 = 0 */
        LLVMValueRef t1 = LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntEQ, t, cg_i64(c, 0), ""), cg_i64(c, 1), t, "");
        LLVMValueRef td = LLVMBuildUIToFP(c->b, t1, c->f64, "t.f");
        LLVMTypeRef powty;
        unsigned pid = LLVMLookupIntrinsicID("llvm.pow", 8);
        LLVMValueRef powf_ = LLVMGetIntrinsicDeclaration(c->mod, pid, &c->f64, 1);
        powty = LLVMIntrinsicGetType(c->ctx, pid, &c->f64, 1);
        LLVMValueRef a1[2] = {LLVMConstReal(c->f64, b1), td}, a2[2] = {LLVMConstReal(c->f64, b2), td};
        LLVMValueRef one = LLVMConstReal(c->f64, 1.0);
        LLVMValueRef bc1 = LLVMBuildFSub(c->b, one, LLVMBuildCall2(c->b, powty, powf_, a1, 2, ""), "bc1");
        LLVMValueRef bc2 = LLVMBuildFSub(c->b, one, LLVMBuildCall2(c->b, powty, powf_, a2, 2, ""), "bc2");
        LLVMValueRef lrd = LLVMBuildFPExt(c->b, lr, c->f64, "");
        v[3] = LLVMBuildFPTrunc(c->b, LLVMBuildFDiv(c->b, lrd, bc1, ""), c->f32, "step.size");
        v[4] = LLVMBuildFPTrunc(c->b, LLVMBuildFDiv(c->b, one, bc2, ""), c->f32, "inv.bc2");
        v[5] = gep_floats(e, opt, P, "v");
        nv = 6;
    } else {
        v[3] = lr;
        nv = 4;
    }
    /* One loop over the parameters, elements independent: from OPT_PAR_MIN
     * floats over the pool in blocks of OPT_BLOCK (each element computed
     * alone, the same bits on any thread). */
    LLVMValueRef lo = cg_i64(c, 0), hi = cg_i64(c, P);
    cg_par par;
    bool parallel = P >= OPT_PAR_MIN;
    if (parallel) {
        par = cg_par_begin(c, adam ? "adam" : "sgd", v, nv);
        lo = cg_mulk(c, par.begin, OPT_BLOCK);
        hi = cg_mulk(c, par.end, OPT_BLOCK);
        hi = cg_select(c, LLVMBuildICmp(c->b, LLVMIntSLT, hi, cg_i64(c, P), ""), hi, cg_i64(c, P));
    }
    params = v[0], grads = v[1], opt = v[2];
    cg_loop i = cg_for_begin(c, lo, hi, "i");
    LLVMValueRef p = cg_loadf(c, params, i.iv), g = cg_loadf(c, grads, i.iv);
    if (wd != 0) g = LLVMBuildFAdd(c->b, g, LLVMBuildFMul(c->b, p, cg_f32(c, (float)wd), ""), "g");
    if (adam) {
        LLVMValueRef a = v[3], bb = v[4], vbase = v[5];
        LLVMValueRef m = LLVMBuildFAdd(c->b, LLVMBuildFMul(c->b, cg_loadf(c, opt, i.iv), cg_f32(c, (float)b1), ""),
                                       LLVMBuildFMul(c->b, g, cg_f32(c, (float)(1 - b1)), ""), "m");
        LLVMValueRef vv = LLVMBuildFAdd(c->b, LLVMBuildFMul(c->b, cg_loadf(c, vbase, i.iv), cg_f32(c, (float)b2), ""),
                                        LLVMBuildFMul(c->b, LLVMBuildFMul(c->b, g, g, ""), cg_f32(c, (float)(1 - b2)), ""), "v");
        cg_storef(c, opt, i.iv, m);
        cg_storef(c, vbase, i.iv, vv);
        LLVMValueRef den = LLVMBuildFAdd(c->b, cg_sqrt(c, LLVMBuildFMul(c->b, vv, bb, "")), cg_f32(c, (float)eps), "den");
        LLVMValueRef upd = LLVMBuildFDiv(c->b, LLVMBuildFMul(c->b, a, m, ""), den, "upd");
        cg_storef(c, params, i.iv, LLVMBuildFSub(c->b, p, upd, "p"));
    } else {
        LLVMValueRef buf = LLVMBuildFAdd(c->b, LLVMBuildFMul(c->b, cg_loadf(c, opt, i.iv), cg_f32(c, (float)mu), ""),
                                         g, "buf");
        cg_storef(c, opt, i.iv, buf);
        cg_storef(c, params, i.iv, LLVMBuildFSub(c->b, p, LLVMBuildFMul(c->b, v[3], buf, ""), "p"));
    }
    cg_for_end(c, &i);
    if (parallel) cg_par_end(c, &par, (P + OPT_BLOCK - 1) / OPT_BLOCK);
    c->call = saved_state[0], c->step = saved_state[1], c->seed = saved_state[2], c->lr = saved_state[3];
    c->labels = saved_state[4];
    LLVMBuildRetVoid(c->b);
    c->fn = saved_fn;
    LLVMPositionBuilderAtEnd(c->b, saved_bb);
    return fn;
}

/* ---- step and forward ---- */

static bool reads(const gim_node *n, const gim_node *x) {
    for (int j = 0; j < n->n_in; j++)
        if (n->in[j] == x) return true;
    return false;
}

/* The InfoNCE backward node that computes the module's loss as the last float
 * of its packed output (cg_loss.c: the same sums in the same order as the
 * forward loss node, so the same bits), or NULL. Then the step skips the
 * forward loss node, whose products the backward repeats; only when nothing
 * else reads the loss's value and it is no export. */
static const gim_node *loss_in_backward(const gim_module *m, const cg_plan *p) {
    const gim_node *l = m->loss, *found = NULL;
    if (!l || l->op != GIM_OP_INFONCE) return NULL;
    for (int i = 0; i < p->exports.len; i++)
        if (p->exports.items[i] == l) return NULL;
    for (int i = 0; i < m->nodes.len; i++)
        if (reads(m->nodes.items[i], l)) return NULL;
    for (int i = 0; i < m->bwd_nodes.len; i++) {
        const gim_node *b = m->bwd_nodes.items[i];
        if (reads(b, l)) return NULL;
        if (b->op == GIM_OP_INFONCE_BWD && b->n_in == 3 && b->in[0] == l->in[0] && b->in[1] == l->in[1] &&
            b->in[2] == l->in[2] && b->rng_stream == l->rng_stream && gim_attr_i(b, 0) == gim_attr_i(l, 0) &&
            gim_attr_i(b, 1) == gim_attr_i(l, 1))
            found = b;
    }
    return found;
}

double cg_step_products(const gim_module *m, const cg_plan *p) {
    const gim_node *from_bwd = loss_in_backward(m, p);
    double total = 0;
    for (int i = 0; i < m->nodes.len; i++)
        if (!(m->nodes.items[i] == m->loss && from_bwd)) total += cg_node_products(m->nodes.items[i]);
    for (int i = 0; i < m->bwd_nodes.len; i++) total += cg_node_products(m->bwd_nodes.items[i]);
    return total;
}

static void emit_step(emitter *e) {
    cg_ctx *c = &e->c;
    const gim_module *m = c->module;
    const cg_plan *p = e->plan;
    begin_toplevel(e, gim_arena_printf(e->arena, "gim_m%d_step", e->mi), c->f32);
    LLVMValueRef loss = cg_f32(c, 0.0f);
    const gim_node *from_bwd = loss_in_backward(m, p);
    for (int i = 0; i < m->nodes.len; i++) {
        const gim_node *n = m->nodes.items[i];
        if (n == m->loss && from_bwd) continue;
        emit_node_call(e, n);
        if (n == m->loss) {
            LLVMValueRef v = LLVMBuildLoad2(c->b, c->f32, node_ptr(e, n), "loss");
            LLVMSetAlignment(v, 4);
            loss = v;
        }
    }
    emit_export_copies(e);
    for (int i = 0; i < m->bwd_nodes.len; i++) {
        const gim_node *n = m->bwd_nodes.items[i];
        emit_node_call(e, n);
        if (n == from_bwd) {   /* read now: later nodes may reuse its memory */
            LLVMValueRef at = gep_floats(e, node_ptr(e, n), gim_shape_numel(&n->shape) - 1, "loss.at");
            LLVMValueRef v = LLVMBuildLoad2(c->b, c->f32, at, "loss");
            LLVMSetAlignment(v, 4);
            loss = v;
        }
    }

    /* Gradients into call->grads (zero for a parameter the loss does not reach). */
    for (int i = 0; i < m->params.len; i++) {
        const gim_node *pa = m->params.items[i];
        const gim_node *gr = i < m->grads.len ? m->grads.items[i] : NULL;
        LLVMValueRef n = cg_i64(c, gim_shape_numel(&pa->shape));
        if (gr && p->where[gr->id] == CG_AT_GRAD && p->offset[gr->id] == p->param_offset[i]) continue;
        const char *name = gim_arena_printf(e->arena, "grad.%s", node_label(e, pa));
        LLVMValueRef dst = gep_floats(e, e->base[F_GRADS], p->param_offset[i], name);
        if (gr) cg_copy(c, dst, node_ptr(e, gr), n);
        else cg_zero(c, dst, n);
    }

    if (p->n_param_floats > 0) {
        LLVMValueRef no_update = LLVMBuildAnd(c->b, e->base[F_FLAGS], cg_i32(c, GIM_CALL_NO_UPDATE), "");
        cg_if u = cg_if_begin(c, LLVMBuildICmp(c->b, LLVMIntEQ, no_update, cg_i32(c, 0), "update"), "update");
        LLVMValueRef fn = optimizer_function(e);
        LLVMValueRef args[5] = {e->base[F_PARAMS], e->base[F_GRADS], e->base[F_OPT], c->lr, c->step};
        LLVMValueRef t0 = prof_begin(e);
        LLVMBuildCall2(c->b, LLVMGlobalGetValueType(fn), fn, args, 5, "");
        /* (named gim_m<N>.adam or .sgd) */
        if (t0)
            prof_end(e, t0, gim_arena_printf(e->arena, "m%d optimizer (%s)", e->mi, strrchr(LLVMGetValueName(fn), '.') + 1));
        cg_if_end(c, &u);
    }
    LLVMBuildRet(c->b, loss);
}

static void emit_forward(emitter *e) {
    cg_ctx *c = &e->c;
    const gim_module *m = c->module;
    const cg_plan *p = e->plan;
    /* The nodes the exports need, by a reverse walk of the topological order. */
    bool *need = gim_arena_alloc(e->arena, (size_t)c->graph->nodes.len);
    for (int i = 0; i < p->exports.len; i++) need[((gim_node *)p->exports.items[i])->id] = true;
    for (int i = m->nodes.len - 1; i >= 0; i--) {
        const gim_node *n = m->nodes.items[i];
        if (!need[n->id]) continue;
        for (int j = 0; j < n->n_in; j++) need[n->in[j]->id] = true;
    }
    begin_toplevel(e, gim_arena_printf(e->arena, "gim_m%d_forward", e->mi), c->void_t);
    for (int i = 0; i < m->nodes.len; i++) {
        const gim_node *n = m->nodes.items[i];
        if (need[n->id]) emit_node_call(e, n);
    }
    emit_export_copies(e);
    LLVMBuildRetVoid(c->b);
}

/* A rough measure of the code a node's generator emits, for dealing the
 * functions out to parts: convolutions and losses are loop nests of several
 * stages, the rest a loop or two. */
static int code_weight(const gim_node *n) {
    switch (n->op) {
    case GIM_OP_CONV2D: case GIM_OP_CONV2D_BWD_DATA: case GIM_OP_CONV2D_BWD_WEIGHT:
    case GIM_OP_CONV1D: case GIM_OP_CONV1D_BWD_DATA: case GIM_OP_CONV1D_BWD_WEIGHT:
        return 8;
    case GIM_OP_INFONCE: case GIM_OP_INFONCE_BWD: case GIM_OP_GRU: case GIM_OP_GRU_BWD:
        return 6;
    default:
        return 1;
    }
}

/* Deals m's node functions out to nparts parts, each to the lightest so far;
 * part 0 starts with the top-level functions' share. */
static int *deal_parts(const gim_graph *g, const gim_module *m, int nparts, gim_arena *arena) {
    int *part = gim_arena_alloc(arena, (size_t)g->nodes.len * sizeof *part);
    int64_t load[16] = {4};
    for (int pass = 0; pass < 2; pass++) {
        const gim_ptrvec *v = pass ? &m->bwd_nodes : &m->nodes;
        for (int i = 0; i < v->len; i++) {
            const gim_node *n = v->items[i];
            if (!has_function(n)) continue;
            int best = 0;
            for (int k = 1; k < nparts; k++)
                if (load[k] < load[best]) best = k;
            part[n->id] = best;
            load[best] += code_weight(n);
        }
    }
    return part;
}

int cg_emit_module(gim_diag *d, const gim_graph *g, const gim_module *m, const gim_cg_options *o,
                   LLVMModuleRef mod, gim_arena *arena, int which, cg_module_fns *out) {
    return cg_emit_module_part(d, g, m, o, mod, arena, which, 0, 1, out);
}

int cg_emit_module_part(gim_diag *d, const gim_graph *g, const gim_module *m, const gim_cg_options *o,
                        LLVMModuleRef mod, gim_arena *arena, int which, int part, int nparts, cg_module_fns *out) {
    memset(out, 0, sizeof *out);
    if (nparts < 1 || nparts > 16 || part < 0 || part >= nparts) {
        gim_error(d, (gim_loc){0}, "internal: part %d of %d", part, nparts);
        return -1;
    }
    if (cg_plan_module(d, g, m, arena, &out->plan) != 0) return -1;
    emitter e = {0};
    cg_ctx *c = &e.c;
    e.plan = &out->plan;
    e.o = o;
    e.arena = arena;
    e.mi = m->index + 1;
    e.part = part;
    e.nparts = nparts;
    if (nparts > 1) e.node_part = deal_parts(g, m, nparts, arena);
    c->ctx = LLVMGetModuleContext(mod);
    c->mod = mod;
    c->b = LLVMCreateBuilderInContext(c->ctx);
    c->f32 = LLVMFloatTypeInContext(c->ctx);
    c->f64 = LLVMDoubleTypeInContext(c->ctx);
    c->i1 = LLVMInt1TypeInContext(c->ctx);
    c->i32 = LLVMInt32TypeInContext(c->ctx);
    c->i64 = LLVMInt64TypeInContext(c->ctx);
    c->ptr = LLVMPointerTypeInContext(c->ctx, 0);
    c->void_t = LLVMVoidTypeInContext(c->ctx);
    c->graph = g;
    c->module = m;
    c->diag = d;
    int nn = g->nodes.len;
    c->buf = gim_arena_alloc(arena, (size_t)nn * sizeof *c->buf);
    c->scratch = gim_arena_alloc(arena, (size_t)nn * sizeof *c->scratch);
    e.node_fn = gim_arena_alloc(arena, (size_t)nn * sizeof *e.node_fn);
    e.ptr = gim_arena_alloc(arena, (size_t)nn * sizeof *e.ptr);
    LLVMTypeRef fields[] = {c->ptr, c->ptr, c->ptr, c->ptr, c->ptr, c->ptr, c->ptr, c->i64, c->i64, c->f32, c->i32};
    e.call_t = LLVMStructTypeInContext(c->ctx, fields, 11, 0);

    snprintf(out->step_name, sizeof out->step_name, "gim_m%d_step", e.mi);
    snprintf(out->forward_name, sizeof out->forward_name, "gim_m%d_forward", e.mi);
    if (part == 0) {
        if (which & 1) emit_step(&e);
        if (which & 2) emit_forward(&e);
    } else {
        for (int pass = 0; pass < 2; pass++) {
            const gim_ptrvec *v = pass ? &m->bwd_nodes : &m->nodes;
            for (int i = 0; i < v->len; i++) {
                const gim_node *n = v->items[i];
                if (has_function(n) && e.node_part[n->id] == part) node_function(&e, n);
            }
        }
    }
    LLVMDisposeBuilder(c->b);
    if (c->errors) return -1;

    char *msg = NULL;
    if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
        gim_error(d, (gim_loc){0}, "internal: the code generated for module %d does not verify:\n%s", e.mi,
                  msg ? msg : "");
        LLVMDisposeMessage(msg);
        return -1;
    }
    LLVMDisposeMessage(msg);
    return 0;
}
