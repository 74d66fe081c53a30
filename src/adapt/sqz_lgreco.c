/* L-GreCo's dynamic program (see sqz_lgreco.h), a knapsack over the bytes axis:
 * E_l[b] = the least total error of layers 0..l whose binned bytes are at most b;
 * E_l[b] = min_c E_{l-1}[b - w(l, c)] + err[l][c], w the bytes in whole bins rounded up.  The
 * argmin c is kept per (layer, b) to walk the answer back from the smallest b within budget. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_lgreco.h"

/* The program for both problems: with max_bytes < 0, the fewest bytes within `budget` of error;
 * otherwise the least error within max_bytes. */
static sqz_status_t sqz_lgreco_run(size_t nlayers, size_t ncand, const double *bytes,
                                   const double *err, double budget, double max_bytes, size_t bins,
                                   int *choice, double *total_bytes, double *total_err)
{
    if (0 == nlayers || 0 == ncand || ncand > 255 || 0 == bins || bins > ((size_t)1 << 24) ||
        !(budget >= 0) || !isfinite(budget) || !isfinite(max_bytes) || NULL == bytes ||
        NULL == err || NULL == choice) {
        return SQZ_ERR_INVALID_PARAM;
    }
    double span = 0;
    for (size_t l = 0; l < nlayers; l++) {
        double m = 0;
        for (size_t c = 0; c < ncand; c++) {
            const double b = bytes[l * ncand + c], e = err[l * ncand + c];
            if (!(b >= 0) || !isfinite(b) || !(e >= 0) || !isfinite(e)) {
                return SQZ_ERR_INVALID_PARAM;
            }
            m = b > m ? b : m;
        }
        span += m;
    }
    const double width = span > 0 ? span / (double)bins : 1;
    size_t      *w     = malloc(nlayers * ncand * sizeof(size_t));
    if (NULL == w) {
        return SQZ_ERR_NO_MEMORY;
    }
    size_t cap = 0;
    for (size_t l = 0; l < nlayers; l++) {
        size_t m = 0;
        for (size_t c = 0; c < ncand; c++) {
            const size_t wc = (size_t)ceil(bytes[l * ncand + c] / width - 1e-9);
            w[l * ncand + c] = wc;
            m                = wc > m ? wc : m;
        }
        cap += m; /* every choice fits in [0, cap] */
    }
    double  *best = malloc((cap + 1) * sizeof(double));
    double  *next = malloc((cap + 1) * sizeof(double));
    uint8_t *arg  = malloc(nlayers * (cap + 1));
    if (NULL == best || NULL == next || NULL == arg) {
        free(w), free(best), free(next), free(arg);
        return SQZ_ERR_NO_MEMORY;
    }
    for (size_t b = 0; b <= cap; b++) {
        best[b] = 0; /* no layer yet: no error, whatever the bytes */
    }
    for (size_t l = 0; l < nlayers; l++) {
        for (size_t b = 0; b <= cap; b++) {
            double  e = INFINITY;
            uint8_t a = 0xff;
            for (size_t c = 0; c < ncand; c++) {
                const size_t wc = w[l * ncand + c];
                if (wc > b || !isfinite(best[b - wc])) {
                    continue;
                }
                const double v = best[b - wc] + err[l * ncand + c];
                if (v < e) { /* a tie keeps the lower index */
                    e = v;
                    a = (uint8_t)c;
                }
            }
            next[b]                = e;
            arg[l * (cap + 1) + b] = a;
        }
        double *t = best;
        best      = next;
        next      = t;
    }
    /* The smallest byte count within the budget (E is non-increasing in b); or the largest
     * within max_bytes, where E is least. */
    sqz_status_t st = SQZ_ERR_NOT_SUPPORTED;
    size_t       b  = 0;
    if (max_bytes < 0) {
        while (b <= cap && !(best[b] <= budget)) {
            b++;
        }
    } else {
        const double lim = floor(max_bytes / width + 1e-9);
        b                = lim >= (double)cap ? cap : (size_t)lim;
        if (!isfinite(best[b])) {
            b = cap + 1; /* even the cheapest choice costs more */
        }
    }
    if (b <= cap) {
        double tb = 0, te = 0;
        for (size_t l = nlayers; l-- > 0;) {
            const uint8_t a = arg[l * (cap + 1) + b];
            choice[l]       = a;
            tb += bytes[l * ncand + a];
            te += err[l * ncand + a];
            b -= w[l * ncand + a];
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

sqz_status_t sqz_lgreco_solve(size_t nlayers, size_t ncand, const double *bytes, const double *err,
                              double budget, size_t bins, int *choice, double *total_bytes,
                              double *total_err)
{
    return sqz_lgreco_run(nlayers, ncand, bytes, err, budget, -1, bins, choice, total_bytes,
                          total_err);
}

sqz_status_t sqz_lgreco_solve_bytes(size_t nlayers, size_t ncand, const double *bytes,
                                    const double *err, double max_bytes, size_t bins, int *choice,
                                    double *total_bytes, double *total_err)
{
    if (!(max_bytes >= 0)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    return sqz_lgreco_run(nlayers, ncand, bytes, err, 0, max_bytes, bins, choice, total_bytes,
                          total_err);
}
