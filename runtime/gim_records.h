/* What a run leaves beside its checkpoints, and the readers the report
 * uses: metrics.csv (one row per module per step, written by gim_train),
 * run.json (the run's settings, written by gimc train), eval.json (the
 * probe's accuracies, written by gimc eval). Every reader takes any bytes
 * and answers with a result or an error naming the file, and the line where
 * there is one; none of them crashes (tests/fuzz/fuzz_records.c). */
#ifndef GIM_RECORDS_H
#define GIM_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- JSON (json.c) ------------------------------------------------------------ */

typedef enum gim_json_kind {
    GIM_JSON_NULL, GIM_JSON_BOOL, GIM_JSON_NUMBER, GIM_JSON_STRING, GIM_JSON_ARRAY, GIM_JSON_OBJECT,
} gim_json_kind;

typedef struct gim_json {
    gim_json_kind kind;
    bool boolean;              /* BOOL */
    double num;                /* NUMBER (always finite) */
    const char *str;           /* STRING: UTF-8, no NUL inside */
    int n;                     /* ARRAY, OBJECT: items */
    struct gim_json **items;   /* ARRAY: elements; OBJECT: values, in file order */
    char **keys;               /* OBJECT: keys, parallel to items */
    int line, col;             /* where the value starts */
} gim_json;

typedef struct gim_json_doc gim_json_doc;

/* Parses one JSON value (RFC 8259; a leading byte-order mark is skipped).
 * Returns NULL with err "LINE:COL: message" when the text is not JSON or
 * nests deeper than 64 levels. */
gim_json_doc *gim_json_parse(const char *text, size_t len, char *err, size_t errlen);
const gim_json *gim_json_root(const gim_json_doc *d);
void gim_json_free(gim_json_doc *d);
/* The value of the first `key` in an object; NULL when obj is not an object
 * or has no such key. */
const gim_json *gim_json_get(const gim_json *obj, const char *key);

/* Writers: a string with JSON escapes (NULL as null); a number in full
 * precision (a non-finite one as null). */
void gim_json_str(FILE *f, const char *s);
void gim_json_num(FILE *f, double x);

/* A text file written whole or not at all: gim_file_begin opens a
 * temporary file beside `path` (its name in tmp, tmplen >= strlen(path) +
 * 32); gim_file_commit closes it and renames it over path, or removes it
 * and fails naming path when any write or the close failed. */
FILE *gim_file_begin(const char *path, char *tmp, size_t tmplen, char *err, size_t errlen);
int gim_file_commit(FILE *f, const char *tmp, const char *path, char *err, size_t errlen);

/* ---- metrics.csv (metrics.c) ------------------------------------------------------ */

typedef struct gim_metrics_row {
    int64_t step, epoch;
    int module;                /* 1-based */
    double loss;               /* may be NaN or infinite: the step that stopped a run */
    double examples_per_s;
} gim_metrics_row;

typedef struct gim_metrics {
    gim_metrics_row *rows;     /* heap, in file order */
    int64_t n;
    int n_modules;             /* the largest module number seen */
    bool torn;                 /* a last line without its newline was left out (a run writing) */
} gim_metrics;

/* Reads PATH (header "step,epoch,module,loss,examples_per_s", then rows).
 * A last line without a newline is being written: it is left out. Any
 * other malformed line is an error "PATH:LINE: ...". Returns 0 or -1. */
int gim_metrics_read(const char *path, gim_metrics *m, char *err, size_t errlen);
/* The same on bytes in memory; `name` stands for the file in errors. */
int gim_metrics_parse(const char *text, size_t len, const char *name, gim_metrics *m, char *err, size_t errlen);
void gim_metrics_free(gim_metrics *m);

/* ---- eval.json (eval_results.c) -------------------------------------------------- */

/* One probe of one encoder: fractions in [0, 1]; loss is the probe's mean
 * training loss over its last epoch. */
typedef struct gim_probe_score {
    bool have;
    double train_acc, test_acc, loss;
} gim_probe_score;

typedef struct gim_eval_module {
    int module;                /* 1-based */
    int64_t features;          /* the probe's input size; 0: the module has no features */
    gim_probe_score trained, random;   /* the trained encoder, and the same encoder at initialisation */
} gim_eval_module;

/* One probing task over every module: what it predicts ("classes": the data
 * set's labels; other tasks, e.g. speakers, add their own), from which
 * features. */
typedef struct gim_eval_probe {
    char *task;
    char *features;            /* "flattened" or "mean-pooled" */
    int classes;
    int64_t train_examples, test_examples;
    int epochs, batch;         /* the probe's training */
    double lr;
    int n_modules;
    gim_eval_module *modules;
} gim_eval_probe;

typedef struct gim_eval_results {
    char *model, *model_file, *weights, *data;   /* weights NULL: random initialisation only */
    uint64_t seed;
    double seconds;            /* the evaluation's wall time */
    int n_probes;
    gim_eval_probe *probes;
} gim_eval_results;

/* Writes PATH atomically (a temporary file, then rename). */
int gim_eval_write(const char *path, const gim_eval_results *r, char *err, size_t errlen);
/* Reads and checks eval.json: "PATH: LINE:COL: ..." for bad JSON, "PATH:
 * probes[0].modules[1].trained.test_acc: ..." for a value that does not
 * belong. */
int gim_eval_read(const char *path, gim_eval_results *r, char *err, size_t errlen);
int gim_eval_parse(const char *text, size_t len, const char *name, gim_eval_results *r, char *err, size_t errlen);
void gim_eval_results_free(gim_eval_results *r);

#endif
