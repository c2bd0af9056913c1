/* The driver's shared parts: command-line options, the compilation pipeline
 * every command runs, and the commands `check` and `graph`. */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "suggest.h"

/* ---- options ------------------------------------------------------------------- */

enum {
    OPT_BATCH = 256, OPT_E2E, OPT_DATA, OPT_EPOCHS, OPT_STEPS, OPT_LR, OPT_SCHEDULE, OPT_THREADS, OPT_SEED,
    OPT_OUT, OPT_RESUME, OPT_BACKWARD, OPT_MODULE, OPT_FN, OPT_ASM, OPT_WEIGHTS, OPT_STDLIB, OPT_HELP,
    OPT_SAVE_EVERY, OPT_POOL, OPT_RANDOM_INIT, OPT_COMPARE_RANDOM, OPT_TEXT, OPT_CACHE_DTYPE, OPT_REFRESH, OPT_REPORT,
    OPT_PLACEMENT, OPT_REPLAY, OPT_MAX_REUSE, OPT_PEER_TIMEOUT, OPT_RANKS,
};

static const struct option cli_long[] = {
    {"batch", required_argument, NULL, OPT_BATCH},     {"e2e", no_argument, NULL, OPT_E2E},
    {"data", required_argument, NULL, OPT_DATA},       {"epochs", required_argument, NULL, OPT_EPOCHS},
    {"steps", required_argument, NULL, OPT_STEPS},     {"lr", required_argument, NULL, OPT_LR},
    {"schedule", required_argument, NULL, OPT_SCHEDULE}, {"threads", required_argument, NULL, OPT_THREADS},
    {"seed", required_argument, NULL, OPT_SEED},       {"out", required_argument, NULL, OPT_OUT},
    {"resume", no_argument, NULL, OPT_RESUME},         {"backward", no_argument, NULL, OPT_BACKWARD},
    {"module", required_argument, NULL, OPT_MODULE},   {"fn", required_argument, NULL, OPT_FN},
    {"asm", no_argument, NULL, OPT_ASM},               {"weights", required_argument, NULL, OPT_WEIGHTS},
    {"stdlib", required_argument, NULL, OPT_STDLIB},   {"help", no_argument, NULL, OPT_HELP},
    {"save-every", required_argument, NULL, OPT_SAVE_EVERY}, {"pool", required_argument, NULL, OPT_POOL},
    {"random-init", no_argument, NULL, OPT_RANDOM_INIT}, {"compare-random", no_argument, NULL, OPT_COMPARE_RANDOM},
    {"text", no_argument, NULL, OPT_TEXT},
    {"cache-dtype", required_argument, NULL, OPT_CACHE_DTYPE}, {"refresh", required_argument, NULL, OPT_REFRESH},
    {"report", no_argument, NULL, OPT_REPORT},
    {"placement", required_argument, NULL, OPT_PLACEMENT}, {"replay", required_argument, NULL, OPT_REPLAY},
    {"max-reuse", required_argument, NULL, OPT_MAX_REUSE}, {"peer-timeout", required_argument, NULL, OPT_PEER_TIMEOUT},
    {"ranks", required_argument, NULL, OPT_RANKS},
    {NULL, 0, NULL, 0},
};

/* Which gim_cli_opt bit an option sets. */
static unsigned cli_bit(int opt) {
    switch (opt) {
    case OPT_BATCH: return GIM_CLI_BATCH;
    case OPT_E2E: return GIM_CLI_E2E;
    case OPT_DATA: return GIM_CLI_DATA;
    case OPT_EPOCHS: return GIM_CLI_EPOCHS;
    case OPT_STEPS: return GIM_CLI_STEPS;
    case OPT_LR: return GIM_CLI_LR;
    case OPT_SCHEDULE: return GIM_CLI_SCHEDULE;
    case OPT_THREADS: return GIM_CLI_THREADS;
    case OPT_SEED: return GIM_CLI_SEED;
    case OPT_OUT: return GIM_CLI_OUT;
    case OPT_RESUME: return GIM_CLI_RESUME;
    case OPT_BACKWARD: return GIM_CLI_BACKWARD;
    case OPT_MODULE: return GIM_CLI_MODULE;
    case OPT_FN: return GIM_CLI_FN;
    case OPT_ASM: return GIM_CLI_ASM;
    case OPT_WEIGHTS: return GIM_CLI_WEIGHTS;
    case OPT_STDLIB: return GIM_CLI_STDLIB;
    case OPT_SAVE_EVERY: return GIM_CLI_SAVE_EVERY;
    case OPT_POOL: return GIM_CLI_POOL;
    case OPT_RANDOM_INIT: return GIM_CLI_RANDOM_INIT;
    case OPT_COMPARE_RANDOM: return GIM_CLI_COMPARE_RANDOM;
    case OPT_TEXT: return GIM_CLI_TEXT;
    case OPT_CACHE_DTYPE: return GIM_CLI_CACHE_DTYPE;
    case OPT_REFRESH: return GIM_CLI_REFRESH;
    case OPT_REPORT: return GIM_CLI_REPORT;
    case OPT_PLACEMENT: return GIM_CLI_PLACEMENT;
    case OPT_REPLAY:
    case OPT_MAX_REUSE:
    case OPT_PEER_TIMEOUT: return GIM_CLI_DIST;
    case OPT_RANKS: return GIM_CLI_RANKS;
    case 'o': return GIM_CLI_OUTPUT;
    case 'c': return GIM_CLI_OBJECT;
    case 'O': return GIM_CLI_OPT_LEVEL;
    }
    return 0;
}

/* A whole-string integer in [lo, hi]. */
static bool cli_int(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static int cli_usage_error(const char *cmd, const char *usage, int *status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int cli_usage_error(const char *cmd, const char *usage, int *status, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "gimc %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    /* the usage line, then a pointer to the rest */
    const char *nl = strchr(usage, '\n');
    fprintf(stderr, "\n%.*s\nsee 'gimc %s --help'\n", nl ? (int)(nl - usage) : (int)strlen(usage), usage, cmd);
    *status = GIMC_USAGE;
    return -1;
}

int gim_cli_parse(int argc, char **argv, unsigned allowed, const char *usage, gim_cli *o, int *status) {
    const char *cmd = argv[0];
    memset(o, 0, sizeof *o);
    o->opt_level = 2;
    *status = GIMC_OK;
    optind = 0;    /* GNU: full reinitialisation */
    opterr = 0;    /* we word our own messages */
    int c;
    while ((c = getopt_long(argc, argv, ":ho:cO:", cli_long, NULL)) != -1) {
        const char *arg = optarg;
        int64_t v;
        if (c == 'h' || c == OPT_HELP) {
            fputs(usage, stdout);
            return -1;
        }
        if (c == '?') {
            if (optopt) return cli_usage_error(cmd, usage, status, "unknown option '-%c'", optopt);
            return cli_usage_error(cmd, usage, status, "unknown option '%s'", argv[optind - 1]);
        }
        if (c == ':') return cli_usage_error(cmd, usage, status, "option '%s' needs a value", argv[optind - 1]);
        unsigned bit = cli_bit(c);
        if (!(allowed & bit)) {
            const char *name = NULL;
            for (const struct option *l = cli_long; l->name; l++)
                if (l->val == c) name = l->name;
            if (name) return cli_usage_error(cmd, usage, status, "option '--%s' does not apply to this command", name);
            return cli_usage_error(cmd, usage, status, "option '-%c' does not apply to this command", c);
        }
        o->given |= bit;
        switch (c) {
        case OPT_BATCH:
            if (!cli_int(arg, 1, GIM_MAX_BATCH, &v))
                return cli_usage_error(cmd, usage, status, "--batch expects an integer from 1 to %" PRId64 "; got '%s'",
                                       GIM_MAX_BATCH, arg);
            o->batch = v;
            break;
        case OPT_EPOCHS:
        case OPT_STEPS:
            if (!cli_int(arg, 0, INT64_C(1) << 40, &v))
                return cli_usage_error(cmd, usage, status, "--%s expects a non-negative integer; got '%s'",
                                       c == OPT_EPOCHS ? "epochs" : "steps", arg);
            if (c == OPT_EPOCHS) o->epochs = v;
            else o->steps = v;
            break;
        case OPT_LR: {
            char *end;
            errno = 0;
            double x = strtod(arg, &end);
            if (errno || end == arg || *end || !(x > 0) || !isfinite(x))
                return cli_usage_error(cmd, usage, status, "--lr expects a positive number; got '%s'", arg);
            o->lr = x;
            break;
        }
        case OPT_SAVE_EVERY:
            if (!cli_int(arg, 1, INT64_C(1) << 40, &v))
                return cli_usage_error(cmd, usage, status, "--save-every expects a positive integer; got '%s'", arg);
            o->save_every = v;
            break;
        case OPT_POOL:
            if (strcmp(arg, "mean") && strcmp(arg, "flat"))
                return cli_usage_error(cmd, usage, status, "--pool expects flat or mean; got '%s'", arg);
            o->pool_mean = !strcmp(arg, "mean");
            break;
        case OPT_CACHE_DTYPE:
            if (strcmp(arg, "f32") && strcmp(arg, "bf16"))
                return cli_usage_error(cmd, usage, status, "--cache-dtype expects f32 or bf16; got '%s'", arg);
            o->cache_dtype = !strcmp(arg, "bf16") ? GIM_CACHE_BF16 : GIM_CACHE_F32;
            break;
        case OPT_REFRESH:
            if (!cli_int(arg, 1, INT64_C(1) << 40, &v))
                return cli_usage_error(cmd, usage, status, "--refresh expects a positive number of epochs; got '%s'", arg);
            o->refresh = v;
            break;
        case OPT_PLACEMENT: o->placement = arg; break;
        case OPT_REPLAY:
        case OPT_MAX_REUSE:
            if (!cli_int(arg, 1, c == OPT_REPLAY ? 1024 : 16, &v))
                return cli_usage_error(cmd, usage, status, "--%s expects an integer from 1 to %d; got '%s'",
                                       c == OPT_REPLAY ? "replay" : "max-reuse", c == OPT_REPLAY ? 1024 : 16, arg);
            if (c == OPT_REPLAY) o->replay = (int)v;
            else o->max_reuse = (int)v;
            break;
        case OPT_PEER_TIMEOUT: {
            char *end;
            errno = 0;
            double x = strtod(arg, &end);
            if (errno || end == arg || *end || !(x > 0) || !isfinite(x))
                return cli_usage_error(cmd, usage, status, "--peer-timeout expects a positive number of seconds; got '%s'",
                                       arg);
            o->peer_timeout = x;
            break;
        }
        case OPT_RANKS:
            if (!cli_int(arg, 1, 4096, &v))
                return cli_usage_error(cmd, usage, status, "--ranks expects an integer from 1 to 4096; got '%s'", arg);
            o->ranks = (int)v;
            break;
        case OPT_RANDOM_INIT: o->random_init = true; break;
        case OPT_COMPARE_RANDOM: o->compare_random = true; break;
        case OPT_SCHEDULE: {
            static const char *const names[] = {"simultaneous", "sequential", "async"};
            int found = -1;
            for (int i = 0; i < 3; i++)
                if (!strcmp(arg, names[i])) found = i;
            if (found < 0)
                return cli_usage_error(cmd, usage, status,
                                       "--schedule expects simultaneous, sequential or async; got '%s'", arg);
            o->schedule = (gim_schedule)found;
            break;
        }
        case OPT_THREADS:
            if (!cli_int(arg, 0, 4096, &v))
                return cli_usage_error(cmd, usage, status, "--threads expects an integer from 0 to 4096; got '%s'", arg);
            o->threads = (int)v;
            break;
        case OPT_SEED:
            if (!cli_int(arg, 0, INT64_MAX, &v))
                return cli_usage_error(cmd, usage, status, "--seed expects a non-negative integer; got '%s'", arg);
            o->seed = (uint64_t)v;
            break;
        case OPT_MODULE:
            if (!cli_int(arg, 1, 1 << 20, &v))
                return cli_usage_error(cmd, usage, status, "--module expects a module number (1, 2, ...); got '%s'", arg);
            o->module = (int)v;
            break;
        case OPT_FN:
            if (strcmp(arg, "forward") && strcmp(arg, "step"))
                return cli_usage_error(cmd, usage, status, "--fn expects forward or step; got '%s'", arg);
            o->fn = arg;
            break;
        case 'O':
            if (!cli_int(arg, 0, 3, &v))
                return cli_usage_error(cmd, usage, status, "-O expects a level 0 to 3; got '%s'", arg);
            o->opt_level = (int)v;
            break;
        case OPT_E2E: o->e2e = true; break;
        case OPT_RESUME: o->resume = true; break;
        case OPT_BACKWARD: o->backward = true; break;
        case OPT_TEXT: o->text = true; break;
        case OPT_REPORT: o->report = true; break;
        case OPT_ASM: o->asm_out = true; break;
        case 'c': o->object = true; break;
        case OPT_DATA: o->data = arg; break;
        case OPT_OUT: o->out_dir = arg; break;
        case 'o': o->output = arg; break;
        case OPT_WEIGHTS: o->weights = arg; break;
        case OPT_STDLIB: o->stdlib = arg; break;
        }
    }
    if (optind >= argc)
        return cli_usage_error(cmd, usage, status, !strcmp(cmd, "report") ? "no run directory given" : "no model file given");
    o->file = argv[optind++];
    if (optind < argc) return cli_usage_error(cmd, usage, status, "unexpected argument '%s'", argv[optind]);
    return 0;
}

void gim_cli_apply(const gim_cli *o, gim_train_config *cfg) {
    if (o->given & GIM_CLI_BATCH) cfg->batch = o->batch;
    if (o->given & GIM_CLI_E2E) cfg->e2e = o->e2e;
    if (o->given & GIM_CLI_DATA) cfg->dataset = o->data;
    if (o->given & GIM_CLI_EPOCHS) cfg->epochs = o->epochs;
    if (o->given & GIM_CLI_STEPS) cfg->steps = o->steps;
    if (o->given & GIM_CLI_LR) cfg->lr = o->lr;
    if (o->given & GIM_CLI_SCHEDULE) cfg->schedule = o->schedule;
    if (o->given & GIM_CLI_THREADS) cfg->threads = o->threads;
    if (o->given & GIM_CLI_SEED) cfg->seed = o->seed;
    if (o->given & GIM_CLI_OUT) cfg->out_dir = o->out_dir;
    if (o->given & GIM_CLI_RESUME) cfg->resume = o->resume;
    if (o->given & GIM_CLI_SAVE_EVERY) cfg->save_every = o->save_every;
    if (o->given & GIM_CLI_CACHE_DTYPE) cfg->cache_dtype = o->cache_dtype;
    if (o->given & GIM_CLI_REFRESH) cfg->refresh = o->refresh;
    if (o->replay) cfg->replay_capacity = o->replay;
    if (o->max_reuse) cfg->max_reuse = o->max_reuse;
    if (o->peer_timeout > 0) cfg->peer_timeout = o->peer_timeout;
}

/* ---- the pipeline ---------------------------------------------------------------- */

void gim_session_init(gim_session *s) {
    memset(s, 0, sizeof *s);
    gim_diag_init(&s->diag, stderr);
    s->arena = gim_arena_new();
}

void gim_session_release(gim_session *s) {
    if (s->model) gim_exec_model_free(s->model);
    gim_graph_free(s->graph);
    gim_arena_free(s->arena);
    gim_diag_release(&s->diag);
    memset(s, 0, sizeof *s);
}

/* Every stage from source text to native code, in order. Each stage reports
 * its own errors; we stop at the first stage that had any. */
int gim_session_compile(gim_session *s, const gim_cli *o, gim_stage upto) {
    gim_diag *d = &s->diag;
    /* source -> AST */
    s->program = gim_parse_program(d, s->arena, o->file, o->stdlib);
    if (!s->program || d->n_errors) return GIMC_BAD_INPUT;
    /* train block -> config, with the command line on top */
    gim_train_config_defaults(&s->cfg);
    if (gim_config_from_program(d, s->program, &s->cfg)) return GIMC_BAD_INPUT;
    gim_cli_apply(o, &s->cfg);
    /* AST -> graph, batch bound */
    s->graph = gim_lower(d, s->program, s->cfg.batch);
    if (!s->graph) return GIMC_BAD_INPUT;
    gim_config_finish(&s->cfg, s->arena, s->graph->model_name);
    /* graph -> modules */
    if (gim_partition(d, s->graph, s->cfg.e2e)) return GIMC_BAD_INPUT;
    if (upto == GIM_STAGE_PARTITION) return GIMC_OK;
    /* modules + backward */
    if (gim_autodiff(d, s->graph)) return GIMC_BAD_INPUT;
    if (upto == GIM_STAGE_AUTODIFF) return GIMC_OK;
    /* LLVM IR -> native code */
    gim_fuse(s->graph);
    gim_cg_options cg = {.opt_level = o->opt_level, .cfg = &s->cfg};
    s->model = gim_jit(d, s->graph, &cg);
    return s->model ? GIMC_OK : GIMC_BAD_INPUT;
}

/* ---- gimc check -------------------------------------------------------------------- */

static const char check_usage[] =
    "usage: gimc check FILE.gim [--batch N] [--e2e] [--ranks R [--placement LIST]] [--stdlib DIR]\n"
    "\n"
    "Parses and checks a model: names, arguments, shapes, modules and losses.\n"
    "Prints one row per module: ops, parameters, activation floats per example,\n"
    "and FLOPs per example for the forward pass and for a training step.\n"
    "\n"
    "  --batch N      bind the batch size (default: the train block's, else 32)\n"
    "  --e2e          check the end-to-end variant (one module, the last loss)\n"
    "  --ranks R      also the placement `mpirun -np R gimc train` would use: each\n"
    "                 rank's modules, share of the step FLOPs, bytes sent per batch\n"
    "                 and the predicted speed-up (docs/distributed.md)\n"
    "  --placement L  that placement instead of the balanced one (module -> rank, e.g. 0,0,1)\n"
    "  --stdlib DIR   where imports not found next to the file are looked up\n"
    "  -h, --help     show this help\n"
    "\n"
    "Exit status: 0 the model is valid, 1 it has errors (on stderr), 2 bad usage.\n";

int cmd_check(int argc, char **argv) {
    gim_cli o;
    int status;
    if (gim_cli_parse(argc, argv, GIM_CLI_BATCH | GIM_CLI_E2E | GIM_CLI_STDLIB | GIM_CLI_RANKS | GIM_CLI_PLACEMENT,
                      check_usage, &o, &status))
        return status;
    if (o.placement && !o.ranks) {
        fprintf(stderr, "gimc check: --placement needs --ranks R\n");
        return GIMC_USAGE;
    }
    gim_session s;
    gim_session_init(&s);
    status = gim_session_compile(&s, &o, GIM_STAGE_PARTITION);
    if (status == GIMC_OK) gim_print_check_table(stdout, s.graph);
    if (status == GIMC_OK && o.ranks) {
        int *rank_of = calloc((size_t)s.graph->n_modules, sizeof(int));
        char err[512];
        if (rank_of && gim_choose_placement(s.graph, o.ranks, o.placement, rank_of, err, sizeof err) == 0) {
            gim_print_placement(stdout, s.graph, o.ranks, rank_of);
        } else {
            fprintf(stderr, "gimc check: %s\n", rank_of ? err : "out of memory");
            status = GIMC_USAGE;
        }
        free(rank_of);
    }
    gim_session_release(&s);
    return status;
}

/* ---- gimc graph -------------------------------------------------------------------- */

static const char graph_usage[] =
    "usage: gimc graph FILE.gim [--backward] [--text] [-o FILE] [--batch N] [--e2e] [--stdlib DIR]\n"
    "\n"
    "Prints the model's graph in Graphviz DOT: one cluster per module, gradient\n"
    "blocks as dashed red edges (no gradient crosses them). Render with\n"
    "`dot -Tsvg graph.dot -o graph.svg`.\n"
    "\n"
    "  --backward     include the generated backward graph\n"
    "  --text         the graph as text instead, one node per line:\n"
    "                 %id = op(inputs) attrs : shape  # name @file:line:col module\n"
    "  -o FILE        write to FILE instead of standard output\n"
    "  --batch N      bind the batch size (default: the train block's, else 32)\n"
    "  --e2e          the end-to-end variant (one module, the last loss)\n"
    "  --stdlib DIR   where imports not found next to the file are looked up\n"
    "  -h, --help     show this help\n";

int cmd_graph(int argc, char **argv) {
    gim_cli o;
    int status;
    if (gim_cli_parse(argc, argv,
                      GIM_CLI_BATCH | GIM_CLI_E2E | GIM_CLI_STDLIB | GIM_CLI_BACKWARD | GIM_CLI_OUTPUT | GIM_CLI_TEXT,
                      graph_usage, &o, &status))
        return status;
    gim_session s;
    gim_session_init(&s);
    status = gim_session_compile(&s, &o, o.backward ? GIM_STAGE_AUTODIFF : GIM_STAGE_PARTITION);
    if (status == GIMC_OK) {
        FILE *out = stdout;
        if (o.output && !(out = fopen(o.output, "w"))) {
            fprintf(stderr, "gimc graph: cannot write '%s': %s\n", o.output, strerror(errno));
            status = GIMC_BAD_INPUT;
        } else {
            if (o.text) gim_graph_print(out, s.graph);
            else gim_print_dot(out, s.graph, o.backward);
            if (out != stdout && fclose(out)) {
                fprintf(stderr, "gimc graph: cannot write '%s': %s\n", o.output, strerror(errno));
                status = GIMC_BAD_INPUT;
            }
        }
    }
    gim_session_release(&s);
    return status;
}
