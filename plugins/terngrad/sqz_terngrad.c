/*
 * "terngrad": TernGrad stochastic ternarization (Wen, Xu, Yan, Wu, Wang, Chen, Li, NeurIPS 2017;
 * ALGORITHMS.md section 5.2, reference code wenwei202/terngrad bingrad_common.py), on fixed-size
 * buckets that stand in for the paper's layers (ALGORITHMS.md section 10.1).
 *
 * a = in + residual is cut into buckets of TERNGRAD_BUCKET elements (the last one may be short).
 * Per bucket, with optional clipping (TERNGRAD_CLIP = c > 0, the paper's c = 2.5):
 *   sigma = population standard deviation of the bucket's a (about its mean, as the reference)
 *   ac = clip(a, -c * sigma, c * sigma)  (c = 0, or sigma = 0: ac = a; a constant bucket has no
 *                                          outlier, and clipping it to 0 would starve it forever)
 *   local scaler = max |ac|; at stage 0 the scaler s is the MAX of the local scalers over all
 *   ranks (args->shared, filled by shared_fill: the paper's scaler sharing), else the local one
 *   t = sign(a) * Bernoulli(|ac| / s) in {-1, 0, +1},   decoded as s * t (terngrad_decode_one)
 * Without clipping E[s * t] = a (unbiased; variance s |a| - a^2); with clipping it is biased
 * towards the clipped value.  The Bernoulli draw compares u * s with |ac| for u uniform in [0, 1)
 * from a counter-based hash of (seed, rank, seq, stage, element index): reproducible, independent
 * over ranks and stages, vectorizable.  Error feedback is optional: residual = a - decoded.
 * A shared scaler that is not finite or is below the local one (which the engine's MAX cannot
 * give for finite data) is ignored: the local scaler keeps every probability <= 1.
 *
 * Parameters: TERNGRAD_BUCKET (elements per scaler, 8..2^24), TERNGRAD_CLIP (0 = off, 1..16).
 *
 * Wire format (little-endian), a deterministic function of (n, B): nb = ceil(n / B) f32 scalers
 * (finite, sign bit clear: the scaler used, at stage 0 the shared one), then n 2-bit codes packed
 * 4 per byte LSB-first (0: 0, 1: +1, 2: -1; 3 is invalid; padding bits zero).  4 * nb +
 * ceil(n / 4) bytes: 2 + 32 / B bits per element (2.016 at B = 2048).
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER: each chunk is decoded and summed by its owner, and the
 * sum is ternarized again (stage 1: own scaler, own noise; still unbiased without clipping).
 *
 * What a shim cannot know: layer boundaries (the paper's scaler and sigma are per layer; here per
 * bucket), and which tensors are small enough to bypass (the reference's size_to_binarize).
 *
 * Implementation: one pass over memory, bucket by bucket: the bucket's statistics (finiteness,
 * sum a, sum a^2, max |a|) then its encode while it sits in cache.  The kernels are C loops over
 * fixed blocks of 64 elements built twice (baseline and AVX2, chosen at run time): the same
 * operations in the same order, so payloads and shared values are bit-identical.  On a non-finite
 * bucket, the buckets already written get their residual back (residual_new + decoded - in)
 * before SQZ_ERR_NONFINITE.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

/** Config struct filled by the core from terngrad_params. */
typedef struct terngrad_config {
    int64_t bucket; /* TERNGRAD_BUCKET: elements per scaler */
    double  clip;   /* TERNGRAD_CLIP: 0 (off) or the clip level in standard deviations */
} terngrad_config_t;

static const sqz_param_def_v1_t terngrad_params[] = {
    {
        .name = "TERNGRAD_BUCKET",
        .type = SQZ_PARAM_INT,
        .default_value = "2048",
        .min = 8,
        .max = 16777216,
        .offset = offsetof(terngrad_config_t, bucket),
        .help = "elements per bucket, a pseudo-layer with one f32 scaler agreed by all ranks",
    },
    {
        .name = "TERNGRAD_CLIP",
        .type = SQZ_PARAM_DOUBLE,
        .default_value = "1.5",
        .min = 0,
        .max = 16,
        .offset = offsetof(terngrad_config_t, clip),
        .help = "clip |a| to this many bucket standard deviations before ternarizing "
                "(0: off; else 1..16; the paper uses 2.5; 1.5 by default: it bounds the scaler, "
                "hence the variance, which unclipped, or at 2.5, diverges at step sizes dense SGD "
                "still takes (docs/methods.md); biased)",
    },
};

typedef struct terngrad_state {
    size_t   bucket;
    double   clip; /* 0: off */
    uint64_t seed;
    int      rank;
} terngrad_state_t;

/* Codes are staged in tiles of this many elements: a multiple of 4 (each tile starts on a byte of
 * the packed stream) and of SQZ_PU_BLOCK, small enough to live on the stack. */
#define TERNGRAD_TILE 1024

static sqz_status_t terngrad_create(const void *config, const sqz_compressor_env_v1_t *env,
                                    void **state)
{
    const terngrad_config_t *cfg = (const terngrad_config_t *)config;
    /* A clip below one standard deviation would flatten most of every bucket: not TernGrad. */
    if (cfg == NULL || cfg->bucket < 8 || cfg->bucket > ((int64_t)1 << 24) ||
        !(cfg->clip == 0.0 || (cfg->clip >= 1.0 && cfg->clip <= 16.0))) {
        return SQZ_ERR_INVALID_PARAM;
    }
    terngrad_state_t *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    st->bucket = (size_t)cfg->bucket;
    st->clip = cfg->clip;
    st->seed = env != NULL ? env->seed : 0;
    st->rank = env != NULL ? env->rank : 0;
    *state = st;
    return SQZ_OK;
}

static void terngrad_destroy(void *state)
{
    free(state);
}

/* Payload layout for n elements.  \return 0 when the size does not fit in size_t. */
static int terngrad_layout(const terngrad_state_t *st, size_t n, size_t *nb, size_t *total)
{
    return sqz_pu_bucket_layout(n, st->bucket, 2, nb, total);
}

static size_t terngrad_max_payload(void *state, size_t n)
{
    size_t nb, total;
    if (state == NULL || !terngrad_layout((const terngrad_state_t *)state, n, &nb, &total)) {
        return SIZE_MAX;
    }
    return total;
}

static size_t terngrad_shared_len(void *state, size_t n)
{
    size_t nb, total;
    if (state == NULL || !terngrad_layout((const terngrad_state_t *)state, n, &nb, &total)) {
        return 0;
    }
    return nb;
}

/** The decoded value of a valid code (0, 1 or 2): the single definition used by compress (for the
 *  residual) and decompress, so that decode(payload) + residual == a up to one rounding. */
static inline float terngrad_decode_one(float s, uint32_t code)
{
    return s * ((float)(code & 1u) - (float)(code >> 1));
}

/* ---------------------------------------------------------------------------------------------
 * Block kernels over SQZ_PU_BLOCK elements through restrict pointers (they vectorize at -O2).
 * Sums keep 8 lanes (element j goes to lane j % 8), combined in a fixed order.
 * ------------------------------------------------------------------------------------------- */

/* Per-lane statistics of a bucket. */
typedef struct terngrad_lanes {
    double   sum[8];
    double   sq[8];
    uint32_t mx[8]; /* max |a| bits */
} terngrad_lanes_t;

/* Statistics of one block.  \return nonzero when some a is NaN or Inf. */
static inline uint32_t terngrad_stats_block(const float *restrict a, terngrad_lanes_t *restrict l)
{
    uint32_t bad = 0;
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int k = 0; k < 8; k++) {
            const float x = a[j + k];
            const uint32_t key = sqz_pu_abs_key(x);
            bad |= (uint32_t)(key >= SQZ_PU_F32_INF_BITS);
            l->mx[k] = key > l->mx[k] ? key : l->mx[k];
            l->sum[k] += (double)x;
            l->sq[k] += (double)x * (double)x;
        }
    }
    return bad;
}

/* Encodes one block: 2-bit code and error a - decoded per element.  m = min(|a|, clip level) is
 * |ac|; u * s < m with u uniform in [0, 1) is Bernoulli(m / s) (for m <= s; u * s < s always). */
static inline void terngrad_encode_block(const float *restrict a, uint32_t key, uint32_t first,
                                         float s, float clip, uint8_t *restrict codes,
                                         float *restrict err)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        const uint32_t bits = sqz_pu_f32_bits(a[j]);
        const uint32_t sb = bits >> 31;
        float m = sqz_pu_bits_f32(bits & 0x7fffffffu);
        m = m < clip ? m : clip;
        const float u = sqz_pu_hash_f32(key, first + (uint32_t)j);
        const uint32_t nz = (uint32_t)(u * s < m);
        const uint32_t code = nz + (nz & sb);
        codes[j] = (uint8_t)code;
        err[j] = a[j] - terngrad_decode_one(s, code);
    }
}

/* out[j] += decoded value of codes[j] for one block. */
static inline void terngrad_add_block(float *restrict out, const uint8_t *restrict codes, float s)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        out[j] += terngrad_decode_one(s, codes[j]);
    }
}

/* Packs m codes (each < 4) 4 per byte LSB-first into ceil(m / 4) bytes at out.  Whole words of 4
 * codes through 32-bit SWAR (codes at bits 0, 8, 16, 24 move to bits 0, 2, 4, 6). */
static inline void terngrad_pack(const uint8_t *restrict codes, size_t m, uint8_t *restrict out)
{
    size_t k = 0;
    for (; 4 * k + 4 <= m; k++) {
        const uint32_t x = sqz_pu_load_u32(codes + 4 * k);
        out[k] = (uint8_t)(x | (x >> 6) | (x >> 12) | (x >> 18));
    }
    if (4 * k < m) {
        uint32_t v = 0;
        for (size_t q = 0; 4 * k + q < m; q++) {
            v |= (uint32_t)codes[4 * k + q] << (2 * q);
        }
        out[k] = (uint8_t)v;
    }
}

/* Unpacks m codes from ceil(m / 4) bytes at in (nothing past them is read) into m bytes. */
static inline void terngrad_unpack(const uint8_t *restrict in, size_t m, uint8_t *restrict codes)
{
    size_t k = 0;
    for (; 4 * k + 4 <= m; k++) {
        const uint32_t x = in[k];
        sqz_pu_store_u32(codes + 4 * k, (x | (x << 6) | (x << 12) | (x << 18)) & 0x03030303u);
    }
    for (size_t q = 0; 4 * k + q < m; q++) {
        codes[4 * k + q] = (uint8_t)((in[k] >> (2 * q)) & 3u);
    }
}

/* The hash key of the element block starting at global index i: indices past 2^32 re-key the
 * hash rather than repeat its stream. */
static inline uint32_t terngrad_block_key(uint32_t key, size_t i)
{
    return (i >> 32) ? key ^ (uint32_t)sqz_pu_seed_key(key, 0, (uint64_t)(i >> 32), 0) : key;
}

/* The clip level of a bucket of m elements from its sums: INFINITY when clipping is off or the
 * bucket is constant (sigma = 0). */
static float terngrad_clip_level(const terngrad_state_t *st, double sum, double sq, size_t m)
{
    if (st->clip <= 0.0 || m == 0) {
        return INFINITY;
    }
    const double mean = sum / (double)m;
    const double var = sq / (double)m - mean * mean;
    if (!(var > 0.0)) {
        return INFINITY;
    }
    const float c = (float)(st->clip * sqrt(var));
    return c > 0.0f ? c : INFINITY;
}

/* Statistics of the bucket [s0, e).  \return nonzero when some a is NaN or Inf. */
static inline __attribute__((always_inline)) uint32_t
terngrad_bucket_stats(const float *in, const float *res, size_t s0, size_t e, double *sum,
                      double *sq, float *maxabs)
{
    terngrad_lanes_t l;
    memset(&l, 0, sizeof l);
    uint32_t bad = 0;
    for (size_t i = s0; i < e; i += SQZ_PU_BLOCK) {
        float a[SQZ_PU_BLOCK];
        const size_t len = e - i < SQZ_PU_BLOCK ? e - i : SQZ_PU_BLOCK;
        sqz_pu_load_block(in + i, res != NULL ? res + i : NULL, len, a);
        bad |= terngrad_stats_block(a, &l);
    }
    double bsum = 0.0, bsq = 0.0;
    uint32_t bmx = 0;
    for (int j = 0; j < 8; j++) {
        bsum += l.sum[j];
        bsq += l.sq[j];
        bmx = l.mx[j] > bmx ? l.mx[j] : bmx;
    }
    *sum = bsum;
    *sq = bsq;
    *maxabs = sqz_pu_bits_f32(bmx);
    return bad;
}

/* vals[k] = the local scaler of bucket k (max |ac|); anything for a non-finite bucket. */
static inline __attribute__((always_inline)) void
terngrad_fill_body(const terngrad_state_t *st, const float *in, const float *res, size_t n,
                   size_t nb, float *vals)
{
    const size_t B = st->bucket;
    for (size_t k = 0; k < nb; k++) {
        const size_t s0 = k * B;
        const size_t e = s0 + B < n ? s0 + B : n;
        double sum, sq;
        float mx;
        (void)terngrad_bucket_stats(in, res, s0, e, &sum, &sq, &mx);
        const float c = terngrad_clip_level(st, sum, sq, e - s0);
        vals[k] = mx < c ? mx : c;
    }
}

/* out[from, to) += decoded values; from is a multiple of TERNGRAD_TILE.  The payload is valid. */
static inline __attribute__((always_inline)) void
terngrad_decode_body(const terngrad_state_t *st, const uint8_t *scalers, const uint8_t *packed,
                     size_t from, size_t to, float *out)
{
    const size_t B = st->bucket;
    uint8_t codes[TERNGRAD_TILE];
    for (size_t t0 = from; t0 < to; t0 += TERNGRAD_TILE) {
        const size_t t1 = t0 + TERNGRAD_TILE < to ? t0 + TERNGRAD_TILE : to;
        terngrad_unpack(packed + t0 / 4, t1 - t0, codes);
        size_t i = t0;
        while (i < t1) {
            const size_t k = i / B;
            const size_t e = (k + 1) * B < t1 ? (k + 1) * B : t1;
            const float s = sqz_pu_load_f32(scalers + 4 * k);
            for (; i + SQZ_PU_BLOCK <= e; i += SQZ_PU_BLOCK) {
                terngrad_add_block(out + i, codes + (i - t0), s);
            }
            for (; i < e; i++) {
                out[i] += terngrad_decode_one(s, codes[i - t0]);
            }
        }
    }
}

/* \return 1 when no code of the n packed codes is 3 and the padding bits are zero. */
static inline __attribute__((always_inline)) int terngrad_codes_ok_body(const uint8_t *packed,
                                                                       size_t n)
{
    const size_t bytes = sqz_pu_packed_bytes(n, 2);
    /* Code 3 has both bits set: bit 2q & bit 2q+1 of a byte (the shift never moves a bit of the
     * next byte onto an even position). */
    uint64_t bad = 0;
    size_t k = 0;
    for (; k + 64 <= bytes; k += 64) {
        const uint8_t *restrict p = packed + k;
        for (int j = 0; j < 64; j += 8) {
            const uint64_t x = sqz_pu_load_u64(p + j);
            bad |= x & (x >> 1) & 0x5555555555555555ull;
        }
        if (bad) {
            return 0;
        }
    }
    for (; k < bytes; k++) {
        bad |= (uint64_t)(packed[k] & (packed[k] >> 1) & 0x55u);
    }
    if (n % 4 != 0) {
        bad |= (uint64_t)(packed[bytes - 1] >> (2 * (n % 4)));
    }
    return bad == 0;
}

static inline __attribute__((always_inline)) sqz_status_t
terngrad_compress_body(const terngrad_state_t *st, sqz_compress_args_v1_t *args,
                       const float *shared, uint8_t *scalers, uint8_t *packed, size_t nb)
{
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    const size_t B = st->bucket;
    const uint32_t key = (uint32_t)sqz_pu_seed_key(st->seed, st->rank, args->seq, args->stage);
    /* Codes of [p0, p0 + fill) wait in the stage; the slack takes a padded short block. */
    uint8_t codes[TERNGRAD_TILE + SQZ_PU_BLOCK];
    size_t p0 = 0, fill = 0;
    double sq_total = 0.0, err_lanes[8] = {0}, err_tail = 0.0;
    for (size_t k = 0; k < nb; k++) {
        const size_t s0 = k * B;
        const size_t e = s0 + B < n ? s0 + B : n;
        double sum, sq;
        float mx;
        if (terngrad_bucket_stats(in, res, s0, e, &sum, &sq, &mx)) {
            if (res != NULL && s0 > 0) {
                /* Give the buckets already written their residual back: res + decoded - in. */
                terngrad_pack(codes, fill, packed + p0 / 4);
                terngrad_decode_body(st, scalers, packed, 0, s0, res);
                for (size_t i = 0; i < s0; i++) {
                    res[i] -= in[i];
                }
            }
            return SQZ_ERR_NONFINITE;
        }
        sq_total += sq;
        const float clip = terngrad_clip_level(st, sum, sq, e - s0);
        float s = mx < clip ? mx : clip;
        if (shared != NULL && sqz_pu_is_finite_f32(shared[k]) && shared[k] > s) {
            s = shared[k];
        }
        sqz_pu_store_f32(scalers + 4 * k, s);

        for (size_t i = s0; i < e;) {
            size_t len = e - i < SQZ_PU_BLOCK ? e - i : SQZ_PU_BLOCK;
            len = len < TERNGRAD_TILE - fill ? len : TERNGRAD_TILE - fill;
            float a[SQZ_PU_BLOCK], err[SQZ_PU_BLOCK];
            sqz_pu_load_block(in + i, res != NULL ? res + i : NULL, len, a);
            terngrad_encode_block(a, terngrad_block_key(key, i), (uint32_t)i, s, clip,
                                  codes + fill, err);
            if (res != NULL) {
                memcpy(res + i, err, len * sizeof *err);
            }
            if (len == SQZ_PU_BLOCK) {
                sqz_pu_sq_lanes8(err, err_lanes);
            } else {
                for (size_t j = 0; j < len; j++) {
                    err_tail += (double)err[j] * (double)err[j];
                }
            }
            i += len;
            fill += len;
            if (fill == TERNGRAD_TILE) {
                terngrad_pack(codes, TERNGRAD_TILE, packed + p0 / 4);
                p0 += TERNGRAD_TILE;
                fill = 0;
            }
        }
    }
    if (fill > 0) {
        terngrad_pack(codes, fill, packed + p0 / 4);
    }
    double norm2_err = err_tail;
    for (int j = 0; j < 8; j++) {
        norm2_err += err_lanes[j];
    }
    args->norm2_in = sq_total;
    args->norm2_err = norm2_err;
    return SQZ_OK;
}

static sqz_status_t terngrad_compress_c(const terngrad_state_t *st, sqz_compress_args_v1_t *args,
                                        const float *shared, uint8_t *scalers, uint8_t *packed,
                                        size_t nb)
{
    return terngrad_compress_body(st, args, shared, scalers, packed, nb);
}

static void terngrad_fill_c(const terngrad_state_t *st, const float *in, const float *res,
                            size_t n, size_t nb, float *vals)
{
    terngrad_fill_body(st, in, res, n, nb, vals);
}

static void terngrad_decode_c(const terngrad_state_t *st, const uint8_t *scalers,
                              const uint8_t *packed, size_t n, float *out)
{
    terngrad_decode_body(st, scalers, packed, 0, n, out);
}

static int terngrad_codes_ok_c(const uint8_t *packed, size_t n)
{
    return terngrad_codes_ok_body(packed, n);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SQZ_PU_NO_SIMD)
#define TERNGRAD_X86 1
/* The same bodies compiled for AVX2 (no FMA: -ffp-contract=off and no "fma" target), so every
 * float operation rounds as in the baseline build: payloads and shared values are bit-identical,
 * which the shared scaler relies on (shared_fill and compress must agree on the local max). */
__attribute__((target("avx2"))) static sqz_status_t
terngrad_compress_avx2(const terngrad_state_t *st, sqz_compress_args_v1_t *args,
                       const float *shared, uint8_t *scalers, uint8_t *packed, size_t nb)
{
    return terngrad_compress_body(st, args, shared, scalers, packed, nb);
}

__attribute__((target("avx2"))) static void terngrad_fill_avx2(const terngrad_state_t *st,
                                                               const float *in, const float *res,
                                                               size_t n, size_t nb, float *vals)
{
    terngrad_fill_body(st, in, res, n, nb, vals);
}

__attribute__((target("avx2"))) static void terngrad_decode_avx2(const terngrad_state_t *st,
                                                                 const uint8_t *scalers,
                                                                 const uint8_t *packed, size_t n,
                                                                 float *out)
{
    terngrad_decode_body(st, scalers, packed, 0, n, out);
}

__attribute__((target("avx2"))) static int terngrad_codes_ok_avx2(const uint8_t *packed,
                                                                  size_t n)
{
    return terngrad_codes_ok_body(packed, n);
}

static int terngrad_have_avx2(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return have;
}
#else
#define TERNGRAD_X86 0
#endif

static void terngrad_shared_fill(void *state, const float *in, const float *residual, size_t n,
                                 float *vals)
{
    const terngrad_state_t *st = (const terngrad_state_t *)state;
    size_t nb, total;
    if (st == NULL || vals == NULL || !terngrad_layout(st, n, &nb, &total) ||
        (n > 0 && in == NULL)) {
        return;
    }
#if TERNGRAD_X86
    if (terngrad_have_avx2()) {
        terngrad_fill_avx2(st, in, residual, n, nb, vals);
        return;
    }
#endif
    terngrad_fill_c(st, in, residual, n, nb, vals);
}

static sqz_status_t terngrad_compress(void *state, sqz_compress_args_v1_t *args)
{
    const terngrad_state_t *st = (const terngrad_state_t *)state;
    size_t nb, total;
    if (st == NULL || args == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const size_t n = args->n;
    if (!terngrad_layout(st, n, &nb, &total)) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    if (args->capacity < total || (n > 0 && (args->in == NULL || args->payload == NULL))) {
        return SQZ_ERR_INVALID_PARAM;
    }
    /* The agreed scalers exist only at stage 0 and in an args struct that has the field. */
    const float *shared = NULL;
    if (args->stage == 0 && args->size >= offsetof(sqz_compress_args_v1_t, shared) +
                                               sizeof(args->shared)) {
        shared = args->shared;
    }
    uint8_t *scalers = (uint8_t *)args->payload;
    uint8_t *packed = scalers + 4 * nb;
    sqz_status_t r;
#if TERNGRAD_X86
    if (terngrad_have_avx2()) {
        r = terngrad_compress_avx2(st, args, shared, scalers, packed, nb);
    } else {
        r = terngrad_compress_c(st, args, shared, scalers, packed, nb);
    }
#else
    r = terngrad_compress_c(st, args, shared, scalers, packed, nb);
#endif
    if (r == SQZ_OK) {
        args->payload_bytes = total;
    }
    return r;
}

static sqz_status_t terngrad_decompress(void *state, const void *payload, size_t bytes,
                                        float *out, size_t n)
{
    const terngrad_state_t *st = (const terngrad_state_t *)state;
    size_t nb, total;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (!terngrad_layout(st, n, &nb, &total) || bytes != total ||
        (bytes > 0 && payload == NULL)) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *scalers = (const uint8_t *)payload;
    const uint8_t *packed = scalers + 4 * nb;
    /* Validate everything before writing: scalers finite with the sign bit clear, then codes. */
    for (size_t k = 0; k < nb; k++) {
        if (sqz_pu_load_u32(scalers + 4 * k) >= SQZ_PU_F32_INF_BITS) {
            return SQZ_ERR_CORRUPT;
        }
    }
    if (n > 0) {
#if TERNGRAD_X86
        const int ok = terngrad_have_avx2() ? terngrad_codes_ok_avx2(packed, n)
                                            : terngrad_codes_ok_c(packed, n);
#else
        const int ok = terngrad_codes_ok_c(packed, n);
#endif
        if (!ok) {
            return SQZ_ERR_CORRUPT;
        }
    }
    if (out == NULL || n == 0) {
        return SQZ_OK;
    }
#if TERNGRAD_X86
    if (terngrad_have_avx2()) {
        terngrad_decode_avx2(st, scalers, packed, n, out);
        return SQZ_OK;
    }
#endif
    terngrad_decode_c(st, scalers, packed, n, out);
    return SQZ_OK;
}

const sqz_compressor_v1_t sqz_compressor_terngrad = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "terngrad",
    .description = "TernGrad stochastic ternarization per bucket with a scaler shared by all ranks",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = terngrad_params,
    .nparams = sizeof terngrad_params / sizeof terngrad_params[0],
    .config_size = sizeof(terngrad_config_t),
    .create = terngrad_create,
    .query = NULL,
    .max_payload = terngrad_max_payload,
    .compress = terngrad_compress,
    .decompress = terngrad_decompress,
    .destroy = terngrad_destroy,
    .shared_len = terngrad_shared_len,
    .shared_fill = terngrad_shared_fill,
    .flags = SQZ_COMPRESSOR_FIXED_PAYLOAD | SQZ_COMPRESSOR_UNBIASED |
             SQZ_COMPRESSOR_EF_NONE | SQZ_COMPRESSOR_EF14_DIVERGES |
             SQZ_COMPRESSOR_EF21_DIVERGES,
};
