/*
 * "sign": scaled sign compression with error feedback, as in 1-bit Adam (Tang et al., ICML 2021;
 * DeepSpeed's compressed_allreduce) and EF-signSGD (Karimireddy et al., ICML 2019).
 *
 * a = in + residual is cut into buckets of SIGN_BUCKET elements (the last one may be short;
 * SIGN_BUCKET=0: one bucket for the whole vector, as in 1-bit Adam).  Each bucket is sent as one
 * scale s and one bit per element: bit = (a >= 0), so 0 maps to +1; decoded = bit ? +s : -s;
 * residual = a - decoded.  SIGN_SCALE picks s (over the bucket's m elements):
 *   l1: s = sum |a| / m          (EF-signSGD: the MSE-optimal scale, a contractive compressor)
 *   l2: s = sqrt(sum a^2 / m)    (1-bit Adam: keeps the L2 norm)
 * A per-bucket scale is more accurate than one scale, and lets compress run in one pass over
 * memory: each bucket's statistics, bits and residual are computed while it sits in L1/L2.
 * The sums use a fixed reduction order (8 lanes per 64-element block, blocks in order), so the
 * scales do not depend on the compiler's vectorization or on the CPU.
 *
 * Wire format (little-endian): nb = ceil(n / bucket) f32 scales (nb = 1 for bucket 0 and n > 0,
 * 0 for n == 0), then n bits LSB-first (bit i is bit i%8 of byte i/8), ceil(n/8) bytes, padding
 * bits zero.  Total 4 * nb + ceil(n/8) bytes.  SIGN_BUCKET is a multiple of 8 (or 0), so each
 * bucket's bits start on a byte.
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER (worker and server error feedback, as in 1-bit Adam).
 *
 * Non-finite input: compress detects it bucket by bucket; on SQZ_ERR_NONFINITE it restores the
 * residual of the buckets it already updated (residual = residual_new + decoded - in), which
 * gives back the old residual up to float rounding (see the finiteness contract).
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

enum { SIGN_SCALE_L1 = 0, SIGN_SCALE_L2 = 1 };

/** Config struct filled by the core from sign_params. */
typedef struct sign_config {
    int     scale;  /* SIGN_SCALE: SIGN_SCALE_L1 or SIGN_SCALE_L2 */
    int64_t bucket; /* SIGN_BUCKET: elements per scale, a multiple of 8; 0: the whole vector */
} sign_config_t;

static const sqz_param_def_v1_t sign_params[] = {
    {
        .name = "SIGN_SCALE",
        .type = SQZ_PARAM_ENUM,
        .default_value = "l1",
        .choices = "l1|l2",
        .offset = offsetof(sign_config_t, scale),
        .help = "scale of the sign vector: l1 = mean |a| (MSE-optimal), l2 = ||a||_2/sqrt(n) "
                "(1-bit Adam)",
    },
    {
        .name = "SIGN_BUCKET",
        .type = SQZ_PARAM_INT,
        .default_value = "4096",
        .min = 0,
        .max = 1 << 30,
        .offset = offsetof(sign_config_t, bucket),
        .help = "elements per scale, a multiple of 8 (each bucket sends its own f32 scale); "
                "0: one scale for the whole vector (1-bit Adam)",
    },
};

typedef struct sign_state {
    sign_config_t cfg;
} sign_state_t;

static sqz_status_t sign_create(const void *config, const sqz_compressor_env_v1_t *env,
                                void **state)
{
    const sign_config_t *cfg = (const sign_config_t *)config;
    if (cfg == NULL || (cfg->scale != SIGN_SCALE_L1 && cfg->scale != SIGN_SCALE_L2) ||
        cfg->bucket < 0 || cfg->bucket > ((int64_t)1 << 30) || cfg->bucket % 8 != 0) {
        return SQZ_ERR_INVALID_PARAM;
    }
    sign_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    s->cfg = *cfg;
    *state = s;
    return SQZ_OK;
}

/* Elements per bucket for n elements (>= 1). */
static size_t sign_bucket(const sign_state_t *st, size_t n)
{
    if (st->cfg.bucket == 0) {
        return n > 0 ? n : 1;
    }
    return (size_t)st->cfg.bucket;
}

/* \return 0 when the size does not fit in size_t. */
static int sign_layout(const sign_state_t *st, size_t n, size_t *nb, size_t *total)
{
    if (n > SIZE_MAX / 8) {
        return 0;
    }
    const size_t B = sign_bucket(st, n);
    *nb = n / B + (n % B != 0);
    *total = 4 * *nb + n / 8 + (n % 8 != 0);
    return 1;
}

static size_t sign_max_payload(void *state, size_t n)
{
    size_t nb, total;
    if (state == NULL || !sign_layout((const sign_state_t *)state, n, &nb, &total)) {
        return SIZE_MAX;
    }
    return total;
}

/* ---------------------------------------------------------------------------------------------
 * Kernels.  Fixed blocks of 64 elements through restrict pointers, so that they vectorize; the
 * sums keep 8 lanes (element j goes to lane j % 8), combined in a fixed order.
 * ------------------------------------------------------------------------------------------- */

/* Statistics of one block: per-lane sum |a| and sum a^2 in double (a^2 overflows float for
 * large |a|), and a non-zero value when some a is NaN or Inf. */
static inline uint32_t sign_stats_block(const float *restrict in, const float *restrict res,
                                        double *restrict l1, double *restrict l2)
{
    float a[SQZ_PU_BLOCK];
    uint32_t bad = 0;
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        a[j] = in[j] + (res != NULL ? res[j] : 0.0f);
    }
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int l = 0; l < 8; l++) {
            const float x = a[j + l];
            bad |= (uint32_t)(sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS);
            l1[l] += (double)fabsf(x);
            l2[l] += (double)x * (double)x;
        }
    }
    return bad;
}

/* Bits and residual of one block: res = a - (a >= 0 ? s : -s). */
static inline void sign_encode_block(const float *restrict in, float *restrict res, float s,
                                     uint8_t *restrict bits)
{
    float a[SQZ_PU_BLOCK];
    uint8_t pos[SQZ_PU_BLOCK];
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        a[j] = in[j] + res[j];
    }
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        pos[j] = (uint8_t)(a[j] >= 0.0f);
        res[j] = a[j] - (a[j] >= 0.0f ? s : -s);
    }
    sqz_pu_pack_bits(pos, SQZ_PU_BLOCK, 1, bits);
}

static inline void sign_bits_block(const float *restrict in, uint8_t *restrict bits)
{
    uint8_t pos[SQZ_PU_BLOCK];
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        pos[j] = (uint8_t)(in[j] >= 0.0f);
    }
    sqz_pu_pack_bits(pos, SQZ_PU_BLOCK, 1, bits);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SQZ_PU_NO_SIMD)
#include <immintrin.h>
#define SIGN_X86 1
/* AVX2 versions of the block kernels: the same lanes and operation order as the C kernels above,
 * so they give bit-identical results. */
__attribute__((target("avx2"))) static uint32_t sign_stats_avx2(const float *in, const float *res,
                                                                 size_t nblk, double *l1,
                                                                 double *l2)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    __m256d a1lo = _mm256_loadu_pd(l1), a1hi = _mm256_loadu_pd(l1 + 4);
    __m256d a2lo = _mm256_loadu_pd(l2), a2hi = _mm256_loadu_pd(l2 + 4);
    __m256i bad = _mm256_setzero_si256();
    const __m256d absd = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffll));
    for (size_t j = 0; j < nblk * SQZ_PU_BLOCK; j += 8) {
        __m256 a = _mm256_loadu_ps(in + j);
        if (res != NULL) {
            a = _mm256_add_ps(a, _mm256_loadu_ps(res + j));
        }
        const __m256 ab = _mm256_and_ps(a, absmask);
        /* keys >= inf as signed compares: keys are < 2^31. */
        bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(_mm256_castps_si256(ab),
                                                      _mm256_sub_epi32(inf, _mm256_set1_epi32(1))));
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
        a1lo = _mm256_add_pd(a1lo, _mm256_and_pd(lo, absd));
        a1hi = _mm256_add_pd(a1hi, _mm256_and_pd(hi, absd));
        a2lo = _mm256_add_pd(a2lo, _mm256_mul_pd(lo, lo));
        a2hi = _mm256_add_pd(a2hi, _mm256_mul_pd(hi, hi));
    }
    _mm256_storeu_pd(l1, a1lo);
    _mm256_storeu_pd(l1 + 4, a1hi);
    _mm256_storeu_pd(l2, a2lo);
    _mm256_storeu_pd(l2 + 4, a2hi);
    return (uint32_t)_mm256_movemask_epi8(bad) != 0;
}

/* Bits and residual of nblk blocks; stream: non-temporal stores of the residual (res 32-byte
 * aligned). */
__attribute__((target("avx2"))) static void sign_encode_avx2(const float *in, float *res,
                                                              size_t nblk, float s, uint8_t *bits,
                                                              int stream)
{
    const __m256 sv = _mm256_set1_ps(s);
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    const __m256 zero = _mm256_setzero_ps();
    const size_t m = nblk * SQZ_PU_BLOCK;
    for (size_t j = 0; j < m; j += 8) {
        const __m256 a = _mm256_add_ps(_mm256_loadu_ps(in + j), _mm256_loadu_ps(res + j));
        const __m256 ge = _mm256_cmp_ps(a, zero, _CMP_GE_OQ);
        const __m256 d = _mm256_or_ps(sv, _mm256_andnot_ps(ge, sign));
        const __m256 r = _mm256_sub_ps(a, d);
        if (stream) {
            _mm256_stream_ps(res + j, r);
        } else {
            _mm256_storeu_ps(res + j, r);
        }
        bits[j / 8] = (uint8_t)_mm256_movemask_ps(ge);
    }
}

__attribute__((target("avx2"))) static void sign_bits_avx2(const float *in, size_t nblk,
                                                            uint8_t *bits)
{
    const __m256 zero = _mm256_setzero_ps();
    const size_t m = nblk * SQZ_PU_BLOCK;
    for (size_t j = 0; j < m; j += 8) {
        bits[j / 8] =
            (uint8_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(in + j), zero, _CMP_GE_OQ));
    }
}

/* out[j] += bit j ? s : -s over nblk blocks. */
__attribute__((target("avx2"))) static void sign_decode_avx2(const uint8_t *bits, float s,
                                                              float *out, size_t nblk, int stream)
{
    const __m256 sv = _mm256_set1_ps(s);
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const size_t m = nblk * SQZ_PU_BLOCK;
    for (size_t j = 0; j < m; j += 8) {
        const __m256i b = _mm256_and_si256(_mm256_set1_epi32(bits[j / 8]), sel);
        const __m256 neg = _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, _mm256_setzero_si256()));
        const __m256 d = _mm256_or_ps(sv, _mm256_and_ps(neg, sign));
        const __m256 o = _mm256_add_ps(_mm256_loadu_ps(out + j), d);
        if (stream) {
            _mm256_stream_ps(out + j, o);
        } else {
            _mm256_storeu_ps(out + j, o);
        }
    }
}

static int sign_have_avx2(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return have;
}
#else
#define SIGN_X86 0
#endif

/* Buffers larger than this are written with non-temporal stores (they do not fit in cache). */
#define SIGN_STREAM_BYTES ((size_t)8 << 20)

/* One bucket [0, m) (m a multiple of 8 unless it is the last bucket): statistics, then bits and
 * residual while the bucket is in cache.  \return 0, or 1 when the bucket is not finite (nothing
 * written to res). */
static int sign_bucket_run(const float *in, float *res, size_t m, int l2_scale, uint8_t *bits,
                           float *scale_out, double *norm2_in, double *norm2_err, int stream)
{
    double l1l[8] = {0}, l2l[8] = {0};
    uint32_t bad = 0;
    size_t i = 0;
#if SIGN_X86
    const int avx2 = sign_have_avx2();
    if (avx2) {
        bad |= sign_stats_avx2(in, res, m / SQZ_PU_BLOCK, l1l, l2l);
        i = m / SQZ_PU_BLOCK * SQZ_PU_BLOCK;
    }
#endif
    for (; i + SQZ_PU_BLOCK <= m; i += SQZ_PU_BLOCK) {
        bad |= sign_stats_block(in + i, res != NULL ? res + i : NULL, l1l, l2l);
    }
    for (; i < m; i++) {
        const float x = in[i] + (res != NULL ? res[i] : 0.0f);
        bad |= (uint32_t)(sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS);
        l1l[0] += (double)fabsf(x);
        l2l[0] += (double)x * x;
    }
    if (bad) {
        return 1;
    }
    double sum1 = 0.0, sum2 = 0.0;
    for (int l = 0; l < 8; l++) {
        sum1 += l1l[l];
        sum2 += l2l[l];
    }
    /* Both scales are at most max |a| (up to rounding), so they are finite floats. */
    const float s = m == 0 ? 0.0f : l2_scale ? (float)sqrt(sum2 / (double)m)
                                              : (float)(sum1 / (double)m);
    *scale_out = s;
    i = 0;
#if SIGN_X86
    if (avx2) {
        const size_t nblk = m / SQZ_PU_BLOCK;
        if (res != NULL) {
            sign_encode_avx2(in, res, nblk, s, bits, stream && ((uintptr_t)res % 32) == 0);
        } else {
            sign_bits_avx2(in, nblk, bits);
        }
        i = nblk * SQZ_PU_BLOCK;
    }
#endif
    for (; i + SQZ_PU_BLOCK <= m; i += SQZ_PU_BLOCK) {
        if (res != NULL) {
            sign_encode_block(in + i, res + i, s, bits + i / 8);
        } else {
            sign_bits_block(in + i, bits + i / 8);
        }
    }
    if (i < m) {
        /* Short tail: bits through a zeroed byte buffer (padding bits stay zero). */
        uint8_t tb[SQZ_PU_BLOCK / 8] = {0};
        for (size_t j = i; j < m; j++) {
            const float a = in[j] + (res != NULL ? res[j] : 0.0f);
            tb[(j - i) / 8] |= (uint8_t)((a >= 0.0f) << ((j - i) % 8));
            if (res != NULL) {
                res[j] = a - (a >= 0.0f ? s : -s);
            }
        }
        memcpy(bits + i / 8, tb, (m - i + 7) / 8);
    }
    /* sum (|a| - s)^2 = sum a^2 - 2 s sum|a| + m s^2 (a statistic: rounding is harmless). */
    const double sd = (double)s;
    const double e = sum2 - 2.0 * sd * sum1 + (double)m * sd * sd;
    *norm2_in += sum2;
    *norm2_err += e > 0.0 ? e : 0.0;
    return 0;
}

/* out[j] += bit j ? s : -s for one block of 64 elements (8 payload bytes): the sign bit of s is
 * set for a zero bit. */
static inline void sign_add_block(float *restrict out, const uint8_t *restrict bits, float s)
{
    uint8_t pos[SQZ_PU_BLOCK];
    const uint32_t sb = sqz_pu_f32_bits(s);
    sqz_pu_unpack_bits(bits, SQZ_PU_BLOCK, 1, pos);
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        out[j] += sqz_pu_bits_f32(sb | ((uint32_t)(1u - pos[j]) << 31));
    }
}

static void sign_decode_bucket(const uint8_t *bits, float s, float *out, size_t m, int stream)
{
    size_t i = 0;
#if SIGN_X86
    if (sign_have_avx2()) {
        sign_decode_avx2(bits, s, out, m / SQZ_PU_BLOCK, stream && ((uintptr_t)out % 32) == 0);
        i = m / SQZ_PU_BLOCK * SQZ_PU_BLOCK;
    }
#endif
    for (; i + SQZ_PU_BLOCK <= m; i += SQZ_PU_BLOCK) {
        sign_add_block(out + i, bits + i / 8, s);
    }
    for (; i < m; i++) {
        out[i] += ((bits[i / 8] >> (i % 8)) & 1u) ? s : -s;
    }
}

/* Undoes the residual update of buckets [0, nk): residual = residual_new + decoded - in. */
static void sign_restore(const float *in, float *res, size_t n, size_t B, size_t nk,
                         const uint8_t *scales, const uint8_t *bits)
{
    for (size_t k = 0; k < nk; k++) {
        const size_t s0 = k * B;
        const size_t m = n - s0 < B ? n - s0 : B;
        sign_decode_bucket(bits + s0 / 8, sqz_pu_load_f32(scales + 4 * k), res + s0, m, 0);
        for (size_t i = s0; i < s0 + m; i++) {
            res[i] -= in[i];
        }
    }
}

static sqz_status_t sign_compress(void *state, sqz_compress_args_v1_t *args)
{
    const sign_state_t *st = (const sign_state_t *)state;
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *out = (uint8_t *)args->payload;
    size_t nb, total;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (!sign_layout(st, n, &nb, &total)) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    if (out == NULL || args->capacity < total || (n > 0 && in == NULL)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const size_t B = sign_bucket(st, n);
    uint8_t *bits = out + 4 * nb;
    double norm2_in = 0.0, norm2_err = 0.0;
    const int stream = n * sizeof(float) >= SIGN_STREAM_BYTES;
    for (size_t k = 0; k < nb; k++) {
        const size_t s0 = k * B;
        const size_t m = n - s0 < B ? n - s0 : B;
        float s;
        if (sign_bucket_run(in + s0, res != NULL ? res + s0 : NULL, m,
                            st->cfg.scale == SIGN_SCALE_L2, bits + s0 / 8, &s, &norm2_in,
                            &norm2_err, stream)) {
#if SIGN_X86
            if (stream) {
                _mm_sfence();
            }
#endif
            if (res != NULL) {
                sign_restore(in, res, n, B, k, out, bits);
            }
            return SQZ_ERR_NONFINITE;
        }
        sqz_pu_store_f32(out + 4 * k, s);
    }
#if SIGN_X86
    if (stream) {
        _mm_sfence();
    }
#endif
    args->payload_bytes = total;
    args->norm2_in = norm2_in;
    args->norm2_err = norm2_err;
    return SQZ_OK;
}

static sqz_status_t sign_decompress(void *state, const void *payload, size_t bytes, float *out,
                                    size_t n)
{
    const sign_state_t *st = (const sign_state_t *)state;
    size_t nb, total;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (payload == NULL || !sign_layout(st, n, &nb, &total) || bytes != total) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *p = (const uint8_t *)payload;
    /* Validate every scale before the first write (any bit pattern is valid). */
    uint32_t bad = 0;
    for (size_t k = 0; k < nb; k++) {
        const uint32_t u = sqz_pu_load_u32(p + 4 * k);
        /* Finite and >= 0: the sign bit clear and the exponent not all ones (-0 is rejected too,
         * like any negative scale). */
        bad |= (uint32_t)(u >= SQZ_PU_F32_INF_BITS);
    }
    if (bad) {
        return SQZ_ERR_CORRUPT;
    }
    if (out == NULL) {
        return SQZ_OK;
    }
    const size_t B = sign_bucket(st, n);
    const uint8_t *bits = p + 4 * nb;
    const int stream = n * sizeof(float) >= SIGN_STREAM_BYTES;
    for (size_t k = 0; k < nb; k++) {
        const size_t s0 = k * B;
        const size_t m = n - s0 < B ? n - s0 : B;
        sign_decode_bucket(bits + s0 / 8, sqz_pu_load_f32(p + 4 * k), out + s0, m, stream);
    }
#if SIGN_X86
    if (stream) {
        _mm_sfence();
    }
#endif
    return SQZ_OK;
}

static void sign_destroy(void *state)
{
    free(state);
}

const sqz_compressor_v1_t sqz_compressor_sign = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "sign",
    .description = "scaled sign (1 bit/element + one f32 scale per bucket) with error feedback "
                   "(EF-signSGD / 1-bit Adam)",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = sign_params,
    .nparams = sizeof sign_params / sizeof sign_params[0],
    .config_size = sizeof(sign_config_t),
    .create = sign_create,
    .query = NULL,
    .max_payload = sign_max_payload,
    .compress = sign_compress,
    .decompress = sign_decompress,
    .destroy = sign_destroy,
    .flags = SQZ_COMPRESSOR_FIXED_PAYLOAD | SQZ_COMPRESSOR_CONTRACTIVE | SQZ_COMPRESSOR_EF14_DAMPED |
             SQZ_COMPRESSOR_EF21_DIVERGES,
};
