/* Linear probe: multinomial logistic regression by minibatch Adam.
 *
 * Forward on a batch X [B, D]: logits = X Wᵀ + b, p = softmax(logits).
 * Loss = mean over the batch of −log p[y]. Gradients: G = (p − onehot(y)) / B,
 * dW = Gᵀ X, db = Σ_rows G. Both products are SGEMMs (gim_rt_sgemm: cut over
 * the runtime's pool when large). */
#include "gim_probe.h"

#include <math.h>
#include <string.h>

#include "gim_runtime.h"
#include "gim_util.h"
#include "rt_internal.h"

void gim_probe_defaults(gim_probe_options *o) {
    o->epochs = 10;
    o->batch = 256;
    o->lr = 1e-3;
    o->seed = 0;
    o->progress = NULL;
    o->progress_arg = NULL;
}

static void standardise(float *xtr, int64_t ntr, float *xte, int64_t nte, int64_t dim) {
    double *mean = gim_xmalloc(sizeof(double) * (size_t)dim);
    double *sq = gim_xmalloc(sizeof(double) * (size_t)dim);
    for (int64_t j = 0; j < dim; j++) mean[j] = sq[j] = 0;
    for (int64_t i = 0; i < ntr; i++) {
        const float *x = xtr + i * dim;
        for (int64_t j = 0; j < dim; j++) {
            mean[j] += x[j];
            sq[j] += (double)x[j] * x[j];
        }
    }
    float *shift = gim_xmalloc(sizeof(float) * (size_t)dim);
    float *scale = gim_xmalloc(sizeof(float) * (size_t)dim);
    for (int64_t j = 0; j < dim; j++) {
        double m = mean[j] / (double)ntr;
        double var = sq[j] / (double)ntr - m * m;
        double sd = var > 0 ? sqrt(var) : 0;
        shift[j] = (float)m;
        /* A constant feature carries nothing: map it to 0 rather than divide by 0. */
        scale[j] = sd > 1e-12 ? (float)(1.0 / sd) : 0.0f;
    }
    for (int64_t i = 0; i < ntr; i++)
        for (int64_t j = 0; j < dim; j++) xtr[i * dim + j] = (xtr[i * dim + j] - shift[j]) * scale[j];
    for (int64_t i = 0; i < nte; i++)
        for (int64_t j = 0; j < dim; j++) xte[i * dim + j] = (xte[i * dim + j] - shift[j]) * scale[j];
    gim_free(mean);
    gim_free(sq);
    gim_free(shift);
    gim_free(scale);
}

/* logits [n, classes] for rows x [n, dim] */
static void logits_of(const float *x, int64_t n, int64_t dim, int classes, const float *w, const float *b,
                      float *out) {
    for (int64_t i = 0; i < n; i++) memcpy(out + i * classes, b, sizeof(float) * (size_t)classes);
    gim_rt_sgemm(0, 1, n, classes, dim, 1.0f, x, dim, w, dim, 1.0f, out, classes);
}

static double accuracy(const float *x, const int32_t *y, int64_t n, int64_t dim, int classes, const float *w,
                       const float *b) {
    const int64_t chunk = 1024;
    float *lg = gim_xmalloc(sizeof(float) * (size_t)(chunk * classes));
    int64_t correct = 0;
    for (int64_t s = 0; s < n; s += chunk) {
        int64_t c = n - s < chunk ? n - s : chunk;
        logits_of(x + s * dim, c, dim, classes, w, b, lg);
        for (int64_t i = 0; i < c; i++) {
            int best = 0;
            for (int k = 1; k < classes; k++)
                if (lg[i * classes + k] > lg[i * classes + best]) best = k;
            correct += best == y[s + i];
        }
    }
    gim_free(lg);
    return n ? (double)correct / (double)n : 0;
}

int gim_probe_run(float *xtr, const int32_t *ytr, int64_t ntr, float *xte, const int32_t *yte,
                  int64_t nte, int64_t dim, int classes, const gim_probe_options *o,
                  gim_probe_result *r) {
    standardise(xtr, ntr, xte, nte, dim);
    int64_t np = (int64_t)classes * dim + classes;
    float *w = gim_malloc(sizeof(float) * (size_t)np);
    float *g = gim_malloc(sizeof(float) * (size_t)np);
    float *m = gim_calloc((size_t)np, sizeof(float));
    float *v = gim_calloc((size_t)np, sizeof(float));
    float *xb = gim_malloc(sizeof(float) * (size_t)(o->batch * dim));
    float *lg = gim_malloc(sizeof(float) * (size_t)(o->batch * classes));
    int64_t *perm = gim_malloc(sizeof(int64_t) * (size_t)ntr);
    if (!w || !g || !m || !v || !xb || !lg || !perm) {
        gim_free(w); gim_free(g); gim_free(m); gim_free(v); gim_free(xb); gim_free(lg); gim_free(perm);
        return -1;
    }
    float *b = w + (int64_t)classes * dim, *gb = g + (int64_t)classes * dim;
    /* PyTorch's nn.Linear initialisation: U(−1/√dim, 1/√dim). */
    float bound = 1.0f / sqrtf((float)dim);
    for (int64_t i = 0; i < np; i++)
        w[i] = bound * (2.0f * gim_rt_rand_uniform(o->seed, GIM_RT_STREAM_INIT | 0x9e3779b9u, (uint64_t)i) - 1.0f);
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    uint64_t t = 0;
    double loss_sum = 0;
    int64_t loss_n = 0;
    for (int ep = 0; ep < o->epochs; ep++) {
        for (int64_t i = 0; i < ntr; i++) perm[i] = i;
        gim_rt_shuffle_i64(perm, ntr, o->seed, GIM_RT_STREAM_DATA | (0x7072u << 16) | (uint64_t)ep);
        loss_sum = 0;
        loss_n = 0;
        for (int64_t s = 0; s < ntr; s += o->batch) {
            int64_t bn = ntr - s < o->batch ? ntr - s : o->batch;
            for (int64_t i = 0; i < bn; i++) memcpy(xb + i * dim, xtr + perm[s + i] * dim, sizeof(float) * (size_t)dim);
            logits_of(xb, bn, dim, classes, w, b, lg);
            memset(gb, 0, sizeof(float) * (size_t)classes);
            for (int64_t i = 0; i < bn; i++) {
                float *row = lg + i * classes;
                float mx = row[0];
                for (int k = 1; k < classes; k++) mx = row[k] > mx ? row[k] : mx;
                double z = 0;
                for (int k = 0; k < classes; k++) z += exp((double)(row[k] - mx));
                int y = ytr[perm[s + i]];
                loss_sum += -(double)(row[y] - mx) + log(z);
                loss_n++;
                for (int k = 0; k < classes; k++) {
                    float p = (float)(exp((double)(row[k] - mx)) / z);
                    row[k] = (p - (k == y ? 1.0f : 0.0f)) / (float)bn;
                    gb[k] += row[k];
                }
            }
            /* dW [classes, dim] = Gᵀ X */
            gim_rt_sgemm(1, 0, classes, dim, bn, 1.0f, lg, classes, xb, dim, 0.0f, g, dim);
            t++;
            float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
            float step = (float)o->lr / c1;
            for (int64_t i = 0; i < np; i++) {
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                w[i] -= step * m[i] / (sqrtf(v[i] / c2) + eps);
            }
            if (o->progress)
                o->progress(o->progress_arg, ep, s / o->batch + 1, (ntr + o->batch - 1) / o->batch,
                            loss_sum / (double)loss_n);
        }
    }
    r->final_loss = loss_n ? loss_sum / (double)loss_n : 0;
    r->train_acc = accuracy(xtr, ytr, ntr, dim, classes, w, b);
    r->test_acc = accuracy(xte, yte, nte, dim, classes, w, b);
    gim_free(w); gim_free(g); gim_free(m); gim_free(v); gim_free(xb); gim_free(lg); gim_free(perm);
    return 0;
}

void gim_probe_pool_mean(float *x, int64_t n, int64_t positions, int64_t c) {
    for (int64_t i = 0; i < n; i++) {
        const float *src = x + i * positions * c;
        float *dst = x + i * c;
        for (int64_t k = 0; k < c; k++) {
            double s = 0;
            for (int64_t p = 0; p < positions; p++) s += src[p * c + k];
            dst[k] = (float)(s / (double)positions);
        }
    }
}
