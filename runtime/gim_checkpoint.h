/* Checkpoints as safetensors files (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes: N, little-endian u64][N bytes: JSON header][data]
 *
 * The header maps each tensor name to {"dtype", "shape", "data_offsets":
 * [begin, end]} (offsets relative to the start of the data) and may hold
 * "__metadata__": {string: string}. Data is raw little-endian, row-major.
 * Files written here load with Python's safetensors (header padded with
 * spaces to a multiple of 8, as it does).
 *
 * The writer is atomic: a crash or error at any point leaves either the old
 * file or the new one at `path`, never a mix. The reader trusts nothing in
 * the file and reports the first problem, naming the file and the tensor. */
#ifndef GIM_CHECKPOINT_H
#define GIM_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "gim_runtime.h"

typedef enum gim_dtype { GIM_DT_F32, GIM_DT_I32, GIM_DT_I64 } gim_dtype;

typedef struct gim_ckpt_tensor {
    const char *name;
    gim_dtype dtype;
    int rank;                           /* 0 .. GIM_RT_MAX_RANK */
    int64_t shape[GIM_RT_MAX_RANK];
    int64_t numel;                      /* reader: filled in; writer: ignored */
    const void *data;                   /* writer: the caller's; reader: owned by the gim_ckpt,
                                           64-byte aligned, (const float *) for F32 */
} gim_ckpt_tensor;

typedef struct gim_ckpt_meta {
    const char *key, *value;
} gim_ckpt_meta;

/* Writes `path` atomically: to `path`.tmp.<pid>, flushed and fsynced, renamed
 * over `path`, then the directory fsynced. Tensors are laid out in the order
 * given. Returns 0, or -1 with err set (and `path` untouched). */
int gim_safetensors_write(const char *path, const gim_ckpt_tensor *tensors, int n_tensors,
                          const gim_ckpt_meta *meta, int n_meta, char *err, size_t errlen);

/* A file read into memory: tensors sorted by name. */
typedef struct gim_ckpt {
    gim_ckpt_tensor *tensors;
    int n_tensors;
    gim_ckpt_meta *meta;
    int n_meta;
    struct gim_arena *arena;            /* names, strings, the arrays above */
} gim_ckpt;

/* Reads and validates the whole file: header length against the file size,
 * strict JSON, known dtypes (F32, I32, I64), shapes, offsets in range, sized
 * exactly numel * element size, covering the data without overlap or gap.
 * Returns a new gim_ckpt, or NULL with err set. */
gim_ckpt *gim_safetensors_read(const char *path, char *err, size_t errlen);
const gim_ckpt_tensor *gim_ckpt_find(const gim_ckpt *c, const char *name);
const char *gim_ckpt_meta_get(const gim_ckpt *c, const char *key);
void gim_ckpt_free(gim_ckpt *c);

/* "F32", "I32", "I64"; and element sizes in bytes. */
const char *gim_dtype_name(gim_dtype t);
int gim_dtype_size(gim_dtype t);

/* Test hook: the writer's output fails with ENOSPC once n more bytes have
 * been written (-1: never). */
void gim_safetensors_fail_after_bytes(int64_t n);

#endif
