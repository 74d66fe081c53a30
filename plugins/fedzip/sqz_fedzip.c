/*
 * "fedzip": top-z sparsification, k-means clustering of the kept values and entropy coding of
 * positions and cluster labels, after FedZip (Malekijoo et al., arXiv 2102.01593; official code
 * malekijoo/FedZip, deploy.py; ALGORITHMS.md section 8).
 *
 * a = in + residual; z = max(1, ceil(FEDZIP_DENSITY * n)), at most n (0 for n == 0).
 *   1. Top-z: exactly the z entries of largest |a|, ties broken by lower index.  O(n), one pass
 *      over memory: a strided pre-sample of |a| (16K entries) sets a bound a few standard
 *      deviations below the z-th |a|; the pass computes a, checks finiteness, sums a^2, writes the
 *      residual and collects the entries above the bound; a histogram select on their float bits
 *      then finds the z-th.  When the sample misses (heavy ties, adversarial layouts: too many or
 *      fewer than z pass), a histogram of all |a| bits gives an exact bound and a second pass
 *      collects again.  The result never depends on the sample.
 *   2. k-means (Lloyd) over the z kept values into c = FEDZIP_CLUSTERS centroids: initialized at
 *      the quantiles (2j + 1) / (2c) of the kept values (j < c; deterministic, no randomness), then
 *      at most FEDZIP_ITERS updates (mean of each cluster; an empty cluster keeps its centroid).
 *      The centroids sent are those of the lowest squared error seen, so the clustering error is
 *      never above the quantile initialization's, even under float rounding.  Every kept entry
 *      gets its nearest centroid (boundaries at the midpoints).
 *   3. Positions (gaps) and labels go through one zstd frame (its Huffman literals and FSE are the
 *      entropy coder; ALGORITHMS.md 8.2 puts the ideal near H_b(density) + density H(labels) bits
 *      per element: 0.095 at density 0.01, c = 3, where this reaches about 0.11).
 * Departures from the official code: it clusters all elements, zeros included (init linspace, 4
 * iterations) and only counts bits; here only the kept values are clustered (the zeros are
 * implied by the positions) and a decodable stream is produced.
 *
 * Error feedback: residual = a - decoded: a for the entries not sent, a - centroid for the sent
 * ones (the clustering error stays in the residual).  The first pass writes a into the residual;
 * on NaN/Inf it stops at the offending 64-element block and gives back residual - in to the blocks
 * already written (the old residual up to rounding, as the finiteness contract allows).
 *
 * Parameters:
 *   FEDZIP_DENSITY  (double, 0.01, [1e-6, 1]): fraction of entries kept.
 *   FEDZIP_CLUSTERS (int, 3, [2, 16]): centroids (the paper: 3, chosen by silhouette index).
 *   FEDZIP_ITERS    (int, 8, [1, 50]): Lloyd updates at most (stops early once stable).
 *   FEDZIP_LEVEL    (int, 3, [-7, 19]): zstd level of the position/label stream.
 *
 * Wire format (little-endian): u32 z, u8 c (2..16), 3 zero bytes, c f32 centroids (finite,
 * ascending), then exactly one zstd frame recording its content size, holding
 *   z LEB128 varints (canonical, < 2^32): the first position, then each gap minus one (positions
 *   strictly increasing, < n), followed by the z labels packed 4 bits each, LSB-first (label j in
 *   bits 4(j%2)..4(j%2)+3 of byte j/2; a last unused nibble is 0): ceil(z/2) bytes.
 * z == 0 (only for n == 0; it decodes to nothing for any n) is the 8-byte header alone.
 * Positions travel as u32: n <= UINT32_MAX (query() declines larger calls).
 * max_payload(n) = 8 + 4c + ZSTD_compressBound(5z + ceil(z/2)).
 *
 * Exchange: SQZ_EXCHANGE_ALLGATHER (sparse payloads on different supports are not summable).
 *
 * What a shim cannot know: which buffers are biases (the official code does not sparsify them),
 * layer boundaries (clusters are fitted over the whole buffer, not per layer), and FedZip's
 * client/server federated structure; the payload size is data-dependent (entropy coding), so
 * only max_payload is known in advance.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

/** Config struct filled by the core from fedzip_params. */
typedef struct fedzip_config {
    double  density;  /* FEDZIP_DENSITY: fraction of entries kept */
    int64_t clusters; /* FEDZIP_CLUSTERS: k-means centroids */
    int64_t iters;    /* FEDZIP_ITERS: Lloyd updates at most */
    int64_t level;    /* FEDZIP_LEVEL: zstd level */
} fedzip_config_t;

static const sqz_param_def_v1_t fedzip_params[] = {
    {
        .name = "FEDZIP_DENSITY",
        .type = SQZ_PARAM_DOUBLE,
        .default_value = "0.01",
        .min = 1e-6,
        .max = 1.0,
        .offset = offsetof(fedzip_config_t, density),
        .help = "fraction of entries kept: the z = max(1, ceil(density * n)) largest |a|",
    },
    {
        .name = "FEDZIP_CLUSTERS",
        .type = SQZ_PARAM_INT,
        .default_value = "3",
        .min = 2,
        .max = 16,
        .offset = offsetof(fedzip_config_t, clusters),
        .help = "k-means centroids the kept values are quantized to (4-bit labels)",
    },
    {
        .name = "FEDZIP_ITERS",
        .type = SQZ_PARAM_INT,
        .default_value = "8",
        .min = 1,
        .max = 50,
        .offset = offsetof(fedzip_config_t, iters),
        .help = "Lloyd iterations at most, from centroids at the quantiles of the kept values",
    },
    {
        .name = "FEDZIP_LEVEL",
        .type = SQZ_PARAM_INT,
        .default_value = "3",
        .min = -7,
        .max = 19,
        .offset = offsetof(fedzip_config_t, level),
        .help = "zstd level of the position and label stream (negative: faster, 0: zstd's 3)",
    },
};

/* Header bytes: u32 z, u8 c, 3 zero bytes. */
#define FEDZIP_HEADER 8
#define FEDZIP_MAX_CLUSTERS 16
/* A LEB128 varint of a value below 2^32. */
#define FEDZIP_VARINT_MAX 5
/* Histogram bins of the selections: the top-level histogram is of |a|'s bits >> 20. */
#define FEDZIP_BINS 2048u
#define FEDZIP_BIN_SHIFT 20
/* Software prefetch distance (entries) of the scattered residual and output updates. */
#define FEDZIP_PREFETCH 32

typedef uint32_t fedzip_hist_t[4][FEDZIP_BINS];

typedef struct fedzip_state {
    double     density;
    unsigned   clusters;
    unsigned   iters;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    /* Grow-only scratch. */
    uint32_t  *idx;  /* compress: candidate then kept indices; decompress: decoded positions */
    size_t     idx_cap;
    float     *val;  /* candidate then kept values a */
    size_t     val_cap;
    uint32_t  *keys; /* selection keys and their copies */
    size_t     keys_cap;
    uint8_t   *lab;  /* one label per kept entry */
    size_t     lab_cap;
    float     *sv;   /* the kept values, sorted (k-means) */
    size_t     sv_cap;
    uint8_t   *raw;  /* the stream before zstd, or a decoded frame */
    size_t     raw_cap;
    fedzip_hist_t hist;
} fedzip_state_t;

static void fedzip_destroy(void *state)
{
    fedzip_state_t *s = (fedzip_state_t *)state;
    if (s == NULL) {
        return;
    }
    ZSTD_freeCCtx(s->cctx);
    ZSTD_freeDCtx(s->dctx);
    free(s->idx);
    free(s->val);
    free(s->keys);
    free(s->lab);
    free(s->sv);
    free(s->raw);
    free(s);
}

static sqz_status_t fedzip_create(const void *config, const sqz_compressor_env_v1_t *env,
                                  void **state)
{
    const fedzip_config_t *cfg = (const fedzip_config_t *)config;
    if (cfg == NULL || state == NULL || !(cfg->density >= 1e-6 && cfg->density <= 1.0) ||
        cfg->clusters < 2 || cfg->clusters > FEDZIP_MAX_CLUSTERS || cfg->iters < 1 ||
        cfg->iters > 50 || cfg->level < -7 || cfg->level > 19 || cfg->level < ZSTD_minCLevel() ||
        cfg->level > ZSTD_maxCLevel()) {
        return SQZ_ERR_INVALID_PARAM;
    }
    fedzip_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    s->density = cfg->density;
    s->clusters = (unsigned)cfg->clusters;
    s->iters = (unsigned)cfg->iters;
    s->cctx = ZSTD_createCCtx();
    s->dctx = ZSTD_createDCtx();
    if (s->cctx == NULL || s->dctx == NULL) {
        fedzip_destroy(s);
        return SQZ_ERR_NO_MEMORY;
    }
    /* Sticky across calls.  The frame records its content size (the decoder bounds it before
     * allocating); no checksum: the transport is reliable and the decoder checks every field. */
    if (ZSTD_isError(ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_compressionLevel, (int)cfg->level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_contentSizeFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_checksumFlag, 0))) {
        fedzip_destroy(s);
        return SQZ_ERR_INVALID_PARAM;
    }
    *state = s;
    return SQZ_OK;
}

/* Bytes of the z packed 4-bit labels. */
static size_t fedzip_label_bytes(size_t z)
{
    return z / 2 + (z & 1);
}

static sqz_status_t fedzip_query(void *state, const sqz_query_v1_t *q)
{
    /* Positions travel as u32. */
    return q == NULL || q->count > UINT32_MAX ? SQZ_ERR_NOT_SUPPORTED : SQZ_OK;
}

static size_t fedzip_max_payload(void *state, size_t n)
{
    const fedzip_state_t *s = (const fedzip_state_t *)state;
    if (s == NULL || n > UINT32_MAX) {
        return SIZE_MAX;
    }
    const size_t z = sqz_pu_density_count(s->density, n);
    if (z == 0) {
        return FEDZIP_HEADER;
    }
    const size_t bound = ZSTD_compressBound(FEDZIP_VARINT_MAX * z + fedzip_label_bytes(z));
    if (ZSTD_isError(bound)) {
        return SIZE_MAX;
    }
    return FEDZIP_HEADER + 4 * (size_t)s->clusters + bound;
}

/* ---------------------------------------------------------------------------------------------
 * Unsigned keys: |a| bits for the top-z (they order like |a| for finite a), order-preserving
 * bits of signed a for sorting the kept values (k-means).
 * ------------------------------------------------------------------------------------------- */

/** \return unsigned bits that order like x (finite x; -0 sorts just below +0). */
static inline uint32_t fedzip_okey(float x)
{
    const uint32_t u = sqz_pu_f32_bits(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float fedzip_okey_f32(uint32_t k)
{
    return sqz_pu_bits_f32((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/** \return the r-th largest (1 <= r <= m) of keys[0, m), and in *n_above how many are strictly
 *  larger.  Histogram select: each level cuts [lo, hi] into at most FEDZIP_BINS bins and keeps
 *  the bin holding the r-th largest, copied into tmp (m keys of scratch, not keys: keys is kept).
 *  O(m) per level, at most 3 levels of 11 bits. */
static uint32_t fedzip_select(const uint32_t *keys, size_t m, size_t r, uint32_t *tmp,
                              size_t *n_above, fedzip_hist_t hist)
{
    uint32_t lo = UINT32_MAX, hi = 0;
    for (size_t j = 0; j < m; j++) {
        lo = keys[j] < lo ? keys[j] : lo;
        hi = keys[j] > hi ? keys[j] : hi;
    }
    const uint32_t *src = keys;
    size_t above = 0;
    while (lo != hi) {
        unsigned sh = 0;
        while (((hi - lo) >> sh) >= FEDZIP_BINS) {
            sh++;
        }
        const size_t nb = (size_t)((hi - lo) >> sh) + 1;
        for (int c = 0; c < 4; c++) {
            memset(hist[c], 0, nb * sizeof hist[c][0]);
        }
        size_t j = 0;
        for (; j + 4 <= m; j += 4) {
            hist[0][(src[j] - lo) >> sh]++;
            hist[1][(src[j + 1] - lo) >> sh]++;
            hist[2][(src[j + 2] - lo) >> sh]++;
            hist[3][(src[j + 3] - lo) >> sh]++;
        }
        for (; j < m; j++) {
            hist[0][(src[j] - lo) >> sh]++;
        }
        /* The bin d holding the r-th largest: at least r keys in bins >= d. */
        size_t d = nb - 1, cum = 0;
        for (;; d--) {
            const size_t h = (size_t)hist[0][d] + hist[1][d] + hist[2][d] + hist[3][d];
            if (cum + h >= r) {
                break;
            }
            cum += h;
        }
        above += cum;
        r -= cum;
        const uint32_t blo = lo + ((uint32_t)d << sh);
        const uint32_t span = (uint32_t)((1ull << sh) - 1u);
        const uint32_t bhi = hi - blo < span ? hi : blo + span;
        const uint32_t width = bhi - blo;
        size_t w = 0;
        for (j = 0; j < m; j++) {
            const uint32_t key = src[j];
            tmp[w] = key;
            w += (size_t)(key - blo <= width);
        }
        m = w;
        src = tmp;
        lo = blo;
        hi = bhi;
    }
    *n_above = above;
    return lo;
}

/* ---------------------------------------------------------------------------------------------
 * The pass: a = in + res, finiteness, sum of a^2, residual = a, and (index, a) of every entry
 * with |a| bits >= bound appended to the candidates, in index order.
 * ------------------------------------------------------------------------------------------- */

/* a = in + res over one block. */
static inline void fedzip_sum_block(const float *restrict in, const float *restrict res,
                                    float *restrict a)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        a[j] = in[j] + res[j];
    }
}

/* Four floats in one register (GCC/Clang vector extension): the block's accumulators must stay
 * in registers, and an array of them is kept in memory by the vectorizer, which makes every add
 * a store-to-load round trip. */
typedef float fedzip_v4f_t __attribute__((vector_size(16)));

/* Adds the block's a^2 into sq[4].  Squares are summed in float within the block (8 terms per
 * lane: relative error below 1e-6), in double across blocks: half the work of double squares,
 * which made the pass compute-bound. */
static inline void fedzip_sq_block(const float *restrict a, double *restrict sq)
{
    fedzip_v4f_t s0 = {0.0f, 0.0f, 0.0f, 0.0f}, s1 = s0;
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        fedzip_v4f_t x0, x1;
        memcpy(&x0, a + j, sizeof x0);
        memcpy(&x1, a + j + 4, sizeof x1);
        s0 += x0 * x0;
        s1 += x1 * x1;
    }
    for (int k = 0; k < 4; k++) {
        sq[k] += (double)s0[k] + (double)s1[k];
    }
}

#if defined(__SSE2__)
/** Sets *mask bit k when |a[k]| bits >= bound (k < 64; bound <= 0x7ff00000).  \return nonzero
 *  when some a[k] is NaN/Inf.  SSE2 is part of x86-64: per 4 entries one load, two compares and
 *  one movemask. */
static inline uint32_t fedzip_scan64(const float *restrict a, uint32_t bound, uint64_t *mask)
{
    const __m128i absm = _mm_set1_epi32(0x7fffffff);
    /* Keys are below 2^31: key >= x <=> key > x - 1 as signed ints. */
    const __m128i b = _mm_set1_epi32((int)bound - 1);
    const __m128i inf = _mm_set1_epi32((int)SQZ_PU_F32_INF_BITS - 1);
    __m128i bad = _mm_setzero_si128();
    uint64_t m = 0;
    for (int g = 0; g < SQZ_PU_BLOCK / 4; g++) {
        const __m128i k = _mm_and_si128(_mm_loadu_si128((const __m128i *)(const void *)(a + 4 * g)),
                                        absm);
        bad = _mm_or_si128(bad, _mm_cmpgt_epi32(k, inf));
        m |= (uint64_t)_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(k, b))) << (4 * g);
    }
    *mask = m;
    return (uint32_t)_mm_movemask_epi8(bad);
}
#else
/** Sets *mask bit k when |a[k]| bits >= bound (k < 64).  \return nonzero when some a[k] is
 *  NaN/Inf.  Byte flags first (vectorizable), then 8 flags to 8 bits by one multiply. */
static inline uint32_t fedzip_scan64(const float *restrict a, uint32_t bound, uint64_t *mask)
{
    uint8_t f[SQZ_PU_BLOCK];
    uint32_t bad = 0;
    for (int k = 0; k < SQZ_PU_BLOCK; k++) {
        f[k] = (uint8_t)(sqz_pu_abs_key(a[k]) >= bound);
        bad |= (uint32_t)(sqz_pu_abs_key(a[k]) >= SQZ_PU_F32_INF_BITS);
    }
    uint64_t m = 0;
    for (int g = 0; g < SQZ_PU_BLOCK / 8; g++) {
        m |= ((sqz_pu_load_u64(f + 8 * g) * 0x0102040810204080ull) >> 56) << (8 * g);
    }
    *mask = m;
    return bad;
}
#endif

/* Appends (i + k, a[k]) for every bit k of m at idx/val + w.  \return the new w.  One branch per
 * candidate rather than per element or group: candidates are sparse and land anywhere. */
static inline size_t fedzip_take_mask(uint64_t m, const float *a, size_t i, uint32_t *idx,
                                      float *val, size_t w)
{
    while (m != 0) {
        const unsigned k = (unsigned)__builtin_ctzll(m);
        idx[w] = (uint32_t)(i + k);
        val[w] = a[k];
        w++;
        m &= m - 1;
    }
    return w;
}

typedef struct fedzip_pass {
    const float *in;
    float       *res;   /* may be NULL: a = in, bit for bit */
    uint32_t     bound; /* candidates: |a| bits >= bound */
    size_t       cap;   /* collecting stops once more than cap are held (idx/val: cap + 66) */
    uint32_t    *idx;
    float       *val;
    size_t       cnt;
    int          overflow;
    double       norm2;
} fedzip_pass_t;

/** Runs the pass over [0, n).  \return n, or the start of the first 64-element block holding a
 *  non-finite a (or that element in the tail): [0, return) is processed (residual = a), nothing
 *  from it on.  On overflow the candidates are incomplete (the rest of the pass still runs). */
static size_t fedzip_pass(fedzip_pass_t *p, size_t n)
{
    const float *in = p->in;
    float *res = p->res;
    const uint32_t bound = p->bound;
    double sq[4] = {0};
    size_t w = 0, i = 0;
    int collect = 1;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        float a[SQZ_PU_BLOCK];
        if (res != NULL) {
            fedzip_sum_block(in + i, res + i, a);
        } else {
            memcpy(a, in + i, sizeof a);
        }
        uint64_t m;
        if (fedzip_scan64(a, bound, &m)) {
            p->cnt = w;
            return i;
        }
        fedzip_sq_block(a, sq);
        if (res != NULL) {
            memcpy(res + i, a, sizeof a);
        }
        if (collect) {
            w = fedzip_take_mask(m, a, i, p->idx, p->val, w);
            collect = w <= p->cap;
        }
    }
    for (; i < n; i++) {
        /* Not in[i] + 0.0f without a residual: that would turn -0.0 into +0.0. */
        const float x = res != NULL ? in[i] + res[i] : in[i];
        if (sqz_pu_abs_key(x) >= SQZ_PU_F32_INF_BITS) {
            p->cnt = w;
            return i;
        }
        sq[0] += (double)x * x;
        if (res != NULL) {
            res[i] = x;
        }
        if (collect) {
            p->idx[w] = (uint32_t)i;
            p->val[w] = x;
            w += (size_t)(sqz_pu_abs_key(x) >= bound);
        }
    }
    double s = 0.0;
    for (int k = 0; k < 4; k++) {
        s += sq[k];
    }
    p->norm2 = s;
    p->cnt = w;
    p->overflow = !collect || w > p->cap;
    return n;
}

/* Gives the old residual back (up to rounding) where the pass wrote a: [0, stop). */
static void fedzip_restore(const float *in, float *res, size_t stop)
{
    if (res == NULL) {
        return;
    }
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= stop; i += SQZ_PU_BLOCK) {
        float *restrict r = res + i;
        const float *restrict x = in + i;
        for (int j = 0; j < SQZ_PU_BLOCK; j++) {
            r[j] -= x[j];
        }
    }
    for (; i < stop; i++) {
        res[i] -= in[i];
    }
}

/** The fallback bound, when the sampled one kept too many or too few candidates: the lowest
 *  2^20-wide key bin whose entries, with those above, number at least z (one histogram pass
 *  over av).  \return the bound and in *cnt how many keys are >= it. */
static uint32_t fedzip_hist_bound(const float *av, size_t n, size_t z, fedzip_hist_t hist,
                                  size_t *cnt)
{
    memset(hist, 0, sizeof(fedzip_hist_t));
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        /* Four copies, so that runs of equal bins do not serialize on one counter. */
        hist[0][sqz_pu_abs_key(av[i]) >> FEDZIP_BIN_SHIFT]++;
        hist[1][sqz_pu_abs_key(av[i + 1]) >> FEDZIP_BIN_SHIFT]++;
        hist[2][sqz_pu_abs_key(av[i + 2]) >> FEDZIP_BIN_SHIFT]++;
        hist[3][sqz_pu_abs_key(av[i + 3]) >> FEDZIP_BIN_SHIFT]++;
    }
    for (; i < n; i++) {
        hist[0][sqz_pu_abs_key(av[i]) >> FEDZIP_BIN_SHIFT]++;
    }
    size_t d = FEDZIP_BINS - 1, above = 0;
    for (;; d--) {
        above += (size_t)hist[0][d] + hist[1][d] + hist[2][d] + hist[3][d];
        if (above >= z) {
            break;
        }
    }
    *cnt = above;
    return (uint32_t)d << FEDZIP_BIN_SHIFT;
}

/** Appends (i, av[i]) for every key(av[i]) >= bound, in index order (idx/val: count + 1 slots).
 *  \return the count. */
static size_t fedzip_collect(const float *av, size_t n, uint32_t bound, uint32_t *idx,
                             float *val)
{
    size_t w = 0, i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        uint64_t m;
        (void)fedzip_scan64(av + i, bound, &m);
        w = fedzip_take_mask(m, av + i, i, idx, val, w);
    }
    for (; i < n; i++) {
        idx[w] = (uint32_t)i;
        val[w] = av[i];
        w += (size_t)(sqz_pu_abs_key(av[i]) >= bound);
    }
    return w;
}

/* The pre-sample: at most this many strided keys set the pass's bound (all of a when n is less
 * than twice that). */
#define FEDZIP_PRESAMPLE 16384u

/** Chooses the candidate bound from a strided sample of |a| (keys: room for S + S keys): a few
 *  standard deviations below the sample's estimate of the z-th key, so that at least z and not
 *  many more entries pass it; the exact z-th key when the sample is all of a.  The bound only
 *  sets the work done (a miss costs a fallback pass), never the result.  \return the bound and
 *  in *expect how many entries are expected to pass. */
static uint32_t fedzip_sample_bound(fedzip_state_t *st, const float *in, const float *res,
                                    size_t n, size_t z, size_t *expect)
{
    if (z == n) {
        *expect = n;
        return 0;
    }
    const size_t ps = n / FEDZIP_PRESAMPLE > 1 ? n / FEDZIP_PRESAMPLE : 1;
    const size_t S = n / ps;
    uint32_t *keys = st->keys;
    for (size_t j = 0; j < S; j++) {
        keys[j] = sqz_pu_abs_key(res != NULL ? in[j * ps] + res[j * ps] : in[j * ps]);
    }
    size_t c = z;
    if (ps > 1) {
        const double ks = (double)z * (double)S / (double)n;
        c = sqz_pu_ceil_size(ks + 5.0 * sqrt(ks) + 8.0);
        c = c < S ? c : S;
    }
    size_t above;
    const uint32_t b = fedzip_select(keys, S, c, keys + S, &above, st->hist);
    *expect = (size_t)((double)c * (double)n / (double)S);
    /* A non-finite a stops the pass anyway. */
    return b < SQZ_PU_F32_INF_BITS ? b : SQZ_PU_F32_INF_BITS;
}

/* ---------------------------------------------------------------------------------------------
 * k-means in one dimension, on the kept values sorted: every cluster is a contiguous range.
 * ------------------------------------------------------------------------------------------- */

/** Sorts keys[0, m) ascending (LSD radix, 3 digits of 11 bits; tmp: m keys).  \return where the
 *  sorted keys are (keys or tmp). */
static uint32_t *fedzip_radix_sort(uint32_t *keys, uint32_t *tmp, size_t m, fedzip_hist_t hist)
{
    uint32_t *src = keys, *dst = tmp;
    for (unsigned sh = 0; sh < 32; sh += 11) {
        uint32_t *h = hist[0];
        memset(h, 0, FEDZIP_BINS * sizeof *h);
        for (size_t j = 0; j < m; j++) {
            h[(src[j] >> sh) & (FEDZIP_BINS - 1)]++;
        }
        /* A digit shared by every key moves nothing. */
        if (h[(src[0] >> sh) & (FEDZIP_BINS - 1)] == m) {
            continue;
        }
        uint32_t sum = 0;
        for (unsigned b = 0; b < FEDZIP_BINS; b++) {
            const uint32_t t = h[b];
            h[b] = sum;
            sum += t;
        }
        for (size_t j = 0; j < m; j++) {
            dst[h[(src[j] >> sh) & (FEDZIP_BINS - 1)]++] = src[j];
        }
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    return src;
}

/* Two doubles in one register (see fedzip_v4f_t). */
typedef double fedzip_v2d_t __attribute__((vector_size(16)));

/** \return the sum over v[0, m) of (v - c)^2, and in *sum that of v (both in double, 8 lanes
 *  so that the adds do not wait on each other). */
static double fedzip_moments(const float *v, size_t m, double c, double *sum)
{
    fedzip_v2d_t e0 = {0.0, 0.0}, e1 = e0, e2 = e0, e3 = e0, s0 = e0, s1 = e0, s2 = e0, s3 = e0;
    const fedzip_v2d_t cc = {c, c};
    size_t i = 0;
    for (; i + 8 <= m; i += 8) {
        const float *x = v + i;
        const fedzip_v2d_t x0 = {x[0], x[1]}, x1 = {x[2], x[3]};
        const fedzip_v2d_t x2 = {x[4], x[5]}, x3 = {x[6], x[7]};
        const fedzip_v2d_t d0 = x0 - cc, d1 = x1 - cc, d2 = x2 - cc, d3 = x3 - cc;
        e0 += d0 * d0;
        e1 += d1 * d1;
        e2 += d2 * d2;
        e3 += d3 * d3;
        s0 += x0;
        s1 += x1;
        s2 += x2;
        s3 += x3;
    }
    double err = 0.0, s = 0.0;
    for (; i < m; i++) {
        const double d = (double)v[i] - c;
        err += d * d;
        s += (double)v[i];
    }
    const fedzip_v2d_t e = (e0 + e1) + (e2 + e3), t = (s0 + s1) + (s2 + s3);
    *sum = s + (t[0] + t[1]);
    return err + (e[0] + e[1]);
}

/* The midpoints between ascending centroids: label(v) = #{j : v > mid[j]}. */
static void fedzip_mids(const float *cent, unsigned c, float *mid)
{
    for (unsigned j = 0; j + 1 < c; j++) {
        /* Halves first: no overflow near FLT_MAX. */
        mid[j] = 0.5f * cent[j] + 0.5f * cent[j + 1];
    }
}

/** \return the first i in [lo, m) with sv[i] > x (sv ascending), m when none. */
static size_t fedzip_upper(const float *sv, size_t lo, size_t m, float x)
{
    size_t hi = m;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (sv[mid] > x) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/** Nearest-centroid labels of v[0, z) (index order) for ascending centroids, into lab. */
static void fedzip_label(const float *v, size_t z, const float *cent, unsigned c, uint8_t *lab)
{
    float mid[FEDZIP_MAX_CLUSTERS];
    fedzip_mids(cent, c, mid);
    size_t e = 0;
    for (; e + SQZ_PU_BLOCK <= z; e += SQZ_PU_BLOCK) {
        const float *restrict x = v + e;
        uint8_t *restrict l = lab + e;
        memset(l, 0, SQZ_PU_BLOCK);
        for (unsigned j = 0; j + 1 < c; j++) {
            const float b = mid[j];
            for (int k = 0; k < SQZ_PU_BLOCK; k++) {
                l[k] = (uint8_t)(l[k] + (x[k] > b));
            }
        }
    }
    for (; e < z; e++) {
        unsigned t = 0;
        for (unsigned j = 0; j + 1 < c; j++) {
            t += v[e] > mid[j];
        }
        lab[e] = (uint8_t)t;
    }
}

/** Clusters v[0, z) (z >= 1, index order) into c centroids (ascending, into cent) and writes
 *  the labels.  st->keys holds 2z keys and st->sv z floats of scratch.  \return the squared
 *  error of the kept values. */
static double fedzip_kmeans(fedzip_state_t *st, const float *v, size_t z, unsigned c,
                            float *cent, uint8_t *lab)
{
    uint32_t *ok = st->keys;
    for (size_t j = 0; j < z; j++) {
        ok[j] = fedzip_okey(v[j]);
    }
    const uint32_t *sk = fedzip_radix_sort(ok, ok + z, z, st->hist);
    float *sv = st->sv;
    for (size_t j = 0; j < z; j++) {
        sv[j] = fedzip_okey_f32(sk[j]);
    }
    /* Quantile initialization: centroid j at ascending rank floor((2j + 1) z / (2c)). */
    float cur[FEDZIP_MAX_CLUSTERS], best[FEDZIP_MAX_CLUSTERS];
    for (unsigned j = 0; j < c; j++) {
        cur[j] = sv[((2 * (uint64_t)j + 1) * (uint64_t)z) / (2 * (uint64_t)c)];
    }
    double best_err = INFINITY;
    memcpy(best, cur, sizeof cur);
    for (unsigned t = 0;; t++) {
        /* Cluster j is sv[lo[j], lo[j + 1]): the labels of fedzip_label(), on sorted values. */
        float mid[FEDZIP_MAX_CLUSTERS];
        size_t lo[FEDZIP_MAX_CLUSTERS + 1];
        fedzip_mids(cur, c, mid);
        lo[0] = 0;
        for (unsigned j = 0; j + 1 < c; j++) {
            lo[j + 1] = fedzip_upper(sv, lo[j], z, mid[j]);
        }
        lo[c] = z;
        double err = 0.0, sum[FEDZIP_MAX_CLUSTERS];
        for (unsigned j = 0; j < c; j++) {
            err += fedzip_moments(sv + lo[j], lo[j + 1] - lo[j], (double)cur[j], &sum[j]);
        }
        if (err < best_err) {
            best_err = err;
            memcpy(best, cur, sizeof cur);
        }
        if (t == st->iters || err == 0.0) {
            break;
        }
        /* Means of ordered ranges stay ordered, and an empty cluster's centroid lies between
         * its neighbours' new means: cur stays ascending (sorted again below anyway). */
        int moved = 0;
        for (unsigned j = 0; j < c; j++) {
            const size_t m = lo[j + 1] - lo[j];
            if (m > 0) {
                const float mean = (float)(sum[j] / (double)m);
                moved |= sqz_pu_f32_bits(mean) != sqz_pu_f32_bits(cur[j]);
                cur[j] = mean;
            }
        }
        if (!moved) {
            break;
        }
    }
    /* The wire format wants them ascending (insertion sort, c <= 16). */
    for (unsigned j = 1; j < c; j++) {
        const float x = best[j];
        unsigned i = j;
        for (; i > 0 && best[i - 1] > x; i--) {
            best[i] = best[i - 1];
        }
        best[i] = x;
    }
    memcpy(cent, best, c * sizeof *cent);
    /* The same labels as the evaluation of best (same midpoints), so the same error. */
    fedzip_label(v, z, cent, c, lab);
    return best_err;
}

/* ---------------------------------------------------------------------------------------------
 * Compress.
 * ------------------------------------------------------------------------------------------- */

/* LEB128 of v < 2^32 at p.  \return the bytes written (1..5). */
static inline size_t fedzip_put_varint(uint8_t *p, uint32_t v)
{
    size_t k = 0;
    while (v >= 0x80u) {
        p[k++] = (uint8_t)(v | 0x80u);
        v >>= 7;
    }
    p[k++] = (uint8_t)v;
    return k;
}

/* Grows the candidate arrays to hold m + 1 entries and the keys to 2 * m. */
static int fedzip_grow_cand(fedzip_state_t *st, size_t m)
{
    return sqz_pu_grow((void **)&st->idx, &st->idx_cap, (m + 1) * sizeof(uint32_t)) != NULL &&
           sqz_pu_grow((void **)&st->val, &st->val_cap, (m + 1) * sizeof(float)) != NULL &&
           sqz_pu_grow((void **)&st->keys, &st->keys_cap, 2 * (m + 1) * sizeof(uint32_t)) != NULL;
}

/* The candidates of the top z of a = in + residual into st->idx/val (index order), *cnt of
 * them, at least z; *norm2 the sum of a^2.  a is in the residual afterwards (or is in).  On
 * NaN/Inf or no memory the residual is given back. */
static sqz_status_t fedzip_candidates(fedzip_state_t *st, const float *in, float *res, size_t n,
                                      size_t z, size_t *cnt, double *norm2)
{
    size_t expect;
    const uint32_t bound = fedzip_sample_bound(st, in, res, n, z, &expect);
    size_t cap = (size_t)((double)expect * 1.5) + 1024;
    cap = cap > z + z / 2 + 1024 ? cap : z + z / 2 + 1024;
    cap = cap < n ? cap : n;
    if (!fedzip_grow_cand(st, cap + SQZ_PU_BLOCK + 1)) {
        return SQZ_ERR_NO_MEMORY;
    }
    fedzip_pass_t p = {in, res, bound, cap, st->idx, st->val, 0, 0, 0.0};
    const size_t stop = fedzip_pass(&p, n);
    if (stop != n) {
        fedzip_restore(in, res, stop);
        return SQZ_ERR_NONFINITE;
    }
    *norm2 = p.norm2;
    *cnt = p.cnt;
    if (p.overflow || *cnt < z) {
        /* The sample missed (heavy ties, or an adversarial layout): exact bound from a histogram
         * of all keys, then collect again.  a is in the residual now (or is in). */
        const float *av = res != NULL ? res : in;
        const uint32_t b1 = fedzip_hist_bound(av, n, z, st->hist, cnt);
        if (!fedzip_grow_cand(st, *cnt)) {
            fedzip_restore(in, res, n);
            return SQZ_ERR_NO_MEMORY;
        }
        *cnt = fedzip_collect(av, n, b1, st->idx, st->val);
    }
    return SQZ_OK;
}

/* Keeps exactly z of the cnt candidates, in index order: key > kth, or key == kth for the first
 * `ties` of them. */
static void fedzip_keep_z(fedzip_state_t *st, size_t cnt, size_t z)
{
    uint32_t *idx = st->idx;
    float *val = st->val;
    uint32_t kth = 0;
    size_t ties = SIZE_MAX;
    if (cnt > z) {
        uint32_t *keys = st->keys;
        for (size_t j = 0; j < cnt; j++) {
            keys[j] = sqz_pu_abs_key(val[j]);
        }
        size_t n_above;
        kth = fedzip_select(keys, cnt, z, keys + cnt, &n_above, st->hist);
        ties = z - n_above;
    }
    size_t w = 0;
    for (size_t j = 0; j < cnt; j++) {
        const uint32_t key = sqz_pu_abs_key(val[j]);
        const size_t eq = key == kth;
        const size_t take = (size_t)(key > kth) | (eq & (size_t)(ties > 0));
        ties -= eq & take;
        idx[w] = idx[j];
        val[w] = val[j];
        w += take;
    }
}

/* The stream zstd compresses: varints of the first position and the gaps minus one, then the
 * labels packed 4 bits each, into st->raw.  \return its length; *kept_sq the sum of the kept
 * values' squares. */
static size_t fedzip_stream(fedzip_state_t *st, size_t z, double *kept_sq)
{
    const uint32_t *idx = st->idx;
    const float *val = st->val;
    uint8_t *raw = st->raw;
    size_t len = fedzip_put_varint(raw, idx[0]);
    double sq = (double)val[0] * val[0];
    for (size_t j = 1; j < z; j++) {
        len += fedzip_put_varint(raw + len, idx[j] - idx[j - 1] - 1u);
        sq += (double)val[j] * val[j];
    }
    sqz_pu_pack_bits(st->lab, z, 4, raw + len);
    *kept_sq = sq;
    return len + fedzip_label_bytes(z);
}

static sqz_status_t fedzip_compress(void *state, sqz_compress_args_v1_t *args)
{
    fedzip_state_t *st = (fedzip_state_t *)state;
    if (st == NULL || args == NULL || args->size < sizeof(sqz_compress_args_v1_t) ||
        args->payload == NULL || (args->n > 0 && args->in == NULL)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const size_t n = args->n;
    if (n > UINT32_MAX) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    if (args->capacity < fedzip_max_payload(state, n)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *out = (uint8_t *)args->payload;
    const unsigned c = st->clusters;
    const size_t z = sqz_pu_density_count(st->density, n);
    sqz_pu_store_u32(out, (uint32_t)z);
    out[4] = (uint8_t)c;
    out[5] = 0;
    out[6] = 0;
    out[7] = 0;
    if (n == 0) {
        args->payload_bytes = FEDZIP_HEADER;
        args->norm2_in = 0.0;
        args->norm2_err = 0.0;
        return SQZ_OK;
    }
    /* Scratch that does not depend on the data (the sample needs 2 * 16K keys at most). */
    const size_t S2 = 2 * (n < 2 * FEDZIP_PRESAMPLE ? n : 2 * FEDZIP_PRESAMPLE);
    if (sqz_pu_grow((void **)&st->keys, &st->keys_cap, S2 * sizeof(uint32_t)) == NULL ||
        sqz_pu_grow((void **)&st->lab, &st->lab_cap, z) == NULL ||
        sqz_pu_grow((void **)&st->sv, &st->sv_cap, z * sizeof(float)) == NULL ||
        sqz_pu_grow((void **)&st->raw, &st->raw_cap,
                    FEDZIP_VARINT_MAX * z + fedzip_label_bytes(z)) == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    size_t cnt;
    double norm2_in;
    const sqz_status_t r = fedzip_candidates(st, in, res, n, z, &cnt, &norm2_in);
    if (r != SQZ_OK) {
        return r;
    }
    fedzip_keep_z(st, cnt, z);
    float cent[FEDZIP_MAX_CLUSTERS];
    const double kept_err = fedzip_kmeans(st, st->val, z, c, cent, st->lab);
    double kept_sq;
    const size_t len = fedzip_stream(st, z, &kept_sq);
    const size_t hdr = FEDZIP_HEADER + 4 * (size_t)c;
    for (unsigned j = 0; j < c; j++) {
        sqz_pu_store_f32(out + FEDZIP_HEADER + 4 * j, cent[j]);
    }
    const size_t zb = ZSTD_compress2(st->cctx, out + hdr, args->capacity - hdr, st->raw, len);
    if (ZSTD_isError(zb)) {
        /* Cannot happen (capacity covers ZSTD_compressBound); a failed call leaves the context
         * mid-frame. */
        (void)ZSTD_CCtx_reset(st->cctx, ZSTD_reset_session_only);
        fedzip_restore(in, res, n);
        return SQZ_ERR_INTERNAL;
    }
    for (size_t j = 0; res != NULL && j < z; j++) {
        if (j + FEDZIP_PREFETCH < z) {
            __builtin_prefetch(res + st->idx[j + FEDZIP_PREFETCH], 1);
        }
        res[st->idx[j]] = st->val[j] - cent[st->lab[j]];
    }
    const double norm2_err = norm2_in - kept_sq + kept_err;
    args->payload_bytes = hdr + zb;
    args->norm2_in = norm2_in;
    args->norm2_err = norm2_err > 0.0 ? norm2_err : 0.0;
    return SQZ_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Decompress: the frame is decoded into scratch and every field checked before out is touched.
 * ------------------------------------------------------------------------------------------- */

static sqz_status_t fedzip_decompress(void *state, const void *payload, size_t bytes, float *out,
                                      size_t n)
{
    fedzip_state_t *st = (fedzip_state_t *)state;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (payload == NULL || bytes < FEDZIP_HEADER || n > UINT32_MAX) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *p = (const uint8_t *)payload;
    const size_t z = sqz_pu_load_u32(p);
    const unsigned c = p[4];
    if ((p[5] | p[6] | p[7]) != 0 || c < 2 || c > FEDZIP_MAX_CLUSTERS || z > n) {
        return SQZ_ERR_CORRUPT;
    }
    if (z == 0) {
        return bytes == FEDZIP_HEADER ? SQZ_OK : SQZ_ERR_CORRUPT;
    }
    const size_t hdr = FEDZIP_HEADER + 4 * (size_t)c;
    if (bytes <= hdr) {
        return SQZ_ERR_CORRUPT;
    }
    float cent[FEDZIP_MAX_CLUSTERS];
    for (unsigned j = 0; j < c; j++) {
        cent[j] = sqz_pu_load_f32(p + FEDZIP_HEADER + 4 * j);
        if (!sqz_pu_is_finite_f32(cent[j]) || (j > 0 && !(cent[j - 1] <= cent[j]))) {
            return SQZ_ERR_CORRUPT;
        }
    }
    /* The frame: exactly the rest of the payload, with a content size within what z varints and
     * z labels can take, and within what bb bytes of zstd blocks can hold (every block that
     * yields bytes takes at least 4 and yields at most ZSTD_BLOCKSIZE_MAX): a lying header can
     * make us allocate neither more than 5.5 z bytes nor more than 32K times the payload. */
    const uint8_t *body = p + hdr;
    const size_t bb = bytes - hdr;
    const size_t lb = fedzip_label_bytes(z);
    const unsigned long long fcs = ZSTD_getFrameContentSize(body, bb);
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN || fcs == ZSTD_CONTENTSIZE_ERROR ||
        fcs < (unsigned long long)z + lb ||
        fcs > (unsigned long long)FEDZIP_VARINT_MAX * z + lb ||
        fcs > (unsigned long long)(bb / 4) * ZSTD_BLOCKSIZE_MAX) {
        return SQZ_ERR_CORRUPT;
    }
    const size_t fsz = ZSTD_findFrameCompressedSize(body, bb);
    if (ZSTD_isError(fsz) || fsz != bb) {
        return SQZ_ERR_CORRUPT;
    }
    const size_t len = (size_t)fcs;
    uint8_t *raw = sqz_pu_grow((void **)&st->raw, &st->raw_cap, len);
    uint32_t *pos = sqz_pu_grow((void **)&st->idx, &st->idx_cap, z * sizeof(uint32_t));
    if (raw == NULL || pos == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    const size_t dec = ZSTD_decompressDCtx(st->dctx, raw, len, body, bb);
    if (ZSTD_isError(dec) || dec != len) {
        return SQZ_ERR_CORRUPT;
    }
    /* Positions: canonical varints below 2^32 that exactly fill [0, vlen). */
    const size_t vlen = len - lb;
    size_t q = 0;
    uint64_t prev = 0;
    for (size_t j = 0; j < z; j++) {
        uint64_t v = 0;
        for (unsigned b = 0;; b++) {
            if (b == FEDZIP_VARINT_MAX || q >= vlen) {
                return SQZ_ERR_CORRUPT;
            }
            const unsigned byte = raw[q++];
            v |= (uint64_t)(byte & 0x7fu) << (7 * b);
            if (!(byte & 0x80u)) {
                /* Overlong (a last byte 0) or >= 2^32. */
                if ((b > 0 && byte == 0) || (b == FEDZIP_VARINT_MAX - 1 && byte > 0x0fu)) {
                    return SQZ_ERR_CORRUPT;
                }
                break;
            }
        }
        const uint64_t at = j == 0 ? v : prev + 1 + v;
        if (at >= (uint64_t)n) {
            return SQZ_ERR_CORRUPT;
        }
        pos[j] = (uint32_t)at;
        prev = at;
    }
    if (q != vlen) {
        return SQZ_ERR_CORRUPT;
    }
    /* Labels < c; an unused last nibble is 0. */
    const uint8_t *lab = raw + vlen;
    unsigned bad = 0;
    for (size_t i = 0; i < z / 2; i++) {
        bad |= (unsigned)((lab[i] & 15u) >= c) | (unsigned)((lab[i] >> 4) >= c);
    }
    if (z & 1) {
        bad |= (unsigned)((lab[z / 2] & 15u) >= c) | (unsigned)((lab[z / 2] >> 4) != 0);
    }
    if (bad) {
        return SQZ_ERR_CORRUPT;
    }
    if (out == NULL) {
        return SQZ_OK;
    }
    for (size_t j = 0; j < z; j++) {
        if (j + FEDZIP_PREFETCH < z) {
            __builtin_prefetch(out + pos[j + FEDZIP_PREFETCH], 1);
        }
        out[pos[j]] += cent[(lab[j >> 1] >> (4 * (j & 1))) & 15u];
    }
    return SQZ_OK;
}

const sqz_compressor_v1_t sqz_compressor_fedzip = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "fedzip",
    .description = "FedZip: top-z sparsification, k-means clustering of the kept values, zstd "
                   "coding of positions and labels, with error feedback",
    .exchange = SQZ_EXCHANGE_ALLGATHER,
    .params = fedzip_params,
    .nparams = sizeof fedzip_params / sizeof fedzip_params[0],
    .config_size = sizeof(fedzip_config_t),
    .create = fedzip_create,
    .query = fedzip_query,
    .max_payload = fedzip_max_payload,
    .compress = fedzip_compress,
    .decompress = fedzip_decompress,
    .destroy = fedzip_destroy,
    .flags = SQZ_COMPRESSOR_CONTRACTIVE | SQZ_COMPRESSOR_EF21 | SQZ_COMPRESSOR_EF14_DIVERGES,
};
