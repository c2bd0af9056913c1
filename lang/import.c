/* From files to a program: import resolution and the checks that need the
 * whole program (or a whole file).
 *
 * An import is looked for next to the importing file, then in the stdlib
 * directory (a file naming its own file name gets the stdlib file of that
 * name when there is one). Files are identified by canonical path (realpath), so each is
 * parsed once however it is named; a file that imports one of the files
 * still being read (a cycle) is an error naming the whole chain. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lang_internal.h"

#ifndef GIM_STDLIB_DIR
#define GIM_STDLIB_DIR "stdlib"
#endif

/* Imports nest at most this deep (each level holds a parser on the C stack). */
#define IMPORT_MAX_DEPTH 64

const char *gim_stdlib_dir(void) {
    const char *env = getenv("GIM_STDLIB");
    return env && *env ? env : GIM_STDLIB_DIR;
}

typedef struct import_file {
    const char *canon;          /* realpath, or the path as given if it has none */
    const gim_source *src;
} import_file;

typedef struct import_ctx {
    gim_diag *diag;
    gim_arena *arena;
    const char *stdlib_dir;
    gim_ptrvec done;            /* import_file *: every file parsed */
    gim_ptrvec stack;           /* import_file *: files being parsed, outermost first */
    gim_ptrvec defs, models, trains;
} import_ctx;

static char *import_canon(import_ctx *c, const char *path) {
    char buf[PATH_MAX];
    struct stat st;
    if (!realpath(path, buf)) return NULL;
    if (stat(buf, &st) != 0 || !S_ISREG(st.st_mode)) return NULL;
    return gim_arena_strdup(c->arena, buf);
}

/* The directory part of path ("" when it has none). */
static char *import_dirname(import_ctx *c, const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return gim_arena_strdup(c->arena, "");
    if (slash == path) return gim_arena_strdup(c->arena, "/");
    return gim_arena_strndup(c->arena, path, (size_t)(slash - path));
}

static char *import_join(import_ctx *c, const char *dir, const char *name) {
    if (name[0] == '/' || !dir[0]) return gim_arena_strdup(c->arena, name);
    size_t n = strlen(dir);
    return gim_arena_printf(c->arena, "%s%s%s", dir, dir[n - 1] == '/' ? "" : "/", name);
}

static import_file *import_find(gim_ptrvec *v, const char *canon) {
    for (int i = 0; i < v->len; i++) {
        import_file *f = v->items[i];
        if (!strcmp(f->canon, canon)) return f;
    }
    return NULL;
}

static void import_file_parse(import_ctx *c, import_file *f);

/* Resolves one `import "path"` of file `from` and parses the file it names. */
static void import_resolve(import_ctx *c, import_file *from, gim_import *im) {
    if (!im->path[0]) {
        gim_error(c->diag, im->loc, "empty import path");
        return;
    }
    const char *dir = import_dirname(c, from->src->path);
    const char *candidates[2];
    int n = 0;
    candidates[n++] = import_join(c, dir, im->path);
    if (im->path[0] != '/' && c->stdlib_dir && c->stdlib_dir[0])
        candidates[n++] = import_join(c, c->stdlib_dir, im->path);

    /* The first candidate that exists, passing over the importing file itself
     * when a later one exists too: models/cpc_audio.gim's `import
     * "cpc_audio.gim"` means the stdlib file of that name, not itself. */
    const char *path = NULL, *canon = NULL;
    for (int i = 0; i < n && !canon; i++) {
        canon = import_canon(c, candidates[i]);
        path = candidates[i];
        if (canon && !strcmp(canon, from->canon) && i + 1 < n && import_canon(c, candidates[i + 1])) canon = NULL;
    }
    if (!canon) {
        if (im->path[0] == '/')
            gim_error(c->diag, im->loc, "cannot find imported file '%s'", im->path);
        else
            gim_error(c->diag, im->loc, "cannot find imported file '%s' (looked in '%s' and in the stdlib '%s')",
                      im->path, dir[0] ? dir : ".", c->stdlib_dir ? c->stdlib_dir : "");
        return;
    }

    for (int i = 0; i < c->stack.len; i++) {
        import_file *open = c->stack.items[i];
        if (strcmp(open->canon, canon) != 0) continue;
        gim_sb sb = {0};
        for (int j = i; j < c->stack.len; j++)
            gim_sb_printf(&sb, "%s -> ", ((import_file *)c->stack.items[j])->src->path);
        gim_sb_puts(&sb, path);
        gim_error(c->diag, im->loc, "import cycle: %s", sb.buf);
        gim_sb_free(&sb);
        return;
    }

    import_file *done = import_find(&c->done, canon);
    if (done) {
        im->resolved = done->src;
        return;
    }
    if (c->stack.len >= IMPORT_MAX_DEPTH) {
        gim_error(c->diag, im->loc, "imports nested too deeply (more than %d files)", IMPORT_MAX_DEPTH);
        return;
    }
    const gim_source *src = gim_diag_load(c->diag, path);
    if (!src) {
        gim_error(c->diag, im->loc, "cannot read imported file '%s': %s", path, strerror(errno));
        return;
    }
    import_file *f = gim_arena_alloc(c->arena, sizeof *f);
    f->canon = canon;
    f->src = src;
    im->resolved = src;
    import_file_parse(c, f);
}

/* Which statements each body may hold, and where `return` may stand. */
/* syntax_ok: the file parsed without errors (a statement lost to a syntax
 * error could have been the return). */
static void import_check_def(import_ctx *c, gim_def *d, bool syntax_ok) {
    for (int i = 0; i < d->n_params; i++) {
        for (int j = 0; j < i; j++)
            if (!strcmp(d->params[i].name, d->params[j].name)) {
                gim_error(c->diag, d->params[i].loc, "parameter '%s' appears twice", d->params[i].name);
                break;
            }
        if (i > 0 && !d->params[i].default_value && d->params[i - 1].default_value)
            gim_error(c->diag, d->params[i].loc,
                      "parameter '%s' without a default follows one with a default", d->params[i].name);
    }
    bool returned = false;
    for (int i = 0; i < d->n_body; i++) {
        gim_stmt *s = &d->body[i];
        if (s->kind == GIM_STMT_INPUT || s->kind == GIM_STMT_OUTPUT)
            gim_error(c->diag, s->loc, "'%s' is only allowed in a model",
                      s->kind == GIM_STMT_INPUT ? "input" : "output");
        if (returned) {
            gim_error(c->diag, s->loc, "statement after 'return' (a def ends with its return)");
            break;
        }
        if (s->kind == GIM_STMT_RETURN) returned = true;
    }
    if (!returned && syntax_ok) gim_error(c->diag, d->loc, "def '%s' has no 'return' (a def ends with 'return expr')", d->name);
}

static void import_check_model(import_ctx *c, gim_model *m) {
    const gim_stmt *output = NULL;
    for (int i = 0; i < m->n_body; i++) {
        gim_stmt *s = &m->body[i];
        if (s->kind == GIM_STMT_RETURN)
            gim_error(c->diag, s->loc, "'return' is only allowed in a def (a model ends with 'output expr')");
        if (s->kind == GIM_STMT_OUTPUT) {
            if (output) {
                gim_error(c->diag, s->loc, "a model has one 'output'");
                gim_note(c->diag, output->loc, "the first 'output' is here");
            } else {
                output = s;
            }
        }
    }
}

static void import_file_parse(import_ctx *c, import_file *f) {
    gim_ptrvec_push(c->arena, &c->done, f);
    gim_ptrvec_push(c->arena, &c->stack, f);
    lang_parse p;
    memset(&p, 0, sizeof p);
    p.diag = c->diag;
    p.arena = c->arena;
    p.src = f->src;
    int errors_before = c->diag->n_errors;
    lang_parse_source(&p);
    bool syntax_ok = c->diag->n_errors == errors_before;
    for (int i = 0; i < p.imports.len; i++) import_resolve(c, f, p.imports.items[i]);
    c->stack.len--;

    for (int i = 0; i < p.defs.len; i++) {
        import_check_def(c, p.defs.items[i], syntax_ok);
        gim_ptrvec_push(c->arena, &c->defs, p.defs.items[i]);
    }
    for (int i = 0; i < p.models.len; i++) {
        import_check_model(c, p.models.items[i]);
        gim_ptrvec_push(c->arena, &c->models, p.models.items[i]);
    }
    for (int i = 0; i < p.trains.len; i++) {
        gim_ptrvec_push(c->arena, &c->trains, p.trains.items[i]);
    }
}

static gim_program *import_program(import_ctx *c, const gim_source *main) {
    import_file *f = gim_arena_alloc(c->arena, sizeof *f);
    f->src = main;
    f->canon = import_canon(c, main->path);
    if (!f->canon) f->canon = gim_arena_printf(c->arena, "\x01%s", main->path);   /* not on disk */
    import_file_parse(c, f);

    gim_program *prog = gim_arena_alloc(c->arena, sizeof *prog);
    prog->main = main;

    /* Names of defs are global; the first definition wins. An open-addressing
     * table (at most half full) finds an earlier def of the same name in
     * constant time, so a program of many defs is not quadratic. */
    prog->defs = gim_arena_alloc(c->arena, sizeof(gim_def *) * (size_t)(c->defs.len + 1));
    size_t cap = 16;
    while (cap < 2 * (size_t)c->defs.len) cap *= 2;
    gim_def **seen = gim_arena_alloc(c->arena, sizeof(gim_def *) * cap);
    for (int i = 0; i < c->defs.len; i++) {
        gim_def *d = c->defs.items[i];
        uint64_t h = 1469598103934665603ull;
        for (const char *k = d->name; *k; k++) h = (h ^ (unsigned char)*k) * 1099511628211ull;
        size_t slot = (size_t)h & (cap - 1);
        while (seen[slot] && strcmp(seen[slot]->name, d->name)) slot = (slot + 1) & (cap - 1);
        gim_def *first = seen[slot];
        if (!first) seen[slot] = d;
        if (first) {
            gim_error(c->diag, d->loc, "'%s' is defined twice", d->name);
            gim_note(c->diag, first->loc, "first defined here");
            continue;
        }
        prog->defs[prog->n_defs++] = d;
    }

    for (int i = 0; i < c->models.len; i++) {
        gim_model *m = c->models.items[i];
        if (!prog->model) {
            prog->model = m;
            continue;
        }
        gim_error(c->diag, m->loc, "more than one model (a program has one model)");
        gim_note(c->diag, prog->model->loc, "the first model is '%s', here", prog->model->name);
    }

    for (int i = 0; i < c->trains.len; i++) {
        lang_train *t = c->trains.items[i];
        if (!prog->has_train) {
            prog->has_train = true;
            prog->train = t->entries;
            prog->n_train = t->n_entries;
            prog->train_loc = t->loc;
            continue;
        }
        gim_error(c->diag, t->loc, "more than one train block");
        gim_note(c->diag, prog->train_loc, "the first train block is here");
    }
    return prog;
}

gim_program *gim_parse_program_text(gim_diag *d, gim_arena *arena, const char *path, const char *text, size_t len,
                                    const char *stdlib_dir) {
    import_ctx c;
    memset(&c, 0, sizeof c);
    c.diag = d;
    c.arena = arena;
    c.stdlib_dir = stdlib_dir ? stdlib_dir : gim_stdlib_dir();
    const gim_source *src = gim_diag_add_source(d, path, text, len);
    return import_program(&c, src);
}

gim_program *gim_parse_program(gim_diag *d, gim_arena *arena, const char *path, const char *stdlib_dir) {
    const gim_source *src = gim_diag_load(d, path);
    if (!src) {
        gim_error(d, (gim_loc){0}, "cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    import_ctx c;
    memset(&c, 0, sizeof c);
    c.diag = d;
    c.arena = arena;
    c.stdlib_dir = stdlib_dir ? stdlib_dir : gim_stdlib_dir();
    return import_program(&c, src);
}
