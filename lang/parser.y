/* The grammar of .gim files (see docs/language.md).
 *
 * One parse reads one file and appends what it finds (imports, defs, models,
 * train blocks) to the lang_parse's vectors; import.c stitches files into a
 * program. Statements end at a newline or ';' (the lexer folds both into SEP,
 * drops repeats, and drops newlines inside ( ) and [ ]).
 *
 * Error recovery: a bad statement resyncs at the next SEP or '}', a bad
 * parameter list at its ')', a bad top-level item at the next SEP outside
 * any block, so independent errors in one file are all reported. */

%define api.pure full
%define api.location.type {gim_loc}
%define parse.error custom
%define parse.lac full
%locations
%param {void *scanner}
%parse-param {lang_parse *p}

%code requires {
#include "lang_internal.h"
}

%code provides {
int yylex(YYSTYPE *lvalp, YYLTYPE *llocp, void *scanner);
}

%code {
#include <string.h>

#define YYMALLOC gim_malloc
#define YYFREE gim_free
#define YYLLOC_DEFAULT(Cur, Rhs, N)                        \
    do {                                                   \
        if (N) (Cur) = YYRHSLOC(Rhs, 1);                   \
        else (Cur) = YYRHSLOC(Rhs, 0);                     \
    } while (0)

static void yyerror(YYLTYPE *loc, void *scanner, lang_parse *p, const char *msg);

static gim_expr *ast_leaf(lang_parse *p, gim_expr_kind kind, gim_loc loc);
static gim_expr *ast_binary(lang_parse *p, char op, gim_expr *lhs, gim_expr *rhs);
static gim_expr *ast_neg(lang_parse *p, gim_loc loc, gim_expr *e);
static gim_expr *ast_call(lang_parse *p, gim_expr_kind kind, gim_loc loc, const char *name, lang_args *args);
static lang_args *args_push(lang_parse *p, lang_args *v, const char *name, gim_loc name_loc, gim_expr *value);
static lang_stmts *stmts_push(lang_parse *p, lang_stmts *v, gim_stmt *s);
static gim_stmt *ast_stmt(lang_parse *p, gim_stmt_kind kind, gim_loc loc, const char *name, gim_loc name_loc, gim_expr *value);
static lang_params *params_push(lang_parse *p, lang_params *v, const char *name, gim_loc loc, gim_expr *dflt);
static lang_entries *entries_push(lang_parse *p, lang_entries *v, const char *key, gim_loc loc, gim_expr *value);
}

%union {
    const char *str;
    int64_t ival;
    double fval;
    gim_expr *expr;
    gim_stmt *stmt;
    lang_args *args;
    lang_stmts *stmts;
    lang_params *params;
    lang_entries *entries;
}

%token <str> IDENT "name"
%token <str> STRING "string"
%token <ival> INT "integer"
%token <fval> FLOAT "number"
%token TRUE "true" FALSE "false"
%token IMPORT "import" DEF "def" RETURN "return" MODEL "model"
%token INPUT "input" OUTPUT "output" TRAIN "train"
%token SEP "newline"
%token LEX_ERROR "invalid token"

%type <expr> expr primary input_type
%type <args> args args_opt list_items list_items_opt
%type <stmt> stmt
%type <stmts> block stmts_opt stmt_seq
%type <params> params params_opt
%type <entries> train_body train_seq
%type <stmt> train_entry

%left '+' '-'
%left '*' '/'
%precedence NEG

%%

/* program = (item | SEP)* */
program:
    %empty
  | program SEP
  | program item
  | program error SEP   { if (p->n_open == 0) yyerrok; }
  ;

item: import | def | model | train ;

/* import = "import" STRING */
import:
    IMPORT STRING {
        gim_import *im = gim_arena_alloc(p->arena, sizeof *im);
        im->path = $2;
        im->loc = @2;
        gim_ptrvec_push(p->arena, &p->imports, im);
    }
  ;

/* def = "def" name "(" (param ("," param)* ","?)? ")" block */
def:
    DEF IDENT '(' params_opt ')' block {
        gim_def *d = gim_arena_alloc(p->arena, sizeof *d);
        d->name = $2;
        d->loc = @2;
        if ($4) { d->params = $4->v; d->n_params = $4->n; }
        if ($6) { d->body = $6->v; d->n_body = $6->n; }
        gim_ptrvec_push(p->arena, &p->defs, d);
    }
  | DEF IDENT '(' error ')' block
  ;

params_opt:
    %empty          { $$ = NULL; }
  | params
  | params ','
  ;

/* param = name ("=" expr)? */
params:
    IDENT                       { $$ = params_push(p, NULL, $1, @1, NULL); }
  | IDENT '=' expr              { $$ = params_push(p, NULL, $1, @1, $3); }
  | params ',' IDENT             { $$ = params_push(p, $1, $3, @3, NULL); }
  | params ',' IDENT '=' expr   { $$ = params_push(p, $1, $3, @3, $5); }
  ;

/* model = "model" name block */
model:
    MODEL IDENT block {
        gim_model *m = gim_arena_alloc(p->arena, sizeof *m);
        m->name = $2;
        m->loc = @2;
        if ($3) { m->body = $3->v; m->n_body = $3->n; }
        gim_ptrvec_push(p->arena, &p->models, m);
    }
  ;

/* block = "{" (stmt (SEP stmt)*)? SEP? "}" */
block:
    '{' stmts_opt '}'   { $$ = $2; }
  ;

stmts_opt:
    %empty              { $$ = NULL; }
  | stmt_seq
  | stmt_seq sep
  ;

stmt_seq:
    stmt                { $$ = stmts_push(p, NULL, $1); }
  | stmt_seq sep stmt   { $$ = stmts_push(p, $1, $3); }
  ;

/* A statement's end; after an error, the point where reporting resumes. */
sep:
    SEP                 { yyerrok; }
  ;

/* stmt = "input" name ":" input_type
 *      | name "=" expr
 *      | "output" expr
 *      | "return" expr
 *      | expr
 * Which statements a def or a model may hold is checked by import.c. */
stmt:
    INPUT IDENT ':' input_type  { $$ = ast_stmt(p, GIM_STMT_INPUT, @1, $2, @2, $4); }
  | IDENT '=' expr              { $$ = ast_stmt(p, GIM_STMT_ASSIGN, @1, $1, @1, $3); }
  | OUTPUT expr                 { $$ = ast_stmt(p, GIM_STMT_OUTPUT, @1, NULL, @1, $2); }
  | RETURN expr                 { $$ = ast_stmt(p, GIM_STMT_RETURN, @1, NULL, @1, $2); }
  | expr                        { $$ = ast_stmt(p, GIM_STMT_EXPR, $1->loc, NULL, $1->loc, $1); }
  | IMPORT STRING {
        gim_error(p->diag, @1, "'import' is only allowed at the top level of a file");
        $$ = NULL;
    }
  | error                       { $$ = NULL; }
  ;

/* input_type = "[" dims "]" | "labels" "[" dims "]" */
input_type:
    '[' list_items_opt ']'      { $$ = ast_call(p, GIM_EXPR_LIST, @1, NULL, $2); }
  | IDENT '[' list_items_opt ']' {
        if (strcmp($1, "labels") != 0)
            gim_error(p->diag, @1, "expected a shape [dims] or labels[batch], not '%s'", $1);
        $$ = ast_call(p, GIM_EXPR_INDEX, @1, $1, $3);
    }
  ;

/* train = "train" "{" (entry (SEP entry)*)? SEP? "}"
 * entry = name "="? expr */
train:
    TRAIN '{' train_body '}' {
        lang_train *t = gim_arena_alloc(p->arena, sizeof *t);
        t->loc = @1;
        if ($3) { t->entries = $3->v; t->n_entries = $3->n; }
        gim_ptrvec_push(p->arena, &p->trains, t);
    }
  ;

train_body:
    %empty                      { $$ = NULL; }
  | train_seq
  | train_seq sep
  ;

train_seq:
    train_entry                 { $$ = $1 ? entries_push(p, NULL, $1->name, $1->loc, $1->value) : NULL; }
  | train_seq sep train_entry   { $$ = $3 ? entries_push(p, $1, $3->name, $3->loc, $3->value) : $1; }
  ;

train_entry:
    IDENT expr                  { $$ = ast_stmt(p, GIM_STMT_ASSIGN, @1, $1, @1, $2); }
  | IDENT '=' expr              { $$ = ast_stmt(p, GIM_STMT_ASSIGN, @1, $1, @1, $3); }
  | error                       { $$ = NULL; }
  ;

/* expr = expr ("+" | "-" | "*" | "/") expr | "-" expr | primary
 * with * and / binding tighter than + and -, all left-associative, and
 * unary minus tightest. */
expr:
    expr '+' expr               { $$ = ast_binary(p, '+', $1, $3); }
  | expr '-' expr               { $$ = ast_binary(p, '-', $1, $3); }
  | expr '*' expr               { $$ = ast_binary(p, '*', $1, $3); }
  | expr '/' expr               { $$ = ast_binary(p, '/', $1, $3); }
  | '-' expr %prec NEG          { $$ = ast_neg(p, @1, $2); }
  | primary
  ;

/* primary = integer | number | string | "true" | "false"
 *         | name | name "(" args? ")" | "(" expr ")" | "[" exprs? "]" */
primary:
    INT                         { $$ = ast_leaf(p, GIM_EXPR_INT, @1); $$->ival = $1; }
  | FLOAT                       { $$ = ast_leaf(p, GIM_EXPR_FLOAT, @1); $$->fval = $1; }
  | STRING                      { $$ = ast_leaf(p, GIM_EXPR_STRING, @1); $$->sval = $1; }
  | TRUE                        { $$ = ast_leaf(p, GIM_EXPR_BOOL, @1); $$->ival = 1; }
  | FALSE                       { $$ = ast_leaf(p, GIM_EXPR_BOOL, @1); $$->ival = 0; }
  | IDENT                       { $$ = ast_leaf(p, GIM_EXPR_NAME, @1); $$->name = $1; }
  | IDENT '(' args_opt ')'      { $$ = ast_call(p, GIM_EXPR_CALL, @1, $1, $3); }
  | '(' expr ')'                { $$ = $2; }
  | '[' list_items_opt ']'      { $$ = ast_call(p, GIM_EXPR_LIST, @1, NULL, $2); }
  ;

/* args = arg ("," arg)* ","?   arg = (name "=")? expr */
args_opt:
    %empty                      { $$ = NULL; }
  | args
  | args ','
  ;

args:
    expr                        { $$ = args_push(p, NULL, NULL, $1->loc, $1); }
  | IDENT '=' expr              { $$ = args_push(p, NULL, $1, @1, $3); }
  | args ',' expr               { $$ = args_push(p, $1, NULL, $3->loc, $3); }
  | args ',' IDENT '=' expr     { $$ = args_push(p, $1, $3, @3, $5); }
  ;

/* exprs = expr ("," expr)* ","? */
list_items_opt:
    %empty                      { $$ = NULL; }
  | list_items
  | list_items ','
  ;

list_items:
    expr                        { $$ = args_push(p, NULL, NULL, $1->loc, $1); }
  | list_items ',' expr         { $$ = args_push(p, $1, NULL, $3->loc, $3); }
  ;

%%

/* ---- AST builders ---------------------------------------------------------- */

/* Grows an arena array of n elements of size `elem` to hold one more. */
static void *vec_grow(lang_parse *p, void *v, int n, int *cap, size_t elem) {
    if (n < *cap) return v;
    int ncap = *cap ? *cap * 2 : 4;
    void *nv = gim_arena_alloc(p->arena, elem * (size_t)ncap);
    if (n) memcpy(nv, v, elem * (size_t)n);
    *cap = ncap;
    return nv;
}

static gim_expr *ast_leaf(lang_parse *p, gim_expr_kind kind, gim_loc loc) {
    gim_expr *e = gim_arena_alloc(p->arena, sizeof *e);
    e->kind = kind;
    e->loc = loc;
    e->depth = 1;
    return e;
}

/* Later stages walk expressions recursively; a depth past the limit is an
 * error (once per file) and the expression stops growing. */
static bool ast_too_deep(lang_parse *p, int depth, gim_loc loc) {
    if (depth <= PARSE_MAX_EXPR_DEPTH) return false;
    if (!p->expr_too_deep_reported)
        gim_error(p->diag, loc, "expression nested too deeply (more than %d levels)", PARSE_MAX_EXPR_DEPTH);
    p->expr_too_deep_reported = true;
    return true;
}

static gim_expr *ast_binary(lang_parse *p, char op, gim_expr *lhs, gim_expr *rhs) {
    int depth = 1 + (lhs->depth > rhs->depth ? lhs->depth : rhs->depth);
    if (ast_too_deep(p, depth, lhs->loc)) return lhs;
    gim_expr *e = ast_leaf(p, GIM_EXPR_BINARY, lhs->loc);
    e->op = op;
    e->lhs = lhs;
    e->rhs = rhs;
    e->depth = depth;
    return e;
}

/* -literal is folded into the literal (so `[batch, -1]` holds INT -1). */
static gim_expr *ast_neg(lang_parse *p, gim_loc loc, gim_expr *x) {
    if (x->kind == GIM_EXPR_INT || x->kind == GIM_EXPR_FLOAT) {
        x->ival = -x->ival;
        x->fval = -x->fval;
        x->loc = loc;
        return x;
    }
    if (ast_too_deep(p, x->depth + 1, loc)) return x;
    gim_expr *e = ast_leaf(p, GIM_EXPR_NEG, loc);
    e->lhs = x;
    e->depth = x->depth + 1;
    return e;
}

/* CALL name(args), LIST [args], INDEX name[args]. */
static gim_expr *ast_call(lang_parse *p, gim_expr_kind kind, gim_loc loc, const char *name, lang_args *args) {
    gim_expr *e = ast_leaf(p, kind, loc);
    e->name = name;
    if (args && kind == GIM_EXPR_CALL) {
        /* Positional arguments first, each keyword once (as in Python). */
        for (int i = 0; i < args->n; i++) {
            const gim_arg *a = &args->v[i];
            if (!a->name) {
                if (i > 0 && args->v[i - 1].name)
                    gim_error(p->diag, a->value->loc, "positional argument after a keyword argument in call to '%s'", name);
                continue;
            }
            for (int j = 0; j < i; j++)
                if (args->v[j].name && !strcmp(args->v[j].name, a->name)) {
                    gim_error(p->diag, a->name_loc, "keyword argument '%s' given twice in call to '%s'", a->name, name);
                    gim_note(p->diag, args->v[j].name_loc, "first given here");
                    break;
                }
        }
    }
    if (args) {
        e->args = args->v;
        e->n_args = args->n;
        for (int i = 0; i < args->n; i++)
            if (args->v[i].value->depth + 1 > e->depth) e->depth = args->v[i].value->depth + 1;
    }
    return e;
}

static lang_args *args_push(lang_parse *p, lang_args *v, const char *name, gim_loc name_loc, gim_expr *value) {
    if (!v) v = gim_arena_alloc(p->arena, sizeof *v);
    v->v = vec_grow(p, v->v, v->n, &v->cap, sizeof *v->v);
    v->v[v->n++] = (gim_arg){.name = name, .name_loc = name_loc, .value = value};
    return v;
}

static gim_stmt *ast_stmt(lang_parse *p, gim_stmt_kind kind, gim_loc loc, const char *name, gim_loc name_loc,
                          gim_expr *value) {
    gim_stmt *s = gim_arena_alloc(p->arena, sizeof *s);
    *s = (gim_stmt){.kind = kind, .loc = loc, .name = name, .name_loc = name_loc, .value = value};
    return s;
}

/* A NULL statement (one that had an error) is left out. */
static lang_stmts *stmts_push(lang_parse *p, lang_stmts *v, gim_stmt *s) {
    if (!v) v = gim_arena_alloc(p->arena, sizeof *v);
    if (!s) return v;
    v->v = vec_grow(p, v->v, v->n, &v->cap, sizeof *v->v);
    v->v[v->n++] = *s;
    return v;
}

static lang_params *params_push(lang_parse *p, lang_params *v, const char *name, gim_loc loc, gim_expr *dflt) {
    if (!v) v = gim_arena_alloc(p->arena, sizeof *v);
    v->v = vec_grow(p, v->v, v->n, &v->cap, sizeof *v->v);
    v->v[v->n++] = (gim_param){.name = name, .loc = loc, .default_value = dflt};
    return v;
}

static lang_entries *entries_push(lang_parse *p, lang_entries *v, const char *key, gim_loc loc, gim_expr *value) {
    if (!v) v = gim_arena_alloc(p->arena, sizeof *v);
    v->v = vec_grow(p, v->v, v->n, &v->cap, sizeof *v->v);
    v->v[v->n++] = (gim_train_entry){.key = key, .loc = loc, .value = value};
    return v;
}

/* ---- syntax errors ---------------------------------------------------------- */

/* How a message names a kind of token it expected. */
static const char *parse_token_name(yysymbol_kind_t k) {
    switch (k) {
    case YYSYMBOL_YYEOF: return "end of file";
    case YYSYMBOL_IDENT: return "name";
    case YYSYMBOL_STRING: return "string";
    case YYSYMBOL_INT: return "integer";
    case YYSYMBOL_FLOAT: return "number";
    case YYSYMBOL_SEP: return "newline";
    case YYSYMBOL_TRUE: return "'true'";
    case YYSYMBOL_FALSE: return "'false'";
    case YYSYMBOL_IMPORT: return "'import'";
    case YYSYMBOL_DEF: return "'def'";
    case YYSYMBOL_RETURN: return "'return'";
    case YYSYMBOL_MODEL: return "'model'";
    case YYSYMBOL_INPUT: return "'input'";
    case YYSYMBOL_OUTPUT: return "'output'";
    case YYSYMBOL_TRAIN: return "'train'";
    default: return yysymbol_name(k);   /* "'('" and friends */
    }
}

/* How a message names the token it found: its text where that helps. */
static const char *parse_token_found(lang_parse *p, yysymbol_kind_t k, gim_loc loc) {
    const char *text = NULL;
    size_t n = 0;
    if (loc.src == p->src && p->last_len > 0) {
        text = p->src->text + p->last_start;
        n = p->last_len;
    }
    switch (k) {
    case YYSYMBOL_IDENT:
    case YYSYMBOL_INT:
    case YYSYMBOL_FLOAT:
        if (text) {
            const char *what = k == YYSYMBOL_IDENT ? "name" : "number";
            if (n > 40) return gim_arena_printf(p->arena, "%s '%.40s...'", what, text);
            return gim_arena_printf(p->arena, "%s '%.*s'", what, (int)n, text);
        }
        return parse_token_name(k);
    case YYSYMBOL_SEP:
        return text && *text == ';' ? "';'" : "newline";
    default:
        return parse_token_name(k);
    }
}

static bool parse_starts_expr(yysymbol_kind_t k) {
    switch (k) {
    case YYSYMBOL_IDENT: case YYSYMBOL_INT: case YYSYMBOL_FLOAT: case YYSYMBOL_STRING:
    case YYSYMBOL_TRUE: case YYSYMBOL_FALSE:
        return true;
    default: {
        const char *name = yysymbol_name(k);
        return !strcmp(name, "'('") || !strcmp(name, "'['") || !strcmp(name, "'-'");
    }
    }
}

static bool parse_is_operator(yysymbol_kind_t k) {
    const char *name = yysymbol_name(k);
    return !strcmp(name, "'+'") || !strcmp(name, "'-'") || !strcmp(name, "'*'") || !strcmp(name, "'/'");
}

/* "expected ')' before newline" when a bracket was left open; else "expected
 * A, B or C before X" when few tokens could follow (the tokens that start an
 * expression counted as one, "expression"), else "unexpected X". */
static int yyreport_syntax_error(const yypcontext_t *ctx, void *scanner, lang_parse *p) {
    yysymbol_kind_t tok = yypcontext_token(ctx);
    gim_loc loc = *yypcontext_location(ctx);
    if (tok == YYSYMBOL_LEX_ERROR) return 0;    /* the lexer has said why */
    const char *found = parse_token_found(p, tok, loc);
    yysymbol_kind_t exp[YYNTOKENS];
    int n = yypcontext_expected_tokens(ctx, exp, YYNTOKENS);
    if (p->has_unclosed) {
        /* Say the closer is missing when it could stand here; otherwise
         * the usual message, and the open bracket as a note either way. */
        char closer = p->unclosed.kind == '(' ? ')' : p->unclosed.kind == '[' ? ']' : '}';
        char quoted[4] = {'\'', closer, '\'', 0};
        bool closer_fits = false;
        for (int i = 0; i < n; i++)
            if (!strcmp(yysymbol_name(exp[i]), quoted)) closer_fits = true;
        if (closer_fits || n == 0) {
            gim_error(p->diag, loc, "expected '%c' before %s", closer, found);
            gim_note(p->diag, p->unclosed.loc, "to match this '%c'", p->unclosed.kind);
            return 0;
        }
    }
    for (int i = 0; i < n; i++)
        if (exp[i] == YYSYMBOL_DEF) {
            /* A misspelt keyword ("modle") gets a suggestion. */
            static const char *const tops[] = {"import", "def", "model", "train"};
            const char *best = NULL;
            if (tok == YYSYMBOL_IDENT && p->last_len > 0 && p->last_len < 32) {
                char word[32];
                memcpy(word, p->src->text + p->last_start, p->last_len);
                word[p->last_len] = 0;
                int best_d = 3;
                for (int j = 0; j < 4; j++) {
                    int dist = gim_edit_distance(word, tops[j]);
                    if (dist < best_d && dist <= ((int)strlen(tops[j]) - 1) / 2) { best_d = dist; best = tops[j]; }
                }
            }
            if (best)
                gim_error(p->diag, loc, "unexpected %s at the top level; did you mean '%s'?", found, best);
            else
                gim_error(p->diag, loc, "unexpected %s at the top level (expected import, def, model or train)", found);
            return 0;
        }
    const char *names[YYNTOKENS + 1];
    int n_names = 0;
    bool has_expr = false, expr_named = false, has_other = false;
    bool has_ident = false, has_int = false;
    for (int i = 0; i < n; i++) {
        if (exp[i] == YYSYMBOL_IDENT) has_ident = true;
        if (exp[i] == YYSYMBOL_INT) has_int = true;
        if (!parse_is_operator(exp[i])) has_other = true;
    }
    has_expr = has_ident && has_int;
    /* Where the statement could end, "or a call's '('" is noise. */
    bool can_end = false;
    for (int i = 0; i < n; i++)
        if (exp[i] == YYSYMBOL_SEP) can_end = true;
    for (int i = 0; i < n; i++) {
        if (exp[i] == YYSYMBOL_YYerror || exp[i] == YYSYMBOL_LEX_ERROR) continue;
        /* After a complete operand, "or an operator" goes without saying. */
        if (has_other && parse_is_operator(exp[i]) && !(has_expr && parse_starts_expr(exp[i]))) continue;
        if (can_end && !has_expr && !strcmp(yysymbol_name(exp[i]), "'('")) continue;
        if (has_expr && parse_starts_expr(exp[i])) {
            if (!expr_named) names[n_names++] = "expression";
            expr_named = true;
            continue;
        }
        names[n_names++] = parse_token_name(exp[i]);
    }
    if (n_names == 0 || n_names > 4) {
        gim_error(p->diag, loc, "unexpected %s", found);
    } else {
        gim_sb sb = {0};
        for (int i = 0; i < n_names; i++) {
            if (i > 0) gim_sb_puts(&sb, i == n_names - 1 ? " or " : ", ");
            gim_sb_puts(&sb, names[i]);
        }
        gim_error(p->diag, loc, "expected %s before %s", sb.buf, found);
        gim_sb_free(&sb);
    }
    if (p->has_unclosed) gim_note(p->diag, p->unclosed.loc, "this '%c' is not closed", p->unclosed.kind);
    return 0;
}

/* Only for the parser's own failures (its stack is exhausted). */
static void yyerror(YYLTYPE *loc, void *scanner, lang_parse *p, const char *msg) {
    gim_error(p->diag, *loc, "nested too deeply for the parser (%s)", msg);
}
