/*
 * "sign": scaled sign compression with error feedback, as in 1-bit Adam (Tang et al., ICML 2021;
 * DeepSpeed's compressed_allreduce) and EF-signSGD (Karimireddy et al., ICML 2019).
 *
 * a = in + residual is sent as one scale s and one bit per element: bit = (a >= 0), so 0 maps to
 * +1; decoded = bit ? +s : -s; residual = a - decoded.  SIGN_SCALE picks s:
 *   l1: s = mean |a|          (EF-signSGD: the MSE-optimal scale, a contractive compressor)
 *   l2: s = ||a||_2 / sqrt(n) (1-bit Adam: keeps the L2 norm)
 *
 * Wire format (little-endian): f32 scale, then n bits LSB-first (bit i is bit i%8 of byte i/8),
 * ceil(n/8) bytes, padding bits zero.  Total 4 + ceil(n/8) bytes.
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER (worker and server error feedback, as in 1-bit Adam).
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

enum { SIGN_SCALE_L1 = 0, SIGN_SCALE_L2 = 1 };

/** Config struct filled by the core from sign_params. */
typedef struct sign_config {
    int scale; /* SIGN_SCALE: SIGN_SCALE_L1 or SIGN_SCALE_L2 */
} sign_config_t;

static const sqz_param_def_v1_t sign_params[] = {
    {
        .name = "SIGN_SCALE",
        .type = SQZ_PARAM_ENUM,
        .default_value = "l1",
        .choices = "l1|l2",
        .offset = offsetof(sign_config_t, scale),
        .help = "scale of the sign vector: l1 = mean |a| (MSE-optimal), l2 = ||a||_2/sqrt(n) "
                "(1-bit Adam)",
    },
};

typedef struct sign_state {
    sign_config_t cfg;
} sign_state_t;

static sqz_status_t sign_create(const void *config, const sqz_compressor_env_v1_t *env,
                                void **state)
{
    const sign_config_t *cfg = (const sign_config_t *)config;
    if (cfg == NULL || (cfg->scale != SIGN_SCALE_L1 && cfg->scale != SIGN_SCALE_L2)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    sign_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    s->cfg = *cfg;
    *state = s;
    return SQZ_OK;
}

static size_t sign_payload_bytes(size_t n)
{
    return 4 + n / 8 + (n % 8 != 0);
}

static size_t sign_max_payload(void *state, size_t n)
{
    return sign_payload_bytes(n);
}

/* Per-lane statistics of pass 1; lanes keep the block loops vectorizable without reassociating
 * floating-point sums (which -O2 does not allow). */
typedef struct sign_lanes {
    double   abs_sum[8];
    double   sq_sum[8];
    uint32_t bad[8];
} sign_lanes_t;

/* Pass 1 on one block: statistics and the sign bits (written to the payload, never to the
 * residual, so that a non-finite input leaves the residual untouched). */
static inline void sign_stats_block(const float *restrict in, const float *restrict res,
                                    sign_lanes_t *restrict lanes, uint8_t *restrict bits)
{
    float a[SQZ_PU_BLOCK];
    uint8_t pos[SQZ_PU_BLOCK];
    if (res != NULL) {
        for (int j = 0; j < SQZ_PU_BLOCK; j++) {
            a[j] = in[j] + res[j];
        }
    } else {
        memcpy(a, in, sizeof a);
    }
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        pos[j] = (uint8_t)(a[j] >= 0.0f);
    }
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int l = 0; l < 8; l++) {
            const float x = a[j + l];
            lanes->bad[l] |= (uint32_t)(sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS);
            lanes->abs_sum[l] += (double)fabsf(x);
            lanes->sq_sum[l] += (double)x * x;
        }
    }
    sqz_pu_pack_bits(pos, SQZ_PU_BLOCK, 1, bits);
}

/* Pass 2 on one block: residual = a - decoded; returns the block's squared error per lane. */
static inline void sign_residual_block(const float *restrict in, float *restrict res, float s,
                                       double *restrict err)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int l = 0; l < 8; l++) {
            const float a = in[j + l] + res[j + l];
            const float r = a - (a >= 0.0f ? s : -s);
            res[j + l] = r;
            err[l] += (double)r * r;
        }
    }
}

/* Pass 2 without a residual: only the squared error. */
static inline void sign_error_block(const float *restrict in, float s, double *restrict err)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int l = 0; l < 8; l++) {
            const float a = in[j + l];
            const float r = a - (a >= 0.0f ? s : -s);
            err[l] += (double)r * r;
        }
    }
}

static sqz_status_t sign_compress(void *state, sqz_compress_args_v1_t *args)
{
    const sign_state_t *st = (const sign_state_t *)state;
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *out = (uint8_t *)args->payload;
    if (st == NULL || out == NULL || args->capacity < sign_payload_bytes(n) ||
        (n > 0 && in == NULL)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    uint8_t *bits = out + 4;

    sign_lanes_t lanes;
    memset(&lanes, 0, sizeof lanes);
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        sign_stats_block(in + i, res != NULL ? res + i : NULL, &lanes, bits + i / 8);
        if (lanes.bad[0] | lanes.bad[1] | lanes.bad[2] | lanes.bad[3] | lanes.bad[4] |
            lanes.bad[5] | lanes.bad[6] | lanes.bad[7]) {
            return SQZ_ERR_NONFINITE;
        }
    }
    if (i < n) {
        /* The tail goes through a zero-padded block, which also zeroes the padding bits. */
        float tin[SQZ_PU_BLOCK] = {0};
        float tres[SQZ_PU_BLOCK] = {0};
        uint8_t tbits[SQZ_PU_BLOCK / 8];
        const size_t m = n - i;
        memcpy(tin, in + i, m * sizeof *tin);
        if (res != NULL) {
            memcpy(tres, res + i, m * sizeof *tres);
        }
        sign_stats_block(tin, tres, &lanes, tbits);
        /* Padded zeros map to bit 1: clear the bits past n. */
        const size_t nbytes = (m + 7) / 8;
        if (m % 8 != 0) {
            tbits[nbytes - 1] &= (uint8_t)((1u << (m % 8)) - 1u);
        }
        memcpy(bits + i / 8, tbits, nbytes);
    }
    uint32_t bad = 0;
    double abs_sum = 0.0, sq_sum = 0.0;
    for (int l = 0; l < 8; l++) {
        bad |= lanes.bad[l];
        abs_sum += lanes.abs_sum[l];
        sq_sum += lanes.sq_sum[l];
    }
    if (bad) {
        return SQZ_ERR_NONFINITE;
    }

    /* Both scales are at most max |a|, so they are finite floats. */
    float s = 0.0f;
    if (n > 0) {
        s = st->cfg.scale == SIGN_SCALE_L2 ? (float)sqrt(sq_sum / (double)n)
                                           : (float)(abs_sum / (double)n);
    }
    sqz_pu_store_f32(out, s);

    double err[8] = {0};
    i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        if (res != NULL) {
            sign_residual_block(in + i, res + i, s, err);
        } else {
            sign_error_block(in + i, s, err);
        }
    }
    for (; i < n; i++) {
        const float a = in[i] + (res != NULL ? res[i] : 0.0f);
        const float r = a - (a >= 0.0f ? s : -s);
        if (res != NULL) {
            res[i] = r;
        }
        err[0] += (double)r * r;
    }
    double norm2_err = 0.0;
    for (int l = 0; l < 8; l++) {
        norm2_err += err[l];
    }
    args->payload_bytes = sign_payload_bytes(n);
    args->norm2_in = sq_sum;
    args->norm2_err = norm2_err;
    return SQZ_OK;
}

/* out[j] += bit j ? s : -s for one block of 64 elements (8 payload bytes). */
static inline void sign_add_block(float *restrict out, const uint8_t *restrict bits, float s)
{
    uint8_t pos[SQZ_PU_BLOCK];
    sqz_pu_unpack_bits(bits, SQZ_PU_BLOCK, 1, pos);
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        out[j] += pos[j] ? s : -s;
    }
}

static sqz_status_t sign_decompress(void *state, const void *payload, size_t bytes, float *out,
                                    size_t n)
{
    if (payload == NULL || bytes != sign_payload_bytes(n)) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *p = (const uint8_t *)payload;
    const float s = sqz_pu_load_f32(p);
    if (!sqz_pu_is_finite_f32(s) || !(s >= 0.0f)) {
        return SQZ_ERR_CORRUPT;
    }
    if (out == NULL) {
        return SQZ_OK;
    }
    const uint8_t *bits = p + 4;
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        sign_add_block(out + i, bits + i / 8, s);
    }
    for (; i < n; i++) {
        out[i] += ((bits[i / 8] >> (i % 8)) & 1u) ? s : -s;
    }
    return SQZ_OK;
}

static void sign_destroy(void *state)
{
    free(state);
}

const sqz_compressor_v1_t sqz_compressor_sign = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "sign",
    .description = "scaled sign (1 bit/element + one f32 scale) with error feedback "
                   "(EF-signSGD / 1-bit Adam)",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = sign_params,
    .nparams = sizeof sign_params / sizeof sign_params[0],
    .config_size = sizeof(sign_config_t),
    .create = sign_create,
    .query = NULL,
    .max_payload = sign_max_payload,
    .compress = sign_compress,
    .decompress = sign_decompress,
    .destroy = sign_destroy,
};
