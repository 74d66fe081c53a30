/* Unit tests of the "lossless" compressor (plugins/lossless/sqz_lossless.c): exact round trip bit
 * for bit, error feedback (residual zeroed), finiteness contract, payload bounds and modes,
 * validate-only decoding, malformed payloads, the reduce-scatter exchange's bit-identical result,
 * and the compression claims (zero runs, random floats, fp16-like values).  Prints GB/s. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <squeeze/compressor_v1.h>

#include "sqz_param.h"
#include "sqz_test.h"

extern const sqz_compressor_v1_t sqz_compressor_lossless;

static const sqz_compressor_v1_t *const C = &sqz_compressor_lossless;

typedef struct inst {
    void *config;
    void *state;
} inst_t;

static inst_t make(const char *const *kv)
{
    inst_t it = {NULL, NULL};
    char err[256] = "";
    const sqz_compressor_env_v1_t env = {.size = sizeof env, .rank = 0, .nranks = 1, .seed = 7};
    REQUIRE(sqz_plugin_config_make(C, kv, &it.config, err, sizeof err) == SQZ_OK);
    REQUIRE(C->create(it.config, &env, &it.state) == SQZ_OK);
    return it;
}

static void unmake(inst_t *it)
{
    C->destroy(it->state);
    free(it->config);
}

/* ---- data ---------------------------------------------------------------------------------- */

static uint64_t rng_s = 0x1234567887654321ull;

static uint64_t rnd64(void)
{
    uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rnd_unit(void)
{
    return (double)(rnd64() >> 11) * 0x1p-53;
}

static float rnd_gauss(void)
{
    const double u = rnd_unit() + 1e-300, v = rnd_unit();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* Rounds x to the nearest value representable in IEEE fp16 (normal range; tiny values flush to
 * zero), as a gradient computed in fp16 and promoted to float. */
static float to_fp16_grid(float x)
{
    if (fabsf(x) < 0x1p-14f) {
        return 0.0f;
    }
    const int e = ilogbf(x);
    const float q = ldexpf(1.0f, e - 10);
    return rintf(x / q) * q;
}

enum { DATA_GAUSS, DATA_SPARSE90, DATA_FP16, DATA_SPECIAL, DATA_RANDBITS, DATA_ZERO, NDATA };
static const char *const data_name[NDATA] = {"gauss",   "90%-zeros", "fp16-like",
                                             "special", "randbits",  "zeros"};

static void fill(float *x, size_t n, int kind)
{
    static const float special[] = {-0.0f, 0.0f, 1e-45f, -1e-45f, 0x1p-127f, -0x1.fffffcp-127f,
                                    FLT_MIN, -FLT_MIN, FLT_MAX, -FLT_MAX, 1e38f, -3e37f, 1.0f,
                                    -1.0f, 0x1.000002p0f, 0x1p-149f};
    const size_t ns = sizeof special / sizeof special[0];
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case DATA_GAUSS:
            x[i] = rnd_gauss() * 1e-3f;
            break;
        case DATA_SPARSE90:
            /* Long zero runs (about 90 % of the elements) between short dense stretches. */
            if (run == 0) {
                run = (size_t)(rnd64() % 2000) + 1;
                if (rnd64() % 10 != 0) {
                    run |= (size_t)1 << 62; /* a zero run */
                }
            }
            x[i] = (run >> 62) ? 0.0f : rnd_gauss() * 1e-2f;
            if (((run - 1) & (((size_t)1 << 62) - 1)) == 0) {
                run = 0;
            } else {
                run--;
            }
            break;
        case DATA_FP16:
            x[i] = to_fp16_grid(rnd_gauss() * 1e-2f);
            break;
        case DATA_SPECIAL:
            x[i] = (rnd64() & 1) ? special[rnd64() % ns] : rnd_gauss() * 1e30f;
            break;
        case DATA_RANDBITS: {
            /* Random bit patterns with the exponent kept finite. */
            uint32_t u = (uint32_t)rnd64();
            if ((u & 0x7f800000u) == 0x7f800000u) {
                u &= ~0x00800000u;
            }
            memcpy(&x[i], &u, sizeof u);
            break;
        }
        default:
            x[i] = 0.0f;
            break;
        }
    }
}

static uint32_t sqz_test_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Stores the float with bits u little-endian at p (the wire order). */
static void sqz_test_store_bits(uint8_t *p, uint32_t u)
{
    for (int k = 0; k < 4; k++) {
        p[k] = (uint8_t)(u >> (8 * k));
    }
}

static int bits_equal(const float *a, const float *b, size_t n)
{
    return n == 0 || memcmp(a, b, n * sizeof *a) == 0;
}

static void fill_neg0(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = -0.0f;
    }
}

/* ---- property tests ------------------------------------------------------------------------ */

static const size_t sizes[] = {1, 7, 1000, 65536, 100003};
#define NSIZES (sizeof sizes / sizeof sizes[0])

typedef struct cfgdef {
    const char *name;
    const char *kv[3];
    int         shuffle;
} cfgdef_t;

static const cfgdef_t cfgs[] = {
    {"default", {NULL}, 1},
    {"noshuffle", {"LOSSLESS_SHUFFLE=0", NULL}, 0},
    {"level-3", {"LOSSLESS_LEVEL=-3", NULL}, 1},
    {"level-7 noshuffle", {"LOSSLESS_LEVEL=-7", "LOSSLESS_SHUFFLE=0", NULL}, 0},
    {"level19", {"LOSSLESS_LEVEL=19", NULL}, 1},
};
#define NCFGS (sizeof cfgs / sizeof cfgs[0])

static sqz_status_t do_compress(const inst_t *it, const float *in, float *res, size_t n,
                                void *payload, size_t cap, size_t *bytes)
{
    sqz_compress_args_v1_t a = {.size = sizeof a, .in = in, .residual = res, .n = n, .seq = 3,
                                .stage = 0, .payload = payload, .capacity = cap};
    const sqz_status_t st = C->compress(it->state, &a);
    *bytes = a.payload_bytes;
    if (st == SQZ_OK) {
        CHECK(a.norm2_err == 0.0);
        CHECK(a.norm2_in >= 0.0);
    }
    return st;
}

/* Decoding a malformed payload must fail and leave out as it was. */
static void expect_corrupt(const inst_t *it, const void *p, size_t bytes, size_t n, float *out,
                           float *copy)
{
    memcpy(copy, out, (n ? n : 1) * sizeof *out);
    CHECK_EQ_INT(C->decompress(it->state, p, bytes, NULL, n), SQZ_ERR_CORRUPT);
    CHECK_EQ_INT(C->decompress(it->state, p, bytes, out, n), SQZ_ERR_CORRUPT);
    CHECK(memcmp(copy, out, (n ? n : 1) * sizeof *out) == 0);
}

static void test_properties(void)
{
    const size_t nmax = 100003 + 1;
    float *in = malloc(nmax * sizeof *in);
    float *res = malloc(nmax * sizeof *res);
    float *res_old = malloc(nmax * sizeof *res_old);
    float *a = malloc(nmax * sizeof *a);
    float *out = malloc(nmax * sizeof *out);
    float *copy = malloc(nmax * sizeof *copy);
    REQUIRE(in && res && res_old && a && out && copy);

    for (size_t c = 0; c < NCFGS; c++) {
        inst_t it = make(cfgs[c].kv);
        for (size_t si = 0; si < NSIZES; si++) {
            const size_t n = sizes[si];
            if (c == NCFGS - 1 && n > 65536) {
                continue; /* level 19 is slow: small sizes only */
            }
            const size_t cap = C->max_payload(it.state, n);
            CHECK(cap >= 8 + 4 * n);
            uint8_t *payload = malloc(cap + 64);
            uint8_t *mut = malloc(cap + 64);
            REQUIRE(payload && mut);
            for (int kind = 0; kind < NDATA; kind++) {
                fill(in, n, kind);
                size_t bytes = 0;

                /* Round trip without residual: bit-identical when added into -0.0 (the additive
                 * identity), equal values when added into +0.0. */
                CHECK_EQ_INT(do_compress(&it, in, NULL, n, payload, cap, &bytes), SQZ_OK);
                CHECK(bytes <= cap);
                CHECK(bytes >= 8);
                const int mode = payload[0];
                CHECK(mode == 0 || mode == (cfgs[c].shuffle ? 1 : 2));
                CHECK(mode != 0 || bytes == 8 + 4 * n);
                CHECK(mode == 0 || bytes < 8 + 4 * n);
                fill_neg0(out, n);
                CHECK_EQ_INT(C->decompress(it.state, payload, bytes, out, n), SQZ_OK);
                CHECK_MSG(bits_equal(out, in, n), "%s n=%zu %s", cfgs[c].name, n,
                          data_name[kind]);
                memset(out, 0, n * sizeof *out);
                CHECK_EQ_INT(C->decompress(it.state, payload, bytes, out, n), SQZ_OK);
                size_t diff = 0;
                for (size_t i = 0; i < n; i++) {
                    diff += !(out[i] == in[i]);
                }
                CHECK_EQ_INT(diff, 0);
                /* Validate only: OK and nothing written anywhere (out is not passed). */
                CHECK_EQ_INT(C->decompress(it.state, payload, bytes, NULL, n), SQZ_OK);

                /* Determinism: the same input gives the same bytes. */
                size_t bytes2 = 0;
                CHECK_EQ_INT(do_compress(&it, in, NULL, n, mut, cap, &bytes2), SQZ_OK);
                CHECK(bytes2 == bytes && memcmp(mut, payload, bytes) == 0);

                /* Error feedback: a = in + residual is sent exactly and the residual zeroed. */
                for (size_t i = 0; i < n; i++) {
                    res_old[i] = (kind == DATA_SPECIAL) ? 0.0f : rnd_gauss() * 1e-4f;
                    a[i] = in[i] + res_old[i];
                }
                memcpy(res, res_old, n * sizeof *res);
                CHECK_EQ_INT(do_compress(&it, in, res, n, payload, cap, &bytes), SQZ_OK);
                CHECK(bytes <= cap);
                size_t nz = 0;
                for (size_t i = 0; i < n; i++) {
                    nz += sqz_test_bits(res[i]) != 0;
                }
                CHECK_EQ_INT(nz, 0);
                fill_neg0(out, n);
                CHECK_EQ_INT(C->decompress(it.state, payload, bytes, out, n), SQZ_OK);
                CHECK_MSG(bits_equal(out, a, n), "EF %s n=%zu %s", cfgs[c].name, n,
                          data_name[kind]);
                /* decode + residual_new == in + residual_old, exactly. */
                size_t bad_ef = 0;
                for (size_t i = 0; i < n; i++) {
                    bad_ef += !(out[i] + res[i] == in[i] + res_old[i]);
                }
                CHECK_EQ_INT(bad_ef, 0);

                /* Malformed payloads: out (holding decoded data) must stay untouched. */
                if (kind == DATA_GAUSS || kind == DATA_SPARSE90) {
                    /* The EF payload's own mode (a = in + residual may compress differently). */
                    const int emode = payload[0];
                    const size_t cuts[] = {0, 1, 7, 8, 9, bytes / 2, bytes - 1};
                    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
                        if (cuts[k] < bytes) {
                            expect_corrupt(&it, payload, cuts[k], n, out, copy);
                        }
                    }
                    if (n <= 7) {
                        for (size_t cut = 0; cut < bytes; cut++) {
                            expect_corrupt(&it, payload, cut, n, out, copy);
                        }
                    }
                    memcpy(mut, payload, bytes);
                    for (size_t ext = 1; ext <= 64; ext *= 4) {
                        for (size_t k = 0; k < ext; k++) {
                            mut[bytes + k] = (uint8_t)rnd64();
                        }
                        expect_corrupt(&it, mut, bytes + ext, n, out, copy);
                        memset(mut + bytes, 0, ext);
                        expect_corrupt(&it, mut, bytes + ext, n, out, copy);
                    }
                    /* Header fields. */
                    const uint8_t modes[] = {3, 255, (uint8_t)(emode == 0 ? 1 : 0),
                                             (uint8_t)(emode == 1 ? 2 : 1)};
                    for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
                        memcpy(mut, payload, bytes);
                        mut[0] = modes[k];
                        memcpy(copy, out, n * sizeof *out);
                        const sqz_status_t s = C->decompress(it.state, mut, bytes, out, n);
                        /* Modes 1 and 2 share the frame: swapping them only permutes bytes,
                         * which may still decode; anything else is corrupt. */
                        if (!((emode == 1 && modes[k] == 2) || (emode == 2 && modes[k] == 1))) {
                            CHECK_MSG(s == SQZ_ERR_CORRUPT, "mode %d -> %d n=%zu %s", emode,
                                      modes[k], n, cfgs[c].name);
                            CHECK(memcmp(copy, out, n * sizeof *out) == 0);
                        } else {
                            CHECK(s == SQZ_OK || s == SQZ_ERR_CORRUPT);
                            memcpy(out, copy, n * sizeof *out);
                        }
                    }
                    for (int b = 1; b < 8; b++) {
                        memcpy(mut, payload, bytes);
                        mut[b] ^= (uint8_t)(1u << (rnd64() % 8));
                        expect_corrupt(&it, mut, bytes, n, out, copy);
                    }
                    /* The wrong n. */
                    expect_corrupt(&it, payload, bytes, n + 1, out, copy);
                    expect_corrupt(&it, payload, bytes, n - 1, out, copy);
                    /* Bit flips in the body: OK (a still valid frame) or corrupt, never more;
                     * a rejected one leaves out untouched. */
                    for (int t = 0; t < 32 && bytes > 8; t++) {
                        memcpy(mut, payload, bytes);
                        mut[8 + rnd64() % (bytes - 8)] ^= (uint8_t)(1u << (rnd64() % 8));
                        memcpy(copy, out, n * sizeof *out);
                        const sqz_status_t s = C->decompress(it.state, mut, bytes, NULL, n);
                        CHECK(s == SQZ_OK || s == SQZ_ERR_CORRUPT);
                        const sqz_status_t s2 = C->decompress(it.state, mut, bytes, out, n);
                        CHECK_EQ_INT(s2, s);
                        if (s != SQZ_OK) {
                            CHECK(memcmp(copy, out, n * sizeof *out) == 0);
                        } else {
                            memcpy(out, copy, n * sizeof *out);
                        }
                    }
                    /* A raw payload holding NaN/Inf is not one the compressor makes. */
                    if (emode == 0) {
                        memcpy(mut, payload, bytes);
                        sqz_test_store_bits(mut + 8 + 4 * (n / 2), 0x7fc00000u);
                        expect_corrupt(&it, mut, bytes, n, out, copy);
                        sqz_test_store_bits(mut + 8 + 4 * (n / 2), 0xff800000u);
                        expect_corrupt(&it, mut, bytes, n, out, copy);
                    }
                }

                /* Finiteness: NaN / +-Inf in the input, or an overflowing in + residual. */
                const float bads[] = {NAN, INFINITY, -INFINITY};
                for (size_t b = 0; b < 4; b++) {
                    fill(in, n, kind);
                    for (size_t i = 0; i < n; i++) {
                        res_old[i] = rnd_gauss() * 1e-4f;
                    }
                    const size_t where = (size_t)(rnd64() % n);
                    if (b < 3) {
                        in[where] = bads[b];
                    } else {
                        in[where] = FLT_MAX;
                        res_old[where] = FLT_MAX;
                    }
                    memcpy(res, res_old, n * sizeof *res);
                    CHECK_EQ_INT(do_compress(&it, in, res, n, payload, cap, &bytes),
                                 SQZ_ERR_NONFINITE);
                    CHECK(bits_equal(res, res_old, n));
                    if (b < 3) {
                        CHECK_EQ_INT(do_compress(&it, in, NULL, n, payload, cap, &bytes),
                                     SQZ_ERR_NONFINITE);
                    }
                }
            }
            free(payload);
            free(mut);
        }
        unmake(&it);
    }
    free(in);
    free(res);
    free(res_old);
    free(a);
    free(out);
    free(copy);
}

/* n == 0, capacity checks, configuration bounds, query. */
static void test_edges(void)
{
    inst_t it = make(NULL);
    uint8_t p[256];
    size_t bytes = 0;
    float x = 1.0f;
    CHECK(C->max_payload(it.state, 0) >= 8);
    CHECK_EQ_INT(do_compress(&it, &x, NULL, 0, p, sizeof p, &bytes), SQZ_OK);
    CHECK_EQ_INT(bytes, 8);
    CHECK_EQ_INT(C->decompress(it.state, p, bytes, &x, 0), SQZ_OK);
    CHECK(x == 1.0f);
    CHECK_EQ_INT(C->decompress(it.state, p, 7, &x, 0), SQZ_ERR_CORRUPT);
    CHECK_EQ_INT(C->decompress(it.state, p, 9, &x, 0), SQZ_ERR_CORRUPT);
    CHECK_EQ_INT(C->decompress(it.state, NULL, 0, &x, 0), SQZ_ERR_CORRUPT);
    /* Too small a capacity is the caller's bug, not a payload. */
    CHECK_EQ_INT(do_compress(&it, &x, NULL, 1, p, 8, &bytes), SQZ_ERR_INVALID_PARAM);
    /* n too large for the u32 raw count: declined. */
    sqz_query_v1_t q = {.size = sizeof q, .count = (size_t)1 << 20, .nranks = 4};
    CHECK_EQ_INT(C->query(it.state, &q), SQZ_OK);
    q.count = (size_t)UINT32_MAX;
    q.nranks = 1;
    CHECK_EQ_INT(C->query(it.state, &q), SQZ_ERR_NOT_SUPPORTED);
    q.nranks = 8;
    CHECK_EQ_INT(C->query(it.state, &q), SQZ_OK);
    CHECK(C->max_payload(it.state, (size_t)1 << 30) == SIZE_MAX);
    unmake(&it);

    /* Parameter bounds. */
    const char *const bad1[] = {"LOSSLESS_LEVEL=20", NULL};
    const char *const bad2[] = {"LOSSLESS_LEVEL=-8", NULL};
    const char *const bad3[] = {"LOSSLESS_SHUFFLE=2", NULL};
    const char *const *bads[] = {bad1, bad2, bad3};
    for (size_t k = 0; k < 3; k++) {
        void *cfg = NULL;
        char err[256];
        CHECK_EQ_INT(sqz_plugin_config_make(C, bads[k], &cfg, err, sizeof err),
                     SQZ_ERR_INVALID_PARAM);
        free(cfg);
    }
}

/* The reduce-scatter exchange with P ranks, as src/coll does it: every rank's chunk decoded into
 * a zeroed sum in rank order, the sum compressed again (stage 1) and decoded into zeros by every
 * rank.  The result must be bit-identical to the plain rank-order float sum. */
static void test_reduce_scatter(void)
{
    enum { P = 4 };
    const size_t n = 100003;
    inst_t it[P];
    float *in[P];
    float *res[P];
    float *ref = calloc(n, sizeof *ref);
    float *result = malloc(n * sizeof *result);
    REQUIRE(ref && result);
    for (int r = 0; r < P; r++) {
        it[r] = make(NULL);
        in[r] = malloc(n * sizeof(float));
        res[r] = malloc(n * sizeof(float));
        REQUIRE(in[r] && res[r]);
        fill(in[r], n, r % 2 ? DATA_SPARSE90 : DATA_FP16);
        for (size_t i = 0; i < n; i++) {
            res[r][i] = (i % 3 == 0) ? rnd_gauss() * 1e-5f : 0.0f;
        }
    }
    for (size_t i = 0; i < n; i++) {
        float s = 0.0f;
        for (int r = 0; r < P; r++) {
            s += in[r][i] + res[r][i];
        }
        ref[i] = s;
    }
    const size_t per = (n + P - 1) / P;
    const size_t cap = C->max_payload(it[0].state, per);
    uint8_t *pay[P][P];
    size_t pb[P][P];
    for (int r = 0; r < P; r++) {
        for (int j = 0; j < P; j++) {
            const size_t off = (size_t)j * per, len = off + per < n ? per : n - off;
            pay[r][j] = malloc(cap);
            REQUIRE(pay[r][j]);
            CHECK_EQ_INT(do_compress(&it[r], in[r] + off, res[r] + off, len, pay[r][j], cap,
                                     &pb[r][j]),
                         SQZ_OK);
        }
    }
    uint8_t *red[P];
    size_t rb[P];
    for (int j = 0; j < P; j++) {
        const size_t off = (size_t)j * per, len = off + per < n ? per : n - off;
        float *y = calloc(len, sizeof *y);
        REQUIRE(y);
        for (int s = 0; s < P; s++) {
            CHECK_EQ_INT(C->decompress(it[j].state, pay[s][j], pb[s][j], y, len), SQZ_OK);
        }
        red[j] = malloc(cap);
        REQUIRE(red[j]);
        sqz_compress_args_v1_t a = {.size = sizeof a, .in = y, .residual = NULL, .n = len,
                                    .stage = 1, .payload = red[j], .capacity = cap};
        CHECK_EQ_INT(C->compress(it[j].state, &a), SQZ_OK);
        rb[j] = a.payload_bytes;
        free(y);
    }
    for (int r = 0; r < P; r++) {
        memset(result, 0, n * sizeof *result);
        for (int j = 0; j < P; j++) {
            const size_t off = (size_t)j * per, len = off + per < n ? per : n - off;
            CHECK_EQ_INT(C->decompress(it[r].state, red[j], rb[j], result + off, len), SQZ_OK);
        }
        CHECK(bits_equal(result, ref, n));
    }
    for (int r = 0; r < P; r++) {
        for (int j = 0; j < P; j++) {
            free(pay[r][j]);
        }
        free(red[r]);
        free(in[r]);
        free(res[r]);
        unmake(&it[r]);
    }
    free(ref);
    free(result);
}

/* Compression claims: ratios per data kind, asserted for the zero runs, random floats and
 * fp16-like values. */
static void test_ratios(void)
{
    const size_t n = 1u << 20;
    float *x = malloc(n * sizeof *x);
    REQUIRE(x);
    for (size_t c = 0; c < NCFGS; c++) {
        inst_t it = make(cfgs[c].kv);
        const size_t cap = C->max_payload(it.state, n);
        uint8_t *p = malloc(cap);
        REQUIRE(p);
        printf("ratio (payload / raw, n = 2^20) %-18s", cfgs[c].name);
        for (int kind = 0; kind < NDATA; kind++) {
            if (kind == DATA_SPECIAL) {
                continue;
            }
            fill(x, n, kind);
            size_t bytes = 0;
            CHECK_EQ_INT(do_compress(&it, x, NULL, n, p, cap, &bytes), SQZ_OK);
            const double ratio = (double)bytes / (4.0 * (double)n);
            printf(" %s %.4f", data_name[kind], ratio);
            if (kind == DATA_SPARSE90) {
                CHECK_MSG(ratio < 0.3, "%s: %.4f", cfgs[c].name, ratio);
            }
            if (kind == DATA_RANDBITS) {
                CHECK(bytes <= 8 + 4 * n);
                CHECK_EQ_INT(p[0], 0);
            }
            if (kind == DATA_FP16 && cfgs[c].shuffle) {
                CHECK_MSG(ratio < 0.75, "%s: %.4f", cfgs[c].name, ratio);
            }
        }
        printf("\n");
        free(p);
        unmake(&it);
    }
    free(x);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Throughput on 16M floats (printed, never asserted). */
static void bench(void)
{
    const size_t n = (size_t)16 << 20;
    float *x = malloc(n * sizeof *x);
    float *res = malloc(n * sizeof *res);
    float *out = malloc(n * sizeof *out);
    REQUIRE(x && res && out);
    const char *const l1[] = {NULL};
    const char *const lm3[] = {"LOSSLESS_LEVEL=-3", NULL};
    const char *const *kvs[] = {l1, lm3};
    const char *const names[] = {"level 1", "level -3"};
    const int kinds[] = {DATA_SPARSE90, DATA_FP16, DATA_GAUSS, DATA_RANDBITS, DATA_ZERO};
    for (size_t c = 0; c < 2; c++) {
        inst_t it = make(kvs[c]);
        const size_t cap = C->max_payload(it.state, n);
        uint8_t *p = malloc(cap);
        REQUIRE(p);
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            fill(x, n, kinds[k]);
            memset(out, 0, n * sizeof *out);
            double tc = 1e30, td = 1e30;
            size_t bytes = 0;
            for (int rep = 0; rep < 3; rep++) {
                memset(res, 0, n * sizeof *res);
                double t0 = now();
                CHECK_EQ_INT(do_compress(&it, x, res, n, p, cap, &bytes), SQZ_OK);
                double t1 = now();
                CHECK_EQ_INT(C->decompress(it.state, p, bytes, out, n), SQZ_OK);
                double t2 = now();
                tc = t1 - t0 < tc ? t1 - t0 : tc;
                td = t2 - t1 < td ? t2 - t1 : td;
            }
            const double gb = 4.0 * (double)n / 1e9;
            printf("bench %-8s %-10s ratio %.4f mode %d: compress %.2f GB/s, decode %.2f GB/s, "
                   "compress+decode %.2f GB/s\n",
                   names[c], data_name[kinds[k]], (double)bytes / (4.0 * (double)n), p[0],
                   gb / tc, gb / td, gb / (tc + td));
        }
        free(p);
        unmake(&it);
    }
    free(x);
    free(res);
    free(out);
}

int main(int argc, char **argv)
{
    test_edges();
    test_properties();
    test_reduce_scatter();
    test_ratios();
    if (!(argc > 1 && strcmp(argv[1], "--no-bench") == 0)) {
        bench();
    }
    return sqz_test_result("test_lossless");
}
