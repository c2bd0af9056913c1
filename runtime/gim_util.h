/* Memory and strings shared by every stage.
 *
 * One allocation entry point (gim_malloc and friends) so a test can make an
 * allocation fail; an arena per compilation, freed at once. Tensor data is
 * never kept in an arena: arenas hold metadata (AST, graph, names). */
#ifndef GIM_UTIL_H
#define GIM_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* All heap memory goes through these. They return NULL on failure (callers
 * report it); gim_xmalloc aborts with a message instead, for metadata whose
 * loss leaves nothing sensible to do. */
void *gim_malloc(size_t n);
void *gim_calloc(size_t count, size_t size);
void *gim_realloc(void *p, size_t n);
void gim_free(void *p);
void *gim_xmalloc(size_t n);
/* 64-byte aligned (a cache line, an AVX-512 vector), zeroed; free with gim_free. */
void *gim_malloc_aligned(size_t n);
void *gim_xrealloc(void *p, size_t n);
char *gim_xstrdup(const char *s);

/* Test hook: the Nth allocation from now (1-based) fails; 0 disables. */
void gim_fail_allocation_after(long n);

/* Overflow-checked size arithmetic: return 0 and leave *out alone on overflow. */
int gim_mul_overflows(int64_t a, int64_t b, int64_t *out);

/* ---- arena ------------------------------------------------------------- */

typedef struct gim_arena gim_arena;

gim_arena *gim_arena_new(void);
void gim_arena_free(gim_arena *a);
void *gim_arena_alloc(gim_arena *a, size_t n);     /* zeroed, 16-byte aligned */
char *gim_arena_strdup(gim_arena *a, const char *s);
char *gim_arena_strndup(gim_arena *a, const char *s, size_t n);
char *gim_arena_printf(gim_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
size_t gim_arena_used(const gim_arena *a);

/* A growable array of pointers, storage in an arena. */
typedef struct gim_ptrvec {
    void **items;
    int len, cap;
} gim_ptrvec;
void gim_ptrvec_push(gim_arena *a, gim_ptrvec *v, void *item);

/* ---- string builder (heap) ---------------------------------------------- */

typedef struct gim_sb {
    char *buf;
    size_t len, cap;
} gim_sb;
void gim_sb_printf(gim_sb *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gim_sb_vprintf(gim_sb *sb, const char *fmt, va_list ap);
void gim_sb_puts(gim_sb *sb, const char *s);
void gim_sb_putc(gim_sb *sb, char c);
void gim_sb_free(gim_sb *sb);

/* Formats a message into the caller's error buffer err[n] (nothing when err
 * is NULL or n is 0; truncated to fit) and returns -1, so an error path reads
 * `return gim_errf(err, n, "...", ...);`. */
int gim_errf(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Reads a whole file into a NUL-terminated heap buffer; returns NULL and sets
 * errno on failure. *len receives the byte count (may contain NULs). */
char *gim_read_file(const char *path, size_t *len);

/* Levenshtein distance, capped; for "did you mean" suggestions. */
int gim_edit_distance(const char *a, const char *b);

#endif
