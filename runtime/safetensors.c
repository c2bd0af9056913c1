/* safetensors files: an atomic writer and a strict, validating reader. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gim_checkpoint.h"
#include "gim_util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this host is not"
#endif

/* Python's safetensors refuses headers over 100 MB; so do we. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
#define ST_MAX_DEPTH 8

const char *gim_dtype_name(gim_dtype t) {
    switch (t) {
    case GIM_DT_F32: return "F32";
    case GIM_DT_I32: return "I32";
    case GIM_DT_I64: return "I64";
    }
    return "?";
}

int gim_dtype_size(gim_dtype t) { return t == GIM_DT_I64 ? 8 : 4; }

/* numel and byte size of a shape; -1 on a negative dim or overflow. */
static int shape_bytes(const int64_t *shape, int rank, int esize, int64_t *numel, int64_t *bytes) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0 || gim_mul_overflows(n, shape[i], &n)) return -1;
    }
    if (gim_mul_overflows(n, esize, bytes)) return -1;
    *numel = n;
    return 0;
}

static void shape_str(char *buf, size_t n, const int64_t *shape, int rank) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* ---- writer ----------------------------------------------------------------- */

static int64_t fail_after = -1;
void gim_safetensors_fail_after_bytes(int64_t n) { fail_after = n; }

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        if (fail_after >= 0) {
            if ((int64_t)chunk > fail_after) chunk = (size_t)fail_after;
            if (chunk == 0) { errno = ENOSPC; return -1; }
            fail_after -= (int64_t)chunk;
        }
        ssize_t w = write(fd, c, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static void json_string(gim_sb *sb, const char *s) {
    gim_sb_putc(sb, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') gim_sb_printf(sb, "\\%c", *p);
        else if (*p < 0x20) gim_sb_printf(sb, "\\u%04x", *p);
        else gim_sb_putc(sb, (char)*p);
    }
    gim_sb_putc(sb, '"');
}

int gim_safetensors_write(const char *path, const gim_ckpt_tensor *t, int n, const gim_ckpt_meta *meta,
                          int n_meta, char *err, size_t errlen) {
    /* check the request and build the header */
    gim_sb h = {0};
    gim_sb_putc(&h, '{');
    if (n_meta > 0) {
        gim_sb_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            for (int j = 0; j < i; j++)
                if (!strcmp(meta[i].key, meta[j].key)) {
                    gim_sb_free(&h);
                    return gim_errf(err, errlen, "%s: metadata key '%s' given twice", path, meta[i].key);
                }
            if (i) gim_sb_putc(&h, ',');
            json_string(&h, meta[i].key);
            gim_sb_putc(&h, ':');
            json_string(&h, meta[i].value);
        }
        gim_sb_putc(&h, '}');
    }
    /* data layout: 8-byte elements first, then 4-byte ones, each group in
     * the order given, so every tensor starts aligned to its element size
     * (the data section starts at a multiple of 8), as Python's writer does */
    int64_t *begin = gim_malloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!begin) {
        gim_sb_free(&h);
        return gim_errf(err, errlen, "%s: out of memory", path);
    }
    for (int i = 0; i < n; i++) {
        int64_t numel, bytes;
        const char *name = t[i].name;
        int bad = !name || !*name || !strcmp(name, "__metadata__");
        for (int j = 0; j < i && !bad; j++) bad = !strcmp(name, t[j].name);
        if (bad) {
            gim_sb_free(&h);
            gim_free(begin);
            return gim_errf(err, errlen, "%s: tensor name '%s' is empty, reserved or repeated", path,
                            name ? name : "(null)");
        }
        if (t[i].rank < 0 || t[i].rank > GIM_RT_MAX_RANK ||
            shape_bytes(t[i].shape, t[i].rank, gim_dtype_size(t[i].dtype), &numel, &bytes) ||
            (bytes > 0 && !t[i].data)) {
            gim_sb_free(&h);
            gim_free(begin);
            return gim_errf(err, errlen, "%s: tensor '%s': bad rank, shape or data", path, name);
        }
        begin[i] = bytes;   /* sizes for now */
    }
    int64_t off = 0;
    for (int esize = 8; esize >= 4; esize -= 4)
        for (int i = 0; i < n; i++) {
            if (gim_dtype_size(t[i].dtype) != esize) continue;
            int64_t bytes = begin[i];
            begin[i] = off;
            if (__builtin_add_overflow(off, bytes, &off)) {
                gim_sb_free(&h);
                gim_free(begin);
                return gim_errf(err, errlen, "%s: tensors too large", path);
            }
        }
    for (int i = 0; i < n; i++) {
        int64_t numel, bytes;
        shape_bytes(t[i].shape, t[i].rank, gim_dtype_size(t[i].dtype), &numel, &bytes);
        gim_sb_puts(&h, n_meta > 0 || i ? "," : "");
        json_string(&h, t[i].name);
        gim_sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", gim_dtype_name(t[i].dtype));
        for (int d = 0; d < t[i].rank; d++) gim_sb_printf(&h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        gim_sb_printf(&h, "],\"data_offsets\":[%lld,%lld]}", (long long)begin[i], (long long)(begin[i] + bytes));
    }
    gim_sb_putc(&h, '}');
    while (h.len % 8) gim_sb_putc(&h, ' ');

    /* write the temporary file */
    size_t plen = strlen(path);
    char *tmp = gim_malloc(plen + 32);
    if (!tmp) {
        gim_sb_free(&h);
        gim_free(begin);
        return gim_errf(err, errlen, "%s: out of memory", path);
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        gim_errf(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        gim_free(tmp);
        gim_free(begin);
        gim_sb_free(&h);
        return -1;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    int ok = write_all(fd, len8, 8) == 0 && write_all(fd, h.buf, h.len) == 0;
    for (int esize = 8; esize >= 4; esize -= 4)
        for (int i = 0; i < n && ok; i++) {
            int64_t numel, bytes;
            if (gim_dtype_size(t[i].dtype) != esize) continue;
            shape_bytes(t[i].shape, t[i].rank, esize, &numel, &bytes);
            if (bytes) ok = write_all(fd, t[i].data, (size_t)bytes) == 0;
        }
    gim_free(begin);
    if (ok) ok = fsync(fd) == 0;
    int saved = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        saved = errno;
    }
    gim_sb_free(&h);
    if (!ok) {
        gim_errf(err, errlen, "%s: cannot write: %s", path, strerror(saved));
        unlink(tmp);
        gim_free(tmp);
        return -1;
    }
    gim_free(tmp);
    /* make the rename itself durable */
    char *dir = gim_malloc(plen + 2);
    if (dir) {
        memcpy(dir, path, plen + 1);
        char *slash = strrchr(dir, '/');
        if (!slash) strcpy(dir, ".");
        else if (slash == dir) dir[1] = 0;
        else *slash = 0;
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        gim_free(dir);
    }
    return 0;
}

/* ---- a strict JSON parser for the header ------------------------------------ */

/* JSON values, in the arena: objects keep their members in file order. */
typedef enum { J_OBJECT, J_ARRAY, J_STRING, J_INT } jkind;
typedef struct jval {
    jkind kind;
    const char *str;        /* J_STRING */
    int64_t num;            /* J_INT */
    int n;                  /* J_OBJECT, J_ARRAY: member count */
    const char **keys;      /* J_OBJECT */
    struct jval **items;
} jval;

typedef struct jparser {
    const char *p, *end, *start;
    gim_arena *a;
    const char *path;
    char *err;
    size_t errlen;
    bool failed;
} jparser;

static jval *jerr(jparser *j, const char *what) {
    if (!j->failed)
        gim_errf(j->err, j->errlen, "%s: bad JSON header at byte %ld: %s", j->path,
                 (long)(j->p - j->start), what);
    j->failed = true;
    return NULL;
}

static void jspace(jparser *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* string := '"' ( char | '\' ( ["\/bfnrt] | 'u' hex4 ) )* '"', no control
 * characters, no \u0000 (names are C strings); surrogate pairs join. */
static const char *jstring(jparser *j) {
    if (j->p >= j->end || *j->p != '"') return (const char *)jerr(j, "expected a string");
    j->p++;
    gim_sb sb = {0};
    gim_sb_puts(&sb, "");
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p;
        if (c < 0x20) { gim_sb_free(&sb); return (const char *)jerr(j, "control character in a string"); }
        if (c != '\\') { gim_sb_putc(&sb, (char)c); j->p++; continue; }
        if (j->end - j->p < 2) break;
        char e = j->p[1];
        j->p += 2;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char repl[] = "\"\\/\b\f\n\r\t";
            gim_sb_putc(&sb, repl[simple - "\"\\/bfnrt"]);
            continue;
        }
        unsigned u, lo;
        if (e != 'u' || j->end - j->p < 4 || hex4(j->p, &u)) {
            gim_sb_free(&sb);
            return (const char *)jerr(j, "bad escape in a string");
        }
        j->p += 4;
        if (u >= 0xD800 && u < 0xDC00) {
            if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, &lo) ||
                lo < 0xDC00 || lo >= 0xE000) {
                gim_sb_free(&sb);
                return (const char *)jerr(j, "unpaired surrogate in a string");
            }
            j->p += 6;
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
        } else if ((u >= 0xDC00 && u < 0xE000) || u == 0) {
            gim_sb_free(&sb);
            return (const char *)jerr(j, u ? "unpaired surrogate in a string" : "\\u0000 in a string");
        }
        if (u < 0x80) gim_sb_putc(&sb, (char)u);
        else if (u < 0x800) { gim_sb_putc(&sb, (char)(0xC0 | u >> 6)); gim_sb_putc(&sb, (char)(0x80 | (u & 63))); }
        else if (u < 0x10000) {
            gim_sb_putc(&sb, (char)(0xE0 | u >> 12));
            gim_sb_putc(&sb, (char)(0x80 | ((u >> 6) & 63)));
            gim_sb_putc(&sb, (char)(0x80 | (u & 63)));
        } else {
            gim_sb_putc(&sb, (char)(0xF0 | u >> 18));
            gim_sb_putc(&sb, (char)(0x80 | ((u >> 12) & 63)));
            gim_sb_putc(&sb, (char)(0x80 | ((u >> 6) & 63)));
            gim_sb_putc(&sb, (char)(0x80 | (u & 63)));
        }
    }
    if (j->p >= j->end) { gim_sb_free(&sb); return (const char *)jerr(j, "unterminated string"); }
    j->p++;
    const char *s = gim_arena_strndup(j->a, sb.buf, sb.len);
    gim_sb_free(&sb);
    return s;
}

static jval *jvalue(jparser *j, int depth);

/* members := value ( ',' value )*, between open and close; for objects each
 * value is preceded by a string key and ':' (keys unique). */
static jval *jcompound(jparser *j, int depth, bool object) {
    jval *v = gim_arena_alloc(j->a, sizeof *v);
    v->kind = object ? J_OBJECT : J_ARRAY;
    char close = object ? '}' : ']';
    int cap = 0;
    j->p++;
    jspace(j);
    if (j->p < j->end && *j->p == close) { j->p++; return v; }
    for (;;) {
        const char *key = NULL;
        jspace(j);
        if (object) {
            if (!(key = jstring(j))) return NULL;
            for (int i = 0; i < v->n; i++)
                if (!strcmp(v->keys[i], key)) return jerr(j, gim_arena_printf(j->a, "duplicate key \"%s\"", key));
            jspace(j);
            if (j->p >= j->end || *j->p != ':') return jerr(j, "expected ':'");
            j->p++;
        }
        jval *item = jvalue(j, depth + 1);
        if (!item) return NULL;
        if (v->n == cap) {
            cap = cap ? cap * 2 : 8;
            jval **items = gim_arena_alloc(j->a, sizeof(jval *) * (size_t)cap);
            const char **keys = gim_arena_alloc(j->a, sizeof(char *) * (size_t)cap);
            if (v->n) {
                memcpy(items, v->items, sizeof(jval *) * (size_t)v->n);
                memcpy(keys, v->keys, sizeof(char *) * (size_t)v->n);
            }
            v->items = items;
            v->keys = keys;
        }
        v->keys[v->n] = key;
        v->items[v->n++] = item;
        jspace(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == close) { j->p++; return v; }
        return jerr(j, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

/* value := object | array | string | integer  (no fractions, exponents,
 * true, false or null: a safetensors header has none). */
static jval *jvalue(jparser *j, int depth) {
    if (depth > ST_MAX_DEPTH) return jerr(j, "nested too deeply");
    jspace(j);
    if (j->p >= j->end) return jerr(j, "unexpected end");
    char c = *j->p;
    if (c == '{' || c == '[') return jcompound(j, depth, c == '{');
    if (c == '"') {
        const char *s = jstring(j);
        if (!s) return NULL;
        jval *v = gim_arena_alloc(j->a, sizeof *v);
        v->kind = J_STRING;
        v->str = s;
        return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        bool neg = c == '-';
        if (neg) j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9') return jerr(j, "bad number");
        if (*j->p == '0' && j->p + 1 < j->end && j->p[1] >= '0' && j->p[1] <= '9')
            return jerr(j, "leading zero in a number");
        int64_t x = 0;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
            if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, *j->p - '0', &x))
                return jerr(j, "integer out of range");
            j->p++;
        }
        if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
            return jerr(j, "only integers are allowed");
        jval *v = gim_arena_alloc(j->a, sizeof *v);
        v->kind = J_INT;
        v->num = neg ? -x : x;
        return v;
    }
    return jerr(j, "expected a value");
}

/* ---- reader ----------------------------------------------------------------- */

static int read_at(int fd, void *buf, size_t n, off_t off) {
    char *c = buf;
    while (n > 0) {
        ssize_t r = pread(fd, c, n, off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) { errno = EIO; return -1; }
        c += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

typedef struct span { int64_t begin, end; int index; } span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

static int tensor_cmp(const void *a, const void *b) {
    return strcmp(((const gim_ckpt_tensor *)a)->name, ((const gim_ckpt_tensor *)b)->name);
}

/* One header entry: {"dtype": s, "shape": [int...], "data_offsets": [int, int]}. */
static int parse_entry(const char *path, const char *name, const jval *v, int64_t data_len,
                       gim_ckpt_tensor *t, span *sp, char *err, size_t errlen) {
    if (v->kind != J_OBJECT)
        return gim_errf(err, errlen, "%s: tensor '%s': expected an object", path, name);
    const jval *dtype = NULL, *shape = NULL, *offs = NULL;
    for (int i = 0; i < v->n; i++) {
        if (!strcmp(v->keys[i], "dtype")) dtype = v->items[i];
        else if (!strcmp(v->keys[i], "shape")) shape = v->items[i];
        else if (!strcmp(v->keys[i], "data_offsets")) offs = v->items[i];
        else return gim_errf(err, errlen, "%s: tensor '%s': unknown field \"%s\"", path, name, v->keys[i]);
    }
    if (!dtype || !shape || !offs)
        return gim_errf(err, errlen, "%s: tensor '%s': missing \"%s\"", path, name,
                        !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (dtype->kind != J_STRING) return gim_errf(err, errlen, "%s: tensor '%s': dtype is not a string", path, name);
    if (!strcmp(dtype->str, "F32")) t->dtype = GIM_DT_F32;
    else if (!strcmp(dtype->str, "I32")) t->dtype = GIM_DT_I32;
    else if (!strcmp(dtype->str, "I64")) t->dtype = GIM_DT_I64;
    else return gim_errf(err, errlen, "%s: tensor '%s': dtype %s is not supported (F32, I32, I64)", path, name, dtype->str);
    if (shape->kind != J_ARRAY) return gim_errf(err, errlen, "%s: tensor '%s': shape is not an array", path, name);
    if (shape->n > GIM_RT_MAX_RANK)
        return gim_errf(err, errlen, "%s: tensor '%s': rank %d is above %d", path, name, shape->n, GIM_RT_MAX_RANK);
    t->rank = shape->n;
    for (int i = 0; i < shape->n; i++) {
        if (shape->items[i]->kind != J_INT || shape->items[i]->num < 0)
            return gim_errf(err, errlen, "%s: tensor '%s': shape entries must be non-negative integers", path, name);
        t->shape[i] = shape->items[i]->num;
    }
    if (offs->kind != J_ARRAY || offs->n != 2 || offs->items[0]->kind != J_INT || offs->items[1]->kind != J_INT)
        return gim_errf(err, errlen, "%s: tensor '%s': data_offsets must be [begin, end]", path, name);
    int64_t b = offs->items[0]->num, e = offs->items[1]->num, bytes;
    char sh[160];
    shape_str(sh, sizeof sh, t->shape, t->rank);
    if (shape_bytes(t->shape, t->rank, gim_dtype_size(t->dtype), &t->numel, &bytes))
        return gim_errf(err, errlen, "%s: tensor '%s': shape %s is too large", path, name, sh);
    if (b < 0 || e < b || e > data_len)
        return gim_errf(err, errlen, "%s: tensor '%s': data_offsets [%lld, %lld] outside the %lld bytes of data",
                        path, name, (long long)b, (long long)e, (long long)data_len);
    if (e - b != bytes)
        return gim_errf(err, errlen, "%s: tensor '%s': data_offsets [%lld, %lld] but shape %s needs %lld bytes",
                        path, name, (long long)b, (long long)e, sh, (long long)bytes);
    sp->begin = b;
    sp->end = e;
    return 0;
}

gim_ckpt *gim_safetensors_read(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gim_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        gim_errf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    int64_t size = st.st_size;
    gim_ckpt *c = gim_calloc(1, sizeof *c);
    char *hdr = NULL;
    span *spans = NULL;
    if (!c) { gim_errf(err, errlen, "%s: out of memory", path); goto fail; }
    c->arena = gim_arena_new();
    unsigned char len8[8];
    if (size < 8) {
        gim_errf(err, errlen, "%s: truncated: %lld bytes, the header length alone needs 8", path, (long long)size);
        goto fail;
    }
    if (read_at(fd, len8, 8, 0)) { gim_errf(err, errlen, "%s: read error: %s", path, strerror(errno)); goto fail; }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
    if (hlen > (uint64_t)(size - 8)) {
        gim_errf(err, errlen, "%s: truncated or corrupt: the header length says %llu bytes, the file "
                 "has %lld after it", path, (unsigned long long)hlen, (long long)(size - 8));
        goto fail;
    }
    if (hlen > ST_MAX_HEADER || hlen < 2) {
        gim_errf(err, errlen, "%s: implausible header length %llu", path, (unsigned long long)hlen);
        goto fail;
    }
    hdr = gim_malloc((size_t)hlen);
    if (!hdr) { gim_errf(err, errlen, "%s: out of memory", path); goto fail; }
    if (read_at(fd, hdr, (size_t)hlen, 8)) { gim_errf(err, errlen, "%s: read error: %s", path, strerror(errno)); goto fail; }
    int64_t data_len = size - 8 - (int64_t)hlen;

    jparser j = {hdr, hdr + hlen, hdr, c->arena, path, err, errlen, false};
    jspace(&j);
    if (j.p >= j.end || *j.p != '{') { jerr(&j, "the header is not a JSON object"); goto fail; }
    jval *root = jvalue(&j, 0);
    if (!root) goto fail;
    jspace(&j);
    if (j.p != j.end) { jerr(&j, "trailing data after the JSON object"); goto fail; }

    c->tensors = gim_arena_alloc(c->arena, sizeof(gim_ckpt_tensor) * (size_t)(root->n + 1));
    spans = gim_malloc(sizeof(span) * (size_t)(root->n + 1));
    if (!spans) { gim_errf(err, errlen, "%s: out of memory", path); goto fail; }
    for (int i = 0; i < root->n; i++) {
        const char *key = root->keys[i];
        const jval *v = root->items[i];
        if (!strcmp(key, "__metadata__")) {
            if (v->kind != J_OBJECT) { gim_errf(err, errlen, "%s: __metadata__ is not an object", path); goto fail; }
            c->meta = gim_arena_alloc(c->arena, sizeof(gim_ckpt_meta) * (size_t)(v->n + 1));
            for (int k = 0; k < v->n; k++) {
                if (v->items[k]->kind != J_STRING) {
                    gim_errf(err, errlen, "%s: __metadata__ value of \"%s\" is not a string", path, v->keys[k]);
                    goto fail;
                }
                c->meta[k].key = v->keys[k];
                c->meta[k].value = v->items[k]->str;
            }
            c->n_meta = v->n;
            continue;
        }
        gim_ckpt_tensor *t = &c->tensors[c->n_tensors];
        span *sp = &spans[c->n_tensors];
        t->name = key;
        if (parse_entry(path, key, v, data_len, t, sp, err, errlen)) goto fail;
        sp->index = c->n_tensors++;
    }

    /* the tensors tile the data exactly: sorted by offset, each begins where
     * the previous ended, the first at 0, the last at the end of the file */
    qsort(spans, (size_t)c->n_tensors, sizeof(span), span_cmp);
    int64_t at = 0;
    for (int i = 0; i < c->n_tensors; i++) {
        const span *s = &spans[i];
        if (s->begin < at) {
            const span *p = &spans[i - 1];
            gim_errf(err, errlen, "%s: tensors '%s' [%lld, %lld] and '%s' [%lld, %lld] overlap", path,
                     c->tensors[p->index].name, (long long)p->begin, (long long)p->end,
                     c->tensors[s->index].name, (long long)s->begin, (long long)s->end);
            goto fail;
        }
        if (s->begin > at) {
            gim_errf(err, errlen, "%s: bytes [%lld, %lld) of the data belong to no tensor (before '%s')",
                     path, (long long)at, (long long)s->begin, c->tensors[s->index].name);
            goto fail;
        }
        at = s->end;
    }
    if (at != data_len) {
        gim_errf(err, errlen, "%s: bytes [%lld, %lld) of the data belong to no tensor", path,
                 (long long)at, (long long)data_len);
        goto fail;
    }

    /* the data, each tensor in its own aligned buffer */
    for (int i = 0; i < c->n_tensors; i++) {
        gim_ckpt_tensor *t = &c->tensors[spans[i].index];
        size_t bytes = (size_t)(spans[i].end - spans[i].begin);
        void *d = gim_malloc_aligned(bytes ? bytes : 1);
        if (!d) { gim_errf(err, errlen, "%s: tensor '%s': out of memory", path, t->name); goto fail; }
        t->data = d;
        if (bytes && read_at(fd, d, bytes, (off_t)(8 + (int64_t)hlen + spans[i].begin))) {
            gim_errf(err, errlen, "%s: tensor '%s': read error: %s", path, t->name, strerror(errno));
            goto fail;
        }
    }
    qsort(c->tensors, (size_t)c->n_tensors, sizeof(gim_ckpt_tensor), tensor_cmp);
    gim_free(spans);
    gim_free(hdr);
    close(fd);
    return c;
fail:
    gim_free(spans);
    gim_free(hdr);
    gim_ckpt_free(c);
    close(fd);
    return NULL;
}

const gim_ckpt_tensor *gim_ckpt_find(const gim_ckpt *c, const char *name) {
    int lo = 0, hi = c->n_tensors - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, r = strcmp(name, c->tensors[mid].name);
        if (r == 0) return &c->tensors[mid];
        if (r < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *gim_ckpt_meta_get(const gim_ckpt *c, const char *key) {
    for (int i = 0; i < c->n_meta; i++)
        if (!strcmp(c->meta[i].key, key)) return c->meta[i].value;
    return NULL;
}

void gim_ckpt_free(gim_ckpt *c) {
    if (!c) return;
    for (int i = 0; i < c->n_tensors; i++) gim_free((void *)c->tensors[i].data);
    gim_arena_free(c->arena);
    gim_free(c);
}
