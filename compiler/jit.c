/* Native code: optimise the generated LLVM module for the host CPU and run
 * it through ORC LLJIT (gim_jit), or print it (gim_emit_ir).
 *
 * The optimiser gets a TargetMachine made from the host CPU name and
 * features, so the vectorisers know the hardware (AVX-512 on znver4); the
 * JIT compiles with the same machine. Runtime symbols are registered as
 * absolute symbols (gim_rt_symbols), so resolution depends neither on the
 * executable exporting them nor on the linker keeping OpenBLAS; a process
 * search generator finds anything else. */
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "codegen.h"

static void init_llvm(void) {
    static int done;
    if (done) return;
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    LLVMInitializeNativeAsmParser();
    done = 1;
}

/* The host machine at opt_level; NULL with *err (heap) on failure. Safe to
 * call from several threads at once. */
static LLVMTargetMachineRef host_target(int opt_level, char **err) {
    char *triple = LLVMGetDefaultTargetTriple();
    LLVMTargetRef target;
    *err = NULL;
    char *msg = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        *err = gim_xstrdup(msg ? msg : "no target");
        LLVMDisposeMessage(msg);
        LLVMDisposeMessage(triple);
        return NULL;
    }
    char *cpu = LLVMGetHostCPUName(), *feat = LLVMGetHostCPUFeatures();
    LLVMCodeGenOptLevel lvl = opt_level <= 0 ? LLVMCodeGenLevelNone
                              : opt_level == 1 ? LLVMCodeGenLevelLess
                              : opt_level == 2 ? LLVMCodeGenLevelDefault : LLVMCodeGenLevelAggressive;
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, feat, lvl, LLVMRelocPIC,
                                                      LLVMCodeModelJITDefault);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(feat);
    LLVMDisposeMessage(triple);
    if (!tm) *err = gim_xstrdup("cannot create a target machine for the host");
    return tm;
}

LLVMTargetMachineRef cg_host_target(gim_diag *d, int opt_level) {
    init_llvm();
    char *err;
    LLVMTargetMachineRef tm = host_target(opt_level, &err);
    if (!tm) {
        gim_error(d, (gim_loc){0}, "LLVM: %s", err);
        gim_free(err);
    }
    return tm;
}

void cg_set_target(LLVMModuleRef mod, LLVMTargetMachineRef tm) {
    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(mod, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(mod, td);
    LLVMDisposeTargetData(td);
    /* Per-function CPU attributes: what the backend and TTI read. */
    char *cpu = LLVMGetTargetMachineCPU(tm), *feat = LLVMGetTargetMachineFeatureString(tm);
    LLVMContextRef ctx = LLVMGetModuleContext(mod);
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
        if (LLVMIsDeclaration(f)) continue;
        LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                                LLVMCreateStringAttribute(ctx, "target-cpu", 10, cpu, (unsigned)strlen(cpu)));
        LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                                LLVMCreateStringAttribute(ctx, "target-features", 15, feat, (unsigned)strlen(feat)));
    }
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(feat);
}

/* The default<On> pipeline; NULL or an error message (heap). */
static char *optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, int opt_level) {
    if (opt_level <= 0) return NULL;
    if (opt_level > 3) opt_level = 3;
    char pipeline[32];
    snprintf(pipeline, sizeof pipeline, "default<O%d>", opt_level);
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
    LLVMPassBuilderOptionsSetLoopUnrolling(po, 0);
    LLVMErrorRef err = LLVMRunPasses(mod, pipeline, tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (!err) return NULL;
    char *msg = LLVMGetErrorMessage(err);
    char *r = gim_xstrdup(msg);
    LLVMDisposeErrorMessage(msg);
    return r;
}

int cg_optimize(gim_diag *d, LLVMModuleRef mod, LLVMTargetMachineRef tm, int opt_level) {
    char *err = optimize(mod, tm, opt_level);
    if (!err) return 0;
    gim_error(d, (gim_loc){0}, "internal: LLVM optimisation failed: %s", err);
    gim_free(err);
    return -1;
}

/* ---- gim_jit ---- */

typedef struct jit_owner {
    LLVMOrcLLJITRef jit;
    gim_arena *arena;
} jit_owner;

static void release_model(gim_exec_model *m) {
    jit_owner *o = m->owner;
    if (!o) return;
    if (o->jit) LLVMOrcDisposeLLJIT(o->jit);
    gim_arena *a = o->arena;
    gim_free(o);
    gim_arena_free(a);   /* m itself lives in the arena */
}

static int report_error(gim_diag *d, LLVMErrorRef err, const char *what) {
    char *msg = LLVMGetErrorMessage(err);
    gim_error(d, (gim_loc){0}, "JIT: %s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return -1;
}

/* Absolute symbols: the runtime's table plus the libm function the
 * optimizer code calls (pow for Adam's bias corrections). */
static int define_runtime_symbols(gim_diag *d, LLVMOrcLLJITRef jit) {
    const char *const *names;
    void *const *addrs;
    int n = gim_rt_symbols(&names, &addrs);
    LLVMOrcCSymbolMapPair *pairs = gim_xmalloc((size_t)(n + 4) * sizeof *pairs);
    int k = 0;
    bool have_pow = false;
    for (int i = 0; i < n; i++) {
        if (!strcmp(names[i], "pow")) have_pow = true;
        pairs[k].Name = LLVMOrcLLJITMangleAndIntern(jit, names[i]);
        pairs[k].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)addrs[i];
        pairs[k].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[k].Sym.Flags.TargetFlags = 0;
        k++;
    }
    if (!have_pow) {
        double (*powp)(double, double) = pow;
        pairs[k].Name = LLVMOrcLLJITMangleAndIntern(jit, "pow");
        pairs[k].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)powp;
        pairs[k].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[k].Sym.Flags.TargetFlags = 0;
        k++;
    }
    const char *prof_names[2] = {"gim_cg_prof_now", "gim_cg_prof_add"};
    void *prof_addrs[2] = {(void *)gim_cg_prof_now, (void *)gim_cg_prof_add};
    for (int i = 0; i < 2; i++, k++) {
        pairs[k].Name = LLVMOrcLLJITMangleAndIntern(jit, prof_names[i]);
        pairs[k].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)prof_addrs[i];
        pairs[k].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[k].Sym.Flags.TargetFlags = 0;
    }
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(jit);
    LLVMErrorRef err = LLVMOrcJITDylibDefine(jd, LLVMOrcAbsoluteSymbols(pairs, (size_t)k));
    gim_free(pairs);
    if (err) return report_error(d, err, "registering runtime symbols");
    LLVMOrcDefinitionGeneratorRef gen;
    err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
    if (err) return report_error(d, err, "process symbol search");
    LLVMOrcJITDylibAddGenerator(jd, gen);
    return 0;
}

static void fill_shape(int *rank, int64_t *shape, const gim_node *n) {
    *rank = n->shape.rank;
    for (int i = 0; i < n->shape.rank && i < GIM_RT_MAX_RANK; i++) shape[i] = n->shape.d[i];
}

static const char *node_name(gim_arena *a, const gim_node *n) {
    if (n->name) return gim_arena_strdup(a, n->name);
    return gim_arena_printf(a, "%s.%d", gim_op_name(n->op), n->id);
}

int cg_slot_of(const gim_graph *g, const cg_plan *plans, const gim_node *n) {
    for (int i = 0; i < g->inputs.len; i++)
        if (g->inputs.items[i] == n) return i;
    int s = g->inputs.len;
    for (int m = 0; m < g->n_modules; m++)
        for (int i = 0; i < plans[m].exports.len; i++, s++)
            if (plans[m].exports.items[i] == n) return s;
    return -1;
}

/* The runtime's view of the compiled model: slots, parameters, sizes. */
static gim_exec_model *describe(gim_diag *d, const gim_graph *g, const gim_cg_options *o, gim_arena *a,
                                cg_module_fns *fns) {
    gim_exec_model *em = gim_arena_alloc(a, sizeof *em);
    em->name = gim_arena_strdup(a, g->model_name ? g->model_name : "model");
    em->batch = g->batch;
    em->n_modules = g->n_modules;
    em->modules = gim_arena_alloc(a, (size_t)(g->n_modules + 1) * sizeof *em->modules);
    cg_plan *plans = gim_arena_alloc(a, (size_t)(g->n_modules + 1) * sizeof *plans);
    int n_slots = g->inputs.len;
    for (int m = 0; m < g->n_modules; m++) {
        plans[m] = fns[m].plan;
        n_slots += plans[m].exports.len;
    }
    em->n_slots = n_slots;
    em->slots = gim_arena_alloc(a, (size_t)(n_slots + 1) * sizeof *em->slots);
    int s = 0;
    for (int i = 0; i < g->inputs.len; i++, s++) {
        const gim_node *n = g->inputs.items[i];
        gim_slot_info *si = &em->slots[s];
        si->name = node_name(a, n);
        fill_shape(&si->rank, si->shape, n);
        si->numel = gim_shape_numel(&n->shape);
        si->is_labels = n->op == GIM_OP_LABELS || n->is_int;
        si->producer = -1;
    }
    for (int m = 0; m < g->n_modules; m++)
        for (int i = 0; i < plans[m].exports.len; i++, s++) {
            const gim_node *n = plans[m].exports.items[i];
            gim_slot_info *si = &em->slots[s];
            si->name = node_name(a, n);
            fill_shape(&si->rank, si->shape, n);
            si->numel = gim_shape_numel(&n->shape);
            si->is_labels = n->is_int;
            si->producer = m;
        }
    em->output_slot = g->output ? cg_slot_of(g, plans, g->output) : -1;

    bool adam = !o || !o->cfg || o->cfg->optimizer == GIM_OPT_ADAM;
    for (int mi = 0; mi < g->n_modules; mi++) {
        const gim_module *m = &g->modules[mi];
        const cg_plan *p = &plans[mi];
        gim_exec_module *xm = &em->modules[mi];
        xm->index = mi;
        xm->name = gim_arena_printf(a, "module %d", mi + 1);
        xm->n_params = m->params.len;
        xm->params = gim_arena_alloc(a, (size_t)(m->params.len + 1) * sizeof *xm->params);
        for (int i = 0; i < m->params.len; i++) {
            const gim_node *n = m->params.items[i];
            gim_param_info *pi = &xm->params[i];
            pi->name = node_name(a, n);
            fill_shape(&pi->rank, pi->shape, n);
            pi->offset = p->param_offset[i];
            pi->numel = gim_shape_numel(&n->shape);
            pi->init_bound = (float)n->attr[0];
        }
        xm->n_param_floats = p->n_param_floats;
        xm->n_opt_floats = adam ? 2 * p->n_param_floats : p->n_param_floats;
        xm->n_work_floats = p->work_floats;
        xm->n_act_floats = p->act_floats;
        xm->n_inputs = m->inputs.len;
        xm->inputs = gim_arena_alloc(a, (size_t)(m->inputs.len + 1) * sizeof *xm->inputs);
        for (int i = 0; i < m->inputs.len; i++) {
            xm->inputs[i] = cg_slot_of(g, plans, m->inputs.items[i]);
            if (xm->inputs[i] < 0) {
                const gim_node *n = m->inputs.items[i];
                gim_error(d, n->loc, "internal: module %d reads %s, which no earlier module exports", mi + 1,
                          node_name(a, n));
                return NULL;
            }
        }
        xm->n_exports = p->exports.len;
        xm->exports = gim_arena_alloc(a, (size_t)(p->exports.len + 1) * sizeof *xm->exports);
        for (int i = 0; i < p->exports.len; i++) xm->exports[i] = cg_slot_of(g, plans, p->exports.items[i]);
        xm->feature_slot = p->feature >= 0 ? xm->exports[p->feature] : -1;
        xm->has_loss = m->loss != NULL;
        xm->loss_kind = m->loss ? gim_op_name(m->loss->op) : NULL;
        gim_cost cost = gim_module_cost(g, m);
        xm->fwd_flops = cost.fwd_flops;
        xm->step_flops = cost.step_flops;
        xm->step_products = cg_step_products(m, p);
    }
    return em;
}

/* One graph module's compilation to an object file, run on a worker thread:
 * its own LLVM context and target machine, nothing shared. */
typedef struct cg_job {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    int opt_level;
    LLVMMemoryBufferRef obj;   /* the result */
    char *err;                 /* or an error (heap) */
} cg_job;

typedef struct cg_queue {
    cg_job *jobs;
    int n, next;
} cg_queue;

static void run_job(cg_job *j) {
    LLVMTargetMachineRef tm = host_target(j->opt_level, &j->err);
    if (!tm) return;
    cg_set_target(j->mod, tm);
    if (!(j->err = optimize(j->mod, tm, j->opt_level))) {
        char *msg = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(tm, j->mod, LLVMObjectFile, &msg, &j->obj)) {
            j->err = gim_xstrdup(msg ? msg : "cannot emit object code");
            j->obj = NULL;
        }
        LLVMDisposeMessage(msg);
    }
    LLVMDisposeTargetMachine(tm);
}

static void *worker(void *arg) {
    cg_queue *q = arg;
    for (;;) {
        int i = __atomic_fetch_add(&q->next, 1, __ATOMIC_RELAXED);
        if (i >= q->n) return NULL;
        run_job(&q->jobs[i]);
    }
}

/* Runs the jobs on up to one thread per core (the caller's thread included). */
static void run_jobs(cg_job *jobs, int n) {
    cg_queue q = {jobs, n, 0};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = (int)(cores < 1 ? 1 : cores > 16 ? 16 : cores);
    if (nt > n) nt = n;
    pthread_t th[16];
    int started = 0;
    for (int i = 1; i < nt; i++)
        if (pthread_create(&th[started], NULL, worker, &q) == 0) started++;
    worker(&q);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
}

/* LLVM modules per graph module: its node functions dealt out to this many,
 * so that the compile jobs balance over the cores (three graph modules made
 * three jobs: on two cores the last one compiled alone). */
#define JIT_PARTS 2

/* gim_jit: generate every module's IR (JIT_PARTS LLVM modules each),
 * optimise and compile them to object code in parallel, link the objects in
 * an LLJIT with the runtime's symbols, and describe the result for the
 * runtime. */
gim_exec_model *gim_jit(gim_diag *d, const gim_graph *g, const gim_cg_options *o) {
    int opt = o ? o->opt_level : 2;
    init_llvm();
    gim_arena *a = gim_arena_new();
    int nm = g->n_modules;
    cg_module_fns *fns = gim_arena_alloc(a, (size_t)(nm + 1) * sizeof *fns);
    int nj = nm * JIT_PARTS;
    cg_job *jobs = gim_arena_alloc(a, (size_t)(nj + 1) * sizeof *jobs);
    LLVMOrcLLJITRef jit = NULL;
    gim_exec_model *em = NULL;
    int failed = 0;

    for (int j = 0; j < nj && !failed; j++) {
        int m = j / JIT_PARTS, part = j % JIT_PARTS;
        jobs[j].ctx = LLVMContextCreate();
        char name[64];
        snprintf(name, sizeof name, "%s.m%d.%d", g->model_name ? g->model_name : "model", m + 1, part);
        jobs[j].mod = LLVMModuleCreateWithNameInContext(name, jobs[j].ctx);
        jobs[j].opt_level = opt;
        cg_module_fns scratch_fns, *f = part == 0 ? &fns[m] : &scratch_fns;
        if (cg_emit_module_part(d, g, &g->modules[m], o, jobs[j].mod, a, 3, part, JIT_PARTS, f) != 0) failed = 1;
    }
    if (!failed) run_jobs(jobs, nj);
    for (int j = 0; j < nj; j++) {
        if (jobs[j].err) {
            if (!failed) gim_error(d, (gim_loc){0}, "LLVM: module %d: %s", j / JIT_PARTS + 1, jobs[j].err);
            failed = 1;
            gim_free(jobs[j].err);
        }
        if (jobs[j].mod) LLVMDisposeModule(jobs[j].mod);
        if (jobs[j].ctx) LLVMContextDispose(jobs[j].ctx);
    }
    if (failed) goto fail;

    /* The JIT links the objects; it compiles nothing itself. */
    LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
    LLVMTargetMachineRef jtm = cg_host_target(d, opt);
    if (!jtm) {
        LLVMOrcDisposeLLJITBuilder(jb);
        goto fail;
    }
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jtm));
    LLVMErrorRef err = LLVMOrcCreateLLJIT(&jit, jb);
    if (err) {
        jit = NULL;
        report_error(d, err, "creating the JIT");
        goto fail;
    }
    if (define_runtime_symbols(d, jit) != 0) goto fail;
    for (int j = 0; j < nj; j++) {
        err = LLVMOrcLLJITAddObjectFile(jit, LLVMOrcLLJITGetMainJITDylib(jit), jobs[j].obj);
        jobs[j].obj = NULL;   /* owned by the JIT now */
        if (err) {
            report_error(d, err, "adding module code");
            goto fail;
        }
    }

    if (!(em = describe(d, g, o, a, fns))) goto fail;
    for (int m = 0; m < nm; m++) {
        LLVMOrcExecutorAddress addr;
        if ((err = LLVMOrcLLJITLookup(jit, &addr, fns[m].step_name))) {
            report_error(d, err, "looking up the step function");
            goto fail;
        }
        em->modules[m].step = (gim_step_fn)(uintptr_t)addr;
        if ((err = LLVMOrcLLJITLookup(jit, &addr, fns[m].forward_name))) {
            report_error(d, err, "looking up the forward function");
            goto fail;
        }
        em->modules[m].forward = (gim_forward_fn)(uintptr_t)addr;
    }
    jit_owner *ow = gim_xmalloc(sizeof *ow);
    ow->jit = jit;
    ow->arena = a;
    em->owner = ow;
    em->release = release_model;
    /* Compilation freed most of what LLVM allocated; hand those pages back
     * before training allocates its buffers, so they do not count twice in
     * the process's peak memory. */
    malloc_trim(0);
    return em;

fail:
    for (int j = 0; j < nj; j++)
        if (jobs[j].obj) LLVMDisposeMemoryBuffer(jobs[j].obj);
    if (jit) LLVMOrcDisposeLLJIT(jit);
    gim_arena_free(a);
    return NULL;
}

/* ---- gim_describe ---- */

gim_exec_model *gim_describe(gim_diag *d, const gim_graph *g, const gim_cg_options *o) {
    gim_arena *a = gim_arena_new();
    cg_module_fns *fns = gim_arena_alloc(a, (size_t)(g->n_modules + 1) * sizeof *fns);
    gim_exec_model *em = NULL;
    for (int m = 0; m < g->n_modules; m++)
        if (cg_plan_module(d, g, &g->modules[m], a, &fns[m].plan) != 0) goto fail;
    if (!(em = describe(d, g, o, a, fns))) goto fail;
    jit_owner *ow = gim_xmalloc(sizeof *ow);
    ow->jit = NULL;
    ow->arena = a;
    em->owner = ow;
    em->release = release_model;
    return em;
fail:
    gim_arena_free(a);
    return NULL;
}

/* ---- gim_emit_ir ---- */

int gim_emit_ir(gim_diag *d, const gim_graph *g, const gim_cg_options *o, int module, const char *fn,
                gim_ir_what what, FILE *out) {
    int opt = o ? o->opt_level : 2;
    int which = !fn ? 3 : !strcmp(fn, "step") ? 1 : !strcmp(fn, "forward") ? 2 : 0;
    if (!which) {
        gim_error(d, (gim_loc){0}, "unknown function '%s' (expected forward or step)", fn);
        return -1;
    }
    if (module >= g->n_modules || module < -1) {
        gim_error(d, (gim_loc){0}, "module %d does not exist (the model has %d)", module + 1, g->n_modules);
        return -1;
    }
    gim_arena *a = gim_arena_new();
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(g->model_name ? g->model_name : "model", ctx);
    LLVMTargetMachineRef tm = NULL;
    int rc = -1;
    cg_module_fns *fns = gim_arena_alloc(a, (size_t)(g->n_modules + 1) * sizeof *fns);
    for (int m = 0; m < g->n_modules; m++)
        if ((module < 0 || m == module) && cg_emit_module(d, g, &g->modules[m], o, mod, a, which, &fns[m]) != 0)
            goto done;
    if (!(tm = cg_host_target(d, opt))) goto done;
    cg_set_target(mod, tm);
    if (cg_optimize(d, mod, tm, opt) != 0) goto done;
    if (what == GIM_IR_LLVM) {
        /* The memory plan, as comments llvm-as skips. */
        for (int m = 0; m < g->n_modules; m++) {
            if (module >= 0 && m != module) continue;
            const cg_plan *p = &fns[m].plan;
            fprintf(out, "; module %d: work arena %lld floats (%.1f MB), of which activations kept for backward "
                         "%lld floats (%.1f MB); parameters %lld floats\n",
                    m + 1, (long long)p->work_floats, (double)p->work_floats * 4e-6, (long long)p->act_floats,
                    (double)p->act_floats * 4e-6, (long long)p->n_param_floats);
        }
        char *s = LLVMPrintModuleToString(mod);
        fputs(s, out);
        LLVMDisposeMessage(s);
    } else {
        LLVMMemoryBufferRef buf = NULL;
        char *err = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, what == GIM_IR_ASM ? LLVMAssemblyFile : LLVMObjectFile,
                                                &err, &buf)) {
            gim_error(d, (gim_loc){0}, "cannot emit %s: %s", what == GIM_IR_ASM ? "assembly" : "an object file",
                      err ? err : "");
            LLVMDisposeMessage(err);
            goto done;
        }
        fwrite(LLVMGetBufferStart(buf), 1, LLVMGetBufferSize(buf), out);
        LLVMDisposeMemoryBuffer(buf);
    }
    rc = ferror(out) ? -1 : 0;
    if (rc) gim_error(d, (gim_loc){0}, "cannot write the output");
done:
    if (tm) LLVMDisposeTargetMachine(tm);
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    gim_arena_free(a);
    return rc;
}
