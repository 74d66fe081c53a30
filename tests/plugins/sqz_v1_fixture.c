/*
 * A compressor plugin written against ABI v1 only (include/squeeze/compressor_v1.h), as plugins
 * built before ABI v2 are: it exports `sqz_compressor_v1` and nothing else.  The tests load it to
 * check that v1 plugins keep loading through the adapter (host operations, no device
 * operations).  Method "v1copy": the float32 values themselves, 4 bytes an element
 * little-endian, so that the residual stays 0 and decoding is exact.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

static int v1copy_state; /* (the state holds nothing: one object for every create) */

static sqz_status_t v1copy_create(const void *config, const sqz_compressor_env_v1_t *env,
                                  void **state)
{
    (void)config, (void)env;
    *state = &v1copy_state;
    return SQZ_OK;
}

static size_t v1copy_max_payload(void *state, size_t n)
{
    (void)state;
    return n > SIZE_MAX / 4 ? SIZE_MAX : 4 * n;
}

static sqz_status_t v1copy_compress(void *state, sqz_compress_args_v1_t *a)
{
    (void)state;
    if (a->n > SIZE_MAX / 4 || a->capacity < 4 * a->n) {
        return SQZ_ERR_INVALID_PARAM;
    }
    uint8_t *out   = (uint8_t *)a->payload;
    double   norm2 = 0.0;
    for (size_t i = 0; i < a->n; i++) {
        const float x = a->in[i] + (a->residual != NULL ? a->residual[i] : 0.0f);
        uint32_t    u;
        memcpy(&u, &x, sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u) {
            return SQZ_ERR_NONFINITE; /* nothing written to the residual yet */
        }
        for (int b = 0; b < 4; b++) {
            out[4 * i + (size_t)b] = (uint8_t)(u >> (8 * b));
        }
        norm2 += (double)x * x;
    }
    for (size_t i = 0; a->residual != NULL && i < a->n; i++) {
        a->residual[i] = 0.0f;
    }
    a->payload_bytes = 4 * a->n;
    a->norm2_in      = norm2;
    a->norm2_err     = 0.0;
    return SQZ_OK;
}

static sqz_status_t v1copy_decompress(void *state, const void *payload, size_t bytes, float *out,
                                      size_t n)
{
    (void)state;
    if (n > SIZE_MAX / 4 || bytes != 4 * n || (n > 0 && payload == NULL)) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *p = (const uint8_t *)payload;
    for (size_t i = 0; out != NULL && i < n; i++) {
        const uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                           (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
        float x;
        memcpy(&x, &u, sizeof x);
        out[i] += x;
    }
    return SQZ_OK;
}

static void v1copy_destroy(void *state) { (void)state; }

__attribute__((visibility("default"))) const sqz_compressor_v1_t sqz_compressor_v1 = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "v1copy",
    .description = "test fixture: a v1 plugin that sends float32 values as they are",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .config_size = 1,
    .create = v1copy_create,
    .max_payload = v1copy_max_payload,
    .compress = v1copy_compress,
    .decompress = v1copy_decompress,
    .destroy = v1copy_destroy,
};
