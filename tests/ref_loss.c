/* Plain-C (double) references for the loss-family ops: straightforward loops
 * following docs/internals.md, written for clarity, not speed. */
#include "ref_loss.h"

#include <math.h>
#include <string.h>

#include "gim_runtime.h"
#include "gim_util.h"

int64_t ref_infonce_positions(const ref_infonce_cfg *cfg) {
    return cfg->grid ? cfg->N * cfg->len * cfg->len : cfg->N * cfg->len;
}

int64_t ref_infonce_target(const ref_infonce_cfg *cfg, int64_t p, int64_t k) {
    if (cfg->grid) {
        int64_t G = cfg->len, i = (p / G) % G;
        return i + k < G ? p + k * G : -1;
    }
    int64_t t = p % cfg->len;
    return t + k < cfg->len ? p + k : -1;
}

/* counter = ((step·K + (k − 1))·P + p)·negatives + j */
int64_t ref_infonce_negative(const ref_infonce_cfg *cfg, int64_t k, int64_t p, int64_t j) {
    int64_t P = ref_infonce_positions(cfg);
    uint64_t counter = (((uint64_t)cfg->step * (uint64_t)cfg->K + (uint64_t)(k - 1)) * (uint64_t)P
                        + (uint64_t)p) * (uint64_t)cfg->negatives + (uint64_t)j;
    return gim_rt_rand_below(cfg->seed, cfg->stream, counter, (uint32_t)P);
}

/* Positions with a target at step k: the mean's denominator. */
static int64_t infonce_count(const ref_infonce_cfg *cfg, int64_t k) {
    if (cfg->grid) return k < cfg->len ? cfg->N * (cfg->len - k) * cfg->len : 0;
    return k < cfg->len ? cfg->N * (cfg->len - k) : 0;
}

/* pred = W_k c_p, W_k [Cz, Cc] */
static void infonce_pred(const ref_infonce_cfg *cfg, const double *Wk, const double *cp, double *pred) {
    for (int64_t a = 0; a < cfg->Cz; a++) {
        double s = 0;
        for (int64_t b = 0; b < cfg->Cc; b++) s += Wk[a * cfg->Cc + b] * cp[b];
        pred[a] = s;
    }
}

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Candidate list of (p, k): [positive, negative 0, ..., negative M-1]. */
static void infonce_candidates(const ref_infonce_cfg *cfg, int64_t k, int64_t p, int64_t pos, int64_t *cand) {
    cand[0] = pos;
    for (int64_t j = 0; j < cfg->negatives; j++) cand[1 + j] = ref_infonce_negative(cfg, k, p, j);
}

/* L = (1/K) Σ_k (1/M_k) Σ_p [−s_0 + log Σ_i exp s_i],  s_i = z_{cand_i} · (W_k c_p) */
double ref_infonce(const ref_infonce_cfg *cfg, const double *z, const double *c, const double *W) {
    int64_t P = ref_infonce_positions(cfg), nc = cfg->negatives + 1;
    double *pred = gim_xmalloc(sizeof(double) * cfg->Cz);
    double *s = gim_xmalloc(sizeof(double) * nc);
    int64_t *cand = gim_xmalloc(sizeof(int64_t) * nc);
    double loss = 0;
    for (int64_t k = 1; k <= cfg->K; k++) {
        int64_t M = infonce_count(cfg, k);
        if (M == 0) continue;
        const double *Wk = W + (k - 1) * cfg->Cz * cfg->Cc;
        double sum_k = 0;
        for (int64_t p = 0; p < P; p++) {
            int64_t pos = ref_infonce_target(cfg, p, k);
            if (pos < 0) continue;
            infonce_pred(cfg, Wk, c + p * cfg->Cc, pred);
            infonce_candidates(cfg, k, p, pos, cand);
            double mx = -INFINITY;
            for (int64_t i = 0; i < nc; i++) {
                s[i] = dot(z + cand[i] * cfg->Cz, pred, cfg->Cz);
                if (s[i] > mx) mx = s[i];
            }
            double se = 0;
            for (int64_t i = 0; i < nc; i++) se += exp(s[i] - mx);
            sum_k += -s[0] + mx + log(se);
        }
        loss += sum_k / (double)M;
    }
    gim_free(pred);
    gim_free(s);
    gim_free(cand);
    return loss / (double)cfg->K;
}

/* With g_i = softmax(s)_i − [i = 0] and a = 1/(K·M_k):
 *   dz_{cand_i} += a g_i pred,   dpred = a Σ_i g_i z_{cand_i},
 *   dc_p += W_kᵀ dpred,          dW_k += dpred c_pᵀ. */
void ref_infonce_bwd(const ref_infonce_cfg *cfg, const double *z, const double *c, const double *W,
                     double *dz, double *dc, double *dW) {
    int64_t P = ref_infonce_positions(cfg), nc = cfg->negatives + 1, Cz = cfg->Cz, Cc = cfg->Cc;
    memset(dz, 0, sizeof(double) * P * Cz);
    memset(dc, 0, sizeof(double) * P * Cc);
    memset(dW, 0, sizeof(double) * cfg->K * Cz * Cc);
    double *pred = gim_xmalloc(sizeof(double) * Cz);
    double *dpred = gim_xmalloc(sizeof(double) * Cz);
    double *s = gim_xmalloc(sizeof(double) * nc);
    int64_t *cand = gim_xmalloc(sizeof(int64_t) * nc);
    for (int64_t k = 1; k <= cfg->K; k++) {
        int64_t M = infonce_count(cfg, k);
        if (M == 0) continue;
        double a = 1.0 / ((double)cfg->K * (double)M);
        const double *Wk = W + (k - 1) * Cz * Cc;
        double *dWk = dW + (k - 1) * Cz * Cc;
        for (int64_t p = 0; p < P; p++) {
            int64_t pos = ref_infonce_target(cfg, p, k);
            if (pos < 0) continue;
            const double *cp = c + p * Cc;
            infonce_pred(cfg, Wk, cp, pred);
            infonce_candidates(cfg, k, p, pos, cand);
            double mx = -INFINITY;
            for (int64_t i = 0; i < nc; i++) {
                s[i] = dot(z + cand[i] * Cz, pred, Cz);
                if (s[i] > mx) mx = s[i];
            }
            double se = 0;
            for (int64_t i = 0; i < nc; i++) se += exp(s[i] - mx);
            memset(dpred, 0, sizeof(double) * Cz);
            for (int64_t i = 0; i < nc; i++) {
                double g = a * (exp(s[i] - mx) / se - (i == 0 ? 1.0 : 0.0));
                const double *zc = z + cand[i] * Cz;
                double *dzc = dz + cand[i] * Cz;
                for (int64_t e = 0; e < Cz; e++) {
                    dzc[e] += g * pred[e];
                    dpred[e] += g * zc[e];
                }
            }
            for (int64_t e = 0; e < Cz; e++)
                for (int64_t b = 0; b < Cc; b++) {
                    dc[p * Cc + b] += Wk[e * Cc + b] * dpred[e];
                    dWk[e * Cc + b] += dpred[e] * cp[b];
                }
        }
    }
    gim_free(pred);
    gim_free(dpred);
    gim_free(s);
    gim_free(cand);
}

double ref_cross_entropy(int64_t N, int64_t classes, const double *logits, const int32_t *labels) {
    double loss = 0;
    for (int64_t n = 0; n < N; n++) {
        const double *l = logits + n * classes;
        if (labels[n] < 0 || labels[n] >= classes) continue;
        double mx = -INFINITY, se = 0;
        for (int64_t j = 0; j < classes; j++) mx = l[j] > mx ? l[j] : mx;
        for (int64_t j = 0; j < classes; j++) se += exp(l[j] - mx);
        loss += mx + log(se) - l[labels[n]];
    }
    return loss / (double)N;
}

/* dlogits = (softmax(logits) − onehot(label)) / N */
void ref_cross_entropy_bwd(int64_t N, int64_t classes, const double *logits, const int32_t *labels,
                           double *dlogits) {
    for (int64_t n = 0; n < N; n++) {
        const double *l = logits + n * classes;
        double *d = dlogits + n * classes;
        if (labels[n] < 0 || labels[n] >= classes) {
            for (int64_t j = 0; j < classes; j++) d[j] = 0;
            continue;
        }
        double mx = -INFINITY, se = 0;
        for (int64_t j = 0; j < classes; j++) mx = l[j] > mx ? l[j] : mx;
        for (int64_t j = 0; j < classes; j++) se += exp(l[j] - mx);
        for (int64_t j = 0; j < classes; j++)
            d[j] = (exp(l[j] - mx) / se - (j == labels[n] ? 1.0 : 0.0)) / (double)N;
    }
}

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

/* One GRU cell for one sample: gi = W_i x + b_i, gh = W_h h + b_h (3H each,
 * blocks r, z, n); writes r, z, n, gh_n and h'. */
static void gru_cell(int64_t C, int64_t H, const double *x, const double *h, const double *w_ih,
                     const double *w_hh, const double *b_ih, const double *b_hh, double *r, double *zg,
                     double *ng, double *ghn, double *hn) {
    for (int64_t j = 0; j < H; j++) {
        double gi[3], gh[3];
        for (int q = 0; q < 3; q++) {
            int64_t row = q * H + j;
            gi[q] = b_ih[row] + dot(w_ih + row * C, x, C);
            gh[q] = b_hh[row] + (h ? dot(w_hh + row * H, h, H) : 0.0);
        }
        r[j] = sigm(gi[0] + gh[0]);
        zg[j] = sigm(gi[1] + gh[1]);
        ng[j] = tanh(gi[2] + r[j] * gh[2]);
        ghn[j] = gh[2];
        hn[j] = (1 - zg[j]) * ng[j] + zg[j] * (h ? h[j] : 0.0);
    }
}

void ref_gru(int64_t N, int64_t T, int64_t C, int64_t H, const double *x, const double *w_ih,
             const double *w_hh, const double *b_ih, const double *b_hh, double *y) {
    double *tmp = gim_xmalloc(sizeof(double) * 4 * H);
    for (int64_t n = 0; n < N; n++)
        for (int64_t t = 0; t < T; t++)
            gru_cell(C, H, x + (n * T + t) * C, t ? y + (n * T + t - 1) * H : NULL, w_ih, w_hh, b_ih,
                     b_hh, tmp, tmp + H, tmp + 2 * H, tmp + 3 * H, y + (n * T + t) * H);
    gim_free(tmp);
}

/* Backward through time, per sample, t = T−1 .. 0, with dh = dy_t + (carry):
 *   dn = dh (1 − z), dz = dh (h − n), dh_prev = dh z + W_hᵀ dgh,
 *   dan = dn (1 − n²): dgi_n = dan, dgh_n = dan r, dr = dan gh_n,
 *   dgi_r = dgh_r = dr r (1 − r), dgi_z = dgh_z = dz z (1 − z),
 *   dW_i += dgi xᵀ, db_i += dgi, dW_h += dgh hᵀ, db_h += dgh, dx = W_iᵀ dgi. */
void ref_gru_bwd(int64_t N, int64_t T, int64_t C, int64_t H, const double *x, const double *w_ih,
                 const double *w_hh, const double *b_ih, const double *b_hh, const double *dy,
                 double *dx, double *dw_ih, double *dw_hh, double *db_ih, double *db_hh) {
    double *y = gim_xmalloc(sizeof(double) * N * T * H);
    ref_gru(N, T, C, H, x, w_ih, w_hh, b_ih, b_hh, y);
    memset(dx, 0, sizeof(double) * N * T * C);
    memset(dw_ih, 0, sizeof(double) * 3 * H * C);
    memset(dw_hh, 0, sizeof(double) * 3 * H * H);
    memset(db_ih, 0, sizeof(double) * 3 * H);
    memset(db_hh, 0, sizeof(double) * 3 * H);
    double *r = gim_xmalloc(sizeof(double) * 4 * H), *zg = r + H, *ng = r + 2 * H, *ghn = r + 3 * H;
    double *hn = gim_xmalloc(sizeof(double) * H);
    double *dh = gim_xmalloc(sizeof(double) * H), *dhp = gim_xmalloc(sizeof(double) * H);
    double *dgi = gim_xmalloc(sizeof(double) * 3 * H), *dgh = gim_xmalloc(sizeof(double) * 3 * H);
    for (int64_t n = 0; n < N; n++) {
        memset(dhp, 0, sizeof(double) * H);
        for (int64_t t = T - 1; t >= 0; t--) {
            const double *xt = x + (n * T + t) * C;
            const double *h = t ? y + (n * T + t - 1) * H : NULL;
            gru_cell(C, H, xt, h, w_ih, w_hh, b_ih, b_hh, r, zg, ng, ghn, hn);
            for (int64_t j = 0; j < H; j++) dh[j] = dy[(n * T + t) * H + j] + dhp[j];
            for (int64_t j = 0; j < H; j++) {
                double hp = h ? h[j] : 0.0;
                double dn = dh[j] * (1 - zg[j]), dzv = dh[j] * (hp - ng[j]);
                double dan = dn * (1 - ng[j] * ng[j]);
                double dr = dan * ghn[j];
                double dar = dr * r[j] * (1 - r[j]), daz = dzv * zg[j] * (1 - zg[j]);
                dgi[j] = dar; dgi[H + j] = daz; dgi[2 * H + j] = dan;
                dgh[j] = dar; dgh[H + j] = daz; dgh[2 * H + j] = dan * r[j];
                dhp[j] = dh[j] * zg[j];
            }
            for (int64_t row = 0; row < 3 * H; row++) {
                db_ih[row] += dgi[row];
                db_hh[row] += dgh[row];
                for (int64_t e = 0; e < C; e++) {
                    dw_ih[row * C + e] += dgi[row] * xt[e];
                    dx[(n * T + t) * C + e] += w_ih[row * C + e] * dgi[row];
                }
                if (h)
                    for (int64_t e = 0; e < H; e++) dw_hh[row * H + e] += dgh[row] * h[e];
                for (int64_t e = 0; e < H; e++) dhp[e] += w_hh[row * H + e] * dgh[row];
            }
        }
    }
    gim_free(y); gim_free(r); gim_free(hn); gim_free(dh); gim_free(dhp); gim_free(dgi); gim_free(dgh);
}
