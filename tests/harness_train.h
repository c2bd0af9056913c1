/* Shared by the training tests: a small IDX data set with structure that
 * InfoNCE can learn, small models, and readers of what `gimc train` leaves
 * in its output directory (metrics.csv, checkpoints). */
#ifndef GIM_HARNESS_TRAIN_H
#define GIM_HARNESS_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

/* Writes train-/t10k- images and labels (IDX, plain or gzip) of `side` x
 * `side` pixels into a new directory `name` under gim_tmpdir(); returns it.
 * Example i has label i % 10 and is a pattern of vertical stripes whose
 * period depends on the label, with a random phase and pixel noise: every
 * row of an image looks alike, so a patch predicts the patches below it
 * (what InfoNCE on a grid learns), and the class is visible to a probe. */
const char *tt_dataset(const char *name, int side, int n_train, int n_test, bool gz);

/* A model file `name` for side x side images: patches(size=4, stride=2)
 * then `modules` modules (1..3), each conv + relu, spatial_mean and infonce
 * (steps 2, 4 negatives). Returns its path. */
const char *tt_model(const char *name, int side, int modules);

/* A fresh path under gim_tmpdir() (not created). */
const char *tt_path(const char *name);

/* DIR/weights.safetensors: the weights file gimc train writes into `dir`
 * (heap, kept reachable until exit). */
const char *tt_weights(const char *dir);

/* One row of metrics.csv. */
typedef struct tt_row {
    int64_t step, epoch;
    int module;
    double loss, rate;
} tt_row;

/* Reads DIR/metrics.csv, checking its header and that every line has five
 * fields. Returns the number of rows (*rows: heap, gim_free), -1 on error. */
int tt_metrics(const char *dir, tt_row **rows);
/* Mean loss of module `module` over its first (from_end false) or last k
 * rows; NAN when it has fewer than k. */
double tt_mean_loss(const tt_row *rows, int n, int module, int k, bool from_end);
/* Rows of one module. */
int tt_count(const tt_row *rows, int n, int module);

/* Whether two files hold the same bytes. */
bool tt_same_file(const char *a, const char *b);
/* Whether `hay` contains `needle`. */
bool tt_has(const char *hay, const char *needle);

/* Runs gimc with printf-style arguments and waits; returns its exit status
 * as gim_run_gimc. Its stdout and stderr go to *out and *err (heap,
 * gim_free), or are freed when out or err is NULL. */
int tt_gimc(char **out, char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Runs gimc with args in the background: returns its pid; stdout and stderr
 * go to files under gim_tmpdir(), the first's path in *out_path (static
 * storage, valid until the next call). */
int tt_spawn_gimc(const char *args, const char **out_path);

/* After a suite: removes gim_tmpdir() and everything in it when status is 0
 * (kept for a look after a failure). Returns status. */
int tt_cleanup(int status);

#endif
