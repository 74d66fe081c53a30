/*
 * Unit tests of the "terngrad" compressor (plugins/terngrad): the contracts of compressor_v1.h
 * (round trip, error feedback, finiteness, payload size, validate-before-write) and TernGrad's own
 * claims: decoded values are s * {-1, 0, +1} with the sign of a, the ternarizer is unbiased
 * without clipping (variance s |a| - a^2), also under a shared scaler larger than the local one,
 * shared_fill gives each bucket's max |a| (of the clipped values with clipping), the scaler sent
 * at stage 0 is args->shared exactly, two simulated ranks send identical scalers, and it costs
 * 2 + 32 / B bits per element.  Ends with a compress + decode throughput measurement (printed,
 * never asserted).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <squeeze.h>

#include "sqz_test_compressor.h"

extern const sqz_compressor_v1_t sqz_compressor_terngrad;
#define TG sqz_compressor_terngrad

/* ---------------------------------------------------------------------------------------------
 * Configurations under test.
 * ------------------------------------------------------------------------------------------- */
typedef struct method {
    const char *label;
    const char *kv[3];
    size_t      bucket;
    double      clip;
} method_t;

static const method_t methods[] = {
    {"B=2048 clip=0", {"TERNGRAD_CLIP=0", NULL}, 2048, 0.0},
    {"B=8", {"TERNGRAD_BUCKET=8", "TERNGRAD_CLIP=0", NULL}, 8, 0.0},
    {"B=13", {"TERNGRAD_BUCKET=13", "TERNGRAD_CLIP=0", NULL}, 13, 0.0},
    {"B=100 clip=2.5", {"TERNGRAD_BUCKET=100", "TERNGRAD_CLIP=2.5", NULL}, 100, 2.5},
    {"B=2048 clip=2.5", {"TERNGRAD_CLIP=2.5", NULL}, 2048, 2.5},
    {"B=64 clip=1", {"TERNGRAD_BUCKET=64", "TERNGRAD_CLIP=1", NULL}, 64, 1.0},
    {"B=4099", {"TERNGRAD_BUCKET=4099", "TERNGRAD_CLIP=0", NULL}, 4099, 0.0},
    {"default (B=2048 clip=1.5)", {NULL}, 2048, 1.5},
};
#define NMETHODS (sizeof methods / sizeof methods[0])

static const size_t sizes[] = {1, 7, 1000, 100003, 65536};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static size_t n_buckets(const method_t *m, size_t n)
{
    return (n + m->bucket - 1) / m->bucket;
}

static size_t expected_bytes(const method_t *m, size_t n)
{
    return 4 * n_buckets(m, n) + (n + 3) / 4;
}

typedef sqz_tc_t inst_t;

static inst_t inst_create_rank(const method_t *m, int rank)
{
    return sqz_tc_make(&TG, m->label, m->kv, rank);
}

static inst_t inst_create(const method_t *m) { return inst_create_rank(m, 0); }

/* ---------------------------------------------------------------------------------------------
 * An independent reader of the wire format: nb f32 scalers, then 2-bit codes 4 per byte
 * LSB-first, 0: 0, 1: +1, 2: -1.
 * ------------------------------------------------------------------------------------------- */
static float le_f32(const uint8_t *p)
{
    const uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                       ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void le_store_f32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    for (int j = 0; j < 4; j++) {
        p[j] = (uint8_t)(u >> (8 * j));
    }
}

static unsigned ref_code(const uint8_t *payload, const method_t *m, size_t n, size_t i)
{
    const uint8_t *packed = payload + 4 * n_buckets(m, n);
    return (packed[i / 4] >> (2 * (i % 4))) & 3u;
}

static float ref_scaler(const uint8_t *payload, size_t k)
{
    return le_f32(payload + 4 * k);
}

/* The decoded value of element i according to the wire format alone. */
static float ref_decode(const uint8_t *payload, const method_t *m, size_t n, size_t i)
{
    const float s = ref_scaler(payload, i / m->bucket);
    const unsigned c = ref_code(payload, m, n, i);
    return c == 1 ? s : c == 2 ? -s : 0.0f;
}

/* max |a| of bucket k, and the clip level clip * sigma (INFINITY when off or sigma = 0). */
static void ref_bucket(const method_t *m, const float *a, size_t n, size_t k, float *maxabs,
                       double *clip_level)
{
    const size_t s0 = k * m->bucket, e = s0 + m->bucket < n ? s0 + m->bucket : n;
    float mx = 0.0f;
    double sum = 0.0, sq = 0.0;
    for (size_t i = s0; i < e; i++) {
        mx = fabsf(a[i]) > mx ? fabsf(a[i]) : mx;
        sum += a[i];
        sq += (double)a[i] * a[i];
    }
    *maxabs = mx;
    *clip_level = INFINITY;
    if (m->clip > 0.0) {
        const double mean = sum / (double)(e - s0), var = sq / (double)(e - s0) - mean * mean;
        if (var > 0.0) {
            *clip_level = m->clip * sqrt(var);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Contract tests.
 * ------------------------------------------------------------------------------------------- */

/* Round trip into zeros: the decoder agrees with the independent reader, every value is
 * s * {-1, 0, +1} with a's sign, the scaler is the bucket's max |a| (clipped max with clipping),
 * the payload has the expected size, and out == NULL validates. */
static void test_round_trip(const method_t *m, size_t n)
{
    inst_t it = inst_create(m);
    float *in = alloc_floats(n), *res = alloc_floats(n), *a = alloc_floats(n);
    float *out = alloc_floats(n);
    fill_random(in, n, 1.0);
    fill_random(res, n, 0.1);
    for (size_t i = 0; i < n; i++) {
        a[i] = in[i] + res[i];
    }
    if (n > 10) {
        in[n / 2] = 40.0f; /* an outlier for the clipping */
        a[n / 2] = in[n / 2] + res[n / 2];
    }
    uint8_t *p;
    sqz_compress_args_v1_t args;
    CHECK_EQ_INT(sqz_tc_compress(&it, in, res, n, 7, 0, NULL, &p, &args), SQZ_OK);
    CHECK_EQ_INT(args.payload_bytes, expected_bytes(m, n));
    CHECK_EQ_INT(TG.max_payload(it.state, n), expected_bytes(m, n));
    CHECK_EQ_INT(TG.shared_len(it.state, n), n_buckets(m, n));
    CHECK_EQ_INT(TG.decompress(it.state, p, args.payload_bytes, NULL, n), SQZ_OK);
    memset(out, 0, n * sizeof *out);
    CHECK_EQ_INT(TG.decompress(it.state, p, args.payload_bytes, out, n), SQZ_OK);
    size_t bad_ref = 0, bad_sign = 0, bad_scaler = 0, bad_code = 0;
    double n2 = 0.0, e2 = 0.0;
    for (size_t k = 0; k < n_buckets(m, n); k++) {
        float mx;
        double cl;
        ref_bucket(m, a, n, k, &mx, &cl);
        const double want = (double)mx < cl ? (double)mx : cl;
        const float s = ref_scaler(p, k);
        bad_scaler += !(fabs((double)s - want) <= 1e-6 * want);
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned c = ref_code(p, m, n, i);
        bad_code += c == 3;
        bad_ref += out[i] != ref_decode(p, m, n, i);
        bad_sign += (out[i] > 0.0f && a[i] <= 0.0f) || (out[i] < 0.0f && a[i] >= 0.0f);
        n2 += (double)a[i] * a[i];
        e2 += ((double)a[i] - out[i]) * ((double)a[i] - out[i]);
    }
    CHECK_MSG(bad_ref == 0, "%s n=%zu: %zu values differ from the reference reader", m->label, n,
              bad_ref);
    CHECK_MSG(bad_sign == 0, "%s n=%zu: %zu values with the wrong sign", m->label, n, bad_sign);
    CHECK_MSG(bad_scaler == 0, "%s n=%zu: %zu scalers off", m->label, n, bad_scaler);
    CHECK_MSG(bad_code == 0, "%s n=%zu: %zu codes of 3", m->label, n, bad_code);
    CHECK_NEAR(args.norm2_in, n2, 1e-9 * n2 + 1e-30);
    CHECK_NEAR(args.norm2_err, e2, 1e-6 * e2 + 1e-30);
    if (n % 4 != 0) {
        CHECK_EQ_INT(p[args.payload_bytes - 1] >> (2 * (n % 4)), 0);
    }
    /* Deterministic in (seed, rank, seq, stage). */
    fill_random(res, n, 0.1);
    float *res2 = alloc_floats(n);
    memcpy(res2, res, n * sizeof *res);
    uint8_t *p1, *p2, *p3;
    sqz_compress_args_v1_t a1, a2, a3;
    CHECK_EQ_INT(sqz_tc_compress(&it, in, res, n, 11, 0, NULL, &p1, &a1), SQZ_OK);
    CHECK_EQ_INT(sqz_tc_compress(&it, in, res2, n, 11, 0, NULL, &p2, &a2), SQZ_OK);
    CHECK(memcmp(p1, p2, a1.payload_bytes) == 0);
    if (n >= 1000) {
        CHECK_EQ_INT(sqz_tc_compress(&it, in, NULL, n, 12, 0, NULL, &p3, &a3), SQZ_OK);
        CHECK(memcmp(p1, p3, a1.payload_bytes) != 0);
        free(p3);
    }
    free(p1);
    free(p2);
    free(res2);
    free(p);
    free(in);
    free(res);
    free(a);
    free(out);
    sqz_tc_free(&it);
}

/* decode + residual_new == in + residual_old within a few ulps of max |a|, over several calls. */
static void test_error_feedback(const method_t *m, size_t n)
{
    inst_t it = inst_create(m);
    float *in = alloc_floats(n), *res = alloc_floats(n), *old = alloc_floats(n);
    float *out = alloc_floats(n);
    memset(res, 0, n * sizeof *res);
    double worst = 0.0;
    for (uint64_t seq = 0; seq < 4; seq++) {
        fill_random(in, n, 1.0 + (double)seq);
        memcpy(old, res, n * sizeof *res);
        uint8_t *p;
        sqz_compress_args_v1_t args;
        CHECK_EQ_INT(sqz_tc_compress(&it, in, res, n, seq, (int)(seq & 1), NULL, &p, &args),
                     SQZ_OK);
        memset(out, 0, n * sizeof *out);
        CHECK_EQ_INT(TG.decompress(it.state, p, args.payload_bytes, out, n), SQZ_OK);
        double amax = 0.0;
        for (size_t i = 0; i < n; i++) {
            amax = fmax(amax, fabs((double)in[i] + old[i]));
        }
        for (size_t i = 0; i < n; i++) {
            const double d = fabs(((double)out[i] + res[i]) - ((double)in[i] + old[i]));
            worst = fmax(worst, d / (amax > 0 ? amax : 1.0));
        }
        free(p);
    }
    CHECK_MSG(worst <= 4.0 * FLT_EPSILON, "%s n=%zu: EF error %.3g of max|a|", m->label, n, worst);
    free(in);
    free(res);
    free(old);
    free(out);
    sqz_tc_free(&it);
}

/* NaN / Inf anywhere: SQZ_ERR_NONFINITE and the residual as it was (a few ulps of max |a|). */
static void test_nonfinite(const method_t *m, size_t n)
{
    const float bads[3] = {NAN, INFINITY, -INFINITY};
    const size_t where[4] = {0, n / 2, n - 1, n > 3000 ? 3000 : n - 1};
    inst_t it = inst_create(m);
    float *in = alloc_floats(n), *res = alloc_floats(n), *old = alloc_floats(n);
    for (int b = 0; b < 3; b++) {
        for (int w = 0; w < 4; w++) {
            fill_random(in, n, 1.0);
            fill_random(res, n, 0.5);
            memcpy(old, res, n * sizeof *res);
            in[where[w]] = bads[b];
            uint8_t *p;
            sqz_compress_args_v1_t args;
            CHECK_EQ_INT(sqz_tc_compress(&it, in, res, n, 3, 0, NULL, &p, &args), SQZ_ERR_NONFINITE);
            free(p);
            double amax = 0.0, worst = 0.0;
            for (size_t i = 0; i < n; i++) {
                if (i != where[w]) {
                    amax = fmax(amax, fabs((double)in[i] + old[i]));
                }
            }
            for (size_t i = 0; i < n; i++) {
                if (i != where[w]) {
                    worst = fmax(worst, fabs((double)res[i] - old[i]));
                }
            }
            CHECK_MSG(worst <= 4.0 * FLT_EPSILON * (amax > 0 ? amax : 1.0),
                      "%s n=%zu bad at %zu: residual moved by %.3g", m->label, n, where[w], worst);
            CHECK(res[where[w]] == old[where[w]]);
            /* Without a residual too. */
            CHECK_EQ_INT(sqz_tc_compress(&it, in, NULL, n, 3, 0, NULL, &p, &args), SQZ_ERR_NONFINITE);
            free(p);
        }
    }
    free(in);
    free(res);
    free(old);
    sqz_tc_free(&it);
}

/* Malformed payloads: SQZ_ERR_CORRUPT and out untouched; out == NULL only validates. */
static void test_corrupt(const method_t *m, size_t n)
{
    inst_t it = inst_create(m);
    float *in = alloc_floats(n), *out = alloc_floats(n), *ref = alloc_floats(n);
    fill_random(in, n, 1.0);
    uint8_t *p;
    sqz_compress_args_v1_t args;
    CHECK_EQ_INT(sqz_tc_compress(&it, in, NULL, n, 5, 0, NULL, &p, &args), SQZ_OK);
    const size_t bytes = args.payload_bytes;
    uint8_t *q = malloc(bytes + 8);
    REQUIRE(q != NULL);
    for (size_t i = 0; i < n; i++) {
        ref[i] = (float)i * 0.25f - 3.0f;
    }
#define EXPECT_CORRUPT(buf, len)                                                             \
    do {                                                                                     \
        memcpy(out, ref, n * sizeof *out);                                                   \
        CHECK_EQ_INT(TG.decompress(it.state, (buf), (len), out, n), SQZ_ERR_CORRUPT);        \
        CHECK_EQ_INT(TG.decompress(it.state, (buf), (len), NULL, n), SQZ_ERR_CORRUPT);       \
        CHECK(memcmp(out, ref, n * sizeof *out) == 0);                                       \
    } while (0)
    /* Truncated, extended. */
    memcpy(q, p, bytes);
    EXPECT_CORRUPT(q, bytes - 1);
    EXPECT_CORRUPT(q, 0);
    memset(q + bytes, 0, 8);
    EXPECT_CORRUPT(q, bytes + 1);
    EXPECT_CORRUPT(q, bytes + 8);
    /* Bad scalers: NaN, Inf, negative, -0. */
    const float bad_s[4] = {NAN, INFINITY, -1.0f, -0.0f};
    for (int b = 0; b < 4; b++) {
        memcpy(q, p, bytes);
        le_store_f32(q + 4 * (n_buckets(m, n) - 1), bad_s[b]);
        EXPECT_CORRUPT(q, bytes);
    }
    /* A code of 3, first, middle and last element. */
    const size_t at[3] = {0, n / 2, n - 1};
    const size_t off = 4 * n_buckets(m, n);
    for (int w = 0; w < 3; w++) {
        memcpy(q, p, bytes);
        q[off + at[w] / 4] |= (uint8_t)(3u << (2 * (at[w] % 4)));
        EXPECT_CORRUPT(q, bytes);
    }
    /* Nonzero padding bits. */
    if (n % 4 != 0) {
        memcpy(q, p, bytes);
        q[bytes - 1] |= (uint8_t)(1u << (2 * (n % 4)));
        EXPECT_CORRUPT(q, bytes);
    }
#undef EXPECT_CORRUPT
    /* NULL out validates a valid payload without writing; a wrong n is corrupt. */
    CHECK_EQ_INT(TG.decompress(it.state, p, bytes, NULL, n), SQZ_OK);
    CHECK_EQ_INT(TG.decompress(it.state, p, bytes, NULL, n + 4), SQZ_ERR_CORRUPT);
    free(q);
    free(p);
    free(in);
    free(out);
    free(ref);
    sqz_tc_free(&it);
}

/* ---------------------------------------------------------------------------------------------
 * TernGrad's claims.
 * ------------------------------------------------------------------------------------------- */

/* Mean of the decoded vector over `trials` seq values vs a, with tolerance from the per-element
 * variance s |a| - a^2 (6 standard errors plus three Bernoulli counts of slack).  shared_mult > 0
 * passes args->shared = shared_mult * the bucket's max |a| and checks the payload carries it. */
static void test_unbiased(const method_t *m, size_t n, double shared_mult)
{
    const int trials = 2000;
    inst_t it = inst_create(m);
    float *a = alloc_floats(n), *out = alloc_floats(n);
    double *mean = calloc(n, sizeof *mean);
    REQUIRE(mean != NULL);
    fill_random(a, n, 1.0);
    for (size_t i = 0; i < n; i += 17) {
        a[i] *= 0.01f; /* small values: rare nonzero codes */
    }
    const size_t nb = n_buckets(m, n);
    float *shared = alloc_floats(nb), *scal = alloc_floats(nb);
    TG.shared_fill(it.state, a, NULL, n, scal);
    for (size_t k = 0; k < nb; k++) {
        shared[k] = (float)(shared_mult * (1.0 + 0.1 * (double)(k % 3))) * scal[k];
    }
    size_t bad_scaler = 0;
    for (int t = 0; t < trials; t++) {
        uint8_t *p;
        sqz_compress_args_v1_t args;
        CHECK_EQ_INT(sqz_tc_compress(&it, a, NULL, n, (uint64_t)t, 0, shared_mult > 0 ? shared : NULL, &p, &args),
                     SQZ_OK);
        for (size_t k = 0; k < nb; k++) {
            bad_scaler += ref_scaler(p, k) != (shared_mult > 0 ? shared[k] : scal[k]);
        }
        memset(out, 0, n * sizeof *out);
        CHECK_EQ_INT(TG.decompress(it.state, p, args.payload_bytes, out, n), SQZ_OK);
        for (size_t i = 0; i < n; i++) {
            mean[i] += out[i];
        }
        free(p);
    }
    CHECK_MSG(bad_scaler == 0, "%s: %zu scalers differ from the expected", m->label, bad_scaler);
    size_t bad = 0;
    double worst = 0.0, chi2 = 0.0;
    size_t nchi = 0;
    for (size_t i = 0; i < n; i++) {
        const double s = shared_mult > 0 ? shared[i / m->bucket] : scal[i / m->bucket];
        const double ai = a[i], mu = mean[i] / trials;
        const double var = s * fabs(ai) - ai * ai;
        const double se = sqrt((var > 0 ? var : 0) / trials);
        const double tol = 6.0 * se + 3.0 * s / trials + 1e-6 * fabs(ai);
        bad += fabs(mu - ai) > tol;
        worst = fmax(worst, fabs(mu - ai) / tol);
        if (se > 0 && var > 0.05 * s * s) {
            chi2 += (mu - ai) * (mu - ai) / (se * se);
            nchi++;
        }
    }
    CHECK_MSG(bad == 0, "%s n=%zu shared x%.1f: %zu means off (worst %.2f of tol)", m->label, n,
              shared_mult, bad, worst);
    /* Aggregate: the squared z-scores average about 1. */
    const double chi = nchi ? chi2 / (double)nchi : 1.0;
    CHECK_MSG(chi < 1.0 + 6.0 * sqrt(2.0 / (double)(nchi ? nchi : 1)) + 0.05,
              "%s: mean z^2 %.3f over %zu elements", m->label, chi, nchi);
    printf("  unbiased %-18s n=%zu shared x%.1f: worst |mean-a| %.2f of tol, mean z^2 %.3f (%zu)\n",
           m->label, n, shared_mult, worst, chi, nchi);
    free(shared);
    free(scal);
    free(mean);
    free(a);
    free(out);
    sqz_tc_free(&it);
}

/* shared_fill gives max |in + residual| per bucket (the clipped max with clipping); the scaler at
 * stage 0 is args->shared exactly; stage 1 and a shared NULL use the local one; a shared value
 * that is not finite or below the local one is ignored. */
static void test_shared(const method_t *m, size_t n)
{
    inst_t it = inst_create(m);
    const size_t nb = n_buckets(m, n);
    float *in = alloc_floats(n), *res = alloc_floats(n), *a = alloc_floats(n);
    float *vals = alloc_floats(nb + 1), *sh = alloc_floats(nb);
    fill_random(in, n, 1.0);
    fill_random(res, n, 0.3);
    for (size_t i = 0; i < n; i += 997) {
        in[i] = 25.0f; /* outliers, clipped when clipping is on */
    }
    for (size_t i = 0; i < n; i++) {
        a[i] = in[i] + res[i];
    }
    vals[nb] = 123.0f;
    TG.shared_fill(it.state, in, res, n, vals);
    CHECK(vals[nb] == 123.0f);
    size_t bad = 0, clipped = 0;
    for (size_t k = 0; k < nb; k++) {
        float mx;
        double cl;
        ref_bucket(m, a, n, k, &mx, &cl);
        const double want = (double)mx < cl ? (double)mx : cl;
        bad += !(fabs((double)vals[k] - want) <= 1e-6 * want);
        clipped += (double)vals[k] < (double)mx;
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu shared_fill values off", m->label, n, bad);
    if (m->clip > 0 && m->clip < 3 && n >= 1000) {
        CHECK_MSG(clipped > 0, "%s n=%zu: clipping never lowered a scaler", m->label, n);
    }
    if (m->clip == 0) {
        CHECK_EQ_INT(clipped, 0);
    }
    /* Stage 0 sends args->shared exactly (larger than local); stage 1 ignores it. */
    for (size_t k = 0; k < nb; k++) {
        sh[k] = vals[k] * 1.75f + 1e-3f;
    }
    for (int stage = 0; stage < 2; stage++) {
        uint8_t *p;
        sqz_compress_args_v1_t args;
        float *r = alloc_floats(n);
        memcpy(r, res, n * sizeof *r);
        CHECK_EQ_INT(sqz_tc_compress(&it, in, r, n, 1, stage, sh, &p, &args), SQZ_OK);
        size_t off = 0;
        for (size_t k = 0; k < nb; k++) {
            off += ref_scaler(p, k) != (stage == 0 ? sh[k] : vals[k]);
        }
        CHECK_MSG(off == 0, "%s n=%zu stage %d: %zu scalers differ", m->label, n, stage, off);
        free(p);
        free(r);
    }
    /* An args struct without the field (older engine): shared is not read. */
    {
        uint8_t *p;
        sqz_compress_args_v1_t args;
        const size_t maxp = TG.max_payload(it.state, n);
        p = malloc(maxp);
        REQUIRE(p != NULL);
        args        = sqz_tc_args(in, NULL, n, 0, 0, p, maxp);
        args.size   = (uint32_t)offsetof(sqz_compress_args_v1_t, shared);
        args.shared = sh;
        CHECK_EQ_INT(TG.compress(it.state, &args), SQZ_OK);
        size_t off = 0;
        for (size_t k = 0; k < nb; k++) {
            float mx;
            double cl;
            ref_bucket(m, in, n, k, &mx, &cl);
            off += ref_scaler(p, k) == sh[k];
        }
        CHECK_MSG(off == 0, "%s n=%zu: short args used shared", m->label, n);
        free(p);
    }
    /* Not finite, or below the local scaler: ignored (every probability stays <= 1). */
    for (size_t k = 0; k < nb; k++) {
        sh[k] = k % 3 == 0 ? NAN : k % 3 == 1 ? vals[k] * 0.5f : -INFINITY;
    }
    {
        uint8_t *p;
        sqz_compress_args_v1_t args;
        float *r = alloc_floats(n);
        memcpy(r, res, n * sizeof *r);
        CHECK_EQ_INT(sqz_tc_compress(&it, in, r, n, 1, 0, sh, &p, &args), SQZ_OK);
        size_t off = 0;
        for (size_t k = 0; k < nb; k++) {
            off += ref_scaler(p, k) != vals[k];
        }
        CHECK_MSG(off == 0, "%s n=%zu: %zu bad shared values used", m->label, n, off);
        free(p);
        free(r);
    }
    free(in);
    free(res);
    free(a);
    free(vals);
    free(sh);
    sqz_tc_free(&it);
}

/* Two simulated ranks: shared_fill on both, element-wise MAX, compress both with the result:
 * both payloads carry the same scaler bytes, equal to the MAX, and both satisfy the EF contract. */
static void test_two_ranks(const method_t *m, size_t n)
{
    inst_t r0 = inst_create_rank(m, 0), r1 = inst_create_rank(m, 1);
    const size_t nb = n_buckets(m, n);
    float *in[2], *res[2], *old[2], *vals[2];
    for (int r = 0; r < 2; r++) {
        in[r] = alloc_floats(n);
        res[r] = alloc_floats(n);
        old[r] = alloc_floats(n);
        vals[r] = alloc_floats(nb);
        fill_random(in[r], n, 1.0);
        fill_random(res[r], n, 0.2);
        for (size_t i = 0; i < n; i++) {
            /* Each rank holds the larger values in every other bucket. */
            in[r][i] *= (i / m->bucket) % 2 == (size_t)r ? 3.0f : 1.0f;
        }
        memcpy(old[r], res[r], n * sizeof(float));
    }
    TG.shared_fill(r0.state, in[0], res[0], n, vals[0]);
    TG.shared_fill(r1.state, in[1], res[1], n, vals[1]);
    float *mx = alloc_floats(nb);
    size_t from1 = 0;
    for (size_t k = 0; k < nb; k++) {
        mx[k] = vals[1][k] > vals[0][k] ? vals[1][k] : vals[0][k];
        from1 += vals[1][k] > vals[0][k];
    }
    uint8_t *p0, *p1;
    sqz_compress_args_v1_t a0, a1;
    CHECK_EQ_INT(sqz_tc_compress(&r0, in[0], res[0], n, 9, 0, mx, &p0, &a0), SQZ_OK);
    CHECK_EQ_INT(sqz_tc_compress(&r1, in[1], res[1], n, 9, 0, mx, &p1, &a1), SQZ_OK);
    CHECK(memcmp(p0, p1, 4 * nb) == 0);
    size_t off = 0;
    for (size_t k = 0; k < nb; k++) {
        off += ref_scaler(p0, k) != mx[k];
    }
    CHECK_MSG(off == 0, "%s n=%zu: %zu scalers are not the MAX", m->label, n, off);
    if (nb >= 4) {
        CHECK(from1 > 0 && from1 < nb); /* both ranks contributed somewhere */
    }
    float *out = alloc_floats(n);
    const uint8_t *ps[2] = {p0, p1};
    for (int r = 0; r < 2; r++) {
        memset(out, 0, n * sizeof *out);
        CHECK_EQ_INT(TG.decompress(r0.state, ps[r], a0.payload_bytes, out, n), SQZ_OK);
        double amax = 0.0, worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            amax = fmax(amax, fabs((double)in[r][i] + old[r][i]));
        }
        for (size_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs(((double)out[i] + res[r][i]) -
                                     ((double)in[r][i] + old[r][i])));
        }
        CHECK_MSG(worst <= 4.0 * FLT_EPSILON * amax, "%s rank %d: EF off by %.3g", m->label, r,
                  worst);
    }
    free(out);
    free(mx);
    free(p0);
    free(p1);
    for (int r = 0; r < 2; r++) {
        free(in[r]);
        free(res[r]);
        free(old[r]);
        free(vals[r]);
    }
    sqz_tc_free(&r0);
    sqz_tc_free(&r1);
}

/* Parameter bounds and create-time checks. */
static void test_params(void)
{
    const char *bad[][2] = {
        {"TERNGRAD_BUCKET=7", NULL},        {"TERNGRAD_BUCKET=16777217", NULL},
        {"TERNGRAD_CLIP=-1", NULL},         {"TERNGRAD_CLIP=17", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *cfg = NULL;
        char err[256] = "";
        CHECK_MSG(sqz_plugin_config_make(&TG, bad[i], &cfg, err, sizeof err) != SQZ_OK,
                  "%s accepted", bad[i][0]);
        free(cfg);
    }
    /* Parsed, but a clip in (0, 1) is refused by create. */
    const char *half[] = {"TERNGRAD_CLIP=0.5", NULL};
    void *cfg = NULL, *state = NULL;
    char err[256] = "";
    REQUIRE(sqz_plugin_config_make(&TG, half, &cfg, err, sizeof err) == SQZ_OK);
    const sqz_compressor_env_v1_t env = {sizeof env, 0, 1, 1};
    CHECK_EQ_INT(TG.create(cfg, &env, &state), SQZ_ERR_INVALID_PARAM);
    free(cfg);
    CHECK(TG.size >= offsetof(sqz_compressor_v1_t, shared_fill) + sizeof(TG.shared_fill));
    CHECK(TG.shared_len != NULL && TG.shared_fill != NULL);
    CHECK_EQ_INT(TG.exchange, SQZ_EXCHANGE_REDUCE_SCATTER);
}

/* Compress (with residual) + decode throughput on 16M floats, printed only. */
static void bench(const method_t *m)
{
    const size_t n = (size_t)16 << 20;
    inst_t it = inst_create(m);
    float *in = alloc_floats(n), *res = alloc_floats(n), *out = alloc_floats(n);
    fill_random(in, n, 1.0);
    memset(res, 0, n * sizeof *res);
    memset(out, 0, n * sizeof *out);
    const size_t maxp = TG.max_payload(it.state, n);
    uint8_t *p = malloc(maxp);
    REQUIRE(p != NULL);
    double tc = 1e30, td = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        (void)sqz_tc_time(&it, in, res, n, (uint64_t)rep, p, maxp, out, &tc, &td);
    }
    const double gb = (double)n * sizeof(float) / 1e9;
    printf("  bench %-18s 16M floats: compress %.2f GB/s, decode %.2f GB/s, both %.2f GB/s "
           "(GB of f32 input per second)\n",
           m->label, gb / tc, gb / td, gb / (tc + td));
    free(p);
    free(in);
    free(res);
    free(out);
    sqz_tc_free(&it);
}

int main(void)
{
    rng_state = 0x9e3779b97f4a7c15ull; /* the seed this test was tuned with */
    test_params();
    for (size_t mi = 0; mi < NMETHODS; mi++) {
        const method_t *m = &methods[mi];
        for (size_t si = 0; si < NSIZES; si++) {
            const size_t n = sizes[si];
            test_round_trip(m, n);
            test_error_feedback(m, n);
            test_nonfinite(m, n);
            test_corrupt(m, n);
            test_shared(m, n);
            test_two_ranks(m, n);
        }
        const size_t n = sizes[NSIZES - 1];
        printf("  %-18s %.4f bits/element at n=%zu (2 + 32/B = %.4f)\n", m->label,
               8.0 * (double)expected_bytes(m, n) / (double)n, n, 2.0 + 32.0 / (double)m->bucket);
    }
    test_unbiased(&methods[0], 1000, 0.0);
    test_unbiased(&methods[1], 1000, 0.0);
    test_unbiased(&methods[2], 7, 0.0);
    test_unbiased(&methods[0], 5000, 1.5);
    test_unbiased(&methods[1], 1000, 2.0);
    bench(&methods[0]);
    bench(&methods[4]);
    return sqz_test_result("test_terngrad");
}
