/* Fuzz target for the entropy stage's decoder (sqz_entropy_unwrap: zstd and position coding,
 * followed by the compressor's decode): mutated wrapped top-k and quant payloads must give
 * SQZ_ERR_CORRUPT or decode within bounds, never crash or write outside the output; every
 * unmutated wrapped payload must unwrap to exactly the compressor's bytes.  Deterministic mutation
 * driver; also a libFuzzer entry point (first byte: bit 0 the compressor, bits 1-2 the stages;
 * the rest: the wrapped payload). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "lossless/sqz_entropy.h"
#include "sqz_param.h"
#include "sqz_registry.h"

#define FUZZ_N 4096

static const sqz_compressor_v1_t *const comps[] = {&sqz_compressor_topk, &sqz_compressor_quant};
static void          *states[2];
static sqz_entropy_t *ent;

static void fuzz_init(void)
{
    if (ent) {
        return;
    }
    ent = sqz_entropy_create();
    for (int c = 0; c < 2; c++) {
        void                         *cfg = NULL;
        char                          err[256];
        const sqz_compressor_env_v1_t env = {.size = sizeof(env), .rank = 0, .nranks = 2, .seed = 5};
        /* top-k at density 0.1: payloads large enough for the entropy stage to take them */
        const char *const kv[] = {"TOPK_DENSITY=0.1", NULL};
        if (SQZ_OK != sqz_plugin_config_make(comps[c], c == 0 ? kv : NULL, &cfg, err, sizeof(err)) ||
            SQZ_OK != comps[c]->create(cfg, &env, &states[c])) {
            abort();
        }
        free(cfg);
    }
}

/* Unwraps and decodes; aborts on a contract violation. */
static int fuzz_one(int c, int bits, const uint8_t *data, size_t size)
{
    const unsigned char *raw = NULL;
    size_t               rawn = 0;
    const size_t         bound = comps[c]->max_payload(states[c], FUZZ_N);
    sqz_status_t         st    = sqz_entropy_unwrap(ent, bits, data, size, bound, &raw, &rawn);
    if (SQZ_OK == st) {
        if (rawn > bound) {
            abort();
        }
        float *out = calloc(FUZZ_N, sizeof(float));
        st         = comps[c]->decompress(states[c], raw, rawn, out, FUZZ_N);
        free(out);
    }
    if (SQZ_OK != st && SQZ_ERR_CORRUPT != st) {
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    if (size < 1) {
        return 0;
    }
    const int bits = (data[0] >> 1) & 3;
    return fuzz_one(data[0] & 1, bits ? bits : SQZ_ENTROPY_ZSTD_BIT, data + 1, size - 1);
}

#ifndef SQZ_LIBFUZZER
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

int main(void)
{
    fuzz_init();
    float         *in  = malloc(FUZZ_N * sizeof(float));
    unsigned char *buf = malloc(1 << 20), *mut = malloc(1 << 20);
    size_t         inputs = 0, wrapped = 0, positions = 0;
    for (int it = 0; it < 3000; it++) {
        const int c = (int)(rnd() & 1);
        for (size_t i = 0; i < FUZZ_N; i++) {
            in[i] = (rnd() % 8 == 0) ? (float)(int)(rnd() % 100) - 50.0f : 0.0f;
        }
        sqz_compress_args_v1_t a = {.size = sizeof(a), .in = in, .n = FUZZ_N, .seq = (uint64_t)it,
                                    .payload = buf, .capacity = 1 << 20};
        if (SQZ_OK != comps[c]->compress(states[c], &a)) {
            abort();
        }
        size_t         bytes = a.payload_bytes;
        unsigned char *orig  = malloc(bytes ? bytes : 1);
        memcpy(orig, buf, bytes);
        const int bits = sqz_entropy_wrap(ent, SQZ_ENTROPY_ZSTD, 10, 2, buf, &bytes);
        if (!bits) {
            free(orig);
            continue;
        }
        wrapped++;
        positions += (bits & SQZ_ENTROPY_POSITIONS_BIT) != 0;
        /* Exact round trip, then the decode of the compressor. */
        const unsigned char *raw  = NULL;
        size_t               rawn = 0;
        if (SQZ_OK != sqz_entropy_unwrap(ent, bits, buf, bytes, a.payload_bytes, &raw, &rawn) ||
            rawn != a.payload_bytes || 0 != memcmp(raw, orig, rawn)) {
            fprintf(stderr, "fuzz_entropy: stages %d do not round-trip\n", bits);
            abort();
        }
        free(orig);
        if (SQZ_OK != fuzz_one(c, bits, buf, bytes)) {
            abort();
        }
        for (int v = 0; v < 30; v++) {
            size_t len = bytes;
            memcpy(mut, buf, len);
            switch (rnd() % 4) {
            case 0: mut[rnd() % len] ^= (unsigned char)(1u << (rnd() % 8)); break;
            case 1: len = rnd() % len; break;
            case 2: len += rnd() % 64; break;
            default: mut[rnd() % len] = (unsigned char)rnd(); break;
            }
            /* sometimes claim other stages than the ones applied */
            fuzz_one(c, rnd() % 5 == 0 ? (int)(1 + rnd() % 3) : bits, mut, len);
            inputs++;
        }
    }
    printf("fuzz_entropy: %zu inputs from %zu wrapped payloads (%zu position-coded), 0 crashes\n",
           inputs, wrapped, positions);
    free(in);
    free(buf);
    free(mut);
    return wrapped > 0 && positions > 0 ? 0 : 1;
}
#endif
