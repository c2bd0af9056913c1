/* The JIT and code generation infrastructure: a hand-built graph compiles,
 * runs and gives the values a plain-C loop gives. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>
#include <unistd.h>

#include "codegen.h"
#include "gim_compiler.h"
#include "gim_runtime.h"
#include "harness_jit.h"
#include "testutil.h"

/* ---- a whole module: linear + cross_entropy, partitioned and differentiated ---- */

enum { N = 4, C = 5, K = 3 };

typedef struct tiny {
    gim_graph *g;
    gim_exec_model *em;
    float x[N * C];
    int32_t labels[N];
    float *params, *grads, *opt, *work, logits[N * K];
} tiny;

static gim_node *node(gim_graph *g, gim_op op, int n_in, gim_node *const *in, gim_shape s, const char *name) {
    gim_node *n = gim_node_new(g, op, n_in, in, (gim_loc){0});
    n->shape = s;
    n->name = name;
    return n;
}

/* logits = x wᵀ + b (x [N, C]); loss = cross_entropy(logits, labels); output
 * logits. init > 0: the parameters' init bound attribute. */
static gim_graph *linear_ce_graph(const char *model, int64_t C, double init) {
    gim_graph *g = gim_graph_new();
    g->batch = N;
    g->model_name = model;
    gim_node *x = node(g, GIM_OP_INPUT, 0, NULL, HJ_SHAPE(N, C), "x");
    gim_node *lab = node(g, GIM_OP_LABELS, 0, NULL, HJ_SHAPE(N), "labels");
    lab->is_int = true;
    gim_ptrvec_push(g->arena, &g->inputs, x);
    gim_ptrvec_push(g->arena, &g->inputs, lab);
    gim_node *w = node(g, GIM_OP_PARAM, 0, NULL, HJ_SHAPE(K, C), "linear.1/w");
    gim_node *b = node(g, GIM_OP_PARAM, 0, NULL, HJ_SHAPE(K), "linear.1/b");
    if (init > 0) w->attr[0] = b->attr[0] = init;
    gim_node *y = node(g, GIM_OP_LINEAR, 3, (gim_node *[]){x, w, b}, HJ_SHAPE(N, K), "linear.1");
    y->attr[0] = K;
    y->attr[1] = 1;
    gim_node *loss = node(g, GIM_OP_CROSS_ENTROPY, 2, (gim_node *[]){y, lab}, HJ_SCALAR, "cross_entropy.1");
    gim_ptrvec_push(g->arena, &g->losses, loss);
    g->output = y;
    return g;
}

static gim_graph *tiny_graph(void) { return linear_ce_graph("tiny", C, 0.4); }

static int tiny_build(tiny *t, gim_optimizer_kind opt, double lr_unused, int opt_level) {
    memset(t, 0, sizeof *t);
    t->g = tiny_graph();
    gim_diag d;
    gim_diag_init(&d, stderr);
    gim_train_config cfg = {.optimizer = opt, .lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                            .weight_decay = 0, .momentum = 0};
    gim_cg_options o = {.opt_level = opt_level, .cfg = &cfg};
    if (gim_partition(&d, t->g, false) || gim_autodiff(&d, t->g)) return -1;
    t->em = gim_jit(&d, t->g, &o);
    gim_diag_release(&d);
    if (!t->em) return -1;
    const gim_exec_module *m = &t->em->modules[0];
    t->params = calloc((size_t)m->n_param_floats + 1, sizeof(float));
    t->grads = calloc((size_t)m->n_param_floats + 1, sizeof(float));
    t->opt = calloc((size_t)m->n_opt_floats + 1, sizeof(float));
    t->work = calloc((size_t)m->n_work_floats + 1, sizeof(float));
    gim_test_fill(t->params, (size_t)m->n_param_floats, 7, -0.5f, 0.5f);
    gim_test_fill(t->x, N * C, 8, -1, 1);
    for (int i = 0; i < N; i++) t->labels[i] = (i * 2 + 1) % K;
    return 0;
}

static float tiny_step(tiny *t, int flags, uint64_t step) {
    const gim_exec_module *m = &t->em->modules[0];
    const float *in[2] = {t->x, (const float *)t->labels};
    float *out[4] = {t->logits, t->logits, t->logits, t->logits};
    gim_call call = {.inputs = in, .labels = t->labels, .params = t->params, .grads = t->grads, .opt = t->opt,
                     .work = t->work, .outputs = out, .step = step, .seed = 1, .lr = 0.1f, .flags = flags};
    return m->step(&call);
}

static void tiny_free(tiny *t) {
    gim_exec_model_free(t->em);
    gim_graph_free(t->g);
    free(t->params), free(t->grads), free(t->opt), free(t->work);
}

/* The loss from the definition, in double: mean_i −log softmax(x_i wᵀ + b)[label_i]. */
static double tiny_ref_loss(const tiny *t, const float *params, const gim_exec_module *m, double *logits) {
    const float *w = params + m->params[0].offset, *b = params + m->params[1].offset;
    double loss = 0;
    for (int i = 0; i < N; i++) {
        double z[K], mx = -1e300, s = 0;
        for (int k = 0; k < K; k++) {
            z[k] = b[k];
            for (int c = 0; c < C; c++) z[k] += (double)t->x[i * C + c] * w[k * C + c];
            if (logits) logits[i * K + k] = z[k];
            if (z[k] > mx) mx = z[k];
        }
        for (int k = 0; k < K; k++) s += exp(z[k] - mx);
        loss += -(z[t->labels[i]] - mx - log(s));
    }
    return loss / N;
}

/* step: the loss and the exported logits match the definition; the gradients
 * match central differences of the loss; NO_UPDATE leaves the parameters. */
static void test_step_gradients(void) {
    tiny t;
    CU_ASSERT_FATAL(tiny_build(&t, GIM_OPT_SGD, 0.1, 2) == 0);
    const gim_exec_module *m = &t.em->modules[0];
    CU_ASSERT_EQUAL(m->n_params, 2);
    CU_ASSERT_EQUAL(m->n_param_floats, K * C + K);
    CU_ASSERT_STRING_EQUAL(m->params[0].name, "linear.1/w");
    CU_ASSERT_EQUAL(m->n_opt_floats, K * C + K);   /* SGD: one buffer */
    CU_ASSERT(m->has_loss);
    CU_ASSERT_EQUAL(t.em->output_slot, 2);
    int64_t P = m->n_param_floats;
    float *p0 = malloc((size_t)P * sizeof *p0);
    memcpy(p0, t.params, (size_t)P * sizeof *p0);
    double want_logits[N * K];
    float loss = tiny_step(&t, GIM_CALL_NO_UPDATE, 1);
    double want = tiny_ref_loss(&t, t.params, m, want_logits);
    CU_ASSERT_DOUBLE_EQUAL(loss, want, 1e-5);
    for (int i = 0; i < N * K; i++) CU_ASSERT_DOUBLE_EQUAL(t.logits[i], want_logits[i], 1e-5);
    CU_ASSERT(memcmp(p0, t.params, (size_t)P * sizeof *p0) == 0);
    float *g = malloc((size_t)P * sizeof *g);
    memcpy(g, t.grads, (size_t)P * sizeof *g);
    for (int64_t j = 0; j < P; j++) {
        const float h = 1e-2f;
        float keep = t.params[j];
        t.params[j] = keep + h;
        double lp = tiny_ref_loss(&t, t.params, m, NULL);
        t.params[j] = keep - h;
        double lm = tiny_ref_loss(&t, t.params, m, NULL);
        t.params[j] = keep;
        CU_ASSERT_DOUBLE_EQUAL(g[j], (lp - lm) / (2 * h), 1e-4);
    }
    /* and the generated loss agrees with the reference at a perturbed point */
    t.params[3] += 0.25f;
    CU_ASSERT_DOUBLE_EQUAL(tiny_step(&t, GIM_CALL_NO_UPDATE, 1), tiny_ref_loss(&t, t.params, m, NULL), 1e-5);
    t.params[3] -= 0.25f;
    /* SGD, μ = 0: p ← p − lr·g */
    tiny_step(&t, 0, 1);
    for (int64_t j = 0; j < P; j++) CU_ASSERT_DOUBLE_EQUAL(t.params[j], p0[j] - 0.1f * g[j], 1e-6);
    free(p0), free(g);
    tiny_free(&t);
}

/* Adam's first step: m = (1−β1) g, v = (1−β2) g², bias-corrected to g and g²,
 * so p ← p − lr·g/(|g| + ε). */
static void test_step_adam(void) {
    tiny t;
    CU_ASSERT_FATAL(tiny_build(&t, GIM_OPT_ADAM, 0.1, 2) == 0);
    const gim_exec_module *m = &t.em->modules[0];
    int64_t P = m->n_param_floats;
    CU_ASSERT_EQUAL(m->n_opt_floats, 2 * P);
    float *p0 = malloc((size_t)P * sizeof *p0);
    memcpy(p0, t.params, (size_t)P * sizeof *p0);
    tiny_step(&t, 0, 1);
    for (int64_t j = 0; j < P; j++) {
        double gj = t.grads[j];
        CU_ASSERT_DOUBLE_EQUAL(t.opt[j], 0.1 * gj, 1e-7);
        CU_ASSERT_DOUBLE_EQUAL(t.opt[P + j], 0.001 * gj * gj, 1e-9);
        CU_ASSERT_DOUBLE_EQUAL(t.params[j], p0[j] - 0.1 * gj / (fabs(gj) + 1e-8), 2e-6);
    }
    /* a second step lowers the loss further than the first point */
    float l1 = tiny_step(&t, GIM_CALL_NO_UPDATE, 2);
    CU_ASSERT(l1 < tiny_ref_loss(&t, p0, m, NULL));
    free(p0);
    tiny_free(&t);
}

/* ---- the optimizer over the thread pool ----
 * A linear layer of K·BIG_C + K parameters: from 2^18 parameters the update
 * runs in blocks over the pool. Checked against the formulas in double, with
 * weight decay and nonzero optimizer state, and bit for bit on one and two
 * threads. */
enum { BIG_C = 90001 };

typedef struct big_run {
    int64_t P;
    float *params, *grads, *opt;
} big_run;

/* One step (t = 3) of the linear layer + cross_entropy from fixed parameters
 * and optimizer state, on `threads` threads. */
static int big_step(gim_optimizer_kind kind, int threads, big_run *r) {
    gim_graph *g = linear_ce_graph("big", BIG_C, 0);
    gim_diag d;
    gim_diag_init(&d, stderr);
    gim_train_config cfg = {.optimizer = kind, .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                            .weight_decay = 0.01, .momentum = 0.9};
    gim_cg_options o = {.opt_level = 2, .cfg = &cfg};
    gim_exec_model *em = NULL;
    if (gim_partition(&d, g, false) == 0 && gim_autodiff(&d, g) == 0) em = gim_jit(&d, g, &o);
    gim_diag_release(&d);
    if (!em) {
        gim_graph_free(g);
        return -1;
    }
    const gim_exec_module *m = &em->modules[0];
    r->P = m->n_param_floats;
    r->params = calloc((size_t)r->P + 1, sizeof(float));
    r->grads = calloc((size_t)r->P + 1, sizeof(float));
    r->opt = calloc((size_t)m->n_opt_floats + 1, sizeof(float));
    float *work = calloc((size_t)m->n_work_floats + 1, sizeof(float));
    float *xs = malloc((size_t)N * BIG_C * sizeof *xs), logits[N * K];
    int32_t labels[N];
    gim_test_fill(r->params, (size_t)r->P, 17, -0.05f, 0.05f);
    gim_test_fill(r->opt, (size_t)r->P, 18, -0.01f, 0.01f);                  /* m, or SGD's buffer */
    if (m->n_opt_floats == 2 * r->P) gim_test_fill(r->opt + r->P, (size_t)r->P, 19, 0.0f, 1e-4f);   /* v */
    gim_test_fill(xs, (size_t)N * BIG_C, 20, -1, 1);
    for (int i = 0; i < N; i++) labels[i] = i % K;
    const float *in[2] = {xs, (const float *)labels};
    float *out[1] = {logits};
    gim_call call = {.inputs = in, .labels = labels, .params = r->params, .grads = r->grads, .opt = r->opt,
                     .work = work, .outputs = out, .step = 3, .seed = 1, .lr = 0.01f, .flags = 0};
    int keep = gim_rt_threads();
    gim_rt_set_threads(threads);
    m->step(&call);
    gim_rt_set_threads(keep);
    free(work), free(xs);
    gim_exec_model_free(em);
    gim_graph_free(g);
    return 0;
}

static void big_free(big_run *r) { free(r->params), free(r->grads), free(r->opt); }

static void check_big_update(gim_optimizer_kind kind) {
    big_run one, two;
    CU_ASSERT_FATAL(big_step(kind, 1, &one) == 0);
    CU_ASSERT_FATAL(big_step(kind, 2, &two) == 0);
    int64_t P = one.P;
    CU_ASSERT(P >= 1 << 18);
    bool adam = kind == GIM_OPT_ADAM;
    CU_ASSERT(memcmp(one.params, two.params, (size_t)P * sizeof(float)) == 0);
    CU_ASSERT(memcmp(one.opt, two.opt, (size_t)(adam ? 2 : 1) * P * sizeof(float)) == 0);
    /* the state before the step, as big_step set it */
    float *p0 = malloc((size_t)P * sizeof *p0), *s0 = malloc((size_t)2 * P * sizeof *s0);
    gim_test_fill(p0, (size_t)P, 17, -0.05f, 0.05f);
    gim_test_fill(s0, (size_t)P, 18, -0.01f, 0.01f);
    if (adam) gim_test_fill(s0 + P, (size_t)P, 19, 0.0f, 1e-4f);
    const double lr = 0.01, wd = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, mu = 0.9;
    int bad = 0;
    for (int64_t j = 0; j < P && bad < 5; j++) {
        double g = (double)one.grads[j] + wd * p0[j], p;
        if (adam) {
            double m = b1 * s0[j] + (1 - b1) * g, v = b2 * s0[P + j] + (1 - b2) * g * g;
            p = p0[j] - lr / (1 - pow(b1, 3)) * m / (sqrt(v / (1 - pow(b2, 3))) + eps);
            if (fabs(one.opt[j] - m) > 1e-7 * (1 + fabs(m)) || fabs(one.opt[P + j] - v) > 1e-6 * v + 1e-12) bad++;
        } else {
            double buf = mu * s0[j] + g;
            p = p0[j] - lr * buf;
            if (fabs(one.opt[j] - buf) > 1e-7 * (1 + fabs(buf))) bad++;
        }
        if (fabs(one.params[j] - p) > 1e-6 * (1 + fabs(p))) {
            if (!bad) fprintf(stderr, "\n  parameter %lld: got %.9g, want %.9g\n", (long long)j, one.params[j], p);
            bad++;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(p0), free(s0);
    big_free(&one), big_free(&two);
}

static void test_adam_large(void) { check_big_update(GIM_OPT_ADAM); }
static void test_sgd_large(void) { check_big_update(GIM_OPT_SGD); }

/* Compile time of the tiny model (printed; a loose bound keeps it honest). */
static void test_compile_time(void) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    tiny t;
    CU_ASSERT_FATAL(tiny_build(&t, GIM_OPT_ADAM, 0.1, 2) == 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    fprintf(stderr, "\n  [tiny model compiled (plan, IR, O2, JIT) in %.1f ms] ", ms);
    CU_ASSERT(ms < 5000);
    tiny_free(&t);
}

/* relu of an odd-sized input, through the whole pipeline (plan, codegen,
 * optimisation, JIT, call). */
static void test_relu_runs(void) {
    hj_graph *h = hj_new(1);
    gim_node *x = hj_input(h, HJ_SHAPE(3, 37));
    gim_node *y = hj_op(h, GIM_OP_RELU, HJ_SHAPE(3, 37), HJ_IN(x), HJ_NOATTR);
    CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(y)) == 0);
    float xs[111], ys[111];
    gim_test_fill(xs, 111, 1, -1, 1);
    hj_run(h, (const void *[]){xs}, (float *[]){ys});
    for (int i = 0; i < 111; i++) CU_ASSERT_EQUAL(ys[i], xs[i] > 0 ? xs[i] : 0.0f);
    hj_free(h);
}

/* A module whose buffers exceed the limit is refused with a message naming
 * the module and the size, not run (and not crashed on); so is a shape whose
 * size overflows. */
static void test_too_large_refused(void) {
    hj_graph *h = hj_new(1);
    gim_node *x = hj_input(h, HJ_SHAPE((int64_t)1 << 20, (int64_t)1 << 20));
    gim_node *a = hj_op(h, GIM_OP_RELU, HJ_SHAPE((int64_t)1 << 20, (int64_t)1 << 20), HJ_IN(x), HJ_NOATTR);
    gim_node *b = hj_op(h, GIM_OP_SCALE, HJ_SHAPE((int64_t)1 << 20, (int64_t)1 << 20), HJ_IN(a), HJ_ATTR(2.0));
    CU_ASSERT(hj_compile(h, HJ_OUT(b)) != 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(hj_errors(h), "module 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(hj_errors(h), "GiB"));
    hj_free(h);

    h = hj_new(1);
    x = hj_input(h, HJ_SHAPE((int64_t)1 << 40, (int64_t)1 << 40));
    a = hj_op(h, GIM_OP_RELU, HJ_SHAPE((int64_t)1 << 40, (int64_t)1 << 40), HJ_IN(x), HJ_NOATTR);
    CU_ASSERT(hj_compile(h, HJ_OUT(a)) != 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(hj_errors(h), "too large"));
    hj_free(h);
}

/* Buffers are reused once dead: a chain of 6 same-size ops needs 2 work
 * buffers (the last writes the output slot), not 5. */
static void test_plan_reuses(void) {
    hj_graph *h = hj_new(1);
    gim_node *v = hj_input(h, HJ_SHAPE(100));
    for (int i = 0; i < 6; i++) v = hj_op(h, GIM_OP_SCALE, HJ_SHAPE(100), HJ_IN(v), HJ_ATTR(2.0));
    CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(v)) == 0);
    CU_ASSERT_EQUAL(hj_work_floats(h), 2 * 112);   /* 100 rounded to 64 bytes */
    float x[100], y[100];
    gim_test_fill(x, 100, 3, -1, 1);
    hj_run(h, (const void *[]){x}, (float *[]){y});
    for (int i = 0; i < 100; i++) CU_ASSERT_EQUAL(y[i], x[i] * 64);
    hj_free(h);
}

/* The plan across the forward/backward boundary: a forward value a backward
 * node reads stays allocated (an activation); one only the forward reads is
 * reused by the backward pass. */
static void test_plan_activations(void) {
    gim_graph *g = gim_graph_new();
    gim_node *x = node(g, GIM_OP_INPUT, 0, NULL, HJ_SHAPE(64), "x");
    gim_ptrvec_push(g->arena, &g->inputs, x);
    gim_node *a = node(g, GIM_OP_TANH, 1, (gim_node *[]){x}, HJ_SHAPE(64), "a");        /* read by backward */
    gim_node *b = node(g, GIM_OP_SCALE, 1, (gim_node *[]){a}, HJ_SHAPE(64), "b");       /* forward only */
    gim_node *e = node(g, GIM_OP_RELU, 1, (gim_node *[]){b}, HJ_SHAPE(64), "e");        /* the export */
    gim_node *d1 = node(g, GIM_OP_SCALE, 1, (gim_node *[]){x}, HJ_SHAPE(64), "d1");
    gim_node *d2 = node(g, GIM_OP_TANH_BWD, 2, (gim_node *[]){d1, a}, HJ_SHAPE(64), "d2");
    d1->is_backward = d2->is_backward = true;
    gim_module m = {0};
    gim_node *fwd[] = {a, b, e}, *bwd[] = {d1, d2};
    for (int i = 0; i < 3; i++) gim_ptrvec_push(g->arena, &m.nodes, fwd[i]);
    for (int i = 0; i < 2; i++) gim_ptrvec_push(g->arena, &m.bwd_nodes, bwd[i]);
    gim_ptrvec_push(g->arena, &m.inputs, x);
    gim_ptrvec_push(g->arena, &m.exports, e);
    gim_diag d;
    gim_diag_init(&d, stderr);
    cg_plan p;
    CU_ASSERT_FATAL(cg_plan_module(&d, g, &m, g->arena, &p) == 0);
    gim_diag_release(&d);
    CU_ASSERT_EQUAL(p.where[e->id], CG_AT_OUTPUT);
    CU_ASSERT_EQUAL(p.where[a->id], CG_AT_WORK);
    CU_ASSERT_EQUAL(p.act_floats, 64);          /* a, and only a */
    /* b dies in the forward pass: d1 may take its place, never a's */
    CU_ASSERT_NOT_EQUAL(p.offset[d1->id], p.offset[a->id]);
    CU_ASSERT_NOT_EQUAL(p.offset[d2->id], p.offset[a->id]);
    CU_ASSERT_NOT_EQUAL(p.offset[d2->id], p.offset[d1->id]);
    CU_ASSERT_EQUAL(p.offset[d1->id], p.offset[b->id]);
    CU_ASSERT_EQUAL(p.work_floats, 3 * 64);
    gim_graph_free(g);
}

static char *emit(const gim_graph *g, int opt, const char *fn, gim_ir_what what, size_t *len) {
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    gim_diag d;
    gim_diag_init(&d, stderr);
    gim_cg_options o = {.opt_level = opt, .cfg = NULL};
    int rc = gim_emit_ir(&d, g, &o, 0, fn, what, f);
    gim_diag_release(&d);
    fclose(f);
    if (len) *len = n;
    if (rc != 0) {
        free(text);
        return NULL;
    }
    return text;
}

/* gimc ir's back end: IR before optimisation carries the source names and
 * assembles with llvm-as; -O2 vectorises the relu loop; assembly and object
 * files come out. */
static void test_emit_ir(void) {
    gim_graph *g = tiny_graph();
    gim_diag d;
    gim_diag_init(&d, stderr);
    CU_ASSERT_FATAL(gim_partition(&d, g, false) == 0 && gim_autodiff(&d, g) == 0);
    gim_diag_release(&d);
    char *ir0 = emit(g, 0, NULL, GIM_IR_LLVM, NULL);
    CU_ASSERT_FATAL(ir0 != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(ir0, "define float @gim_m1_step(ptr"));
    CU_ASSERT_PTR_NOT_NULL(strstr(ir0, "define void @gim_m1_forward(ptr"));
    CU_ASSERT_PTR_NOT_NULL(strstr(ir0, "linear.1/w"));
    CU_ASSERT_PTR_NOT_NULL(strstr(ir0, "@gim_rt_sgemm"));
    const char *as = "/usr/lib/llvm-16/bin/llvm-as";
    if (access(as, X_OK) == 0) {
        const char *path = gim_tmpfile("tiny.ll", ir0, strlen(ir0));
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s -o /dev/null '%s'", as, path);
        CU_ASSERT_EQUAL(system(cmd), 0);
        char *ir2 = emit(g, 2, NULL, GIM_IR_LLVM, NULL);
        CU_ASSERT_FATAL(ir2 != NULL);
        path = gim_tmpfile("tiny2.ll", ir2, strlen(ir2));
        snprintf(cmd, sizeof cmd, "%s -o /dev/null '%s'", as, path);
        CU_ASSERT_EQUAL(system(cmd), 0);
        free(ir2);
    }
    char *fwd = emit(g, 0, "forward", GIM_IR_LLVM, NULL);
    CU_ASSERT_FATAL(fwd != NULL);
    CU_ASSERT_PTR_NULL(strstr(fwd, "gim_m1_step"));
    CU_ASSERT_PTR_NULL(strstr(fwd, "cross_entropy"));   /* forward skips the loss */
    CU_ASSERT_PTR_NULL(emit(g, 0, "backward", GIM_IR_LLVM, NULL));
    char *asm_ = emit(g, 2, "step", GIM_IR_ASM, NULL);
    CU_ASSERT_FATAL(asm_ != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(asm_, "gim_m1_step:"));
    size_t olen;
    char *obj = emit(g, 2, NULL, GIM_IR_OBJECT, &olen);
    CU_ASSERT_FATAL(obj != NULL);
    CU_ASSERT(olen > 4 && memcmp(obj, "\x7f" "ELF", 4) == 0);
    free(ir0), free(fwd), free(asm_), free(obj);
    gim_graph_free(g);

    /* -O2 turns the relu loop into vector code (AVX-512 here: <16 x float>;
     * at least SSE's <4 x float> anywhere), -O0 leaves it scalar. */
    hj_graph *h = hj_new(1);
    gim_node *x = hj_input(h, HJ_SHAPE(1000));
    gim_node *y = hj_op(h, GIM_OP_RELU, HJ_SHAPE(1000), HJ_IN(x), HJ_NOATTR);
    CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(y)) == 0);
    char *v = NULL;
    size_t vn = 0;
    FILE *f = open_memstream(&v, &vn);
    CU_ASSERT(hj_print_ir(h, 2, f) == 0);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(v, " x float>"));
    free(v);
    f = open_memstream(&v, &vn);
    CU_ASSERT(hj_print_ir(h, 0, f) == 0);
    fclose(f);
    CU_ASSERT_PTR_NULL(strstr(v, " x float>"));
    free(v);
    hj_free(h);
}

/* Every optimisation level compiles and computes the same thing. */
static void test_opt_levels(void) {
    for (int lvl = 0; lvl <= 3; lvl++) {
        hj_graph *h = hj_new(1);
        hj_set_opt(h, lvl);
        gim_node *x = hj_input(h, HJ_SHAPE(2, 19));
        gim_node *y = hj_op(h, GIM_OP_SIGMOID, HJ_SHAPE(2, 19), HJ_IN(x), HJ_NOATTR);
        CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(y)) == 0);
        float xs[38], ys[38];
        gim_test_fill(xs, 38, 9, -3, 3);
        hj_run(h, (const void *[]){xs}, (float *[]){ys});
        for (int i = 0; i < 38; i++) CU_ASSERT_DOUBLE_EQUAL(ys[i], 1.0 / (1.0 + exp(-(double)xs[i])), 1e-6);
        hj_free(h);
    }
}

/* ---- the planner under pressure: random graphs against an interpreter ----
 * Random DAGs of elementwise ops and views (reshape, slice) over two sizes,
 * with several outputs; the work arena is reused as values die, so a
 * liveness mistake (a view's reader not keeping its source alive, an output
 * overlapping an input) changes some output. Both the forward and the step
 * function are checked, against the same ops evaluated one by one in C. */
enum { BIG = 48, SMALL = 20, MAXN = 40 };

typedef struct rnode { int op, a, b, size; float attr; int off; } rnode;

static unsigned rng_next(unsigned *s) {
    *s ^= *s << 13, *s ^= *s >> 17, *s ^= *s << 5;
    return *s;
}

static void interp(const rnode *r, int n, float vals[][BIG]) {
    for (int i = 1; i < n; i++) {
        const rnode *q = &r[i];
        for (int k = 0; k < q->size; k++) {
            float a = vals[q->a][k], b = q->b >= 0 ? vals[q->b][k] : 0;
            float v;
            switch (q->op) {
            case GIM_OP_RELU: v = a > 0 ? a : 0; break;
            case GIM_OP_TANH: v = tanhf(a); break;
            case GIM_OP_SCALE: v = a * q->attr; break;
            case GIM_OP_ADD: v = a + b; break;
            case GIM_OP_MUL: v = a * b; break;
            case GIM_OP_RESHAPE: v = a; break;
            case GIM_OP_SLICE: v = vals[q->a][q->off + k]; break;
            case GIM_OP_TRANSPOSE: {
                /* the value as [R, C] (R = 6 or 4), out [C, R]: out[j, i] = a[i, j] */
                int R = q->size == BIG ? 6 : 4, C = q->size / R, j = k / R, i = k % R;
                v = vals[q->a][i * C + j];
                break;
            }
            default: v = NAN;
            }
            vals[i][k] = v;
        }
    }
}

static void test_random_graphs(void) {
    unsigned seed = 12345;
    for (int trial = 0; trial < 20; trial++) {
        rnode r[MAXN];
        int n = 8 + (int)(rng_next(&seed) % (MAXN - 8));
        r[0] = (rnode){GIM_OP_INPUT, -1, -1, BIG, 0, 0};
        hj_graph *h = hj_new(1);
        gim_node *nodes[MAXN];
        nodes[0] = hj_input(h, HJ_SHAPE(BIG));
        for (int i = 1; i < n; i++) {
            rnode q = {0, -1, -1, BIG, 0, 0};
            int pick = (int)(rng_next(&seed) % 8);
            /* mostly recent operands, so values flow through long chains */
            q.a = i - 1 - (int)(rng_next(&seed) % (unsigned)(i < 4 ? i : 4));
            q.size = r[q.a].size;
            static const int ops[8] = {GIM_OP_RELU, GIM_OP_TANH, GIM_OP_SCALE, GIM_OP_ADD, GIM_OP_MUL,
                                       GIM_OP_RESHAPE, GIM_OP_SLICE, GIM_OP_TRANSPOSE};
            q.op = ops[pick];
            if (q.op == GIM_OP_ADD || q.op == GIM_OP_MUL) {
                q.b = (int)(rng_next(&seed) % (unsigned)i);
                if (r[q.b].size != q.size) q.b = q.a;
            }
            if (q.op == GIM_OP_SCALE) q.attr = 0.5f + (float)(rng_next(&seed) % 5) * 0.1f;
            if (q.op == GIM_OP_SLICE) {
                if (q.size != BIG) q.op = GIM_OP_RELU;
                else {
                    q.size = SMALL;
                    q.off = (int)(rng_next(&seed) % (BIG - SMALL + 1));
                }
            }
            r[i] = q;
            gim_shape sh = q.op == GIM_OP_RESHAPE ? HJ_SHAPE(2, q.size / 2) : HJ_SHAPE(q.size);
            if (q.op == GIM_OP_TRANSPOSE) {
                int R = q.size == BIG ? 6 : 4;
                gim_node *v = hj_op(h, GIM_OP_RESHAPE, HJ_SHAPE(R, q.size / R), HJ_IN(nodes[q.a]), HJ_NOATTR);
                nodes[i] = hj_op(h, q.op, HJ_SHAPE(q.size / R, R), HJ_IN(v), HJ_ATTR(0, 1));
            } else if (q.op == GIM_OP_SLICE)
                nodes[i] = hj_op(h, q.op, sh, HJ_IN(nodes[q.a]), HJ_ATTR(q.off));
            else if (q.b >= 0)
                nodes[i] = hj_op(h, q.op, sh, HJ_IN(nodes[q.a], nodes[q.b]), HJ_NOATTR);
            else
                nodes[i] = hj_op(h, q.op, sh, HJ_IN(nodes[q.a]), HJ_ATTR(q.attr));
        }
        int outs[3] = {n - 1, (int)(rng_next(&seed) % (unsigned)n), 1 + (int)(rng_next(&seed) % (unsigned)(n - 1))};
        CU_ASSERT_FATAL(hj_compile(h, HJ_OUT(nodes[outs[0]], nodes[outs[1]], nodes[outs[2]])) == 0);
        static float vals[MAXN][BIG];
        gim_test_fill(vals[0], BIG, 100 + (unsigned)trial, -1.5f, 1.5f);
        interp(r, n, vals);
        for (int fn = 0; fn < 2; fn++) {
            float o[3][BIG];
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < BIG; k++) o[j][k] = -999;
            if (fn == 0) hj_run(h, (const void *[]){vals[0]}, (float *[]){o[0], o[1], o[2]});
            else hj_run_step(h, (const void *[]){vals[0]}, (float *[]){o[0], o[1], o[2]});
            int bad = 0;
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < r[outs[j]].size; k++)
                    if (!(fabsf(o[j][k] - vals[outs[j]][k]) <= 1e-5f + 1e-5f * fabsf(vals[outs[j]][k]))) bad++;
            if (bad) fprintf(stderr, "\ntrial %d (%s): %d wrong output values\n", trial, fn ? "step" : "forward", bad);
            if (bad && getenv("HJ_DEBUG")) {
                gim_graph_print(stderr, hj_graph_of(h));
                fprintf(stderr, "outputs %d %d %d -> node ids %d %d %d\n", outs[0], outs[1], outs[2], nodes[outs[0]]->id, nodes[outs[1]]->id, nodes[outs[2]]->id);
                for (int j = 0; j < 3; j++) fprintf(stderr, "out %d: got %g want %g\n", j, o[j][1], vals[outs[j]][1]);
                hj_print_ir(h, 0, stderr);
            }
            CU_ASSERT_EQUAL(bad, 0);
        }
        hj_free(h);
    }
}

/* `gimc ir` on the canonical model: IR by default, one module and function
 * on request, usage errors exit 2, a module that does not exist exits 1. */
static void test_gimc_ir(void) {
    const char *model = GIM_SOURCE_DIR "/models/fashion_gim.gim";
    char args[1024], *out, *err;
    if (access(GIMC_PATH, X_OK) != 0) {
        fprintf(stderr, "\n  [skipped: %s is not built] ", GIMC_PATH);
        return;
    }
    snprintf(args, sizeof args, "ir '%s' --module 2 --fn forward -O0", model);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "define void @gim_m2_forward(ptr"));
    CU_ASSERT_PTR_NULL(strstr(out, "gim_m2_step"));
    CU_ASSERT_PTR_NULL(strstr(out, "gim_m1_forward"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "conv_pair.2/conv2d.1/w"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "; module 2: work arena"));
    free(out), free(err);
    snprintf(args, sizeof args, "ir '%s' --fn backward", model);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 2);
    free(out), free(err);
    snprintf(args, sizeof args, "ir '%s' -c", model);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 2);
    free(out), free(err);
    snprintf(args, sizeof args, "ir '%s' --module 9", model);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "module 9"));
    free(out), free(err);
    char obj[600];
    snprintf(obj, sizeof obj, "%s/m.o", gim_tmpdir());
    snprintf(args, sizeof args, "ir '%s' --module 1 -O0 -c -o '%s'", model, obj);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 0);
    free(out), free(err);
    size_t n = 0;
    char *o = gim_read_file(obj, &n);
    CU_ASSERT(o && n > 4 && memcmp(o, "\x7f" "ELF", 4) == 0);
    free(o);
}

int main(void) {
    static const gim_test tests[] = {
        {"relu runs", test_relu_runs},
        {"step: loss, exports, gradients, SGD", test_step_gradients},
        {"step: Adam's first update", test_step_adam},
        {"Adam over the thread pool: formulas and bits on 1 and 2 threads", test_adam_large},
        {"SGD over the thread pool: formulas and bits on 1 and 2 threads", test_sgd_large},
        {"compile time", test_compile_time},
        {"a module too large is refused", test_too_large_refused},
        {"the planner reuses dead buffers", test_plan_reuses},
        {"activations stay live across the backward boundary", test_plan_activations},
        {"IR, assembly and object output", test_emit_ir},
        {"optimisation levels", test_opt_levels},
        {"random graphs of ops and views vs an interpreter", test_random_graphs},
        {"gimc ir", test_gimc_ir},
        {NULL, NULL},
    };
    return gim_run_suite("jit", tests);
}
