/* Plain-C (double) reference implementations of the loss-family ops
 * (infonce, cross_entropy, gru), forward and analytic backward, for the
 * differential and finite-difference tests. Layouts as in docs/internals.md. */
#ifndef GIM_REF_LOSS_H
#define GIM_REF_LOSS_H

#include <stdbool.h>
#include <stdint.h>

/* InfoNCE problem: sequence form (grid = false) z [N, T, Cz], c [N, T, Cc];
 * grid form (grid = true) z [N, G, G, Cz], c [N, G, G, Cc] with G = len.
 * W [K, Cz, Cc]. */
typedef struct ref_infonce_cfg {
    bool grid;
    int64_t N, len;          /* len: T (sequence) or G (grid) */
    int64_t Cz, Cc;
    int64_t K, negatives;
    uint64_t seed, stream, step;
} ref_infonce_cfg;

/* Number of vectors (context positions, and candidates): N*T or N*G*G. */
int64_t ref_infonce_positions(const ref_infonce_cfg *cfg);
/* Index of the positive for context position p at step k (1-based), or -1
 * when p has no target at that step. */
int64_t ref_infonce_target(const ref_infonce_cfg *cfg, int64_t p, int64_t k);
/* Negative j of position p at step k: the documented counter formula. */
int64_t ref_infonce_negative(const ref_infonce_cfg *cfg, int64_t k, int64_t p, int64_t j);

double ref_infonce(const ref_infonce_cfg *cfg, const double *z, const double *c, const double *W);
/* Gradients of ref_infonce: dz [P*Cz], dc [P*Cc], dW [K*Cz*Cc] (overwritten).
 * When the loss reads c = z, the gradient of z is dz + dc. */
void ref_infonce_bwd(const ref_infonce_cfg *cfg, const double *z, const double *c, const double *W,
                     double *dz, double *dc, double *dW);

/* Mean over N of -log softmax(logits[n])[labels[n]]. A label outside
 * [0, classes) contributes 0 (and no gradient), still counted in N. */
double ref_cross_entropy(int64_t N, int64_t classes, const double *logits, const int32_t *labels);
void ref_cross_entropy_bwd(int64_t N, int64_t classes, const double *logits, const int32_t *labels,
                           double *dlogits);

/* PyTorch GRU (gates r, z, n), h_0 = 0: x [N, T, C] -> y [N, T, H]. */
void ref_gru(int64_t N, int64_t T, int64_t C, int64_t H, const double *x, const double *w_ih,
             const double *w_hh, const double *b_ih, const double *b_hh, double *y);
/* Backward through time given dy [N, T, H]; writes (overwrites) dx [N*T*C],
 * dw_ih [3H*C], dw_hh [3H*H], db_ih [3H], db_hh [3H]. */
void ref_gru_bwd(int64_t N, int64_t T, int64_t C, int64_t H, const double *x, const double *w_ih,
                 const double *w_hh, const double *b_ih, const double *b_hh, const double *dy,
                 double *dx, double *dw_ih, double *dw_hh, double *db_ih, double *db_hh);

#endif
