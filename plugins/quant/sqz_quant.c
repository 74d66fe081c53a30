/*
 * "quant": bucketed max-min b-bit quantization with error feedback, after CGX / torch_cgx
 * (Markov, Ramezani-Kebrya, Alistarh, Middleware 2022), itself the max-min variant of QSGD
 * (Alistarh et al., NeurIPS 2017).  CGX has no error feedback on its all-reduce path; here the
 * quantization error goes to the residual.
 *
 * a = in + residual is cut into buckets of B elements (the last one may be short).  Per bucket:
 *   mn = min a, unit = (max a - mn) / (2^b - 1)   (unit = 0 for a constant or near-constant bucket)
 *   code = min(floor((a - mn) / unit + r), 2^b - 1), r = 0.5 (nearest) or U[0,1) (stochastic,
 *          unbiased: E[decoded] = a); unit == 0 gives code 0
 *   decoded = mn + unit * code (float; computed the same way on both sides, quant_decode_one)
 *
 * Wire format (little-endian), a deterministic function of (n, b, B):
 *   nb = ceil(n / B) pairs (f32 mn, f32 unit), all bucket metadata first (8 * nb bytes), then
 *   the n codes packed LSB-first, b bits each (ceil(n * b / 8) bytes, padding bits zero).
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER (CGX's scatter-reduce-allgather, with server feedback).
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

enum { QUANT_ROUND_NEAREST = 0, QUANT_ROUND_STOCHASTIC = 1 };

/** Config struct filled by the core from quant_params. */
typedef struct quant_config {
    int64_t bits;     /* QUANT_BITS, 1..8 */
    int64_t bucket;   /* QUANT_BUCKET, elements per bucket */
    int     rounding; /* QUANT_ROUNDING: QUANT_ROUND_NEAREST or QUANT_ROUND_STOCHASTIC */
} quant_config_t;

static const sqz_param_def_v1_t quant_params[] = {
    {
        .name = "QUANT_BITS",
        .type = SQZ_PARAM_INT,
        .default_value = "4",
        .min = 1,
        .max = 8,
        .offset = offsetof(quant_config_t, bits),
        .help = "bits per element of the max-min quantizer",
    },
    {
        .name = "QUANT_BUCKET",
        .type = SQZ_PARAM_INT,
        .default_value = "512",
        .min = 8,
        .max = 1048576,
        .offset = offsetof(quant_config_t, bucket),
        .help = "elements per bucket (each bucket sends its own f32 min and unit)",
    },
    {
        .name = "QUANT_ROUNDING",
        .type = SQZ_PARAM_ENUM,
        .default_value = "nearest",
        .choices = "nearest|stochastic",
        .offset = offsetof(quant_config_t, rounding),
        .help = "rounding of codes: nearest (deterministic) or stochastic (unbiased)",
    },
};

typedef struct quant_state {
    unsigned bits;
    size_t   bucket;
    int      rounding;
    uint64_t seed;
    int      rank;
} quant_state_t;

/* Codes are produced and consumed in tiles of this many elements: a multiple of 8, so every tile
 * starts on a byte boundary of the packed stream, and small enough to live on the stack. */
#define QUANT_TILE 1024

static sqz_status_t quant_create(const void *config, const sqz_compressor_env_v1_t *env,
                                 void **state)
{
    const quant_config_t *cfg = (const quant_config_t *)config;
    if (cfg == NULL || cfg->bits < 1 || cfg->bits > 8 || cfg->bucket < 1 ||
        cfg->bucket > (int64_t)1 << 30 ||
        (cfg->rounding != QUANT_ROUND_NEAREST && cfg->rounding != QUANT_ROUND_STOCHASTIC)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    quant_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    s->bits = (unsigned)cfg->bits;
    s->bucket = (size_t)cfg->bucket;
    s->rounding = cfg->rounding;
    s->seed = env != NULL ? env->seed : 0;
    s->rank = env != NULL ? env->rank : 0;
    *state = s;
    return SQZ_OK;
}

/* Payload layout for n elements.  \return 0 when the size does not fit in size_t. */
static int quant_layout(size_t n, unsigned b, size_t bucket, size_t *nbuckets, size_t *total)
{
    if (n > SIZE_MAX / 16) {
        return 0;
    }
    const size_t nb = n / bucket + (n % bucket != 0);
    *nbuckets = nb;
    *total = 8 * nb + sqz_pu_packed_bytes(n, b);
    return 1;
}

static size_t quant_max_payload(void *state, size_t n)
{
    const quant_state_t *st = (const quant_state_t *)state;
    size_t nb, total;
    if (st == NULL || !quant_layout(n, st->bits, st->bucket, &nb, &total)) {
        return SIZE_MAX;
    }
    return total;
}

/** The decoded value of a code: the single definition used by compress (for the residual) and
 *  decompress, so that decode(payload) + residual == a up to one rounding. */
static inline float quant_decode_one(float mn, float unit, float code)
{
    return mn + unit * code;
}

/* Per-lane accumulators of the min/max pass. */
typedef struct quant_lanes {
    float    mn[8];
    float    mx[8];
    double   sq[8];
    uint32_t bad[8];
} quant_lanes_t;

/* Loads a = in + res for one block (res may not be NULL here). */
static inline void quant_load_block(const float *restrict in, const float *restrict res,
                                    float *restrict a)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        a[j] = in[j] + res[j];
    }
}

static inline void quant_load(const float *in, const float *res, size_t len, float *a)
{
    if (len == SQZ_PU_BLOCK) {
        if (res != NULL) {
            quant_load_block(in, res, a);
        } else {
            memcpy(a, in, SQZ_PU_BLOCK * sizeof *a);
        }
        return;
    }
    for (size_t j = 0; j < len; j++) {
        a[j] = in[j] + (res != NULL ? res[j] : 0.0f);
    }
}

static inline void quant_minmax_block(const float *restrict a, quant_lanes_t *restrict l)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int k = 0; k < 8; k++) {
            const float x = a[j + k];
            l->bad[k] |= (uint32_t)(sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS);
            l->mn[k] = x < l->mn[k] ? x : l->mn[k];
            l->mx[k] = x > l->mx[k] ? x : l->mx[k];
            l->sq[k] += (double)x * x;
        }
    }
}

/* Encodes one block: codes and the per-element error a - decoded.  rnd holds the rounding offset
 * per element (0.5 or uniform [0,1)). */
static inline void quant_encode_block(const float *restrict a, const float *restrict rnd, float mn,
                                      float unit, float inv_unit, float levels,
                                      uint8_t *restrict codes, float *restrict err)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        /* a >= mn, so t >= 0 and the truncating conversion is a floor; an overflowing a - mn
         * gives +Inf, which the clamp turns into the top code. */
        float t = (a[j] - mn) * inv_unit + rnd[j];
        t = t < levels ? t : levels;
        const uint32_t c = (uint32_t)t;
        codes[j] = (uint8_t)c;
        err[j] = a[j] - quant_decode_one(mn, unit, (float)c);
    }
}

static inline void quant_error_lanes(const float *restrict err, double *restrict lanes)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int k = 0; k < 8; k++) {
            lanes[k] += (double)err[j + k] * err[j + k];
        }
    }
}

static inline void quant_hash_block(uint32_t key, uint32_t first, float *restrict rnd)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        rnd[j] = sqz_pu_hash_f32(key, first + (uint32_t)j);
    }
}

static const float quant_half[SQZ_PU_BLOCK] = {
    0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,
    0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,
    0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,
    0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,
};

/* The unit of a bucket with extremes mn <= mx (finite) such that every decoded value
 * mn + unit * code, the float product included, is finite: 0 when the range is too small for
 * 1/unit to be finite. */
static float quant_unit(float mn, float mx, unsigned bits)
{
    const float levels = (float)((1u << bits) - 1u);
    double u = ((double)mx - (double)mn) / (double)levels;
    /* Near the top of the float range, shrink the unit a little (the error goes to the residual,
     * which stays finite): the margins cover the roundings of the product and the sum. */
    const double limit =
        fmin((double)FLT_MAX * (1.0 - 0x1p-20), (double)FLT_MAX - (double)mn - 0x1p106) /
        (double)levels;
    if (u > limit) {
        u = limit;
    }
    float unit = (float)u;
    if (!(unit >= FLT_MIN)) {
        return 0.0f;
    }
    for (int i = 0; i < 64 && !sqz_pu_is_finite_f32(quant_decode_one(mn, unit, levels)); i++) {
        unit = nextafterf(unit, 0.0f);
    }
    return sqz_pu_is_finite_f32(quant_decode_one(mn, unit, levels)) ? unit : 0.0f;
}

static sqz_status_t quant_compress(void *state, sqz_compress_args_v1_t *args)
{
    const quant_state_t *st = (const quant_state_t *)state;
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *out = (uint8_t *)args->payload;
    size_t nb, total;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (!quant_layout(n, st->bits, st->bucket, &nb, &total)) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    if (args->capacity < total || (n > 0 && (in == NULL || out == NULL))) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const size_t B = st->bucket;
    const unsigned bits = st->bits;
    const float levels = (float)((1u << bits) - 1u);
    uint8_t *meta = out;
    uint8_t *packed = out + 8 * nb;

    /* Pass 1 over the whole vector: finiteness, and each bucket's (mn, unit) into the payload's
     * metadata area.  Nothing is written to the residual before it completes. */
    double sq_total = 0.0;
    for (size_t k = 0; k < nb; k++) {
        const size_t s = k * B;
        const size_t e = s + B < n ? s + B : n;
        quant_lanes_t l;
        for (int j = 0; j < 8; j++) {
            l.mn[j] = INFINITY;
            l.mx[j] = -INFINITY;
            l.sq[j] = 0.0;
            l.bad[j] = 0;
        }
        size_t i = s;
        for (; i + SQZ_PU_BLOCK <= e; i += SQZ_PU_BLOCK) {
            float a[SQZ_PU_BLOCK];
            quant_load(in + i, res != NULL ? res + i : NULL, SQZ_PU_BLOCK, a);
            quant_minmax_block(a, &l);
        }
        for (; i < e; i++) {
            const float x = in[i] + (res != NULL ? res[i] : 0.0f);
            l.bad[0] |= (uint32_t)(sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS);
            l.mn[0] = x < l.mn[0] ? x : l.mn[0];
            l.mx[0] = x > l.mx[0] ? x : l.mx[0];
            l.sq[0] += (double)x * x;
        }
        float mn = l.mn[0], mx = l.mx[0];
        uint32_t bad = 0;
        for (int j = 0; j < 8; j++) {
            bad |= l.bad[j];
            mn = l.mn[j] < mn ? l.mn[j] : mn;
            mx = l.mx[j] > mx ? l.mx[j] : mx;
            sq_total += l.sq[j];
        }
        if (bad) {
            return SQZ_ERR_NONFINITE;
        }
        sqz_pu_store_f32(meta + 8 * k, mn);
        sqz_pu_store_f32(meta + 8 * k + 4, quant_unit(mn, mx, bits));
    }

    /* Pass 2: encode tile by tile (tiles start on packed byte boundaries), split at buckets. */
    const uint32_t key = (uint32_t)sqz_pu_seed_key(st->seed, st->rank, args->seq, args->stage);
    double err_lanes[8] = {0};
    for (size_t t0 = 0; t0 < n; t0 += QUANT_TILE) {
        const size_t t1 = t0 + QUANT_TILE < n ? t0 + QUANT_TILE : n;
        /* Slack of one block: a short last block of a segment is encoded as a full one. */
        uint8_t codes[QUANT_TILE + SQZ_PU_BLOCK];
        size_t s = t0;
        while (s < t1) {
            const size_t k = s / B;
            const size_t e = (k + 1) * B < t1 ? (k + 1) * B : t1;
            const float mn = sqz_pu_load_f32(meta + 8 * k);
            const float unit = sqz_pu_load_f32(meta + 8 * k + 4);
            const float inv_unit = unit > 0.0f ? 1.0f / unit : 0.0f;
            for (size_t i = s; i < e; i += SQZ_PU_BLOCK) {
                const size_t len = e - i < SQZ_PU_BLOCK ? e - i : SQZ_PU_BLOCK;
                float a[SQZ_PU_BLOCK] = {0};
                float rnd_buf[SQZ_PU_BLOCK];
                float err[SQZ_PU_BLOCK];
                const float *rnd = quant_half;
                quant_load(in + i, res != NULL ? res + i : NULL, len, a);
                if (st->rounding == QUANT_ROUND_STOCHASTIC) {
                    /* Element indices past 2^32 re-key the hash rather than repeat its stream. */
                    const uint32_t blk_key =
                        (i >> 32) ? key ^ (uint32_t)sqz_pu_seed_key(key, 0, i >> 32, 0) : key;
                    quant_hash_block(blk_key, (uint32_t)i, rnd_buf);
                    rnd = rnd_buf;
                }
                if (len < SQZ_PU_BLOCK) {
                    /* Padding elements must encode harmlessly: use mn itself. */
                    for (size_t j = len; j < SQZ_PU_BLOCK; j++) {
                        a[j] = mn;
                    }
                }
                quant_encode_block(a, rnd, mn, unit, inv_unit, levels, codes + (i - t0), err);
                if (res != NULL) {
                    memcpy(res + i, err, len * sizeof *err);
                }
                if (len == SQZ_PU_BLOCK) {
                    quant_error_lanes(err, err_lanes);
                } else {
                    for (size_t j = 0; j < len; j++) {
                        err_lanes[0] += (double)err[j] * err[j];
                    }
                }
            }
            s = e;
        }
        sqz_pu_pack_bits(codes, t1 - t0, bits, packed + t0 / 8 * bits);
    }
    double norm2_err = 0.0;
    for (int j = 0; j < 8; j++) {
        norm2_err += err_lanes[j];
    }
    args->payload_bytes = total;
    args->norm2_in = sq_total;
    args->norm2_err = norm2_err;
    return SQZ_OK;
}

/* out[j] += decoded value of codes[j] for one block. */
static inline void quant_add_block(float *restrict out, const uint8_t *restrict codes, float mn,
                                   float unit)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        out[j] += quant_decode_one(mn, unit, (float)codes[j]);
    }
}

static sqz_status_t quant_decompress(void *state, const void *payload, size_t bytes, float *out,
                                     size_t n)
{
    const quant_state_t *st = (const quant_state_t *)state;
    size_t nb, total;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (!quant_layout(n, st->bits, st->bucket, &nb, &total) || bytes != total ||
        (bytes > 0 && payload == NULL)) {
        return SQZ_ERR_CORRUPT;
    }
    const size_t B = st->bucket;
    const unsigned bits = st->bits;
    const float levels = (float)((1u << bits) - 1u);
    const uint8_t *meta = (const uint8_t *)payload;
    const uint8_t *packed = meta + 8 * nb;

    /* Validate all metadata first: any b-bit code is valid, so the codes need no check. */
    for (size_t k = 0; k < nb; k++) {
        const float mn = sqz_pu_load_f32(meta + 8 * k);
        const float unit = sqz_pu_load_f32(meta + 8 * k + 4);
        if (!sqz_pu_is_finite_f32(mn) || !sqz_pu_is_finite_f32(unit) || !(unit >= 0.0f) ||
            !sqz_pu_is_finite_f32(quant_decode_one(mn, unit, levels))) {
            return SQZ_ERR_CORRUPT;
        }
    }
    if (out == NULL) {
        return SQZ_OK;
    }

    for (size_t t0 = 0; t0 < n; t0 += QUANT_TILE) {
        const size_t t1 = t0 + QUANT_TILE < n ? t0 + QUANT_TILE : n;
        uint8_t codes[QUANT_TILE];
        sqz_pu_unpack_bits(packed + t0 / 8 * bits, t1 - t0, bits, codes);
        size_t s = t0;
        while (s < t1) {
            const size_t k = s / B;
            const size_t e = (k + 1) * B < t1 ? (k + 1) * B : t1;
            const float mn = sqz_pu_load_f32(meta + 8 * k);
            const float unit = sqz_pu_load_f32(meta + 8 * k + 4);
            size_t i = s;
            for (; i + SQZ_PU_BLOCK <= e; i += SQZ_PU_BLOCK) {
                quant_add_block(out + i, codes + (i - t0), mn, unit);
            }
            for (; i < e; i++) {
                out[i] += quant_decode_one(mn, unit, (float)codes[i - t0]);
            }
            s = e;
        }
    }
    return SQZ_OK;
}

static void quant_destroy(void *state)
{
    free(state);
}

const sqz_compressor_v1_t sqz_compressor_quant = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "quant",
    .description = "bucketed max-min b-bit quantization with error feedback (CGX/QSGD style)",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = quant_params,
    .nparams = sizeof quant_params / sizeof quant_params[0],
    .config_size = sizeof(quant_config_t),
    .create = quant_create,
    .query = NULL,
    .max_payload = quant_max_payload,
    .compress = quant_compress,
    .decompress = quant_decompress,
    .destroy = quant_destroy,
};
