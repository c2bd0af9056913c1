/* gimc: the driver. A table of subcommands, git-style; each command is a
 * function `int cmd_NAME(int argc, char **argv)` (argv[0] is its name) in its
 * own file, declared in commands.h. The compilation pipeline every command
 * runs is gim_session_compile (driver.c). */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "suggest.h"

typedef struct gimc_command {
    const char *name;
    int (*run)(int argc, char **argv);   /* NULL: not available yet */
    const char *summary;
} gimc_command;

static const gimc_command gimc_commands[] = {
    {"train", cmd_train, "compile and train a model (also: gimc FILE.gim)"},
    {"check", cmd_check, "parse and check a model; print its modules, parameters and FLOPs"},
    {"graph", cmd_graph, "print the model's graph as Graphviz DOT"},
    {"ir", cmd_ir, "print the generated LLVM IR, assembly, or an object file"},
    {"eval", cmd_eval, "linear-probe evaluation of each module's features"},
    {"report", cmd_report, "write a run's report page (RUN_DIR/report.html)"},
    {"bench", cmd_bench, "time training steps and compilation"},
    {"data", cmd_data, "make a data set: a synthetic speech corpus (gimc data speech)"},
    {"export", cmd_export, "write a module's features as a C function (object file and header)"},
};
#define GIMC_N_COMMANDS ((int)(sizeof gimc_commands / sizeof gimc_commands[0]))

static void gimc_help(FILE *out) {
    fprintf(out, "usage: gimc <command> FILE.gim [options]\n"
                 "       gimc FILE.gim [train options]    (the same as gimc train)\n"
                 "\n"
                 "gim compiles models written in the .gim language and trains them the\n"
                 "Greedy InfoMax way: each module between gradient blocks learns from its\n"
                 "own loss.\n\ncommands:\n");
    for (int i = 0; i < GIMC_N_COMMANDS; i++)
        fprintf(out, "  %-7s %s%s\n", gimc_commands[i].name, gimc_commands[i].summary,
                gimc_commands[i].run ? "" : " (not available yet)");
    fprintf(out, "\n'gimc <command> --help' describes a command's options.\n"
                 "Exit status: 0 success, 1 bad model or data, 2 bad usage.\n");
}

static const gimc_command *gimc_find(const char *name) {
    for (int i = 0; i < GIMC_N_COMMANDS; i++)
        if (!strcmp(gimc_commands[i].name, name)) return &gimc_commands[i];
    return NULL;
}

static int gimc_run(const gimc_command *c, int argc, char **argv) {
    if (!c->run) {
        fprintf(stderr, "gimc: '%s' is not available yet\n", c->name);
        return GIMC_USAGE;
    }
    return c->run(argc, argv);
}

static bool gimc_is_model_file(const char *arg) {
    size_t n = strlen(arg);
    return n > 4 && !strcmp(arg + n - 4, ".gim");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        gimc_help(stderr);
        return GIMC_USAGE;
    }
    const char *first = argv[1];
    if (!strcmp(first, "help") && argc > 2) {
        /* gimc help CMD: the command's own --help */
        const gimc_command *c = gimc_find(argv[2]);
        if (!c) {
            fprintf(stderr, "gimc: '%s' is not a gimc command. See 'gimc --help'.\n", argv[2]);
            return GIMC_USAGE;
        }
        char *help_argv[] = {(char *)c->name, (char *)"--help", NULL};
        return gimc_run(c, 2, help_argv);
    }
    if (!strcmp(first, "--help") || !strcmp(first, "-h") || !strcmp(first, "help")) {
        gimc_help(stdout);
        return GIMC_OK;
    }
    if (!strcmp(first, "--version")) {
        printf("gimc %s\n", GIMC_VERSION);
        return GIMC_OK;
    }
    const gimc_command *c = gimc_find(first);
    if (c) return gimc_run(c, argc - 1, argv + 1);
    if (gimc_is_model_file(first)) {
        /* gimc FILE.gim [options]: train, with argv[0] renamed to the command. */
        argv[0] = (char *)"train";
        return gimc_run(gimc_find("train"), argc, argv);
    }
    if (first[0] == '-') {
        fprintf(stderr, "gimc: unknown option '%s'; see 'gimc --help'\n", first);
        return GIMC_USAGE;
    }
    gim_suggest s;
    gim_suggest_init(&s, first);
    for (int i = 0; i < GIMC_N_COMMANDS; i++) gim_suggest_add(&s, gimc_commands[i].name);
    const char *best = gim_suggest_best(&s);
    if (best) fprintf(stderr, "gimc: '%s' is not a gimc command; did you mean '%s'? See 'gimc --help'.\n", first, best);
    else fprintf(stderr, "gimc: '%s' is not a gimc command. See 'gimc --help'.\n", first);
    return GIMC_USAGE;
}
