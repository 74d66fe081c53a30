/*
 * "quant": bucketed max-min b-bit quantization with error feedback, after CGX / torch_cgx
 * (Markov, Ramezani-Kebrya, Alistarh, Middleware 2022), itself the max-min variant of QSGD
 * (Alistarh et al., NeurIPS 2017).  CGX has no error feedback on its all-reduce path; here the
 * quantization error goes to the residual.
 *
 * a = in + residual is cut into buckets of B elements (the last one may be short).  Per bucket:
 *   mn = min a, unit = (max a - mn) / (2^b - 1)   (unit = 0 for a constant or near-constant bucket)
 *   code = min(floor((a - mn) / unit + r), 2^b - 1), r = 0.5 (nearest) or U[0,1) (stochastic,
 *          unbiased: E[decoded] = a); unit == 0 gives code 0
 *   decoded = mn + unit * code (float; computed the same way on both sides, quant_decode_one)
 *
 * Wire format (little-endian), a deterministic function of (n, b, B):
 *   nb = ceil(n / B) pairs (f32 mn, f32 unit), all bucket metadata first (8 * nb bytes), then
 *   the n codes packed LSB-first, b bits each (ceil(n * b / 8) bytes, padding bits zero).
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER (CGX's scatter-reduce-allgather, with server feedback).
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

enum { QUANT_ROUND_NEAREST = 0, QUANT_ROUND_STOCHASTIC = 1 };

/** Config struct filled by the core from quant_params. */
typedef struct quant_config {
    int64_t bits;     /* QUANT_BITS, 1..8 */
    int64_t bucket;   /* QUANT_BUCKET, elements per bucket */
    int     rounding; /* QUANT_ROUNDING: QUANT_ROUND_NEAREST or QUANT_ROUND_STOCHASTIC */
} quant_config_t;

static const sqz_param_def_v1_t quant_params[] = {
    {
        .name = "QUANT_BITS",
        .type = SQZ_PARAM_INT,
        .default_value = "4",
        .min = 1,
        .max = 8,
        .offset = offsetof(quant_config_t, bits),
        .help = "bits per element of the max-min quantizer",
    },
    {
        .name = "QUANT_BUCKET",
        .type = SQZ_PARAM_INT,
        .default_value = "512",
        .min = 8,
        .max = 1048576,
        .offset = offsetof(quant_config_t, bucket),
        .help = "elements per bucket (each bucket sends its own f32 min and unit)",
    },
    {
        .name = "QUANT_ROUNDING",
        .type = SQZ_PARAM_ENUM,
        .default_value = "nearest",
        .choices = "nearest|stochastic",
        .offset = offsetof(quant_config_t, rounding),
        .help = "rounding of codes: nearest (deterministic) or stochastic (unbiased)",
    },
};

typedef struct quant_state {
    unsigned bits;
    size_t   bucket;
    int      rounding;
    uint64_t seed;
    int      rank;
} quant_state_t;

/* Codes are produced and consumed in tiles of this many elements: a multiple of 8, so every tile
 * starts on a byte boundary of the packed stream, and small enough to live on the stack. */
#define QUANT_TILE 1024

static sqz_status_t quant_create(const void *config, const sqz_compressor_env_v1_t *env,
                                 void **state)
{
    const quant_config_t *cfg = (const quant_config_t *)config;
    if (cfg == NULL || cfg->bits < 1 || cfg->bits > 8 || cfg->bucket < 1 ||
        cfg->bucket > (int64_t)1 << 30 ||
        (cfg->rounding != QUANT_ROUND_NEAREST && cfg->rounding != QUANT_ROUND_STOCHASTIC)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    quant_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    s->bits = (unsigned)cfg->bits;
    s->bucket = (size_t)cfg->bucket;
    s->rounding = cfg->rounding;
    s->seed = env != NULL ? env->seed : 0;
    s->rank = env != NULL ? env->rank : 0;
    *state = s;
    return SQZ_OK;
}

/* Payload layout for n elements.  \return 0 when the size does not fit in size_t. */
static int quant_layout(size_t n, unsigned b, size_t bucket, size_t *nbuckets, size_t *total)
{
    if (n > SIZE_MAX / 16) {
        return 0;
    }
    const size_t nb = n / bucket + (n % bucket != 0);
    *nbuckets = nb;
    *total = 8 * nb + sqz_pu_packed_bytes(n, b);
    return 1;
}

static size_t quant_max_payload(void *state, size_t n)
{
    const quant_state_t *st = (const quant_state_t *)state;
    size_t nb, total;
    if (st == NULL || !quant_layout(n, st->bits, st->bucket, &nb, &total)) {
        return SIZE_MAX;
    }
    return total;
}

/** The decoded value of a code: the single definition used by compress (for the residual) and
 *  decompress, so that decode(payload) + residual == a up to one rounding. */
static inline float quant_decode_one(float mn, float unit, float code)
{
    return mn + unit * code;
}

/* Per-lane accumulators of the min/max pass. */
typedef struct quant_lanes {
    float    mn[8];
    float    mx[8];
    double   sq[8];
    uint32_t bad[8];
} quant_lanes_t;

/* Loads a = in + res for one block (res may not be NULL here). */
static inline void quant_load_block(const float *restrict in, const float *restrict res,
                                    float *restrict a)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        a[j] = in[j] + res[j];
    }
}

static inline void quant_load(const float *in, const float *res, size_t len, float *a)
{
    if (len == SQZ_PU_BLOCK) {
        if (res != NULL) {
            quant_load_block(in, res, a);
        } else {
            memcpy(a, in, SQZ_PU_BLOCK * sizeof *a);
        }
        return;
    }
    for (size_t j = 0; j < len; j++) {
        a[j] = in[j] + (res != NULL ? res[j] : 0.0f);
    }
}

static inline void quant_minmax_block(const float *restrict a, quant_lanes_t *restrict l)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int k = 0; k < 8; k++) {
            const float x = a[j + k];
            l->bad[k] |= (uint32_t)(sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS);
            l->mn[k] = x < l->mn[k] ? x : l->mn[k];
            l->mx[k] = x > l->mx[k] ? x : l->mx[k];
            l->sq[k] += (double)x * x;
        }
    }
}

/* Encodes one block: codes and the per-element error a - decoded.  rnd holds the rounding offset
 * per element (0.5 or uniform [0,1)). */
static inline void quant_encode_block(const float *restrict a, const float *restrict rnd, float mn,
                                      float unit, float inv_unit, float levels,
                                      uint8_t *restrict codes, float *restrict err)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        /* a >= mn, so t >= 0 and the truncating conversion is a floor; an overflowing a - mn
         * gives +Inf, which the clamp turns into the top code. */
        float t = (a[j] - mn) * inv_unit + rnd[j];
        t = t < levels ? t : levels;
        const int32_t c = (int32_t)t;
        codes[j] = (uint8_t)c;
        err[j] = a[j] - quant_decode_one(mn, unit, (float)c);
    }
}

static inline void quant_error_lanes(const float *restrict err, double *restrict lanes)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int k = 0; k < 8; k++) {
            lanes[k] += (double)err[j + k] * err[j + k];
        }
    }
}

static inline void quant_hash_block(uint32_t key, uint32_t first, float *restrict rnd)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        rnd[j] = sqz_pu_hash_f32(key, first + (uint32_t)j);
    }
}

static const float quant_half[SQZ_PU_BLOCK] = {
    0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,
    0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,
    0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,
    0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f,
};

/* The unit of a bucket with extremes mn <= mx (finite) such that every decoded value
 * mn + unit * code, the float product included, is finite: 0 when the range is too small for
 * 1/unit to be finite. */
static float quant_unit(float mn, float mx, unsigned bits)
{
    const float levels = (float)((1u << bits) - 1u);
    double u = ((double)mx - (double)mn) / (double)levels;
    /* Near the top of the float range, shrink the unit a little (the error goes to the residual,
     * which stays finite): the margins cover the roundings of the product and the sum. */
    const double limit =
        fmin((double)FLT_MAX * (1.0 - 0x1p-20), (double)FLT_MAX - (double)mn - 0x1p106) /
        (double)levels;
    if (u > limit) {
        u = limit;
    }
    float unit = (float)u;
    if (!(unit >= FLT_MIN)) {
        return 0.0f;
    }
    for (int i = 0; i < 64 && !sqz_pu_is_finite_f32(quant_decode_one(mn, unit, levels)); i++) {
        unit = nextafterf(unit, 0.0f);
    }
    return sqz_pu_is_finite_f32(quant_decode_one(mn, unit, levels)) ? unit : 0.0f;
}

/* ---------------------------------------------------------------------------------------------
 * One-pass AVX2 path (x86-64 with AVX2, bits 1, 2, 4 or 8, bucket a multiple of 64): bucket by
 * bucket, min/max then encode while the bucket is in L1, residual written with non-temporal
 * stores for large vectors.  It computes exactly the same operations as the generic path above
 * (min/max are exact, the encode is element-wise), so its payload is bit-identical.  Finiteness
 * is checked per bucket: on a non-finite bucket, the buckets already written are restored
 * (residual = residual_new + decoded - in) before SQZ_ERR_NONFINITE is returned.
 * ------------------------------------------------------------------------------------------- */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SQZ_PU_NO_SIMD)
#include <immintrin.h>
#define QUANT_X86 1

static int quant_have_avx2(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return have;
}

/* Buffers larger than this are written with non-temporal stores. */
#define QUANT_STREAM_BYTES ((size_t)8 << 20)

/* Stores 8 codes (epi32 lanes, each < 2^bits) as bits bytes at out. */
__attribute__((target("avx2"), always_inline)) static inline void
quant_pack8_avx2(__m256i c, unsigned bits, uint8_t *out)
{
    if (bits == 8) {
        __m256i x = _mm256_packus_epi32(c, c);
        x = _mm256_packus_epi16(x, x);
        const uint32_t lo = (uint32_t)_mm_cvtsi128_si32(_mm256_castsi256_si128(x));
        const uint32_t hi = (uint32_t)_mm256_extract_epi32(x, 4);
        sqz_pu_store_u32(out, lo);
        sqz_pu_store_u32(out + 4, hi);
    } else if (bits == 1) {
        out[0] = (uint8_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(c, 31)));
    } else {
        const __m256i sh = _mm256_setr_epi32(0, (int)bits, 2 * (int)bits, 3 * (int)bits,
                                             4 * (int)bits, 5 * (int)bits, 6 * (int)bits,
                                             7 * (int)bits);
        __m256i x = _mm256_sllv_epi32(c, sh);
        x = _mm256_or_si256(x, _mm256_shuffle_epi32(x, 0x4e));
        x = _mm256_or_si256(x, _mm256_shuffle_epi32(x, 0xb1));
        const uint32_t v = (uint32_t)_mm_cvtsi128_si32(
            _mm_or_si128(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1)));
        if (bits == 4) {
            sqz_pu_store_u32(out, v);
        } else {
            sqz_pu_store_u16(out, (uint16_t)v);
        }
    }
}

/* Loads 8 codes of bits bits from in as epi32 lanes. */
__attribute__((target("avx2"), always_inline)) static inline __m256i
quant_unpack8_avx2(const uint8_t *in, unsigned bits)
{
    if (bits == 8) {
        return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)in));
    }
    if (bits == 1) {
        const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        const __m256i b = _mm256_and_si256(_mm256_set1_epi32(in[0]), sel);
        return _mm256_srli_epi32(_mm256_cmpeq_epi32(b, sel), 31);
    }
    const uint32_t v = bits == 4 ? sqz_pu_load_u32(in) : sqz_pu_load_u16(in);
    const __m256i sh = _mm256_setr_epi32(0, (int)bits, 2 * (int)bits, 3 * (int)bits,
                                         4 * (int)bits, 5 * (int)bits, 6 * (int)bits,
                                         7 * (int)bits);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)v), sh),
                            _mm256_set1_epi32((1 << bits) - 1));
}

/* Random offsets of 8 consecutive elements first.. (sqz_pu_hash_f32). */
__attribute__((target("avx2"), always_inline)) static inline __m256
quant_hash8_avx2(uint32_t key, uint32_t first)
{
    const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)first),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i x = _mm256_add_epi32(_mm256_set1_epi32((int)key),
                                 _mm256_mullo_epi32(idx, _mm256_set1_epi32((int)0x9e3779b9u)));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x85ebca6bu));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 13));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0xc2b2ae35u));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(x, 8)), _mm256_set1_ps(0x1p-24f));
}

/* One bucket of m elements (m a multiple of 8), min/max pass.  \return nonzero if not finite. */
__attribute__((target("avx2"), always_inline)) static inline int
quant_minmax_avx2(const float *in, const float *res, size_t m, float *mn_out, float *mx_out,
                  double *sq)
{
    __m256 mn = _mm256_set1_ps(INFINITY), mx = _mm256_set1_ps(-INFINITY);
    __m256d s2lo = _mm256_setzero_pd(), s2hi = _mm256_setzero_pd();
    __m256i bad = _mm256_setzero_si256();
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i infm1 = _mm256_set1_epi32(0x7f7fffff);
    for (size_t j = 0; j < m; j += 8) {
        __m256 a = _mm256_loadu_ps(in + j);
        if (res != NULL) {
            a = _mm256_add_ps(a, _mm256_loadu_ps(res + j));
        }
        bad = _mm256_or_si256(
            bad, _mm256_cmpgt_epi32(_mm256_castps_si256(_mm256_and_ps(a, absmask)), infm1));
        mn = _mm256_min_ps(mn, a);
        mx = _mm256_max_ps(mx, a);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
        s2lo = _mm256_add_pd(s2lo, _mm256_mul_pd(lo, lo));
        s2hi = _mm256_add_pd(s2hi, _mm256_mul_pd(hi, hi));
    }
    if (_mm256_movemask_epi8(bad) != 0) {
        return 1;
    }
    float t[8], u[8];
    double q[8];
    _mm256_storeu_ps(t, mn);
    _mm256_storeu_ps(u, mx);
    _mm256_storeu_pd(q, s2lo);
    _mm256_storeu_pd(q + 4, s2hi);
    float a = t[0], b = u[0];
    double acc = 0.0;
    for (int l = 0; l < 8; l++) {
        a = t[l] < a ? t[l] : a;
        b = u[l] > b ? u[l] : b;
        acc += q[l];
    }
    *mn_out = a;
    *mx_out = b;
    *sq += acc;
    return 0;
}

/* Encodes m elements (multiple of 8) of one bucket. */
__attribute__((target("avx2"), always_inline)) static inline void
quant_encode_avx2(const float *in, float *res, size_t m, unsigned bits, float mnf, float unitf,
                  int stochastic, uint32_t key, uint32_t first, uint8_t *packed, int stream,
                  __m256d *err)
{
    const __m256 mn = _mm256_set1_ps(mnf), unit = _mm256_set1_ps(unitf);
    const __m256 inv = _mm256_set1_ps(unitf > 0.0f ? 1.0f / unitf : 0.0f);
    const __m256 levels = _mm256_set1_ps((float)((1u << bits) - 1u));
    const __m256 half = _mm256_set1_ps(0.5f);
    __m256d e2 = _mm256_setzero_pd();
    for (size_t j = 0; j < m; j += 8) {
        __m256 a = _mm256_loadu_ps(in + j);
        if (res != NULL) {
            a = _mm256_add_ps(a, _mm256_loadu_ps(res + j));
        }
        const __m256 rnd = stochastic ? quant_hash8_avx2(key, first + (uint32_t)j) : half;
        __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(a, mn), inv), rnd);
        t = _mm256_min_ps(t, levels);
        const __m256i c = _mm256_cvttps_epi32(t);
        const __m256 d = _mm256_add_ps(mn, _mm256_mul_ps(unit, _mm256_cvtepi32_ps(c)));
        const __m256 r = _mm256_sub_ps(a, d);
        if (res != NULL) {
            if (stream) {
                _mm256_stream_ps(res + j, r);
            } else {
                _mm256_storeu_ps(res + j, r);
            }
        }
        const __m256d rlo = _mm256_cvtps_pd(_mm256_castps256_ps128(r));
        const __m256d rhi = _mm256_cvtps_pd(_mm256_extractf128_ps(r, 1));
        e2 = _mm256_add_pd(e2, _mm256_add_pd(_mm256_mul_pd(rlo, rlo), _mm256_mul_pd(rhi, rhi)));
        quant_pack8_avx2(c, bits, packed + j / 8 * bits);
    }
    *err = _mm256_add_pd(*err, e2);
}

/* out += decoded values of m codes (m a multiple of 8). */
__attribute__((target("avx2"), always_inline)) static inline void
quant_decode_avx2(const uint8_t *packed, size_t m, unsigned bits, float mnf, float unitf,
                  float *out, int stream)
{
    const __m256 mn = _mm256_set1_ps(mnf), unit = _mm256_set1_ps(unitf);
    for (size_t j = 0; j < m; j += 8) {
        const __m256i c = quant_unpack8_avx2(packed + j / 8 * bits, bits);
        const __m256 d = _mm256_add_ps(mn, _mm256_mul_ps(unit, _mm256_cvtepi32_ps(c)));
        const __m256 o = _mm256_add_ps(_mm256_loadu_ps(out + j), d);
        if (stream) {
            _mm256_stream_ps(out + j, o);
        } else {
            _mm256_storeu_ps(out + j, o);
        }
    }
}

#define QUANT_FOR_BITS(X) X(1) X(2) X(4) X(8)

/* Decodes elements [s0, s1) (s0 a multiple of 8) of the payload into out (out[0] is element
 * s0). */
#define QUANT_DEC_FN(B)                                                                        \
    __attribute__((target("avx2"))) static void quant_decode_range_##B(                        \
        const uint8_t *meta, const uint8_t *packed, size_t bucket, size_t s0, size_t s1,       \
        float *out, int stream)                                                                \
    {                                                                                          \
        for (size_t s = s0; s < s1;) {                                                         \
            const size_t k = s / bucket;                                                       \
            const size_t e = (k + 1) * bucket < s1 ? (k + 1) * bucket : s1;                    \
            const float mn = sqz_pu_load_f32(meta + 8 * k);                                    \
            const float unit = sqz_pu_load_f32(meta + 8 * k + 4);                              \
            const size_t m8 = (e - s) / 8 * 8;                                                 \
            quant_decode_avx2(packed + s / 8 * B, m8, B, mn, unit, out + (s - s0),             \
                              stream && ((uintptr_t)(out + (s - s0)) % 32) == 0);              \
            if (m8 < e - s) {                                                                  \
                uint8_t codes[8];                                                              \
                sqz_pu_unpack_bits(packed + (s + m8) / 8 * B, e - s - m8, B, codes);          \
                for (size_t i = 0; i < e - s - m8; i++) {                                      \
                    out[s + m8 + i - s0] += quant_decode_one(mn, unit, (float)codes[i]);       \
                }                                                                              \
            }                                                                                  \
            s = e;                                                                             \
        }                                                                                      \
    }
QUANT_FOR_BITS(QUANT_DEC_FN)

static void quant_decode_range_avx2(unsigned bits, const uint8_t *meta, const uint8_t *packed,
                                    size_t bucket, size_t s0, size_t s1, float *out, int stream)
{
    switch (bits) {
    case 1: quant_decode_range_1(meta, packed, bucket, s0, s1, out, stream); break;
    case 2: quant_decode_range_2(meta, packed, bucket, s0, s1, out, stream); break;
    case 4: quant_decode_range_4(meta, packed, bucket, s0, s1, out, stream); break;
    default: quant_decode_range_8(meta, packed, bucket, s0, s1, out, stream); break;
    }
}

/* The whole compress, one pass.  \return SQZ_OK or SQZ_ERR_NONFINITE (residual restored). */
#define QUANT_ENC_FN(B)                                                                        \
    __attribute__((target("avx2"))) static sqz_status_t quant_compress_fast_##B(              \
        const quant_state_t *st, sqz_compress_args_v1_t *args, uint8_t *meta,                  \
        uint8_t *packed, size_t nb)                                                            \
    {                                                                                          \
        const size_t n = args->n, bucket = st->bucket;                                         \
        const float *in = args->in;                                                            \
        float *res = args->residual;                                                           \
        const int stream = n * sizeof(float) >= QUANT_STREAM_BYTES;                            \
        const int stochastic = st->rounding == QUANT_ROUND_STOCHASTIC;                         \
        const uint32_t key =                                                                   \
            (uint32_t)sqz_pu_seed_key(st->seed, st->rank, args->seq, args->stage);            \
        double sq_total = 0.0;                                                                 \
        __m256d err = _mm256_setzero_pd();                                                     \
        double err_tail = 0.0;                                                                 \
        for (size_t k = 0; k < nb; k++) {                                                      \
            const size_t s = k * bucket;                                                       \
            const size_t m = n - s < bucket ? n - s : bucket;                                  \
            const size_t m8 = m / 8 * 8;                                                       \
            float mn = INFINITY, mx = -INFINITY;                                               \
            int bad = m8 > 0 && quant_minmax_avx2(in + s, res != NULL ? res + s : NULL, m8,   \
                                                  &mn, &mx, &sq_total);                        \
            for (size_t i = s + m8; i < s + m && !bad; i++) {                                  \
                const float x = in[i] + (res != NULL ? res[i] : 0.0f);                         \
                bad = !sqz_pu_is_finite_f32(x);                                                \
                mn = x < mn ? x : mn;                                                          \
                mx = x > mx ? x : mx;                                                          \
                sq_total += (double)x * x;                                                     \
            }                                                                                  \
            if (bad) {                                                                         \
                if (stream) {                                                                  \
                    _mm_sfence();                                                              \
                }                                                                              \
                if (res != NULL && s > 0) {                                                    \
                    quant_decode_range_avx2(B, meta, packed, bucket, 0, s, res, 0);            \
                    for (size_t i = 0; i < s; i++) {                                           \
                        res[i] -= in[i];                                                       \
                    }                                                                          \
                }                                                                              \
                return SQZ_ERR_NONFINITE;                                                      \
            }                                                                                  \
            const float unit = quant_unit(mn, mx, B);                                          \
            sqz_pu_store_f32(meta + 8 * k, mn);                                                \
            sqz_pu_store_f32(meta + 8 * k + 4, unit);                                          \
            /* Element indices past 2^32 re-key the hash, as the generic path does. */         \
            const size_t tl = s + m8;                                                          \
            const uint32_t bkey =                                                              \
                (tl >> 32) ? key ^ (uint32_t)sqz_pu_seed_key(key, 0, tl >> 32, 0) : key;       \
            for (size_t p0 = s; p0 < s + m8;) {                                                \
                /* Split at multiples of 2^32 (the hash's index wraps there). */                \
                const size_t lim = ((p0 >> 32) + 1) << 32;                                     \
                const size_t p1 = s + m8 < lim ? s + m8 : lim;                                 \
                const uint32_t pkey =                                                          \
                    (p0 >> 32) ? key ^ (uint32_t)sqz_pu_seed_key(key, 0, p0 >> 32, 0) : key;   \
                quant_encode_avx2(in + p0, res != NULL ? res + p0 : NULL, p1 - p0, B, mn,      \
                                  unit, stochastic, pkey, (uint32_t)p0, packed + p0 / 8 * B,   \
                                  stream && res != NULL && ((uintptr_t)(res + p0) % 32) == 0,  \
                                  &err);                                                       \
                p0 = p1;                                                                       \
            }                                                                                  \
            if (m8 < m) {                                                                      \
                /* Short tail (< 8 elements, last bucket only): scalar, same operations. */   \
                const float inv = unit > 0.0f ? 1.0f / unit : 0.0f;                           \
                const float levels = (float)((1u << B) - 1u);                                  \
                uint8_t codes[8] = {0};                                                        \
                for (size_t i = 0; i < m - m8; i++) {                                          \
                    const size_t g = s + m8 + i;                                               \
                    const float a = in[g] + (res != NULL ? res[g] : 0.0f);                     \
                    const float rnd = stochastic ? sqz_pu_hash_f32(bkey, (uint32_t)g) : 0.5f;  \
                    float t = (a - mn) * inv + rnd;                                            \
                    t = t < levels ? t : levels;                                               \
                    const int32_t c = (int32_t)t;                                              \
                    codes[i] = (uint8_t)c;                                                     \
                    const float r = a - quant_decode_one(mn, unit, (float)c);                  \
                    if (res != NULL) {                                                         \
                        res[g] = r;                                                            \
                    }                                                                          \
                    err_tail += (double)r * r;                                                 \
                }                                                                              \
                sqz_pu_pack_bits(codes, m - m8, B, packed + (s + m8) / 8 * B);                 \
            }                                                                                  \
        }                                                                                      \
        if (stream) {                                                                          \
            _mm_sfence();                                                                      \
        }                                                                                      \
        double e4[4];                                                                          \
        _mm256_storeu_pd(e4, err);                                                             \
        args->norm2_in = sq_total;                                                             \
        args->norm2_err = e4[0] + e4[1] + e4[2] + e4[3] + err_tail;                            \
        return SQZ_OK;                                                                         \
    }
QUANT_FOR_BITS(QUANT_ENC_FN)

/* \return 1 when the fast path applies. */
static int quant_fast_ok(const quant_state_t *st, size_t n)
{
    return quant_have_avx2() && (st->bits == 1 || st->bits == 2 || st->bits == 4 ||
                                 st->bits == 8) &&
           st->bucket % SQZ_PU_BLOCK == 0 && n > 0;
}
#else
#define QUANT_X86 0
#endif

/* Pass 1 over the whole vector: finiteness, and each bucket's (mn, unit) into the payload's
 * metadata area (nb pairs); *sq the sum of a^2.  Nothing is written to the residual. */
static sqz_status_t quant_pass_meta(const quant_state_t *st, const float *in, const float *res,
                                    size_t n, size_t nb, uint8_t *meta, double *sq)
{
    const size_t B = st->bucket;
    double sq_total = 0.0;
    for (size_t k = 0; k < nb; k++) {
        const size_t s = k * B;
        const size_t e = s + B < n ? s + B : n;
        quant_lanes_t l;
        for (int j = 0; j < 8; j++) {
            l.mn[j] = INFINITY;
            l.mx[j] = -INFINITY;
            l.sq[j] = 0.0;
            l.bad[j] = 0;
        }
        size_t i = s;
        for (; i + SQZ_PU_BLOCK <= e; i += SQZ_PU_BLOCK) {
            float a[SQZ_PU_BLOCK];
            quant_load(in + i, res != NULL ? res + i : NULL, SQZ_PU_BLOCK, a);
            quant_minmax_block(a, &l);
        }
        for (; i < e; i++) {
            const float x = in[i] + (res != NULL ? res[i] : 0.0f);
            l.bad[0] |= (uint32_t)(sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS);
            l.mn[0] = x < l.mn[0] ? x : l.mn[0];
            l.mx[0] = x > l.mx[0] ? x : l.mx[0];
            l.sq[0] += (double)x * x;
        }
        float mn = l.mn[0], mx = l.mx[0];
        uint32_t bad = 0;
        for (int j = 0; j < 8; j++) {
            bad |= l.bad[j];
            mn = l.mn[j] < mn ? l.mn[j] : mn;
            mx = l.mx[j] > mx ? l.mx[j] : mx;
            sq_total += l.sq[j];
        }
        if (bad) {
            return SQZ_ERR_NONFINITE;
        }
        sqz_pu_store_f32(meta + 8 * k, mn);
        sqz_pu_store_f32(meta + 8 * k + 4, quant_unit(mn, mx, st->bits));
    }
    *sq = sq_total;
    return SQZ_OK;
}

/* Pass 2 on elements [s, e) of one bucket k (inside one tile starting at t0): their codes into
 * codes[s - t0 ...], the residual updated, the squared error into err_lanes. */
static void quant_encode_segment(const quant_state_t *st, const float *in, float *res, size_t s,
                                 size_t e, size_t t0, const uint8_t *meta, size_t k, uint32_t key,
                                 uint8_t *codes, double err_lanes[8])
{
    const float levels = (float)((1u << st->bits) - 1u);
    const float mn = sqz_pu_load_f32(meta + 8 * k);
    const float unit = sqz_pu_load_f32(meta + 8 * k + 4);
    const float inv_unit = unit > 0.0f ? 1.0f / unit : 0.0f;
    for (size_t i = s; i < e; i += SQZ_PU_BLOCK) {
        const size_t len = e - i < SQZ_PU_BLOCK ? e - i : SQZ_PU_BLOCK;
        float a[SQZ_PU_BLOCK] = {0};
        float rnd_buf[SQZ_PU_BLOCK];
        float err[SQZ_PU_BLOCK];
        const float *rnd = quant_half;
        quant_load(in + i, res != NULL ? res + i : NULL, len, a);
        if (st->rounding == QUANT_ROUND_STOCHASTIC) {
            /* Element indices past 2^32 re-key the hash rather than repeat its stream. */
            const uint32_t blk_key =
                (i >> 32) ? key ^ (uint32_t)sqz_pu_seed_key(key, 0, i >> 32, 0) : key;
            quant_hash_block(blk_key, (uint32_t)i, rnd_buf);
            rnd = rnd_buf;
        }
        if (len < SQZ_PU_BLOCK) {
            /* Padding elements must encode harmlessly: use mn itself. */
            for (size_t j = len; j < SQZ_PU_BLOCK; j++) {
                a[j] = mn;
            }
        }
        quant_encode_block(a, rnd, mn, unit, inv_unit, levels, codes + (i - t0), err);
        if (res != NULL) {
            memcpy(res + i, err, len * sizeof *err);
        }
        if (len == SQZ_PU_BLOCK) {
            quant_error_lanes(err, err_lanes);
        } else {
            for (size_t j = 0; j < len; j++) {
                err_lanes[0] += (double)err[j] * err[j];
            }
        }
    }
}

static sqz_status_t quant_compress(void *state, sqz_compress_args_v1_t *args)
{
    const quant_state_t *st = (const quant_state_t *)state;
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *out = (uint8_t *)args->payload;
    size_t nb, total;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (!quant_layout(n, st->bits, st->bucket, &nb, &total)) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    if (args->capacity < total || (n > 0 && (in == NULL || out == NULL))) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const size_t B = st->bucket;
    const unsigned bits = st->bits;
    uint8_t *meta = out;
    uint8_t *packed = out + 8 * nb;
#if QUANT_X86
    if (quant_fast_ok(st, n)) {
        sqz_status_t r;
        switch (bits) {
        case 1: r = quant_compress_fast_1(st, args, meta, packed, nb); break;
        case 2: r = quant_compress_fast_2(st, args, meta, packed, nb); break;
        case 4: r = quant_compress_fast_4(st, args, meta, packed, nb); break;
        default: r = quant_compress_fast_8(st, args, meta, packed, nb); break;
        }
        if (r == SQZ_OK) {
            args->payload_bytes = total;
        }
        return r;
    }
#endif
    double sq_total = 0.0;
    const sqz_status_t r = quant_pass_meta(st, in, res, n, nb, meta, &sq_total);
    if (r != SQZ_OK) {
        return r;
    }
    /* Pass 2: encode tile by tile (tiles start on packed byte boundaries), split at buckets. */
    const uint32_t key = (uint32_t)sqz_pu_seed_key(st->seed, st->rank, args->seq, args->stage);
    double err_lanes[8] = {0};
    for (size_t t0 = 0; t0 < n; t0 += QUANT_TILE) {
        const size_t t1 = t0 + QUANT_TILE < n ? t0 + QUANT_TILE : n;
        /* Slack of one block: a short last block of a segment is encoded as a full one. */
        uint8_t codes[QUANT_TILE + SQZ_PU_BLOCK];
        for (size_t s = t0; s < t1;) {
            const size_t k = s / B;
            const size_t e = (k + 1) * B < t1 ? (k + 1) * B : t1;
            quant_encode_segment(st, in, res, s, e, t0, meta, k, key, codes, err_lanes);
            s = e;
        }
        sqz_pu_pack_bits(codes, t1 - t0, bits, packed + t0 / 8 * bits);
    }
    double norm2_err = 0.0;
    for (int j = 0; j < 8; j++) {
        norm2_err += err_lanes[j];
    }
    args->payload_bytes = total;
    args->norm2_in = sq_total;
    args->norm2_err = norm2_err;
    return SQZ_OK;
}

/* out[j] += decoded value of codes[j] for one block. */
static inline void quant_add_block(float *restrict out, const uint8_t *restrict codes, float mn,
                                   float unit)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        out[j] += quant_decode_one(mn, unit, (float)codes[j]);
    }
}

static sqz_status_t quant_decompress(void *state, const void *payload, size_t bytes, float *out,
                                     size_t n)
{
    const quant_state_t *st = (const quant_state_t *)state;
    size_t nb, total;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (!quant_layout(n, st->bits, st->bucket, &nb, &total) || bytes != total ||
        (bytes > 0 && payload == NULL)) {
        return SQZ_ERR_CORRUPT;
    }
    const size_t B = st->bucket;
    const unsigned bits = st->bits;
    const float levels = (float)((1u << bits) - 1u);
    const uint8_t *meta = (const uint8_t *)payload;
    const uint8_t *packed = meta + 8 * nb;

    /* Validate all metadata first: any b-bit code is valid, so the codes need no check. */
    for (size_t k = 0; k < nb; k++) {
        const float mn = sqz_pu_load_f32(meta + 8 * k);
        const float unit = sqz_pu_load_f32(meta + 8 * k + 4);
        if (!sqz_pu_is_finite_f32(mn) || !sqz_pu_is_finite_f32(unit) || !(unit >= 0.0f) ||
            !sqz_pu_is_finite_f32(quant_decode_one(mn, unit, levels))) {
            return SQZ_ERR_CORRUPT;
        }
    }
    if (out == NULL) {
        return SQZ_OK;
    }
#if QUANT_X86
    if (quant_fast_ok(st, n)) {
        const int stream = n * sizeof(float) >= QUANT_STREAM_BYTES;
        quant_decode_range_avx2(bits, meta, packed, B, 0, n, out, stream);
        if (stream) {
            _mm_sfence();
        }
        return SQZ_OK;
    }
#endif

    for (size_t t0 = 0; t0 < n; t0 += QUANT_TILE) {
        const size_t t1 = t0 + QUANT_TILE < n ? t0 + QUANT_TILE : n;
        uint8_t codes[QUANT_TILE];
        sqz_pu_unpack_bits(packed + t0 / 8 * bits, t1 - t0, bits, codes);
        size_t s = t0;
        while (s < t1) {
            const size_t k = s / B;
            const size_t e = (k + 1) * B < t1 ? (k + 1) * B : t1;
            const float mn = sqz_pu_load_f32(meta + 8 * k);
            const float unit = sqz_pu_load_f32(meta + 8 * k + 4);
            size_t i = s;
            for (; i + SQZ_PU_BLOCK <= e; i += SQZ_PU_BLOCK) {
                quant_add_block(out + i, codes + (i - t0), mn, unit);
            }
            for (; i < e; i++) {
                out[i] += quant_decode_one(mn, unit, (float)codes[i - t0]);
            }
            s = e;
        }
    }
    return SQZ_OK;
}

static void quant_destroy(void *state)
{
    free(state);
}

const sqz_compressor_v1_t sqz_compressor_quant = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "quant",
    .description = "bucketed max-min b-bit quantization with error feedback (CGX/QSGD style)",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = quant_params,
    .nparams = sizeof quant_params / sizeof quant_params[0],
    .config_size = sizeof(quant_config_t),
    .create = quant_create,
    .query = NULL,
    .max_payload = quant_max_payload,
    .compress = quant_compress,
    .decompress = quant_decompress,
    .destroy = quant_destroy,
    .flags = SQZ_COMPRESSOR_FIXED_PAYLOAD | SQZ_COMPRESSOR_CONTRACTIVE,
};
