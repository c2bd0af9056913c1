/* Private to lang/: the state shared by the lexer (lexer.l), the parser
 * (parser.y) and import resolution (import.c). */
#ifndef GIM_LANG_INTERNAL_H
#define GIM_LANG_INTERNAL_H

#include "gim_lang.h"

/* Brackets nest at most this deep; deeper input is a located error (the
 * parser's stack and every recursive pass after it stay bounded). */
#define LEX_MAX_NESTING 256
/* Expressions (e.g. a + b + ... chains) are at most this deep in the AST. */
#define PARSE_MAX_EXPR_DEPTH 1000

/* An open bracket the lexer is waiting to see closed. */
typedef struct lex_open {
    char kind;      /* '(' '[' '{' */
    gim_loc loc;
} lex_open;

/* Everything one parse of one file needs; the lexer's `extra` and the
 * parser's parameter. */
typedef struct lang_parse {
    gim_diag *diag;
    gim_arena *arena;
    const gim_source *src;
    void *scanner;

    /* lexer position (1-based, bytes) */
    int line, col;
    size_t pos;               /* byte offset of the next character */
    int last_tok;             /* the token returned last (0: none yet) */
    size_t last_start, last_len;  /* its text in src (for messages) */
    int end_line, end_col;    /* where the last token ended (end of file's location) */
    lex_open open[LEX_MAX_NESTING];
    int n_open;
    int too_deep;             /* openers seen past LEX_MAX_NESTING, not yet closed */
    /* The bracket the token just returned failed to close (a newline, '}'
     * or end of file while '(' or '[' was open); for the parser's message. */
    bool has_unclosed;
    lex_open unclosed;
    bool unclosed_pending;    /* set for the token being lexed */
    bool peek_valid;          /* cache of the lexer's look past blank lines */
    size_t peek_pos;
    int peek_char;

    /* names, interned: each distinct name is stored once per file */
    const char **names;       /* open addressing, NULL = empty; heap */
    size_t names_cap, names_len;

    /* parser */
    bool expr_too_deep_reported;

    /* results */
    gim_ptrvec imports;       /* gim_import * */
    gim_ptrvec defs;          /* gim_def * */
    gim_ptrvec models;        /* gim_model * */
    gim_ptrvec trains;        /* lang_train * */
} lang_parse;

/* Arrays the parser grows in the arena while it reads a list. */
typedef struct lang_args { gim_arg *v; int n, cap; } lang_args;
typedef struct lang_stmts { gim_stmt *v; int n, cap; } lang_stmts;
typedef struct lang_params { gim_param *v; int n, cap; } lang_params;
typedef struct lang_entries { gim_train_entry *v; int n, cap; } lang_entries;

typedef struct lang_train {
    gim_loc loc;
    gim_train_entry *entries;
    int n_entries;
} lang_train;

/* Parses one source file into p's result vectors; reports errors to
 * p->diag. p->diag, p->arena and p->src must be set, the rest zeroed. */
void lang_parse_source(lang_parse *p);

/* The tokens of src as one line of words (see lexer.l); for tests. */
const char *lang_lex_dump(gim_diag *d, gim_arena *arena, const gim_source *src, bool with_loc);

#endif
