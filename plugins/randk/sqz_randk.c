/*
 * "randk": random-k sparsification, after Stich, Cordonnier, Jaggi, "Sparsified SGD with Memory"
 * (NeurIPS 2018), the rand_k operator that DGC and Ok-Topk use as their baseline (GRACE and
 * BytePS call it randomk).
 *
 * a = in + residual; k = max(1, ceil(RANDK_DENSITY * n)), at most n (0 for n == 0).  The
 * compressor sends a at k distinct positions drawn uniformly at random (every k-subset equally
 * likely, so every index is kept with probability k/n), ascending:
 *   RANDK_SCALE=none:     the values as they are.  With error feedback the residual keeps the rest
 *                         and gets exactly 0 at the sent positions: decode + residual_new == a
 *                         holds bit for bit.
 *   RANDK_SCALE=unbiased: the values times n/k, so that E[decode] = a (Stich's unbiased rand_k).
 *                         Meant for use without error feedback (with it the invariant still holds
 *                         up to rounding, but the residual then carries -(n/k - 1) a).
 * At stage 1 (the server's re-compression of a reduced chunk) values are never rescaled: they
 * already carry the n/k of stage 0.
 *
 * The positions depend on (env->seed, seq, n) only, NOT on the rank or the stage: every rank
 * picks the same positions for a chunk of the same length in the same call.  Hence:
 *   - the payload carries no indices (32 bits per kept element), only the 64-bit selection key;
 *   - in the reduce-scatter exchange the sum of the P payloads of a chunk is supported on that
 *     same pattern, and the server stage re-selects exactly that support: with RANDK_SCALE=none
 *     the second phase is lossless and the server residual stays zero;
 *   - equal-length chunks of one call (every chunk but maybe the last) share one pattern,
 *     relative to their start; the pattern changes with seq, so over calls every element is
 *     still kept with probability k/n, independently between calls.
 * Selection: Floyd's algorithm on a bitmap of n bits (of the n - k positions left out when
 * k > n/2), read back in ascending order; draws are 64-bit splitmix64 values mapped to [0, j]
 * with a 128-bit multiply (bias below 2^-32).  O(k + n/64) per pattern; the last pattern is
 * cached in the state, so the P chunks, the server stage and the decodes of one call compute it
 * once per state.
 * Compress is one pass over memory in tiles of RANDK_TILE elements: per 64-element block,
 * a = in + residual, finiteness and sum a^2, then residual = a (a non-finite block is not
 * written; the blocks before it get a - in back, as the finiteness contract allows); the tile's
 * kept positions are then gathered while it is in cache.
 *
 * Wire format (little-endian): u32 k, u64 key, then k f32 values (finite), in ascending order of
 * position.  12 + 4k bytes: 32 bits per kept element plus 96 per payload.  decompress checks that
 * k is the k of this configuration for n and regenerates the positions from (key, n).
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER.
 *
 * What a shim cannot know: nothing that rand_k needs.  Its value depends on error feedback
 * (RANDK_SCALE=none, Stich et al.) or an unbiased estimator (unbiased, whose variance grows like
 * n/k: at density 0.01 the noise is ~10x the signal per element, so it suits high densities).
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

enum { RANDK_SCALE_NONE = 0, RANDK_SCALE_UNBIASED = 1 };

/** Config struct filled by the core from randk_params. */
typedef struct randk_config {
    double density; /* RANDK_DENSITY: fraction of elements kept */
    int    scale;   /* RANDK_SCALE: RANDK_SCALE_NONE or RANDK_SCALE_UNBIASED */
} randk_config_t;

static const sqz_param_def_v1_t randk_params[] = {
    {
        .name = "RANDK_DENSITY",
        .type = SQZ_PARAM_DOUBLE,
        .default_value = "0.01",
        .min = 1e-6,
        .max = 1.0,
        .offset = offsetof(randk_config_t, density),
        .help = "fraction of elements sent, at random positions: k = max(1, ceil(density * n))",
    },
    {
        .name = "RANDK_SCALE",
        .type = SQZ_PARAM_ENUM,
        .default_value = "none",
        .choices = "none|unbiased",
        .offset = offsetof(randk_config_t, scale),
        .help = "kept values as they are (for error feedback) or times n/k (unbiased, without it)",
    },
};

/* Header bytes: u32 k, u64 key. */
#define RANDK_HDR 12u

/* Elements per tile of the compress pass: in and residual of a tile (32 KiB) stay in L1/L2
 * between the dense pass and the gather of the tile's kept positions. */
#define RANDK_TILE 4096u

/* Floyd draws made (and their bitmap words prefetched) ahead of use. */
#define RANDK_BATCH 32u

typedef struct randk_state {
    randk_config_t cfg;
    uint64_t       seed;
    /* Grow-only scratch. */
    uint64_t      *bits; /* Floyd bitmap, n bits */
    size_t         bits_cap;
    uint32_t      *idx;  /* the cached pattern: k ascending positions */
    size_t         idx_cap;
    int            avx2; /* the CPU runs randk_tile_avx2 (checked once, in create()) */
    /* Which pattern idx holds (valid == 0: none). */
    int            valid;
    uint64_t       ckey;
    size_t         cn, ck;
} randk_state_t;

/* \return 1 when the dense kernel may use AVX2. */
static int randk_cpu_avx2(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SQZ_PU_NO_SIMD)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

static sqz_status_t randk_create(const void *config, const sqz_compressor_env_v1_t *env,
                                 void **state)
{
    const randk_config_t *cfg = (const randk_config_t *)config;
    if (cfg == NULL || !(cfg->density > 0.0 && cfg->density <= 1.0) ||
        (cfg->scale != RANDK_SCALE_NONE && cfg->scale != RANDK_SCALE_UNBIASED)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    randk_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    s->cfg = *cfg;
    s->seed = env != NULL ? env->seed : 0;
    s->avx2 = randk_cpu_avx2();
    *state = s;
    return SQZ_OK;
}

static void randk_destroy(void *state)
{
    randk_state_t *s = (randk_state_t *)state;
    if (s == NULL) {
        return;
    }
    free(s->bits);
    free(s->idx);
    free(s);
}

static sqz_status_t randk_query(void *state, const sqz_query_v1_t *q)
{
    /* Positions are u32 (the pattern cache and the bitmap). */
    return q->count > UINT32_MAX ? SQZ_ERR_NOT_SUPPORTED : SQZ_OK;
}

static size_t randk_max_payload(void *state, size_t n)
{
    const randk_state_t *s = (const randk_state_t *)state;
    if (s == NULL || n > UINT32_MAX) {
        return SIZE_MAX;
    }
    return RANDK_HDR + 4 * sqz_pu_density_count(s->cfg.density, n);
}

/** \return the selection key of a call: a function of (seed, seq, n) only, so that every rank
 *  and both stages agree on the pattern of a chunk (see the header comment). */
static uint64_t randk_key(uint64_t seed, uint64_t seq, size_t n)
{
    uint64_t s = seed;
    uint64_t h = sqz_pu_splitmix64(&s);
    s = h ^ seq;
    h = sqz_pu_splitmix64(&s);
    s = h ^ (uint64_t)n;
    return sqz_pu_splitmix64(&s);
}

/** \return a uniform integer in [0, bound), 1 <= bound <= 2^32: Lemire's multiply-shift on 64
 *  random bits, relative bias at most bound / 2^64. */
static inline uint64_t randk_below(uint64_t *s, uint64_t bound)
{
    const uint64_t x = sqz_pu_splitmix64(s);
#if defined(__SIZEOF_INT128__)
    return (uint64_t)(((unsigned __int128)x * bound) >> 64);
#else
    return x % bound;
#endif
}

/** Makes st->idx hold the pattern of (key, n, k): k distinct positions < n, ascending, a
 *  uniformly random k-subset that depends on (key, n, k) only.  \return SQZ_OK or
 *  SQZ_ERR_NO_MEMORY (the cache is then empty). */
static sqz_status_t randk_pattern(randk_state_t *st, uint64_t key, size_t n, size_t k)
{
    if (st->valid && st->ckey == key && st->cn == n && st->ck == k) {
        return SQZ_OK;
    }
    st->valid = 0;
    if (sqz_pu_grow((void **)&st->idx, &st->idx_cap, (k ? k : 1) * sizeof(uint32_t)) == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    uint32_t *const idx = st->idx;
    if (k == n) {
        for (size_t i = 0; i < n; i++) {
            idx[i] = (uint32_t)i;
        }
    } else {
        const size_t nw = (n + 63) / 64;
        if (sqz_pu_grow((void **)&st->bits, &st->bits_cap, nw * sizeof(uint64_t)) == NULL) {
            return SQZ_ERR_NO_MEMORY;
        }
        uint64_t *const bits = st->bits;
        memset(bits, 0, nw * sizeof(uint64_t));
        /* Floyd: for j = n-m .. n-1 take t uniform in [0, j], or j itself when t is taken; this
         * gives a uniform m-subset.  Draw the smaller of the kept and the left-out sets. */
        const int invert = k > n / 2;
        const size_t m = invert ? n - k : k;
        uint64_t s = key;
        /* The draws do not depend on the bitmap: make a batch and prefetch its words first (the
         * bitmap outgrows L2 from n ~ 4M). */
        uint32_t t[RANDK_BATCH];
        for (size_t j0 = n - m; j0 < n; j0 += RANDK_BATCH) {
            const size_t b = n - j0 < RANDK_BATCH ? n - j0 : RANDK_BATCH;
            for (size_t q = 0; q < b; q++) {
                t[q] = (uint32_t)randk_below(&s, (uint64_t)(j0 + q) + 1);
                __builtin_prefetch(bits + t[q] / 64, 1);
            }
            for (size_t q = 0; q < b; q++) {
                const size_t x = ((bits[t[q] / 64] >> (t[q] % 64)) & 1u) ? j0 + q : t[q];
                bits[x / 64] |= (uint64_t)1 << (x % 64);
            }
        }
        const uint64_t flip = invert ? ~(uint64_t)0 : 0;
        size_t c = 0;
        for (size_t w = 0; w < nw; w++) {
            uint64_t x = bits[w] ^ flip;
            if (w == nw - 1 && n % 64 != 0) {
                x &= ((uint64_t)1 << (n % 64)) - 1;
            }
            while (x != 0) {
                idx[c++] = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(x));
                x &= x - 1;
            }
        }
        /* c == k by construction. */
    }
    st->valid = 1;
    st->ckey = key;
    st->cn = n;
    st->ck = k;
    return SQZ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Dense kernels: blocks of SQZ_PU_BLOCK elements in GCC vector types (portable: SSE2 splits the
 * 32-byte vectors in two), because the loop vectorizer keeps array accumulators in memory.  The
 * sum of a^2 is in double (it overflows float for large |a|), element j in lane j % 16: four
 * independent add chains.
 * ------------------------------------------------------------------------------------------- */
typedef float    randk_v4f __attribute__((vector_size(16)));
typedef uint32_t randk_v4u __attribute__((vector_size(16)));
typedef double   randk_v4d __attribute__((vector_size(32)));

#define RANDK_QUADS (SQZ_PU_BLOCK / 4)

/* Statistics of the quads a[0, RANDK_QUADS): l2 += a^2 by lane.  \return non-zero when some a
 * is NaN or Inf. */
static inline __attribute__((always_inline)) uint32_t randk_stats_quads(const randk_v4f *a,
                                                                        randk_v4d *l2)
{
    const randk_v4u absmask = {0x7fffffffu, 0x7fffffffu, 0x7fffffffu, 0x7fffffffu};
    const randk_v4u inf = {SQZ_PU_F32_INF_BITS, SQZ_PU_F32_INF_BITS, SQZ_PU_F32_INF_BITS,
                           SQZ_PU_F32_INF_BITS};
    randk_v4u bad = {0, 0, 0, 0};
    randk_v4d acc0 = l2[0], acc1 = l2[1], acc2 = l2[2], acc3 = l2[3];
    for (int q = 0; q < RANDK_QUADS; q += 4) {
        randk_v4d d;
        bad |= (randk_v4u)((((randk_v4u)a[q]) & absmask) >= inf);
        d = __builtin_convertvector(a[q], randk_v4d);
        acc0 += d * d;
        bad |= (randk_v4u)((((randk_v4u)a[q + 1]) & absmask) >= inf);
        d = __builtin_convertvector(a[q + 1], randk_v4d);
        acc1 += d * d;
        bad |= (randk_v4u)((((randk_v4u)a[q + 2]) & absmask) >= inf);
        d = __builtin_convertvector(a[q + 2], randk_v4d);
        acc2 += d * d;
        bad |= (randk_v4u)((((randk_v4u)a[q + 3]) & absmask) >= inf);
        d = __builtin_convertvector(a[q + 3], randk_v4d);
        acc3 += d * d;
    }
    l2[0] = acc0;
    l2[1] = acc1;
    l2[2] = acc2;
    l2[3] = acc3;
    return bad[0] | bad[1] | bad[2] | bad[3];
}

/* Error feedback: a = in + res; when the block is finite, res = a and its statistics go to l2;
 * a non-finite block is left untouched (a - in cannot give back a residual whose a overflowed). */
static inline __attribute__((always_inline)) uint32_t
randk_ef_block(const float *restrict in, float *restrict res, randk_v4d *restrict l2)
{
    randk_v4f a[RANDK_QUADS];
    randk_v4d acc[4] = {l2[0], l2[1], l2[2], l2[3]};
    for (int q = 0; q < RANDK_QUADS; q++) {
        randk_v4f x, r;
        memcpy(&x, in + 4 * q, sizeof x);
        memcpy(&r, res + 4 * q, sizeof r);
        a[q] = x + r;
    }
    if (randk_stats_quads(a, acc) != 0) {
        return 1;
    }
    memcpy(res, a, sizeof a);
    for (int c = 0; c < 4; c++) {
        l2[c] = acc[c];
    }
    return 0;
}

/* No error feedback: statistics of a = in. */
static inline __attribute__((always_inline)) uint32_t randk_stats_block(const float *restrict in,
                                                                        randk_v4d *restrict l2)
{
    randk_v4f a[RANDK_QUADS];
    memcpy(a, in, sizeof a);
    return randk_stats_quads(a, l2);
}

/* One tile [0, m), block by block.  \return non-zero when the tile is not finite; *done is the
 * number of leading elements whose residual now holds a (all m on success). */
static inline __attribute__((always_inline)) uint32_t
randk_tile_generic(const float *in, float *res, size_t m, randk_v4d *l2, size_t *done)
{
    size_t i = 0;
    if (res != NULL) {
        for (; i + SQZ_PU_BLOCK <= m; i += SQZ_PU_BLOCK) {
            if (randk_ef_block(in + i, res + i, l2) != 0) {
                *done = i;
                return 1;
            }
        }
    } else {
        for (; i + SQZ_PU_BLOCK <= m; i += SQZ_PU_BLOCK) {
            if (randk_stats_block(in + i, l2) != 0) {
                *done = i;
                return 1;
            }
        }
    }
    *done = i;
    uint32_t bad = 0;
    for (size_t j = i; j < m; j++) {
        const float a = in[j] + (res != NULL ? res[j] : 0.0f);
        bad |= (uint32_t)(sqz_pu_abs_key(a) >= SQZ_PU_F32_INF_BITS);
        l2[0][0] += (double)a * (double)a;
    }
    if (bad != 0) {
        return 1;
    }
    if (res != NULL) {
        for (size_t j = i; j < m; j++) {
            res[j] = in[j] + res[j];
        }
    }
    *done = m;
    return 0;
}

static uint32_t randk_tile_c(const float *in, float *res, size_t m, randk_v4d *l2,
                             size_t *done)
{
    return randk_tile_generic(in, res, m, l2, done);
}

typedef uint32_t (*randk_tile_fn)(const float *, float *, size_t, randk_v4d *, size_t *);

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SQZ_PU_NO_SIMD)
/* The same C kernel compiled for AVX2 (bit-identical results: no contraction, same lanes). */
__attribute__((target("avx2"))) static uint32_t randk_tile_avx2(const float *in, float *res,
                                                                size_t m, randk_v4d *l2,
                                                                size_t *done)
{
    return randk_tile_generic(in, res, m, l2, done);
}

static randk_tile_fn randk_tile_impl(int avx2)
{
    return avx2 ? randk_tile_avx2 : randk_tile_c;
}
#else
static randk_tile_fn randk_tile_impl(int avx2)
{
    return randk_tile_c;
}
#endif

/* Finiteness contract: [0, end) was written (res = a, then a - v at the kept positions p < done);
 * give each element its old value back up to rounding (a - in). */
static void randk_restore(const float *in, float *res, size_t end, const uint32_t *idx,
                          size_t done, const uint8_t *val)
{
    for (size_t p = 0; p < done; p++) {
        res[idx[p]] += sqz_pu_load_f32(val + 4 * p);
    }
    for (size_t i = 0; i < end; i++) {
        res[i] -= in[i];
    }
}

static sqz_status_t randk_compress(void *state, sqz_compress_args_v1_t *args)
{
    randk_state_t *st = (randk_state_t *)state;
    if (st == NULL || args == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *out = (uint8_t *)args->payload;
    if (n > UINT32_MAX) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    const size_t k = sqz_pu_density_count(st->cfg.density, n);
    if (out == NULL || args->capacity < RANDK_HDR + 4 * k || (n > 0 && in == NULL)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const uint64_t key = randk_key(st->seed, args->seq, n);
    const sqz_status_t ps = randk_pattern(st, key, n, k);
    if (ps != SQZ_OK) {
        return ps;
    }
    const uint32_t *const idx = st->idx;
    uint8_t *const val = out + RANDK_HDR;
    /* n/k rounded to float: E[decode] = a up to that rounding.  The server stage never rescales. */
    const int unbiased = st->cfg.scale == RANDK_SCALE_UNBIASED && args->stage == 0 && k < n;
    const float scale = unbiased ? (float)((double)n / (double)k) : 1.0f;
    const randk_tile_fn tile_fn = randk_tile_impl(st->avx2);

    randk_v4d l2[4] = {{0}};
    double sel2 = 0.0, err_sel = 0.0; /* sum a^2 and sum (a - v)^2 over the kept positions */
    size_t p = 0;
    for (size_t t0 = 0; t0 < n; t0 += RANDK_TILE) {
        const size_t m = n - t0 < RANDK_TILE ? n - t0 : RANDK_TILE;
        size_t done;
        if (tile_fn(in + t0, res != NULL ? res + t0 : NULL, m, l2, &done) != 0) {
            if (res != NULL) {
                randk_restore(in, res, t0 + done, idx, p, val);
            }
            return SQZ_ERR_NONFINITE;
        }
        /* The tile's kept positions, while it is in cache. */
        const size_t end = t0 + m;
        if (res != NULL) {
            for (; p < k && idx[p] < end; p++) {
                const float a = res[idx[p]];
                const float v = a * scale;
                const float e = a - v;
                if (!(fabsf(v) <= FLT_MAX && fabsf(e) <= FLT_MAX)) {
                    /* The n/k scaling overflowed a finite value: the call cannot be sent. */
                    randk_restore(in, res, end, idx, p, val);
                    return SQZ_ERR_NONFINITE;
                }
                res[idx[p]] = e;
                sqz_pu_store_f32(val + 4 * p, v);
                sel2 += (double)a * (double)a;
                err_sel += (double)e * (double)e;
            }
        } else {
            for (; p < k && idx[p] < end; p++) {
                const float a = in[idx[p]];
                const float v = a * scale;
                const float e = a - v;
                if (!(fabsf(v) <= FLT_MAX)) {
                    return SQZ_ERR_NONFINITE; /* the n/k scaling overflowed */
                }
                sqz_pu_store_f32(val + 4 * p, v);
                sel2 += (double)a * (double)a;
                err_sel += (double)e * (double)e;
            }
        }
    }
    sqz_pu_store_u32(out, (uint32_t)k);
    sqz_pu_store_u64(out + 4, key);
    double sum2 = 0.0;
    for (int l = 0; l < 16; l++) {
        sum2 += l2[l / 4][l % 4];
    }
    /* Left-out energy as a difference: a statistic, so its rounding is harmless. */
    const double rest = k == n ? 0.0 : sum2 - sel2;
    args->payload_bytes = RANDK_HDR + 4 * k;
    args->norm2_in = sum2;
    args->norm2_err = (rest > 0.0 ? rest : 0.0) + err_sel;
    return SQZ_OK;
}

static sqz_status_t randk_decompress(void *state, const void *payload, size_t bytes, float *out,
                                     size_t n)
{
    randk_state_t *st = (randk_state_t *)state;
    if (st == NULL || payload == NULL || bytes < RANDK_HDR || n > UINT32_MAX) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *p = (const uint8_t *)payload;
    const size_t k = sqz_pu_density_count(st->cfg.density, n);
    if (sqz_pu_load_u32(p) != k || (bytes - RANDK_HDR) / 4 != k || (bytes - RANDK_HDR) % 4 != 0) {
        return SQZ_ERR_CORRUPT;
    }
    const uint64_t key = sqz_pu_load_u64(p + 4);
    const uint8_t *const val = p + RANDK_HDR;
    /* Every key is a valid pattern: only the values can be malformed. */
    uint32_t bad = 0;
    for (size_t j = 0; j < k; j++) {
        bad |= (uint32_t)((sqz_pu_load_u32(val + 4 * j) & 0x7fffffffu) >= SQZ_PU_F32_INF_BITS);
    }
    if (bad) {
        return SQZ_ERR_CORRUPT;
    }
    if (out == NULL || k == 0) {
        return SQZ_OK;
    }
    const sqz_status_t ps = randk_pattern(st, key, n, k);
    if (ps != SQZ_OK) {
        return ps;
    }
    const uint32_t *const idx = st->idx;
    for (size_t j = 0; j < k; j++) {
        out[idx[j]] += sqz_pu_load_f32(val + 4 * j);
    }
    return SQZ_OK;
}

const sqz_compressor_v1_t sqz_compressor_randk = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "randk",
    .description = "random-k sparsification, same positions on every rank (Stich et al. 2018; "
                   "error feedback or unbiased n/k scaling)",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = randk_params,
    .nparams = sizeof randk_params / sizeof randk_params[0],
    .config_size = sizeof(randk_config_t),
    .create = randk_create,
    .query = randk_query,
    .max_payload = randk_max_payload,
    .compress = randk_compress,
    .decompress = randk_decompress,
    .destroy = randk_destroy,
    .flags = SQZ_COMPRESSOR_FIXED_PAYLOAD | SQZ_COMPRESSOR_CONTRACTIVE |
             SQZ_COMPRESSOR_EF_NONE | SQZ_COMPRESSOR_EF14_DIVERGES |
             SQZ_COMPRESSOR_EF21_DIVERGES,
};
