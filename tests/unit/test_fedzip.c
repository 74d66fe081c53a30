/*
 * Unit tests of plugins/fedzip: round trips, the error-feedback and finiteness contracts of
 * compressor_v1.h, payload sizes, decompress's validate-before-write contract, and FedZip's own
 * claims: exactly z positions sent and they are the top-z |a| (ties by lowest index), decoded
 * values are centroids, k-means never ends above the error of its quantile initialization, the
 * position coding round-trips at its edges (z = n, positions 0 and n-1, gaps near 2^32), and
 * malformed payloads (bad varints, positions past n or wrapping, labels >= c, truncated frames,
 * lying content sizes) are rejected with out untouched.  Inputs that defeat the compressor's
 * pre-sample still give the exact top-z.  Prints the bits per element at density 0.01 and the
 * compress + decode throughput on 16M floats (never asserted).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zstd.h>

#include <squeeze/compressor_v1.h>

#include "sqz_test_compressor.h"

extern const sqz_compressor_v1_t sqz_compressor_fedzip;
static const sqz_compressor_v1_t *const C = &sqz_compressor_fedzip;

/* ---------------------------------------------------------------------------------------------
 * Deterministic test data.
 * ------------------------------------------------------------------------------------------- */
enum { DATA_GAUSS = 0, DATA_TIES = 1, DATA_ZERO = 2, NDATA = 3 };

static void fill(float *x, size_t n, int kind, double scale)
{
    static const float vals[] = {1.0f, -1.0f, 2.0f, -2.0f, 0.5f};
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case DATA_GAUSS:
            x[i] = rng_gauss(scale);
            break;
        case DATA_TIES:
            x[i] = vals[rng_u64() % 5] * (float)scale;
            break;
        default:
            x[i] = 0.0f;
            break;
        }
    }
}

static double max_abs(const float *x, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        m = fabs((double)x[i]) > m ? fabs((double)x[i]) : m;
    }
    return m;
}

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* ---------------------------------------------------------------------------------------------
 * Instances.
 * ------------------------------------------------------------------------------------------- */
typedef sqz_tc_t inst_t;

/* kv: NULL-terminated overrides. */
static inst_t inst_make(const char *const *kv) { return sqz_tc_make(C, "fedzip", kv, 0); }

static size_t z_of(double density, size_t n)
{
    if (n == 0) {
        return 0;
    }
    size_t z = (size_t)ceil(density * (double)n);
    z = z < 1 ? 1 : z;
    return z < n ? z : n;
}

/* ---------------------------------------------------------------------------------------------
 * An independent reader and writer of the wire format (for the checks and handcrafted payloads).
 * ------------------------------------------------------------------------------------------- */
typedef struct parsed {
    size_t    z;
    unsigned  c;
    float     cent[16];
    uint32_t *pos; /* z positions */
    uint8_t  *lab; /* z labels */
    size_t    stream_len;
} parsed_t;

/* \return 1 when pl is well formed for n (then *p holds it; free pos/lab). */
static int parse_payload(const uint8_t *pl, size_t bytes, size_t n, parsed_t *p)
{
    memset(p, 0, sizeof *p);
    if (bytes < 8) {
        return 0;
    }
    p->z = (size_t)pl[0] | (size_t)pl[1] << 8 | (size_t)pl[2] << 16 | (size_t)pl[3] << 24;
    p->c = pl[4];
    if (p->c < 2 || p->c > 16 || p->z > n || pl[5] || pl[6] || pl[7]) {
        return 0;
    }
    if (p->z == 0) {
        return bytes == 8;
    }
    const size_t hdr = 8 + 4 * (size_t)p->c;
    if (bytes <= hdr) {
        return 0;
    }
    memcpy(p->cent, pl + 8, 4 * (size_t)p->c);
    const unsigned long long fcs = ZSTD_getFrameContentSize(pl + hdr, bytes - hdr);
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN || fcs == ZSTD_CONTENTSIZE_ERROR || fcs > 64u * n + 64) {
        return 0;
    }
    uint8_t *raw = malloc((size_t)fcs + 1);
    REQUIRE(raw != NULL);
    const size_t got = ZSTD_decompress(raw, (size_t)fcs, pl + hdr, bytes - hdr);
    if (ZSTD_isError(got) || got != fcs) {
        free(raw);
        return 0;
    }
    p->stream_len = got;
    p->pos = malloc(p->z * sizeof *p->pos);
    p->lab = malloc(p->z);
    REQUIRE(p->pos != NULL && p->lab != NULL);
    const size_t lb = (p->z + 1) / 2;
    int ok = got >= lb;
    const size_t vlen = ok ? got - lb : 0;
    size_t q = 0;
    uint64_t prev = 0;
    for (size_t j = 0; ok && j < p->z; j++) {
        uint64_t v = 0;
        int sh = 0;
        for (;;) {
            if (q >= vlen || sh > 28) {
                ok = 0;
                break;
            }
            const uint8_t b = raw[q++];
            v |= (uint64_t)(b & 0x7f) << sh;
            sh += 7;
            if (!(b & 0x80)) {
                break;
            }
        }
        const uint64_t at = j == 0 ? v : prev + 1 + v;
        ok = ok && at < n;
        p->pos[j] = (uint32_t)at;
        prev = at;
    }
    ok = ok && q == vlen;
    for (size_t j = 0; ok && j < p->z; j++) {
        p->lab[j] = (uint8_t)((raw[vlen + j / 2] >> (4 * (j % 2))) & 15);
        ok = p->lab[j] < p->c;
    }
    free(raw);
    return ok;
}

static void parsed_free(parsed_t *p)
{
    free(p->pos);
    free(p->lab);
}

/* A byte buffer. */
typedef struct buf {
    uint8_t b[4096];
    size_t  n;
} buf_t;

static void put_byte(buf_t *s, uint8_t x)
{
    REQUIRE(s->n < sizeof s->b);
    s->b[s->n++] = x;
}

static void put_varint(buf_t *s, uint64_t v)
{
    while (v >= 0x80) {
        put_byte(s, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    put_byte(s, (uint8_t)v);
}

/* Packs labels 4 bits each, LSB-first. */
static void put_labels(buf_t *s, const uint8_t *lab, size_t z)
{
    for (size_t j = 0; j < z; j += 2) {
        put_byte(s, (uint8_t)(lab[j] | (j + 1 < z ? lab[j + 1] << 4 : 0)));
    }
}

/* Header (z, c, centroids) + one zstd frame of stream (content size recorded unless !fcs) into
 * out; \return its length. */
static size_t build_payload(uint32_t z, unsigned c, const float *cent, const buf_t *stream,
                            int fcs, uint8_t *out, size_t cap)
{
    out[0] = (uint8_t)z;
    out[1] = (uint8_t)(z >> 8);
    out[2] = (uint8_t)(z >> 16);
    out[3] = (uint8_t)(z >> 24);
    out[4] = (uint8_t)c;
    out[5] = out[6] = out[7] = 0;
    memcpy(out + 8, cent, 4 * (size_t)c);
    const size_t hdr = 8 + 4 * (size_t)c;
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    REQUIRE(cc != NULL);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3);
    size_t r;
    if (fcs) {
        r = ZSTD_compress2(cc, out + hdr, cap - hdr, stream->b, stream->n);
    } else {
        /* Streaming without a pledged size: the frame has no content size. */
        ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
        ZSTD_outBuffer ob = {out + hdr, cap - hdr, 0};
        ZSTD_inBuffer ib = {stream->b, stream->n, 0};
        r = ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_end);
        REQUIRE(r == 0);
        r = ob.pos;
    }
    REQUIRE(!ZSTD_isError(r));
    ZSTD_freeCCtx(cc);
    return hdr + r;
}

/* Locates the Frame_Content_Size field of the frame at f: *off, *len (0: absent).  The value is
 * stored minus 256 when the field has 2 bytes. */
static void fcs_field(const uint8_t *f, size_t *off, size_t *len)
{
    const uint8_t fhd = f[4];
    const unsigned flag = fhd >> 6, single = (fhd >> 5) & 1, did = fhd & 3;
    static const size_t did_len[4] = {0, 1, 2, 4};
    static const size_t fcs_len[4] = {0, 2, 4, 8};
    *off = 5 + (single ? 0 : 1) + did_len[did];
    *len = flag == 0 ? (single ? 1 : 0) : fcs_len[flag];
}

/* Decodes pl (bytes) into out prefilled with a pattern; CORRUPT with out untouched expected. */
static void expect_corrupt(inst_t *it, const uint8_t *pl, size_t bytes, size_t n, const char *what)
{
    const size_t m = n < (1u << 20) ? n : 0; /* huge n: validate only */
    float *out = alloc_floats(m), *copy = alloc_floats(m);
    for (size_t i = 0; i < m; i++) {
        out[i] = copy[i] = (float)i * 0.25f - 3.0f;
    }
    const sqz_status_t s1 = C->decompress(it->state, pl, bytes, NULL, n);
    CHECK_MSG(s1 == SQZ_ERR_CORRUPT, "%s (validate): status %d", what, (int)s1);
    if (m == n) {
        const sqz_status_t s2 = C->decompress(it->state, pl, bytes, out, n);
        CHECK_MSG(s2 == SQZ_ERR_CORRUPT, "%s: status %d", what, (int)s2);
        CHECK_MSG(memcmp(out, copy, m * sizeof *out) == 0, "%s: out written", what);
    }
    free(out);
    free(copy);
}

/* ---------------------------------------------------------------------------------------------
 * References.
 * ------------------------------------------------------------------------------------------- */
typedef struct ki {
    uint32_t key, idx;
} ki_t;

static int ki_cmp(const void *pa, const void *pb)
{
    const ki_t *x = (const ki_t *)pa, *y = (const ki_t *)pb;
    if (x->key != y->key) {
        return x->key > y->key ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

static int u32_cmp(const void *pa, const void *pb)
{
    const uint32_t x = *(const uint32_t *)pa, y = *(const uint32_t *)pb;
    return x < y ? -1 : (x > y);
}

static int f32_cmp(const void *pa, const void *pb)
{
    const float x = *(const float *)pa, y = *(const float *)pb;
    return x < y ? -1 : (x > y);
}

/* The z largest |a| (ties: lower index), ascending, into sel. */
static void ref_topz(const float *a, size_t n, size_t z, uint32_t *sel)
{
    ki_t *k = malloc(n * sizeof *k);
    REQUIRE(k != NULL);
    for (size_t i = 0; i < n; i++) {
        k[i].key = f32_bits(a[i]) & 0x7fffffffu;
        k[i].idx = (uint32_t)i;
    }
    qsort(k, n, sizeof *k, ki_cmp);
    for (size_t j = 0; j < z; j++) {
        sel[j] = k[j].idx;
    }
    qsort(sel, z, sizeof *sel, u32_cmp);
    free(k);
}

/* Squared error of v[0, z) under nearest assignment to the quantile initialization of FedZip
 * (centroid j at ascending rank floor((2j + 1) z / (2c))). */
static double init_error(const float *v, size_t z, unsigned c)
{
    float *s = malloc(z * sizeof *s);
    REQUIRE(s != NULL);
    memcpy(s, v, z * sizeof *s);
    qsort(s, z, sizeof *s, f32_cmp);
    double cent[16];
    for (unsigned j = 0; j < c; j++) {
        cent[j] = s[((2 * (uint64_t)j + 1) * z) / (2 * (uint64_t)c)];
    }
    double err = 0.0;
    for (size_t i = 0; i < z; i++) {
        double best = INFINITY;
        for (unsigned j = 0; j < c; j++) {
            const double d = ((double)v[i] - cent[j]) * ((double)v[i] - cent[j]);
            best = d < best ? d : best;
        }
        err += best;
    }
    free(s);
    return err;
}

/* ---------------------------------------------------------------------------------------------
 * Contracts and claims, per size, configuration and kind of data.
 * ------------------------------------------------------------------------------------------- */
static double worst_ratio = 0.0; /* largest kept_err / init_err seen (gaussian) */
static double best_ratio = 1e300; /* smallest */

static void test_contracts(const char *const *kv, double density, unsigned clusters, size_t n,
                           int kind)
{
    inst_t it = inst_make(kv);
    const size_t z = z_of(density, n);
    float *in = alloc_floats(n), *res = alloc_floats(n), *res0 = alloc_floats(n);
    float *out = alloc_floats(n), *a = alloc_floats(n), *kept = alloc_floats(z);
    fill(in, n, kind, 1.0);
    fill(res0, n, kind == DATA_GAUSS ? DATA_GAUSS : DATA_ZERO, 0.3);
    for (size_t i = 0; i < n; i++) {
        a[i] = in[i] + res0[i];
    }
    const char *label = kv[0] != NULL ? kv[0] : "defaults";

    /* With error feedback. */
    memcpy(res, res0, n * sizeof *res);
    uint8_t *pl;
    sqz_compress_args_v1_t args;
    CHECK_EQ_INT(sqz_tc_compress(&it, in, res, n, 0, 0, NULL, &pl, &args), SQZ_OK);
    const size_t bytes = args.payload_bytes;
    parsed_t p;
    const int ok = parse_payload(pl, bytes, n, &p);
    CHECK_MSG(ok, "%s n=%zu kind %d: payload does not parse", label, n, kind);
    if (!ok) {
        goto done;
    }
    CHECK_EQ_INT(p.z, z);
    CHECK_EQ_INT(p.c, clusters);
    for (unsigned j = 0; j < p.c; j++) {
        CHECK(isfinite(p.cent[j]) && (j == 0 || p.cent[j - 1] <= p.cent[j]));
    }
    /* Exactly z positions, strictly increasing, and they are the top-z |a|. */
    uint32_t *ref = malloc((z ? z : 1) * sizeof *ref);
    REQUIRE(ref != NULL);
    ref_topz(a, n, z, ref);
    size_t mism = 0;
    for (size_t j = 0; j < z; j++) {
        mism += p.pos[j] != ref[j];
        CHECK(j == 0 || p.pos[j] > p.pos[j - 1]);
    }
    CHECK_MSG(mism == 0, "%s n=%zu kind %d: %zu positions differ from the top-z", label, n, kind,
              mism);
    free(ref);

    /* Validate only, then decode into zeros: centroids at the positions, zeros elsewhere. */
    CHECK_EQ_INT(C->decompress(it.state, pl, bytes, NULL, n), SQZ_OK);
    CHECK_EQ_INT(C->decompress(it.state, pl, bytes, out, n), SQZ_OK);
    size_t bad_val = 0, nz_else = 0;
    for (size_t j = 0; j < z; j++) {
        bad_val += f32_bits(out[p.pos[j]]) != f32_bits(p.cent[p.lab[j]] + 0.0f);
        kept[j] = a[p.pos[j]];
        out[p.pos[j]] -= out[p.pos[j]]; /* marks the kept ones for the next loop */
    }
    for (size_t i = 0; i < n; i++) {
        nz_else += out[i] != 0.0f;
    }
    CHECK_MSG(bad_val == 0 && nz_else == 0, "%s n=%zu: %zu values not centroids, %zu set elsewhere",
              label, n, bad_val, nz_else);

    /* EF invariant: decoded + residual_new == a within a few ulps of max |a|; the residual of an
     * entry not sent is a exactly. */
    memset(out, 0, n * sizeof *out);
    CHECK_EQ_INT(C->decompress(it.state, pl, bytes, out, n), SQZ_OK);
    double worst = 0.0, err2 = 0.0, in2 = 0.0;
    size_t unsent_wrong = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)out[i] + (double)res[i] - (double)a[i]);
        worst = d > worst ? d : worst;
        err2 += ((double)a[i] - out[i]) * ((double)a[i] - out[i]);
        in2 += (double)a[i] * a[i];
    }
    for (size_t j = 0, i = 0; i < n; i++) {
        if (j < z && p.pos[j] == i) {
            j++;
            continue;
        }
        unsent_wrong += f32_bits(res[i]) != f32_bits(a[i]);
    }
    const double tol = 4.0 * FLT_EPSILON * max_abs(a, n) + 1e-30;
    CHECK_MSG(worst <= tol, "%s n=%zu: EF error %.3g > %.3g", label, n, worst, tol);
    CHECK_EQ_INT(unsent_wrong, 0);
    CHECK_NEAR(args.norm2_in, in2, 1e-6 * in2 + 1e-30);
    CHECK_NEAR(args.norm2_err, err2, 1e-6 * in2 + 1e-30);

    /* k-means never ends above its quantile initialization. */
    double kerr = 0.0;
    for (size_t j = 0; j < z; j++) {
        const double d = (double)kept[j] - (double)p.cent[p.lab[j]];
        kerr += d * d;
    }
    const double ierr = init_error(kept, z, clusters);
    CHECK_MSG(kerr <= ierr * (1.0 + 1e-6) + 1e-30,
              "%s n=%zu kind %d: k-means error %.9g > init %.9g", label, n, kind, kerr, ierr);
    if (kind == DATA_GAUSS && z >= 1000 && ierr > 0.0) {
        worst_ratio = kerr / ierr > worst_ratio ? kerr / ierr : worst_ratio;
        best_ratio = kerr / ierr < best_ratio ? kerr / ierr : best_ratio;
    }

    /* Without error feedback, a = in + res0 given as in: the same payload (deterministic). */
    uint8_t *pl2;
    sqz_compress_args_v1_t args2;
    CHECK_EQ_INT(sqz_tc_compress(&it, a, NULL, n, 0, 0, NULL, &pl2, &args2), SQZ_OK);
    CHECK(args2.payload_bytes == bytes && memcmp(pl, pl2, bytes) == 0);
    free(pl2);

    /* Truncated and extended payloads: CORRUPT, out untouched. */
    {
        uint8_t *ext = malloc(bytes + 16);
        REQUIRE(ext != NULL);
        memcpy(ext, pl, bytes);
        for (size_t e = 0; e < 16; e++) {
            ext[bytes + e] = (uint8_t)rng_u64();
        }
        char what[96];
        const size_t step = bytes <= 600 ? 1 : bytes / 97 + 1;
        for (size_t l = 0; l < bytes; l += step) {
            snprintf(what, sizeof what, "%s n=%zu truncated to %zu/%zu", label, n, l, bytes);
            expect_corrupt(&it, ext, l, n, what);
        }
        snprintf(what, sizeof what, "%s n=%zu truncated by 1", label, n);
        expect_corrupt(&it, ext, bytes - 1, n, what);
        for (size_t e = 1; e <= 16; e *= 4) {
            snprintf(what, sizeof what, "%s n=%zu extended by %zu", label, n, e);
            expect_corrupt(&it, ext, bytes + e, n, what);
        }
        free(ext);
    }
    parsed_free(&p);
done:
    free(pl);
    free(in);
    free(res);
    free(res0);
    free(out);
    free(a);
    free(kept);
    sqz_tc_free(&it);
}

/* NaN/Inf in in or in the residual: SQZ_ERR_NONFINITE, residual as it was up to rounding. */
static void test_nonfinite(size_t n)
{
    const char *kv[] = {"FEDZIP_DENSITY=0.1", NULL};
    inst_t it = inst_make(kv);
    float *in = alloc_floats(n), *res = alloc_floats(n), *res0 = alloc_floats(n);
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const size_t where[] = {0, n / 2, n - 1};
    for (int b = 0; b < 3; b++) {
        for (int w = 0; w < 3; w++) {
            for (int in_res = 0; in_res < 2; in_res++) {
                fill(in, n, DATA_GAUSS, 1.0);
                fill(res0, n, DATA_GAUSS, 0.3);
                if (in_res) {
                    res0[where[w]] = bad[b];
                } else {
                    in[where[w]] = bad[b];
                }
                memcpy(res, res0, n * sizeof *res);
                uint8_t *pl;
                CHECK_EQ_INT(sqz_tc_compress(&it, in, res, n, 0, 0, NULL, &pl, NULL), SQZ_ERR_NONFINITE);
                free(pl);
                double m = 0.0;
                for (size_t i = 0; i < n; i++) {
                    const double x = (double)in[i] + res0[i];
                    m = isfinite(x) && fabs(x) > m ? fabs(x) : m;
                }
                const double tol = 2.0 * FLT_EPSILON * m;
                size_t off = 0;
                for (size_t i = 0; i < n; i++) {
                    if (i == where[w]) {
                        off += f32_bits(res[i]) != f32_bits(res0[i]);
                    } else {
                        off += !(fabs((double)res[i] - res0[i]) <= tol);
                    }
                }
                CHECK_MSG(off == 0, "n=%zu bad %d at %zu (%s): %zu residual entries moved", n, b,
                          where[w], in_res ? "residual" : "in", off);
                /* Without a residual too. */
                CHECK_EQ_INT(sqz_tc_compress(&it, in_res ? res0 : in, NULL, n, 0, 0, NULL, &pl, NULL),
                             SQZ_ERR_NONFINITE);
                free(pl);
            }
        }
    }
    free(in);
    free(res);
    free(res0);
    sqz_tc_free(&it);
}

/* Several calls on one state with the residual carried: the invariant per call, scratch reused
 * across sizes. */
static void test_multistep(void)
{
    const char *kv[] = {"FEDZIP_DENSITY=0.05", "FEDZIP_CLUSTERS=4", NULL};
    inst_t it = inst_make(kv);
    const size_t ns[] = {100003, 1000, 65536, 7, 100003, 1};
    float *in = alloc_floats(100003), *res = alloc_floats(100003), *out = alloc_floats(100003);
    float *a = alloc_floats(100003);
    for (size_t s = 0; s < sizeof ns / sizeof ns[0]; s++) {
        const size_t n = ns[s];
        fill(in, n, DATA_GAUSS, 1.0);
        for (size_t i = 0; i < n; i++) {
            a[i] = in[i] + res[i];
        }
        uint8_t *pl;
        sqz_compress_args_v1_t args;
        CHECK_EQ_INT(sqz_tc_compress(&it, in, res, n, 0, 0, NULL, &pl, &args), SQZ_OK);
        memset(out, 0, n * sizeof *out);
        CHECK_EQ_INT(C->decompress(it.state, pl, args.payload_bytes, out, n), SQZ_OK);
        double worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            const double d = fabs((double)out[i] + (double)res[i] - (double)a[i]);
            worst = d > worst ? d : worst;
        }
        CHECK_MSG(worst <= 4.0 * FLT_EPSILON * max_abs(a, n), "step %zu n=%zu: EF error %.3g", s,
                  n, worst);
        free(pl);
    }
    free(in);
    free(res);
    free(out);
    free(a);
    sqz_tc_free(&it);
}

/* Inputs that defeat the pre-sample (the compressor then falls back to an exact histogram of all
 * keys): large values exactly where a stride-16 sample looks and fewer of them than z, so that
 * the sampled bound lets too few entries through; and heavy ties, which let too many through.
 * The result must still be the exact top-z (the sample only sets the work done). */
static void test_sample_misses(void)
{
    const size_t n = (size_t)16384 * 16;
    const char *kv[] = {NULL};
    inst_t it = inst_make(kv);
    const size_t z = z_of(0.01, n);
    float *in = alloc_floats(n);
    uint32_t *ref = malloc(z * sizeof *ref);
    REQUIRE(ref != NULL);
    for (int variant = 0; variant < 3; variant++) {
        for (size_t i = 0; i < n; i++) {
            if (variant == 0) {
                in[i] = i % 16 == 0 ? (i / 16 < 300 ? 100.0f : 0.0f) : 50.0f + (float)(i % 7);
            } else if (variant == 1) {
                in[i] = i % 16 == 0 ? 100.0f : (i % 3 == 0 ? -1.0f : 0.5f);
            } else {
                in[i] = (i % 5 == 0) ? -3.0f : 3.0f; /* all tied */
            }
        }
        uint8_t *pl;
        sqz_compress_args_v1_t args;
        CHECK_EQ_INT(sqz_tc_compress(&it, in, NULL, n, 0, 0, NULL, &pl, &args), SQZ_OK);
        parsed_t p;
        CHECK(parse_payload(pl, args.payload_bytes, n, &p));
        ref_topz(in, n, z, ref);
        size_t mism = 0;
        for (size_t j = 0; j < z && p.pos != NULL; j++) {
            mism += p.pos[j] != ref[j];
        }
        CHECK_MSG(p.z == z && mism == 0, "sample-miss variant %d: %zu positions differ", variant,
                  mism);
        parsed_free(&p);
        free(pl);
    }
    free(ref);
    free(in);
    sqz_tc_free(&it);
}

/* n == 0 and the query bound. */
static void test_empty(void)
{
    const char *kv[] = {NULL};
    inst_t it = inst_make(kv);
    CHECK_EQ_INT(C->max_payload(it.state, 0), 8);
    uint8_t *pl;
    sqz_compress_args_v1_t args;
    float dummy = 0.0f;
    CHECK_EQ_INT(sqz_tc_compress(&it, &dummy, NULL, 0, 0, 0, NULL, &pl, &args), SQZ_OK);
    CHECK_EQ_INT(args.payload_bytes, 8);
    CHECK_EQ_INT(C->decompress(it.state, pl, 8, NULL, 0), SQZ_OK);
    CHECK_EQ_INT(C->decompress(it.state, pl, 8, &dummy, 0), SQZ_OK);
    expect_corrupt(&it, pl, 7, 0, "n=0 truncated");
    free(pl);
    sqz_query_v1_t q = {.size = sizeof q, .count = (size_t)UINT32_MAX + 1, .nranks = 2};
    CHECK_EQ_INT(C->query(it.state, &q), SQZ_ERR_NOT_SUPPORTED);
    q.count = UINT32_MAX;
    CHECK_EQ_INT(C->query(it.state, &q), SQZ_OK);
    sqz_tc_free(&it);

    /* Bounds are enforced by the core. */
    const char *bad[][2] = {{"FEDZIP_CLUSTERS=1", NULL},  {"FEDZIP_CLUSTERS=17", NULL},
                            {"FEDZIP_DENSITY=0", NULL},   {"FEDZIP_DENSITY=1.5", NULL},
                            {"FEDZIP_ITERS=0", NULL},     {"FEDZIP_ITERS=51", NULL},
                            {"FEDZIP_LEVEL=20", NULL},    {"FEDZIP_LEVEL=-8", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *cfg = NULL;
        char err[256];
        CHECK_MSG(sqz_plugin_config_make(C, bad[i], &cfg, err, sizeof err) != SQZ_OK, "%s accepted",
                  bad[i][0]);
        free(cfg);
    }
}

/* Position coding at its edges. */
static void test_positions(void)
{
    /* Positions 0 and n-1 of a large vector (one 3-byte gap), decoded exactly. */
    {
        const size_t n = 2000000;
        const char *kv[] = {"FEDZIP_DENSITY=1e-6", NULL};
        inst_t it = inst_make(kv);
        float *in = alloc_floats(n), *out = alloc_floats(n), *res = alloc_floats(n);
        fill(in, n, DATA_GAUSS, 1e-3);
        in[0] = 5.0f;
        in[n - 1] = -7.0f;
        uint8_t *pl;
        sqz_compress_args_v1_t args;
        CHECK_EQ_INT(sqz_tc_compress(&it, in, res, n, 0, 0, NULL, &pl, &args), SQZ_OK);
        parsed_t p;
        CHECK(parse_payload(pl, args.payload_bytes, n, &p));
        CHECK(p.z == 2 && p.pos[0] == 0 && p.pos[1] == n - 1);
        CHECK_EQ_INT(C->decompress(it.state, pl, args.payload_bytes, out, n), SQZ_OK);
        CHECK(out[0] == 5.0f && out[n - 1] == -7.0f && res[0] == 0.0f && res[n - 1] == 0.0f);
        printf("  positions 0 and n-1 (n=%zu): payload %zu bytes\n", n, args.payload_bytes);
        parsed_free(&p);
        free(pl);
        free(in);
        free(out);
        free(res);
        sqz_tc_free(&it);
    }
    /* z = n on a large zero vector: every gap 0, the most compressible stream (zstd RLE blocks),
     * which the decoder's bound on the content size per payload byte must still accept. */
    {
        const size_t n = (size_t)3 << 20;
        const char *kv[] = {"FEDZIP_DENSITY=1", NULL};
        inst_t it = inst_make(kv);
        float *in = alloc_floats(n), *out = alloc_floats(n);
        uint8_t *pl;
        sqz_compress_args_v1_t args;
        CHECK_EQ_INT(sqz_tc_compress(&it, in, NULL, n, 0, 0, NULL, &pl, &args), SQZ_OK);
        CHECK_EQ_INT(C->decompress(it.state, pl, args.payload_bytes, out, n), SQZ_OK);
        printf("  z = n = %zu zeros: payload %zu bytes (stream %zu bytes)\n", n,
               args.payload_bytes, n + (n + 1) / 2);
        free(pl);
        free(in);
        free(out);
        sqz_tc_free(&it);
    }
    const char *kv[] = {NULL};
    inst_t it = inst_make(kv);
    const float cent[3] = {-1.0f, 0.5f, 2.0f};
    uint8_t pl[8192];
    /* Handcrafted: positions {0, 128, 299} (gaps of 1 and 2 bytes), decoded. */
    {
        buf_t s = {{0}, 0};
        const uint8_t lab[3] = {2, 0, 1};
        put_varint(&s, 0);
        put_varint(&s, 127);
        put_varint(&s, 170);
        put_labels(&s, lab, 3);
        const size_t bytes = build_payload(3, 3, cent, &s, 1, pl, sizeof pl);
        float out[300] = {0};
        CHECK_EQ_INT(C->decompress(it.state, pl, bytes, out, 300), SQZ_OK);
        CHECK(out[0] == 2.0f && out[128] == -1.0f && out[299] == 0.5f);
        expect_corrupt(&it, pl, bytes, 299, "position 299 with n=299");
    }
    /* Gaps near 2^32 (validate only: n up to UINT32_MAX). */
    {
        buf_t s = {{0}, 0};
        const uint8_t lab[2] = {0, 2};
        put_varint(&s, 0);
        put_varint(&s, 4294967293u); /* position 4294967294 = UINT32_MAX - 1: a 5-byte varint */
        put_labels(&s, lab, 2);
        const size_t bytes = build_payload(2, 3, cent, &s, 1, pl, sizeof pl);
        CHECK_EQ_INT(C->decompress(it.state, pl, bytes, NULL, UINT32_MAX), SQZ_OK);
        expect_corrupt(&it, pl, bytes, (size_t)UINT32_MAX - 1, "position n with n=2^32-2");
        expect_corrupt(&it, pl, bytes, (size_t)UINT32_MAX + 1, "n > UINT32_MAX");
    }
    {
        /* First position UINT32_MAX - 1 on its own. */
        buf_t s = {{0}, 0};
        const uint8_t lab[1] = {1};
        put_varint(&s, 4294967294u);
        put_labels(&s, lab, 1);
        const size_t bytes = build_payload(1, 3, cent, &s, 1, pl, sizeof pl);
        CHECK_EQ_INT(C->decompress(it.state, pl, bytes, NULL, UINT32_MAX), SQZ_OK);
    }
    {
        /* 10, then a gap that wraps a u32 back to 10: out of order, must not pass as < n. */
        buf_t s = {{0}, 0};
        const uint8_t lab[2] = {0, 1};
        put_varint(&s, 10);
        put_varint(&s, 0xffffffffu);
        put_labels(&s, lab, 2);
        const size_t bytes = build_payload(2, 3, cent, &s, 1, pl, sizeof pl);
        expect_corrupt(&it, pl, bytes, UINT32_MAX, "u32-wrapping gap");
    }
    sqz_tc_free(&it);
}

/* Malformed payloads around a valid handcrafted one: n = 1000, z = 4, positions {0, 5, 200,
 * 999}, labels {0, 1, 2, 1}. */
static void test_malformed(void)
{
    const char *kv[] = {NULL};
    inst_t it = inst_make(kv);
    const size_t n = 1000;
    const float cent[3] = {-1.0f, 0.5f, 2.0f};
    const uint8_t lab[4] = {0, 1, 2, 1};
    uint8_t pl[8192];
    buf_t s;
#define STREAM(...)                                                                              \
    do {                                                                                         \
        s.n = 0;                                                                                 \
        __VA_ARGS__;                                                                             \
    } while (0)
#define GOOD_POS()                                                                               \
    do {                                                                                         \
        put_varint(&s, 0);                                                                       \
        put_varint(&s, 4);                                                                       \
        put_varint(&s, 194);                                                                     \
        put_varint(&s, 798);                                                                     \
    } while (0)
    size_t bytes;

    /* The valid one. */
    STREAM(GOOD_POS(); put_labels(&s, lab, 4));
    bytes = build_payload(4, 3, cent, &s, 1, pl, sizeof pl);
    {
        float out[1000] = {0};
        CHECK_EQ_INT(C->decompress(it.state, pl, bytes, out, n), SQZ_OK);
        CHECK(out[0] == -1.0f && out[5] == 0.5f && out[200] == 2.0f && out[999] == 0.5f);
    }
    /* Header fields. */
    {
        uint8_t q[8192];
        memcpy(q, pl, bytes);
        q[5] = 1;
        expect_corrupt(&it, q, bytes, n, "reserved byte");
        memcpy(q, pl, bytes);
        q[0] = 5; /* z = 5 but 4 varints + 2 label bytes: content size or parse mismatch */
        expect_corrupt(&it, q, bytes, n, "z too large for the stream");
        memcpy(q, pl, bytes);
        q[0] = 3;
        expect_corrupt(&it, q, bytes, n, "z too small for the stream");
        memcpy(q, pl, bytes);
        q[0] = 0xe9;
        q[1] = 0x03; /* z = 1001 > n */
        expect_corrupt(&it, q, bytes, n, "z > n");
        memcpy(q, pl, bytes);
        q[0] = q[1] = q[2] = q[3] = 0;
        expect_corrupt(&it, q, bytes, n, "z = 0 with a body");
        const float badc[][3] = {{NAN, 0.5f, 2.0f}, {-1.0f, INFINITY, 2.0f}, {2.0f, 0.5f, -1.0f}};
        for (int b = 0; b < 3; b++) {
            const size_t nb = build_payload(4, 3, badc[b], &s, 1, q, sizeof q);
            expect_corrupt(&it, q, nb, n, b < 2 ? "non-finite centroid" : "centroids descending");
        }
    }
    /* Cluster count outside [2, 16] or labels too large for it. */
    {
        const float c16[16] = {0};
        const size_t nb = build_payload(4, 2, cent, &s, 1, pl, sizeof pl);
        expect_corrupt(&it, pl, nb, n, "label 2 with c = 2");
        const size_t n1 = build_payload(4, 1, cent, &s, 1, pl, sizeof pl);
        expect_corrupt(&it, pl, n1, n, "c = 1");
        const uint8_t l15[4] = {15, 15, 15, 15};
        STREAM(GOOD_POS(); put_labels(&s, l15, 4));
        CHECK_EQ_INT(C->decompress(it.state, pl, build_payload(4, 16, c16, &s, 1, pl, sizeof pl),
                                   NULL, n),
                     SQZ_OK);
        uint8_t q[8192];
        const size_t n17 = build_payload(4, 16, c16, &s, 1, q, sizeof q);
        q[4] = 17;
        expect_corrupt(&it, q, n17, n, "c = 17");
    }
    {
        const uint8_t l3[4] = {0, 3, 1, 1};
        STREAM(GOOD_POS(); put_labels(&s, l3, 4));
        expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n, "label 3, c 3");
        /* Odd z: the unused nibble must be 0. */
        STREAM(put_varint(&s, 0); put_varint(&s, 4); put_varint(&s, 194); put_byte(&s, 0x10);
               put_byte(&s, 0x02));
        CHECK_EQ_INT(C->decompress(it.state, pl, build_payload(3, 3, cent, &s, 1, pl, sizeof pl),
                                   NULL, n),
                     SQZ_OK);
        STREAM(put_varint(&s, 0); put_varint(&s, 4); put_varint(&s, 194); put_byte(&s, 0x10);
               put_byte(&s, 0x12));
        expect_corrupt(&it, pl, build_payload(3, 3, cent, &s, 1, pl, sizeof pl), n,
                       "padding nibble set");
    }
    /* Varints. */
    STREAM(put_varint(&s, 0); put_varint(&s, 4); put_varint(&s, 194); put_varint(&s, 799);
           put_labels(&s, lab, 4));
    expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n, "position == n");
    STREAM(put_varint(&s, 0); put_varint(&s, 4); put_byte(&s, 0x85); put_byte(&s, 0x00);
           put_varint(&s, 798); put_labels(&s, lab, 4));
    expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n, "overlong varint");
    STREAM(put_varint(&s, 0); put_varint(&s, 4);
           for (int k = 0; k < 4; k++) { put_byte(&s, 0x80); } put_byte(&s, 0x10);
           put_varint(&s, 798); put_labels(&s, lab, 4));
    expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n, "varint >= 2^32");
    STREAM(put_varint(&s, 0); put_varint(&s, 4);
           for (int k = 0; k < 5; k++) { put_byte(&s, 0x81); } put_byte(&s, 0x00);
           put_varint(&s, 798); put_labels(&s, lab, 4));
    expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n, "6-byte varint");
    STREAM(put_varint(&s, 0); put_varint(&s, 4); put_varint(&s, 194); put_byte(&s, 0x81);
           put_labels(&s, lab, 4));
    expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n,
                   "varint running into the labels");
    STREAM(GOOD_POS(); put_byte(&s, 0x00); put_labels(&s, lab, 4));
    expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n,
                   "a spare varint byte");
    STREAM(GOOD_POS(); put_labels(&s, lab, 4); put_byte(&s, 0));
    expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n,
                   "a spare label byte");
    /* Content size outside [z + ceil(z/2), 5z + ceil(z/2)] (valid frames). */
    STREAM(for (int k = 0; k < 23; k++) { put_byte(&s, 0); });
    expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n, "content 23 > 22");
    STREAM(for (int k = 0; k < 5; k++) { put_byte(&s, 0); });
    expect_corrupt(&it, pl, build_payload(4, 3, cent, &s, 1, pl, sizeof pl), n, "content 5 < 6");

    /* Frames. */
    STREAM(GOOD_POS(); put_labels(&s, lab, 4));
    bytes = build_payload(4, 3, cent, &s, 1, pl, sizeof pl);
    const size_t hdr = 8 + 12;
    {
        uint8_t q[8192];
        const size_t nb = build_payload(4, 3, cent, &s, 0, q, sizeof q);
        CHECK(ZSTD_getFrameContentSize(q + hdr, nb - hdr) == ZSTD_CONTENTSIZE_UNKNOWN);
        expect_corrupt(&it, q, nb, n, "frame without content size");
        /* Two frames. */
        memcpy(q, pl, bytes);
        memcpy(q + bytes, pl + hdr, bytes - hdr);
        expect_corrupt(&it, q, bytes + bytes - hdr, n, "two frames");
        /* A skippable frame. */
        memcpy(q, pl, hdr);
        const uint8_t skip[12] = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
        memcpy(q + hdr, skip, sizeof skip);
        expect_corrupt(&it, q, hdr + sizeof skip, n, "skippable frame");
        /* Garbage instead of a frame. */
        for (size_t k = hdr; k < bytes; k++) {
            q[k] = (uint8_t)rng_u64();
        }
        expect_corrupt(&it, q, bytes, n, "garbage frame");
        /* Truncated frame, every cut. */
        for (size_t l = hdr; l < bytes; l++) {
            expect_corrupt(&it, pl, l, n, "truncated frame");
        }
        /* Lying content sizes (one more, one less, far more) with the real block. */
        size_t off, len;
        fcs_field(pl + hdr, &off, &len);
        CHECK(len > 0);
        const long deltas[] = {1, -1, 2, 100};
        for (size_t d = 0; d < sizeof deltas / sizeof deltas[0] && len > 0; d++) {
            memcpy(q, pl, bytes);
            uint64_t v = 0;
            for (size_t k = 0; k < len; k++) {
                v |= (uint64_t)q[hdr + off + k] << (8 * k);
            }
            v = (uint64_t)((long)v + deltas[d]);
            for (size_t k = 0; k < len; k++) {
                q[hdr + off + k] = (uint8_t)(v >> (8 * k));
            }
            char what[64];
            snprintf(what, sizeof what, "content size lies by %ld", deltas[d]);
            expect_corrupt(&it, q, bytes, n, what);
        }
    }
#undef STREAM
#undef GOOD_POS
    sqz_tc_free(&it);
}

/* ---------------------------------------------------------------------------------------------
 * Bits per element at density 0.01, and throughput (printed, never asserted).
 * ------------------------------------------------------------------------------------------- */
static void test_bits(void)
{
    const size_t n = 1u << 20;
    const unsigned cs[] = {3, 2, 16};
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
        char cbuf[32];
        snprintf(cbuf, sizeof cbuf, "FEDZIP_CLUSTERS=%u", cs[ci]);
        const char *kv[] = {cbuf, NULL};
        inst_t it = inst_make(kv);
        float *in = alloc_floats(n);
        fill(in, n, DATA_GAUSS, 1.0);
        uint8_t *pl;
        sqz_compress_args_v1_t args;
        CHECK_EQ_INT(sqz_tc_compress(&it, in, NULL, n, 0, 0, NULL, &pl, &args), SQZ_OK);
        parsed_t p;
        CHECK(parse_payload(pl, args.payload_bytes, n, &p));
        const size_t z = z_of(0.01, n);
        const double bpe = 8.0 * (double)args.payload_bytes / (double)n;
        const double bpk = 8.0 * (double)args.payload_bytes / (double)z;
        const double topk_bpk = 8.0 * (double)(4 + 8 * z) / (double)z;
        /* ALGORITHMS.md 8.2: ideal H_b(rho) + rho * H(labels). */
        const double rho = 0.01;
        const double hb = -(rho * log2(rho) + (1 - rho) * log2(1 - rho));
        double hl = 0.0;
        size_t cnt[16] = {0};
        for (size_t j = 0; j < z; j++) {
            cnt[p.lab[j]]++;
        }
        for (unsigned j = 0; j < cs[ci]; j++) {
            if (cnt[j]) {
                const double f = (double)cnt[j] / (double)z;
                hl -= f * log2(f);
            }
        }
        double kerr = 0.0, ksq = 0.0;
        for (size_t j = 0; j < z; j++) {
            const double v = in[p.pos[j]], d = v - (double)p.cent[p.lab[j]];
            kerr += d * d;
            ksq += v * v;
        }
        printf("  bits n=2^20 density 0.01 c=%u: %zu bytes, %.4f bits/elem, %.2f bits/kept "
               "(topk %.2f: %.1fx), ideal %.4f bits/elem (H_b %.4f + rho*H(labels) %.4f), "
               "stream %.2f bytes/kept; relative error: kept values %.4f, all %.4f\n",
               cs[ci], args.payload_bytes, bpe, bpk, topk_bpk, topk_bpk / bpk, hb + rho * hl, hb,
               rho * hl, (double)p.stream_len / (double)z, sqrt(kerr / ksq),
               sqrt(args.norm2_err / args.norm2_in));
        CHECK_MSG(bpk < topk_bpk / 4.0, "%.2f bits per kept element", bpk);
        parsed_free(&p);
        free(pl);
        free(in);
        sqz_tc_free(&it);
    }
}

static void bench(const char *const *kv, double density, unsigned clusters, int ef)
{
    const size_t n = (size_t)16 << 20;
    inst_t it = inst_make(kv);
    float *in = alloc_floats(n), *res = alloc_floats(n), *out = alloc_floats(n);
    fill(in, n, DATA_GAUSS, 1.0);
    const size_t maxp = C->max_payload(it.state, n);
    uint8_t *pl = malloc(maxp);
    REQUIRE(pl != NULL);
    double tc = 1e30, td = 1e30;
    size_t bytes = 0;
    for (int rep = 0; rep < 5; rep++) {
        bytes = sqz_tc_time(&it, in, ef ? res : NULL, n, (uint64_t)rep, pl, maxp, out, &tc, &td);
    }
    const double gb = 4.0 * (double)n / 1e9;
    printf("  bench n=16M density %g c=%u %s %s: %.4f bits/elem; compress %.2f ms (%.2f GB/s), "
           "decode %.2f ms (%.1f GB/s); compress+decode %.2f GB/s\n",
           density, clusters, kv[0] != NULL ? kv[0] : "defaults", ef ? "EF" : "no EF",
           8.0 * (double)bytes / (double)n, 1e3 * tc, gb / tc, 1e3 * td, gb / td, gb / (tc + td));
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
        const char *kv[5];
        double      density;
        unsigned    clusters;
    } cfgs[] = {
        {{NULL}, 0.01, 3},
        {{"FEDZIP_DENSITY=0.1", "FEDZIP_CLUSTERS=16", NULL}, 0.1, 16},
        {{"FEDZIP_DENSITY=1", "FEDZIP_CLUSTERS=2", NULL}, 1.0, 2},
        {{"FEDZIP_DENSITY=1e-6", NULL}, 1e-6, 3},
        {{"FEDZIP_DENSITY=0.3", "FEDZIP_ITERS=1", "FEDZIP_LEVEL=-7", NULL}, 0.3, 3},
        {{"FEDZIP_DENSITY=0.05", "FEDZIP_CLUSTERS=5", "FEDZIP_ITERS=50", "FEDZIP_LEVEL=19"}, 0.05,
         5},
    };
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            for (int kind = 0; kind < NDATA; kind++) {
                test_contracts(cfgs[c].kv, cfgs[c].density, cfgs[c].clusters, sizes[s], kind);
            }
        }
    }
    printf("  k-means error / quantile-init error (gaussian, z >= 1000): %.4f .. %.4f\n",
           best_ratio, worst_ratio);
    CHECK(worst_ratio < 1.0); /* Lloyd improves on the initialization on such data */
    const size_t nf[] = {1, 7, 1000, 65536, 100003};
    for (size_t s = 0; s < sizeof nf / sizeof nf[0]; s++) {
        test_nonfinite(nf[s]);
    }
    test_multistep();
    test_sample_misses();
    test_empty();
    test_positions();
    test_malformed();
    test_bits();
    const char *def[] = {NULL};
    const char *c16[] = {"FEDZIP_CLUSTERS=16", "FEDZIP_ITERS=50", NULL};
    bench(def, 0.01, 3, 1);
    bench(def, 0.01, 3, 0);
    bench(c16, 0.01, 16, 1);
    return sqz_test_result("test_fedzip");
}
