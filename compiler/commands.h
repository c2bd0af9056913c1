/* The gimc driver's commands and the session they share (private to the
 * driver: compiler/main.c and the cmd_*.c / driver.c files).
 *
 * Adding a command: write `int cmd_NAME(int argc, char **argv)` in its own
 * file under compiler/ (argv[0] is the command name), declare it below, and
 * put the function in its row of the table in main.c. A command parses its
 * options with gim_cli_parse (one option table for all commands, each
 * command allowing the options it understands), then runs the pipeline with
 * gim_session_compile up to the stage it needs. */
#ifndef GIM_COMMANDS_H
#define GIM_COMMANDS_H

#include <stdbool.h>
#include <stdint.h>

#include "gim_compiler.h"
#include "gim_data.h"

#define GIMC_VERSION "0.1.0"

/* Exit statuses of every command. */
enum { GIMC_OK = 0, GIMC_BAD_INPUT = 1, GIMC_USAGE = 2 };

/* ---- command line --------------------------------------------------------- */

/* Every option any command accepts; a command allows a subset (a mask of
 * these bits). */
typedef enum gim_cli_opt {
    GIM_CLI_BATCH = 1 << 0,      /* --batch N */
    GIM_CLI_E2E = 1 << 1,        /* --e2e */
    GIM_CLI_DATA = 1 << 2,       /* --data PATH */
    GIM_CLI_EPOCHS = 1 << 3,     /* --epochs N */
    GIM_CLI_STEPS = 1 << 4,      /* --steps N */
    GIM_CLI_LR = 1 << 5,         /* --lr X */
    GIM_CLI_SCHEDULE = 1 << 6,   /* --schedule S */
    GIM_CLI_THREADS = 1 << 7,    /* --threads T */
    GIM_CLI_SEED = 1 << 8,       /* --seed S */
    GIM_CLI_OUT = 1 << 9,        /* --out DIR */
    GIM_CLI_RESUME = 1 << 10,    /* --resume */
    GIM_CLI_BACKWARD = 1 << 11,  /* --backward */
    GIM_CLI_OUTPUT = 1 << 12,    /* -o FILE */
    GIM_CLI_MODULE = 1 << 13,    /* --module N */
    GIM_CLI_FN = 1 << 14,        /* --fn forward|step */
    GIM_CLI_OPT_LEVEL = 1 << 15, /* -O0 .. -O3 */
    GIM_CLI_ASM = 1 << 16,       /* --asm */
    GIM_CLI_OBJECT = 1 << 17,    /* -c */
    GIM_CLI_WEIGHTS = 1 << 18,   /* --weights F */
    GIM_CLI_STDLIB = 1 << 19,    /* --stdlib DIR */
    GIM_CLI_SAVE_EVERY = 1 << 20, /* --save-every N */
    GIM_CLI_POOL = 1 << 21,      /* --pool flat|mean */
    GIM_CLI_RANDOM_INIT = 1 << 22, /* --random-init */
    GIM_CLI_COMPARE_RANDOM = 1 << 23, /* --compare-random */
    GIM_CLI_TEXT = 1 << 24,      /* --text (graph: the text dump) */
    GIM_CLI_CACHE_DTYPE = 1 << 25, /* --cache-dtype f32|bf16 */
    GIM_CLI_REFRESH = 1 << 26,   /* --refresh N */
    GIM_CLI_REPORT = 1 << 27,    /* --report (train: refresh report.html at checkpoints) */
    GIM_CLI_PLACEMENT = 1 << 28, /* --placement R,R,... (under mpirun; check --ranks) */
    GIM_CLI_DIST = 1 << 29,      /* --replay N, --max-reuse N, --peer-timeout S (under mpirun) */
    GIM_CLI_RANKS = 1 << 30,     /* --ranks R (check) */
} gim_cli_opt;

/* The options the train block can take, plus --e2e and --stdlib. */
#define GIM_CLI_TRAIN_OPTS                                                                           \
    (GIM_CLI_BATCH | GIM_CLI_E2E | GIM_CLI_DATA | GIM_CLI_EPOCHS | GIM_CLI_STEPS | GIM_CLI_LR |      \
     GIM_CLI_SCHEDULE | GIM_CLI_THREADS | GIM_CLI_SEED | GIM_CLI_OUT | GIM_CLI_RESUME | GIM_CLI_STDLIB |   \
     GIM_CLI_SAVE_EVERY | GIM_CLI_CACHE_DTYPE | GIM_CLI_REFRESH | GIM_CLI_PLACEMENT | GIM_CLI_DIST)

typedef struct gim_cli {
    const char *file;          /* the model (the one positional argument) */
    unsigned given;            /* gim_cli_opt bits seen */
    int64_t batch, epochs, steps;
    double lr;
    gim_schedule schedule;
    int threads;
    uint64_t seed;
    const char *data, *out_dir, *output, *weights, *stdlib;
    bool e2e, resume, backward, asm_out, object, text;
    int module;                /* --module N (1-based as given); 0: all */
    const char *fn;            /* --fn */
    int opt_level;             /* -O: default 2 */
    int64_t save_every;        /* --save-every N */
    bool pool_mean;            /* --pool mean */
    bool random_init, compare_random;
    gim_cache_dtype cache_dtype; /* --cache-dtype */
    int64_t refresh;           /* --refresh N */
    bool report;               /* --report */
    const char *placement;     /* --placement, as given */
    int replay, max_reuse;     /* --replay, --max-reuse */
    double peer_timeout;       /* --peer-timeout */
    int ranks;                 /* --ranks */
} gim_cli;

/* Parses argv (argv[0] is the command name) allowing `allowed` options.
 * `usage` is the command's help text, printed for --help (returns -1 with
 * *status GIMC_OK) and after a usage error (returns -1 with *status
 * GIMC_USAGE, message on stderr). Returns 0 when the command should run. */
int gim_cli_parse(int argc, char **argv, unsigned allowed, const char *usage, gim_cli *o, int *status);

/* Puts the command line's values over cfg (train block or defaults). */
void gim_cli_apply(const gim_cli *o, gim_train_config *cfg);

/* ---- the pipeline ------------------------------------------------------------ */

typedef enum gim_stage {
    GIM_STAGE_PARTITION,       /* parse, config, lower, partition: check, graph */
    GIM_STAGE_AUTODIFF,        /* + backward nodes: graph --backward, ir */
    GIM_STAGE_NATIVE,          /* + native code (gim_jit at the command line's -O,
                                  default 2) in session.model: train, eval, bench */
} gim_stage;

typedef struct gim_session {
    gim_diag diag;
    gim_arena *arena;          /* the AST and the driver's strings */
    gim_program *program;
    gim_train_config cfg;
    gim_graph *graph;
    gim_exec_model *model;     /* GIM_STAGE_NATIVE only; freed with the session */
} gim_session;

void gim_session_init(gim_session *s);
void gim_session_release(gim_session *s);
/* Runs the pipeline on o->file up to `upto`; returns GIMC_OK or
 * GIMC_BAD_INPUT after the errors were reported on stderr. */
int gim_session_compile(gim_session *s, const gim_cli *o, gim_stage upto);

/* ---- what train and eval share (cmd_train.c) -------------------------------------- */

/* The configured data set (the train block's `dataset`, else fashion-mnist);
 * GIMC_OK, or GIMC_BAD_INPUT after the error was printed as "gimc CMD: ...". */
int cmd_load_data(const char *cmd, const gim_train_config *cfg, gim_dataset *ds);
/* s's graph to native code at -O opt_level; NULL after printing errors. */
gim_exec_model *cmd_compile_model(gim_session *s, int opt_level);
/* The runtime pool's threads for cfg (one under the async schedule). */
void cmd_set_threads(const gim_train_config *cfg);

/* ---- audio data (cmd_audio.c) ------------------------------------------------------ */

struct gim_audio_corpus;
struct gim_probe_options;
struct gim_train_state;
/* Whether cfg's data set is a tree of audio files (not an IDX directory). */
bool cmd_audio_data(const gim_train_config *cfg);
/* Opens it with m's input length as the crop and cache_dir (NULL: none) for
 * the decoded cache; prints the notes and a summary. GIMC_OK, or
 * GIMC_BAD_INPUT after printing the error as "gimc CMD: error: ...". */
int cmd_audio_open(const char *cmd, const gim_train_config *cfg, const gim_exec_model *m, const char *cache_dir,
                   struct gim_audio_corpus *c);
/* The speaker probe (gimc eval on audio): how many crops of each training
 * utterance it reads (the test ones: the centred crop), and its classifier's
 * settings (batch, epochs, lr; over gim_probe_defaults). */
int64_t cmd_audio_probe_crops(void);
void cmd_audio_probe_options(struct gim_probe_options *po);

/* ---- the commands -------------------------------------------------------------- */

int cmd_check(int argc, char **argv);   /* driver.c */
int cmd_graph(int argc, char **argv);   /* driver.c */
int cmd_ir(int argc, char **argv);      /* cmd_ir.c */
int cmd_train(int argc, char **argv);   /* cmd_train.c */
int cmd_eval(int argc, char **argv);     /* cmd_eval.c */
int cmd_report(int argc, char **argv);   /* cmd_report.c */
int cmd_bench(int argc, char **argv);   /* cmd_bench.c */
int cmd_data(int argc, char **argv);    /* cmd_data.c */
int cmd_export(int argc, char **argv);  /* cmd_export.c */

#endif
