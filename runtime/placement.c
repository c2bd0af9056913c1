/* Which rank runs which module under mpirun: contiguous groups of modules in
 * order, rank 0 first (it reads the data, which module 1 consumes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gim_train.h"
#include "gim_util.h"

/* The contiguous split of cost[0..n) into `ranks` non-empty groups whose
 * largest sum is least (ties: the earliest such split), by dynamic
 * programming over (modules placed, ranks used); n is a handful. */
int gim_placement_balance(const double *cost, int n, int ranks, int *rank_of, char *err, size_t errlen) {
    if (ranks < 1 || ranks > n) {
        gim_errf(err, errlen, "%d ranks for %d module%s: each rank runs at least one whole module, so at most %d "
                 "ranks (data-parallel replicas of a module are not supported)", ranks, n, n == 1 ? "" : "s", n);
        return -1;
    }
    /* best[k][i]: least largest group over splits of modules [0, i) into k groups */
    size_t cells = (size_t)(ranks + 1) * (size_t)(n + 1);
    double *best = gim_malloc(sizeof(double) * cells);
    int *cut = gim_malloc(sizeof(int) * cells);
    double *prefix = gim_malloc(sizeof(double) * (size_t)(n + 1));
    if (!best || !cut || !prefix) {
        gim_free(best), gim_free(cut), gim_free(prefix);
        gim_errf(err, errlen, "out of memory");
        return -1;
    }
#define AT(k, i) ((size_t)(k) * (size_t)(n + 1) + (size_t)(i))
    prefix[0] = 0;
    for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + (cost[i] > 0 ? cost[i] : 0);
    for (size_t c = 0; c < cells; c++) best[c] = -1, cut[c] = 0;
    best[AT(0, 0)] = 0;
    for (int k = 1; k <= ranks; k++)
        for (int i = k; i <= n; i++)
            for (int j = k - 1; j < i; j++) {   /* the last group is [j, i) */
                if (best[AT(k - 1, j)] < 0) continue;
                double worst = best[AT(k - 1, j)];
                double group = prefix[i] - prefix[j];
                if (group > worst) worst = group;
                if (best[AT(k, i)] < 0 || worst < best[AT(k, i)]) {
                    best[AT(k, i)] = worst;
                    cut[AT(k, i)] = j;
                }
            }
    for (int k = ranks, i = n; k > 0; k--) {
        int j = cut[AT(k, i)];
        for (int mi = j; mi < i; mi++) rank_of[mi] = k - 1;
        i = j;
    }
#undef AT
    gim_free(best);
    gim_free(cut);
    gim_free(prefix);
    return 0;
}

int gim_placement_parse(const char *text, int n, int ranks, int *rank_of, char *err, size_t errlen) {
    const char *at = text;
    int count = 0;
    while (*at) {
        char *end;
        long v = strtol(at, &end, 10);
        if (end == at || (*end && *end != ',')) {
            gim_errf(err, errlen, "--placement %s: expected a comma-separated list of ranks (0..%d), one per module",
                     text, ranks - 1);
            return -1;
        }
        if (count >= n) {
            gim_errf(err, errlen, "--placement %s lists more than the model's %d modules", text, n);
            return -1;
        }
        if (v < 0 || v >= ranks) {
            gim_errf(err, errlen, "--placement %s: module %d's rank %ld is not one of the %d ranks (0..%d)", text,
                     count + 1, v, ranks, ranks - 1);
            return -1;
        }
        rank_of[count++] = (int)v;
        at = *end ? end + 1 : end;
    }
    if (count != n) {
        gim_errf(err, errlen, "--placement %s gives %d rank%s for the model's %d modules", text, count,
                 count == 1 ? "" : "s", n);
        return -1;
    }
    if (rank_of[0] != 0) {
        gim_errf(err, errlen, "--placement %s: module 1 must run on rank 0 (it reads the data)", text);
        return -1;
    }
    for (int i = 1; i < n; i++)
        if (rank_of[i] != rank_of[i - 1] && rank_of[i] != rank_of[i - 1] + 1) {
            gim_errf(err, errlen, "--placement %s: ranks must own contiguous modules in order (module %d on rank %d "
                     "follows module %d on rank %d)", text, i + 1, rank_of[i], i, rank_of[i - 1]);
            return -1;
        }
    if (rank_of[n - 1] != ranks - 1) {
        gim_errf(err, errlen, "--placement %s leaves rank %d to %d without a module (%d ranks were started)", text,
                 rank_of[n - 1] + 1, ranks - 1, ranks);
        return -1;
    }
    return 0;
}
