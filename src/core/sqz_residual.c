#include "config.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_log.h"
#include "sqz_residual.h"

#define SQZ_INT8_BLOCK 256

static uint16_t sqz_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    /* Round to nearest even; the residual is finite, and a value that would round up to Inf is
     * truncated instead. */
    const uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    if (((r >> 23) & 0xffu) == 0xffu) {
        return (uint16_t)(u >> 16);
    }
    return (uint16_t)(r >> 16);
}

static float sqz_bf16_to_f32(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float          f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

sqz_status_t sqz_residual_open(sqz_comm_t *comm, sqz_buf_state_t *b, int storage, float **res)
{
    const size_t n = b->count;
    if (SQZ_EF_STORAGE_FP32 == storage) {
        SQZ_CHECK(sqz_state_reserve(&comm->store, b, 1, 0));
        *res = b->residual;
        return SQZ_OK;
    }
    const size_t nb = (n + SQZ_INT8_BLOCK - 1) / SQZ_INT8_BLOCK;
    if (NULL == b->res_compact) {
        const size_t bytes = SQZ_EF_STORAGE_BF16 == storage ? n * 2 : n;
        b->res_compact     = calloc(bytes ? bytes : 1, 1);
        if (SQZ_EF_STORAGE_INT8 == storage) {
            b->res_scale = calloc(nb ? nb : 1, sizeof(float));
        }
        if (NULL == b->res_compact || (SQZ_EF_STORAGE_INT8 == storage && NULL == b->res_scale)) {
            return SQZ_ERR_NO_MEMORY;
        }
        b->res_bytes = bytes + (SQZ_EF_STORAGE_INT8 == storage ? nb * sizeof(float) : 0);
        sqz_state_account(&comm->store, b);
    }
    if (SQZ_OK != sqz_scratch_reserve((void **)&comm->scratch.resbuf, &comm->scratch.rescap,
                                      (n ? n : 1) * sizeof(float))) {
        return SQZ_ERR_NO_MEMORY;
    }
    float *const r = comm->scratch.resbuf;
    if (SQZ_EF_STORAGE_BF16 == storage) {
        const uint16_t *h = b->res_compact;
        for (size_t i = 0; i < n; i++) {
            r[i] = sqz_bf16_to_f32(h[i]);
        }
    } else {
        const int8_t *q = b->res_compact;
        for (size_t blk = 0; blk < nb; blk++) {
            const float  s   = b->res_scale[blk];
            const size_t end = (blk + 1) * SQZ_INT8_BLOCK < n ? (blk + 1) * SQZ_INT8_BLOCK : n;
            for (size_t i = blk * SQZ_INT8_BLOCK; i < end; i++) {
                r[i] = s * (float)q[i];
            }
        }
    }
    *res = r;
    return SQZ_OK;
}

void sqz_residual_close(sqz_buf_state_t *b, int storage, const float *r)
{
    const size_t n = b->count;
    if (SQZ_EF_STORAGE_BF16 == storage) {
        uint16_t *h = b->res_compact;
        for (size_t i = 0; i < n; i++) {
            h[i] = sqz_f32_to_bf16(r[i]);
        }
    } else if (SQZ_EF_STORAGE_INT8 == storage) {
        int8_t      *q  = b->res_compact;
        const size_t nb = (n + SQZ_INT8_BLOCK - 1) / SQZ_INT8_BLOCK;
        for (size_t blk = 0; blk < nb; blk++) {
            const size_t beg = blk * SQZ_INT8_BLOCK;
            const size_t end = beg + SQZ_INT8_BLOCK < n ? beg + SQZ_INT8_BLOCK : n;
            float        mx  = 0;
            for (size_t i = beg; i < end; i++) {
                mx = fabsf(r[i]) > mx ? fabsf(r[i]) : mx;
            }
            const float s   = mx / 127.0f;
            const float inv = s > 0 ? 1.0f / s : 0.0f;
            for (size_t i = beg; i < end; i++) {
                q[i] = (int8_t)lrintf(r[i] * inv);
            }
            b->res_scale[blk] = s;
        }
    }
}
