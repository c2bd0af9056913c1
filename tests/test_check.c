/* `gimc check` and the cost model: the fashion model's parameter counts by
 * hand arithmetic, its FLOPs against a count of its convolutions, the check
 * table of every shipped model, the DOT output, and the driver's usage. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cost.h"
#include "harness_graph.h"
#include "testutil.h"

static char *model_source(const char *name) {
    char path[512];
    snprintf(path, sizeof path, GIM_SOURCE_DIR "/models/%s", name);
    char *s = gim_read_file(path, NULL);
    CU_ASSERT_PTR_NOT_NULL(s);
    return s;
}

static gim_graph *fashion(int64_t batch) {
    char *src = model_source("fashion_gim.gim");
    gim_graph *g = hg_ok(src, batch, true, false);
    gim_free(src);
    return g;
}

/* Per module: conv1 (C_in -> C, 3x3) w + b, conv2 (C -> C) w + b, and the
 * InfoNCE maps W [3, C, C]:
 *   module 1: 32*1*9 + 32 + 32*32*9 + 32 + 3*32*32     = 288 + 32 + 9216 + 32 + 3072       = 12,640
 *   module 2: 64*32*9 + 64 + 64*64*9 + 64 + 3*64*64    = 18432 + 64 + 36864 + 64 + 12288   = 67,712
 *   module 3: 128*64*9 + 128 + 128*128*9 + 128 + 3*128*128
 *                                                      = 73728 + 128 + 147456 + 128 + 49152 = 270,592 */
static void test_fashion_param_counts(void) {
    const int64_t by_hand[3] = {288 + 32 + 9216 + 32 + 3072, 18432 + 64 + 36864 + 64 + 12288,
                                73728 + 128 + 147456 + 128 + 49152};
    CU_ASSERT_EQUAL(by_hand[0], 12640);
    CU_ASSERT_EQUAL(by_hand[1], 67712);
    CU_ASSERT_EQUAL(by_hand[2], 270592);
    gim_graph *g = fashion(32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL_FATAL(g->n_modules, 3);
    for (int k = 0; k < 3; k++) {
        CU_ASSERT_EQUAL(hg_module_params(&g->modules[k]), by_hand[k]);
        CU_ASSERT_EQUAL(gim_module_cost(g, &g->modules[k]).n_params, by_hand[k]);
    }
    gim_graph_free(g);
}

/* Forward FLOPs of the convolutions, per patch (2 C k k multiply-adds + 1
 * bias add per output; outputs C_out * H * W):
 *   m1: 32*64*(2*1*9+1)    = 38,912     32*64*(2*32*9+1)   = 1,181,696
 *   m2: 64*16*(2*32*9+1)   = 590,848    64*16*(2*64*9+1)   = 1,180,672
 *   m3: 128*4*(2*64*9+1)   = 590,336    128*4*(2*128*9+1)  = 1,180,160
 * sum 4,762,624 per patch; a batch of 32 images has 32*36 = 1152 patches:
 * 5,486,542,848 FLOPs forward, about 16.46 GFLOP for a step (x3), the
 * 16.5 GFLOP of spec/benchmarks.md with the losses on top. */
static void test_fashion_flops(void) {
    gim_graph *g = fashion(32);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    double conv = 0, step = 0, fwd = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        gim_node *n = gim_node_at(g, i);
        if (n->op == GIM_OP_CONV2D) conv += gim_node_fwd_flops(n);
    }
    CU_ASSERT_DOUBLE_EQUAL(conv, 4762624.0 * 1152, 0.5);
    for (int k = 0; k < g->n_modules; k++) {
        gim_cost c = gim_module_cost(g, &g->modules[k]);
        CU_ASSERT(c.step_flops > 2.9 * c.fwd_flops && c.step_flops < 3.0 * c.fwd_flops);
        step += c.step_flops;
        fwd += c.fwd_flops;
    }
    CU_ASSERT(step > 16.4e9 && step < 17.5e9);
    CU_ASSERT(fwd > conv && fwd < 1.1 * conv);
    /* about 0.5 GFLOP per example */
    CU_ASSERT(step / 32 > 0.5e9 && step / 32 < 0.55e9);
    /* costs scale with the batch */
    gim_graph *g8 = fashion(8);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g8);
    double step8 = 0;
    for (int k = 0; k < g8->n_modules; k++) step8 += gim_module_cost(g8, &g8->modules[k]).step_flops;
    CU_ASSERT_DOUBLE_EQUAL(step8 * 4, step, step * 1e-9);
    /* activations of module 1 per example: patches 36*64, four conv/relu
     * outputs 4*36*2048, spatial_mean 36*32, the loss scalar */
    gim_cost c1 = gim_module_cost(g8, &g8->modules[0]);
    CU_ASSERT_EQUAL(c1.act_floats, 8 * (36 * 64 + 4 * 36 * 2048 + 36 * 32) + 1);
    CU_ASSERT_EQUAL(c1.n_ops, 7);
    gim_graph_free(g);
    gim_graph_free(g8);
}

static void test_number_formats(void) {
    char b[64];
    CU_ASSERT_STRING_EQUAL(gim_fmt_count(12640, b, sizeof b), "12,640");
    CU_ASSERT_STRING_EQUAL(gim_fmt_count(270592, b, sizeof b), "270,592");
    CU_ASSERT_STRING_EQUAL(gim_fmt_count(999, b, sizeof b), "999");
    CU_ASSERT_STRING_EQUAL(gim_fmt_count(1000000, b, sizeof b), "1,000,000");
    CU_ASSERT_STRING_EQUAL(gim_fmt_count(-4200, b, sizeof b), "-4,200");
    CU_ASSERT_STRING_EQUAL(gim_fmt_si(1.2e6, "FLOP", b, sizeof b), "1.2 MFLOP");
    CU_ASSERT_STRING_EQUAL(gim_fmt_si(16.46e9, "FLOP", b, sizeof b), "16.5 GFLOP");
    CU_ASSERT_STRING_EQUAL(gim_fmt_si(512, "FLOP", b, sizeof b), "512 FLOP");
}

/* The rows of a check table: lines starting with a module number. */
static int table_rows(const char *out) {
    int rows = 0;
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *p = l;
        while (*p == ' ') p++;
        if (*p >= '1' && *p <= '9') rows++;
    }
    return rows;
}

static void test_check_table_of_models(void) {
    struct { const char *file; int modules; } models[] = {
        {"fashion_gim.gim", 3}, {"gim_vision.gim", 3}, {"cpc_audio.gim", 6}, {"fashion_supervised.gim", 1},
    };
    for (int i = 0; i < 4; i++) {
        char args[600], *out, *err;
        snprintf(args, sizeof args, "check '%s/models/%s'", GIM_SOURCE_DIR, models[i].file);
        int st = gim_run_gimc(args, &out, &err);
        CU_ASSERT_EQUAL(st, 0);
        if (st) fprintf(stderr, "\n%s: %s", models[i].file, err);
        CU_ASSERT_EQUAL(table_rows(out), models[i].modules);
        CU_ASSERT(strstr(out, " total ") != NULL);
        CU_ASSERT_STRING_EQUAL(err, "");
        if (i == 0) {
            CU_ASSERT(strstr(out, "model fashion_gim: 3 modules, batch 32") != NULL);
            CU_ASSERT(strstr(out, "12,640") && strstr(out, "67,712") && strstr(out, "270,592"));
            CU_ASSERT(strstr(out, "350,944") != NULL);   /* their sum */
        }
        if (i == 3) {
            /* the fashion convs without the W maps, and a linear 36*128 -> 10:
             * 350,944 - 3*(1024 + 4096 + 16384) + 4608*10 + 10 */
            CU_ASSERT(strstr(out, "cross_entropy") && strstr(out, "332,522"));
        }
        gim_free(out);
        gim_free(err);
    }
    /* --batch overrides the train block; --e2e makes one module */
    char *out, *err, args[600];
    snprintf(args, sizeof args, "check --batch 4 --e2e '%s/models/fashion_gim.gim'", GIM_SOURCE_DIR);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 0);
    CU_ASSERT(strstr(out, "1 module, batch 4, end to end") != NULL);
    CU_ASSERT_EQUAL(table_rows(out), 1);
    gim_free(out);
    gim_free(err);
    /* options may follow the file; --opt=value works too */
    snprintf(args, sizeof args, "check '%s/models/fashion_gim.gim' --batch=2", GIM_SOURCE_DIR);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 0);
    CU_ASSERT(strstr(out, "3 modules, batch 2\n") != NULL);
    gim_free(out);
    gim_free(err);
}

static void test_graph_dot(void) {
    char args[700], *out, *err;
    snprintf(args, sizeof args, "graph '%s/models/fashion_gim.gim'", GIM_SOURCE_DIR);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 0);
    CU_ASSERT(strncmp(out, "digraph \"fashion_gim\" {", 23) == 0);
    CU_ASSERT(strstr(out, "subgraph cluster_m1") && strstr(out, "subgraph cluster_m3"));
    CU_ASSERT(strstr(out, "subgraph cluster_m4") == NULL);
    /* two blocks: two cut edges */
    int cuts = 0;
    for (const char *p = out; (p = strstr(p, "style=dashed, color=red")); p++) cuts++;
    CU_ASSERT_EQUAL(cuts, 2);
    CU_ASSERT(strstr(out, "conv_pair.2/conv2d.1") != NULL);
    CU_ASSERT(strstr(out, "fillcolor=\"#eeeeee\"") == NULL);   /* no backward nodes */
    gim_free(out);
    gim_free(err);
    /* --backward adds the backward nodes; -o writes a file */
    char path[512];
    snprintf(path, sizeof path, "%s/g.dot", gim_tmpdir());
    snprintf(args, sizeof args, "graph --backward -o '%s' '%s/models/fashion_gim.gim'", path, GIM_SOURCE_DIR);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 0);
    CU_ASSERT_STRING_EQUAL(out, "");
    char *dot = gim_read_file(path, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dot);
    CU_ASSERT(strstr(dot, "fillcolor=\"#eeeeee\"") != NULL);
    CU_ASSERT(dot[strlen(dot) - 2] == '}');
    gim_free(dot);
    gim_free(out);
    gim_free(err);
    /* --text: the graph's text dump, one node per line */
    snprintf(args, sizeof args, "graph --text '%s/models/fashion_gim.gim'", GIM_SOURCE_DIR);
    CU_ASSERT_EQUAL(gim_run_gimc(args, &out, &err), 0);
    CU_ASSERT(strncmp(out, "%0 = input() : [32, 1, 28, 28]  # x @", 37) == 0);
    CU_ASSERT(strstr(out, "= infonce(") && strstr(out, " m3\n"));
    gim_free(out);
    gim_free(err);
}

static void test_driver_usage(void) {
    char *out, *err;
    CU_ASSERT_EQUAL(gim_run_gimc("--help", &out, &err), 0);
    CU_ASSERT(strstr(out, "usage: gimc") && strstr(out, "check"));
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("--version", &out, &err), 0);
    CU_ASSERT(strncmp(out, "gimc ", 5) == 0);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("check --help", &out, &err), 0);
    CU_ASSERT(strstr(out, "usage: gimc check") != NULL);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("help graph", &out, &err), 0);
    CU_ASSERT(strstr(out, "usage: gimc graph") != NULL);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("", &out, &err), 2);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("chekc m.gim", &out, &err), 2);
    CU_ASSERT(strstr(err, "did you mean 'check'?") != NULL);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("check", &out, &err), 2);
    CU_ASSERT(strstr(err, "no model file given") != NULL);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("check --batch 0 m.gim", &out, &err), 2);
    CU_ASSERT(strstr(err, "--batch expects an integer from 1 to") != NULL);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("check --batch 99999999999 m.gim", &out, &err), 2);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("check --batch 3x m.gim", &out, &err), 2);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("check --lr 0.1 m.gim", &out, &err), 2);
    CU_ASSERT(strstr(err, "option '--lr' does not apply") != NULL);
    gim_free(out), gim_free(err);
    CU_ASSERT_EQUAL(gim_run_gimc("check /nonexistent/m.gim", &out, &err), 1);
    CU_ASSERT(strstr(err, "cannot read") != NULL);
    gim_free(out), gim_free(err);
}

/* The last config_of's diagnostics and AST (cfg's strings point into it). */
static gim_diag cfg_diag;
static gim_arena *cfg_arena;

static void config_release(void) {
    if (!cfg_arena) return;
    gim_diag_release(&cfg_diag);
    gim_arena_free(cfg_arena);
    cfg_arena = NULL;
}

/* The train block (compiler/config.c) over the defaults. */
static int config_of(const char *train, gim_train_config *cfg, char **messages) {
    config_release();
    char src[2048];
    snprintf(src, sizeof src, "model m {\n    input x: [batch, 3]\n    output relu(x)\n}\ntrain {\n%s}\n", train);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    gim_diag_init(&cfg_diag, out);
    cfg_arena = gim_arena_new();
    gim_program *p = gim_parse_program_text(&cfg_diag, cfg_arena, "cfg.gim", src, strlen(src), NULL);
    gim_train_config_defaults(cfg);
    int r = p && cfg_diag.n_errors == 0 ? gim_config_from_program(&cfg_diag, p, cfg) : -2;
    fclose(out);
    cfg_diag.out = NULL;
    *messages = gim_xstrdup(buf ? buf : "");
    free(buf);
    /* cfg's strings point into the AST: kept until the next call */
    return r;
}

static void test_train_block(void) {
    gim_train_config c;
    char *m;
    gim_train_config_defaults(&c);
    CU_ASSERT(c.batch == 32 && c.epochs == 1 && c.optimizer == GIM_OPT_ADAM && c.lr == 1e-3 && c.beta1 == 0.9 &&
              c.beta2 == 0.999 && c.eps == 1e-8 && c.schedule == GIM_SCHED_SIMULTANEOUS && c.seed == 0);
    CU_ASSERT_EQUAL(config_of("    dataset \"fashion-mnist\"\n    batch 8\n    epochs 3\n    steps 100\n"
                              "    optimizer adam(lr=2e-4, beta2=0.99, weight_decay=0.01)\n    schedule async\n"
                              "    seed 7\n    threads 2\n    save_every 50\n    out \"runs/x\"\n",
                              &c, &m),
                    0);
    CU_ASSERT_STRING_EQUAL(m, "");
    CU_ASSERT_STRING_EQUAL(c.dataset, "fashion-mnist");
    CU_ASSERT(c.batch == 8 && c.epochs == 3 && c.steps == 100 && c.seed == 7 && c.threads == 2 && c.save_every == 50);
    CU_ASSERT(c.optimizer == GIM_OPT_ADAM && c.lr == 2e-4 && c.beta1 == 0.9 && c.beta2 == 0.99 &&
              c.weight_decay == 0.01);
    CU_ASSERT_EQUAL(c.schedule, GIM_SCHED_ASYNC);
    CU_ASSERT_STRING_EQUAL(c.out_dir, "runs/x");
    gim_free(m);
    CU_ASSERT_EQUAL(config_of("    optimizer sgd(0.1, momentum=0.9)\n    schedule sequential\n", &c, &m), 0);
    CU_ASSERT(c.optimizer == GIM_OPT_SGD && c.lr == 0.1 && c.momentum == 0.9 && c.schedule == GIM_SCHED_SEQUENTIAL);
    gim_free(m);
    /* errors: located, with the nearest name, all of them */
    CU_ASSERT_EQUAL(config_of("    batchsize 8\n    optimizer adamw(lr=1)\n    schedule greedy\n    batch -1\n"
                              "    seed 1.5\n",
                              &c, &m),
                    -1);
    CU_ASSERT(strstr(m, "cfg.gim:6:5: error: unknown train key 'batchsize'; did you mean 'batch'?") != NULL);
    CU_ASSERT(strstr(m, "unknown optimizer 'adamw'; did you mean 'adam'?") != NULL);
    CU_ASSERT(strstr(m, "unknown schedule 'greedy' (expected one of: simultaneous, sequential, async)") != NULL);
    CU_ASSERT(strstr(m, "'batch' must be between 1 and 1048576; got -1") != NULL);
    CU_ASSERT(strstr(m, "'seed' expects an integer") != NULL);
    gim_free(m);
    CU_ASSERT_EQUAL(config_of("    optimizer sgd(lr=-1, beta1=0.9)\n", &c, &m), -1);
    CU_ASSERT(strstr(m, "sgd's 'lr' must be > 0; got -1") != NULL);
    CU_ASSERT(strstr(m, "unknown sgd argument 'beta1'") != NULL);
    gim_free(m);
    config_release();
}

int main(void) {
    static const gim_test tests[] = {
        {"fashion param counts", test_fashion_param_counts},
        {"fashion FLOPs", test_fashion_flops},
        {"number formats", test_number_formats},
        {"check table of models", test_check_table_of_models},
        {"graph as DOT", test_graph_dot},
        {"driver usage", test_driver_usage},
        {"train block", test_train_block},
        {NULL, NULL},
    };
    return gim_run_suite("check", tests);
}
