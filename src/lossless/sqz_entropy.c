#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "sqz_ctx.h"
#include "sqz_entropy.h"

struct sqz_entropy {
    ZSTD_CCtx     *cc;
    ZSTD_DCtx     *dc;
    unsigned char *buf;
    size_t         cap;
};

sqz_entropy_t *sqz_entropy_create(void) { return calloc(1, sizeof(sqz_entropy_t)); }

void sqz_entropy_destroy(sqz_entropy_t *e)
{
    if (e) {
        ZSTD_freeCCtx(e->cc);
        ZSTD_freeDCtx(e->dc);
        free(e->buf);
        free(e);
    }
}

/* Payloads smaller than this are not worth a zstd call. */
#define SQZ_ENTROPY_MIN_BYTES 1024

int sqz_entropy_wrap(sqz_entropy_t *e, int mode, double link_gbps, int nranks, unsigned char *payload,
                     size_t *bytes)
{
    if (SQZ_ENTROPY_NONE == mode || NULL == e || *bytes < SQZ_ENTROPY_MIN_BYTES) {
        return 0;
    }
    if (NULL == e->cc && NULL == (e->cc = ZSTD_createCCtx())) {
        return 0;
    }
    const size_t bound = ZSTD_compressBound(*bytes);
    if (SQZ_OK != sqz_scratch_reserve((void **)&e->buf, &e->cap, bound)) {
        return 0;
    }
    const double t0 = sqz_time_now();
    const size_t z  = ZSTD_compressCCtx(e->cc, e->buf, bound, payload, *bytes, 1);
    const double t  = sqz_time_now() - t0;
    if (ZSTD_isError(z) || z >= *bytes) {
        return 0;
    }
    if (SQZ_ENTROPY_AUTO == mode) {
        const double saved = (double)(*bytes - z) * 8.0 * (double)(nranks > 1 ? nranks - 1 : 1) /
                             (link_gbps * 1e9);
        if (saved <= 2.0 * t) {
            return 0;
        }
    }
    memcpy(payload, e->buf, z);
    *bytes = z;
    return 1;
}

sqz_status_t sqz_entropy_unwrap(sqz_entropy_t *e, const unsigned char *payload, size_t bytes,
                                size_t max_raw, const unsigned char **raw, size_t *raw_bytes)
{
    if (NULL == e) {
        return SQZ_ERR_CORRUPT;
    }
    const unsigned long long size = ZSTD_getFrameContentSize(payload, bytes);
    if (ZSTD_CONTENTSIZE_UNKNOWN == size || ZSTD_CONTENTSIZE_ERROR == size || size > max_raw) {
        return SQZ_ERR_CORRUPT;
    }
    if (NULL == e->dc && NULL == (e->dc = ZSTD_createDCtx())) {
        return SQZ_ERR_CORRUPT;
    }
    if (SQZ_OK != sqz_scratch_reserve((void **)&e->buf, &e->cap, (size_t)size ? (size_t)size : 1)) {
        return SQZ_ERR_CORRUPT;
    }
    const size_t d = ZSTD_decompressDCtx(e->dc, e->buf, (size_t)size, payload, bytes);
    if (ZSTD_isError(d) || d != (size_t)size) {
        return SQZ_ERR_CORRUPT;
    }
    *raw       = e->buf;
    *raw_bytes = d;
    return SQZ_OK;
}
