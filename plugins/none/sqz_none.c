/*
 * "none": exact passthrough (no compression).  Useful as a baseline and to exercise the engine's
 * reduce-scatter path with exact arithmetic.
 *
 * Wire format: n little-endian float32 values a[i] = in[i] + residual[i]; exactly 4*n bytes.
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER (each chunk sent raw, summed, sent raw again), so every
 * rank ends with the same exact floats.  Error feedback is trivially exact: the residual becomes 0.
 */
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

typedef struct none_state {
    int unused;
} none_state_t;

static sqz_status_t none_create(const void *config, const sqz_compressor_env_v1_t *env,
                                void **state)
{
    none_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    *state = s;
    return SQZ_OK;
}

static size_t none_max_payload(void *state, size_t n)
{
    return 4 * n;
}

static sqz_status_t none_compress(void *state, sqz_compress_args_v1_t *args)
{
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *out = (uint8_t *)args->payload;
    if (n > SIZE_MAX / 4 || args->capacity < 4 * n || (n > 0 && (in == NULL || out == NULL))) {
        return SQZ_ERR_INVALID_PARAM;
    }

    /* One pass writes the payload (not the residual, so the finiteness contract holds) and
     * establishes finiteness; lane-wise accumulators keep the block loop vectorizable. */
    double acc[8] = {0};
    uint32_t bad[8] = {0};
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        float a[SQZ_PU_BLOCK];
        const float *restrict ib = in + i;
        if (res != NULL) {
            const float *restrict rb = res + i;
            for (int j = 0; j < SQZ_PU_BLOCK; j++) {
                a[j] = ib[j] + rb[j];
            }
        } else {
            memcpy(a, ib, sizeof a);
        }
        for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
            for (int l = 0; l < 8; l++) {
                bad[l] |= (uint32_t)(sqz_pu_abs_key(a[j + l]) >= SQZ_PU_F32_INF_BITS);
                acc[l] += (double)a[j + l] * a[j + l];
            }
        }
        for (int j = 0; j < SQZ_PU_BLOCK; j++) {
            sqz_pu_store_f32(out + 4 * (i + (size_t)j), a[j]);
        }
    }
    for (; i < n; i++) {
        const float a = in[i] + (res != NULL ? res[i] : 0.0f);
        bad[0] |= (uint32_t)(sqz_pu_abs_key(a) >= SQZ_PU_F32_INF_BITS);
        acc[0] += (double)a * a;
        sqz_pu_store_f32(out + 4 * i, a);
    }
    uint32_t any_bad = 0;
    double norm2 = 0.0;
    for (int l = 0; l < 8; l++) {
        any_bad |= bad[l];
        norm2 += acc[l];
    }
    if (any_bad) {
        return SQZ_ERR_NONFINITE;
    }
    if (res != NULL && n > 0) {
        memset(res, 0, n * sizeof *res);
    }
    args->payload_bytes = 4 * n;
    args->norm2_in = norm2;
    args->norm2_err = 0.0;
    return SQZ_OK;
}

/* out[j] += the j-th raw float at p, for one block (restrict parameters let GCC vectorize). */
static inline void none_add_block(float *restrict out, const uint8_t *restrict p)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        out[j] += sqz_pu_load_f32(p + 4 * j);
    }
}

static sqz_status_t none_decompress(void *state, const void *payload, size_t bytes, float *out,
                                    size_t n)
{
    /* Raw floats may legitimately be anything the sum produced; only the size is checkable. */
    if (n > SIZE_MAX / 4 || bytes != 4 * n || (n > 0 && payload == NULL)) {
        return SQZ_ERR_CORRUPT;
    }
    if (out == NULL) {
        return SQZ_OK;
    }
    const uint8_t *p = (const uint8_t *)payload;
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        none_add_block(out + i, p + 4 * i);
    }
    for (; i < n; i++) {
        out[i] += sqz_pu_load_f32(p + 4 * i);
    }
    return SQZ_OK;
}

static void none_destroy(void *state)
{
    free(state);
}

/* As SQZ_METHOD, "none" means "change nothing": every call is declined and goes to the dense
 * collective untouched (the engine still counts it).  The compress/decompress pair stays a real,
 * exact codec: squeeze_bench and the tests use it as the baseline of the engine's own exchange. */
static sqz_status_t none_query(void *state, const sqz_query_v1_t *q)
{
    (void)state;
    (void)q;
    return SQZ_ERR_NOT_SUPPORTED;
}

const sqz_compressor_v1_t sqz_compressor_none = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "none",
    .description = "no compression: every call passes through to the dense collective, counted in the stats",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = NULL,
    .nparams = 0,
    .config_size = 0,
    .create = none_create,
    .query = none_query,
    .max_payload = none_max_payload,
    .compress = none_compress,
    .decompress = none_decompress,
    .destroy = none_destroy,
    .flags = SQZ_COMPRESSOR_FIXED_PAYLOAD | SQZ_COMPRESSOR_EF_NONE,
};
