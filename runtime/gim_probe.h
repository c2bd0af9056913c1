/* The linear probe: a softmax classifier trained on frozen features, the
 * standard measure of a self-supervised representation. */
#ifndef GIM_PROBE_H
#define GIM_PROBE_H

#include <stdint.h>

typedef struct gim_probe_options {
    int epochs;          /* 10 */
    int batch;           /* 256 */
    double lr;           /* Adam, 1e-3 */
    uint64_t seed;
    /* Called after every batch when not NULL: the epoch (0-based), the
     * batches done in it out of `batches`, and the mean loss of those. */
    void (*progress)(void *arg, int epoch, int64_t batch, int64_t batches, double loss);
    void *progress_arg;
} gim_probe_options;

void gim_probe_defaults(gim_probe_options *o);

typedef struct gim_probe_result {
    double train_acc, test_acc;   /* fractions in [0, 1] */
    double final_loss;            /* mean training loss of the last epoch */
} gim_probe_result;

/* Standardises both sets in place with the training set's per-feature mean
 * and std, then trains W [classes, dim], b on (xtr, ytr) and reports
 * accuracies. Labels must lie in [0, classes). Returns 0, or -1 on lack of
 * memory. */
int gim_probe_run(float *xtr, const int32_t *ytr, int64_t ntr, float *xte, const int32_t *yte,
                  int64_t nte, int64_t dim, int classes, const gim_probe_options *o,
                  gim_probe_result *r);

/* Averages per-example features [positions, C] over the positions, in
 * place: x becomes n * C floats. */
void gim_probe_pool_mean(float *x, int64_t n, int64_t positions, int64_t c);
/* The same averages (the same bits) written to out, n * C floats; out may be x. */
void gim_probe_pool_mean_to(const float *x, int64_t n, int64_t positions, int64_t c, float *out);

#endif
