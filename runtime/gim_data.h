/* Data sets of IDX files (MNIST, Fashion-MNIST) and the batch iterator that
 * feeds training and evaluation.
 *
 * Pixels stay as the bytes of the file (60000 x 28 x 28 bytes = 47 MB for
 * Fashion-MNIST's training split, a quarter of its float32 size); a batch is
 * normalised while it is copied out, through a 256-entry table holding
 * exactly (p / 255 - mean) / std computed in float32, as PyTorch's ToTensor
 * + Normalize do. Errors come back as a message naming the file, never
 * printed, and no allocation is sized by an unchecked header. */
#ifndef GIM_DATA_H
#define GIM_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Fashion-MNIST's training-set statistics of p / 255 (used for every data set;
 * change them with gim_dataset_set_norm). */
#define GIM_DATA_DEFAULT_MEAN 0.2860f
#define GIM_DATA_DEFAULT_STD 0.3530f
#define GIM_DATA_CLASSES 10
#define GIM_DATA_DIR "/usr/share/datasets"

/* ---- IDX files ------------------------------------------------------------- */

/* One IDX file of unsigned bytes: magic 0x0000 08 <ndims>, ndims big-endian
 * u32 dimensions, then the data, exactly prod(dims) bytes. gzip-compressed
 * or plain (detected from the content). */
typedef struct gim_idx {
    int ndims;
    int64_t dims[3];
    uint8_t *data;          /* prod(dims) bytes; gim_free */
    int64_t n_bytes;
} gim_idx;

/* Reads `path`, requiring `ndims` dimensions (3 for images, 1 for labels).
 * Returns 0, or -1 with a message in err. Files over 1 GiB (uncompressed)
 * are refused. */
int gim_idx_read(const char *path, int ndims, gim_idx *out, char *err, size_t errlen);

/* ---- data sets -------------------------------------------------------------- */

typedef struct gim_split {
    int64_t n;              /* examples */
    int rows, cols;         /* image size (28 x 28) */
    uint8_t *pixels;        /* [n, rows, cols], raw bytes */
    int32_t *labels;        /* [n], each in [0, GIM_DATA_CLASSES) */
} gim_split;

typedef struct gim_dataset {
    char dir[512];          /* the directory the files came from */
    gim_split train, test;
    int n_classes;          /* GIM_DATA_CLASSES */
    float mean, std;        /* normalisation of p / 255 */
    float lut[256];         /* (p / 255 - mean) / std for each byte p */
} gim_dataset;

/* `name_or_dir`: "fashion-mnist" or "mnist" (under GIM_DATA_DIR), or a
 * directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
 * t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally ".gz".
 * Checks: magic, header and data sizes, label count == image count, labels
 * in range, train and test images of one size. Returns 0, or -1 with a
 * message in err and *out left empty (safe to gim_dataset_free). */
int gim_dataset_load(const char *name_or_dir, gim_dataset *out, char *err, size_t errlen);
void gim_dataset_free(gim_dataset *d);
void gim_dataset_set_norm(gim_dataset *d, float mean, float std);

/* Normalised float32 images [count, 1, rows, cols] of examples
 * first .. first+count-1 of a split (the caller checks the range). */
void gim_dataset_images(const gim_dataset *d, const gim_split *s, int64_t first, int64_t count,
                        float *out);

/* The whole split as the trainer's gim_examples (runtime/gim_train.h):
 * x [n, 1, rows, cols] normalised float32 in a new 64-byte aligned buffer
 * (*storage, gim_free it; ex->x points at it), labels shared with the split,
 * n_classes from the data set. Returns 0, or -1 (out of memory) with err. */
struct gim_examples;
int gim_dataset_examples(const gim_dataset *d, const gim_split *s, struct gim_examples *ex,
                         float **storage, char *err, size_t errlen);

/* ---- batches ---------------------------------------------------------------- */

/* Walks a split in batches. With shuffle, epoch e visits the examples in the
 * order of a Fisher-Yates shuffle of 0..n-1 drawn from (seed, stream
 * GIM_RT_STREAM_DATA | e): a pure function of (seed, e), so a resumed run
 * sees the same order. Without shuffle, in file order. */
typedef struct gim_batch_iter {
    const gim_dataset *ds;
    const gim_split *split;
    int64_t batch;
    uint64_t seed;
    bool shuffle;
    bool drop_last;         /* skip the final partial batch (training) */
    int64_t epoch;          /* the current epoch, from 0 */
    int64_t pos;            /* next position in order[] */
    int64_t *order;         /* [split->n] */
} gim_batch_iter;

/* Sets up and starts epoch 0. Returns 0, or -1 (batch < 1, or no memory). */
int gim_batch_iter_init(gim_batch_iter *it, const gim_dataset *ds, const gim_split *split,
                        int64_t batch, uint64_t seed, bool shuffle, bool drop_last, char *err,
                        size_t errlen);
/* Batches in one epoch: n / batch with drop_last, else ceil(n / batch). */
int64_t gim_batch_iter_batches(const gim_batch_iter *it);
/* Moves to the start of batch `index` of `epoch` (resume). */
void gim_batch_iter_seek(gim_batch_iter *it, int64_t epoch, int64_t index);
/* Fills x [batch, 1, rows, cols] and labels [batch] (labels may be NULL) with
 * the next batch; returns the number of real examples in it: batch, fewer
 * for the final partial batch (the rest zero-filled, labels 0) when
 * !drop_last, or 0 when the epoch is over (nothing written). Call
 * gim_batch_iter_seek(it, it->epoch + 1, 0) to go on. */
int64_t gim_batch_iter_next(gim_batch_iter *it, float *x, int32_t *labels);
void gim_batch_iter_free(gim_batch_iter *it);

/* ---- audio corpora ------------------------------------------------------------ */

/* A directory tree of audio files (runtime/audio.c): anything libsndfile
 * reads (WAV, FLAC, ...), converted to one sample rate with libsamplerate,
 * channels mixed down to mono. The speaker of a file is the first directory
 * level under the root, as in LibriSpeech's SPEAKER/CHAPTER/UTTERANCE.flac.
 *
 * The tree is decoded once into a cache file (raw float32 samples, an index
 * of utterances, the notes about skipped files) that is then memory-mapped:
 * a later run with the same files and rate maps it instead of decoding, and
 * the page cache, not the heap, holds the samples. Every example is a crop
 * of `crop` samples; which crop is a pure function of (seed, epoch,
 * utterance), so a resumed run sees the same audio. */

#define GIM_AUDIO_DEFAULT_RATE 16000
#define GIM_AUDIO_CACHE_NAME "audio-cache.bin"

typedef struct gim_audio_options {
    int rate;                 /* samples per second after conversion */
    int64_t crop;             /* samples per example; shorter utterances are skipped */
    uint64_t seed;            /* the train/test split */
    int test_every;           /* 1 in test_every of each speaker's utterances is a test one (5) */
    const char *cache_dir;    /* where GIM_AUDIO_CACHE_NAME lives; NULL: an unlinked temporary file */
    const char *test_list;    /* a file of paths (relative to the root), one a line, that are the
                                 test split instead of the seeded one; NULL: seeded */
} gim_audio_options;

void gim_audio_defaults(gim_audio_options *o);

typedef struct gim_audio_utt {
    int64_t offset;           /* first sample in gim_audio_corpus.samples */
    int64_t length;           /* samples, >= crop */
    int32_t speaker;          /* index into speakers[] */
    const char *path;         /* relative to the root */
} gim_audio_utt;

typedef struct gim_audio_corpus {
    char dir[512];
    int rate;
    int64_t crop;
    uint64_t seed;
    int n_speakers;           /* speakers with at least one usable utterance */
    const char **speakers;    /* their names (directory names), sorted */
    gim_audio_utt *utts;      /* usable utterances, sorted by path */
    int64_t n_utts;
    int64_t *train, *test;    /* indices into utts */
    int64_t n_train, n_test;
    int64_t n_files;          /* regular files looked at */
    int64_t n_short;          /* decoded but shorter than a crop: skipped */
    int64_t n_bad;            /* not audio, damaged, or outside a speaker directory: skipped */
    bool from_cache;          /* the cache was mapped, nothing decoded */
    char *notes;              /* lines naming what was skipped and why; "" when nothing was */
    const float *samples;     /* mapped */
    void *map;
    size_t map_len;
    char *strings;            /* owns the path and speaker strings */
} gim_audio_corpus;

/* True when `dir` is a directory that holds no IDX data set (no
 * train-images-idx3-ubyte[.gz]) but holds a directory (speakers): a tree
 * gim_audio_open should read. */
bool gim_audio_is_corpus(const char *dir);

/* Opens (decoding or mapping the cache) the tree under `dir`. Errors: not a
 * directory, no usable audio at all (naming what was found), a cache that
 * cannot be written. Files that cannot be used are skipped, counted and
 * named in notes. Returns 0, or -1 with a message in err and *c left safe
 * to close. `progress`, when not NULL, gets a line per 100 decoded files. */
int gim_audio_open(const char *dir, const gim_audio_options *o, gim_audio_corpus *c, FILE *progress,
                   char *err, size_t errlen);
void gim_audio_close(gim_audio_corpus *c);

/* First sample of utterance u's crop in `epoch`: uniform over the
 * length - crop + 1 positions, from (seed, GIM_RT_STREAM_CROP | epoch, u);
 * for epoch < 0 (evaluation), the centred crop. */
int64_t gim_audio_crop_start(const gim_audio_corpus *c, int64_t u, int64_t epoch);
/* Copies that crop (crop floats) to out. */
void gim_audio_crop(const gim_audio_corpus *c, int64_t u, int64_t epoch, float *out);

/* The crops of `epoch` of the utterances idx[0..n) as the trainer's
 * examples: x [n, 1, crop] in a new aligned buffer (*storage; gim_free it),
 * labels (speakers) in *labels (gim_free it). Returns 0, or -1 (out of
 * memory) with err. */
int gim_audio_examples(const gim_audio_corpus *c, const int64_t *idx, int64_t n, int64_t epoch,
                       struct gim_examples *ex, float **storage, int32_t **labels, char *err,
                       size_t errlen);

/* Utterances idx[0..n) of a corpus as a data set made on demand: example i
 * of epoch e is utterance idx[i]'s crop of epoch e (GIM_EPOCH_NONE: the
 * centred crop), labelled with its speaker. The view must outlive the
 * examples. */
typedef struct gim_audio_view {
    const gim_audio_corpus *c;
    const int64_t *idx;
    int64_t n;
} gim_audio_view;
void gim_audio_source(const gim_audio_view *v, struct gim_examples *ex);

/* Time-averaged features of every module (its feature slot [batch, T, C]
 * averaged over T, as the speaker probe reads them) of `crops` crops of each
 * of the utterances idx[0..n): one crop is the centred one; more are spread
 * evenly from the utterance's start to its end. feats[i] gets n * crops *
 * dims[i] floats (gim_free), row u * crops + k for crop k of idx[u]; NULL
 * and dims[i] 0 for a module without features. Runs a batch at a time;
 * after each, show (when not NULL) gets the rows done and n * crops.
 * Returns 0, or -1 with err. */
struct gim_exec_model;
struct gim_train_state;
int gim_audio_features(const struct gim_exec_model *m, const struct gim_train_state *s, const gim_audio_corpus *c,
                       const int64_t *idx, int64_t n, int64_t crops, float **feats, int64_t *dims,
                       void (*show)(void *arg, int64_t done, int64_t total), void *arg, char *err, size_t errlen);

#endif
