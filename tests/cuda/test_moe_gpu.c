/*
 * The GPU token codecs (src/moe/sqz_cuda_moe.h) against the CPU ones (src/moe/sqz_lsh*.c), on a GPU.
 * Exits 77 (skip) when no CUDA device is usable.
 *
 *  - LSH, several widths and sample sizes (with and without a tail after the 16-wide sums):
 *    the GPU's bucket id of every token equals sqz_lsh_hash's on the same block, bit for bit; the
 *    GPU block has the CPU block's size, header and indices exactly, and centroids within 1e-6
 *    relative (they are expected to be bit-identical: the count of differing floats is printed).
 *  - dedup of float32 and 16-bit rows with many duplicates: the GPU block is the CPU block, byte
 *    for byte; rows without duplicates give the same RAW block.
 *  - decode: CPU-encoded blocks decoded on the GPU, and GPU-encoded blocks decoded by the CPU,
 *    equal sqz_tok_decode's output exactly; several blocks (and an empty one) in one call.
 *  - corrupted blocks (magic, index out of range, size, dtype, token count) are rejected: status
 *    1, the destination untouched, the device counter incremented; the good blocks of the same
 *    call are decoded.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include <squeeze.h>

#include "../unit/sqz_test.h"
#include "sqz_cuda_test.h"
#include "sqz_cuda_moe.h"
#include "sqz_lsh.h"

#define NBLK 4

static cudaStream_t g_st;

static void h2d(void *d, const void *h, size_t n)
{
    CU(cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, g_st));
    CU(cudaStreamSynchronize(g_st));
}

static void d2h(void *h, const void *d, size_t n)
{
    CU(cudaMemcpyAsync(h, d, n, cudaMemcpyDeviceToHost, g_st));
    CU(cudaStreamSynchronize(g_st));
}

static size_t round8(size_t x) { return (x + 7) / 8 * 8; }

/* Clustered float tokens: `k` centers, each token a center plus small noise, in random order. */
static void make_clustered(float *x, size_t tokens, size_t width, int k)
{
    float *c = malloc((size_t)k * width * sizeof(float));
    REQUIRE(c);
    fill_random(c, (size_t)k * width, 1.0);
    for (size_t t = 0; t < tokens; t++) {
        const size_t g = (size_t)(rng_u64() % (uint64_t)k);
        for (size_t j = 0; j < width; j++) {
            x[t * width + j] = c[g * width + j] + rng_gauss(0.01) + 3.0f; /* a shared offset */
        }
    }
    free(c);
}

/* Rows drawn from `k` distinct rows (k == 0: all distinct), as raw bytes. */
static void make_dups(unsigned char *x, size_t tokens, size_t rowbytes, int k)
{
    unsigned char *base = malloc((k ? (size_t)k : 1) * rowbytes);
    REQUIRE(base);
    for (size_t i = 0; i < (k ? (size_t)k : 1) * rowbytes; i++) {
        base[i] = (unsigned char)rng_u64();
    }
    for (size_t t = 0; t < tokens; t++) {
        if (k) {
            memcpy(x + t * rowbytes, base + (rng_u64() % (uint64_t)k) * rowbytes, rowbytes);
        } else {
            for (size_t i = 0; i < rowbytes; i++) {
                x[t * rowbytes + i] = (unsigned char)rng_u64();
            }
        }
    }
    free(base);
}

/* Encodes NBLK blocks of the tokens in x (tok[b] tokens each, back to back) on the GPU and
 * returns the blocks on the host (block b at out + off[b], size sz[b]) and the keys. */
static void gpu_encode(const sqz_gpu_lsh_t *glsh, sqz_dtype_t dt, size_t width, const void *x,
                       const size_t *tok, unsigned char *out, size_t *off, uint64_t *sz,
                       uint64_t *rows, uint64_t *keys)
{
    const size_t      es = sqz_tok_esize((int)dt);
    size_t            T = 0, slot = 0;
    sqz_gpu_tok_blk_t b[NBLK];
    for (int i = 0; i < NBLK; i++) {
        T += tok[i];
    }
    unsigned char *dx = dalloc(T * width * es);
    h2d(dx, x, T * width * es);
    for (int i = 0; i < NBLK; i++) {
        off[i] = slot;
        slot += round8(sqz_tok_raw_bytes(tok[i], width, (int)dt));
    }
    unsigned char *dout = dalloc(slot);
    size_t         t0   = 0;
    for (int i = 0; i < NBLK; i++) {
        memset(&b[i], 0, sizeof(b[i]));
        b[i].src    = dx + t0 * width * es;
        b[i].dst    = dout + off[i];
        b[i].tokens = tok[i];
        t0 += tok[i];
    }
    void     *ws    = dalloc(sqz_gpu_tok_plan(b, NBLK, width));
    uint64_t *dmeta = dalloc(2 * NBLK * sizeof(uint64_t));
    uint64_t *dkeys = dalloc(T * sizeof(uint64_t));
    CHECK_EQ_INT(sqz_gpu_tok_encode(glsh, dt, width, b, NBLK, ws, dmeta, dkeys, g_st), SQZ_OK);
    CU(cudaStreamSynchronize(g_st));
    uint64_t meta[2 * NBLK];
    d2h(meta, dmeta, sizeof(meta));
    d2h(out, dout, slot);
    if (keys) {
        d2h(keys, dkeys, T * sizeof(uint64_t));
    }
    for (int i = 0; i < NBLK; i++) {
        sz[i]   = meta[i];
        rows[i] = meta[NBLK + i];
    }
    CU(cudaFree(dx));
    CU(cudaFree(dout));
    CU(cudaFree(ws));
    CU(cudaFree(dmeta));
    CU(cudaFree(dkeys));
}

/* Decodes n blocks on the GPU; \return the status of each, tokens in out (back to back). */
static void gpu_decode(sqz_dtype_t dt, size_t width, int n, const unsigned char *const *blk,
                       const uint64_t *bytes, const size_t *tok, unsigned char *out,
                       uint32_t *status, unsigned long long *corrupt)
{
    const size_t      es = sqz_tok_esize((int)dt);
    size_t            total = 0, T = 0;
    sqz_gpu_tok_blk_t b[NBLK + 4];
    REQUIRE(n <= NBLK + 4);
    for (int i = 0; i < n; i++) {
        total += round8(bytes[i]);
        T += tok[i];
    }
    unsigned char *din  = dalloc(total);
    unsigned char *dout = dalloc(T * width * es);
    h2d(dout, out, T * width * es); /* the sentinel of untouched tokens */
    size_t o = 0, t0 = 0;
    for (int i = 0; i < n; i++) {
        h2d(din + o, blk[i], bytes[i]);
        memset(&b[i], 0, sizeof(b[i]));
        b[i].src    = din + o;
        b[i].dst    = dout + t0 * width * es;
        b[i].tokens = tok[i];
        b[i].bytes  = bytes[i];
        o += round8(bytes[i]);
        t0 += tok[i];
    }
    void               *ws  = dalloc(sqz_gpu_tok_decode_ws(n));
    uint32_t           *dst = dalloc((size_t)n * sizeof(uint32_t));
    unsigned long long *dc  = dalloc(sizeof(*dc));
    CU(cudaMemset(dc, 0, sizeof(*dc)));
    CHECK_EQ_INT(sqz_gpu_tok_decode(dt, width, b, n, ws, dst, dc, g_st), SQZ_OK);
    CU(cudaStreamSynchronize(g_st));
    d2h(out, dout, T * width * es);
    d2h(status, dst, (size_t)n * sizeof(uint32_t));
    d2h(corrupt, dc, sizeof(*dc));
    CU(cudaFree(din));
    CU(cudaFree(dout));
    CU(cudaFree(ws));
    CU(cudaFree(dst));
    CU(cudaFree(dc));
}

/* The GPU block decoded by the CPU, and both blocks decoded on the GPU: all equal the CPU decode
 * of the CPU block. */
static void check_decodes(sqz_dtype_t dt, size_t width, const unsigned char *gblk, uint64_t gsz,
                          const unsigned char *cblk, size_t csz, size_t tokens)
{
    const size_t   es = sqz_tok_esize((int)dt), n = tokens * width * es;
    unsigned char *a = calloc(1, n + 1), *b = calloc(1, n + 1);
    REQUIRE(a && b);
    CHECK_EQ_INT(sqz_tok_decode(gblk, gsz, tokens, width, (int)dt, a), SQZ_OK);
    CHECK_EQ_INT(sqz_tok_decode(cblk, csz, tokens, width, (int)dt, b), SQZ_OK);
    CHECK_MSG(0 == memcmp(a, b, n), "CPU decode of the GPU block differs from the CPU block's");
    /* GPU decode of the CPU block, and of the GPU block */
    const unsigned char *blks[2] = {cblk, gblk};
    const uint64_t       sz[2]   = {csz, gsz};
    const size_t         tk[2]   = {tokens, tokens};
    unsigned char       *g       = calloc(1, 2 * n + 1);
    uint32_t             st[2];
    unsigned long long   corrupt = 0;
    REQUIRE(g);
    gpu_decode(dt, width, 2, blks, sz, tk, g, st, &corrupt);
    CHECK_EQ_INT(st[0], 0);
    CHECK_EQ_INT(st[1], 0);
    CHECK_EQ_INT(corrupt, 0);
    CHECK_MSG(0 == memcmp(g, b, n), "GPU decode of the CPU block differs");
    CHECK_MSG(0 == memcmp(g + n, a, n), "GPU decode of the GPU block differs");
    free(a);
    free(b);
    free(g);
}

static void test_lsh(size_t width, int rot_dim, int hashes, size_t sample)
{
    const size_t tok[NBLK] = {300, 0, 1000, 37};
    size_t       T         = 0;
    for (int i = 0; i < NBLK; i++) {
        T += tok[i];
    }
    sqz_lsh_t *cpu = NULL;
    REQUIRE(SQZ_OK == sqz_lsh_create(width, rot_dim, hashes, sample, 42, &cpu));
    sqz_gpu_lsh_t *glsh = NULL;
    REQUIRE(SQZ_OK == sqz_gpu_lsh_create(cpu, &glsh));
    float *x = malloc(T * width * sizeof(float));
    REQUIRE(x);
    make_clustered(x, T, width, 12);
    unsigned char *out = malloc(NBLK * round8(sqz_tok_raw_bytes(1000, width, 1)));
    size_t         off[NBLK];
    uint64_t       sz[NBLK], rows[NBLK], *keys = malloc(T * sizeof(uint64_t));
    uint64_t      *ckeys = malloc(T * sizeof(uint64_t));
    unsigned char *cblk  = malloc(sqz_tok_raw_bytes(1000, width, 1));
    REQUIRE(out && keys && ckeys && cblk);
    gpu_encode(glsh, SQZ_DTYPE_FLOAT32, width, x, tok, out, off, sz, rows, keys);
    size_t t0 = 0, diffkeys = 0, difffloats = 0;
    for (int i = 0; i < NBLK; i++) {
        const float *xb = x + t0 * width;
        if (0 == tok[i]) {
            CHECK_EQ_INT(sz[i], 0);
            continue;
        }
        sqz_lsh_hash(cpu, xb, tok[i], ckeys);
        for (size_t t = 0; t < tok[i]; t++) {
            diffkeys += ckeys[t] != keys[t0 + t];
        }
        size_t csz = 0;
        CHECK_EQ_INT(sqz_lsh_encode(cpu, xb, tok[i], cblk, &csz, NULL), SQZ_OK);
        const unsigned char *g = out + off[i];
        CHECK_MSG(sz[i] == csz, "lsh block %d: GPU %llu bytes, CPU %zu", i,
                  (unsigned long long)sz[i], csz);
        if (sz[i] == csz) {
            CHECK(0 == memcmp(g, cblk, SQZ_TOKFRAME_HEADER));
            sqz_tok_view_t vg, vc;
            sqz_tok_view(g, &vg);
            sqz_tok_view(cblk, &vc);
            CHECK_EQ_INT(vg.rows, rows[i]);
            if (vc.index) {
                CHECK(0 == memcmp(vg.index, vc.index, tok[i] * vc.iw));
            }
            for (size_t k = 0; k < (size_t)vc.rows * width; k++) {
                float a, b;
                memcpy(&a, vg.rowdata + 4 * k, 4);
                memcpy(&b, vc.rowdata + 4 * k, 4);
                difffloats += memcmp(&a, &b, 4) != 0;
                CHECK_NEAR(a, b, 1e-6 * (fabs(b) + 1.0));
            }
            check_decodes(SQZ_DTYPE_FLOAT32, width, g, sz[i], cblk, csz, tok[i]);
        }
        t0 += tok[i];
    }
    CHECK_MSG(0 == diffkeys, "width %zu: %zu of %zu bucket ids differ from the CPU's", width,
              diffkeys, T);
    printf("lsh width %zu dim %d hashes %d sample %zu: rows", width, rot_dim, hashes, sample);
    for (int i = 0; i < NBLK; i++) {
        printf(" %llu/%zu", (unsigned long long)rows[i], tok[i]);
    }
    printf(", %zu centroid floats not bit-identical\n", difffloats);
    free(x);
    free(out);
    free(keys);
    free(ckeys);
    free(cblk);
    sqz_gpu_lsh_destroy(glsh);
    sqz_lsh_destroy(cpu);
}

static void test_dedup(sqz_dtype_t dt, size_t width, int distinct)
{
    const size_t tok[NBLK] = {500, 3, 0, 2000};
    const size_t es = sqz_tok_esize((int)dt), rowbytes = width * es;
    size_t       T  = 0;
    for (int i = 0; i < NBLK; i++) {
        T += tok[i];
    }
    unsigned char *x = malloc(T * rowbytes);
    REQUIRE(x);
    make_dups(x, T, rowbytes, distinct);
    unsigned char *out  = malloc(NBLK * round8(sqz_tok_raw_bytes(2000, width, (int)dt)));
    unsigned char *cblk = malloc(sqz_tok_raw_bytes(2000, width, (int)dt));
    size_t         off[NBLK];
    uint64_t       sz[NBLK], rows[NBLK];
    sqz_lsh_t     *scratch = NULL;
    REQUIRE(out && cblk && SQZ_OK == sqz_lsh_create(1, 1, 1, 64, 0, &scratch));
    gpu_encode(NULL, dt, width, x, tok, out, off, sz, rows, NULL);
    size_t t0 = 0;
    for (int i = 0; i < NBLK; i++) {
        if (0 == tok[i]) {
            CHECK_EQ_INT(sz[i], 0);
            continue;
        }
        size_t csz = 0;
        CHECK_EQ_INT(sqz_dedup_encode(scratch, x + t0 * rowbytes, tok[i], width, (int)dt, cblk,
                                      &csz),
                     SQZ_OK);
        CHECK_MSG(sz[i] == csz && 0 == memcmp(out + off[i], cblk, csz),
                  "dedup dtype %d width %zu block %d: GPU %llu bytes, CPU %zu, or contents differ",
                  (int)dt, width, i, (unsigned long long)sz[i], csz);
        if (sz[i] == csz) {
            check_decodes(dt, width, out + off[i], sz[i], cblk, csz, tok[i]);
        }
        t0 += tok[i];
    }
    printf("dedup dtype %d width %zu distinct %d: rows", (int)dt, width, distinct);
    for (int i = 0; i < NBLK; i++) {
        printf(" %llu/%zu", (unsigned long long)rows[i], tok[i]);
    }
    printf("\n");
    free(x);
    free(out);
    free(cblk);
    sqz_lsh_destroy(scratch);
}

/* Malformed blocks: each rejected alone, with the good block of the same call decoded. */
static void test_corrupt(void)
{
    const size_t width = 16, tokens = 64, rowbytes = width * 4;
    unsigned char x[64 * 16 * 4], good[24 + 64 * 16 * 4];
    make_dups(x, tokens, rowbytes, 4);
    sqz_lsh_t *scratch = NULL;
    REQUIRE(SQZ_OK == sqz_lsh_create(1, 1, 1, 64, 0, &scratch));
    size_t gsz = 0;
    REQUIRE(SQZ_OK == sqz_dedup_encode(scratch, x, tokens, width, SQZ_DTYPE_FLOAT32, good, &gsz));
    sqz_tok_view_t v;
    sqz_tok_view(good, &v);
    REQUIRE(SQZ_TOKFRAME_ROWS == v.kind && 1 == v.iw);
    enum { NBAD = 6 };
    for (int k = 0; k < NBAD; k++) {
        unsigned char bad[sizeof(good)];
        memcpy(bad, good, gsz);
        uint64_t bsz = gsz;
        size_t   btk = tokens;
        switch (k) {
        case 0: bad[0] ^= 1; break;                              /* magic */
        case 1: bad[gsz - 1] = (unsigned char)v.rows; break;     /* index == rows */
        case 2: bsz = gsz - 1; break;                            /* short */
        case 3: bad[5] = SQZ_DTYPE_FLOAT16; break;               /* dtype */
        case 4: btk = tokens - 1; break;                         /* token count */
        default: bad[6] = 2; break;                              /* index width */
        }
        const unsigned char *blks[2] = {bad, good};
        const uint64_t       sz[2]   = {bsz, gsz};
        const size_t         tk[2]   = {btk, tokens};
        unsigned char        out[2 * sizeof(x)], ref[sizeof(x)];
        memset(out, 0xa5, sizeof(out));
        uint32_t           st[2] = {9, 9};
        unsigned long long corrupt = 0;
        gpu_decode(SQZ_DTYPE_FLOAT32, width, 2, blks, sz, tk, out, st, &corrupt);
        CHECK_MSG(1 == st[0] && 0 == st[1], "corruption %d: status %u %u", k, st[0], st[1]);
        CHECK_EQ_INT(corrupt, 1);
        int untouched = 1;
        for (size_t i = 0; i < btk * rowbytes; i++) {
            untouched &= 0xa5 == out[i];
        }
        CHECK_MSG(untouched, "corruption %d: the malformed block's tokens were written", k);
        CHECK_EQ_INT(sqz_tok_decode(good, gsz, tokens, width, SQZ_DTYPE_FLOAT32, ref), SQZ_OK);
        CHECK(0 == memcmp(out + btk * rowbytes, ref, sizeof(ref)));
        /* the CPU decoder agrees that it is malformed */
        CHECK(SQZ_OK != sqz_tok_decode(bad, bsz, btk, width, SQZ_DTYPE_FLOAT32, NULL));
    }
    sqz_lsh_destroy(scratch);
}

int main(void)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    CU(cudaStreamCreateWithFlags(&g_st, cudaStreamNonBlocking));
    test_lsh(64, 4, 6, 64);
    test_lsh(200, 4, 6, 70);  /* sampled, with a tail after the 16-wide sums */
    test_lsh(24, 8, 4, 0);    /* every coordinate, tail of 8 */
    test_lsh(1024, 4, 6, 64);
    test_dedup(SQZ_DTYPE_FLOAT32, 64, 10);
    test_dedup(SQZ_DTYPE_FLOAT16, 33, 300); /* odd width: rows not 8-byte aligned, 2-byte index */
    test_dedup(SQZ_DTYPE_BFLOAT16, 128, 1);
    test_dedup(SQZ_DTYPE_FLOAT32, 16, 0); /* no duplicates: RAW */
    test_corrupt();
    CU(cudaStreamDestroy(g_st));
    printf("test_moe_gpu: %d checks, %d failures\n", sqz_test_checks, sqz_test_failures);
    return sqz_test_failures ? 1 : 0;
}
