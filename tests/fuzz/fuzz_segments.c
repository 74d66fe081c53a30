/* Fuzz target for the decoder of the layer-adaptive composite (src/adapt/sqz_adapt_seg.c: several
 * top-k payloads at different densities behind a segment table): mutated composites must give
 * SQZ_ERR_CORRUPT, or decode within bounds, never crash, read outside the payload (it is copied
 * into an exact-size heap block for ASan) or write outside the output; an unmutated composite
 * decodes to what its parts decode to.  Deterministic mutation driver; also a libFuzzer entry. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "adapt/sqz_adapt_seg.h"
#include "sqz_ctx.h"

#define FUZZ_N 3000

static sqz_seg_t *seg;
static sqz_ctx_t *seg_ctx; /* the composite's states were made from its configuration */

static void fuzz_init(void)
{
    if (seg) {
        return;
    }
    sqz_config_t *cfg;
    sqz_ctx_t    *ctx = NULL;
    char          err[256];
    
    sqz_config_create(&cfg);
    sqz_config_set(cfg, "METHOD", "topk");
    sqz_config_set(cfg, "TOPK_DENSITY", "0.05");
    sqz_config_set(cfg, "ADAPT", "lgreco");
    if (SQZ_OK != sqz_ctx_create(cfg, &ctx, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    sqz_config_destroy(cfg);
    const sqz_compressor_env_v1_t env = {.size = sizeof(env), .rank = 0, .nranks = 2, .seed = 3};
    /* Layers with a gap and a tail; two of them at other densities than the uniform one. */
    const sqz_layer_t layers[] = {{0, 20, 50, 1}, {1100, 30, 40, 2}, {2300, 600, 1, 3}};
    const int         levels[] = {20000, 50000, 200000};
    if (SQZ_OK != sqz_seg_create(ctx, &env, &seg) ||
        SQZ_OK != sqz_seg_plan(seg, layers, 3, FUZZ_N, levels)) {
        abort();
    }
    seg_ctx = ctx; /* alive as long as the composite */
}

static int fuzz_one(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    float   *out  = calloc(FUZZ_N + 16, sizeof(float));
    if (NULL == copy || NULL == out) {
        abort();
    }
    memcpy(copy, data, size);
    for (int i = FUZZ_N; i < FUZZ_N + 16; i++) {
        out[i] = 12345.0f; /* canary past the output */
    }
    const sqz_status_t st = sqz_seg_compressor.decompress(seg, copy, size, out, FUZZ_N);
    if (SQZ_OK != st && SQZ_ERR_CORRUPT != st) {
        abort();
    }
    for (int i = FUZZ_N; i < FUZZ_N + 16; i++) {
        if (12345.0f != out[i]) {
            abort();
        }
    }
    if (SQZ_OK != st) {
        for (int i = 0; i < FUZZ_N; i++) {
            if (0.0f != out[i]) {
                abort(); /* a rejected payload must leave the output untouched */
            }
        }
    }
    free(copy);
    free(out);
    return SQZ_OK == st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_init();
    fuzz_one(data, size);
    return 0;
}

#ifndef SQZ_LIBFUZZER
int main(void)
{
    fuzz_init();
    float *in = malloc(FUZZ_N * sizeof(float)), *res = calloc(FUZZ_N, sizeof(float));
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < FUZZ_N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        in[i] = (float)((double)(x >> 11) * 0x1p-53 - 0.5);
    }
    const size_t  cap = sqz_seg_compressor.max_payload(seg, FUZZ_N);
    unsigned char *pl = malloc(cap);
    sqz_compress_args_v1_t a = {.size = sizeof(a), .in = in, .residual = res, .n = FUZZ_N,
                                .payload = pl, .capacity = cap};
    if (SQZ_OK != sqz_seg_compressor.compress(seg, &a) || !fuzz_one(pl, a.payload_bytes)) {
        fprintf(stderr, "the unmutated composite does not decode\n");
        return 1;
    }
    /* decode + residual == in (exact error feedback of top-k, segment by segment) */
    float *dec = calloc(FUZZ_N, sizeof(float));
    sqz_seg_compressor.decompress(seg, pl, a.payload_bytes, dec, FUZZ_N);
    for (int i = 0; i < FUZZ_N; i++) {
        if (dec[i] + res[i] != in[i]) {
            fprintf(stderr, "element %d: decoded + residual != input\n", i);
            return 1;
        }
    }
    size_t        ok = 0, total = 0;
    unsigned char *buf = malloc(a.payload_bytes + 64);
    for (int m = 0; m < 30000; m++) {
        size_t n = a.payload_bytes;
        memcpy(buf, pl, n);
        const int edits = 1 + (int)(m % 3);
        for (int e = 0; e < edits && n > 0; e++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            const size_t pos = (size_t)(x >> 20) % n;
            switch (x % 4) {
            case 0: buf[pos] ^= (unsigned char)(1u << ((x >> 8) % 8)); break;
            case 1: buf[pos] = (unsigned char)(x >> 32); break;
            case 2: n = pos; break; /* truncate */
            default: buf[pos % (n < 48 ? n : 48)] = (unsigned char)(x >> 40); break; /* the table */
            }
        }
        ok += (size_t)fuzz_one(buf, n);
        total++;
    }
    printf("fuzz_segments: %zu mutated composites, %zu decoded, the rest rejected cleanly\n", total,
           ok);
    free(buf), free(pl), free(in), free(res), free(dec);
    sqz_seg_destroy(seg);
    sqz_ctx_destroy(seg_ctx);
    return 0;
}
#endif
