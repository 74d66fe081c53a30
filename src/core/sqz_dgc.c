#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "sqz_dgc.h"
#include "sqz_log.h"

int sqz_dgc_active(const sqz_core_params_t *p) { return p->dgc_momentum > 0 || p->dgc_clip > 0; }

sqz_status_t sqz_dgc_input(const sqz_core_params_t *p, int nranks, sqz_state_store_t *s,
                           sqz_buf_state_t *b, const float *x, float *msg, size_t n)
{
    float scale = 1.0f;
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
    float *restrict u = b->dgc_momentum;
    const float     m = (float)p->dgc_momentum;
    if (p->dgc_nesterov) {
        for (size_t i = 0; i < n; i++) {
            const float g = x[i] * scale;
            u[i]          = m * (u[i] + g);
            msg[i]        = u[i] + g;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            u[i]   = m * u[i] + x[i] * scale;
            msg[i] = u[i];
        }
    }
    return SQZ_OK;
}

void sqz_dgc_commit(const sqz_core_params_t *p, sqz_buf_state_t *b, const float *v, size_t n)
{
    if (p->dgc_momentum <= 0 || !p->dgc_masking || NULL == v || NULL == b->dgc_momentum) {
        return;
    }
    float *restrict u = b->dgc_momentum;
    for (size_t i = 0; i < n; i++) {
        u[i] = (0.0f == v[i]) ? 0.0f : u[i];
    }
}
