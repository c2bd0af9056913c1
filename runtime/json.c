/* JSON (RFC 8259), the little gim needs of it: run.json and eval.json are
 * written with gim_json_str/gim_json_num and read back into a tree by
 * gim_json_parse. The reader takes any bytes: an error names the line and
 * column and what was expected; nesting deeper than 64 levels is refused, so
 * hostile input cannot exhaust the stack. Every node and string lives in one
 * arena, freed with the document. Both files are written whole or not at
 * all (gim_file_begin/gim_file_commit: a temporary file renamed over). */
#include "gim_records.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gim_util.h"

#define JSON_MAX_DEPTH 64

struct gim_json_doc {
    gim_arena *arena;
    gim_json *root;
};

typedef struct json_parser {
    const char *s, *end;
    const char *line_start;
    int line;
    gim_arena *arena;
    char *err;
    size_t errlen;
    bool failed;
} json_parser;

static void *json_fail(json_parser *p, const char *what) {
    if (!p->failed)
        gim_errf(p->err, p->errlen, "%d:%d: %s", p->line, (int)(p->s - p->line_start) + 1, what);
    p->failed = true;
    return NULL;
}

static void json_ws(json_parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) {
        if (*p->s == '\n') {
            p->line++;
            p->line_start = p->s + 1;
        }
        p->s++;
    }
}

static gim_json *json_node(json_parser *p, gim_json_kind kind) {
    gim_json *j = gim_arena_alloc(p->arena, sizeof *j);
    j->kind = kind;
    j->line = p->line;
    j->col = (int)(p->s - p->line_start) + 1;
    return j;
}

static bool json_literal(json_parser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n)) return false;
    p->s += n;
    return true;
}

static int json_hex4(const char *s) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

static size_t json_utf8(unsigned cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xc0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* string = '"' { char | escape } '"'; the decoded bytes never outnumber the
 * source's, so one buffer of the source length holds them. A NUL (\u0000)
 * is refused: the strings are C strings. */
static char *json_string(json_parser *p, size_t *len_out) {
    const char *q = p->s + 1;   /* after the opening quote */
    while (q < p->end && *q != '"') q += *q == '\\' && q + 1 < p->end ? 2 : 1;
    if (q >= p->end) return json_fail(p, "unterminated string");   /* at its opening quote */
    p->s++;
    char *out = gim_arena_alloc(p->arena, (size_t)(q - p->s) + 1);
    size_t n = 0;
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s;
        if (c < 0x20) return json_fail(p, "control character in a string (escape it)");
        if (c != '\\') {
            out[n++] = (char)c;
            p->s++;
            continue;
        }
        char e = p->s[1];
        p->s += 2;
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            int cp = p->end - p->s >= 4 ? json_hex4(p->s) : -1;
            if (cp < 0) return json_fail(p, "\\u needs four hex digits");
            p->s += 4;
            unsigned v = (unsigned)cp;
            if (v >= 0xd800 && v < 0xdc00) {   /* a high surrogate: its low half must follow */
                int lo = p->end - p->s >= 6 && p->s[0] == '\\' && p->s[1] == 'u' ? json_hex4(p->s + 2) : -1;
                if (lo < 0xdc00 || lo >= 0xe000) return json_fail(p, "unpaired surrogate in \\u escape");
                p->s += 6;
                v = 0x10000 + ((v - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
            } else if (v >= 0xdc00 && v < 0xe000) {
                return json_fail(p, "unpaired surrogate in \\u escape");
            }
            if (v == 0) return json_fail(p, "\\u0000 is not allowed in a string");
            n += json_utf8(v, out + n);
            break;
        }
        default: p->s -= 1; return json_fail(p, "unknown escape in a string");
        }
    }
    p->s++;   /* the closing quote */
    out[n] = 0;
    if (len_out) *len_out = n;
    return out;
}

/* number = [ '-' ] int [ frac ] [ exp ], checked by the grammar, then
 * converted by strtod (which alone would take "0x1p3", "inf", "nan"). */
static gim_json *json_number(json_parser *p) {
    const char *q = p->s;
    if (q < p->end && *q == '-') q++;
    if (q >= p->end || *q < '0' || *q > '9') return json_fail(p, "expected a value");
    if (*q == '0') q++;
    else while (q < p->end && *q >= '0' && *q <= '9') q++;
    if (q < p->end && *q == '.') {
        q++;
        if (q >= p->end || *q < '0' || *q > '9') return json_fail(p, "expected a digit after '.'");
        while (q < p->end && *q >= '0' && *q <= '9') q++;
    }
    if (q < p->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < p->end && (*q == '+' || *q == '-')) q++;
        if (q >= p->end || *q < '0' || *q > '9') return json_fail(p, "expected a digit in the exponent");
        while (q < p->end && *q >= '0' && *q <= '9') q++;
    }
    char buf[64];
    size_t n = (size_t)(q - p->s);
    if (n >= sizeof buf) return json_fail(p, "number too long");
    memcpy(buf, p->s, n);
    buf[n] = 0;
    gim_json *j = json_node(p, GIM_JSON_NUMBER);
    errno = 0;
    j->num = strtod(buf, NULL);
    if (!isfinite(j->num)) return json_fail(p, "number out of range");
    p->s = q;
    return j;
}

static gim_json *json_value(json_parser *p, int depth);

/* array = '[' [ value { ',' value } ] ']'; object likewise with "key": value. */
static gim_json *json_container(json_parser *p, int depth, bool object) {
    gim_json *j = json_node(p, object ? GIM_JSON_OBJECT : GIM_JSON_ARRAY);
    if (depth >= JSON_MAX_DEPTH) return json_fail(p, "nested too deeply");
    char close = object ? '}' : ']';
    p->s++;
    gim_ptrvec items = {0}, keys = {0};
    json_ws(p);
    if (p->s < p->end && *p->s == close) {
        p->s++;
        return j;
    }
    for (;;) {
        json_ws(p);
        if (object) {
            if (p->s >= p->end || *p->s != '"') return json_fail(p, "expected a key (a string)");
            char *key = json_string(p, NULL);
            if (!key) return NULL;
            json_ws(p);
            if (p->s >= p->end || *p->s != ':') return json_fail(p, "expected ':' after the key");
            p->s++;
            gim_ptrvec_push(p->arena, &keys, key);
        }
        gim_json *v = json_value(p, depth + 1);
        if (!v) return NULL;
        gim_ptrvec_push(p->arena, &items, v);
        json_ws(p);
        if (p->s < p->end && *p->s == ',') {
            p->s++;
            continue;
        }
        if (p->s < p->end && *p->s == close) {
            p->s++;
            break;
        }
        return json_fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    j->n = items.len;
    j->items = (gim_json **)items.items;
    j->keys = (char **)keys.items;
    return j;
}

static gim_json *json_value(json_parser *p, int depth) {
    json_ws(p);
    if (p->s >= p->end) return json_fail(p, "expected a value, found the end of the file");
    gim_json *j;
    switch (*p->s) {
    case '{': return json_container(p, depth, true);
    case '[': return json_container(p, depth, false);
    case '"':
        j = json_node(p, GIM_JSON_STRING);
        j->str = json_string(p, NULL);
        return j->str ? j : NULL;
    case 't':
    case 'f':
    case 'n':
        j = json_node(p, *p->s == 'n' ? GIM_JSON_NULL : GIM_JSON_BOOL);
        if (json_literal(p, "true")) j->boolean = true;
        else if (json_literal(p, "false")) j->boolean = false;
        else if (!json_literal(p, "null")) return json_fail(p, "expected a value");
        return j;
    default: return json_number(p);
    }
}

gim_json_doc *gim_json_parse(const char *text, size_t len, char *err, size_t errlen) {
    gim_json_doc *d = gim_xmalloc(sizeof *d);
    d->arena = gim_arena_new();
    json_parser p = {.s = text, .end = text + len, .line_start = text, .line = 1, .arena = d->arena,
                     .err = err, .errlen = errlen};
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) p.s += 3;   /* a byte-order mark */
    d->root = json_value(&p, 0);
    if (d->root) {
        json_ws(&p);
        if (p.s < p.end) d->root = json_fail(&p, "unexpected text after the value");
    }
    if (!d->root) {
        gim_json_free(d);
        return NULL;
    }
    return d;
}

const gim_json *gim_json_root(const gim_json_doc *d) { return d->root; }

void gim_json_free(gim_json_doc *d) {
    if (!d) return;
    gim_arena_free(d->arena);
    gim_free(d);
}

const gim_json *gim_json_get(const gim_json *obj, const char *key) {
    if (!obj || obj->kind != GIM_JSON_OBJECT) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (!strcmp(obj->keys[i], key)) return obj->items[i];
    return NULL;
}

/* ---- writing ------------------------------------------------------------------- */

void gim_json_str(FILE *f, const char *s) {
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*c < 0x20) fprintf(f, "\\u%04x", *c);
            else fputc(*c, f);
        }
    }
    fputc('"', f);
}

void gim_json_num(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, "%.17g", x);
    else fputs("null", f);   /* JSON has no NaN or infinity */
}

FILE *gim_file_begin(const char *path, char *tmp, size_t tmplen, char *err, size_t errlen) {
    snprintf(tmp, tmplen, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) gim_errf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    return f;
}

int gim_file_commit(FILE *f, const char *tmp, const char *path, char *err, size_t errlen) {
    bool bad = fflush(f) != 0 || ferror(f);
    bad = fclose(f) != 0 || bad;
    if (bad || rename(tmp, path)) {
        gim_errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}
