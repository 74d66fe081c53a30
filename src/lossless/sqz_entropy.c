#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "sqz_ctx.h"
#include "sqz_entropy.h"
#include "sqz_log.h"

struct sqz_entropy {
    ZSTD_CCtx     *cc;
    ZSTD_DCtx     *dc;
    unsigned char *buf;  /* zstd output / input */
    size_t         cap;
    unsigned char *pbuf; /* position coding output / input */
    size_t         pcap;
};

static uint32_t sqz_ld32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

size_t sqz_positions_encode(const unsigned char *in, size_t bytes, unsigned char *out)
{
    if (bytes < 4) {
        return 0;
    }
    const uint32_t m = sqz_ld32(in);
    if ((bytes - 4) % 8 != 0 || (bytes - 4) / 8 != m || m == 0) {
        return 0;
    }
    const unsigned char *idx = in + 4, *val = in + 4 + 4 * (size_t)m;
    size_t               o   = 4;
    const size_t         lim = bytes - 4 * (size_t)m; /* the coded indices must end before this */
    memcpy(out, in, 4);
    uint64_t prev = 0;
    for (size_t i = 0; i < m; i++) {
        const uint32_t cur = sqz_ld32(idx + 4 * i);
        if (i > 0 && (uint64_t)cur <= prev) {
            return 0; /* not strictly increasing: not a sparse layout */
        }
        uint32_t gap = i == 0 ? cur : (uint32_t)(cur - prev - 1);
        prev         = cur;
        do {
            if (o >= lim) {
                return 0; /* no gain */
            }
            out[o++] = (unsigned char)((gap & 0x7fu) | (gap >= 0x80u ? 0x80u : 0u));
            gap >>= 7;
        } while (gap != 0);
    }
    if (o + 4 * (size_t)m >= bytes) {
        return 0;
    }
    memcpy(out + o, val, 4 * (size_t)m);
    return o + 4 * (size_t)m;
}

sqz_status_t sqz_positions_decode(const unsigned char *in, size_t bytes, unsigned char *out,
                                  size_t max_raw, size_t *raw_bytes)
{
    if (bytes < 4) {
        return SQZ_ERR_CORRUPT;
    }
    const uint32_t m = sqz_ld32(in);
    /* each entry takes at least 1 + 4 coded bytes and exactly 8 raw bytes */
    if (m == 0 || (bytes - 4) / 5 < m || max_raw < 4 || (max_raw - 4) / 8 < m) {
        return SQZ_ERR_CORRUPT;
    }
    const size_t         vbytes = 4 * (size_t)m;
    const size_t         end    = bytes - vbytes; /* the varints occupy [4, end) */
    const unsigned char *p      = in + 4;
    const unsigned char *stop   = in + end;
    uint64_t             prev   = 0;
    memcpy(out, in, 4);
    for (size_t i = 0; i < m; i++) {
        uint64_t gap = 0;
        for (int shift = 0;; shift += 7) {
            if (p >= stop || shift > 28) {
                return SQZ_ERR_CORRUPT;
            }
            const unsigned char b = *p++;
            gap |= (uint64_t)(b & 0x7fu) << shift;
            if (!(b & 0x80u)) {
                break;
            }
        }
        const uint64_t cur = i == 0 ? gap : prev + 1 + gap;
        if (cur > UINT32_MAX) {
            return SQZ_ERR_CORRUPT;
        }
        const uint32_t c32 = (uint32_t)cur;
        memcpy(out + 4 + 4 * i, &c32, 4);
        prev = cur;
    }
    if (p != stop) {
        return SQZ_ERR_CORRUPT; /* the varints must fill their region exactly */
    }
    memcpy(out + 4 + vbytes, in + end, vbytes);
    *raw_bytes = 4 + 2 * vbytes;
    return SQZ_OK;
}

sqz_entropy_t *sqz_entropy_create(void) { return calloc(1, sizeof(sqz_entropy_t)); }

void sqz_entropy_destroy(sqz_entropy_t *e)
{
    if (e) {
        ZSTD_freeCCtx(e->cc);
        ZSTD_freeDCtx(e->dc);
        free(e->buf);
        free(e->pbuf);
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
    int                  bits = 0;
    const unsigned char *cur  = payload;
    size_t               curn = *bytes;
    if (SQZ_OK == sqz_scratch_reserve((void **)&e->pbuf, &e->pcap, *bytes)) {
        const size_t pz = sqz_positions_encode(payload, *bytes, e->pbuf);
        if (pz > 0) {
            bits = SQZ_ENTROPY_POSITIONS_BIT;
            cur  = e->pbuf;
            curn = pz;
        }
    }
    const size_t bound = ZSTD_compressBound(curn);
    if ((NULL != e->cc || NULL != (e->cc = ZSTD_createCCtx())) &&
        SQZ_OK == sqz_scratch_reserve((void **)&e->buf, &e->cap, bound)) {
        const double t0   = sqz_time_now();
        const size_t z    = ZSTD_compressCCtx(e->cc, e->buf, bound, cur, curn, 1);
        const double t    = sqz_time_now() - t0;
        int          keep = !ZSTD_isError(z) && z < curn;
        if (keep && SQZ_ENTROPY_AUTO == mode) {
            const double saved = (double)(curn - z) * 8.0 *
                                 (double)(nranks > 1 ? nranks - 1 : 1) / (link_gbps * 1e9);
            keep = saved > 2.0 * t;
        }
        if (keep) {
            bits |= SQZ_ENTROPY_ZSTD_BIT;
            cur  = e->buf;
            curn = z;
        }
    }
    if (bits) {
        memcpy(payload, cur, curn);
        *bytes = curn;
    }
    return bits;
}

static sqz_status_t sqz_zstd_unwrap(sqz_entropy_t *e, const unsigned char *payload, size_t bytes,
                                    size_t max_raw, const unsigned char **raw, size_t *raw_bytes)
{
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

sqz_status_t sqz_entropy_unwrap(sqz_entropy_t *e, int bits, const unsigned char *payload,
                                size_t bytes, size_t max_raw, const unsigned char **raw,
                                size_t *raw_bytes)
{
    if (NULL == e || 0 == (bits & (SQZ_ENTROPY_ZSTD_BIT | SQZ_ENTROPY_POSITIONS_BIT))) {
        return SQZ_ERR_CORRUPT;
    }
    if (bits & SQZ_ENTROPY_ZSTD_BIT) {
        SQZ_CHECK(sqz_zstd_unwrap(e, payload, bytes, max_raw, &payload, &bytes));
    }
    if (bits & SQZ_ENTROPY_POSITIONS_BIT) {
        if (SQZ_OK != sqz_scratch_reserve((void **)&e->pbuf, &e->pcap, max_raw ? max_raw : 1)) {
            return SQZ_ERR_CORRUPT;
        }
        SQZ_CHECK(sqz_positions_decode(payload, bytes, e->pbuf, max_raw, &bytes));
        payload = e->pbuf;
    }
    *raw       = payload;
    *raw_bytes = bytes;
    return SQZ_OK;
}
