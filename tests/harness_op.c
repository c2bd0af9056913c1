#include "harness_op.h"

#include <stdio.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "gim_runtime.h"
#include "gim_util.h"

int hop_build(const gim_graph *g, gim_node *const *targets, int nt, const cg_op_fn *table, const char *passes,
              bool rng, hop_jit *out) {
    static bool inited;
    if (!inited) {
        LLVMInitializeNativeTarget();
        LLVMInitializeNativeAsmPrinter();
        inited = true;
    }
    const char *const *names;
    void *const *addrs;
    int nsym = gim_rt_symbols(&names, &addrs);
    out->jit = NULL;
    out->fn = NULL;

    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    cg_ctx c;
    memset(&c, 0, sizeof c);
    c.ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    c.mod = LLVMModuleCreateWithNameInContext("op_test", c.ctx);
    c.b = LLVMCreateBuilderInContext(c.ctx);
    c.f32 = LLVMFloatTypeInContext(c.ctx);
    c.f64 = LLVMDoubleTypeInContext(c.ctx);
    c.i1 = LLVMInt1TypeInContext(c.ctx);
    c.i32 = LLVMInt32TypeInContext(c.ctx);
    c.i64 = LLVMInt64TypeInContext(c.ctx);
    c.ptr = LLVMPointerTypeInContext(c.ctx, 0);
    c.void_t = LLVMVoidTypeInContext(c.ctx);
    gim_diag diag;
    gim_diag_init(&diag, stderr);
    c.diag = &diag;
    c.graph = g;
    LLVMTypeRef params[3] = {c.ptr, c.i64, c.i64};
    c.fn = LLVMAddFunction(c.mod, "op_test", LLVMFunctionType(c.void_t, params, 3, 0));
    LLVMPositionBuilderAtEnd(c.b, LLVMAppendBasicBlockInContext(c.ctx, c.fn, "entry"));
    if (rng) {
        c.step = LLVMGetParam(c.fn, 1);
        c.seed = LLVMGetParam(c.fn, 2);
    }
    c.buf = gim_xmalloc(sizeof(LLVMValueRef) * g->nodes.len);
    LLVMValueRef arg = LLVMGetParam(c.fn, 0);
    for (int i = 0; i < g->nodes.len; i++) {
        LLVMValueRef idx = cg_i64(&c, i);
        c.buf[i] = LLVMBuildLoad2(c.b, c.ptr, LLVMBuildGEP2(c.b, c.ptr, arg, &idx, 1, ""), "buf");
    }
    int rc = 0;
    for (int t = 0; t < nt; t++) {
        cg_op_fn fn = table[targets[t]->op];
        if (!fn || fn(&c, targets[t]) != 0) rc = -1;
    }
    LLVMBuildRetVoid(c.b);
    LLVMDisposeBuilder(c.b);
    gim_free(c.buf);
    char *err = NULL;
    if (rc == 0 && LLVMVerifyModule(c.mod, LLVMPrintMessageAction, &err)) rc = -1;
    LLVMDisposeMessage(err);

    if (rc == 0) {
        char *triple = LLVMGetDefaultTargetTriple();
        LLVMTargetRef target;
        LLVMGetTargetFromTriple(triple, &target, NULL);
        char *cpu = LLVMGetHostCPUName(), *feat = LLVMGetHostCPUFeatures();
        LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, feat, LLVMCodeGenLevelDefault,
                                                          LLVMRelocDefault, LLVMCodeModelJITDefault);
        LLVMSetTarget(c.mod, triple);
        LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
        LLVMSetModuleDataLayout(c.mod, td);
        LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
        LLVMErrorRef e = LLVMRunPasses(c.mod, passes, tm, po);
        if (e) {
            char *m = LLVMGetErrorMessage(e);
            fprintf(stderr, "passes: %s\n", m);
            LLVMDisposeErrorMessage(m);
            rc = -1;
        }
        LLVMDisposePassBuilderOptions(po);
        LLVMDisposeTargetData(td);
        LLVMDisposeTargetMachine(tm);
        LLVMDisposeMessage(triple);
        LLVMDisposeMessage(cpu);
        LLVMDisposeMessage(feat);
        if (rc == 0 && (e = LLVMOrcCreateLLJIT(&out->jit, NULL))) {
            LLVMConsumeError(e);
            rc = -1;
        }
    }
    if (rc == 0) {
        LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(out->jit);
        LLVMOrcCSymbolMapPair *syms = gim_xmalloc(sizeof *syms * nsym);
        for (int i = 0; i < nsym; i++) {
            syms[i].Name = LLVMOrcLLJITMangleAndIntern(out->jit, names[i]);
            syms[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)addrs[i];
            syms[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported;
            syms[i].Sym.Flags.TargetFlags = 0;
        }
        LLVMOrcJITDylibDefine(jd, LLVMOrcAbsoluteSymbols(syms, nsym));
        gim_free(syms);
        LLVMOrcDefinitionGeneratorRef gen = NULL;
        if (!LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(out->jit),
                                                                  NULL, NULL))
            LLVMOrcJITDylibAddGenerator(jd, gen);
        LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(c.mod, tsc);
        c.mod = NULL;
        LLVMOrcExecutorAddress addr = 0;
        if (LLVMOrcLLJITAddLLVMIRModule(out->jit, jd, tsm) || LLVMOrcLLJITLookup(out->jit, &addr, "op_test") ||
            !addr) {
            fprintf(stderr, "jit: failed to compile\n");
            rc = -1;
        } else {
            out->fn = (void (*)(float **, uint64_t, uint64_t))(uintptr_t)addr;
        }
    }
    if (c.mod) LLVMDisposeModule(c.mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    gim_diag_release(&diag);
    if (rc != 0 && out->jit) {
        LLVMOrcDisposeLLJIT(out->jit);
        out->jit = NULL;
    }
    return rc;
}

void hop_free(hop_jit *j) {
    if (j->jit) LLVMOrcDisposeLLJIT(j->jit);
    j->jit = NULL;
}

int hop_run(const gim_graph *g, gim_node *const *targets, int nt, const cg_op_fn *table, const char *passes,
            bool rng, float **bufs, uint64_t step, uint64_t seed) {
    hop_jit j;
    if (hop_build(g, targets, nt, table, passes, rng, &j) != 0) return -1;
    j.fn(bufs, step, seed);
    hop_free(&j);
    return 0;
}

double hop_fd(hop_fd_fn f, void *ctx, double *x, int64_t i, double h) {
    double x0 = x[i];
    x[i] = x0 + h;
    double fp = f(ctx);
    x[i] = x0 - h;
    double fm = f(ctx);
    x[i] = x0;
    return (fp - fm) / (2 * h);
}
