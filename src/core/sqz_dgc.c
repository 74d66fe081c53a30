#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_dgc.h"
#include "sqz_log.h"

int sqz_dgc_active(const sqz_core_params_t *p) { return p->dgc_momentum > 0 || p->dgc_clip > 0; }

size_t sqz_dgc_scratch(const sqz_core_params_t *p, size_t n)
{
    return p->dgc_momentum > 0 && p->dgc_nesterov ? 2 * n : n;
}

sqz_status_t sqz_dgc_input(const sqz_core_params_t *p, int nranks, sqz_state_store_t *s,
                           sqz_buf_state_t *b, const float *x, float *scratch, const float **unew,
                           size_t n)
{
    float *restrict msg   = scratch;
    float           scale = 1.0f;
    *unew                 = NULL;
    if (p->dgc_clip > 0) {
        double sq = 0;
        for (size_t i = 0; i < n; i++) {
            sq += (double)x[i] * x[i];
        }
        const double limit = p->dgc_clip / sqrt((double)nranks), norm = sqrt(sq);
        if (norm > limit) { /* NaN norms are left to the compressor's finiteness check */
            scale = (float)(limit / norm);
        }
    }
    if (p->dgc_momentum <= 0) {
        for (size_t i = 0; i < n; i++) {
            msg[i] = x[i] * scale;
        }
        return SQZ_OK;
    }
    SQZ_CHECK(sqz_state_alloc(s, b, &b->dgc_momentum, n));
    const float *restrict u = b->dgc_momentum;
    const float           m = (float)p->dgc_momentum;
    if (p->dgc_nesterov) {
        float *restrict un = scratch + n;
        for (size_t i = 0; i < n; i++) {
            const float g = x[i] * scale;
            un[i]         = m * (u[i] + g);
            msg[i]        = un[i] + g;
        }
        *unew = un;
    } else {
        for (size_t i = 0; i < n; i++) {
            msg[i] = m * u[i] + x[i] * scale;
        }
        *unew = msg;
    }
    return SQZ_OK;
}

void sqz_dgc_commit(const sqz_core_params_t *p, sqz_buf_state_t *b, const float *unew,
                    const float *v, size_t n)
{
    if (p->dgc_momentum <= 0 || NULL == unew || NULL == b->dgc_momentum) {
        return;
    }
    float *restrict u = b->dgc_momentum;
    if (!p->dgc_masking || NULL == v) {
        memcpy(u, unew, n * sizeof(*u));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        u[i] = (0.0f == v[i]) ? 0.0f : unew[i];
    }
}
