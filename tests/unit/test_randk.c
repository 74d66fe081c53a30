/*
 * Unit tests of plugins/randk: round trips, the error-feedback and finiteness contracts of
 * compressor_v1.h, payload sizes, decompress's validate-before-write contract, and rand_k's own
 * claims: exactly k values sent at k distinct positions, unbiasedness of RANDK_SCALE=unbiased,
 * positions shared by every rank, summable payloads and a lossless server stage.  Prints the
 * compress + decode throughput on 16M floats (never asserted).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <squeeze/compressor_v1.h>

#include "sqz_test_compressor.h"

extern const sqz_compressor_v1_t sqz_compressor_randk;
static const sqz_compressor_v1_t *const C = &sqz_compressor_randk;

/* ---------------------------------------------------------------------------------------------
 * Deterministic test data.
 * ------------------------------------------------------------------------------------------- */
/* Random values bounded away from zero, so that the support of a decode is visible. */
static void fill_nonzero(float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++) {
        const double m = 0.1 + rng_unif();
        x[i] = (float)((rng_u64() & 1) ? m * scale : -m * scale);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Instances.
 * ------------------------------------------------------------------------------------------- */
typedef sqz_tc_t inst_t;

static inst_t inst_make(double density, int unbiased, int rank)
{
    char d[64];
    snprintf(d, sizeof d, "RANDK_DENSITY=%.17g", density);
    const char *kv[] = {d, unbiased ? "RANDK_SCALE=unbiased" : "RANDK_SCALE=none", NULL};
    return sqz_tc_make(C, "randk", kv, rank);
}

/* sqz_tc_compress without shared values, giving the payload's size. */
static sqz_status_t do_compress(inst_t *it, const float *in, float *res, size_t n, uint64_t seq,
                                int stage, uint8_t **payload, size_t *bytes)
{
    sqz_compress_args_v1_t a;
    const sqz_status_t     st = sqz_tc_compress(it, in, res, n, seq, stage, NULL, payload, &a);
    *bytes                    = a.payload_bytes;
    return st;
}

static size_t k_of(double density, size_t n)
{
    if (n == 0) {
        return 0;
    }
    size_t k = (size_t)ceil(density * (double)n);
    k = k < 1 ? 1 : k;
    return k < n ? k : n;
}

static double max_abs(const float *x, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        m = fabs((double)x[i]) > m ? fabs((double)x[i]) : m;
    }
    return m;
}

/* ---------------------------------------------------------------------------------------------
 * Contracts, per size and configuration.
 * ------------------------------------------------------------------------------------------- */
static void test_contracts(double density, int unbiased, size_t n)
{
    inst_t it = inst_make(density, unbiased, 0);
    const size_t k = k_of(density, n);
    const float scale = unbiased && k < n ? (float)((double)n / (double)k) : 1.0f;
    float *in = alloc_floats(n), *res = alloc_floats(n), *res0 = alloc_floats(n);
    float *out = alloc_floats(n), *a = alloc_floats(n);
    fill_nonzero(in, n, 1.0);
    fill_nonzero(res0, n, 0.25);
    for (size_t i = 0; i < n; i++) {
        a[i] = in[i] + res0[i];
    }

    /* Round trip without error feedback: exactly k positions carry in * scale. */
    uint8_t *pl;
    size_t bytes;
    CHECK_EQ_INT(do_compress(&it, in, NULL, n, 7, 0, &pl, &bytes), SQZ_OK);
    CHECK_EQ_INT(bytes, 12 + 4 * k);
    CHECK_EQ_INT(bytes, C->max_payload(it.state, n));
    CHECK_EQ_INT(pl[0] | pl[1] << 8 | pl[2] << 16 | (uint32_t)pl[3] << 24, k);
    CHECK_EQ_INT(C->decompress(it.state, pl, bytes, NULL, n), SQZ_OK);
    CHECK_EQ_INT(C->decompress(it.state, pl, bytes, out, n), SQZ_OK);
    size_t nnz = 0, wrong = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i] != 0.0f) {
            nnz++;
            wrong += out[i] != in[i] * scale;
        }
    }
    CHECK_MSG(nnz == k && wrong == 0, "n=%zu: %zu kept (k=%zu), %zu wrong", n, nnz, k, wrong);
    free(pl);

    /* Error feedback: decode + residual_new == in + residual_old, bit for bit with scale none. */
    memcpy(res, res0, n * sizeof *res);
    CHECK_EQ_INT(do_compress(&it, in, res, n, 8, 0, &pl, &bytes), SQZ_OK);
    memset(out, 0, n * sizeof *out);
    CHECK_EQ_INT(C->decompress(it.state, pl, bytes, out, n), SQZ_OK);
    double worst = 0.0;
    size_t inexact = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)(out[i] + res[i]) - (double)a[i]);
        worst = d > worst ? d : worst;
        inexact += (out[i] + res[i]) != a[i];
    }
    const double tol = 4.0 * FLT_EPSILON * max_abs(a, n) * scale;
    if (!unbiased || k == n) {
        CHECK_MSG(inexact == 0, "n=%zu: EF invariant inexact at %zu elements", n, inexact);
    }
    CHECK_MSG(worst <= tol, "n=%zu: EF error %.3g > %.3g", n, worst, tol);
    free(pl);

    /* A decode in another state (no cached pattern) gives the same result. */
    {
        inst_t other = inst_make(density, unbiased, 1);
        memcpy(res, res0, n * sizeof *res);
        CHECK_EQ_INT(do_compress(&it, in, res, n, 9, 0, &pl, &bytes), SQZ_OK);
        float *o1 = alloc_floats(n), *o2 = alloc_floats(n);
        CHECK_EQ_INT(C->decompress(it.state, pl, bytes, o1, n), SQZ_OK);
        CHECK_EQ_INT(C->decompress(other.state, pl, bytes, o2, n), SQZ_OK);
        CHECK(memcmp(o1, o2, n * sizeof *o1) == 0);
        free(o1);
        free(o2);
        free(pl);
        sqz_tc_free(&other);
    }

    /* Finiteness: NaN or Inf at the first, a middle and the last element; overflow of a. */
    const size_t where[3] = {0, n / 2, n - 1};
    for (int w = 0; w < 3; w++) {
        for (int kind = 0; kind < 3; kind++) {
            float *bad_in = alloc_floats(n);
            memcpy(bad_in, in, n * sizeof *in);
            memcpy(res, res0, n * sizeof *res);
            if (kind == 0) {
                bad_in[where[w]] = NAN;
            } else if (kind == 1) {
                bad_in[where[w]] = -INFINITY;
            } else {
                bad_in[where[w]] = 3e38f;
                res[where[w]] = 3e38f;
            }
            float *saved = alloc_floats(n);
            memcpy(saved, res, n * sizeof *res);
            CHECK_EQ_INT(do_compress(&it, bad_in, res, n, 10, 0, &pl, &bytes), SQZ_ERR_NONFINITE);
            double dev = 0.0;
            int nonfinite = 0;
            for (size_t i = 0; i < n; i++) {
                nonfinite |= !isfinite(res[i]);
                const double d = fabs((double)res[i] - (double)saved[i]);
                dev = d > dev ? d : dev;
            }
            const double rtol = 4.0 * FLT_EPSILON * (max_abs(in, n) + max_abs(res0, n)) * scale;
            CHECK_MSG(!nonfinite && dev <= rtol, "n=%zu kind %d at %zu: residual off by %.3g",
                      n, kind, where[w], dev);
            free(pl);
            if (kind < 2) {
                CHECK_EQ_INT(do_compress(&it, bad_in, NULL, n, 10, 0, &pl, &bytes),
                             SQZ_ERR_NONFINITE);
                free(pl);
            }
            free(saved);
            free(bad_in);
        }
    }

    /* Malformed payloads: rejected, out untouched. */
    CHECK_EQ_INT(do_compress(&it, in, NULL, n, 11, 0, &pl, &bytes), SQZ_OK);
    uint8_t *big = calloc(bytes + 16, 1);
    REQUIRE(big != NULL);
    memcpy(big, pl, bytes);
    for (size_t i = 0; i < n; i++) {
        out[i] = (float)i;
    }
    const size_t lens[] = {0, 1, 11, 12, bytes - 1, bytes + 1, bytes + 3, bytes + 4, bytes + 16};
    for (size_t j = 0; j < sizeof lens / sizeof lens[0]; j++) {
        if (lens[j] == bytes) {
            continue;
        }
        CHECK_EQ_INT(C->decompress(it.state, big, lens[j], out, n), SQZ_ERR_CORRUPT);
        CHECK_EQ_INT(C->decompress(it.state, big, lens[j], NULL, n), SQZ_ERR_CORRUPT);
    }
    /* A k that is not this configuration's, a non-finite value, the wrong n. */
    big[0] ^= 1;
    CHECK_EQ_INT(C->decompress(it.state, big, bytes, out, n), SQZ_ERR_CORRUPT);
    big[0] ^= 1;
    const uint32_t nan_bits = 0x7fc00000u, inf_bits = 0xff800000u;
    memcpy(big + bytes - 4, &nan_bits, 4);
    CHECK_EQ_INT(C->decompress(it.state, big, bytes, out, n), SQZ_ERR_CORRUPT);
    memcpy(big + bytes - 4, &inf_bits, 4);
    CHECK_EQ_INT(C->decompress(it.state, big, bytes, NULL, n), SQZ_ERR_CORRUPT);
    memcpy(big + bytes - 4, pl + bytes - 4, 4);
    if (k_of(density, n + 1000) != k) {
        CHECK_EQ_INT(C->decompress(it.state, big, bytes, out, n + 1000), SQZ_ERR_CORRUPT);
    }
    CHECK_EQ_INT(C->decompress(it.state, big, bytes, NULL, n), SQZ_OK);
    int touched = 0;
    for (size_t i = 0; i < n; i++) {
        touched |= out[i] != (float)i;
    }
    CHECK_MSG(!touched, "n=%zu: a rejected payload wrote to out", n);
    /* Any key is a valid pattern: a flipped key bit still decodes k values. */
    big[4 + (rng_u64() % 8)] ^= (uint8_t)(1u << (rng_u64() % 8));
    memset(out, 0, n * sizeof *out);
    CHECK_EQ_INT(C->decompress(it.state, big, bytes, out, n), SQZ_OK);
    nnz = 0;
    for (size_t i = 0; i < n; i++) {
        nnz += out[i] != 0.0f;
    }
    CHECK_EQ_INT(nnz, k);
    free(big);
    free(pl);

    free(in);
    free(res);
    free(res0);
    free(out);
    free(a);
    sqz_tc_free(&it);
}

/* ---------------------------------------------------------------------------------------------
 * rand_k's own claims.
 * ------------------------------------------------------------------------------------------- */

/* Support of the decode of (in, seq) in state it: the positions, ascending, into sup. */
static size_t support(inst_t *it, const float *in, size_t n, uint64_t seq, int stage,
                      uint32_t *sup)
{
    uint8_t *pl;
    size_t bytes;
    float *out = alloc_floats(n);
    CHECK_EQ_INT(do_compress(it, in, NULL, n, seq, stage, &pl, &bytes), SQZ_OK);
    CHECK_EQ_INT(C->decompress(it->state, pl, bytes, out, n), SQZ_OK);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i] != 0.0f) {
            sup[m++] = (uint32_t)i;
        }
    }
    free(out);
    free(pl);
    return m;
}

/* Two ranks at the same seq select the same positions; another seq or n selects others. */
static void test_same_pattern(double density, size_t n)
{
    inst_t r0 = inst_make(density, 0, 0), r1 = inst_make(density, 0, 1);
    const size_t k = k_of(density, n);
    float *x0 = alloc_floats(n), *x1 = alloc_floats(n);
    uint32_t *s0 = malloc((n + 1) * sizeof *s0), *s1 = malloc((n + 1) * sizeof *s1);
    REQUIRE(s0 != NULL && s1 != NULL);
    fill_nonzero(x0, n, 1.0);
    fill_nonzero(x1, n, 3.0);
    const size_t m0 = support(&r0, x0, n, 42, 0, s0);
    const size_t m1 = support(&r1, x1, n, 42, 0, s1);
    CHECK_EQ_INT(m0, k);
    CHECK(m0 == m1 && memcmp(s0, s1, m0 * sizeof *s0) == 0);
    /* The server stage selects the same positions as the workers. */
    const size_t m2 = support(&r1, x1, n, 42, 1, s1);
    CHECK(m0 == m2 && memcmp(s0, s1, m0 * sizeof *s0) == 0);
    if (k < n && n >= 100) {
        const size_t m3 = support(&r0, x0, n, 43, 0, s1);
        CHECK(m3 == k && memcmp(s0, s1, k * sizeof *s0) != 0);
    }
    free(x0);
    free(x1);
    free(s0);
    free(s1);
    sqz_tc_free(&r0);
    sqz_tc_free(&r1);
}

/* The reduce-scatter path: two ranks' payloads decoded into one buffer give a0 + a1 on the
 * common support (and 0 elsewhere); the server stage re-compresses that sum losslessly, with a
 * server residual that stays zero. */
static void test_sum_and_server(double density, int unbiased, size_t n)
{
    inst_t r0 = inst_make(density, unbiased, 0), r1 = inst_make(density, unbiased, 1);
    const size_t k = k_of(density, n);
    const float scale = unbiased && k < n ? (float)((double)n / (double)k) : 1.0f;
    float *x0 = alloc_floats(n), *x1 = alloc_floats(n), *e0 = alloc_floats(n);
    float *e1 = alloc_floats(n), *y = alloc_floats(n), *z = alloc_floats(n);
    float *sres = alloc_floats(n);
    fill_nonzero(x0, n, 1.0);
    fill_nonzero(x1, n, 1.0);
    uint8_t *p0, *p1, *p2;
    size_t b0, b1, b2;
    CHECK_EQ_INT(do_compress(&r0, x0, unbiased ? NULL : e0, n, 5, 0, &p0, &b0), SQZ_OK);
    CHECK_EQ_INT(do_compress(&r1, x1, unbiased ? NULL : e1, n, 5, 0, &p1, &b1), SQZ_OK);
    CHECK_EQ_INT(C->decompress(r0.state, p0, b0, y, n), SQZ_OK);
    CHECK_EQ_INT(C->decompress(r0.state, p1, b1, y, n), SQZ_OK);
    size_t nnz = 0, wrong = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] != 0.0f) {
            nnz++;
            wrong += y[i] != x0[i] * scale + x1[i] * scale;
        }
    }
    CHECK_MSG(nnz <= k && wrong == 0, "n=%zu: sum: %zu nonzero (k=%zu), %zu wrong", n, nnz, k,
              wrong);
    CHECK_EQ_INT(do_compress(&r1, y, sres, n, 5, 1, &p2, &b2), SQZ_OK);
    CHECK_EQ_INT(C->decompress(r0.state, p2, b2, z, n), SQZ_OK);
    CHECK_MSG(memcmp(y, z, n * sizeof *y) == 0, "n=%zu: the server stage is not lossless", n);
    int sres_zero = 1;
    for (size_t i = 0; i < n; i++) {
        sres_zero &= sres[i] == 0.0f;
    }
    CHECK_MSG(sres_zero, "n=%zu: the server residual is not zero", n);
    free(p0);
    free(p1);
    free(p2);
    free(x0);
    free(x1);
    free(e0);
    free(e1);
    free(y);
    free(z);
    free(sres);
    sqz_tc_free(&r0);
    sqz_tc_free(&r1);
}

/* RANDK_SCALE=unbiased: over T seqs the mean decode of x converges to x.  Each position is kept
 * with probability q = k/n per call, so mean_t decode_i = x_i * (n/k) * c_i / T with c_i ~
 * Binomial(T, q): its standard deviation is |x_i| sqrt((n/k - 1) / T).  Checks every z-score
 * (|z| <= 5.5) and the mean z^2 (about 1: the variance is the one rand_k predicts). */
static void test_unbiased(double density, size_t n, int T)
{
    inst_t it = inst_make(density, 1, 0);
    const size_t k = k_of(density, n);
    float *x = alloc_floats(n), *out = alloc_floats(n);
    double *sum = calloc(n, sizeof *sum);
    REQUIRE(sum != NULL);
    fill_nonzero(x, n, 1.0);
    for (int t = 0; t < T; t++) {
        uint8_t *pl;
        size_t bytes;
        CHECK_EQ_INT(do_compress(&it, x, NULL, n, 1000 + (uint64_t)t, 0, &pl, &bytes), SQZ_OK);
        memset(out, 0, n * sizeof *out);
        CHECK_EQ_INT(C->decompress(it.state, pl, bytes, out, n), SQZ_OK);
        for (size_t i = 0; i < n; i++) {
            sum[i] += out[i];
        }
        free(pl);
    }
    const double r = (double)n / (double)k;
    double zmax = 0.0, z2 = 0.0, bias = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double mean = sum[i] / T;
        if (k == n) {
            CHECK(mean == x[i]);
            continue;
        }
        const double sd = fabs((double)x[i]) * sqrt((r - 1.0) / T);
        const double z = (mean - x[i]) / sd;
        zmax = fabs(z) > zmax ? fabs(z) : zmax;
        z2 += z * z;
        bias += z;
    }
    if (k < n) {
        z2 /= (double)n;
        bias /= sqrt((double)n);
        printf("  unbiased n=%zu k=%zu T=%d: max |z| %.2f, mean z^2 %.3f, sum z/sqrt(n) %.2f\n", n,
               k, T, zmax, z2, bias);
        CHECK_MSG(zmax <= 5.5, "n=%zu: max |z| %.2f", n, zmax);
        CHECK_MSG(bias <= 5.0 && bias >= -5.0, "n=%zu: mean z * sqrt(n) = %.2f", n, bias);
        if (n >= 100) {
            /* mean z^2 has standard deviation about sqrt(2/n). */
            CHECK_MSG(fabs(z2 - 1.0) <= 6.0 * sqrt(2.0 / (double)n) + 0.02, "n=%zu: z2 %.3f", n,
                      z2);
        }
    }
    free(x);
    free(out);
    free(sum);
    sqz_tc_free(&it);
}

/* Patterns on many seqs: k distinct positions every time, and every position equally likely
 * (chi-square of the counts, n - 1 degrees of freedom, checked against mean + 6 sd). */
static void test_uniform(double density, size_t n, int T)
{
    inst_t it = inst_make(density, 0, 0);
    const size_t k = k_of(density, n);
    float *x = alloc_floats(n);
    uint32_t *sup = malloc(n * sizeof *sup);
    double *cnt = calloc(n, sizeof *cnt);
    REQUIRE(sup != NULL && cnt != NULL);
    fill_nonzero(x, n, 1.0);
    int all_k = 1;
    for (int t = 0; t < T; t++) {
        const size_t m = support(&it, x, n, 77 + 3 * (uint64_t)t, 0, sup);
        all_k &= m == k;
        for (size_t j = 0; j < m; j++) {
            cnt[sup[j]] += 1.0;
        }
    }
    CHECK_MSG(all_k, "n=%zu: some pattern does not have k=%zu positions", n, k);
    const double e = (double)T * (double)k / (double)n;
    double chi2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
    }
    /* Sampling without replacement: the counts have variance T q (1 - q), q = k/n. */
    chi2 /= 1.0 - (double)k / (double)n;
    const double df = (double)(n - 1);
    printf("  uniform n=%zu k=%zu T=%d: chi2 %.1f (df %.0f)\n", n, k, T, chi2, df);
    CHECK_MSG(fabs(chi2 - df) <= 6.0 * sqrt(2.0 * df), "n=%zu: chi2 %.1f, df %.0f", n, chi2, df);
    free(x);
    free(sup);
    free(cnt);
    sqz_tc_free(&it);
}

/* ---------------------------------------------------------------------------------------------
 * Throughput (printed, never asserted).
 * ------------------------------------------------------------------------------------------- */
static void bench(double density, int unbiased, int ef)
{
    const size_t n = (size_t)16 << 20;
    inst_t it = inst_make(density, unbiased, 0);
    float *in = alloc_floats(n), *res = alloc_floats(n), *out = alloc_floats(n);
    for (size_t i = 0; i < n; i++) {
        in[i] = (float)(rng_unif() - 0.5);
        res[i] = 0.0f;
        out[i] = 0.0f;
    }
    const size_t maxp = C->max_payload(it.state, n);
    uint8_t *pl = malloc(maxp);
    REQUIRE(pl != NULL);
    double tc = 1e30, td = 1e30, tcold = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        const size_t bytes = sqz_tc_time(&it, in, ef ? res : NULL, n, (uint64_t)rep, pl, maxp, out, &tc, &td);
        /* A decode with no cached pattern (another rank's payload of another length would). */
        inst_t fresh = inst_make(density, unbiased, 1);
        const double t3 = sqz_tc_now();
        CHECK_EQ_INT(C->decompress(fresh.state, pl, bytes, out, n), SQZ_OK);
        const double t4 = sqz_tc_now();
        sqz_tc_free(&fresh);
        tcold = t4 - t3 < tcold ? t4 - t3 : tcold;
    }
    const double gb = 4.0 * (double)n / 1e9;
    printf("  bench n=16M density %g %s %s: compress %.2f ms (%.1f GB/s), decode %.2f ms, "
           "decode without cached pattern %.2f ms; compress+decode %.1f GB/s\n",
           density, unbiased ? "unbiased" : "none", ef ? "EF" : "no EF", 1e3 * tc, gb / tc,
           1e3 * td, 1e3 * tcold, gb / (tc + td));
    free(in);
    free(res);
    free(out);
    free(pl);
    sqz_tc_free(&it);
}

int main(void)
{
    const size_t sizes[] = {1, 7, 1000, 100003, 65536};
    const struct {
        double density;
        int    unbiased;
    } cfgs[] = {{0.01, 0}, {0.1, 0}, {0.1, 1}, {0.7, 0}, {0.7, 1}, {1.0, 0}, {1.0, 1}, {1e-6, 0}};
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            test_contracts(cfgs[c].density, cfgs[c].unbiased, sizes[s]);
            test_same_pattern(cfgs[c].density, sizes[s]);
            test_sum_and_server(cfgs[c].density, cfgs[c].unbiased, sizes[s]);
        }
    }
    /* n = 0: an empty payload of 12 bytes. */
    {
        inst_t it = inst_make(0.01, 0, 0);
        uint8_t *pl;
        size_t bytes;
        CHECK_EQ_INT(do_compress(&it, NULL, NULL, 0, 1, 0, &pl, &bytes), SQZ_OK);
        CHECK_EQ_INT(bytes, 12);
        CHECK_EQ_INT(C->decompress(it.state, pl, bytes, NULL, 0), SQZ_OK);
        free(pl);
        sqz_tc_free(&it);
    }
    test_unbiased(0.1, 1000, 2000);
    test_unbiased(0.1, 7, 2000);
    test_unbiased(0.01, 1000, 2000);
    test_unbiased(0.7, 1000, 2000);
    test_unbiased(1.0, 100, 10);
    test_uniform(0.05, 1000, 2000);
    test_uniform(0.7, 1000, 2000);
    test_uniform(0.01, 65536, 200);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t n = sizes[s];
        const size_t k = k_of(0.01, n);
        printf("  bits/element at density 0.01, n=%zu: %.4f (32 k / n = %.4f)\n", n,
               8.0 * (12.0 + 4.0 * (double)k) / (double)n, 32.0 * (double)k / (double)n);
    }
    bench(0.01, 0, 1);
    bench(0.01, 1, 0);
    bench(0.1, 0, 1);
    return sqz_test_result("test_randk");
}
