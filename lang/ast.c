/* Printing the AST back as source text (`gimc parse`, tests).
 *
 * The output parses to the same AST: binary operators get parentheses only
 * where precedence needs them, floats are printed with the fewest digits
 * that read back to the same double, strings are re-escaped. Imports are
 * not printed: every def of every file is. */
#include <stdlib.h>
#include <string.h>

#include "gim_lang.h"

static void ast_print_expr(FILE *out, const gim_expr *e, int min_prec);

/* + - bind at 1, * / at 2, unary minus at 3, everything else at 4. */
static int ast_prec(const gim_expr *e) {
    if (e->kind == GIM_EXPR_BINARY) return e->op == '+' || e->op == '-' ? 1 : 2;
    if (e->kind == GIM_EXPR_NEG) return 3;
    return 4;
}

static void ast_print_float(FILE *out, double v) {
    char buf[64];
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, out);
    if (!strpbrk(buf, ".eEn")) fputs(".0", out);   /* keep it a float literal */
}

static void ast_print_string(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        switch (*s) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        default: fputc(*s, out);
        }
    }
    fputc('"', out);
}

static void ast_print_args(FILE *out, const gim_arg *args, int n) {
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", out);
        if (args[i].name) fprintf(out, "%s=", args[i].name);
        ast_print_expr(out, args[i].value, 0);
    }
}

static void ast_print_expr(FILE *out, const gim_expr *e, int min_prec) {
    if (!e) {
        fputs("<missing>", out);
        return;
    }
    bool paren = ast_prec(e) < min_prec;
    if (paren) fputc('(', out);
    switch (e->kind) {
    case GIM_EXPR_INT: fprintf(out, "%lld", (long long)e->ival); break;
    case GIM_EXPR_FLOAT: ast_print_float(out, e->fval); break;
    case GIM_EXPR_STRING: ast_print_string(out, e->sval ? e->sval : ""); break;
    case GIM_EXPR_BOOL: fputs(e->ival ? "true" : "false", out); break;
    case GIM_EXPR_NAME: fputs(e->name, out); break;
    case GIM_EXPR_CALL:
        fprintf(out, "%s(", e->name);
        ast_print_args(out, e->args, e->n_args);
        fputc(')', out);
        break;
    case GIM_EXPR_INDEX:
        fprintf(out, "%s[", e->name);
        ast_print_args(out, e->args, e->n_args);
        fputc(']', out);
        break;
    case GIM_EXPR_LIST:
        fputc('[', out);
        ast_print_args(out, e->args, e->n_args);
        fputc(']', out);
        break;
    case GIM_EXPR_NEG:
        fputc('-', out);
        ast_print_expr(out, e->lhs, 3);
        break;
    case GIM_EXPR_BINARY: {
        /* Left-associative: the right operand needs a strictly tighter one. */
        int prec = ast_prec(e);
        ast_print_expr(out, e->lhs, prec);
        fprintf(out, " %c ", e->op);
        ast_print_expr(out, e->rhs, prec + 1);
        break;
    }
    }
    if (paren) fputc(')', out);
}

static void ast_print_body(FILE *out, const gim_stmt *body, int n) {
    for (int i = 0; i < n; i++) {
        const gim_stmt *s = &body[i];
        fputs("    ", out);
        switch (s->kind) {
        case GIM_STMT_INPUT: fprintf(out, "input %s: ", s->name); break;
        case GIM_STMT_ASSIGN: fprintf(out, "%s = ", s->name); break;
        case GIM_STMT_EXPR: break;
        case GIM_STMT_OUTPUT: fputs("output ", out); break;
        case GIM_STMT_RETURN: fputs("return ", out); break;
        }
        ast_print_expr(out, s->value, 0);
        fputc('\n', out);
    }
}

void gim_ast_print(FILE *out, const gim_program *p) {
    if (!p) return;
    bool first = true;
    for (int i = 0; i < p->n_defs; i++) {
        const gim_def *d = p->defs[i];
        if (!first) fputc('\n', out);
        first = false;
        fprintf(out, "def %s(", d->name);
        for (int j = 0; j < d->n_params; j++) {
            if (j) fputs(", ", out);
            fputs(d->params[j].name, out);
            if (d->params[j].default_value) {
                fputc('=', out);
                ast_print_expr(out, d->params[j].default_value, 0);
            }
        }
        fputs(") {\n", out);
        ast_print_body(out, d->body, d->n_body);
        fputs("}\n", out);
    }
    if (p->model) {
        if (!first) fputc('\n', out);
        first = false;
        fprintf(out, "model %s {\n", p->model->name);
        ast_print_body(out, p->model->body, p->model->n_body);
        fputs("}\n", out);
    }
    if (p->has_train) {
        if (!first) fputc('\n', out);
        fputs("train {\n", out);
        for (int i = 0; i < p->n_train; i++) {
            fprintf(out, "    %s ", p->train[i].key);
            ast_print_expr(out, p->train[i].value, 0);
            fputc('\n', out);
        }
        fputs("}\n", out);
    }
}
