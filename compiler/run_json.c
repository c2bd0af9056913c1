/* run.json: what a training run was asked to do, written by gimc train when
 * it starts so that `gimc report` can show it beside the run's curves:
 *
 *   {"gim_run": 1, "model": NAME, "model_file": PATH, "started": ISO-8601 UTC,
 *    "gimc": VERSION, "command": "gimc train ...",
 *    "settings": {"data": ..., "schedule": ..., "batch": N, ...},
 *    "check_table": "model NAME: 3 modules, batch 32\n..."}
 *
 * "settings" is a flat object of strings and numbers, shown as it is; the
 * report needs no knowledge of its keys. */
#include "report.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "gim_records.h"

static void run_key(FILE *f, bool *first, const char *key) {
    fprintf(f, "%s\n    ", *first ? "" : ",");
    *first = false;
    gim_json_str(f, key);
    fputs(": ", f);
}

char *gim_check_table_text(const gim_graph *g) {
    char *table = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&table, &len);
    if (!mem) return NULL;
    gim_print_check_table(mem, g);
    if (fclose(mem)) {
        free(table);
        return NULL;
    }
    return table;
}

int gim_run_json_write(const char *dir, const char *model, const char *model_file, int n_modules,
                       const char *table, const gim_train_config *cfg, const char *data_dir, int argc,
                       char **argv, char *err, size_t errlen) {
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/run.json", dir);
    FILE *f = gim_file_begin(path, tmp, sizeof tmp, err, errlen);
    if (!f) return -1;
    char started[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    static const char *const schedules[] = {"simultaneous", "sequential", "async"};
    fputs("{\n  \"gim_run\": 1,\n  \"model\": ", f);
    gim_json_str(f, model);
    fputs(",\n  \"model_file\": ", f);
    gim_json_str(f, model_file);
    fprintf(f, ",\n  \"started\": \"%s\",\n  \"gimc\": \"%s\",\n  \"command\": ", started, GIMC_VERSION);
    /* the command line as typed (arguments with spaces quoted) */
    gim_sb cmd = {0};
    gim_sb_puts(&cmd, "gimc");
    for (int i = 0; i < argc; i++) {
        bool plain = argv[i][0] && strcspn(argv[i], " \t\n'\"\\$`") == strlen(argv[i]);
        gim_sb_printf(&cmd, plain ? " %s" : " '%s'", argv[i]);
    }
    gim_json_str(f, cmd.buf);
    gim_sb_free(&cmd);
    fputs(",\n  \"settings\": {", f);
    bool first = true;
    run_key(f, &first, "data");
    gim_json_str(f, cfg->dataset ? cfg->dataset : "fashion-mnist");
    run_key(f, &first, "data directory");
    gim_json_str(f, data_dir);
    run_key(f, &first, "training");
    gim_json_str(f, cfg->e2e ? "end to end" : "greedy (a loss per module)");
    if (!cfg->e2e) {
        run_key(f, &first, "schedule");
        gim_json_str(f, schedules[cfg->schedule >= 0 && cfg->schedule <= 2 ? cfg->schedule : 0]);
    }
    if (cfg->refresh > 0) {
        run_key(f, &first, "refresh caches every (epochs)");
        fprintf(f, "%lld", (long long)cfg->refresh);
    }
    run_key(f, &first, "modules");
    fprintf(f, "%d", n_modules);
    run_key(f, &first, "batch");
    fprintf(f, "%lld", (long long)cfg->batch);
    run_key(f, &first, "epochs");
    fprintf(f, "%lld", (long long)cfg->epochs);
    run_key(f, &first, "steps");
    if (cfg->steps > 0) fprintf(f, "%lld", (long long)cfg->steps);
    else gim_json_str(f, "whole epochs");
    run_key(f, &first, "optimizer");
    char opt[200];
    if (cfg->optimizer == GIM_OPT_SGD)
        snprintf(opt, sizeof opt, "sgd(lr=%g, momentum=%g, weight_decay=%g)", cfg->lr, cfg->momentum,
                 cfg->weight_decay);
    else
        snprintf(opt, sizeof opt, "adam(lr=%g, beta1=%g, beta2=%g, eps=%g, weight_decay=%g)", cfg->lr, cfg->beta1,
                 cfg->beta2, cfg->eps, cfg->weight_decay);
    gim_json_str(f, opt);
    run_key(f, &first, "seed");
    fprintf(f, "%llu", (unsigned long long)cfg->seed);
    run_key(f, &first, "threads");
    if (cfg->threads > 0) fprintf(f, "%d", cfg->threads);
    else gim_json_str(f, "all cores");
    run_key(f, &first, "checkpoint every");
    if (cfg->save_every > 0) fprintf(f, "%lld", (long long)cfg->save_every);
    else gim_json_str(f, "minute");
    run_key(f, &first, "resumed");
    fputs(cfg->resume ? "true" : "false", f);
    fputs("\n  },\n  \"check_table\": ", f);
    gim_json_str(f, table ? table : "");
    fputs("\n}\n", f);
    return gim_file_commit(f, tmp, path, err, errlen);
}
