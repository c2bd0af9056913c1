#define _GNU_SOURCE
#include "gim_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long fail_countdown;

void gim_fail_allocation_after(long n) { fail_countdown = n; }

static int should_fail(void) {
    if (fail_countdown > 0 && --fail_countdown == 0)
        return 1;
    return 0;
}

void *gim_malloc(size_t n) { return should_fail() ? NULL : malloc(n ? n : 1); }
void *gim_calloc(size_t c, size_t s) { return should_fail() ? NULL : calloc(c ? c : 1, s ? s : 1); }
void *gim_realloc(void *p, size_t n) { return should_fail() ? NULL : realloc(p, n ? n : 1); }
void gim_free(void *p) { free(p); }

void *gim_malloc_aligned(size_t n) {
    void *p = NULL;
    if (should_fail() || posix_memalign(&p, 64, n ? n : 1)) return NULL;
    memset(p, 0, n);
    return p;
}

static void out_of_memory(size_t n) {
    fprintf(stderr, "gimc: fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *gim_xmalloc(size_t n) {
    void *p = gim_malloc(n);
    if (!p) out_of_memory(n);
    return p;
}

void *gim_xrealloc(void *p, size_t n) {
    void *q = gim_realloc(p, n);
    if (!q) out_of_memory(n);
    return q;
}

char *gim_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = gim_xmalloc(n);
    memcpy(d, s, n);
    return d;
}

int gim_mul_overflows(int64_t a, int64_t b, int64_t *out) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return 1;
    *out = r;
    return 0;
}

/* ---- arena: a list of chunks, bump allocation within each ---------------- */

typedef struct chunk {
    struct chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
} chunk;

struct gim_arena {
    chunk *head;
    size_t total;
};

gim_arena *gim_arena_new(void) {
    gim_arena *a = gim_xmalloc(sizeof *a);
    a->head = NULL;
    a->total = 0;
    return a;
}

void gim_arena_free(gim_arena *a) {
    if (!a) return;
    for (chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        gim_free(c);
    }
    gim_free(a);
}

void *gim_arena_alloc(gim_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->size - a->head->used < n) {
        size_t size = n > 65536 ? n : 65536;
        chunk *c = gim_xmalloc(sizeof *c + size);
        c->next = a->head;
        c->size = size;
        c->used = 0;
        a->head = c;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    a->total += n;
    memset(p, 0, n);
    return p;
}

char *gim_arena_strndup(gim_arena *a, const char *s, size_t n) {
    char *d = gim_arena_alloc(a, n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *gim_arena_strdup(gim_arena *a, const char *s) { return gim_arena_strndup(a, s, strlen(s)); }

char *gim_arena_printf(gim_arena *a, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *d = gim_arena_alloc(a, (size_t)n + 1);
    vsnprintf(d, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return d;
}

size_t gim_arena_used(const gim_arena *a) { return a->total; }

void gim_ptrvec_push(gim_arena *a, gim_ptrvec *v, void *item) {
    if (v->len == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        void **items = gim_arena_alloc(a, sizeof(void *) * (size_t)cap);
        if (v->len) memcpy(items, v->items, sizeof(void *) * (size_t)v->len);
        v->items = items;
        v->cap = cap;
    }
    v->items[v->len++] = item;
}

/* ---- string builder ------------------------------------------------------ */

void gim_sb_vprintf(gim_sb *sb, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n < 0) { va_end(ap2); return; }
    if (sb->len + (size_t)n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + (size_t)n + 1) cap *= 2;
        sb->buf = gim_xrealloc(sb->buf, cap);
        sb->cap = cap;
    }
    vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap2);
    sb->len += (size_t)n;
    va_end(ap2);
}

void gim_sb_printf(gim_sb *sb, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    gim_sb_vprintf(sb, fmt, ap);
    va_end(ap);
}

int gim_errf(char *err, size_t n, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void gim_sb_puts(gim_sb *sb, const char *s) { gim_sb_printf(sb, "%s", s); }
void gim_sb_putc(gim_sb *sb, char c) { gim_sb_printf(sb, "%c", c); }

void gim_sb_free(gim_sb *sb) {
    gim_free(sb->buf);
    sb->buf = NULL;
    sb->len = sb->cap = 0;
}

char *gim_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = gim_malloc(cap);
    if (!buf) { fclose(f); errno = ENOMEM; return NULL; }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = gim_realloc(buf, cap * 2);
            if (!nb) { gim_free(buf); fclose(f); errno = ENOMEM; return NULL; }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { gim_free(buf); errno = EIO; return NULL; }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int gim_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 1000;
    int row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int cost = a[i - 1] == b[j - 1] ? 0 : 1;
            int best = prev + cost;
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}
