/*
 * Unit tests of the built-in compressors (plugins/{none,topk,quant,sign}): round trips, the
 * error-feedback and finiteness contracts of compressor_v1.h, payload sizes, selection and
 * quantization properties, and decompress's validate-before-write contract.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_test_compressor.h"

/* ---------------------------------------------------------------------------------------------
 * Deterministic test data.
 * ------------------------------------------------------------------------------------------- */
/* ---------------------------------------------------------------------------------------------
 * Methods under test.
 * ------------------------------------------------------------------------------------------- */
typedef enum { KIND_NONE, KIND_TOPK_EXACT, KIND_TOPK_SAMPLED, KIND_QUANT, KIND_SIGN } kind_t;

typedef struct method {
    const char                *label;
    const sqz_compressor_v1_t *c;
    kind_t                     kind;
    const char                *kv[5];
    unsigned                   bits;       /* quant */
    size_t                     bucket;     /* quant */
    int                        stochastic; /* quant */
    int                        l2;         /* sign */
    double                     density;    /* topk */
    size_t                     sbucket;    /* sign: SIGN_BUCKET (0: the whole vector) */
} method_t;

#define QUANT_M(b, rnd, stoch)                                                                   \
    {"quant " #b " " rnd, &sqz_compressor_quant, KIND_QUANT,                                     \
     {"QUANT_BITS=" #b, "QUANT_ROUNDING=" rnd, NULL}, b, 512, stoch, 0, 0.0, 0}

static const method_t methods[] = {
    {"none", &sqz_compressor_none, KIND_NONE, {NULL}, 0, 0, 0, 0, 0.0, 0},
    {"topk exact", &sqz_compressor_topk, KIND_TOPK_EXACT,
     {"TOPK_SELECT=exact", "TOPK_DENSITY=0.05", NULL}, 0, 0, 0, 0, 0.05, 0},
    {"topk exact default", &sqz_compressor_topk, KIND_TOPK_EXACT, {NULL}, 0, 0, 0, 0, 0.01, 0},
    {"topk sampled", &sqz_compressor_topk, KIND_TOPK_SAMPLED,
     {"TOPK_SELECT=sampled", "TOPK_DENSITY=0.05", "TOPK_SAMPLE_RATIO=0.1", NULL}, 0, 0, 0, 0,
     0.05, 0},
    {"topk sampled default", &sqz_compressor_topk, KIND_TOPK_SAMPLED, {"TOPK_SELECT=sampled", NULL},
     0, 0, 0, 0, 0.01, 0},
    QUANT_M(1, "nearest", 0),
    QUANT_M(2, "nearest", 0),
    QUANT_M(3, "nearest", 0),
    QUANT_M(4, "nearest", 0),
    QUANT_M(8, "nearest", 0),
    QUANT_M(1, "stochastic", 1),
    QUANT_M(2, "stochastic", 1),
    QUANT_M(3, "stochastic", 1),
    QUANT_M(4, "stochastic", 1),
    QUANT_M(8, "stochastic", 1),
    {"quant 3 nearest bucket 13", &sqz_compressor_quant, KIND_QUANT,
     {"QUANT_BITS=3", "QUANT_BUCKET=13", NULL}, 3, 13, 0, 0, 0.0, 0},
    {"quant 5 stochastic bucket 100", &sqz_compressor_quant, KIND_QUANT,
     {"QUANT_BITS=5", "QUANT_BUCKET=100", "QUANT_ROUNDING=stochastic", NULL}, 5, 100, 1, 0, 0.0, 0},
    {"quant 2 stochastic bucket 64", &sqz_compressor_quant, KIND_QUANT,
     {"QUANT_BITS=2", "QUANT_BUCKET=64", "QUANT_ROUNDING=stochastic", NULL}, 2, 64, 1, 0, 0.0, 0},
    {"quant 4 nearest bucket 100", &sqz_compressor_quant, KIND_QUANT,
     {"QUANT_BITS=4", "QUANT_BUCKET=100", NULL}, 4, 100, 0, 0, 0.0, 0},
    {"sign l1", &sqz_compressor_sign, KIND_SIGN, {"SIGN_SCALE=l1", NULL}, 0, 0, 0, 0, 0.0, 4096},
    {"sign l2", &sqz_compressor_sign, KIND_SIGN, {"SIGN_SCALE=l2", NULL}, 0, 0, 0, 1, 0.0, 4096},
    {"sign l1 bucket 0", &sqz_compressor_sign, KIND_SIGN, {"SIGN_SCALE=l1", "SIGN_BUCKET=0", NULL},
     0, 0, 0, 0, 0.0, 0},
    {"sign l2 bucket 0", &sqz_compressor_sign, KIND_SIGN, {"SIGN_SCALE=l2", "SIGN_BUCKET=0", NULL},
     0, 0, 0, 1, 0.0, 0},
    {"sign l1 bucket 64", &sqz_compressor_sign, KIND_SIGN, {"SIGN_BUCKET=64", NULL}, 0, 0, 0, 0,
     0.0, 64},
    {"sign l2 bucket 200", &sqz_compressor_sign, KIND_SIGN,
     {"SIGN_SCALE=l2", "SIGN_BUCKET=200", NULL}, 0, 0, 0, 1, 0.0, 200},
};
#define NMETHODS (sizeof methods / sizeof methods[0])

static const size_t sizes[] = {1, 7, 1000, 100003};
#define NSIZES (sizeof sizes / sizeof sizes[0])

typedef struct inst {
    const method_t *m;
    void           *config;
    void           *state;
} inst_t;

static inst_t inst_create(const method_t *m)
{
    inst_t it = {m, NULL, NULL};
    char err[256] = "";
    const sqz_status_t st = sqz_plugin_config_make(m->c, m->kv, &it.config, err, sizeof err);
    CHECK_MSG(st == SQZ_OK, "%s: config: %s", m->label, err);
    REQUIRE(st == SQZ_OK);
    const sqz_compressor_env_v1_t env = {sizeof env, 0, 1, 1234};
    REQUIRE(m->c->create(it.config, &env, &it.state) == SQZ_OK);
    return it;
}

static void inst_destroy(inst_t *it)
{
    it->m->c->destroy(it->state);
    free(it->config);
}

/* The harness's view of an instance (sqz_test_compressor.h). */
static sqz_tc_t tc_of(const inst_t *it)
{
    const sqz_tc_t t = {it->m->c, it->m->label, it->config, it->state};
    return t;
}

/* Compresses at stage 0 into a fresh payload with a canary (sqz_tc_compress). */
static sqz_status_t do_compress(inst_t *it, const float *in, float *residual, size_t n,
                                uint64_t seq, uint8_t **payload, sqz_compress_args_v1_t *out_args)
{
    const sqz_tc_t t = tc_of(it);
    return sqz_tc_compress(&t, in, residual, n, seq, 0, NULL, payload, out_args);
}

static void check_rejects(inst_t *it, const uint8_t *payload, size_t bytes, size_t n,
                          const char *what)
{
    const sqz_tc_t t = tc_of(it);
    sqz_tc_check_rejects(&t, payload, bytes, n, what);
}

static size_t topk_k(double density, size_t n)
{
    size_t k = (size_t)ceil(density * (double)n);
    k = k < 1 ? 1 : k;
    return k < n ? k : n;
}

/* Expected payload size of quant and sign (deterministic functions of n). */
static size_t expected_bytes(const method_t *m, size_t n)
{
    switch (m->kind) {
    case KIND_NONE:
        return 4 * n;
    case KIND_QUANT:
        return 8 * ((n + m->bucket - 1) / m->bucket) + (n * m->bits + 7) / 8;
    case KIND_SIGN: {
        const size_t B = m->sbucket ? m->sbucket : (n ? n : 1);
        return 4 * ((n + B - 1) / B) + (n + 7) / 8;
    }
    default:
        return 0;
    }
}

static float le_f32(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                 ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t le_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* Finiteness contract: after SQZ_ERR_NONFINITE the residual holds its old values, exactly for
 * compressors that check finiteness before writing (none), up to float rounding for those that
 * restore the buckets they already updated (residual = residual_new + decoded - in): a few ulps
 * relative to max |a| over the finite elements. */
static int residual_restored(const method_t *m, const float *in, const float *res,
                             const float *res_old, size_t n)
{
    if (m->kind == KIND_NONE) {
        return memcmp(res, res_old, n * sizeof *res) == 0;
    }
    return sqz_tc_residual_restored(in, res, res_old, n);
}

/* ---------------------------------------------------------------------------------------------
 * Generic contract tests: every method, every size.
 * ------------------------------------------------------------------------------------------- */
static void test_generic(const method_t *m, size_t n)
{
    inst_t it = inst_create(m);
    float *in = alloc_floats(n);
    float *res_old = alloc_floats(n);
    float *res = alloc_floats(n);
    float *dec = alloc_floats(n);
    fill_random(in, n, 1.0);
    fill_random(res_old, n, 0.1);
    memcpy(res, res_old, n * sizeof *res);

    uint8_t *payload;
    sqz_compress_args_v1_t args;
    REQUIRE(do_compress(&it, in, res, n, 7, &payload, &args) == SQZ_OK);
    const size_t bytes = args.payload_bytes;
    if (m->kind == KIND_NONE || m->kind == KIND_QUANT || m->kind == KIND_SIGN) {
        CHECK_MSG(bytes == expected_bytes(m, n), "%s n=%zu: %zu bytes, expected %zu", m->label,
                  n, bytes, expected_bytes(m, n));
    } else {
        const size_t cnt = le_u32(payload);
        CHECK_MSG(bytes == 4 + 8 * cnt, "%s n=%zu: %zu bytes for %zu entries", m->label, n, bytes,
                  cnt);
        CHECK(cnt <= topk_k(m->density, n));
    }

    /* Round trip into zeros. */
    memset(dec, 0, n * sizeof *dec);
    CHECK_EQ_INT(m->c->decompress(it.state, payload, bytes, dec, n), SQZ_OK);
    CHECK_EQ_INT(m->c->decompress(it.state, payload, bytes, NULL, n), SQZ_OK);

    /* Error feedback: decode + new residual == in + old residual, up to a few roundings. */
    double maxabs = 0.0, norm2_in = 0.0, norm2_err = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double a = (double)(in[i] + res_old[i]);
        maxabs = fmax(maxabs, fabs(a));
        norm2_in += a * a;
        norm2_err += (a - dec[i]) * (a - dec[i]);
    }
    const double tol = 4.0 * FLT_EPSILON * (maxabs + 1e-30) * 2.0;
    size_t ef_bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double a = (double)(in[i] + res_old[i]);
        ef_bad += !(fabs((double)dec[i] + (double)res[i] - a) <= tol);
    }
    CHECK_MSG(ef_bad == 0, "%s n=%zu: error feedback broken at %zu elements", m->label, n, ef_bad);
    CHECK_NEAR(args.norm2_in, norm2_in, 1e-5 * norm2_in + 1e-30);
    CHECK_NEAR(args.norm2_err, norm2_err, 1e-4 * norm2_in + 1e-20);

    /* Determinism: the same call gives the same payload. */
    {
        uint8_t *p2;
        sqz_compress_args_v1_t a2;
        memcpy(res, res_old, n * sizeof *res);
        REQUIRE(do_compress(&it, in, res, n, 7, &p2, &a2) == SQZ_OK);
        CHECK(a2.payload_bytes == bytes && memcmp(p2, payload, bytes) == 0);
        free(p2);
    }
    /* No error feedback: residual NULL is accepted. */
    {
        uint8_t *p3;
        sqz_compress_args_v1_t a3;
        CHECK_EQ_INT(do_compress(&it, in, NULL, n, 8, &p3, &a3), SQZ_OK);
        CHECK_EQ_INT(m->c->decompress(it.state, p3, a3.payload_bytes, NULL, n), SQZ_OK);
        free(p3);
    }

    /* Truncated and extended payloads are rejected without writing. */
    if (bytes > 0) {
        check_rejects(&it, payload, bytes - 1, n, "truncated");
    }
    {
        uint8_t *ext = malloc(bytes + 1);
        REQUIRE(ext != NULL);
        memcpy(ext, payload, bytes);
        ext[bytes] = 0;
        check_rejects(&it, ext, bytes + 1, n, "extended");
        free(ext);
    }

    /* Finiteness: a NaN or an Inf anywhere gives SQZ_ERR_NONFINITE and an untouched residual. */
    const float bad_vals[3] = {NAN, INFINITY, -INFINITY};
    const size_t bad_pos[3] = {0, n / 2, n - 1};
    for (int v = 0; v < 3; v++) {
        for (int pidx = 0; pidx < 3; pidx++) {
            float *in2 = alloc_floats(n);
            memcpy(in2, in, n * sizeof *in2);
            in2[bad_pos[pidx]] = bad_vals[v];
            memcpy(res, res_old, n * sizeof *res);
            uint8_t *p4;
            sqz_compress_args_v1_t a4;
            CHECK_EQ_INT(do_compress(&it, in2, res, n, 9, &p4, &a4), SQZ_ERR_NONFINITE);
            CHECK_MSG(residual_restored(m, in, res, res_old, n),
                      "%s n=%zu: residual not restored on non-finite input", m->label, n);
            free(p4);
            CHECK_EQ_INT(do_compress(&it, in2, NULL, n, 9, &p4, &a4), SQZ_ERR_NONFINITE);
            free(p4);
            free(in2);
        }
    }
    /* A finite in whose sum with the residual overflows is non-finite too. */
    if (n > 0) {
        float *in3 = alloc_floats(n);
        float *r3 = alloc_floats(n);
        float *r3_old = alloc_floats(n);
        memcpy(in3, in, n * sizeof *in3);
        memcpy(r3, res_old, n * sizeof *r3);
        in3[n - 1] = FLT_MAX;
        r3[n - 1] = FLT_MAX;
        memcpy(r3_old, r3, n * sizeof *r3);
        uint8_t *p5;
        sqz_compress_args_v1_t a5;
        CHECK_EQ_INT(do_compress(&it, in3, r3, n, 10, &p5, &a5), SQZ_ERR_NONFINITE);
        CHECK(residual_restored(m, in3, r3, r3_old, n));
        free(p5);
        free(in3);
        free(r3);
        free(r3_old);
    }

    free(payload);
    free(in);
    free(res_old);
    free(res);
    free(dec);
    inst_destroy(&it);
}

/* ---------------------------------------------------------------------------------------------
 * Method-specific properties.
 * ------------------------------------------------------------------------------------------- */
typedef struct idx_val {
    size_t i;
    float  v;
} idx_val_t;

static int cmp_idx_val(const void *pa, const void *pb)
{
    const idx_val_t *a = (const idx_val_t *)pa, *b = (const idx_val_t *)pb;
    const float x = fabsf(a->v), y = fabsf(b->v);
    if (x != y) {
        return x > y ? -1 : 1;
    }
    return a->i < b->i ? -1 : (a->i > b->i);
}

static void test_topk_exact(size_t n, double density)
{
    const method_t *m = NULL;
    for (size_t j = 0; j < NMETHODS; j++) {
        if (methods[j].kind == KIND_TOPK_EXACT && methods[j].density == density) {
            m = &methods[j];
        }
    }
    REQUIRE(m != NULL);
    inst_t it = inst_create(m);
    const size_t k = topk_k(density, n);

    /* Distinct magnitudes in a random order, so the top k is unique. */
    float *in = alloc_floats(n);
    float *res = alloc_floats(n);
    idx_val_t *ref = malloc(n * sizeof *ref);
    REQUIRE(ref != NULL);
    for (size_t i = 0; i < n; i++) {
        in[i] = (float)(i + 1) * ((rng_u64() & 1) ? 1.0f : -1.0f);
    }
    for (size_t i = n; i > 1; i--) {
        const size_t j = (size_t)(rng_u64() % i);
        const float t = in[i - 1];
        in[i - 1] = in[j];
        in[j] = t;
    }
    memset(res, 0, n * sizeof *res);
    for (size_t i = 0; i < n; i++) {
        ref[i].i = i;
        ref[i].v = in[i];
    }
    qsort(ref, n, sizeof *ref, cmp_idx_val);
    char *want = calloc(n, 1);
    REQUIRE(want != NULL);
    for (size_t j = 0; j < k; j++) {
        want[ref[j].i] = 1;
    }

    uint8_t *payload;
    sqz_compress_args_v1_t args;
    REQUIRE(do_compress(&it, in, res, n, 1, &payload, &args) == SQZ_OK);
    const size_t cnt = le_u32(payload);
    CHECK_EQ_INT(cnt, k);
    CHECK_EQ_INT(args.payload_bytes, 4 + 8 * k);
    size_t wrong = 0;
    for (size_t j = 0; j < cnt && j < k; j++) {
        const uint32_t ix = le_u32(payload + 4 + 4 * j);
        const float v = le_f32(payload + 4 + 4 * cnt + 4 * j);
        wrong += ix >= n || !want[ix] || v != in[ix] || res[ix] != 0.0f;
    }
    CHECK_MSG(wrong == 0, "topk exact n=%zu: %zu wrong entries", n, wrong);
    /* Unselected entries stay in the residual exactly. */
    size_t res_bad = 0;
    for (size_t i = 0; i < n; i++) {
        res_bad += !want[i] && res[i] != in[i];
    }
    CHECK_EQ_INT(res_bad, 0);
    /* 64 bits per kept element plus the count. */
    CHECK(args.payload_bytes * 8 == 32 + 64 * k);
    free(payload);

    /* Ties: all magnitudes equal -> exactly k, the lowest indices. */
    for (size_t i = 0; i < n; i++) {
        in[i] = (i & 1) ? -0.5f : 0.5f;
    }
    REQUIRE(do_compress(&it, in, NULL, n, 2, &payload, &args) == SQZ_OK);
    CHECK_EQ_INT(le_u32(payload), k);
    size_t tie_bad = 0;
    for (size_t j = 0; j < k; j++) {
        tie_bad += le_u32(payload + 4 + 4 * j) != j;
    }
    CHECK_EQ_INT(tie_bad, 0);
    free(payload);

    free(want);
    free(ref);
    free(in);
    free(res);
    inst_destroy(&it);
}

/* Exact top-k on layouts that defeat the compressor's strided pre-sample (its bound only sets
 * the work, never the result): spikes on every pstride-th element (the pre-sample sees only
 * them, so too few candidates pass the first bound and a second collection runs), one dense
 * block of large values, and few distinct magnitudes (the candidate buffer overflows and is
 * compacted).  Checked against a sort, with error feedback (residual holds the rest exactly). */
static void test_topk_exact_layouts(double density)
{
    const method_t *m = NULL;
    for (size_t j = 0; j < NMETHODS; j++) {
        if (methods[j].kind == KIND_TOPK_EXACT && methods[j].density == density) {
            m = &methods[j];
        }
    }
    REQUIRE(m != NULL);
    const size_t n = 300007;
    const size_t k = topk_k(density, n);
    const size_t pstride = n / 16384;
    inst_t it = inst_create(m);
    float *in = alloc_floats(n);
    float *res = alloc_floats(n);
    float *res_old = alloc_floats(n);
    idx_val_t *ref = malloc(n * sizeof *ref);
    char *want = malloc(n);
    REQUIRE(ref != NULL && want != NULL);
    for (int layout = 0; layout < 4; layout++) {
        for (size_t i = 0; i < n; i++) {
            const float u = (float)rng_unif() - 0.5f;
            switch (layout) {
            case 0: /* spikes exactly where the pre-sample looks */
                in[i] = (i % pstride == 0) ? 100.0f + (float)(i % 977) : u;
                break;
            case 1: /* the large values in one block */
                in[i] = (i >= n / 3 && i < n / 3 + 2 * k) ? 50.0f * u + (u < 0 ? -10.0f : 10.0f)
                                                         : u;
                break;
            case 2: /* four magnitudes: many ties */
                in[i] = (float)(1 + (int)(rng_unif() * 4.0)) * (u < 0 ? -0.25f : 0.25f);
                break;
            default: /* growing magnitudes: the bound is too low at the start */
                in[i] = (float)i * 1e-3f * (u < 0 ? -1.0f : 1.0f);
                break;
            }
            res_old[i] = layout == 2 ? 0.0f : 0.01f * ((float)rng_unif() - 0.5f);
        }
        memcpy(res, res_old, n * sizeof *res);
        for (size_t i = 0; i < n; i++) {
            ref[i].i = i;
            ref[i].v = in[i] + res_old[i];
        }
        qsort(ref, n, sizeof *ref, cmp_idx_val);
        memset(want, 0, n);
        for (size_t j = 0; j < k; j++) {
            want[ref[j].i] = 1;
        }
        uint8_t *payload;
        sqz_compress_args_v1_t args;
        REQUIRE(do_compress(&it, in, res, n, (uint64_t)layout, &payload, &args) == SQZ_OK);
        const size_t cnt = le_u32(payload);
        CHECK_EQ_INT(cnt, k);
        size_t wrong = 0, res_bad = 0;
        for (size_t j = 0; j < cnt && j < k; j++) {
            const uint32_t ix = le_u32(payload + 4 + 4 * j);
            const float v = le_f32(payload + 4 + 4 * cnt + 4 * j);
            wrong += ix >= n || !want[ix] || v != in[ix] + res_old[ix] || res[ix] != 0.0f ||
                     (j > 0 && ix <= le_u32(payload + 4 * j));
        }
        for (size_t i = 0; i < n; i++) {
            res_bad += !want[i] && res[i] != in[i] + res_old[i];
        }
        CHECK_MSG(wrong == 0, "topk exact layout %d: %zu wrong entries", layout, wrong);
        CHECK_MSG(res_bad == 0, "topk exact layout %d: %zu residual entries off", layout,
                  res_bad);
        free(payload);

        /* A NaN late in the vector: the residual comes back (up to rounding). */
        memcpy(res, res_old, n * sizeof *res);
        const float keep = in[n - 100];
        in[n - 100] = NAN;
        CHECK_EQ_INT(do_compress(&it, in, res, n, 9, &payload, &args), SQZ_ERR_NONFINITE);
        in[n - 100] = keep;
        CHECK_MSG(residual_restored(m, in, res, res_old, n),
                  "topk exact layout %d: residual not restored on NaN", layout);
        free(payload);
    }
    free(want);
    free(ref);
    free(in);
    free(res);
    free(res_old);
    inst_destroy(&it);
}

static void test_topk_sampled(const method_t *m, size_t n)
{
    inst_t it = inst_create(m);
    const size_t k = topk_k(m->density, n);
    float *in = alloc_floats(n);
    float *res = alloc_floats(n);
    fill_random(in, n, 1.0);
    memset(res, 0, n * sizeof *res);
    for (uint64_t seq = 0; seq < 5; seq++) {
        uint8_t *payload;
        sqz_compress_args_v1_t args;
        memset(res, 0, n * sizeof *res);
        REQUIRE(do_compress(&it, in, res, n, seq, &payload, &args) == SQZ_OK);
        const size_t cnt = le_u32(payload);
        CHECK_MSG(cnt <= k && cnt >= 1, "%s n=%zu: %zu entries for k=%zu", m->label, n, cnt, k);
        if (n >= 1000) {
            CHECK_MSG(cnt >= k / 2, "%s n=%zu: only %zu entries for k=%zu", m->label, n, cnt, k);
        }
        size_t bad = 0;
        for (size_t j = 0; j < cnt; j++) {
            const uint32_t ix = le_u32(payload + 4 + 4 * j);
            const float v = le_f32(payload + 4 + 4 * cnt + 4 * j);
            bad += ix >= n || v != in[ix] || res[ix] != 0.0f ||
                   (j > 0 && ix <= le_u32(payload + 4 * j));
        }
        CHECK_MSG(bad == 0, "%s n=%zu: %zu bad entries", m->label, n, bad);
        free(payload);
    }
    free(in);
    free(res);
    inst_destroy(&it);
}

static void test_quant_nearest(const method_t *m, size_t n)
{
    inst_t it = inst_create(m);
    float *in = alloc_floats(n);
    float *dec = alloc_floats(n);
    fill_random(in, n, 3.0);
    uint8_t *payload;
    sqz_compress_args_v1_t args;
    REQUIRE(do_compress(&it, in, NULL, n, 3, &payload, &args) == SQZ_OK);
    memset(dec, 0, n * sizeof *dec);
    REQUIRE(m->c->decompress(it.state, payload, args.payload_bytes, dec, n) == SQZ_OK);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t b = i / m->bucket;
        const float mn = le_f32(payload + 8 * b);
        const float unit = le_f32(payload + 8 * b + 4);
        const double tol = 0.5 * unit * (1.0 + 1e-5) + 4.0 * FLT_EPSILON * 16.0;
        bad += !(fabs((double)dec[i] - in[i]) <= tol) || !(dec[i] >= mn - 1e-6f) ||
               !(unit >= 0.0f);
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu elements off by more than unit/2", m->label, n, bad);
    if (m->bits == 4 && m->bucket == 512 && n >= 1000) {
        const double bpe = 8.0 * (double)args.payload_bytes / (double)n;
        /* 4 code bits + 64 metadata bits per 512 elements = 4.125. */
        CHECK_MSG(bpe <= 4.0 + 64.0 / 512.0 + 0.01, "quant 4/512: %.4f bits/elem", bpe);
    }
    free(payload);
    free(in);
    free(dec);
    inst_destroy(&it);
}

/* Constant buckets decode exactly. */
static void test_quant_constant(const method_t *m)
{
    inst_t it = inst_create(m);
    const size_t n = 1000;
    float *in = alloc_floats(n);
    float *dec = alloc_floats(n);
    float *res = alloc_floats(n);
    for (size_t i = 0; i < n; i++) {
        in[i] = -2.75f;
    }
    memset(res, 0, n * sizeof *res);
    uint8_t *payload;
    sqz_compress_args_v1_t args;
    REQUIRE(do_compress(&it, in, res, n, 3, &payload, &args) == SQZ_OK);
    memset(dec, 0, n * sizeof *dec);
    REQUIRE(m->c->decompress(it.state, payload, args.payload_bytes, dec, n) == SQZ_OK);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad += dec[i] != -2.75f || res[i] != 0.0f;
    }
    CHECK_MSG(bad == 0, "%s: constant input not exact (%zu)", m->label, bad);
    free(payload);
    free(in);
    free(dec);
    free(res);
    inst_destroy(&it);
}

static void test_quant_stochastic(const method_t *m)
{
    inst_t it = inst_create(m);
    const size_t n = 1000;
    const int trials = 2000;
    float *in = alloc_floats(n);
    float *dec = alloc_floats(n);
    double *sum = calloc(n, sizeof *sum);
    REQUIRE(sum != NULL);
    fill_random(in, n, 1.0);
    uint8_t *first = NULL;
    size_t first_bytes = 0;
    int differs = 0;
    for (int t = 0; t < trials; t++) {
        uint8_t *payload;
        sqz_compress_args_v1_t args;
        REQUIRE(do_compress(&it, in, NULL, n, (uint64_t)t, &payload, &args) == SQZ_OK);
        memset(dec, 0, n * sizeof *dec);
        REQUIRE(m->c->decompress(it.state, payload, args.payload_bytes, dec, n) == SQZ_OK);
        for (size_t i = 0; i < n; i++) {
            sum[i] += dec[i];
        }
        if (first == NULL) {
            first = payload;
            first_bytes = args.payload_bytes;
        } else {
            differs |= memcmp(first, payload, first_bytes) != 0;
            free(payload);
        }
    }
    CHECK_MSG(differs, "%s: stochastic rounding does not depend on seq", m->label);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double unit = le_f32(first + 8 * (i / m->bucket) + 4);
        const double mean = sum[i] / trials;
        bad += !(fabs(mean - in[i]) <= 4.0 * unit / sqrt((double)trials) + 1e-6);
    }
    CHECK_MSG(bad == 0, "%s: biased at %zu elements", m->label, bad);
    free(first);
    free(sum);
    free(in);
    free(dec);
    inst_destroy(&it);
}

static void test_sign(const method_t *m, size_t n)
{
    inst_t it = inst_create(m);
    float *in = alloc_floats(n);
    float *dec = alloc_floats(n);
    fill_random(in, n, 2.0);
    if (n > 2) {
        in[1] = 0.0f; /* zero maps to +scale */
    }
    uint8_t *payload;
    sqz_compress_args_v1_t args;
    REQUIRE(do_compress(&it, in, NULL, n, 3, &payload, &args) == SQZ_OK);
    memset(dec, 0, n * sizeof *dec);
    REQUIRE(m->c->decompress(it.state, payload, args.payload_bytes, dec, n) == SQZ_OK);
    const size_t B = m->sbucket ? m->sbucket : n;
    const size_t nb = (n + B - 1) / B;
    size_t bad = 0, bad_scale = 0;
    for (size_t k = 0; k < nb; k++) {
        const float scale = le_f32(payload + 4 * k);
        const size_t e = (k + 1) * B < n ? (k + 1) * B : n;
        double l1 = 0.0, l2 = 0.0;
        for (size_t i = k * B; i < e; i++) {
            l1 += fabs(in[i]);
            l2 += (double)in[i] * in[i];
            bad += dec[i] != (in[i] >= 0.0f ? scale : -scale);
        }
        const double cnt = (double)(e - k * B);
        const double want = m->l2 ? sqrt(l2 / cnt) : l1 / cnt;
        bad_scale += !(fabs(scale - want) <= 1e-5 * want);
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu wrong signs", m->label, n, bad);
    CHECK_MSG(bad_scale == 0, "%s n=%zu: %zu wrong scales", m->label, n, bad_scale);
    if (n >= 1000) {
        const double bpe = 8.0 * (double)args.payload_bytes / (double)n;
        /* One bit per element plus a 32-bit scale per bucket and the last byte's padding. */
        CHECK_MSG(bpe <= 1.0 + (32.0 * (double)nb + 7.0) / (double)n, "%s: %.4f bits/elem",
                  m->label, bpe);
    }
    free(payload);
    free(in);
    free(dec);
    inst_destroy(&it);
}

/* Malformed payloads specific to each format. */
static void store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void store_f32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    store_u32(p, u);
}

static void test_corrupt_fields(void)
{
    const size_t n = 1000;
    float *in = alloc_floats(n);
    fill_random(in, n, 1.0);
    for (size_t j = 0; j < NMETHODS; j++) {
        const method_t *m = &methods[j];
        inst_t it = inst_create(m);
        uint8_t *payload;
        sqz_compress_args_v1_t args;
        REQUIRE(do_compress(&it, in, NULL, n, 5, &payload, &args) == SQZ_OK);
        const size_t bytes = args.payload_bytes;
        uint8_t *p = malloc(bytes);
        REQUIRE(p != NULL);
        switch (m->kind) {
        case KIND_TOPK_EXACT:
        case KIND_TOPK_SAMPLED: {
            const size_t cnt = le_u32(payload);
            REQUIRE(cnt >= 2);
            memcpy(p, payload, bytes);
            store_u32(p, (uint32_t)cnt + 1);
            check_rejects(&it, p, bytes, n, "count+1");
            memcpy(p, payload, bytes);
            store_u32(p, 0xffffffffu);
            check_rejects(&it, p, bytes, n, "count max");
            memcpy(p, payload, bytes);
            store_u32(p + 4 + 4 * (cnt - 1), (uint32_t)n);
            check_rejects(&it, p, bytes, n, "index n");
            memcpy(p, payload, bytes);
            memcpy(p + 8, p + 4, 4);
            check_rejects(&it, p, bytes, n, "repeated index");
            memcpy(p, payload, bytes);
            store_f32(p + 4 + 4 * cnt, NAN);
            check_rejects(&it, p, bytes, n, "NaN value");
            memcpy(p, payload, bytes);
            store_f32(p + 4 + 4 * cnt + 4, -INFINITY);
            check_rejects(&it, p, bytes, n, "Inf value");
            break;
        }
        case KIND_QUANT:
            memcpy(p, payload, bytes);
            store_f32(p, NAN);
            check_rejects(&it, p, bytes, n, "NaN min");
            memcpy(p, payload, bytes);
            store_f32(p + 4, INFINITY);
            check_rejects(&it, p, bytes, n, "Inf unit");
            memcpy(p, payload, bytes);
            store_f32(p + 4, -1.0f);
            check_rejects(&it, p, bytes, n, "negative unit");
            memcpy(p, payload, bytes);
            store_f32(p + 8, FLT_MAX);
            store_f32(p + 12, FLT_MAX);
            check_rejects(&it, p, bytes, n, "overflowing bucket");
            break;
        case KIND_SIGN:
            memcpy(p, payload, bytes);
            store_f32(p, -1.0f);
            check_rejects(&it, p, bytes, n, "negative scale");
            memcpy(p, payload, bytes);
            store_f32(p, NAN);
            check_rejects(&it, p, bytes, n, "NaN scale");
            break;
        default:
            break;
        }
        /* Wrong n for a valid payload is a size mismatch for every fixed-size format. */
        if (m->kind != KIND_TOPK_EXACT && m->kind != KIND_TOPK_SAMPLED) {
            check_rejects(&it, payload, bytes, n + 64, "n + 64");
        }
        free(p);
        free(payload);
        inst_destroy(&it);
    }
    free(in);
}

/* Extreme magnitudes: values up to +-FLT_MAX and subnormals still give finite decoded values and
 * a finite residual that keeps the error-feedback invariant. */
static void test_extremes(void)
{
    const size_t n = 1000;
    float *in = alloc_floats(n);
    float *res = alloc_floats(n);
    float *dec = alloc_floats(n);
    for (int shape = 0; shape < 3; shape++) {
        for (size_t i = 0; i < n; i++) {
            const double u = rng_unif();
            switch (shape) {
            case 0: /* the full float range, both signs */
                in[i] = (float)((rng_u64() & 1) ? u * FLT_MAX : -u * FLT_MAX);
                break;
            case 1: /* positive, just below FLT_MAX */
                in[i] = (float)(FLT_MAX * (0.999 + 0.001 * u));
                break;
            default: /* subnormal */
                in[i] = (float)((u - 0.5) * 1e-40);
                break;
            }
        }
        for (size_t j = 0; j < NMETHODS; j++) {
            const method_t *m = &methods[j];
            inst_t it = inst_create(m);
            memset(res, 0, n * sizeof *res);
            uint8_t *payload;
            sqz_compress_args_v1_t args;
            CHECK_EQ_INT(do_compress(&it, in, res, n, 11, &payload, &args), SQZ_OK);
            memset(dec, 0, n * sizeof *dec);
            CHECK_EQ_INT(m->c->decompress(it.state, payload, args.payload_bytes, dec, n), SQZ_OK);
            double maxabs = 0.0;
            for (size_t i = 0; i < n; i++) {
                maxabs = fmax(maxabs, fabs((double)in[i]));
            }
            const double tol = 8.0 * FLT_EPSILON * maxabs + 0x1p-149;
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                bad += !isfinite(dec[i]) || !isfinite(res[i]) ||
                       !(fabs((double)dec[i] + (double)res[i] - (double)in[i]) <= tol);
            }
            CHECK_MSG(bad == 0, "%s shape %d: %zu non-finite or inconsistent", m->label, shape,
                      bad);
            free(payload);
            inst_destroy(&it);
        }
    }
    free(in);
    free(res);
    free(dec);
}

/* Empty vectors: every method handles n == 0 (a reduce-scatter chunk may be empty). */
static void test_empty(void)
{
    for (size_t j = 0; j < NMETHODS; j++) {
        const method_t *m = &methods[j];
        inst_t it = inst_create(m);
        float dummy = 0.0f;
        uint8_t *payload;
        sqz_compress_args_v1_t args;
        CHECK_EQ_INT(do_compress(&it, &dummy, &dummy, 0, 1, &payload, &args), SQZ_OK);
        CHECK_EQ_INT(m->c->decompress(it.state, payload, args.payload_bytes, &dummy, 0), SQZ_OK);
        free(payload);
        inst_destroy(&it);
    }
}

/* Descriptors are well formed. */
static void test_descriptors(void)
{
    const sqz_compressor_v1_t *all[] = {&sqz_compressor_none, &sqz_compressor_topk,
                                        &sqz_compressor_quant, &sqz_compressor_sign};
    for (size_t j = 0; j < sizeof all / sizeof all[0]; j++) {
        const sqz_compressor_v1_t *c = all[j];
        CHECK(c->abi == SQZ_COMPRESSOR_ABI_V1);
        CHECK(c->size == sizeof(sqz_compressor_v1_t));
        CHECK(c->create != NULL && c->max_payload != NULL && c->compress != NULL &&
              c->decompress != NULL && c->destroy != NULL);
        char err[256] = "";
        CHECK_MSG(sqz_registry_check(c, err, sizeof err) == SQZ_OK, "%s: %s", c->name, err);
        c->destroy(NULL);
    }
    CHECK(sqz_compressor_none.exchange == SQZ_EXCHANGE_REDUCE_SCATTER);
    CHECK(sqz_compressor_topk.exchange == SQZ_EXCHANGE_ALLGATHER);
    CHECK(sqz_compressor_quant.exchange == SQZ_EXCHANGE_REDUCE_SCATTER);
    CHECK(sqz_compressor_sign.exchange == SQZ_EXCHANGE_REDUCE_SCATTER);
    CHECK(SQZ_FIXED_PAYLOAD(&sqz_compressor_quant) && SQZ_FIXED_PAYLOAD(&sqz_compressor_sign) &&
          SQZ_FIXED_PAYLOAD(&sqz_compressor_none));
    CHECK(!SQZ_FIXED_PAYLOAD(&sqz_compressor_topk) && !SQZ_FIXED_PAYLOAD(&sqz_compressor_lossless) &&
          !SQZ_FIXED_PAYLOAD(&sqz_compressor_fedzip));
}

/* A top-k state with settings kv (its config in *cfg, for the caller to free), rank 0 of 1. */
static void *topk_with(const char *const *kv, void **cfg)
{
    char err[256];
    REQUIRE(SQZ_OK == sqz_plugin_config_make(&sqz_compressor_topk, kv, cfg, err, sizeof(err)));
    const sqz_compressor_env_v1_t env = {.size = sizeof(env), .rank = 0, .nranks = 1, .seed = 3};
    void                         *st  = NULL;
    REQUIRE(SQZ_OK == sqz_compressor_topk.create(*cfg, &env, &st));
    return st;
}

/* DGC's sparsity warm-up: the number of kept entries falls call by call to k, and stays there. */
static void test_topk_warmup_schedule(void)
{
    const char *const kv[] = {"TOPK_DENSITY=0.001", "TOPK_WARMUP_STEPS=4", NULL};
    void             *cfg  = NULL;
    void             *st   = topk_with(kv, &cfg);
    const size_t n   = 100000;
    float       *in  = malloc(n * sizeof(float));
    const size_t cap = sqz_compressor_topk.max_payload(st, n);
    void        *pl  = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        in[i] = (float)((i * 2654435761u) % 1000003) - 500000.0f;
    }
    size_t prev = n + 1;
    for (uint64_t seq = 0; seq < 7; seq++) {
        sqz_compress_args_v1_t a = {.size = sizeof(a), .in = in, .n = n, .seq = seq, .payload = pl,
                                    .capacity = cap};
        CHECK_EQ_INT(sqz_compressor_topk.compress(st, &a), SQZ_OK);
        const size_t m = (a.payload_bytes - 4) / 8;
        const double want = seq < 4 ? pow(0.001, (double)(seq + 1) / 5.0) : 0.001;
        CHECK_MSG(m == (size_t)ceil(want * (double)n), "seq %llu: kept %zu, expected %.0f",
                  (unsigned long long)seq, m, ceil(want * (double)n));
        CHECK(m <= prev);
        prev = m;
    }
    sqz_compressor_topk.destroy(st);
    free(cfg);
    free(in);
    free(pl);
}

/* TOPK_RESELECT: the second selection (stage 1, the scatter exchange's reduced chunk) keeps that
 * many times k, the first keeps k; the payload bound covers the larger; the residual keeps what
 * each does not send (a + residual = decoded + new residual, exactly for kept entries). */
static void test_topk_reselect(void)
{
    const char *const kv[] = {"TOPK_DENSITY=0.01", "TOPK_RESELECT=4", NULL};
    void             *cfg  = NULL;
    void             *st   = topk_with(kv, &cfg);
    const size_t n   = 50000, k = 500;
    float       *in  = malloc(n * sizeof(float)), *res = calloc(n, sizeof(float));
    float       *dec = calloc(n, sizeof(float));
    const size_t cap = sqz_compressor_topk.max_payload(st, n);
    void        *pl  = malloc(cap);
    REQUIRE(in && res && dec && pl);
    CHECK_EQ_INT(cap, 4 + 8 * 4 * k);
    for (size_t i = 0; i < n; i++) {
        in[i] = (float)((i * 2654435761u) % 1000003) - 500000.0f;
    }
    for (int stage = 0; stage < 2; stage++) {
        memset(res, 0, n * sizeof(float));
        memset(dec, 0, n * sizeof(float));
        sqz_compress_args_v1_t a = {.size = sizeof(a), .in = in, .residual = res, .n = n,
                                    .stage = stage, .payload = pl, .capacity = cap};
        CHECK_EQ_INT(sqz_compressor_topk.compress(st, &a), SQZ_OK);
        CHECK_EQ_INT((a.payload_bytes - 4) / 8, stage ? 4 * k : k);
        CHECK_EQ_INT(sqz_compressor_topk.decompress(st, pl, a.payload_bytes, dec, n), SQZ_OK);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            bad += dec[i] + res[i] != in[i];
        }
        CHECK_MSG(0 == bad, "stage %d: %zu elements where decoded + residual != input", stage, bad);
    }
    sqz_compressor_topk.destroy(st);
    free(cfg), free(in), free(res), free(dec), free(pl);
}

int main(void)
{
    test_topk_warmup_schedule();
    test_topk_reselect();
    test_descriptors();
    test_empty();
    for (size_t j = 0; j < NMETHODS; j++) {
        for (size_t s = 0; s < NSIZES; s++) {
            test_generic(&methods[j], sizes[s]);
        }
    }
    for (size_t s = 0; s < NSIZES; s++) {
        test_topk_exact(sizes[s], 0.05);
        test_topk_exact(sizes[s], 0.01);
    }
    test_topk_exact_layouts(0.05);
    test_topk_exact_layouts(0.01);
    for (size_t j = 0; j < NMETHODS; j++) {
        const method_t *m = &methods[j];
        for (size_t s = 0; s < NSIZES; s++) {
            if (m->kind == KIND_TOPK_SAMPLED) {
                test_topk_sampled(m, sizes[s]);
            } else if (m->kind == KIND_QUANT && !m->stochastic) {
                test_quant_nearest(m, sizes[s]);
            } else if (m->kind == KIND_SIGN) {
                test_sign(m, sizes[s]);
            }
        }
        if (m->kind == KIND_QUANT) {
            test_quant_constant(m);
            if (m->stochastic) {
                test_quant_stochastic(m);
            }
        }
    }
    test_corrupt_fields();
    test_extremes();
    return sqz_test_result("test_compressors");
}
