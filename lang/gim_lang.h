/* The language front end's public interface: source files, diagnostics, and
 * the AST of a whole program (the model file and everything it imports).
 *
 * Stage contract: gim_parse_program() reads source text and produces a
 * gim_program. Later stages read the AST and the source manager (for
 * diagnostics) and never re-read source files. */
#ifndef GIM_LANG_H
#define GIM_LANG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gim_util.h"

/* ---- source locations and diagnostics ------------------------------------ */

typedef struct gim_source {
    const char *path;   /* as the user named it, or as resolved for imports */
    const char *text;   /* whole file, NUL-terminated (may contain NULs inside) */
    size_t len;
} gim_source;

typedef struct gim_loc {
    const gim_source *src;  /* NULL: no location (e.g. command-line) */
    int line, col;          /* 1-based; col counts bytes */
} gim_loc;

typedef struct gim_diag {
    FILE *out;             /* where messages go; stderr by default */
    int n_errors, n_warnings;
    int max_errors;        /* stop reporting after this many (default 20) */
    gim_arena *arena;      /* owns every gim_source it loaded */
    gim_ptrvec sources;
    bool last_hidden;      /* the previous error was not shown: hide its notes too */
    bool said_too_many;    /* the "too many errors" line was printed */
} gim_diag;

void gim_diag_init(gim_diag *d, FILE *out);
void gim_diag_release(gim_diag *d);

/* Loads a file into the diagnostics' source table; NULL if unreadable
 * (errno set). */
const gim_source *gim_diag_load(gim_diag *d, const char *path);
/* Registers in-memory text as a source (tests, fuzzers). */
const gim_source *gim_diag_add_source(gim_diag *d, const char *path, const char *text, size_t len);

/* Prints "file:line:col: error: message", the source line, a caret under col. */
void gim_error(gim_diag *d, gim_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void gim_warning(gim_diag *d, gim_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A note attached to the previous error (e.g. "defined here"). */
void gim_note(gim_diag *d, gim_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- AST ------------------------------------------------------------------ */

typedef enum gim_expr_kind {
    GIM_EXPR_INT,     /* ival */
    GIM_EXPR_FLOAT,   /* fval */
    GIM_EXPR_STRING,  /* sval (unescaped) */
    GIM_EXPR_BOOL,    /* ival: 0 or 1 */
    GIM_EXPR_NAME,    /* name */
    GIM_EXPR_CALL,    /* name(args) */
    GIM_EXPR_BINARY,  /* lhs op rhs; op is one of + - * / */
    GIM_EXPR_NEG,     /* -lhs */
    GIM_EXPR_LIST,    /* [args] */
    GIM_EXPR_INDEX,   /* name[args]: only `labels[batch]` in inputs */
} gim_expr_kind;

typedef struct gim_expr gim_expr;

/* An argument of a call: positional when name == NULL, else keyword. */
typedef struct gim_arg {
    const char *name;
    gim_loc name_loc;
    gim_expr *value;
} gim_arg;

struct gim_expr {
    gim_expr_kind kind;
    gim_loc loc;        /* first character of the expression (the callee for calls) */
    int64_t ival;
    double fval;
    const char *sval;
    const char *name;   /* NAME, CALL, INDEX */
    char op;            /* BINARY */
    gim_expr *lhs, *rhs;
    gim_arg *args;      /* CALL, LIST, INDEX */
    int n_args;
    int depth;          /* 1 for a leaf; 1 + the deepest child otherwise */
};

typedef enum gim_stmt_kind {
    GIM_STMT_INPUT,   /* input name: [dims] | input name: labels[batch] */
    GIM_STMT_ASSIGN,  /* name = expr */
    GIM_STMT_EXPR,    /* expr (a loss statement, e.g. infonce(...)) */
    GIM_STMT_OUTPUT,  /* output expr */
    GIM_STMT_RETURN,  /* return expr (in def) */
} gim_stmt_kind;

typedef struct gim_stmt {
    gim_stmt_kind kind;
    gim_loc loc;
    const char *name;   /* INPUT, ASSIGN */
    gim_loc name_loc;
    gim_expr *value;    /* INPUT: a LIST of dims or an INDEX `labels[...]` */
} gim_stmt;

typedef struct gim_param {
    const char *name;
    gim_loc loc;
    gim_expr *default_value;  /* NULL: required */
} gim_param;

typedef struct gim_def {
    const char *name;
    gim_loc loc;
    gim_param *params;
    int n_params;
    gim_stmt *body;
    int n_body;
} gim_def;

typedef struct gim_model {
    const char *name;
    gim_loc loc;
    gim_stmt *body;
    int n_body;
} gim_model;

/* One `key value` line of a train block; value is any expression, e.g. a
 * NAME (`simultaneous`), a STRING, a number, or a CALL (`adam(lr=1e-3)`). */
typedef struct gim_train_entry {
    const char *key;
    gim_loc loc;
    gim_expr *value;
} gim_train_entry;

typedef struct gim_import {
    const char *path;       /* as written */
    gim_loc loc;
    const gim_source *resolved;  /* NULL when it could not be found */
} gim_import;

/* Everything the model file and its imports define, after import resolution.
 * defs[] holds every def of every file (names are global; a duplicate is an
 * error). model may be NULL when the file has none (an error for commands
 * that need one; reported by the consumer with gim_program.main's loc). */
typedef struct gim_program {
    const gim_source *main;
    gim_def **defs;
    int n_defs;
    gim_model *model;
    gim_train_entry *train;
    int n_train;
    bool has_train;
    gim_loc train_loc;
} gim_program;

/* Parses `path` and, recursively, its imports (resolved next to the importing
 * file, then in stdlib_dir; each file once; cycles are errors). Returns the
 * program even when errors were reported (d->n_errors > 0), so callers can
 * decide; returns NULL only if the main file cannot be read. All AST memory
 * lives in `arena`. stdlib_dir NULL means the built-in default. */
gim_program *gim_parse_program(gim_diag *d, gim_arena *arena, const char *path, const char *stdlib_dir);

/* Same, from in-memory text registered under `path` (imports still resolve
 * on disk relative to it). */
gim_program *gim_parse_program_text(gim_diag *d, gim_arena *arena, const char *path,
                                    const char *text, size_t len, const char *stdlib_dir);

/* The default stdlib directory: $GIM_STDLIB if set, else the build's. */
const char *gim_stdlib_dir(void);

/* Prints the AST back as source-like text (for tests and `gimc parse`). */
void gim_ast_print(FILE *out, const gim_program *p);

#endif
