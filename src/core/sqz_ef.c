#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_ef.h"
#include "sqz_log.h"

int sqz_ef_transforms(int mode) { return SQZ_EF_EF21 == mode || SQZ_EF_ECONTROL == mode; }

sqz_status_t sqz_ef_reserve(sqz_state_store_t *s, sqz_buf_state_t *b, int mode)
{
    /* ef21: est = g_i, shared = G.  econtrol: est = h_i, err = e_i, shared = H. */
    SQZ_CHECK(sqz_state_alloc(s, b, &b->ef_est, b->count));
    SQZ_CHECK(sqz_state_alloc(s, b, &b->ef_shared, b->count));
    if (SQZ_EF_ECONTROL == mode) {
        SQZ_CHECK(sqz_state_alloc(s, b, &b->ef_err, b->count));
    }
    return SQZ_OK;
}

void sqz_ef_message(int mode, double eta, const sqz_buf_state_t *b, const float *x, float *m,
                    float *r, size_t n)
{
    const float *restrict est = b->ef_est;
    if (SQZ_EF_ECONTROL == mode) {
        const float *restrict e  = b->ef_err;
        const float           fe = (float)eta;
        for (size_t i = 0; i < n; i++) {
            m[i] = fe * e[i] + (x[i] - est[i]);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            m[i] = x[i] - est[i];
        }
    }
    memset(r, 0, n * sizeof(float));
}

void sqz_ef_commit(int mode, double eta, sqz_buf_state_t *b, const float *m, const float *r,
                   const float *sum, float *out, size_t n)
{
    float *restrict est    = b->ef_est;
    float *restrict shared = b->ef_shared;
    if (SQZ_EF_ECONTROL == mode) {
        float *restrict e  = b->ef_err;
        const float     fe = (float)eta;
        for (size_t i = 0; i < n; i++) {
            const float d = m[i] - r[i]; /* D(C(m_i)) */
            e[i] += (m[i] - fe * e[i]) - d; /* x_i - h_i = m_i - eta e_i */
            est[i] += d;
            const float s = sum[i];
            out[i]        = shared[i] + s;
            shared[i]     = out[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            est[i] += m[i] - r[i];
            shared[i] += sum[i];
            out[i] = shared[i];
        }
    }
}

void sqz_ef_dense(int mode, sqz_buf_state_t *b, const float *x, const float *sum, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(sum[i])) {
            return;
        }
    }
    memcpy(b->ef_est, x, n * sizeof(float));
    memcpy(b->ef_shared, sum, n * sizeof(float));
    if (SQZ_EF_ECONTROL == mode) {
        memset(b->ef_err, 0, n * sizeof(float));
    }
}

void sqz_ef_clear(sqz_buf_state_t *b, size_t n)
{
    float *const arrays[] = {b->ef_est, b->ef_shared, b->ef_err};
    for (size_t k = 0; k < sizeof(arrays) / sizeof(arrays[0]); k++) {
        if (arrays[k]) {
            memset(arrays[k], 0, n * sizeof(float));
        }
    }
}
