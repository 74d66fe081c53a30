/*
 * Tests of the GPU codecs (src/cuda/sqz_cuda_codec.h) against the CPU plugins, on a GPU.
 * Exits 77 (skip) when no CUDA device is usable.
 *
 * For quant, sign, topk, qsgd, randk and terngrad, inputs in float32, float16 and bfloat16, and
 * several n:
 *  - quant (nearest and stochastic: the key is the CPU plugin's, so both line up exactly): the
 *    payload body and the residual are bit-identical to the CPU plugin's on the same a.
 *  - sign: scales within 1e-5 relative of the CPU's, bits identical (except where a == 0),
 *    residuals consistent with the scales.
 *  - randk (stratified positions from the key, no CPU twin): header {k, key}, one position per
 *    stratum, ascending, values equal a, residual 0 there and a elsewhere.
 *  - qsgd: norms equal to the CPU plugin's or one ulp apart (the l2 sum runs in another
 *    order); where a bucket's norm is the CPU's, decoded values and residuals bit-identical.
 *  - terngrad (the CPU plugin without a shared scaler, as the device runs it): scalers equal to
 *    the CPU's or one ulp apart (a clipped scaler is the clip level, from sums in another
 *    order); where a bucket's scaler is the CPU's, decoded values and residuals bit-identical.
 *  - topk: the threshold is the ceil(density * m)-th largest sampled |a|; the payload is exactly
 *    the first k candidates (finite, a != 0, |a| >= threshold) in index order after the per-tile
 *    staging cut; values equal a; residual 0 at kept, a elsewhere; count within a factor of k.
 *  - the error-feedback invariant decoded + new residual == a (up to one rounding), decoding the
 *    GPU payload with the CPU decoder (quant, sign) or by hand (topk), and decode_sum of the one
 *    payload equal to that decoding bit for bit.
 *  - decode_sum of 1, 2, 4 (and 9) payloads: bit-identical to the CPU sum in rank order, times
 *    scale,
 *    for every output dtype; NaN everywhere when a header is flagged or has a wrong magic.
 *  - non-finite input: flag set, those elements' residual untouched; restore gives the old
 *    residual back (within 1e-6 * (|old| + |in| + |dec|)) and counts; restore without a flagged
 *    payload changes nothing.
 *  - misaligned buffers (scalar paths) give the same results.
 * Everything is enqueued on a non-blocking stream made here; only that stream is synchronized.
 * A last section prints bandwidths (information only, not checked).
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include <squeeze.h>

#include "../unit/sqz_test.h"
#include "sqz_cuda_test.h"
#include "sqz_cuda_codec.h"
#include "sqz_cuda_methods.h"
#include "sqz_device_support.h"
#include "sqz_param.h"
#include "sqz_plugin_util.h"
#include "sqz_registry.h"
#include "sqz_residual.h"
#include "sqz_state.h"

#define SEED 1234u
#define N_MAX (((size_t)1 << 24) + 5)

static cudaStream_t g_st;
static float *base_in; /* N_MAX gaussian inputs (scale 1) */
static float *base_r;  /* N_MAX gaussian residuals (scale 0.1) */

/* ---------------------------------------------------------------------------------------------
 * Device buffers; every copy goes through g_st.
 * ------------------------------------------------------------------------------------------- */
static void dfree(void *p)
{
    CU(cudaFree(p));
}

static void h2d(void *d, const void *h, size_t bytes)
{
    CU(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, g_st));
    CU(cudaStreamSynchronize(g_st));
}

static void d2h(void *h, const void *d, size_t bytes)
{
    CU(cudaStreamSynchronize(g_st));
    CU(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, g_st));
    CU(cudaStreamSynchronize(g_st));
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 16);
    REQUIRE(p != NULL);
    return p;
}

/* ---------------------------------------------------------------------------------------------
 * Element types on the host: round to nearest even, as __float2half_rn / __float2bfloat16_rn.
 * ------------------------------------------------------------------------------------------- */
static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t f32_to_f16(float f)
{
    const uint32_t x = f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        return (uint16_t)(sign | 0x7e00u);
    }
    if (ax >= 0x477ff000u) { /* >= 65520 rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (ax < 0x38800000u) { /* below 2^-14: subnormal, round(|f| * 2^24) (exact scaling) */
        const float s = nearbyintf(bits_f32(ax) * 16777216.0f);
        return (uint16_t)(sign | (uint16_t)s);
    }
    uint32_t h = ((((ax >> 23) - 127 + 15) << 10) | ((ax & 0x7fffffu) >> 13));
    const uint32_t rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) {
        h++;
    }
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        const float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31) {
        return bits_f32(sign | 0x7f800000u | (m << 13));
    }
    return bits_f32(sign | ((e - 15 + 127) << 23) | (m << 13));
}

static uint16_t f32_to_bf16(float f)
{
    const uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((x >> 16) | 0x40u);
    }
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static float bf16_to_f32(uint16_t b)
{
    return bits_f32((uint32_t)b << 16);
}

static size_t dt_size(sqz_dtype_t d)
{
    return d == SQZ_DTYPE_FLOAT32 ? 4 : 2;
}

static const char *dt_name(sqz_dtype_t d)
{
    return d == SQZ_DTYPE_FLOAT32 ? "f32" : d == SQZ_DTYPE_FLOAT16 ? "f16" : "bf16";
}

static void to_dtype(const float *x, size_t n, sqz_dtype_t d, void *out)
{
    if (d == SQZ_DTYPE_FLOAT32) {
        memcpy(out, x, n * 4);
        return;
    }
    uint16_t *o = (uint16_t *)out;
    for (size_t i = 0; i < n; i++) {
        o[i] = d == SQZ_DTYPE_FLOAT16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
    }
}

static void from_dtype(const void *x, size_t n, sqz_dtype_t d, float *out)
{
    if (d == SQZ_DTYPE_FLOAT32) {
        memcpy(out, x, n * 4);
        return;
    }
    const uint16_t *h = (const uint16_t *)x;
    for (size_t i = 0; i < n; i++) {
        out[i] = d == SQZ_DTYPE_FLOAT16 ? f16_to_f32(h[i]) : bf16_to_f32(h[i]);
    }
}

/* \return 1 when element i of x (dtype d) is NaN. */
static int dt_isnan(const void *x, size_t i, sqz_dtype_t d)
{
    if (d == SQZ_DTYPE_FLOAT32) {
        return isnan(((const float *)x)[i]);
    }
    const uint16_t h = ((const uint16_t *)x)[i];
    return d == SQZ_DTYPE_FLOAT16 ? (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0
                                  : (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0;
}

static int finite_f(float x)
{
    return (f32_bits(x) & 0x7fffffffu) < 0x7f800000u;
}

/* ---------------------------------------------------------------------------------------------
 * Cases.
 * ------------------------------------------------------------------------------------------- */
typedef struct gcase {
    const char                *label;
    sqz_gpu_params_t           p;
    const sqz_compressor_v1_t *cpu; /* quant, sign: the CPU plugin; topk: NULL */
    const char                *kv[4];
} gcase_t;

#define QUANT(lbl, b, B, st, ...)                                                              \
    {lbl,                                                                                     \
     {.method = SQZ_GPU_QUANT, .bits = b, .bucket = B, .stochastic = st},                     \
     &sqz_compressor_quant,                                                                   \
     {__VA_ARGS__, NULL}}
#define SIGN(lbl, l2, B, ...)                                                                  \
    {lbl, {.method = SQZ_GPU_SIGN, .bucket = B, .sign_l2 = l2}, &sqz_compressor_sign,         \
     {__VA_ARGS__, NULL}}
#define TOPK(lbl, d) {lbl, {.method = SQZ_GPU_TOPK, .density = d}, NULL, {NULL}}
#define RANDK(lbl, d) {lbl, {.method = SQZ_GPU_RANDK, .density = d}, NULL, {NULL}}
#define QSGD(lbl, s, B, mx, ...)                                                               \
    {lbl, {.method = SQZ_GPU_QSGD, .levels = s, .bucket = B, .qsgd_max = mx},                 \
     &sqz_compressor_qsgd, {__VA_ARGS__, NULL}}
#define TERNGRAD(lbl, B, c, ...)                                                               \
    {lbl, {.method = SQZ_GPU_TERNGRAD, .bucket = B, .clip = c}, &sqz_compressor_terngrad,     \
     {__VA_ARGS__, NULL}}

static const gcase_t cases[] = {
    QUANT("quant b4 B512 nearest", 4, 512, 0, "QUANT_BITS=4", "QUANT_BUCKET=512"),
    QUANT("quant b1 B64 nearest", 1, 64, 0, "QUANT_BITS=1", "QUANT_BUCKET=64"),
    QUANT("quant b8 B4096 stoch", 8, 4096, 1, "QUANT_BITS=8", "QUANT_BUCKET=4096",
          "QUANT_ROUNDING=stochastic"),
    QUANT("quant b7 B8 stoch", 7, 8, 1, "QUANT_BITS=7", "QUANT_BUCKET=8",
          "QUANT_ROUNDING=stochastic"),
    QUANT("quant b3 B100 nearest", 3, 100, 0, "QUANT_BITS=3", "QUANT_BUCKET=100"),
    QUANT("quant b5 B13 stoch", 5, 13, 1, "QUANT_BITS=5", "QUANT_BUCKET=13",
          "QUANT_ROUNDING=stochastic"),
    QUANT("quant b2 B16384 nearest", 2, 16384, 0, "QUANT_BITS=2", "QUANT_BUCKET=16384"),
    QUANT("quant b6 B8192 stoch", 6, 8192, 1, "QUANT_BITS=6", "QUANT_BUCKET=8192",
          "QUANT_ROUNDING=stochastic"),
    SIGN("sign l1 B4096", 0, 4096, "SIGN_SCALE=l1", "SIGN_BUCKET=4096"),
    SIGN("sign l2 B4096", 1, 4096, "SIGN_SCALE=l2", "SIGN_BUCKET=4096"),
    SIGN("sign l1 B0", 0, 0, "SIGN_SCALE=l1", "SIGN_BUCKET=0"),
    SIGN("sign l2 B0", 1, 0, "SIGN_SCALE=l2", "SIGN_BUCKET=0"),
    SIGN("sign l1 B64", 0, 64, "SIGN_SCALE=l1", "SIGN_BUCKET=64"),
    SIGN("sign l2 B200", 1, 200, "SIGN_SCALE=l2", "SIGN_BUCKET=200"),
    SIGN("sign l1 B16384", 0, 16384, "SIGN_SCALE=l1", "SIGN_BUCKET=16384"),
    TOPK("topk d0.01", 0.01),
    TOPK("topk d0.05", 0.05),
    TOPK("topk d0.3", 0.3),
    TOPK("topk d1", 1.0),
    /* qsgd: b = 1 + L code bits from 2 to 9, buckets not a multiple of 8, odd bucket counts
     * (a code area that is not 8-byte aligned), buckets of several segments. */
    QSGD("qsgd s15 B512 l2", 15, 512, 0, "QSGD_LEVELS=15", "QSGD_BUCKET=512", "QSGD_NORM=l2"),
    QSGD("qsgd s1 B8 max", 1, 8, 1, "QSGD_LEVELS=1", "QSGD_BUCKET=8", "QSGD_NORM=max"),
    QSGD("qsgd s255 B100 l2", 255, 100, 0, "QSGD_LEVELS=255", "QSGD_BUCKET=100",
         "QSGD_NORM=l2"),
    QSGD("qsgd s127 B13 max", 127, 13, 1, "QSGD_LEVELS=127", "QSGD_BUCKET=13", "QSGD_NORM=max"),
    QSGD("qsgd s7 B65536 l2", 7, 65536, 0, "QSGD_LEVELS=7", "QSGD_BUCKET=65536",
         "QSGD_NORM=l2"),
    QSGD("qsgd s3 B4096 max", 3, 4096, 1, "QSGD_LEVELS=3", "QSGD_BUCKET=4096", "QSGD_NORM=max"),
    RANDK("randk d0.01", 0.01),
    RANDK("randk d0.05", 0.05),
    RANDK("randk d0.3", 0.3),
    RANDK("randk d1", 1.0),
    /* terngrad: clipped and not, buckets not a multiple of 4 or 8 (a chunk of 8 codes over two
     * buckets), buckets of several segments. */
    TERNGRAD("terngrad B2048 c1.5", 2048, 1.5, "TERNGRAD_BUCKET=2048", "TERNGRAD_CLIP=1.5"),
    TERNGRAD("terngrad B13 c0", 13, 0.0, "TERNGRAD_BUCKET=13", "TERNGRAD_CLIP=0"),
    TERNGRAD("terngrad B100 c2.5", 100, 2.5, "TERNGRAD_BUCKET=100", "TERNGRAD_CLIP=2.5"),
    TERNGRAD("terngrad B65536 c1", 65536, 1.0, "TERNGRAD_BUCKET=65536", "TERNGRAD_CLIP=1"),
};
#define NCASES (sizeof cases / sizeof cases[0])

static const size_t sizes[] = {1, 7, 4096, 1000003, N_MAX};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static const sqz_dtype_t dtypes[] = {SQZ_DTYPE_FLOAT32, SQZ_DTYPE_FLOAT16, SQZ_DTYPE_BFLOAT16};

typedef struct cpu_inst {
    const sqz_compressor_v1_t *c;
    void                      *config;
    void                      *state;
} cpu_inst_t;

static cpu_inst_t cpu_create(const gcase_t *gc)
{
    cpu_inst_t ci = {gc->cpu, NULL, NULL};
    char err[256] = "";
    REQUIRE(sqz_plugin_config_make(gc->cpu, gc->kv, &ci.config, err, sizeof err) == SQZ_OK);
    const sqz_compressor_env_v1_t env = {sizeof env, 0, 1, SEED};
    REQUIRE(gc->cpu->create(ci.config, &env, &ci.state) == SQZ_OK);
    return ci;
}

static void cpu_destroy(cpu_inst_t *ci)
{
    ci->c->destroy(ci->state);
    free(ci->config);
}

/* The code bits of a qsgd case: 1 + ceil(log2(s + 1)). */
static unsigned qsgd_code_bits(const gcase_t *gc)
{
    unsigned L = 0;
    while ((1u << L) < (unsigned)gc->p.levels + 1u) {
        L++;
    }
    return 1 + L;
}

/* Bytes of the CPU wire format (= the GPU body after the header) for quant, sign and qsgd. */
static size_t body_bytes(const gcase_t *gc, size_t n)
{
    if (gc->p.method == SQZ_GPU_QUANT) {
        const size_t nb = (n + gc->p.bucket - 1) / gc->p.bucket;
        return 8 * nb + sqz_pu_packed_bytes(n, (unsigned)gc->p.bits);
    }
    if (gc->p.method == SQZ_GPU_QSGD) {
        const size_t nb = (n + gc->p.bucket - 1) / gc->p.bucket;
        return 4 * nb + sqz_pu_packed_bytes(n, qsgd_code_bits(gc));
    }
    if (gc->p.method == SQZ_GPU_RANDK) {
        return 4 * sqz_cu_topk_k(gc->p.density, n);
    }
    if (gc->p.method == SQZ_GPU_TERNGRAD) {
        const size_t nb = (n + gc->p.bucket - 1) / gc->p.bucket;
        return 4 * nb + (n + 3) / 4;
    }
    const size_t nb = gc->p.bucket ? (n + gc->p.bucket - 1) / gc->p.bucket : 1;
    return 4 * nb + (n + 7) / 8;
}

static uint32_t test_key(uint64_t seq)
{
    return (uint32_t)sqz_pu_seed_key(SEED, 0, seq, 0);
}

/* randk's position of stratum j of k over n elements under key (plugins/randk/sqz_randk.cu). */
static size_t randk_pos(uint32_t key, size_t j, size_t n, size_t k)
{
    const uint64_t lo = (uint64_t)j * n / k, len = (uint64_t)(j + 1) * n / k - lo;
    return (size_t)(lo + (((uint64_t)sqz_pu_hash32(key, (uint32_t)j) * len) >> 32));
}

/* dec (zeroed by the caller or holding a running sum) += decoded GPU payload. */
static void host_decode_add(const gcase_t *gc, cpu_inst_t *ci, const uint8_t *payload, size_t n,
                            float *dec)
{
    if (gc->p.method == SQZ_GPU_RANDK) {
        const size_t k = sqz_cu_topk_k(gc->p.density, n);
        uint32_t key;
        memcpy(&key, payload + 12, 4);
        for (size_t j = 0; j < k; j++) {
            float v;
            memcpy(&v, payload + 16 + 4 * j, 4);
            dec[randk_pos(key, j, n, k)] += v;
        }
        return;
    }
    if (gc->p.method == SQZ_GPU_TOPK) {
        const size_t k = sqz_cu_topk_k(gc->p.density, n);
        uint32_t cnt;
        memcpy(&cnt, payload + 8, 4);
        const size_t c = cnt < k ? cnt : k;
        for (size_t j = 0; j < c; j++) {
            uint32_t ix;
            float v;
            memcpy(&ix, payload + 16 + 4 * j, 4);
            memcpy(&v, payload + 16 + 4 * k + 4 * j, 4);
            REQUIRE(ix < n);
            dec[ix] += v;
        }
        return;
    }
    const sqz_status_t s = ci->c->decompress(ci->state, payload + 16, body_bytes(gc, n), dec, n);
    CHECK_MSG(s == SQZ_OK, "%s n=%zu: CPU decoder rejects the GPU payload (%d)", gc->label, n,
              (int)s);
}

static int case_begin(void)
{
    return sqz_test_failures;
}

static void case_end(int f0, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("%s %s\n", sqz_test_failures == f0 ? "ok  " : "FAIL", buf);
    fflush(stdout);
}

/* ---------------------------------------------------------------------------------------------
 * Per-method checks of one compress.
 * ------------------------------------------------------------------------------------------- */

/* The CPU plugin's compress of the same a: its payload (*cp, malloc'd) and, with a residual,
 * its new residual (*rc, malloc'd, from r0).  \return the payload bytes. */
static size_t cpu_compress(cpu_inst_t *ci, const float *in_f, const float *r0, size_t n,
                           uint64_t seq, int with_res, uint8_t **cp, float **rc)
{
    const size_t maxp = ci->c->max_payload(ci->state, n);
    *cp = xmalloc(maxp);
    *rc = xmalloc(n * 4);
    memcpy(*rc, r0, n * 4);
    sqz_compress_args_v1_t a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.in = in_f;
    a.residual = with_res ? *rc : NULL;
    a.n = n;
    a.seq = seq;
    a.payload = *cp;
    a.capacity = maxp;
    REQUIRE(ci->c->compress(ci->state, &a) == SQZ_OK);
    return a.payload_bytes;
}

/* quant: body and residual bit-identical to the CPU plugin's. */
static void check_quant(const gcase_t *gc, const float *in_f, const float *r0, size_t n,
                        uint64_t seq, const uint8_t *pl, const float *res, int with_res)
{
    cpu_inst_t ci = cpu_create(gc);
    uint8_t *cp;
    float *rc;
    const size_t cpu_bytes = cpu_compress(&ci, in_f, r0, n, seq, with_res, &cp, &rc);
    const size_t body = body_bytes(gc, n);
    CHECK_EQ_INT(cpu_bytes, body);
    size_t bad = 0, first = 0;
    for (size_t q = 0; q < body; q++) {
        if (pl[16 + q] != cp[q]) {
            first = bad++ ? first : q;
        }
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu body bytes differ from the CPU's, first at %zu (%02x vs "
              "%02x, meta bytes %zu)", gc->label, n, bad, first, pl[16 + first], cp[first],
              8 * ((n + gc->p.bucket - 1) / gc->p.bucket));
    bad = 0;
    for (size_t i = 0; with_res && i < n; i++) {
        if (f32_bits(res[i]) != f32_bits(rc[i])) {
            first = bad++ ? first : i;
        }
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu residuals differ from the CPU's, first at %zu (%.9g vs "
              "%.9g)", gc->label, n, bad, first, bad ? res[first] : 0.0, bad ? rc[first] : 0.0);
    free(cp);
    free(rc);
    cpu_destroy(&ci);
}

/* sign: scales within 1e-5, bits identical but where a == 0, residual consistent. */
static void check_sign(const gcase_t *gc, const float *in_f, const float *r0, const float *av,
                       size_t n, uint64_t seq, const uint8_t *pl, const float *res, int with_res)
{
    cpu_inst_t ci = cpu_create(gc);
    uint8_t *cp;
    float *rc;
    const size_t cpu_bytes = cpu_compress(&ci, in_f, r0, n, seq, with_res, &cp, &rc);
    CHECK_EQ_INT(cpu_bytes, body_bytes(gc, n));
    const size_t B = gc->p.bucket ? gc->p.bucket : n;
    const size_t nb = gc->p.bucket ? (n + B - 1) / B : 1;
    size_t bad = 0, exact = 0;
    double worst = 0.0;
    for (size_t k = 0; k < nb; k++) {
        float sg, sc;
        memcpy(&sg, pl + 16 + 4 * k, 4);
        memcpy(&sc, cp + 4 * k, 4);
        const double rel = fabs((double)sg - sc) / (sc > 0 ? sc : 1.0);
        worst = rel > worst ? rel : worst;
        bad += !(rel <= 1e-5);
        exact += f32_bits(sg) == f32_bits(sc);
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu of %zu scales off by more than 1e-5 (worst %.3g)",
              gc->label, n, bad, nb, worst);
    bad = 0;
    size_t rbad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        const int bg = (pl[16 + 4 * nb + i / 8] >> (i % 8)) & 1;
        const int bc = (cp[4 * nb + i / 8] >> (i % 8)) & 1;
        if (bg != bc && av[i] != 0.0f) {
            first = bad++ ? first : i;
        }
        float sg;
        memcpy(&sg, pl + 16 + 4 * (i / B), 4);
        const double tol = 2e-5 * sg + 1e-6 * fabs((double)av[i]) + 1e-37;
        rbad += with_res && !(fabs((double)res[i] - rc[i]) <= tol);
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu bits differ from the CPU's, first at %zu", gc->label, n,
              bad, first);
    CHECK_MSG(rbad == 0, "%s n=%zu: %zu residuals inconsistent with the CPU's", gc->label, n,
              rbad);
    (void)exact;
    free(cp);
    free(rc);
    cpu_destroy(&ci);
}

/* qsgd and terngrad: the CPU plugin's payload and residual on the same a, bucket by bucket: the
 * bucket's f32 (qsgd's norm, terngrad's scaler) equal or one ulp apart (its double sums run in
 * another order on the GPU), and in every bucket whose f32 is the CPU's, decoded values and
 * residuals bit-identical (same key, same draws). */
static void check_bucket_scaled(const gcase_t *gc, const float *in_f, const float *r0, size_t n,
                                uint64_t seq, const uint8_t *pl, const float *res, int with_res)
{
    cpu_inst_t ci = cpu_create(gc);
    uint8_t *cp;
    float *rc;
    const size_t cpu_bytes = cpu_compress(&ci, in_f, r0, n, seq, with_res, &cp, &rc);
    CHECK_EQ_INT(cpu_bytes, body_bytes(gc, n));
    const size_t B = gc->p.bucket, nb = (n + B - 1) / B;
    char *same = xmalloc(nb);
    size_t ndiff = 0, far = 0;
    for (size_t k = 0; k < nb; k++) {
        uint32_t g, c;
        memcpy(&g, pl + 16 + 4 * k, 4);
        memcpy(&c, cp + 4 * k, 4);
        same[k] = g == c;
        ndiff += g != c;
        far += (g > c ? g - c : c - g) > 1;
    }
    CHECK_MSG(far == 0 && ndiff <= 1 + nb / 1000, "%s n=%zu: %zu of %zu bucket scales differ "
              "from the CPU's (%zu by more than one ulp)", gc->label, n, ndiff, nb, far);
    float *dg = calloc(n, 4), *dc = calloc(n, 4);
    REQUIRE(dg != NULL && dc != NULL);
    CHECK_EQ_INT(ci.c->decompress(ci.state, pl + 16, body_bytes(gc, n), dg, n), SQZ_OK);
    CHECK_EQ_INT(ci.c->decompress(ci.state, cp, body_bytes(gc, n), dc, n), SQZ_OK);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (same[i / B] && (f32_bits(dg[i]) != f32_bits(dc[i]) ||
                            (with_res && f32_bits(res[i]) != f32_bits(rc[i])))) {
            first = bad++ ? first : i;
        }
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu elements decode or keep a residual unlike the CPU's, "
              "first at %zu (%.9g vs %.9g)", gc->label, n, bad, first, bad ? dg[first] : 0.0,
              bad ? dc[first] : 0.0);
    free(dc);
    free(dg);
    free(same);
    free(cp);
    free(rc);
    cpu_destroy(&ci);
}

/* randk: one position per stratum, the kept a as they are, residual 0 there and a elsewhere. */
static void check_randk(const gcase_t *gc, const float *r0, const float *av, size_t n,
                        uint32_t key, const uint8_t *pl, const float *res, int with_res)
{
    const size_t k = sqz_cu_topk_k(gc->p.density, n);
    uint32_t hdr[4];
    memcpy(hdr, pl, 16);
    CHECK_MSG(hdr[2] == k && hdr[3] == key, "%s n=%zu: header count %u key %08x, expected %zu "
              "and %08x", gc->label, n, hdr[2], hdr[3], k, key);
    char *kept = calloc(n, 1);
    REQUIRE(kept != NULL);
    size_t bad = 0, first = 0, prev = 0;
    for (size_t j = 0; j < k; j++) {
        const size_t pos = randk_pos(key, j, n, k);
        float v;
        memcpy(&v, pl + 16 + 4 * j, 4);
        const int ok = pos < n && (j == 0 || pos > prev) && f32_bits(v) == f32_bits(av[pos]);
        first = !ok && bad++ == 0 ? j : first;
        kept[pos < n ? pos : 0] = 1;
        prev = pos;
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu entries not the a at ascending stratum positions, first "
              "%zu", gc->label, n, bad, first);
    bad = 0;
    for (size_t i = 0; with_res && i < n; i++) {
        const float want = !finite_f(av[i]) ? r0[i] : kept[i] ? 0.0f : av[i];
        first = f32_bits(res[i]) != f32_bits(want) && bad++ == 0 ? i : first;
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu residuals wrong, first at %zu", gc->label, n, bad, first);
    free(kept);
}

static int cmp_desc_u32(const void *x, const void *y)
{
    const uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? 1 : a > b ? -1 : 0;
}

/* topk: threshold, the exact expected selection, values, residual, count. */
static void check_topk(const gcase_t *gc, const float *r0, const float *av, size_t n,
                       uint32_t key, const uint8_t *pl, const float *res, uint32_t thr,
                       int with_res)
{
    const double density = gc->p.density;
    const size_t k = sqz_cu_topk_k(density, n);
    const size_t cap = sqz_cu_topk_stage_cap(density);
    uint32_t hdr[4];
    memcpy(hdr, pl, 16);
    const size_t count = hdr[2];
    CHECK_MSG(count <= k, "%s n=%zu: count %zu > k %zu", gc->label, n, count, k);

    /* The threshold from the same sample. */
    const size_t m = n < 8192 ? n : 8192;
    const size_t stride = n / m;
    const size_t off = sqz_pu_hash32(key, 0x243f6a88u) % stride;
    uint32_t *keys = xmalloc(m * 4);
    for (size_t j = 0; j < m; j++) {
        const float a = av[off + j * stride];
        keys[j] = finite_f(a) ? (f32_bits(a) & 0x7fffffffu) : 0u;
    }
    qsort(keys, m, 4, cmp_desc_u32);
    size_t kk = sqz_pu_ceil_size(density * (double)m);
    kk = kk < 1 ? 1 : (kk > m ? m : kk);
    CHECK_MSG(thr == keys[kk - 1], "%s n=%zu: threshold %08x, expected %08x", gc->label, n, thr,
              keys[kk - 1]);
    free(keys);

    /* The expected selection: per tile, the first cap candidates in index order; then the
     * first k of all. */
    uint32_t *sel = xmalloc((n + 1) * 4);
    size_t nsel = 0;
    for (size_t t0 = 0; t0 < n; t0 += SQZ_CU_TOPK_TILE) {
        const size_t t1 = t0 + SQZ_CU_TOPK_TILE < n ? t0 + SQZ_CU_TOPK_TILE : n;
        size_t c = 0;
        for (size_t i = t0; i < t1; i++) {
            const float a = av[i];
            if (finite_f(a) && a != 0.0f && (f32_bits(a) & 0x7fffffffu) >= thr) {
                if (c < cap) {
                    sel[nsel++] = (uint32_t)i;
                }
                c++;
            }
        }
    }
    const size_t want = nsel < k ? nsel : k;
    CHECK_MSG(count == want, "%s n=%zu: count %zu, expected %zu (k %zu, staged %zu)", gc->label,
              n, count, want, k, nsel);
    size_t bad = 0, first = 0;
    uint32_t prev = 0;
    char *kept = calloc(n, 1);
    REQUIRE(kept != NULL);
    for (size_t j = 0; j < count && j < want; j++) {
        uint32_t ix;
        float v;
        memcpy(&ix, pl + 16 + 4 * j, 4);
        memcpy(&v, pl + 16 + 4 * k + 4 * j, 4);
        const int ok = ix == sel[j] && ix < n && (j == 0 || ix > prev) &&
                       f32_bits(v) == f32_bits(av[ix]);
        if (!ok) {
            first = bad++ ? first : j;
        }
        if (ix < n) {
            kept[ix] = 1;
        }
        prev = ix;
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu entries differ from the expected selection, first %zu",
              gc->label, n, bad, first);
    if (with_res) {
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            const float want_r = !finite_f(av[i]) ? r0[i] : kept[i] ? 0.0f : av[i];
            if (f32_bits(res[i]) != f32_bits(want_r)) {
                first = bad++ ? first : i;
            }
        }
        CHECK_MSG(bad == 0, "%s n=%zu: %zu residuals wrong, first at %zu (%.9g, a %.9g)",
                  gc->label, n, bad, first, bad ? res[first] : 0.0, bad ? av[first] : 0.0);
    }
    /* Sampled threshold on gaussian data: the count is about k. */
    if (n >= 4096 && k >= 20) {
        CHECK_MSG(2 * count >= k, "%s n=%zu: count %zu far below k %zu", gc->label, n, count, k);
    }
    free(kept);
    free(sel);
}

/* ---------------------------------------------------------------------------------------------
 * One compress: every check above, the EF invariant, and decode_sum of the one payload.
 * ------------------------------------------------------------------------------------------- */
static void test_compress(const gcase_t *gc, sqz_dtype_t dt, size_t n, int misalign,
                          int with_res, uint64_t seq)
{
    const int f0 = case_begin();
    const size_t es = dt_size(dt);
    const size_t pb = sqz_gpu_payload_bytes(&gc->p, n);
    const size_t wb = sqz_gpu_workspace_bytes(&gc->p, n, dt);
    REQUIRE(pb >= 16 && pb % 16 == 0);
    void *in_h = xmalloc(n * es);
    float *in_f = xmalloc(n * 4);
    float *r0 = xmalloc(n * 4);
    float *av = xmalloc(n * 4);
    to_dtype(base_in, n, dt, in_h);
    from_dtype(in_h, n, dt, in_f);
    for (size_t i = 0; i < n; i++) {
        r0[i] = with_res ? base_r[i] : 0.0f;
        av[i] = with_res ? in_f[i] + r0[i] : in_f[i];
    }
    uint8_t *d_in = dalloc((n + 8) * es);
    float *d_res = dalloc((n + 8) * 4);
    uint8_t *d_pl = dalloc(pb);
    uint8_t *d_ws = dalloc(wb);
    void *in_use = d_in + (size_t)misalign * es;
    float *res_use = with_res ? d_res + misalign : NULL;
    h2d(in_use, in_h, n * es);
    if (with_res) {
        h2d(res_use, r0, n * 4);
    }
    const uint32_t key = test_key(seq);
    CHECK_EQ_INT(sqz_gpu_compress(&gc->p, in_use, dt, res_use, n, key, d_pl, d_ws, g_st),
                 SQZ_OK);
    uint8_t *pl = xmalloc(pb);
    float *res = xmalloc(n * 4);
    uint32_t ctrl[4];
    d2h(pl, d_pl, pb);
    if (with_res) {
        d2h(res, res_use, n * 4);
    }
    d2h(ctrl, d_ws, 16);

    uint32_t hdr[4];
    memcpy(hdr, pl, 16);
    CHECK_MSG(hdr[0] == SQZ_GPU_MAGIC && hdr[1] == 0 &&
                  (gc->p.method == SQZ_GPU_RANDK || hdr[3] == 0) &&
                  (gc->p.method == SQZ_GPU_TOPK || gc->p.method == SQZ_GPU_RANDK || hdr[2] == 0),
              "%s n=%zu: header %08x %08x %08x %08x", gc->label, n, hdr[0], hdr[1], hdr[2],
              hdr[3]);

    cpu_inst_t ci = {NULL, NULL, NULL};
    if (gc->cpu != NULL) {
        ci = cpu_create(gc);
    }
    if (gc->p.method == SQZ_GPU_QUANT) {
        check_quant(gc, in_f, r0, n, seq, pl, res, with_res);
    } else if (gc->p.method == SQZ_GPU_SIGN) {
        check_sign(gc, in_f, r0, av, n, seq, pl, res, with_res);
    } else if (gc->p.method == SQZ_GPU_TOPK) {
        check_topk(gc, r0, av, n, key, pl, res, ctrl[0], with_res);
    } else if (gc->p.method == SQZ_GPU_QSGD || gc->p.method == SQZ_GPU_TERNGRAD) {
        check_bucket_scaled(gc, in_f, r0, n, seq, pl, res, with_res);
    } else if (gc->p.method == SQZ_GPU_RANDK) {
        check_randk(gc, r0, av, n, key, pl, res, with_res);
    }

    /* The body past the codes is zero padding. */
    size_t pad_bad = 0;
    const size_t body = gc->p.method == SQZ_GPU_TOPK ? 16 + 8 * sqz_cu_topk_k(gc->p.density, n)
                                                     : 16 + body_bytes(gc, n);
    for (size_t q = body; q < pb; q++) {
        pad_bad += pl[q] != 0;
    }
    CHECK_MSG(pad_bad == 0, "%s n=%zu: padding not zero", gc->label, n);

    /* EF invariant: decoded + residual == a up to one rounding. */
    float *dec = calloc(n ? n : 1, 4);
    REQUIRE(dec != NULL);
    host_decode_add(gc, &ci, pl, n, dec);
    if (with_res) {
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < n; i++) {
            const double err = fabs((double)dec[i] + (double)res[i] - (double)av[i]);
            const double tol = 0x1p-23 * (fabs((double)av[i]) + fabs((double)dec[i])) + 1e-38;
            if (!(err <= tol)) {
                first = bad++ ? first : i;
            }
        }
        CHECK_MSG(bad == 0, "%s n=%zu: EF invariant broken at %zu elements, first %zu", gc->label,
                  n, bad, first);
    }
    /* decode_sum of the one payload == its decoding. */
    float *d_out = dalloc(n * 4);
    float *out = xmalloc(n * 4);
    CHECK_EQ_INT(sqz_gpu_decode_sum(&gc->p, d_pl, 1, n, 1.0f, d_out, SQZ_DTYPE_FLOAT32, d_ws, g_st),
                 SQZ_OK);
    d2h(out, d_out, n * 4);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad += f32_bits(out[i]) != f32_bits(dec[i]);
    }
    CHECK_MSG(bad == 0, "%s n=%zu: decode_sum(1 payload) differs from the decoding at %zu",
              gc->label, n, bad);

    if (gc->cpu != NULL) {
        cpu_destroy(&ci);
    }
    case_end(f0, "compress %-24s %-4s n=%-9zu%s%s", gc->label, dt_name(dt), n,
             misalign ? " misaligned" : "", with_res ? "" : " no-residual");
    free(out);
    dfree(d_out);
    free(dec);
    free(res);
    free(pl);
    dfree(d_ws);
    dfree(d_pl);
    dfree(d_res);
    dfree(d_in);
    free(av);
    free(r0);
    free(in_f);
    free(in_h);
}

/* ---------------------------------------------------------------------------------------------
 * decode_sum of R payloads against the CPU sum in rank order.
 * ------------------------------------------------------------------------------------------- */
static void test_decode(const gcase_t *gc, size_t n, int R)
{
    const int f0 = case_begin();
    const size_t pb = sqz_gpu_payload_bytes(&gc->p, n);
    size_t wb = 0;
    for (int d = 0; d < 3; d++) {
        const size_t w = sqz_gpu_workspace_bytes(&gc->p, n, dtypes[d]);
        wb = w > wb ? w : wb;
    }
    uint8_t *d_pls = dalloc(pb * (size_t)R);
    uint8_t *d_ws = dalloc(wb);
    float *d_in = dalloc(n * 4);
    float *d_res = dalloc(n * 4);
    float *hin = xmalloc(n * 4);
    float *hres = xmalloc(n * 4);
    for (int r = 0; r < R; r++) {
        for (size_t i = 0; i < n; i++) {
            hin[i] = base_in[(i + (size_t)r * 7919) % n] * (1.0f + 0.5f * (float)r);
            hres[i] = base_r[(i + (size_t)r * 104729) % n];
        }
        h2d(d_in, hin, n * 4);
        h2d(d_res, hres, n * 4);
        CHECK_EQ_INT(sqz_gpu_compress(&gc->p, d_in, SQZ_DTYPE_FLOAT32, d_res, n,
                                      test_key(1000 + (uint64_t)r), d_pls + (size_t)r * pb,
                                      d_ws, g_st),
                     SQZ_OK);
    }
    uint8_t *pls = xmalloc(pb * (size_t)R);
    d2h(pls, d_pls, pb * (size_t)R);
    cpu_inst_t ci = {NULL, NULL, NULL};
    if (gc->cpu != NULL) {
        ci = cpu_create(gc);
    }
    float *ref = calloc(n, 4);
    REQUIRE(ref != NULL);
    for (int r = 0; r < R; r++) {
        host_decode_add(gc, &ci, pls + (size_t)r * pb, n, ref);
    }
    float *refs = xmalloc(n * 4);
    uint8_t *want = xmalloc(n * 4);
    uint8_t *got = xmalloc(n * 4);
    void *d_out = dalloc(n * 4 + 16);
    const float scales[2] = {1.0f, R > 1 ? 1.0f / (float)R : 0.5f};
    for (int si = 0; si < 2; si++) {
        for (size_t i = 0; i < n; i++) {
            refs[i] = scales[si] == 1.0f ? ref[i] : ref[i] * scales[si];
        }
        /* (scale 1 also into an output one element off 16-byte alignment) */
        for (int v = 0; v < (si == 0 ? 6 : 3); v++) {
            const sqz_dtype_t od = dtypes[v % 3];
            const size_t es = dt_size(od), shift = v < 3 ? 0 : es;
            to_dtype(refs, n, od, want);
            CU(cudaMemsetAsync(d_out, 0xff, n * es + shift, g_st));
            CHECK_EQ_INT(sqz_gpu_decode_sum(&gc->p, d_pls, R, n, scales[si],
                                            (uint8_t *)d_out + shift, od, d_ws, g_st),
                         SQZ_OK);
            d2h(got, (uint8_t *)d_out + shift, n * es);
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < n; i++) {
                if (memcmp(got + i * es, want + i * es, es) != 0) {
                    first = bad++ ? first : i;
                }
            }
            CHECK_MSG(bad == 0, "%s n=%zu R=%d scale %g out %s%s: %zu elements differ from the "
                      "CPU sum, first at %zu", gc->label, n, R, (double)scales[si],
                      dt_name(od), shift ? " (unaligned)" : "", bad, first);
        }
    }
    /* A flagged header, then a wrong magic: NaN everywhere, for every output dtype. */
    for (int mode = 0; mode < 2; mode++) {
        const size_t r = mode == 0 ? (size_t)R - 1 : 0;
        const uint32_t word = mode == 0 ? SQZ_GPU_FLAG_NONFINITE : 0x12345678u;
        uint32_t saved;
        memcpy(&saved, pls + r * pb + (mode == 0 ? 4 : 0), 4);
        h2d(d_pls + r * pb + (mode == 0 ? 4 : 0), &word, 4);
        for (int d = 0; d < 3; d++) {
            const sqz_dtype_t od = dtypes[d];
            CU(cudaMemsetAsync(d_out, 0, n * dt_size(od), g_st));
            CHECK_EQ_INT(sqz_gpu_decode_sum(&gc->p, d_pls, R, n, scales[1], d_out, od, d_ws,
                                            g_st),
                         SQZ_OK);
            d2h(got, d_out, n * dt_size(od));
            size_t notnan = 0;
            for (size_t i = 0; i < n; i++) {
                notnan += !dt_isnan(got, i, od);
            }
            CHECK_MSG(notnan == 0, "%s n=%zu R=%d %s out %s: %zu elements not NaN", gc->label, n,
                      R, mode == 0 ? "flagged" : "bad magic", dt_name(od), notnan);
        }
        h2d(d_pls + r * pb + (mode == 0 ? 4 : 0), &saved, 4);
    }
    case_end(f0, "decode   %-24s R=%d n=%zu", gc->label, R, n);
    if (gc->cpu != NULL) {
        cpu_destroy(&ci);
    }
    dfree(d_out);
    free(got);
    free(want);
    free(refs);
    free(ref);
    free(pls);
    free(hres);
    free(hin);
    dfree(d_res);
    dfree(d_in);
    dfree(d_ws);
    dfree(d_pls);
}

/* ---------------------------------------------------------------------------------------------
 * Non-finite input, restore.
 * ------------------------------------------------------------------------------------------- */
static void test_nonfinite(const gcase_t *gc, sqz_dtype_t dt, size_t n)
{
    const int f0 = case_begin();
    const size_t es = dt_size(dt);
    const size_t pb = sqz_gpu_payload_bytes(&gc->p, n);
    const size_t wb = sqz_gpu_workspace_bytes(&gc->p, n, dt);
    float *x = xmalloc(n * 4);
    memcpy(x, base_in, n * 4);
    const size_t bad_at[3] = {1, n / 2, n - 1};
    x[bad_at[0]] = NAN;
    x[bad_at[1]] = INFINITY;
    x[bad_at[2]] = -INFINITY;
    void *in_h = xmalloc(n * es);
    float *in_f = xmalloc(n * 4);
    to_dtype(x, n, dt, in_h);
    from_dtype(in_h, n, dt, in_f);
    float *r0 = xmalloc(n * 4);
    memcpy(r0, base_r, n * 4);

    uint8_t *d_in = dalloc(n * es);
    float *d_res = dalloc(n * 4);
    uint8_t *d_pls = dalloc(2 * pb);
    uint8_t *d_ws = dalloc(wb);
    unsigned long long *d_cnt = dalloc(8);
    const unsigned long long c0 = 5;
    h2d(d_cnt, &c0, 8);
    h2d(d_in, in_h, n * es);
    h2d(d_res, r0, n * 4);
    CHECK_EQ_INT(sqz_gpu_compress(&gc->p, d_in, dt, d_res, n, test_key(77), d_pls, d_ws, g_st),
                 SQZ_OK);
    uint8_t *pl = xmalloc(pb);
    float *res = xmalloc(n * 4);
    d2h(pl, d_pls, pb);
    d2h(res, d_res, n * 4);
    uint32_t flags;
    memcpy(&flags, pl + 4, 4);
    CHECK_MSG(flags == SQZ_GPU_FLAG_NONFINITE, "%s n=%zu: flags %u", gc->label, n, flags);
    for (int q = 0; q < 3; q++) {
        CHECK_MSG(f32_bits(res[bad_at[q]]) == f32_bits(r0[bad_at[q]]),
                  "%s n=%zu: residual of non-finite element %zu changed", gc->label, n,
                  bad_at[q]);
    }
    /* EF invariant over the finite elements (the CPU decoder ignores the header). */
    cpu_inst_t ci = {NULL, NULL, NULL};
    if (gc->cpu != NULL) {
        ci = cpu_create(gc);
    }
    float *dec = calloc(n, 4);
    REQUIRE(dec != NULL);
    host_decode_add(gc, &ci, pl, n, dec);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const float a = in_f[i] + r0[i];
        if (finite_f(a)) {
            const double err = fabs((double)dec[i] + (double)res[i] - (double)a);
            bad += !(err <= 0x1p-23 * (fabs((double)a) + fabs((double)dec[i])) + 1e-38);
        }
    }
    CHECK_MSG(bad == 0, "%s n=%zu: EF invariant broken at %zu finite elements", gc->label, n, bad);

    /* decode_sum: NaN everywhere. */
    float *d_out = dalloc(n * 4);
    float *out = xmalloc(n * 4);
    CHECK_EQ_INT(sqz_gpu_decode_sum(&gc->p, d_pls, 1, n, 1.0f, d_out, SQZ_DTYPE_FLOAT32, d_ws,
                                    g_st),
                 SQZ_OK);
    d2h(out, d_out, n * 4);
    bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad += !isnan(out[i]);
    }
    CHECK_MSG(bad == 0, "%s n=%zu: %zu outputs not NaN", gc->label, n, bad);

    /* restore: the old residual back, the counter incremented. */
    CHECK_EQ_INT(sqz_gpu_restore(&gc->p, d_pls, 1, 0, d_in, dt, d_res, n, d_cnt, d_ws, g_st),
                 SQZ_OK);
    unsigned long long cnt;
    d2h(res, d_res, n * 4);
    d2h(&cnt, d_cnt, 8);
    CHECK_MSG(cnt == 6, "%s n=%zu: counter %llu, expected 6", gc->label, n, cnt);
    bad = 0;
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        const double tol =
            1e-6 * (fabs((double)r0[i]) + fabs((double)in_f[i]) + fabs((double)dec[i])) + 1e-38;
        const int ok = finite_f(in_f[i] + r0[i]) ? fabs((double)res[i] - r0[i]) <= tol
                                                 : f32_bits(res[i]) == f32_bits(r0[i]);
        if (!ok) {
            first = bad++ ? first : i;
        }
    }
    CHECK_MSG(bad == 0, "%s n=%zu: restore missed %zu residuals, first %zu (%.9g vs %.9g)",
              gc->label, n, bad, first, bad ? res[first] : 0.0, bad ? r0[first] : 0.0);

    /* Two ranks: own payload clean (slot 0), the other flagged (slot 1): restore again. */
    uint8_t *flagged = xmalloc(pb);
    memcpy(flagged, pl, pb);
    h2d(d_pls + pb, flagged, pb);
    float *hin = xmalloc(n * 4);
    memcpy(hin, base_in, n * 4);
    void *hin_dt = xmalloc(n * es);
    to_dtype(hin, n, dt, hin_dt);
    from_dtype(hin_dt, n, dt, hin);
    h2d(d_in, hin_dt, n * es);
    h2d(d_res, r0, n * 4);
    CHECK_EQ_INT(sqz_gpu_compress(&gc->p, d_in, dt, d_res, n, test_key(78), d_pls, d_ws, g_st),
                 SQZ_OK);
    memset(dec, 0, n * 4);
    d2h(pl, d_pls, pb);
    host_decode_add(gc, &ci, pl, n, dec);
    CHECK_EQ_INT(sqz_gpu_restore(&gc->p, d_pls, 2, 0, d_in, dt, d_res, n, d_cnt, d_ws, g_st),
                 SQZ_OK);
    d2h(res, d_res, n * 4);
    d2h(&cnt, d_cnt, 8);
    CHECK_MSG(cnt == 7, "%s n=%zu: counter %llu, expected 7", gc->label, n, cnt);
    bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double tol =
            1e-6 * (fabs((double)r0[i]) + fabs((double)hin[i]) + fabs((double)dec[i])) + 1e-38;
        bad += !(fabs((double)res[i] - r0[i]) <= tol);
    }
    CHECK_MSG(bad == 0, "%s n=%zu: restore (other rank flagged) missed %zu residuals", gc->label,
              n, bad);

    /* Nothing flagged: restore changes nothing and does not count. */
    float *before = xmalloc(n * 4);
    h2d(d_res, r0, n * 4);
    CHECK_EQ_INT(sqz_gpu_compress(&gc->p, d_in, dt, d_res, n, test_key(79), d_pls, d_ws, g_st),
                 SQZ_OK);
    d2h(before, d_res, n * 4);
    CHECK_EQ_INT(sqz_gpu_restore(&gc->p, d_pls, 1, 0, d_in, dt, d_res, n, d_cnt, d_ws, g_st),
                 SQZ_OK);
    d2h(res, d_res, n * 4);
    d2h(&cnt, d_cnt, 8);
    CHECK_MSG(cnt == 7, "%s n=%zu: counter %llu after a clean restore", gc->label, n, cnt);
    CHECK_MSG(memcmp(res, before, n * 4) == 0, "%s n=%zu: clean restore changed the residual",
              gc->label, n);

    /* residual NULL: only counts. */
    h2d(d_pls, flagged, pb);
    CHECK_EQ_INT(sqz_gpu_restore(&gc->p, d_pls, 1, 0, NULL, dt, NULL, n, d_cnt, d_ws, g_st),
                 SQZ_OK);
    d2h(&cnt, d_cnt, 8);
    CHECK_MSG(cnt == 8, "%s n=%zu: counter %llu, expected 8", gc->label, n, cnt);

    case_end(f0, "nonfin   %-24s %-4s n=%zu", gc->label, dt_name(dt), n);
    if (gc->cpu != NULL) {
        cpu_destroy(&ci);
    }
    free(before);
    free(hin_dt);
    free(hin);
    free(flagged);
    free(out);
    dfree(d_out);
    free(dec);
    free(res);
    free(pl);
    dfree(d_cnt);
    dfree(d_ws);
    dfree(d_pls);
    dfree(d_res);
    dfree(d_in);
    free(r0);
    free(in_f);
    free(in_h);
    free(x);
}

/* Parameters out of range are refused. */
static void test_params(void)
{
    const int f0 = case_begin();
    sqz_gpu_params_t p;
    float *d = dalloc(1024);
    memset(&p, 0, sizeof p);
    p.method = SQZ_GPU_QUANT;
    p.bits = 9;
    p.bucket = 512;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    CHECK_EQ_INT(sqz_gpu_compress(&p, d, SQZ_DTYPE_FLOAT32, NULL, 100, 0, d, d, g_st),
                 SQZ_ERR_INVALID_PARAM);
    p.bits = 4;
    p.bucket = 4;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    p.method = SQZ_GPU_SIGN;
    p.bucket = 12;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    p.method = SQZ_GPU_TOPK;
    p.density = 0.0;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    p.density = 0.1;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, (size_t)1 << 32), 0);
    CHECK_EQ_INT(sqz_gpu_compress(&p, d, SQZ_DTYPE_FLOAT32, NULL, (size_t)1 << 32, 0, d, d, g_st),
                 SQZ_ERR_INVALID_PARAM);
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 0), 0);
    CHECK_EQ_INT(sqz_gpu_compress(&p, d, SQZ_DTYPE_FLOAT32, NULL, 0, 0, d, d, g_st), SQZ_OK);
    CHECK_EQ_INT(sqz_gpu_compress(&p, d, SQZ_DTYPE_FLOAT32, NULL, 10, 0, (char *)d + 4, d, g_st),
                 SQZ_ERR_INVALID_PARAM);
    p.method = SQZ_GPU_QSGD;
    p.bucket = 512;
    p.levels = 0;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    p.levels = 256;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    p.levels = 15;
    p.bucket = 7;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    p.method = SQZ_GPU_RANDK;
    p.density = 0.1;
    p.randk_unbiased = 1;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    p.randk_unbiased = 0;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 64); /* 16 + 4 * 10, rounded to 16 */
    CHECK_MSG(sqz_gpu_shared_key(&p) == 1, "randk needs a shared key");
    p.method = SQZ_GPU_QUANT;
    CHECK_MSG(sqz_gpu_shared_key(&p) == 0, "quant does not");
    p.method = SQZ_GPU_TERNGRAD;
    p.bucket = 7;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    p.bucket = 8;
    p.clip = 0.5;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    p.clip = 1.5;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 96); /* 16 + 4 * 13 + 25, rounded to 16 */
    CHECK_MSG(sqz_gpu_shared_key(&p) == 0, "terngrad draws each rank's own noise");
    p.method = (sqz_gpu_method_t)9;
    CHECK_EQ_INT(sqz_gpu_payload_bytes(&p, 100), 0);
    CHECK_MSG(sqz_gpu_method_name(SQZ_GPU_QSGD) != NULL &&
                  strcmp(sqz_gpu_method_name(SQZ_GPU_QSGD), "qsgd") == 0 &&
                  sqz_gpu_method_name((sqz_gpu_method_t)9) == NULL,
              "method names");
    /* The device support table (squeeze_info, the engine's declines) and the codec agree: a
     * method with a codec row is not declined, and every method the table runs on device
     * buffers has a row (powersgd has its own kernels, none passes through). */
    sqz_registry_t reg;
    REQUIRE(SQZ_OK == sqz_registry_init(&reg));
    for (size_t j = 0; j < reg.n; j++) {
        const char *name = reg.e[j].c->name;
        int row = 0;
        for (int m = 1; m < 16; m++) {
            const char *mn = sqz_gpu_method_name((sqz_gpu_method_t)m);
            row |= mn != NULL && strcmp(mn, name) == 0;
        }
        const int table = sqz_device_method_decline(name, NULL) == NULL;
        const int own = strcmp(name, "powersgd") == 0 || strcmp(name, "none") == 0;
        CHECK_MSG(table == (row || own), "%s: device support table says %s, codec row %s", name,
                  table ? "kernels" : "declined", row ? "present" : "absent");
    }
    sqz_registry_fini(&reg);
    CU(cudaStreamSynchronize(g_st));
    dfree(d);
    case_end(f0, "params   out-of-range arguments refused");
}

/* ---------------------------------------------------------------------------------------------
 * Bandwidth (information only).
 * ------------------------------------------------------------------------------------------- */
static double time_ms(cudaEvent_t a, cudaEvent_t b)
{
    float ms = 0.0f;
    CU(cudaStreamSynchronize(g_st));
    CU(cudaEventElapsedTime(&ms, a, b));
    return ms;
}

static void perf(void)
{
    const size_t n = (size_t)1 << 26;
    const int iters = 20;
    float *d_in = dalloc(n * 4);
    uint16_t *d_in16 = dalloc(n * 2);
    float *d_res = dalloc(n * 4);
    float *d_out = dalloc(n * 4);
    uint16_t *b16 = xmalloc(N_MAX * 2);
    to_dtype(base_in, N_MAX, SQZ_DTYPE_BFLOAT16, b16);
    /* Gaussian data: the base vectors repeated. */
    for (size_t o = 0; o < n; o += N_MAX) {
        const size_t c = n - o < N_MAX ? n - o : N_MAX;
        h2d(d_in + o, base_in, c * 4);
        h2d(d_in16 + o, b16, c * 2);
        h2d(d_res + o, base_r, c * 4);
    }
    free(b16);
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    CU(cudaMemcpyAsync(d_out, d_in, n * 4, cudaMemcpyDeviceToDevice, g_st));
    CU(cudaEventRecord(e0, g_st));
    for (int it = 0; it < iters; it++) {
        CU(cudaMemcpyAsync(d_out, d_in, n * 4, cudaMemcpyDeviceToDevice, g_st));
    }
    CU(cudaEventRecord(e1, g_st));
    const double copy = 2.0 * n * 4 * iters / (time_ms(e0, e1) * 1e-3) / 1e9;
    printf("perf     n=%zu: device-to-device copy %.0f GB/s (read + write)\n", n, copy);
    const sqz_dtype_t pd[2] = {SQZ_DTYPE_FLOAT32, SQZ_DTYPE_BFLOAT16};
    for (size_t c = 0; c < NCASES; c++) {
        const gcase_t *gc = &cases[c];
        if (!(c == 0 || c == 2 || c == 8 || c == 10 || c == 15 || c == 19)) {
            continue;
        }
        for (int d = 0; d < 2; d++) {
            const size_t es = dt_size(pd[d]);
            const size_t pb = sqz_gpu_payload_bytes(&gc->p, n);
            const size_t wb = sqz_gpu_workspace_bytes(&gc->p, n, pd[d]);
            uint8_t *d_pl = dalloc(pb * 8);
            uint8_t *d_ws = dalloc(wb);
            const void *src =
                pd[d] == SQZ_DTYPE_FLOAT32 ? (const void *)d_in : (const void *)d_in16;
            for (int it = 0; it <= iters; it++) {
                if (it == 1) {
                    CU(cudaEventRecord(e0, g_st));
                }
                REQUIRE(sqz_gpu_compress(&gc->p, src, pd[d], d_res, n, test_key(5), d_pl, d_ws,
                                         g_st) == SQZ_OK);
            }
            CU(cudaEventRecord(e1, g_st));
            double ms = time_ms(e0, e1) / iters;
            double bytes = (double)n * (es + 8) + (double)pb;
            printf("perf     compress %-24s %-4s %8.3f ms  %6.0f GB/s  %5.1f%% of copy\n",
                   gc->label, dt_name(pd[d]), ms, bytes / (ms * 1e-3) / 1e9,
                   100.0 * bytes / (ms * 1e-3) / 1e9 / copy);
            for (int r = 1; r < 8; r++) {
                CU(cudaMemcpyAsync(d_pl + r * pb, d_pl, pb, cudaMemcpyDeviceToDevice, g_st));
            }
            for (int it = 0; it <= iters; it++) {
                if (it == 1) {
                    CU(cudaEventRecord(e0, g_st));
                }
                REQUIRE(sqz_gpu_decode_sum(&gc->p, d_pl, 8, n, 0.125f, d_out, pd[d], d_ws,
                                           g_st) == SQZ_OK);
            }
            CU(cudaEventRecord(e1, g_st));
            ms = time_ms(e0, e1) / iters;
            bytes = (double)n * es + 8.0 * (double)pb;
            printf("perf     decode8  %-24s %-4s %8.3f ms  %6.0f GB/s  %5.1f%% of copy\n",
                   gc->label, dt_name(pd[d]), ms, bytes / (ms * 1e-3) / 1e9,
                   100.0 * bytes / (ms * 1e-3) / 1e9 / copy);
            dfree(d_ws);
            dfree(d_pl);
        }
    }
    CU(cudaEventDestroy(e0));
    CU(cudaEventDestroy(e1));
    dfree(d_out);
    dfree(d_res);
    dfree(d_in16);
    dfree(d_in);
}

/* SQZ_EF_STORAGE's compact forms on the device: the same bytes as the host's
 * (sqz_residual_close), and the expand the host's decoding (scale * code, bf16 bits). */
static void test_residual_storage(size_t n)
{
    float *r = xmalloc(n * 4), *back = xmalloc(n * 4);
    fill_random(r, n, 0.3);
    for (size_t i = 0; i < n; i += 37) {
        r[i] = (i % 74 == 0) ? 0.0f : r[i] * 1e4f; /* zeros and a wide range within blocks */
    }
    for (int storage = SQZ_EF_STORAGE_BF16; storage <= SQZ_EF_STORAGE_INT8; storage++) {
        const size_t    cb = sqz_gpu_res_compact_bytes(storage, n);
        const size_t    nb = (n + 255) / 256, codes = (n + 15) / 16 * 16;
        sqz_buf_state_t b  = {.count = n};
        b.res_compact      = calloc(storage == SQZ_EF_STORAGE_BF16 ? 2 * n : n, 1);
        b.res_scale        = calloc(nb, sizeof(float));
        sqz_residual_close(&b, storage, r);
        unsigned char *h = xmalloc(cb);
        void *d = dalloc(cb);
        float *dr = dalloc(n * 4);
        CU(cudaMemcpy(dr, r, n * 4, cudaMemcpyHostToDevice));
        CHECK_MSG(SQZ_OK == sqz_gpu_res_compact(storage, dr, d, n, g_st), "res compact launch");
        CU(cudaMemsetAsync(dr, 0xff, n * 4, g_st));
        CHECK_MSG(SQZ_OK == sqz_gpu_res_expand(storage, d, dr, n, g_st), "res expand launch");
        CU(cudaStreamSynchronize(g_st));
        CU(cudaMemcpy(h, d, cb, cudaMemcpyDeviceToHost));
        CU(cudaMemcpy(back, dr, n * 4, cudaMemcpyDeviceToHost));
        const int bf = storage == SQZ_EF_STORAGE_BF16;
        const char *name = bf ? "bf16" : "int8";
        CHECK_MSG(0 == memcmp(h, b.res_compact, bf ? 2 * n : n),
                  "residual storage %s, n=%zu: device codes differ from the host's", name, n);
        CHECK_MSG(bf || 0 == memcmp(h + codes, b.res_scale, nb * 4),
                  "residual storage int8, n=%zu: device scales differ from the host's", n);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            float want;
            if (bf) {
                const uint32_t u = (uint32_t)((const uint16_t *)b.res_compact)[i] << 16;
                memcpy(&want, &u, 4);
            } else {
                want = b.res_scale[i / 256] * (float)((const int8_t *)b.res_compact)[i];
            }
            bad += memcmp(&want, &back[i], 4) != 0;
        }
        CHECK_MSG(0 == bad, "residual storage %s, n=%zu: %zu expanded values differ", name, n,
                  bad);
        cudaFree(d), cudaFree(dr), free(h), free(b.res_compact), free(b.res_scale);
    }
    free(r), free(back);
}

int main(int argc, char **argv)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    /* --quick: without n = 2^24 + 5 and the bandwidths; --perf: the bandwidths only. */
    const int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    const int perf_only = argc > 1 && strcmp(argv[1], "--perf") == 0;
    CU(cudaStreamCreateWithFlags(&g_st, cudaStreamNonBlocking));
    base_in = xmalloc(N_MAX * 4);
    base_r = xmalloc(N_MAX * 4);
    fill_random(base_in, N_MAX, 1.0);
    fill_random(base_r, N_MAX, 0.1);
    if (perf_only) {
        perf();
        CU(cudaStreamDestroy(g_st));
        free(base_r);
        free(base_in);
        return 0;
    }

    test_params();
    test_residual_storage(1000);
    test_residual_storage(70001);
    uint64_t seq = 1;
    for (size_t c = 0; c < NCASES; c++) {
        for (size_t s = 0; s < NSIZES; s++) {
            if (quick && sizes[s] == N_MAX) {
                continue;
            }
            for (int d = 0; d < 3; d++) {
                test_compress(&cases[c], dtypes[d], sizes[s], 0, 1, seq++);
            }
        }
        /* Scalar paths (unaligned buffers) and no error feedback. */
        test_compress(&cases[c], SQZ_DTYPE_FLOAT32, 1000003, 1, 1, seq++);
        test_compress(&cases[c], SQZ_DTYPE_FLOAT16, 4099, 1, 1, seq++);
        test_compress(&cases[c], SQZ_DTYPE_BFLOAT16, 1000003, 0, 0, seq++);
        for (size_t s = 0; s < NSIZES; s++) {
            if (quick && sizes[s] == N_MAX) {
                continue;
            }
            if (sizes[s] == N_MAX) {
                test_decode(&cases[c], sizes[s], 2);
                continue;
            }
            for (int R = 1; R <= 8; R *= 2) {
                test_decode(&cases[c], sizes[s], R);
            }
        }
        /* More ranks than one round of topk's per-warp search (8). */
        test_decode(&cases[c], 1000003, 9);
        test_nonfinite(&cases[c], SQZ_DTYPE_FLOAT32, 7);
        test_nonfinite(&cases[c], SQZ_DTYPE_FLOAT32, 1000003);
        test_nonfinite(&cases[c], SQZ_DTYPE_FLOAT16, 4096);
        test_nonfinite(&cases[c], SQZ_DTYPE_BFLOAT16, 70001);
    }
    if (!quick) {
        perf();
    }
    CU(cudaStreamDestroy(g_st));
    free(base_r);
    free(base_in);
    return sqz_test_result("test_cuda_kernels");
}
