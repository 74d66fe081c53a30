/* Exact de-duplication of rows: the combine direction of LSH-MoE.  An expert fed the same
 * centroid for every token of a bucket returns identical rows for them, so sending each distinct
 * row once plus a row index per token shrinks the return trip by the dispatch's factor, and is
 * lossless: rows are equal only when their bytes are (-0.0 and 0.0 stay distinct; NaN payloads
 * survive). */
#include "config.h"

#include <string.h>

#include "sqz_lsh.h"
#include "sqz_plugin_util.h"

typedef struct sqz_dedup_rows {
    const unsigned char *x;
    size_t               rowbytes;
} sqz_dedup_rows_t;

static int sqz_dedup_same(const void *arg, size_t a, size_t b)
{
    const sqz_dedup_rows_t *r = arg;
    return 0 == memcmp(r->x + a * r->rowbytes, r->x + b * r->rowbytes, r->rowbytes);
}

/* 64-bit hash of a row: 8 bytes at a time through a multiply-xorshift, then the tail. */
static uint64_t sqz_dedup_hash(const unsigned char *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    size_t   i = 0;
    for (; i + 8 <= n; i += 8) {
        h = (h ^ sqz_pu_load_u64(p + i)) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    for (; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

sqz_status_t sqz_dedup_encode(sqz_lsh_t *scratch, const void *x, size_t tokens, size_t width,
                              int dtype, void *dst, size_t *bytes)
{
    const size_t es = sqz_tok_esize(dtype), rowbytes = width * es;
    uint64_t    *keys = sqz_lsh_keys(scratch, tokens);
    if (NULL == keys || 0 == es) {
        return 0 == es ? SQZ_ERR_INVALID_PARAM : SQZ_ERR_NO_MEMORY;
    }
    const unsigned char *const rows_in = x;
    for (size_t t = 0; t < tokens; t++) {
        keys[t] = sqz_dedup_hash(rows_in + t * rowbytes, rowbytes);
    }
    const sqz_dedup_rows_t arg = {rows_in, rowbytes};
    uint32_t              *group, *first;
    const size_t rows = sqz_lsh_group(scratch, keys, tokens, sqz_dedup_same, &arg, &group, &first);
    if (SIZE_MAX == rows) {
        return SQZ_ERR_NO_MEMORY;
    }
    const unsigned iw  = sqz_tok_index_width(rows);
    const size_t   raw = sqz_tok_raw_bytes(tokens, width, dtype);
    const size_t   enc = SQZ_TOKFRAME_HEADER + rows * rowbytes + tokens * iw;
    if (enc >= raw) {
        sqz_tok_encode_raw(x, tokens, width, dtype, dst);
        *bytes = raw;
        return SQZ_OK;
    }
    unsigned char *const base = (unsigned char *)dst + SQZ_TOKFRAME_HEADER;
    for (size_t g = 0; g < rows; g++) {
        memcpy(base + g * rowbytes, rows_in + (size_t)first[g] * rowbytes, rowbytes);
    }
    unsigned char *const idx = base + rows * rowbytes;
    for (size_t t = 0; t < tokens; t++) {
        sqz_tok_store_index(idx, iw, t, group[t]);
    }
    sqz_tok_header(dst, SQZ_TOKFRAME_ROWS, dtype, iw, 0, width, tokens, rows);
    *bytes = enc;
    return SQZ_OK;
}
