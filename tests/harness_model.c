/* Whole-model test harness (see harness_model.h). */
#include "harness_model.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gim_compiler.h"
#include "testutil.h"

bool gim_hm_fuse = true;
int gim_hm_fused;

gim_exec_model *gim_hm_compile(const char *name, const char *src, int64_t batch, bool e2e) {
    gim_diag d;
    gim_diag_init(&d, stderr);
    gim_arena *arena = gim_arena_new();
    char path[256];
    snprintf(path, sizeof path, "%s.gim", name);
    gim_exec_model *em = NULL;
    gim_graph *g = NULL;
    gim_program *p = gim_parse_program_text(&d, arena, path, src, strlen(src), NULL);
    if (p && d.n_errors == 0) g = gim_lower(&d, p, batch);
    if (g && gim_partition(&d, g, e2e) == 0 && gim_autodiff(&d, g) == 0) {
        gim_train_config cfg;
        gim_train_config_defaults(&cfg);
        cfg.batch = batch;
        gim_cg_options o = {.opt_level = 2, .cfg = &cfg};
        gim_hm_fused = gim_hm_fuse ? gim_fuse(g) : 0;
        em = gim_jit(&d, g, &o);
    }
    gim_graph_free(g);
    gim_arena_free(arena);
    gim_diag_release(&d);
    return em;
}

static void *hm_zalloc(int64_t floats) {
    return gim_malloc_aligned((size_t)(floats > 0 ? floats : 1) * sizeof(float));
}

gim_hm_run *gim_hm_run_new(gim_exec_model *em, uint64_t seed) {
    gim_hm_run *r = gim_xmalloc(sizeof *r);
    memset(r, 0, sizeof *r);
    r->em = em;
    int nm = em->n_modules;
    r->slots = gim_calloc((size_t)em->n_slots + 1, sizeof *r->slots);
    for (int s = 0; s < em->n_slots; s++) r->slots[s] = hm_zalloc(em->slots[s].numel);
    r->params = gim_calloc((size_t)nm, sizeof(float *));
    r->grads = gim_calloc((size_t)nm, sizeof(float *));
    r->opt = gim_calloc((size_t)nm, sizeof(float *));
    r->work = gim_calloc((size_t)nm, sizeof(float *));
    r->ins = gim_calloc((size_t)nm, sizeof *r->ins);
    r->outs = gim_calloc((size_t)nm, sizeof *r->outs);
    r->labels = gim_calloc((size_t)nm, sizeof *r->labels);
    for (int m = 0; m < nm; m++) {
        const gim_exec_module *mod = &em->modules[m];
        r->params[m] = hm_zalloc(mod->n_param_floats);
        r->grads[m] = hm_zalloc(mod->n_param_floats);
        r->opt[m] = hm_zalloc(mod->n_opt_floats);
        r->work[m] = hm_zalloc(mod->n_work_floats);
        gim_rt_init_params(mod, r->params[m], seed);
        r->ins[m] = gim_calloc((size_t)mod->n_inputs + 1, sizeof(float *));
        for (int i = 0; i < mod->n_inputs; i++) {
            r->ins[m][i] = r->slots[mod->inputs[i]];
            if (em->slots[mod->inputs[i]].is_labels) r->labels[m] = r->slots[mod->inputs[i]];
        }
        r->outs[m] = gim_calloc((size_t)mod->n_exports + 1, sizeof(float *));
        for (int i = 0; i < mod->n_exports; i++) r->outs[m][i] = r->slots[mod->exports[i]];
    }
    return r;
}

void gim_hm_run_free(gim_hm_run *r) {
    if (!r) return;
    for (int m = 0; m < r->em->n_modules; m++) {
        gim_free(r->params[m]);
        gim_free(r->grads[m]);
        gim_free(r->opt[m]);
        gim_free(r->work[m]);
        gim_free(r->ins[m]);
        gim_free(r->outs[m]);
    }
    for (int s = 0; s < r->em->n_slots; s++) gim_free(r->slots[s]);
    gim_free(r->slots);
    gim_free(r->params);
    gim_free(r->grads);
    gim_free(r->opt);
    gim_free(r->work);
    gim_free(r->ins);
    gim_free(r->outs);
    gim_free(r->labels);
    gim_free(r);
}

void *gim_hm_input(gim_hm_run *r, const char *name) {
    for (int s = 0; s < r->em->n_slots; s++) {
        const gim_slot_info *si = &r->em->slots[s];
        if (si->producer < 0 && si->name && !strcmp(si->name, name)) return r->slots[s];
    }
    return NULL;
}

float gim_hm_step(gim_hm_run *r, int m, uint64_t step, uint64_t seed, float lr, int flags) {
    gim_call c = {
        .inputs = r->ins[m],
        .labels = r->labels[m],
        .params = r->params[m],
        .grads = r->grads[m],
        .opt = r->opt[m],
        .work = r->work[m],
        .outputs = r->outs[m],
        .step = step,
        .seed = seed,
        .lr = lr,
        .flags = flags,
    };
    return r->em->modules[m].step(&c);
}

void gim_hm_step_all(gim_hm_run *r, uint64_t step, uint64_t seed, float lr, int flags, float *losses) {
    for (int m = 0; m < r->em->n_modules; m++) {
        float l = gim_hm_step(r, m, step, seed, lr, flags);
        if (losses) losses[m] = l;
    }
}

const gim_param_info *gim_hm_find_param(const gim_hm_run *r, const char *suffix, int *module) {
    size_t b = strlen(suffix);
    for (int m = 0; m < r->em->n_modules; m++) {
        const gim_exec_module *mod = &r->em->modules[m];
        for (int i = 0; i < mod->n_params; i++) {
            size_t a = strlen(mod->params[i].name);
            if (a >= b && !strcmp(mod->params[i].name + a - b, suffix)) {
                *module = m;
                return &mod->params[i];
            }
        }
    }
    *module = -1;
    return NULL;
}

void gim_hm_scale_params(gim_hm_run *r, float s) {
    for (int m = 0; m < r->em->n_modules; m++)
        for (int64_t i = 0; i < r->em->modules[m].n_param_floats; i++) r->params[m][i] *= s;
}

double gim_hm_norm2(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

/* Central difference of module m's loss along v (parameters p0):
 * (L(p0 + εv) − L(p0 − εv)) / 2ε. */
static double hm_fd(gim_hm_run *r, int m, uint64_t step, uint64_t seed, const float *p0, const float *v, double eps) {
    int64_t n = r->em->modules[m].n_param_floats;
    for (int64_t i = 0; i < n; i++) r->params[m][i] = p0[i] + (float)eps * v[i];
    double lp = gim_hm_step(r, m, step, seed, 0.0f, GIM_CALL_NO_UPDATE);
    for (int64_t i = 0; i < n; i++) r->params[m][i] = p0[i] - (float)eps * v[i];
    double lm = gim_hm_step(r, m, step, seed, 0.0f, GIM_CALL_NO_UPDATE);
    memcpy(r->params[m], p0, (size_t)n * 4);
    return (lp - lm) / (2.0 * eps);
}

/* Checks g·v (the gradient along unit direction v; gs = |g| on v's support,
 * rel = relative tolerance) against central differences.
 *
 * Why this is sound in float32: the loss is computed in float32, so an
 * evaluation is off by a few ulps of it; divided by 2ε that is the noise
 * floor 8·FLT_EPSILON·max(|L|, 1) / 2ε (~8e-5 for ε = 1e-2 and a loss near
 * log 5). The truncation error is O(ε²) times third derivatives, except where
 * a step of ε moves a pre-activation across a kink (relu, leaky_relu, max
 * pooling): then the difference quotient mixes two slopes. So a comparison
 * that fails at ε is repeated at ε/4 (noise floor ×4), where the kinks within
 * ε are no longer crossed; it passes if either agrees. A wrong rule (a missing
 * term, a sign, a factor, a slice at the wrong offset, a bias summed over the
 * wrong axis) disagrees at every scale. Tolerance: rel·|g·v| + 0.5%·gs + the
 * noise floor. */
static bool hm_compare(gim_hm_run *r, int m, uint64_t step, uint64_t seed, const float *p0, const float *v,
                       double gv, double gs, double rel, double L, const char *what, bool verbose) {
    double fd[2], tol[2];
    bool ok = false;
    for (int k = 0; k < 2 && !ok; k++) {
        double eps = k == 0 ? 1e-2 : 2.5e-3;
        fd[k] = hm_fd(r, m, step, seed, p0, v, eps);
        tol[k] = rel * fabs(gv) + 0.005 * gs + 8 * FLT_EPSILON * fmax(fabs(L), 1.0) / (2 * eps);
        ok = fabs(fd[k] - gv) <= tol[k];
        if (verbose || (!ok && k == 1))
            fprintf(stderr, "module %d %s (eps %g): finite difference %.6g, gradient %.6g (tol %.3g)%s\n", m + 1,
                    what, eps, fd[k], gv, tol[k], ok ? "" : "  MISMATCH");
    }
    return ok;
}

int gim_hm_grad_check(gim_hm_run *r, int m, uint64_t step, uint64_t seed, int64_t lo, int64_t len) {
    const gim_exec_module *mod = &r->em->modules[m];
    int64_t n = mod->n_param_floats, hi = len > 0 ? lo + len : n;
    if (len <= 0) lo = 0;
    bool verbose = getenv("GIM_TEST_VERBOSE") != NULL;
    int failed = 0;
    float *p0 = gim_xmalloc((size_t)n * 4), *g = gim_xmalloc((size_t)n * 4), *v = gim_xmalloc((size_t)n * 4);
    memcpy(p0, r->params[m], (size_t)n * 4);
    double L = gim_hm_step(r, m, step, seed, 0.0f, GIM_CALL_NO_UPDATE);
    memcpy(g, r->grads[m], (size_t)n * 4);
    for (int64_t i = 0; i < n; i++)
        if (i < lo || i >= hi) g[i] = 0;
    double noise = 8 * FLT_EPSILON * fmax(fabs(L), 1.0) / (2 * 1e-2);
    double gn = gim_hm_norm2(g, n);
    if (verbose) fprintf(stderr, "module %d: loss %.6f |g| %.3g noise %.3g\n", m + 1, L, gn, noise);
    CU_ASSERT_TRUE(isfinite(L));
    CU_ASSERT_TRUE(gn > 30 * noise);   /* else the check has no power */
    failed += !(gn > 30 * noise);
    char what[256];
    for (int dir = 0; dir < 4 + mod->n_params; dir++) {
        const gim_param_info *pi = dir >= 4 ? &mod->params[dir - 4] : NULL;
        if (pi && (pi->offset < lo || pi->offset >= hi)) continue;
        if (dir == 0) {
            memcpy(v, g, (size_t)n * 4);
        } else {
            /* three directions over everything, then one per parameter */
            gim_test_fill(v, (size_t)n, 100u + (unsigned)dir, -1.0f, 1.0f);
            for (int64_t i = 0; i < n; i++)
                if (i < lo || i >= hi || (pi && (i < pi->offset || i >= pi->offset + pi->numel))) v[i] = 0;
        }
        double vn = gim_hm_norm2(v, n);
        if (vn == 0) continue;
        for (int64_t i = 0; i < n; i++) v[i] = (float)(v[i] / vn);
        double gv = 0;
        for (int64_t i = 0; i < n; i++) gv += (double)g[i] * v[i];
        double gs = pi ? gim_hm_norm2(g + pi->offset, pi->numel) : gn;
        snprintf(what, sizeof what, "direction %d%s%s", dir, pi ? " along " : "", pi ? pi->name : "");
        bool ok = hm_compare(r, m, step, seed, p0, v, gv, gs, 0.02, L, what, verbose);
        CU_ASSERT_TRUE(ok);
        failed += !ok;
    }
    /* Per coordinate, three elements of each parameter. */
    for (int i = 0; i < mod->n_params; i++) {
        const gim_param_info *pi = &mod->params[i];
        if (pi->offset < lo || pi->offset >= hi) continue;
        double gs = gim_hm_norm2(g + pi->offset, pi->numel);
        for (int64_t j = 0; j < 3 && j < pi->numel; j++) {
            int64_t at = pi->offset + j * (pi->numel / 3 > 0 ? pi->numel / 3 : 1);
            memset(v, 0, (size_t)n * 4);
            v[at] = 1;
            snprintf(what, sizeof what, "%s[%lld]", pi->name, (long long)(at - pi->offset));
            bool ok = hm_compare(r, m, step, seed, p0, v, g[at], gs, 0.03, L, what, verbose);
            CU_ASSERT_TRUE(ok);
            failed += !ok;
        }
    }
    /* Leave the module as found: parameters and the gradients at them. */
    memcpy(r->params[m], p0, (size_t)n * 4);
    gim_hm_step(r, m, step, seed, 0.0f, GIM_CALL_NO_UPDATE);
    gim_free(p0);
    gim_free(g);
    gim_free(v);
    return failed;
}
