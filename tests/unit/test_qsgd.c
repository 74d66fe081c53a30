/*
 * Unit tests of the "qsgd" compressor (plugins/qsgd): the contracts of compressor_v1.h (round
 * trip, error feedback, finiteness, payload size, validate-before-write) and QSGD's own claims:
 * decoded values lie on the grid sign * norm * l / s, the quantizer is unbiased, its variance
 * obeys min(d / s^2, sqrt(d) / s) ||v||^2, and it costs 1 + ceil(log2(s + 1)) + 32 / d bits per
 * element.  Ends with a compress + decode throughput measurement (printed, never asserted).
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

extern const sqz_compressor_v1_t sqz_compressor_qsgd;

/* ---------------------------------------------------------------------------------------------
 * Configurations under test.
 * ------------------------------------------------------------------------------------------- */
typedef struct method {
    const char *label;
    const char *kv[4];
    unsigned    s;
    size_t      bucket;
    int         l2;
} method_t;

static const method_t methods[] = {
    {"default (s=15 d=512 l2)", {NULL}, 15, 512, 1},
    {"s=7 (4-bit)", {"QSGD_LEVELS=7", NULL}, 7, 512, 1},
    {"s=127 (8-bit) max", {"QSGD_LEVELS=127", "QSGD_NORM=max", NULL}, 127, 512, 0},
    {"s=255 (9-bit)", {"QSGD_LEVELS=255", "QSGD_BUCKET=1024", NULL}, 255, 1024, 1},
    {"s=1 (2-bit)", {"QSGD_LEVELS=1", NULL}, 1, 512, 1},
    {"s=5 d=13 max", {"QSGD_LEVELS=5", "QSGD_BUCKET=13", "QSGD_NORM=max", NULL}, 5, 13, 0},
    {"s=3 d=100 max", {"QSGD_LEVELS=3", "QSGD_BUCKET=100", "QSGD_NORM=max", NULL}, 3, 100, 0},
    {"s=100 d=64", {"QSGD_LEVELS=100", "QSGD_BUCKET=64", NULL}, 100, 64, 1},
    {"s=200 d=8 max", {"QSGD_LEVELS=200", "QSGD_BUCKET=8", "QSGD_NORM=max", NULL}, 200, 8, 0},
    {"s=15 max", {"QSGD_NORM=max", NULL}, 15, 512, 0},
};
#define NMETHODS (sizeof methods / sizeof methods[0])

static const size_t sizes[] = {1, 7, 1000, 100003, 65536};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static unsigned level_bits(unsigned s)
{
    unsigned L = 0;
    while ((1u << L) < s + 1) {
        L++;
    }
    return L;
}

static size_t expected_bytes(const method_t *m, size_t n)
{
    const size_t b = 1 + level_bits(m->s);
    return 4 * ((n + m->bucket - 1) / m->bucket) + (n * b + 7) / 8;
}

typedef sqz_tc_t inst_t;

static inst_t inst_create_rank(const method_t *m, int rank)
{
    return sqz_tc_make(&sqz_compressor_qsgd, m->label, m->kv, rank);
}

static inst_t inst_create(const method_t *m) { return inst_create_rank(m, 0); }

/* ---------------------------------------------------------------------------------------------
 * An independent reader of the wire format: norms first, then b-bit codes LSB-first, level in
 * bits [0, L), sign in bit L.
 * ------------------------------------------------------------------------------------------- */
static float le_f32(const uint8_t *p)
{
    const uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                       ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static size_t n_buckets(const method_t *m, size_t n)
{
    return (n + m->bucket - 1) / m->bucket;
}

static unsigned ref_code(const method_t *m, const uint8_t *payload, size_t n, size_t i)
{
    const unsigned b = 1 + level_bits(m->s);
    const uint8_t *packed = payload + 4 * n_buckets(m, n);
    unsigned c = 0;
    for (unsigned j = 0; j < b; j++) {
        const size_t bit = i * b + j;
        c |= ((packed[bit / 8] >> (bit % 8)) & 1u) << j;
    }
    return c;
}

static void ref_set_code(const method_t *m, uint8_t *payload, size_t n, size_t i, unsigned c)
{
    const unsigned b = 1 + level_bits(m->s);
    uint8_t *packed = payload + 4 * n_buckets(m, n);
    for (unsigned j = 0; j < b; j++) {
        const size_t bit = i * b + j;
        packed[bit / 8] = (uint8_t)((packed[bit / 8] & ~(1u << (bit % 8))) |
                                    (((c >> j) & 1u) << (bit % 8)));
    }
}

static float ref_norm(const method_t *m, const uint8_t *payload, size_t i)
{
    return le_f32(payload + 4 * (i / m->bucket));
}

/* ---------------------------------------------------------------------------------------------
 * Contract tests: every configuration, every size.
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
    REQUIRE(sqz_tc_compress(&it, in, res, n, 7, 0, NULL, &payload, &args) == SQZ_OK);
    const size_t bytes = args.payload_bytes;
    CHECK_MSG(bytes == expected_bytes(m, n), "%s n=%zu: %zu bytes, expected %zu", m->label, n,
              bytes, expected_bytes(m, n));
    CHECK_EQ_INT(sqz_compressor_qsgd.max_payload(it.state, n), expected_bytes(m, n));

    /* Round trip into zeros; out == NULL validates. */
    memset(dec, 0, n * sizeof *dec);
    CHECK_EQ_INT(sqz_compressor_qsgd.decompress(it.state, payload, bytes, dec, n), SQZ_OK);
    CHECK_EQ_INT(sqz_compressor_qsgd.decompress(it.state, payload, bytes, NULL, n), SQZ_OK);

    /* The wire format, read independently, and the grid: dec = sign * l * (norm / s), with l in
     * {floor(r), floor(r) + 1}, r = |a| / norm * s, and the sign of a when l > 0. */
    const unsigned L = level_bits(m->s);
    size_t grid_bad = 0, fmt_bad = 0;
    double maxabs = 0.0, norm2_in = 0.0, norm2_err = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float a = in[i] + res_old[i];
        const unsigned c = ref_code(m, payload, n, i);
        const unsigned l = c & ((1u << L) - 1u);
        const unsigned sg = c >> L;
        const float norm = ref_norm(m, payload, i);
        const float scale = norm / (float)m->s;
        const float mag = (float)l * scale;
        const float want = sg ? -mag : mag;
        fmt_bad += !(dec[i] == want) || l > m->s;
        const double r = fabs((double)a) / (double)norm * m->s;
        const double exact = (sg ? -1.0 : 1.0) * (double)norm * l / m->s;
        grid_bad += !(fabs((double)dec[i] - exact) <= 2.0 * FLT_EPSILON * norm) ||
                    !((double)l >= floor(r * (1 - 1e-6)) &&
                      (double)l <= floor(r * (1 + 1e-6)) + 1) ||
                    (l > 0 && (int)sg != (a < 0.0f));
        maxabs = fmax(maxabs, fabs((double)a));
        norm2_in += (double)a * a;
        norm2_err += ((double)a - dec[i]) * ((double)a - dec[i]);
    }
    CHECK_MSG(fmt_bad == 0, "%s n=%zu: %zu elements differ from the reference reader", m->label, n,
              fmt_bad);
    CHECK_MSG(grid_bad == 0, "%s n=%zu: %zu elements off the grid", m->label, n, grid_bad);
    /* The l2 norm (or max |a|) of each bucket is what it claims to be. */
    size_t norm_bad = 0;
    for (size_t k = 0; k < n_buckets(m, n); k++) {
        double sq = 0.0, mx = 0.0;
        for (size_t i = k * m->bucket; i < n && i < (k + 1) * m->bucket; i++) {
            const double a = (double)(in[i] + res_old[i]);
            sq += a * a;
            mx = fmax(mx, fabs(a));
        }
        const double want = m->l2 ? sqrt(sq) : mx;
        norm_bad += !(fabs(le_f32(payload + 4 * k) - want) <= 1e-6 * want);
    }
    CHECK_MSG(norm_bad == 0, "%s n=%zu: %zu bucket norms wrong", m->label, n, norm_bad);

    /* Error feedback: decode + new residual == in + old residual, up to a few roundings. */
    const double tol = 8.0 * FLT_EPSILON * (maxabs + 1e-30);
    size_t ef_bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double a = (double)(in[i] + res_old[i]);
        ef_bad += !(fabs((double)dec[i] + (double)res[i] - a) <= tol);
    }
    CHECK_MSG(ef_bad == 0, "%s n=%zu: error feedback broken at %zu elements", m->label, n, ef_bad);
    CHECK_NEAR(args.norm2_in, norm2_in, 1e-5 * norm2_in + 1e-30);
    CHECK_NEAR(args.norm2_err, norm2_err, 1e-4 * norm2_in + 1e-20);

    /* Determinism; other seq, stage and rank draw other noise. */
    {
        uint8_t *p2;
        sqz_compress_args_v1_t a2;
        memcpy(res, res_old, n * sizeof *res);
        REQUIRE(sqz_tc_compress(&it, in, res, n, 7, 0, NULL, &p2, &a2) == SQZ_OK);
        CHECK(a2.payload_bytes == bytes && memcmp(p2, payload, bytes) == 0);
        free(p2);
        if (n >= 1000) {
            inst_t it1 = inst_create_rank(m, 1);
            memcpy(res, res_old, n * sizeof *res);
            REQUIRE(sqz_tc_compress(&it, in, res, n, 8, 0, NULL, &p2, &a2) == SQZ_OK);
            CHECK_MSG(memcmp(p2, payload, bytes) != 0, "%s: seq ignored", m->label);
            free(p2);
            memcpy(res, res_old, n * sizeof *res);
            REQUIRE(sqz_tc_compress(&it, in, res, n, 7, 1, NULL, &p2, &a2) == SQZ_OK);
            CHECK_MSG(memcmp(p2, payload, bytes) != 0, "%s: stage ignored", m->label);
            free(p2);
            memcpy(res, res_old, n * sizeof *res);
            REQUIRE(sqz_tc_compress(&it1, in, res, n, 7, 0, NULL, &p2, &a2) == SQZ_OK);
            CHECK_MSG(memcmp(p2, payload, bytes) != 0, "%s: rank ignored", m->label);
            free(p2);
            sqz_tc_free(&it1);
        }
    }
    /* No error feedback: residual NULL gives the same payload. */
    {
        uint8_t *p3;
        sqz_compress_args_v1_t a3;
        float *a = alloc_floats(n);
        for (size_t i = 0; i < n; i++) {
            a[i] = in[i] + res_old[i];
        }
        CHECK_EQ_INT(sqz_tc_compress(&it, a, NULL, n, 7, 0, NULL, &p3, &a3), SQZ_OK);
        CHECK(a3.payload_bytes == bytes && memcmp(p3, payload, bytes) == 0);
        free(p3);
        free(a);
    }

    /* Truncated and extended payloads are rejected without writing. */
    if (bytes > 0) {
        sqz_tc_check_rejects(&it, payload, bytes - 1, n, "truncated");
    }
    {
        uint8_t *ext = malloc(bytes + 1);
        REQUIRE(ext != NULL);
        memcpy(ext, payload, bytes);
        ext[bytes] = 0;
        sqz_tc_check_rejects(&it, ext, bytes + 1, n, "extended");
        /* Bad norms: NaN, +Inf, negative, in the last bucket. */
        const uint32_t bad_norms[3] = {0x7fc00000u, 0x7f800000u, 0xbf800000u};
        const size_t last = 4 * (n_buckets(m, n) - 1);
        for (int v = 0; v < 3 && n > 0; v++) {
            memcpy(ext, payload, bytes);
            memcpy(ext + last, &bad_norms[v], 4);
            sqz_tc_check_rejects(&it, ext, bytes, n, "bad norm");
        }
        /* A level above s in the last element, where the L-bit field can hold one. */
        if (n > 0 && m->s + 1 < (1u << L)) {
            memcpy(ext, payload, bytes);
            ref_set_code(m, ext, n, n - 1, m->s + 1);
            sqz_tc_check_rejects(&it, ext, bytes, n, "level > s");
        }
        free(ext);
    }

    /* Finiteness: NaN or Inf anywhere gives SQZ_ERR_NONFINITE and the old residual back. */
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
            CHECK_EQ_INT(sqz_tc_compress(&it, in2, res, n, 9, 0, NULL, &p4, &a4), SQZ_ERR_NONFINITE);
            CHECK_MSG(sqz_tc_residual_restored(in, res, res_old, n),
                      "%s n=%zu: residual not restored on non-finite input", m->label, n);
            free(p4);
            CHECK_EQ_INT(sqz_tc_compress(&it, in2, NULL, n, 9, 0, NULL, &p4, &a4), SQZ_ERR_NONFINITE);
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
        CHECK_EQ_INT(sqz_tc_compress(&it, in3, r3, n, 10, 0, NULL, &p5, &a5), SQZ_ERR_NONFINITE);
        CHECK(sqz_tc_residual_restored(in3, r3, r3_old, n));
        free(p5);
        free(in3);
        free(r3);
        free(r3_old);
    }

    /* Random bit flips: SQZ_OK or SQZ_ERR_CORRUPT, and out untouched on the latter. */
    if (bytes > 0) {
        uint8_t *mut = malloc(bytes);
        float *o = alloc_floats(n);
        REQUIRE(mut != NULL);
        for (int t = 0; t < 50; t++) {
            memcpy(mut, payload, bytes);
            for (int f = 0; f < 3; f++) {
                const size_t bit = (size_t)(rng_u64() % (bytes * 8));
                mut[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            }
            for (size_t i = 0; i < n; i++) {
                o[i] = 7.0f;
            }
            const sqz_status_t st = sqz_compressor_qsgd.decompress(it.state, mut, bytes, o, n);
            CHECK(st == SQZ_OK || st == SQZ_ERR_CORRUPT);
            CHECK_EQ_INT(sqz_compressor_qsgd.decompress(it.state, mut, bytes, NULL, n), st);
            if (st == SQZ_ERR_CORRUPT) {
                size_t touched = 0;
                for (size_t i = 0; i < n; i++) {
                    touched += o[i] != 7.0f;
                }
                CHECK_EQ_INT(touched, 0);
            } else {
                size_t nonfinite = 0;
                for (size_t i = 0; i < n; i++) {
                    nonfinite += !isfinite(o[i]);
                }
                CHECK_EQ_INT(nonfinite, 0);
            }
        }
        free(mut);
        free(o);
    }

    free(payload);
    free(in);
    free(res_old);
    free(res);
    free(dec);
    sqz_tc_free(&it);
}

/* ---------------------------------------------------------------------------------------------
 * QSGD's claims.
 * ------------------------------------------------------------------------------------------- */

/* Unbiasedness and the variance bound over `trials` seq values, bucket by bucket.  Per element,
 * Var = scale^2 p (1 - p) <= scale^2 / 4 (p = r - floor(r)), so the mean of T decodes lies within
 * 6 scale / (2 sqrt(T)) of v; per bucket, E||mean - v||^2 = Var_bucket / T <= bound / T. */
static void test_unbiased(const method_t *m, size_t n, int trials, double in_scale)
{
    inst_t it = inst_create(m);
    float *in = alloc_floats(n);
    float *dec = alloc_floats(n);
    double *sum = calloc(n, sizeof *sum);
    double *sqerr = calloc(n_buckets(m, n), sizeof *sqerr);
    REQUIRE(sum != NULL && sqerr != NULL);
    fill_random(in, n, in_scale);
    const size_t nb = n_buckets(m, n);
    float *norms = alloc_floats(nb);
    for (int t = 0; t < trials; t++) {
        uint8_t *payload;
        sqz_compress_args_v1_t args;
        REQUIRE(sqz_tc_compress(&it, in, NULL, n, (uint64_t)t, 0, NULL, &payload, &args) == SQZ_OK);
        memset(dec, 0, n * sizeof *dec);
        REQUIRE(sqz_compressor_qsgd.decompress(it.state, payload, args.payload_bytes, dec, n) ==
                SQZ_OK);
        for (size_t k = 0; k < nb; k++) {
            norms[k] = le_f32(payload + 4 * k);
        }
        for (size_t i = 0; i < n; i++) {
            sum[i] += dec[i];
            const double e = (double)dec[i] - in[i];
            sqerr[i / m->bucket] += e * e;
        }
        free(payload);
    }
    size_t elem_bad = 0, bucket_bad = 0, var_bad = 0, var_off = 0;
    double worst_ratio = 0.0, worst_exact = 0.0;
    for (size_t k = 0; k < nb; k++) {
        const size_t s0 = k * m->bucket, e = s0 + m->bucket < n ? s0 + m->bucket : n;
        const double d = (double)(e - s0);
        const double scale = (double)norms[k] / m->s;
        double v2 = 0.0, bias2 = 0.0, var_exact = 0.0;
        for (size_t i = s0; i < e; i++) {
            v2 += (double)in[i] * in[i];
            const double mean = sum[i] / trials;
            bias2 += (mean - in[i]) * (mean - in[i]);
            elem_bad += !(fabs(mean - in[i]) <= 6.0 * scale / (2.0 * sqrt(trials)) + 1e-6 * scale);
            const double r = fabs((double)in[i]) / norms[k] * m->s;
            const double p = r - floor(r);
            var_exact += scale * scale * p * (1.0 - p);
        }
        const double bound = fmin(d / ((double)m->s * m->s), sqrt(d) / m->s) * v2;
        const double var_emp = sqerr[k] / trials;
        bucket_bad += !(bias2 <= 4.0 * bound / trials + 1e-12 * v2);
        var_bad += !(var_emp <= bound * 1.05);
        /* The empirical variance matches scale^2 sum p (1 - p) (relative sd ~ sqrt(2/T)). */
        var_off += !(fabs(var_emp - var_exact) <= 0.1 * var_exact + 1e-9 * v2);
        worst_ratio = fmax(worst_ratio, var_emp / bound);
        worst_exact = fmax(worst_exact, fabs(var_emp / var_exact - 1.0));
    }
    CHECK_MSG(elem_bad == 0, "%s: %zu element means off", m->label, elem_bad);
    CHECK_MSG(bucket_bad == 0, "%s: %zu bucket biases beyond the bound", m->label, bucket_bad);
    CHECK_MSG(var_bad == 0, "%s: %zu buckets above the variance bound", m->label, var_bad);
    CHECK_MSG(var_off == 0, "%s: %zu buckets off the exact variance", m->label, var_off);
    printf("  unbiased/variance %-24s n=%zu T=%d: max Var/bound %.4f, max |Var/exact - 1| %.4f\n",
           m->label, n, trials, worst_ratio, worst_exact);
    free(norms);
    free(in);
    free(dec);
    free(sum);
    free(sqerr);
    sqz_tc_free(&it);
}

/* Bits per element: 1 + ceil(log2(s + 1)) + 32 / d, exactly when d | n and 8 | n. */
static void test_bits(const method_t *m)
{
    inst_t it = inst_create(m);
    const size_t n = 65536;
    float *in = alloc_floats(n);
    fill_random(in, n, 1.0);
    uint8_t *payload;
    sqz_compress_args_v1_t args;
    REQUIRE(sqz_tc_compress(&it, in, NULL, n, 1, 0, NULL, &payload, &args) == SQZ_OK);
    const double bpe = 8.0 * (double)args.payload_bytes / (double)n;
    const double want = 1.0 + level_bits(m->s) + 32.0 / (double)m->bucket;
    if (n % m->bucket == 0) {
        CHECK_MSG(fabs(bpe - want) < 1e-12, "%s: %.6f bits/elem, want %.6f", m->label, bpe, want);
    } else {
        CHECK_MSG(bpe <= want + 32.0 / (double)n, "%s: %.6f bits/elem", m->label, bpe);
    }
    free(payload);
    free(in);
    sqz_tc_free(&it);
}

/* Zero vector: exact zeros.  Extremes: the l2 norm of huge values overflows f32, tiny values
 * make s / norm overflow; both stay finite and keep the error-feedback invariant. */
static void test_extremes(const method_t *m)
{
    inst_t it = inst_create(m);
    const size_t n = 2000;
    float *in = alloc_floats(n);
    float *res = alloc_floats(n);
    float *dec = alloc_floats(n);
    const float scales[4] = {0.0f, 1e38f, 1e-42f, 3e38f};
    for (int c = 0; c < 4; c++) {
        double maxabs = 0.0;
        for (size_t i = 0; i < n; i++) {
            in[i] = scales[c] * (float)(rng_unif() * 2.0 - 1.0);
            maxabs = fmax(maxabs, fabs((double)in[i]));
        }
        if (c == 3) {
            in[5] = FLT_MAX;
            in[6] = -FLT_MAX;
            maxabs = FLT_MAX;
        }
        memset(res, 0, n * sizeof *res);
        uint8_t *payload;
        sqz_compress_args_v1_t args;
        CHECK_EQ_INT(sqz_tc_compress(&it, in, res, n, 3, 0, NULL, &payload, &args), SQZ_OK);
        memset(dec, 0, n * sizeof *dec);
        CHECK_EQ_INT(sqz_compressor_qsgd.decompress(it.state, payload, args.payload_bytes, dec, n),
                     SQZ_OK);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            bad += !isfinite(dec[i]) || !isfinite(res[i]) ||
                   !(fabs((double)dec[i] + res[i] - in[i]) <= 8.0 * FLT_EPSILON * maxabs) ||
                   (c == 0 && (dec[i] != 0.0f || res[i] != 0.0f));
        }
        CHECK_MSG(bad == 0, "%s extremes %g: %zu bad elements", m->label, (double)scales[c], bad);
        free(payload);
    }
    free(in);
    free(res);
    free(dec);
    sqz_tc_free(&it);
}

/* Server stage: a reduced chunk compressed with stage 1 and its residual round-trips too. */
static void test_server_stage(const method_t *m)
{
    inst_t it = inst_create(m);
    const size_t n = 4096;
    float *y = alloc_floats(n);
    float *sres = alloc_floats(n);
    float *dec = alloc_floats(n);
    fill_random(y, n, 2.0);
    memset(sres, 0, n * sizeof *sres);
    double acc_err = 0.0;
    for (uint64_t seq = 0; seq < 4; seq++) {
        uint8_t *payload;
        sqz_compress_args_v1_t args;
        REQUIRE(sqz_tc_compress(&it, y, sres, n, seq, 1, NULL, &payload, &args) == SQZ_OK);
        memset(dec, 0, n * sizeof *dec);
        CHECK_EQ_INT(sqz_compressor_qsgd.decompress(it.state, payload, args.payload_bytes, dec, n),
                     SQZ_OK);
        acc_err = args.norm2_err;
        free(payload);
    }
    CHECK(isfinite(acc_err));
    free(y);
    free(sres);
    free(dec);
    sqz_tc_free(&it);
}

/* ---------------------------------------------------------------------------------------------
 * Throughput: compress (with error feedback) + decode of 16M floats.
 * ------------------------------------------------------------------------------------------- */
static void bench(const method_t *m, int with_res)
{
    inst_t it = inst_create(m);
    const size_t n = (size_t)16 << 20;
    float *in = alloc_floats(n);
    float *res = alloc_floats(n);
    float *out = alloc_floats(n);
    fill_random(in, n, 1.0);
    memset(res, 0, n * sizeof *res);
    memset(out, 0, n * sizeof *out);
    const size_t maxp = sqz_compressor_qsgd.max_payload(it.state, n);
    uint8_t *payload = malloc(maxp);
    REQUIRE(payload != NULL);
    memset(payload, 0, maxp);
    double tc = 1e30, td = 1e30;
    uint64_t h = 1469598103934665603ull;
    for (int rep = 0; rep < 5; rep++) {
        const size_t bytes =
            sqz_tc_time(&it, in, with_res ? res : NULL, n, (uint64_t)rep, payload, maxp, out, &tc, &td);
        if (rep == 0) {
            for (size_t i = 0; i < bytes; i++) {
                h = (h ^ payload[i]) * 1099511628211ull;
            }
        }
    }
    const double gb = (double)n * sizeof(float) / 1e9;
    printf("  bench %-24s %s: compress %.2f GB/s, decode %.2f GB/s, both %.2f GB/s "
           "(payload hash %016llx)\n",
           m->label, with_res ? "EF   " : "no EF", gb / tc, gb / td, gb / (tc + td),
           (unsigned long long)h);
    free(payload);
    free(in);
    free(res);
    free(out);
    sqz_tc_free(&it);
}

int main(int argc, char **argv)
{
    rng_state = 0x9e3779b97f4a7c15ull; /* the seed this test was tuned with */
    for (size_t j = 0; j < NMETHODS; j++) {
        for (size_t k = 0; k < NSIZES; k++) {
            test_generic(&methods[j], sizes[k]);
        }
        test_bits(&methods[j]);
        test_extremes(&methods[j]);
        test_server_stage(&methods[j]);
    }
    /* s = 15 and s = 7 (d / s^2 bound), s = 1 (sqrt(d) / s bound, the sparse regime), max norm,
     * odd buckets. */
    test_unbiased(&methods[0], 1000, 2000, 1.0);
    test_unbiased(&methods[1], 1000, 2000, 3.0);
    test_unbiased(&methods[4], 1000, 2000, 1.0);
    test_unbiased(&methods[5], 1000, 2000, 1.0);
    test_unbiased(&methods[6], 1000, 2000, 0.01);
    test_unbiased(&methods[9], 1000, 2000, 1.0);
    test_unbiased(&methods[3], 2048, 2000, 1.0);
    if (argc < 2 || strcmp(argv[1], "--no-bench") != 0) {
        bench(&methods[0], 1);
        bench(&methods[0], 0);
        bench(&methods[1], 1);
        bench(&methods[2], 1);
        bench(&methods[3], 1);
        bench(&methods[4], 1);
    }
    return sqz_test_result("test_qsgd");
}
