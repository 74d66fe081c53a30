/*
 * "lossless": exact compression of the all-reduce payload, byte-plane shuffle + zstd.  The lossless
 * stage of FedZip (Malekijoo et al., arXiv 2102.01593; ALGORITHMS.md section 8.2) applied on its
 * own, without sparsification or clustering: it pays off when the floats themselves are redundant,
 * e.g. gradients with long zero runs or fp16/bf16 gradients promoted to float32.  The shuffle is
 * blosc's (Alted, "Blosc", byte shuffle filter): the 4 bytes of every float go to 4 planes, so that
 * sign/exponent bytes and the zero low mantissa bytes of promoted fp16 values form long runs.
 *
 * Parameters:
 *   LOSSLESS_SHUFFLE (bool, 1): byte-plane shuffle before zstd.
 *   LOSSLESS_LEVEL   (int, 1, [-7, 19]): zstd level (ZSTD_c_compressionLevel); negative values are
 *                    zstd's fast levels, 0 is zstd's default level (3).
 *
 * Wire format (little-endian): u8 mode, 3 zero bytes, u32 raw = 4n (so n < 2^30), then
 *   mode 0: the n floats a[i] as 4n raw bytes (when zstd does not make the payload smaller);
 *   mode 1: one zstd frame (content size 4n) of the shuffled bytes: plane k holds byte k of every
 *           a[i] (bits 8k..8k+7 of its IEEE-754 encoding), planes in order 0..3;
 *   mode 2: one zstd frame (content size 4n) of the n floats unshuffled.
 * A valid payload is exactly one such frame, decodes to exactly 4n bytes and holds no NaN/Inf.
 * The payload is 8 + min(zstd frame, 4n) bytes; max_payload(n) = 8 + ZSTD_compressBound(4n).
 *
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER.  Every chunk is sent exactly; its owner sums the decoded
 * chunks in rank order (an ordinary float sum) and sends the sum exactly, so every rank ends with
 * bit-identical floats equal to the rank-order sum of the inputs (a = in + residual).  Error
 * feedback: the compression error is zero, so the residual is zeroed (its old value was sent).
 *
 * What a shim cannot know: whether the float32 buffer came from fp16/bf16 values (which is what
 * makes the shuffle pay) or how sparse it is, so the ratio is data-dependent and only the bound
 * max_payload(n) > 4n is known in advance; an exchange that sizes its transfers by that bound
 * gains nothing from this method.  Decode adds into out, so a decoded -0.0 added into +0.0 is
 * +0.0 (IEEE addition): exact up to the sign of zero sums, like any all-reduce.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

/** Config struct filled by the core from lossless_params. */
typedef struct lossless_config {
    int     shuffle; /* LOSSLESS_SHUFFLE */
    int64_t level;   /* LOSSLESS_LEVEL */
} lossless_config_t;

static const sqz_param_def_v1_t lossless_params[] = {
    {
        .name = "LOSSLESS_SHUFFLE",
        .type = SQZ_PARAM_BOOL,
        .default_value = "1",
        .offset = offsetof(lossless_config_t, shuffle),
        .help = "split the 4 bytes of every float into 4 byte planes before zstd (blosc shuffle)",
    },
    {
        .name = "LOSSLESS_LEVEL",
        .type = SQZ_PARAM_INT,
        .default_value = "1",
        .min = -7,
        .max = 19,
        .offset = offsetof(lossless_config_t, level),
        .help = "zstd compression level: negative values are faster fast levels, 0 is zstd's 3",
    },
};

enum { LOSSLESS_MODE_RAW = 0, LOSSLESS_MODE_SHUFFLE_ZSTD = 1, LOSSLESS_MODE_ZSTD = 2 };

/* Header bytes: u8 mode, 3 zero bytes, u32 raw byte count. */
#define LOSSLESS_HEADER 8
/* The raw byte count 4n is a u32. */
#define LOSSLESS_MAX_N ((size_t)UINT32_MAX / 4)
/* Chunk boundaries of the reduce-scatter exchange are rounded up to this many elements
 * (src/coll/sqz_coll_reduce_scatter.c): query() bounds a chunk with it. */
#define LOSSLESS_CHUNK_QUANTUM 512

typedef struct lossless_state {
    int        shuffle;
    int        level;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    void      *scratch; /* 4n bytes: the shuffled/plain a[] before zstd, or a decoded frame */
    size_t     scratch_cap;
} lossless_state_t;

static void lossless_destroy(void *state)
{
    lossless_state_t *s = (lossless_state_t *)state;
    if (s == NULL) {
        return;
    }
    ZSTD_freeCCtx(s->cctx);
    ZSTD_freeDCtx(s->dctx);
    free(s->scratch);
    free(s);
}

static sqz_status_t lossless_create(const void *config, const sqz_compressor_env_v1_t *env,
                                    void **state)
{
    const lossless_config_t *cfg = (const lossless_config_t *)config;
    if (cfg == NULL || state == NULL || (cfg->shuffle != 0 && cfg->shuffle != 1) ||
        cfg->level < -7 || cfg->level > 19 || cfg->level < ZSTD_minCLevel() ||
        cfg->level > ZSTD_maxCLevel()) {
        return SQZ_ERR_INVALID_PARAM;
    }
    lossless_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    s->shuffle = cfg->shuffle;
    s->level = (int)cfg->level;
    s->cctx = ZSTD_createCCtx();
    s->dctx = ZSTD_createDCtx();
    if (s->cctx == NULL || s->dctx == NULL) {
        lossless_destroy(s);
        return SQZ_ERR_NO_MEMORY;
    }
    /* Parameters are sticky across ZSTD_compress2 calls: set once.  The frame records its content
     * size (the decoder checks it against 4n); no checksum: the transport is reliable and the
     * decoder checks sizes and finiteness. */
    if (ZSTD_isError(ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_compressionLevel, s->level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_contentSizeFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_checksumFlag, 0))) {
        lossless_destroy(s);
        return SQZ_ERR_INVALID_PARAM;
    }
    *state = s;
    return SQZ_OK;
}

static sqz_status_t lossless_query(void *state, const sqz_query_v1_t *q)
{
    if (state == NULL || q == NULL || q->nranks < 1) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    /* The largest chunk the exchange can cut must fit the u32 raw byte count. */
    const size_t p = (size_t)q->nranks;
    size_t per = q->count / p + (q->count % p != 0);
    per = (per + LOSSLESS_CHUNK_QUANTUM - 1) / LOSSLESS_CHUNK_QUANTUM * LOSSLESS_CHUNK_QUANTUM;
    return per <= LOSSLESS_MAX_N ? SQZ_OK : SQZ_ERR_NOT_SUPPORTED;
}

static size_t lossless_max_payload(void *state, size_t n)
{
    if (n > LOSSLESS_MAX_N) {
        return SIZE_MAX;
    }
    const size_t bound = ZSTD_compressBound(4 * n);
    if (ZSTD_isError(bound)) {
        return SIZE_MAX;
    }
    return LOSSLESS_HEADER + (bound > 4 * n ? bound : 4 * n);
}

/* ---------------------------------------------------------------------------------------------
 * Kernels on fixed blocks of SQZ_PU_BLOCK elements (vectorizable at -O2), scalar tails.
 * ------------------------------------------------------------------------------------------- */

/* Per-lane accumulators of the compress pass. */
typedef struct lossless_lanes {
    double   sq[8];
    uint32_t bad[8];
} lossless_lanes_t;

static inline void lossless_sum_block(const float *restrict in, const float *restrict res,
                                      float *restrict a)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        a[j] = in[j] + res[j];
    }
}

static inline void lossless_stats_block(const float *restrict a, lossless_lanes_t *restrict l)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int k = 0; k < 8; k++) {
            const float x = a[j + k];
            l->bad[k] |= (uint32_t)(sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS);
            l->sq[k] += (double)x * x;
        }
    }
}

/* Byte k of a[j]'s encoding goes to plane k at j. */
static inline void lossless_split_block(const float *restrict a, uint8_t *restrict p0,
                                        uint8_t *restrict p1, uint8_t *restrict p2,
                                        uint8_t *restrict p3)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        const uint32_t u = sqz_pu_f32_bits(a[j]);
        p0[j] = (uint8_t)u;
        p1[j] = (uint8_t)(u >> 8);
        p2[j] = (uint8_t)(u >> 16);
        p3[j] = (uint8_t)(u >> 24);
    }
}

static inline void lossless_store_block(const float *restrict a, uint8_t *restrict dst)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        sqz_pu_store_u32(dst + 4 * j, sqz_pu_f32_bits(a[j]));
    }
}

/* The one pass of compress: a = in + res (res may be NULL), finiteness, sum of squares, and the
 * bytes zstd compresses written to dst (planes when shuffle, else plain little-endian floats;
 * dst NULL: nothing written).  \return 1 when every a[i] is finite. */
static int lossless_prepare(const float *in, const float *res, size_t n, int shuffle,
                            uint8_t *dst, double *norm2)
{
    lossless_lanes_t l;
    memset(&l, 0, sizeof l);
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        float a[SQZ_PU_BLOCK];
        if (res != NULL) {
            lossless_sum_block(in + i, res + i, a);
        } else {
            memcpy(a, in + i, sizeof a);
        }
        lossless_stats_block(a, &l);
        if (dst == NULL) {
            continue;
        }
        if (shuffle) {
            lossless_split_block(a, dst + i, dst + n + i, dst + 2 * n + i, dst + 3 * n + i);
        } else {
            lossless_store_block(a, dst + 4 * i);
        }
    }
    for (; i < n; i++) {
        /* Not in[i] + 0.0f: that would turn -0.0 into +0.0. */
        const float x = res != NULL ? in[i] + res[i] : in[i];
        l.bad[0] |= (uint32_t)(sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS);
        l.sq[0] += (double)x * x;
        if (dst == NULL) {
            continue;
        }
        const uint32_t u = sqz_pu_f32_bits(x);
        if (shuffle) {
            dst[i] = (uint8_t)u;
            dst[n + i] = (uint8_t)(u >> 8);
            dst[2 * n + i] = (uint8_t)(u >> 16);
            dst[3 * n + i] = (uint8_t)(u >> 24);
        } else {
            sqz_pu_store_u32(dst + 4 * i, u);
        }
    }
    uint32_t bad = 0;
    double sq = 0.0;
    for (int k = 0; k < 8; k++) {
        bad |= l.bad[k];
        sq += l.sq[k];
    }
    *norm2 = sq;
    return bad == 0;
}

/* Raw mode body: a as little-endian floats. */
static void lossless_write_raw(const float *in, const float *res, size_t n, uint8_t *dst)
{
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        float a[SQZ_PU_BLOCK];
        if (res != NULL) {
            lossless_sum_block(in + i, res + i, a);
        } else {
            memcpy(a, in + i, sizeof a);
        }
        lossless_store_block(a, dst + 4 * i);
    }
    for (; i < n; i++) {
        sqz_pu_store_u32(dst + 4 * i, sqz_pu_f32_bits(res != NULL ? in[i] + res[i] : in[i]));
    }
}

static sqz_status_t lossless_compress(void *state, sqz_compress_args_v1_t *args)
{
    lossless_state_t *st = (lossless_state_t *)state;
    if (st == NULL || args == NULL || args->size < sizeof(sqz_compress_args_v1_t) ||
        (args->n > 0 && args->in == NULL) || args->payload == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const size_t n = args->n;
    if (n > LOSSLESS_MAX_N) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    if (args->capacity < lossless_max_payload(state, n)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *payload = (uint8_t *)args->payload;
    const size_t raw = 4 * n;

    /* zstd reads the planes, or the plain floats; those are `in` itself when there is nothing to
     * add and no shuffle (on a little-endian host), so no copy then. */
    const int direct = !st->shuffle && res == NULL && SQZ_PU_LITTLE_ENDIAN;
    uint8_t *src = NULL;
    if (n > 0 && !direct) {
        src = sqz_pu_grow(&st->scratch, &st->scratch_cap, raw);
        if (src == NULL) {
            return SQZ_ERR_NO_MEMORY;
        }
    }
    double norm2 = 0.0;
    if (!lossless_prepare(in, res, n, st->shuffle, src, &norm2)) {
        return SQZ_ERR_NONFINITE; /* nothing written to the residual */
    }

    int mode = LOSSLESS_MODE_RAW;
    size_t body = raw;
    if (n > 0) {
        /* A frame of 4n bytes or more loses to raw mode: give zstd one byte less than that, so it
         * stops as soon as it cannot win. */
        const size_t room = args->capacity - LOSSLESS_HEADER;
        const size_t cap = room < raw - 1 ? room : raw - 1;
        const void *zsrc = direct ? (const void *)in : (const void *)src;
        const size_t z = ZSTD_compress2(st->cctx, payload + LOSSLESS_HEADER, cap, zsrc, raw);
        if (!ZSTD_isError(z) && z < raw) {
            mode = st->shuffle ? LOSSLESS_MODE_SHUFFLE_ZSTD : LOSSLESS_MODE_ZSTD;
            body = z;
        } else {
            /* A failed compress2 leaves the context mid-frame: the next call starts a new one. */
            (void)ZSTD_CCtx_reset(st->cctx, ZSTD_reset_session_only);
        }
    }
    if (mode == LOSSLESS_MODE_RAW) {
        lossless_write_raw(in, res, n, payload + LOSSLESS_HEADER);
    }
    payload[0] = (uint8_t)mode;
    payload[1] = 0;
    payload[2] = 0;
    payload[3] = 0;
    sqz_pu_store_u32(payload + 4, (uint32_t)raw);
    if (res != NULL) {
        memset(res, 0, n * sizeof *res);
    }
    args->payload_bytes = LOSSLESS_HEADER + body;
    args->norm2_in = norm2;
    args->norm2_err = 0.0;
    return SQZ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding: the whole frame is decoded into scratch and checked (size, finiteness) before out is
 * touched.
 * ------------------------------------------------------------------------------------------- */

/* \return nonzero when some element of the plain little-endian floats at p is NaN/Inf. */
static uint32_t lossless_bad_plain(const uint8_t *p, size_t n)
{
    uint32_t bad = 0;
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        const uint8_t *restrict b = p + 4 * i;
        for (int j = 0; j < SQZ_PU_BLOCK; j++) {
            bad |= (uint32_t)((sqz_pu_load_u32(b + 4 * j) & 0x7fffffffu) >= SQZ_PU_F32_INF_BITS);
        }
        if (bad) {
            return bad;
        }
    }
    for (; i < n; i++) {
        bad |= (uint32_t)((sqz_pu_load_u32(p + 4 * i) & 0x7fffffffu) >= SQZ_PU_F32_INF_BITS);
    }
    return bad;
}

/* \return nonzero when some element of the planes is NaN/Inf: exponent all ones, i.e. the low 7
 * bits of plane 3 and the top bit of plane 2 all set. */
static uint32_t lossless_bad_planes(const uint8_t *p2, const uint8_t *p3, size_t n)
{
    uint32_t bad = 0;
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        const uint8_t *restrict b2 = p2 + i;
        const uint8_t *restrict b3 = p3 + i;
        uint8_t acc = 0;
        for (int j = 0; j < SQZ_PU_BLOCK; j++) {
            acc |= (uint8_t)((b3[j] | 0x80) & (b2[j] | 0x7f)) == 0xff;
        }
        bad |= acc;
        if (bad) {
            return bad;
        }
    }
    for (; i < n; i++) {
        bad |= (uint32_t)(((p3[i] | 0x80) & (p2[i] | 0x7f)) == 0xff);
    }
    return bad;
}

static inline void lossless_add_plain_block(float *restrict out, const uint8_t *restrict p)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        out[j] += sqz_pu_load_f32(p + 4 * j);
    }
}

static void lossless_add_plain(float *out, const uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        lossless_add_plain_block(out + i, p + 4 * i);
    }
    for (; i < n; i++) {
        out[i] += sqz_pu_load_f32(p + 4 * i);
    }
}

static inline uint32_t lossless_join(uint8_t b0, uint8_t b1, uint8_t b2, uint8_t b3)
{
    return (uint32_t)b0 | ((uint32_t)b1 << 8) | ((uint32_t)b2 << 16) | ((uint32_t)b3 << 24);
}

static inline void lossless_add_planes_block(float *restrict out, const uint8_t *restrict p0,
                                             const uint8_t *restrict p1,
                                             const uint8_t *restrict p2,
                                             const uint8_t *restrict p3)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        out[j] += sqz_pu_bits_f32(lossless_join(p0[j], p1[j], p2[j], p3[j]));
    }
}

static void lossless_add_planes(float *out, const uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        lossless_add_planes_block(out + i, p + i, p + n + i, p + 2 * n + i, p + 3 * n + i);
    }
    for (; i < n; i++) {
        out[i] += sqz_pu_bits_f32(lossless_join(p[i], p[n + i], p[2 * n + i], p[3 * n + i]));
    }
}

static sqz_status_t lossless_decompress(void *state, const void *payload, size_t bytes,
                                        float *out, size_t n)
{
    lossless_state_t *st = (lossless_state_t *)state;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n > LOSSLESS_MAX_N || bytes < LOSSLESS_HEADER || payload == NULL) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *p = (const uint8_t *)payload;
    const unsigned mode = p[0];
    const size_t raw = 4 * n;
    if ((p[1] | p[2] | p[3]) != 0 || sqz_pu_load_u32(p + 4) != raw) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *body = p + LOSSLESS_HEADER;
    const size_t body_bytes = bytes - LOSSLESS_HEADER;

    if (mode == LOSSLESS_MODE_RAW) {
        if (body_bytes != raw || lossless_bad_plain(body, n)) {
            return SQZ_ERR_CORRUPT;
        }
        if (out != NULL) {
            lossless_add_plain(out, body, n);
        }
        return SQZ_OK;
    }
    if (mode != LOSSLESS_MODE_SHUFFLE_ZSTD && mode != LOSSLESS_MODE_ZSTD) {
        return SQZ_ERR_CORRUPT;
    }
    /* The compressor sends a frame only when it is smaller than the raw bytes (so never for
     * n == 0), and exactly one frame. */
    if (n == 0 || body_bytes >= raw ||
        ZSTD_getFrameContentSize(body, body_bytes) != (unsigned long long)raw ||
        ZSTD_findFrameCompressedSize(body, body_bytes) != body_bytes) {
        return SQZ_ERR_CORRUPT;
    }
    uint8_t *dec = sqz_pu_grow(&st->scratch, &st->scratch_cap, raw);
    if (dec == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    const size_t got = ZSTD_decompressDCtx(st->dctx, dec, raw, body, body_bytes);
    if (ZSTD_isError(got) || got != raw) {
        return SQZ_ERR_CORRUPT;
    }
    if (mode == LOSSLESS_MODE_SHUFFLE_ZSTD) {
        if (lossless_bad_planes(dec + 2 * n, dec + 3 * n, n)) {
            return SQZ_ERR_CORRUPT;
        }
        if (out != NULL) {
            lossless_add_planes(out, dec, n);
        }
    } else {
        if (lossless_bad_plain(dec, n)) {
            return SQZ_ERR_CORRUPT;
        }
        if (out != NULL) {
            lossless_add_plain(out, dec, n);
        }
    }
    return SQZ_OK;
}

const sqz_compressor_v1_t sqz_compressor_lossless = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "lossless",
    .description = "exact compression: byte-plane shuffle + zstd, raw when that does not shrink",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = lossless_params,
    .nparams = sizeof lossless_params / sizeof lossless_params[0],
    .config_size = sizeof(lossless_config_t),
    .create = lossless_create,
    .query = lossless_query,
    .max_payload = lossless_max_payload,
    .compress = lossless_compress,
    .decompress = lossless_decompress,
    .destroy = lossless_destroy,
    .flags = SQZ_COMPRESSOR_EF_NONE,
};
