/* Diagnostics: the source table and located messages.
 *
 * Every message has the form
 *
 *     file:line:col: error: message
 *     the source line
 *          ^
 *
 * The caret line repeats the tabs of the source line so the caret sits under
 * the column whatever the tab width. Very long lines are cut to a window
 * around the column. After max_errors errors, further errors are counted but
 * not shown (and neither are their notes). */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "gim_lang.h"

/* Lines longer than this are shown as a window of DIAG_WINDOW bytes. */
#define DIAG_MAX_LINE 160
#define DIAG_WINDOW 120
#define DIAG_MAX_MESSAGE 1024

void gim_diag_init(gim_diag *d, FILE *out) {
    memset(d, 0, sizeof *d);
    d->out = out ? out : stderr;
    d->max_errors = 20;
    d->arena = gim_arena_new();
}

void gim_diag_release(gim_diag *d) {
    gim_arena_free(d->arena);
    d->arena = NULL;
    d->sources.items = NULL;
    d->sources.len = d->sources.cap = 0;
}

const gim_source *gim_diag_add_source(gim_diag *d, const char *path, const char *text, size_t len) {
    gim_source *s = gim_arena_alloc(d->arena, sizeof *s);
    char *copy = gim_arena_alloc(d->arena, len + 1);
    if (len) memcpy(copy, text, len);
    copy[len] = 0;
    s->path = gim_arena_strdup(d->arena, path);
    s->text = copy;
    s->len = len;
    gim_ptrvec_push(d->arena, &d->sources, s);
    return s;
}

const gim_source *gim_diag_load(gim_diag *d, const char *path) {
    size_t len;
    char *text = gim_read_file(path, &len);
    if (!text) return NULL;
    const gim_source *s = gim_diag_add_source(d, path, text, len);
    gim_free(text);
    return s;
}

/* The start of 1-based line `line` of src and its length (no newline). */
static const char *diag_find_line(const gim_source *src, int line, size_t *len) {
    const char *p = src->text, *end = src->text + src->len;
    for (int l = 1; l < line && p < end; l++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) return NULL;
        p = nl + 1;
    }
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    if (n && p[n - 1] == '\r') n--;
    *len = n;
    return p;
}

/* Control bytes would garble a terminal; show them as '?'. */
static void diag_put_byte(FILE *out, unsigned char c) {
    if (c == '\t' || (c >= 0x20 && c != 0x7f)) fputc(c, out);
    else fputc('?', out);
}

static void diag_print_line(FILE *out, gim_loc loc) {
    size_t len;
    const char *line = diag_find_line(loc.src, loc.line, &len);
    if (!line) return;
    size_t col = loc.col > 0 ? (size_t)loc.col - 1 : 0;   /* 0-based byte offset */
    size_t from = 0, to = len;
    if (len > DIAG_MAX_LINE) {
        from = col > DIAG_WINDOW / 2 ? col - DIAG_WINDOW / 2 : 0;
        if (from > len) from = len;
        to = from + DIAG_WINDOW < len ? from + DIAG_WINDOW : len;
    }
    if (from > 0) fputs("...", out);
    for (size_t i = from; i < to; i++) diag_put_byte(out, (unsigned char)line[i]);
    if (to < len) fputs("...", out);
    fputc('\n', out);

    if (from > 0) fputs("   ", out);
    for (size_t i = from; i < col && i < to; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c == '\t') fputc('\t', out);
        else if ((c & 0xc0) != 0x80) fputc(' ', out);   /* one column per UTF-8 character */
    }
    for (size_t i = to; i < col; i++) fputc(' ', out);   /* past the end of the line */
    fputs("^\n", out);
}

static void diag_vreport(gim_diag *d, gim_loc loc, const char *kind, const char *fmt, va_list ap) {
    FILE *out = d->out ? d->out : stderr;
    if (loc.src) fprintf(out, "%s:%d:%d: %s: ", loc.src->path, loc.line, loc.col, kind);
    else fprintf(out, "%s: ", kind);
    /* a message quoting a 10 MB name stays readable: at most DIAG_MAX_MESSAGE bytes */
    char msg[DIAG_MAX_MESSAGE];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    fputs(msg, out);
    if (n >= (int)sizeof msg) fputs("...", out);
    fputc('\n', out);
    if (loc.src) diag_print_line(out, loc);
    fflush(out);
}

void gim_error(gim_diag *d, gim_loc loc, const char *fmt, ...) {
    d->n_errors++;
    if (d->max_errors > 0 && d->n_errors > d->max_errors) {
        d->last_hidden = true;
        if (!d->said_too_many) {
            d->said_too_many = true;
            fprintf(d->out ? d->out : stderr, "error: too many errors (%d); the rest are not shown\n",
                    d->max_errors);
        }
        return;
    }
    d->last_hidden = false;
    va_list ap;
    va_start(ap, fmt);
    diag_vreport(d, loc, "error", fmt, ap);
    va_end(ap);
}

void gim_warning(gim_diag *d, gim_loc loc, const char *fmt, ...) {
    d->n_warnings++;
    d->last_hidden = d->said_too_many;
    if (d->last_hidden) return;
    va_list ap;
    va_start(ap, fmt);
    diag_vreport(d, loc, "warning", fmt, ap);
    va_end(ap);
}

void gim_note(gim_diag *d, gim_loc loc, const char *fmt, ...) {
    if (d->last_hidden) return;
    va_list ap;
    va_start(ap, fmt);
    diag_vreport(d, loc, "note", fmt, ap);
    va_end(ap);
}
