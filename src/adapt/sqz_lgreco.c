/* L-GreCo's knapsack-style dynamic program (see sqz_lgreco.h).
 *
 * best[e] = the fewest bytes for layers 0..l with a total (binned) error of at most e bins.
 * Layer by layer: best_l[e] = min_c best_{l-1}[e - w(l, c)] + bytes[l][c], with w the error in
 * whole bins rounded up; the argmin c is kept per (layer, e) to walk the answer back. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_lgreco.h"

sqz_status_t sqz_lgreco_solve(size_t nlayers, size_t ncand, const double *bytes, const double *err,
                              double budget, size_t bins, int *choice, double *total_bytes,
                              double *total_err)
{
    if (0 == nlayers || 0 == ncand || ncand > 255 || 0 == bins || bins > ((size_t)1 << 24) ||
        !(budget >= 0) || !isfinite(budget) || NULL == bytes || NULL == err || NULL == choice) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const double width = budget > 0 ? budget / (double)bins : 0;
    const size_t cap   = bins;
    size_t      *w     = malloc(nlayers * ncand * sizeof(size_t));
    double      *best  = malloc((cap + 1) * sizeof(double));
    double      *next  = malloc((cap + 1) * sizeof(double));
    uint8_t     *arg   = malloc(nlayers * (cap + 1));
    if (NULL == w || NULL == best || NULL == next || NULL == arg) {
        free(w), free(best), free(next), free(arg);
        return SQZ_ERR_NO_MEMORY;
    }
    /* Error weights in bins, rounded up; SIZE_MAX: never fits. */
    for (size_t i = 0; i < nlayers * ncand; i++) {
        const double e = err[i];
        if (!(e >= 0) || !isfinite(e) || !isfinite(bytes[i])) {
            free(w), free(best), free(next), free(arg);
            return SQZ_ERR_INVALID_PARAM;
        }
        if (0 == e) {
            w[i] = 0;
        } else if (0 == width || e / width > (double)cap) {
            w[i] = SIZE_MAX;
        } else {
            w[i] = (size_t)ceil(e / width);
        }
    }
    for (size_t e = 0; e <= cap; e++) {
        best[e] = 0; /* no layer yet: nothing spent */
    }
    for (size_t l = 0; l < nlayers; l++) {
        for (size_t e = 0; e <= cap; e++) {
            double  b = INFINITY;
            uint8_t a = 0xff;
            for (size_t c = 0; c < ncand; c++) {
                const size_t wc = w[l * ncand + c];
                if (wc > e || !isfinite(best[e - wc])) {
                    continue;
                }
                const double v = best[e - wc] + bytes[l * ncand + c];
                /* Fewer bytes; on a tie, the lower error; then the lower index. */
                if (v < b || (v == b && 0xff != a && err[l * ncand + c] < err[l * ncand + a])) {
                    b = v;
                    a = (uint8_t)c;
                }
            }
            next[e]                = b;
            arg[l * (cap + 1) + e] = a;
        }
        double *t = best;
        best      = next;
        next      = t;
    }
    sqz_status_t st = SQZ_ERR_NOT_SUPPORTED;
    if (isfinite(best[cap])) {
        /* Walk back from the full budget. */
        size_t e  = cap;
        double tb = 0, te = 0;
        for (size_t l = nlayers; l-- > 0;) {
            const uint8_t a = arg[l * (cap + 1) + e];
            choice[l]       = a;
            tb += bytes[l * ncand + a];
            te += err[l * ncand + a];
            e -= w[l * ncand + a];
        }
        if (total_bytes) {
            *total_bytes = tb;
        }
        if (total_err) {
            *total_err = te;
        }
        st = SQZ_OK;
    }
    free(w), free(best), free(next), free(arg);
    return st;
}
