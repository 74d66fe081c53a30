/*
 * "example": an out-of-tree compressor plugin, built as its own shared object and loaded through
 * SQZ_PLUGINS.  It stands for third-party code: it includes <squeeze/compressor_v2.h> and standard
 * headers only (and the CUDA runtime's, for its device operations), and links against nothing of
 * Squeeze.
 *
 * Its files: this one, the host operations; sqz_example_device.cu, the device operations and
 * the exported v2 descriptor (host and device tables) in a build with CUDA;
 * sqz_example_host_only.c, the descriptor without device operations otherwise.
 *
 * Method: bfloat16 truncation (the upper 16 bits of each float32, as in Kalamkar et al., "A Study
 * of BFLOAT16 for Deep Learning Training", 2019), with error feedback: residual = a - decoded.
 * EXAMPLE_ROUND=1 rounds to nearest even; 0 truncates (rounds toward zero).  A value that would
 * round up to infinity is truncated instead, so every decoded value is finite.
 *
 * Wire format: n little-endian uint16 (the bfloat16 bits), 2 * n bytes.
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_example.h"

/** Config struct filled by the host from example_params. */
typedef struct example_config {
    int round; /* EXAMPLE_ROUND: 1 = round to nearest even, 0 = truncate */
} example_config_t;

static const sqz_param_def_v1_t example_params[] = {
    {
        .name = "EXAMPLE_ROUND",
        .type = SQZ_PARAM_BOOL,
        .default_value = "1",
        .offset = offsetof(example_config_t, round),
        .help = "round float32 to bfloat16 to nearest even (1) or truncate (0)",
    },
};

typedef struct example_state {
    int round;
} example_state_t;

#define EXAMPLE_BLOCK 64

static uint32_t example_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float example_bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Wire values are little-endian on every host. */
static uint16_t example_load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static void example_store_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/** bfloat16 bits of a finite float: round to nearest even or truncate, never to infinity. */
static inline uint16_t example_encode(float a, int round)
{
    const uint32_t u = example_f32_bits(a);
    const uint32_t trunc = u >> 16;
    if (!round) {
        return (uint16_t)trunc;
    }
    const uint32_t rne = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)(((rne & 0x7f80u) == 0x7f80u) ? trunc : rne);
}

static inline float example_decode(uint16_t h)
{
    return example_bits_f32((uint32_t)h << 16);
}

static inline int example_is_finite_bits(uint32_t u)
{
    return (u & 0x7f800000u) != 0x7f800000u;
}

static sqz_status_t example_create(const void *config, const sqz_compressor_env_v1_t *env,
                                   void **state)
{
    (void)env;
    const example_config_t *cfg = (const example_config_t *)config;
    if (cfg == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    example_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    s->round = cfg->round != 0;
    *state = s;
    return SQZ_OK;
}

static size_t example_max_payload(void *state, size_t n)
{
    (void)state;
    return n > SIZE_MAX / 2 ? SIZE_MAX : 2 * n;
}

/* Pass 1 on one block: payload bits, squared norm per lane and a non-finite flag. */
static inline uint32_t example_encode_block(const float *restrict a, int round,
                                            uint16_t *restrict h, double *restrict sq)
{
    uint32_t bad = 0;
    for (int j = 0; j < EXAMPLE_BLOCK; j++) {
        bad |= (uint32_t)!example_is_finite_bits(example_f32_bits(a[j]));
        h[j] = example_encode(a[j], round);
    }
    for (int j = 0; j < EXAMPLE_BLOCK; j += 8) {
        for (int l = 0; l < 8; l++) {
            sq[l] += (double)a[j + l] * a[j + l];
        }
    }
    return bad;
}

static sqz_status_t example_compress(void *state, sqz_compress_args_v1_t *args)
{
    const example_state_t *st = (const example_state_t *)state;
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *out = (uint8_t *)args->payload;
    if (st == NULL || n > SIZE_MAX / 2 || args->capacity < 2 * n ||
        (n > 0 && (in == NULL || out == NULL))) {
        return SQZ_ERR_INVALID_PARAM;
    }

    /* Pass 1 writes only the payload, so a non-finite input leaves the residual untouched. */
    double sq[8] = {0};
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i += EXAMPLE_BLOCK) {
        const size_t len = n - i < EXAMPLE_BLOCK ? n - i : EXAMPLE_BLOCK;
        float a[EXAMPLE_BLOCK] = {0};
        uint16_t h[EXAMPLE_BLOCK];
        for (size_t j = 0; j < len; j++) {
            a[j] = in[i + j] + (res != NULL ? res[i + j] : 0.0f);
        }
        bad |= example_encode_block(a, st->round, h, sq);
        for (size_t j = 0; j < len; j++) {
            example_store_u16(out + 2 * (i + j), h[j]);
        }
    }
    if (bad) {
        return SQZ_ERR_NONFINITE;
    }

    /* Pass 2: the residual keeps what bfloat16 dropped. */
    double err = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float a = in[i] + (res != NULL ? res[i] : 0.0f);
        const float r = a - example_decode(example_load_u16(out + 2 * i));
        if (res != NULL) {
            res[i] = r;
        }
        err += (double)r * r;
    }
    double norm2 = 0.0;
    for (int l = 0; l < 8; l++) {
        norm2 += sq[l];
    }
    args->payload_bytes = 2 * n;
    args->norm2_in = norm2;
    args->norm2_err = err;
    return SQZ_OK;
}

static sqz_status_t example_decompress(void *state, const void *payload, size_t bytes,
                                       float *out, size_t n)
{
    (void)state;
    if (n > SIZE_MAX / 2 || bytes != 2 * n || (n > 0 && payload == NULL)) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *p = (const uint8_t *)payload;
    /* We never send NaN or Inf: such a value means corruption.  Check before any write. */
    for (size_t i = 0; i < n; i++) {
        if (!example_is_finite_bits((uint32_t)example_load_u16(p + 2 * i) << 16)) {
            return SQZ_ERR_CORRUPT;
        }
    }
    if (out == NULL) {
        return SQZ_OK;
    }
    for (size_t i = 0; i < n; i++) {
        out[i] += example_decode(example_load_u16(p + 2 * i));
    }
    return SQZ_OK;
}

static void example_destroy(void *state)
{
    free(state);
}

/* Declines what would gain nothing, reading only the query fields the engine filled: 16-bit
 * buffers (bfloat16 of a 16-bit gradient saves nothing), on host and device alike.  (Device
 * buffers of a build without device operations are declined by the engine before it asks.) */
static sqz_status_t example_query(void *state, const sqz_query_v1_t *q)
{
    (void)state;
    if (SQZ_QUERY_HAS(q, dtype) && q->dtype != 1) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    return SQZ_OK;
}

int example_round(const void *state)
{
    return ((const example_state_t *)state)->round;
}

const sqz_host_ops_v2_t example_host_ops = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "example",
    .description = "example out-of-tree plugin: bfloat16 truncation with error feedback",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = example_params,
    .nparams = sizeof example_params / sizeof example_params[0],
    .config_size = sizeof(example_config_t),
    .create = example_create,
    .query = example_query,
    .max_payload = example_max_payload,
    .compress = example_compress,
    .decompress = example_decompress,
    .destroy = example_destroy,
};
