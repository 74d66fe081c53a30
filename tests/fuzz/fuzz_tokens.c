/*
 * Fuzzing of the LSH-MoE token block decoder (src/moe/sqz_lsh_wire.c), after fuzz_decode.c.
 *
 * Input format: 4 bytes little-endian h, then the block.  tokens = (h & 0xfff) % 300, width =
 * 1 + ((h >> 12) & 0xff) % 40, dtype = 1 + (h >> 20) % 3.  Every input is decoded into a malloc'ed
 * buffer of exactly tokens * width elements (AddressSanitizer sees any overflow) and with out ==
 * NULL.  The oracle aborts when sqz_tok_decode returns anything but SQZ_OK or SQZ_ERR_CORRUPT, when
 * the two calls disagree, or when a rejected block changed the output.
 *
 * With -DSQZ_LIBFUZZER only LLVMFuzzerTestOneInput is built.  Otherwise main() encodes random
 * clustered tokens with both encoders (their blocks must be accepted; de-duplicated
 * blocks must give the exact input back), mutates the blocks and feeds every variant to the same entry point.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_lsh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, size_t tokens, size_t width, size_t bytes)
{
    fprintf(stderr, "fuzz_tokens: %s (tokens=%zu width=%zu bytes=%zu)\n", what, tokens, width,
            bytes);
    abort();
}

static int run(const uint8_t *data, size_t size)
{
    if (size < 4) {
        return SQZ_ERR_CORRUPT;
    }
    const uint32_t h      = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                       (uint32_t)data[3] << 24;
    const size_t   tokens = (h & 0xfffu) % 300, width = 1 + ((h >> 12) & 0xffu) % 40;
    const int      dtype  = 1 + (int)((h >> 20) % 3);
    const size_t   bytes  = size - 4, outb = tokens * width * sqz_tok_esize(dtype);
    uint8_t       *blk = malloc(bytes ? bytes : 1), *out = malloc(outb ? outb : 1),
            *ref = malloc(outb ? outb : 1);
    if (NULL == blk || NULL == out || NULL == ref) {
        die("out of memory", tokens, width, bytes);
    }
    memcpy(blk, data + 4, bytes);
    for (size_t i = 0; i < outb; i++) {
        out[i] = ref[i] = (uint8_t)(i * 7 + 3);
    }
    const sqz_status_t v = sqz_tok_decode(blk, bytes, tokens, width, dtype, NULL);
    const sqz_status_t d = sqz_tok_decode(blk, bytes, tokens, width, dtype, out);
    if ((SQZ_OK != v && SQZ_ERR_CORRUPT != v) || d != v) {
        die("unexpected or inconsistent status", tokens, width, bytes);
    }
    if (SQZ_ERR_CORRUPT == d && 0 != memcmp(out, ref, outb)) {
        die("a rejected block was written to out", tokens, width, bytes);
    }
    free(blk);
    free(out);
    free(ref);
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)run(data, size);
    return 0;
}

#ifndef SQZ_LIBFUZZER
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z          = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static size_t inputs;
static int feed(size_t tokens, size_t width, int dtype, const uint8_t *blk, size_t bytes)
{
    uint8_t *buf = malloc(bytes + 4);
    if (NULL == buf) {
        die("out of memory", tokens, width, bytes);
    }
    /* Encodes (tokens, width, dtype) so that run() decodes them back. */
    const uint32_t h = (uint32_t)tokens | (uint32_t)(width - 1) << 12 | (uint32_t)(dtype - 1) << 20;
    for (int i = 0; i < 4; i++) {
        buf[i] = (uint8_t)(h >> (8 * i));
    }
    memcpy(buf + 4, blk, bytes);
    const int st = run(buf, bytes + 4);
    inputs++;
    free(buf);
    return st;
}

static void mutate(uint8_t *b, size_t *len, size_t cap)
{
    switch (below(6)) {
    case 0: /* bit flips */
        for (size_t f = 1 + below(4); f > 0 && *len; f--) {
            b[below(*len)] ^= (uint8_t)(1u << below(8));
        }
        break;
    case 1: *len = below(*len + 1); break; /* truncation */
    case 2: /* extension */
        for (size_t a = 1 + below(8); a > 0 && *len < cap; a--) {
            b[(*len)++] = (uint8_t)rnd();
        }
        break;
    case 3: /* a header field set to an extreme value */
        if (*len >= 24) {
            static const uint32_t ex[] = {0, 1, 255, 256, 257, 65536, 0x7fffffffu, 0xffffffffu};
            const uint32_t        v    = ex[below(8)];
            const size_t          at   = 4 * below(6);
            for (int i = 0; i < 4; i++) {
                b[at + (size_t)i] = (uint8_t)(v >> (8 * i));
            }
        }
        break;
    case 4: /* one byte of the header */
        if (*len >= 8) {
            b[4 + below(4)] = (uint8_t)rnd();
        }
        break;
    default: /* an index byte past the rows */
        if (*len) {
            b[*len - 1 - below(*len < 16 ? *len : 16)] = 0xff;
        }
        break;
    }
}

int main(void)
{
    sqz_lsh_t *scratch = NULL;
    if (SQZ_OK != sqz_lsh_create(1, 1, 1, 64, 0, &scratch)) {
        die("cannot create the scratch codec", 0, 0, 0);
    }
    for (int it = 0; it < 3000; it++) {
        const size_t tokens = below(4) ? below(120) : below(300);
        const size_t width  = 1 + below(40);
        const int    lsh    = (int)below(2);
        const int    dtype  = lsh ? SQZ_DTYPE_FLOAT32 : 1 + (int)below(3);
        const size_t es = sqz_tok_esize(dtype), cap = sqz_tok_raw_bytes(tokens, width, dtype) + 64;
        uint8_t     *x = malloc(tokens * width * es + 1), *y = malloc(tokens * width * es + 1);
        uint8_t     *blk = malloc(cap), *mut = malloc(cap);
        float       *f   = (float *)(void *)x;
        if (NULL == x || NULL == y || NULL == blk || NULL == mut) {
            die("out of memory", tokens, width, 0);
        }
        /* A few distinct rows repeated, with noise on some of them. */
        const size_t kinds = 1 + below(12);
        for (size_t t = 0; t < tokens; t++) {
            const size_t k = below(kinds);
            for (size_t j = 0; j < width; j++) {
                if (SQZ_DTYPE_FLOAT32 == dtype) {
                    f[t * width + j] = (float)(k * 31 + j % 7) + (below(3) ? 0.0f : 0.01f * (float)below(5));
                } else {
                    x[(t * width + j) * 2]     = (uint8_t)(k + j);
                    x[(t * width + j) * 2 + 1] = (uint8_t)(k * 3);
                }
            }
        }
        size_t bytes = 0;
        if (lsh) {
            sqz_lsh_t *l = NULL;
            if (SQZ_OK != sqz_lsh_create(width, 1 + (int)below(8), 1 + (int)below(8), 64, rnd(), &l) ||
                SQZ_OK != sqz_lsh_encode(l, f, tokens, blk, &bytes, NULL)) {
                die("lsh encode failed", tokens, width, 0);
            }
            sqz_lsh_destroy(l);
        } else if (SQZ_OK != sqz_dedup_encode(scratch, x, tokens, width, dtype, blk, &bytes)) {
            die("dedup encode failed", tokens, width, 0);
        }
        if (bytes > cap - 64 || SQZ_OK != feed(tokens, width, dtype, blk, bytes) ||
            SQZ_OK != sqz_tok_decode(blk, bytes, tokens, width, dtype, y)) {
            die("a valid block was rejected", tokens, width, bytes);
        }
        if (!lsh && 0 != memcmp(x, y, tokens * width * es)) {
            die("de-duplication is not exact", tokens, width, bytes);
        }
        for (int v = 0; v < 6; v++) {
            size_t len = bytes;
            memcpy(mut, blk, len);
            for (size_t m = 1 + below(2); m > 0; m--) {
                mutate(mut, &len, cap);
            }
            const size_t tt = below(8) ? tokens : tokens + 1;
            (void)feed(tt < 300 ? tt : tokens, width, dtype, mut, len);
        }
        free(x);
        free(y);
        free(blk);
        free(mut);
    }
    for (int it = 0; it < 2000; it++) {
        uint8_t      buf[128];
        const size_t len = below(sizeof(buf) + 1);
        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)rnd();
        }
        (void)LLVMFuzzerTestOneInput(buf, len);
        inputs++;
    }
    sqz_lsh_destroy(scratch);
    printf("fuzz_tokens: %zu inputs, 0 crashes\n", inputs);
    return 0;
}
#endif /* SQZ_LIBFUZZER */
