/*
 * "topk": magnitude top-k sparsification with error feedback, after Deep Gradient Compression
 * (Lin et al., ICLR 2018; reference code synxlin/deep-gradient-compression, dgc/compression.py).
 *
 * a = in + residual; k = max(1, ceil(TOPK_DENSITY * n)), at most n.  The selected entries are sent
 * exactly and zeroed in the residual; every other entry stays in the residual (exact error
 * feedback).  Two selections (TOPK_SELECT):
 *   exact:   exactly the k entries of largest |a|, ties broken by lower index.
 *   sampled: DGC's sampled threshold.  A strided sample of |a| (stride ceil(1/TOPK_SAMPLE_RATIO),
 *            random start drawn from (seed, rank, seq, stage)) gives thr = the
 *            ceil(samples * density)-th largest sample; then up to 10 adaptation rounds on the
 *            true count c = #{|a| >= thr}: c > 1.3k: stop; c < 0.8k: thr *= 0.8; otherwise stop.
 *            The entries with |a| >= thr are sent; when more than k pass, the exact top k among
 *            them (ties by lower index).  So m <= k, and m < k when fewer than k pass thr.
 *            (Before the one-pass version, between k and 1.3k passing entries sent the first k
 *            in index order rather than the top k.)
 *
 * Implementation: one fused pass over memory (AVX2 when the CPU has it; the C path gives
 * bit-identical payloads, residuals and norms, -DSQZ_PU_NO_SIMD forces it).
 *   1. A strided pre-sample of |a| (about 16K elements; all of a when n <= 32K) gives a lower
 *      bound expected to pass ~k + 5 sqrt(k) of the sample's share, i.e. a few standard
 *      deviations more than k entries, and zb, the sample's estimate of the k-th |a|.
 *   2. The pass computes a, checks finiteness, sums a^2, gathers the DGC sample, appends
 *      (index, a) of the entries >= bound to a candidate buffer kept in the state, and writes
 *      the residual: a, or 0 for a candidate >= zb (most likely sent).  When the buffer fills it
 *      is compacted to its top k and the bound rises.
 *   3. The selection runs on the candidates (histogram select); the payload is written from
 *      them (already in index order), sent candidates below zb are zeroed and dropped ones at or
 *      above zb get a back: a few scattered writes instead of k.
 *   If the candidates cannot hold the answer (fewer than k passed a bound above thr), the
 *   residual gets a back and a second pass collects with a bound from a histogram of |a|.
 *   The bound and zb only set the work done: the result does not depend on them.
 * The residual is written with ordinary stores: it is read in the same pass, so its lines are in
 * cache and non-temporal stores bring nothing (they measured 3-4x slower here).
 * Non-finite input: the pass stops at the first 8-element group holding NaN/Inf; the residual
 * already written is given back (candidates from the buffer, then residual - in: the old
 * residual up to rounding, as the finiteness contract allows).
 *
 * Wire format (little-endian): u32 m, then m u32 indices strictly increasing and < n, then m f32
 * values (finite).  4 + 8m bytes, m <= k.
 * Exchange: SQZ_EXCHANGE_ALLGATHER (sparse payloads are not summable in compressed form).
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

enum { TOPK_SELECT_EXACT = 0, TOPK_SELECT_SAMPLED = 1 };

/** Config struct filled by the core from topk_params. */
typedef struct topk_config {
    double density;      /* TOPK_DENSITY: fraction of elements kept */
    int    select;       /* TOPK_SELECT: TOPK_SELECT_EXACT or TOPK_SELECT_SAMPLED */
    double sample_ratio; /* TOPK_SAMPLE_RATIO: fraction of elements sampled (sampled only) */
    int64_t warmup;      /* TOPK_WARMUP_STEPS: DGC's exponential sparsity warm-up, in calls */
    double reselect;     /* TOPK_RESELECT: the density factor of the second selection (stage 1) */
} topk_config_t;

static const sqz_param_def_v1_t topk_params[] = {
    {
        .name = "TOPK_DENSITY",
        .type = SQZ_PARAM_DOUBLE,
        .default_value = "0.01",
        .min = 1e-6,
        .max = 1.0,
        .offset = offsetof(topk_config_t, density),
        .help = "fraction of elements sent: k = max(1, ceil(density * n))",
    },
    {
        .name = "TOPK_SELECT",
        .type = SQZ_PARAM_ENUM,
        .default_value = "exact",
        .choices = "exact|sampled",
        .offset = offsetof(topk_config_t, select),
        .help = "selection: exact top-k (the k largest |a|, ties by lowest index) or DGC's sampled threshold",
    },
    {
        .name = "TOPK_SAMPLE_RATIO",
        .type = SQZ_PARAM_DOUBLE,
        .default_value = "0.01",
        .min = 1e-4,
        .max = 1.0,
        .offset = offsetof(topk_config_t, sample_ratio),
        .help = "fraction of elements sampled to estimate the threshold (TOPK_SELECT=sampled)",
    },
    {
        .name = "TOPK_WARMUP_STEPS",
        .type = SQZ_PARAM_INT,
        .default_value = "0",
        .min = 0,
        .max = 1e9,
        .offset = offsetof(topk_config_t, warmup),
        .help = "DGC sparsity warm-up: call t < W of a buffer keeps density^((t+1)/(W+1)), falling "
                "exponentially to TOPK_DENSITY (0: off)",
    },
    {
        .name = "TOPK_RESELECT",
        .type = SQZ_PARAM_DOUBLE,
        .default_value = "1",
        .min = 1,
        .max = 1e6,
        .offset = offsetof(topk_config_t, reselect),
        .help = "the scatter exchange's second selection (SQZ_SPARSE_ALGO=scatter; host and device "
                "buffers): each chunk's owner keeps this many times TOPK_DENSITY of its reduced chunk (4 "
                "keeps the all-gather's accuracy in docs/performance.md; it also raises the "
                "payload bound that the dense switch reads)",
    },
};

/* DGC's exponential sparsity warm-up (the code's coeff = density^(1/(W+1)) schedule, counted in
 * calls of the buffer instead of epochs: a shim sees calls, not epochs). */
static double topk_density_at(const topk_config_t *c, uint64_t seq)
{
    if (c->warmup <= 0 || seq >= (uint64_t)c->warmup) {
        return c->density;
    }
    const double d = pow(c->density, (double)(seq + 1) / (double)(c->warmup + 1));
    return d > c->density ? d : c->density;
}

/* The density of a call's selection: the warm-up's at the buffer's call seq, times TOPK_RESELECT
 * for the second selection (stage 1: the scatter exchange's reduced chunk), at most 1. */
static double topk_stage_density(const topk_config_t *c, uint64_t seq, int stage)
{
    const double d = topk_density_at(c, seq) * (stage > 0 ? c->reselect : 1.0);
    return d < 1.0 ? d : 1.0;
}

typedef struct topk_state {
    topk_config_t cfg;
    uint64_t      seed;
    int           rank;
    /* Grow-only scratch. */
    uint32_t     *cidx; /* candidate indices, ascending */
    size_t        cidx_cap;
    float        *cval; /* candidate values a */
    size_t        cval_cap;
    uint32_t     *ktmp; /* keys for the selections */
    size_t        ktmp_cap;
    uint32_t     *samp; /* keys of the DGC sample */
    size_t        samp_cap;
    uint64_t      lut[256]; /* left-packing permutations (AVX2 pass), see topk_run_avx2() */
    uint32_t      hist[4][2048]; /* topk_select() */
} topk_state_t;

static sqz_status_t topk_create(const void *config, const sqz_compressor_env_v1_t *env,
                                void **state)
{
    const topk_config_t *cfg = (const topk_config_t *)config;
    if (cfg == NULL || !(cfg->density > 0.0 && cfg->density <= 1.0) || !(cfg->reselect >= 1.0) ||
        !(cfg->sample_ratio > 0.0 && cfg->sample_ratio <= 1.0) ||
        (cfg->select != TOPK_SELECT_EXACT && cfg->select != TOPK_SELECT_SAMPLED)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    topk_state_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    s->cfg = *cfg;
    s->seed = env != NULL ? env->seed : 0;
    s->rank = env != NULL ? env->rank : 0;
    for (unsigned mask = 0; mask < 256; mask++) {
        uint64_t v = 0;
        unsigned b = 0;
        for (unsigned l = 0; l < 8; l++) {
            if ((mask >> l) & 1u) {
                v |= (uint64_t)l << (8 * b++);
            }
        }
        s->lut[mask] = v;
    }
    *state = s;
    return SQZ_OK;
}

static void topk_destroy(void *state)
{
    topk_state_t *s = (topk_state_t *)state;
    if (s == NULL) {
        return;
    }
    free(s->cidx);
    free(s->cval);
    free(s->ktmp);
    free(s->samp);
    free(s);
}

static sqz_status_t topk_query(void *state, const sqz_query_v1_t *q)
{
    /* Indices travel as u32. */
    return q->count > UINT32_MAX ? SQZ_ERR_NOT_SUPPORTED : SQZ_OK;
}

/* The payload bound of a stage: the warm-up's first (densest) call at that stage's density. */
static size_t topk_stage_payload(void *state, size_t n, int stage)
{
    const topk_state_t *s = (const topk_state_t *)state;
    if (s == NULL || n > UINT32_MAX) {
        return SIZE_MAX;
    }
    return 4 + 8 * sqz_pu_density_count(topk_stage_density(&s->cfg, 0, stage), n);
}

/* Both stages' bound: the second selection keeps TOPK_RESELECT times more. */
static size_t topk_max_payload(void *state, size_t n)
{
    return topk_stage_payload(state, n, 1);
}

/* ---------------------------------------------------------------------------------------------
 * Selection on keys (bits of |a|, which order like |a| for finite a).
 * ------------------------------------------------------------------------------------------- */

/* Histogram of a selection level: 4 interleaved copies, so that runs of keys in one bin (the
 * candidates crowd near the bound) do not serialize on one counter. */
#define TOPK_BINS 2048u
typedef uint32_t topk_hist_t[4][TOPK_BINS];

/** Sets *lo, *hi to the smallest and largest of the keys |val[j]| (val != NULL) or keys[j]. */
static void topk_key_range(const float *val, const uint32_t *keys, size_t m, uint32_t *lo,
                           uint32_t *hi)
{
    uint32_t l = UINT32_MAX, h = 0;
    for (size_t j = 0; j < m; j++) {
        const uint32_t key = val != NULL ? sqz_pu_abs_key(val[j]) : keys[j];
        l = key < l ? key : l;
        h = key > h ? key : h;
    }
    *lo = l;
    *hi = h;
}

/** \return the r-th largest (1 <= r <= m) of the keys |val[j]| (val != NULL) or keys[j]
 *  (j < m), all in [lo, hi], and in *n_above how many are strictly larger.  Histogram select:
 *  each level cuts the range [lo, hi] into at most TOPK_BINS bins and keeps the bin holding the
 *  r-th largest, copied into tmp (m keys of scratch; tmp may be keys itself, then destroyed). */
static uint32_t topk_select(const float *val, const uint32_t *keys, size_t m, size_t r,
                            uint32_t *tmp, size_t *n_above, uint32_t lo, uint32_t hi,
                            topk_hist_t hist)
{
    size_t above = 0;
    while (lo != hi) {
        unsigned sh = 0;
        while (((hi - lo) >> sh) >= TOPK_BINS) {
            sh++;
        }
        const size_t nb = (size_t)((hi - lo) >> sh) + 1;
        for (int c = 0; c < 4; c++) {
            memset(hist[c], 0, nb * sizeof hist[c][0]);
        }
        size_t j = 0;
        if (val != NULL) {
            for (; j + 4 <= m; j += 4) {
                hist[0][(sqz_pu_abs_key(val[j]) - lo) >> sh]++;
                hist[1][(sqz_pu_abs_key(val[j + 1]) - lo) >> sh]++;
                hist[2][(sqz_pu_abs_key(val[j + 2]) - lo) >> sh]++;
                hist[3][(sqz_pu_abs_key(val[j + 3]) - lo) >> sh]++;
            }
            for (; j < m; j++) {
                hist[0][(sqz_pu_abs_key(val[j]) - lo) >> sh]++;
            }
        } else {
            for (; j + 4 <= m; j += 4) {
                hist[0][(keys[j] - lo) >> sh]++;
                hist[1][(keys[j + 1] - lo) >> sh]++;
                hist[2][(keys[j + 2] - lo) >> sh]++;
                hist[3][(keys[j + 3] - lo) >> sh]++;
            }
            for (; j < m; j++) {
                hist[0][(keys[j] - lo) >> sh]++;
            }
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
        const uint32_t bhi = hi - blo < (1u << sh) - 1u ? hi : blo + ((1u << sh) - 1u);
        /* Keep the keys of bin d. */
        const uint32_t span = bhi - blo;
        size_t w = 0;
        for (j = 0; j < m; j++) {
            const uint32_t key = val != NULL ? sqz_pu_abs_key(val[j]) : keys[j];
            tmp[w] = key;
            w += (size_t)(key - blo <= span);
        }
        m = w;
        val = NULL;
        keys = tmp;
        lo = blo;
        hi = bhi;
    }
    /* Every remaining key equals lo. */
    *n_above = above;
    return lo;
}

/* ---------------------------------------------------------------------------------------------
 * The fused pass.  One pass over [0, n) computes a = in + res_in (res_in may be NULL: a = in),
 * checks finiteness, adds a^2 to 8 per-lane sums, gathers the keys of the DGC sample (positions
 * next, next + stride, ...), appends (index, a) of the entries with key >= bound to the
 * candidate buffer and writes res_out (may be NULL): a, or 0 for a candidate with key >= zb
 * (zb estimates the k-th key: such a candidate is most likely sent, so its residual entry is
 * final; one that is dropped gets its a back, and a sent candidate below zb is zeroed then).
 * When the buffer holds more than cap entries at a block boundary it is compacted to its top k
 * (ties: lower index) and the bound rises above the k-th key: later entries can no longer enter
 * the top k.
 * ------------------------------------------------------------------------------------------- */

/* Candidate arrays hold cap + TOPK_SLACK entries: a block of 64 may add 64 past cap. */
#define TOPK_SLACK SQZ_PU_BLOCK

typedef struct topk_pass {
    const float *in;
    const float *res_in;
    float       *res_out;
    /* candidates */
    uint32_t    *cidx;
    float       *cval;
    uint32_t    *ktmp;     /* cap + TOPK_SLACK keys of scratch for the compaction */
    uint32_t   (*hist)[TOPK_BINS];
    size_t       cnt, cap, k;
    uint32_t     bound;
    uint32_t     zb;       /* candidates with key >= zb are 0 in res_out (fixed for a pass) */
    int          compacted;
    /* DGC sample */
    uint32_t    *samp;
    size_t       ns, next, stride;
    double       sq[8];
} topk_pass_t;

/** Keeps the entries of idx/val[0, *cnt) (in index order) for which keep() holds, in order;
 *  the others with key >= zb get their value back in res (when not NULL). */
#define TOPK_FILTER(idx, val, cnt, res, zb, keep)                                                 \
    do {                                                                                          \
        size_t w_ = 0;                                                                            \
        for (size_t j = 0; j < *(cnt); j++) {                                                     \
            const uint32_t key = sqz_pu_abs_key((val)[j]);                                        \
            const int take = (keep);                                                              \
            if (!take && key >= (zb) && (res) != NULL) {                                          \
                (res)[(idx)[j]] = (val)[j];                                                       \
            }                                                                                     \
            (idx)[w_] = (idx)[j];                                                                 \
            (val)[w_] = (val)[j];                                                                 \
            w_ += (size_t)take;                                                                   \
        }                                                                                         \
        *(cnt) = w_;                                                                              \
    } while (0)

/** Keeps the top k (ties: lower index) of idx/val[0, *cnt), in index order; the dropped
 *  entries with key >= zb get their value back in res (when not NULL).  Uses tmp (*cnt keys).
 *  \return the k-th largest key (0 when *cnt <= k: nothing dropped). */
static uint32_t topk_keep_top(uint32_t *idx, float *val, size_t *cnt, size_t k, uint32_t *tmp,
                              float *res, uint32_t zb, topk_hist_t hist)
{
    if (*cnt <= k) {
        return 0;
    }
    size_t above;
    uint32_t lo, hi;
    topk_key_range(val, NULL, *cnt, &lo, &hi);
    const uint32_t kth = topk_select(val, NULL, *cnt, k, tmp, &above, lo, hi, hist);
    size_t ties = k - above;
    TOPK_FILTER(idx, val, cnt, res, zb, key > kth || (key == kth && ties > 0 && ties-- > 0));
    return kth;
}

static void __attribute__((noinline)) topk_compact(topk_pass_t *p)
{
    const uint32_t kth =
        topk_keep_top(p->cidx, p->cval, &p->cnt, p->k, p->ktmp, p->res_out, p->zb, p->hist);
    /* k entries at or above kth, the ties at kth of lowest index: a later entry needs more. */
    if (kth + 1 > p->bound) {
        p->bound = kth + 1;
    }
    p->compacted = 1;
}

/* One element (tail of the pass).  \return 1 when a is not finite (nothing written). */
static inline int topk_elem(topk_pass_t *p, size_t i)
{
    const float a = p->res_in != NULL ? p->in[i] + p->res_in[i] : p->in[i];
    const uint32_t key = sqz_pu_abs_key(a);
    if (key >= SQZ_PU_F32_INF_BITS) {
        return 1;
    }
    if (p->cnt > p->cap) {
        topk_compact(p);
    }
    const int cand = key >= p->bound;
    if (p->res_out != NULL) {
        p->res_out[i] = cand && key >= p->zb ? 0.0f : a;
    }
    p->sq[0] += (double)a * a;
    if (cand) {
        p->cidx[p->cnt] = (uint32_t)i;
        p->cval[p->cnt] = a;
        p->cnt++;
    }
    if (i == p->next) {
        p->samp[p->ns++] = key;
        p->next += p->stride;
    }
    return 0;
}

/* Blocks [i0, i0 + 64 * nblk), portable C, in half blocks of 32: finiteness first, then the
 * residual, the sums (lane l: ((a[l]^2 + a[8+l]^2) + (a[16+l]^2 + a[24+l]^2)), added to sq[l]),
 * candidates and samples.  \return i0 + 64 * nblk, or the start of the first 8-element group
 * holding a non-finite a (the groups before it are written, not that one nor later ones). */
static size_t topk_run_c(topk_pass_t *p, size_t i0, size_t nblk)
{
    const size_t i1 = i0 + nblk * SQZ_PU_BLOCK;
    for (size_t i = i0; i < i1; i += SQZ_PU_BLOCK) {
        if (p->cnt > p->cap) {
            topk_compact(p);
        }
        const uint32_t bound = p->bound, zb = p->zb;
        for (size_t h = i; h < i + SQZ_PU_BLOCK; h += 32) {
            float a[32], r[32];
            uint32_t key[32];
            uint32_t bad[4] = {0, 0, 0, 0};
            const float *restrict inh = p->in + h;
            if (p->res_in != NULL) {
                const float *restrict rh = p->res_in + h;
                for (int j = 0; j < 32; j++) {
                    a[j] = inh[j] + rh[j];
                }
            } else {
                memcpy(a, inh, sizeof a);
            }
            for (int j = 0; j < 32; j++) {
                key[j] = sqz_pu_abs_key(a[j]);
                bad[j / 8] |= (uint32_t)(key[j] >= SQZ_PU_F32_INF_BITS);
                r[j] = key[j] >= bound && key[j] >= zb ? 0.0f : a[j];
            }
            if (bad[0] | bad[1] | bad[2] | bad[3]) {
                int v = 0;
                while (!bad[v]) {
                    v++;
                }
                /* The groups before the bad one are processed (written and collected). */
                const size_t nv = 8 * (size_t)v;
                if (p->res_out != NULL) {
                    memcpy(p->res_out + h, r, nv * sizeof(float));
                }
                for (size_t j = 0; j < nv; j++) {
                    if (key[j] >= bound) {
                        p->cidx[p->cnt] = (uint32_t)(h + j);
                        p->cval[p->cnt] = a[j];
                        p->cnt++;
                    }
                }
                return h + nv;
            }
            if (p->res_out != NULL) {
                memcpy(p->res_out + h, r, sizeof r);
            }
            for (int l = 0; l < 8; l++) {
                const double s0 = (double)a[l] * a[l], s1 = (double)a[8 + l] * a[8 + l];
                const double s2 = (double)a[16 + l] * a[16 + l];
                const double s3 = (double)a[24 + l] * a[24 + l];
                p->sq[l] += (s0 + s1) + (s2 + s3);
            }
            for (int j = 0; j < 32; j++) {
                if (key[j] >= bound) {
                    p->cidx[p->cnt] = (uint32_t)(h + (size_t)j);
                    p->cval[p->cnt] = a[j];
                    p->cnt++;
                }
            }
            while (p->next < h + 32) {
                p->samp[p->ns++] = key[p->next - h];
                p->next += p->stride;
            }
        }
    }
    return i1;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SQZ_PU_NO_SIMD)
#include <immintrin.h>
#define TOPK_X86 1

/* The same pass with AVX2: the same half blocks, lanes, sums and candidate order as
 * topk_run_c().  lut[mask] holds, byte by byte, the lanes set in mask in increasing order
 * (left-packing).  Written with explicit registers: GCC keeps arrays of vectors on the stack. */
typedef struct topk_avx2_out {
    uint32_t *cidx;
    float    *cval;
    size_t    cnt;
} topk_avx2_out_t;

/* Appends the candidates (lanes of cm) of the group of 8 at index g. */
__attribute__((target("avx2"), always_inline)) static inline void
topk_group_avx2(const uint64_t *lut, size_t g, __m256 a, __m256i cm, topk_avx2_out_t *o)
{
    const unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(cm));
    const __m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)&lut[mask]));
    const __m256i ix = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)g),
                                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_storeu_si256((__m256i *)(o->cidx + o->cnt), _mm256_permutevar8x32_epi32(ix, perm));
    _mm256_storeu_ps(o->cval + o->cnt, _mm256_permutevar8x32_ps(a, perm));
    o->cnt += (size_t)__builtin_popcount(mask);
}

/* The DGC samples in the group of 8 at index g. */
__attribute__((target("avx2"))) static void topk_samples_avx2(topk_pass_t *p, size_t g,
                                                               __m256i key)
{
    uint32_t kt[8];
    _mm256_storeu_si256((__m256i *)kt, key);
    while (p->next < g + 8) {
        p->samp[p->ns++] = kt[p->next - g];
        p->next += p->stride;
    }
}

__attribute__((target("avx2"))) static inline __m256d topk_sq2_avx2(__m128 x, __m128 y)
{
    const __m256d dx = _mm256_cvtps_pd(x), dy = _mm256_cvtps_pd(y);
    return _mm256_add_pd(_mm256_mul_pd(dx, dx), _mm256_mul_pd(dy, dy));
}

__attribute__((target("avx2"))) static size_t topk_run_avx2(topk_pass_t *p, const uint64_t *lut,
                                                             size_t i0, size_t nblk)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i infm1 = _mm256_set1_epi32((int)(SQZ_PU_F32_INF_BITS - 1));
    const float *in = p->in;
    const float *rin = p->res_in;
    float *rout = p->res_out;
    topk_avx2_out_t o = {p->cidx, p->cval, p->cnt};
    /* key >= bound as a signed compare with bound - 1: keys and bounds are < 2^31. */
    __m256i bm1 = _mm256_set1_epi32((int)(p->bound - 1u));
    /* zb - 1 as a signed compare too (zb = 2^32 - 1: never, as -2 would be always: clamp). */
    const __m256i zm1 = _mm256_set1_epi32((int)(p->zb > 0x7fffffffu ? 0x7fffffffu : p->zb - 1u));
    __m256d sqlo = _mm256_loadu_pd(p->sq), sqhi = _mm256_loadu_pd(p->sq + 4);
    const size_t i1 = i0 + nblk * SQZ_PU_BLOCK;
    size_t ret = i1;
    for (size_t i = i0; i < i1; i += SQZ_PU_BLOCK) {
        if (o.cnt > p->cap) {
            p->cnt = o.cnt;
            topk_compact(p);
            o.cnt = p->cnt;
            bm1 = _mm256_set1_epi32((int)(p->bound - 1u));
        }
        for (size_t h = i; h < i + SQZ_PU_BLOCK; h += 32) {
            __m256 a0 = _mm256_loadu_ps(in + h), a1 = _mm256_loadu_ps(in + h + 8);
            __m256 a2 = _mm256_loadu_ps(in + h + 16), a3 = _mm256_loadu_ps(in + h + 24);
            if (rin != NULL) {
                a0 = _mm256_add_ps(a0, _mm256_loadu_ps(rin + h));
                a1 = _mm256_add_ps(a1, _mm256_loadu_ps(rin + h + 8));
                a2 = _mm256_add_ps(a2, _mm256_loadu_ps(rin + h + 16));
                a3 = _mm256_add_ps(a3, _mm256_loadu_ps(rin + h + 24));
            }
            const __m256i k0 = _mm256_castps_si256(_mm256_and_ps(a0, absmask));
            const __m256i k1 = _mm256_castps_si256(_mm256_and_ps(a1, absmask));
            const __m256i k2 = _mm256_castps_si256(_mm256_and_ps(a2, absmask));
            const __m256i k3 = _mm256_castps_si256(_mm256_and_ps(a3, absmask));
            const __m256i mx = _mm256_max_epi32(_mm256_max_epi32(k0, k1), _mm256_max_epi32(k2, k3));
            const __m256i bad = _mm256_cmpgt_epi32(mx, infm1);
            const __m256i c0 = _mm256_cmpgt_epi32(k0, bm1), c1 = _mm256_cmpgt_epi32(k1, bm1);
            const __m256i c2 = _mm256_cmpgt_epi32(k2, bm1), c3 = _mm256_cmpgt_epi32(k3, bm1);
            if (__builtin_expect(!_mm256_testz_si256(bad, bad), 0)) {
                /* The first group holding a non-finite a; the earlier ones are processed. */
                const __m256 av[4] = {a0, a1, a2, a3};
                const __m256i kv[4] = {k0, k1, k2, k3};
                const __m256i cv[4] = {c0, c1, c2, c3};
                int v = 0;
                while (_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(kv[v], infm1))) ==
                       0) {
                    v++;
                }
                for (int u = 0; u < v; u++) {
                    if (rout != NULL) {
                        const __m256i z = _mm256_and_si256(cv[u], _mm256_cmpgt_epi32(kv[u], zm1));
                        _mm256_storeu_ps(rout + h + 8 * u,
                                         _mm256_andnot_ps(_mm256_castsi256_ps(z), av[u]));
                    }
                    topk_group_avx2(lut, h + 8 * (size_t)u, av[u], cv[u], &o);
                }
                ret = h + 8 * (size_t)v;
                goto done;
            }
            if (rout != NULL) {
#define TOPK_ZSTORE(off, av, kv, cv)                                                              \
    _mm256_storeu_ps(rout + h + (off),                                                            \
                     _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_and_si256(                       \
                                          (cv), _mm256_cmpgt_epi32((kv), zm1))),                  \
                                      (av)))
                TOPK_ZSTORE(0, a0, k0, c0);
                TOPK_ZSTORE(8, a1, k1, c1);
                TOPK_ZSTORE(16, a2, k2, c2);
                TOPK_ZSTORE(24, a3, k3, c3);
#undef TOPK_ZSTORE
            }
            /* lane l: (a[l]^2 + a[8+l]^2) + (a[16+l]^2 + a[24+l]^2) */
            sqlo = _mm256_add_pd(
                sqlo, _mm256_add_pd(topk_sq2_avx2(_mm256_castps256_ps128(a0),
                                                  _mm256_castps256_ps128(a1)),
                                    topk_sq2_avx2(_mm256_castps256_ps128(a2),
                                                  _mm256_castps256_ps128(a3))));
            sqhi = _mm256_add_pd(
                sqhi, _mm256_add_pd(topk_sq2_avx2(_mm256_extractf128_ps(a0, 1),
                                                  _mm256_extractf128_ps(a1, 1)),
                                    topk_sq2_avx2(_mm256_extractf128_ps(a2, 1),
                                                  _mm256_extractf128_ps(a3, 1))));
            const __m256i any = _mm256_or_si256(_mm256_or_si256(c0, c1), _mm256_or_si256(c2, c3));
            if (!_mm256_testz_si256(any, any)) {
                topk_group_avx2(lut, h, a0, c0, &o);
                topk_group_avx2(lut, h + 8, a1, c1, &o);
                topk_group_avx2(lut, h + 16, a2, c2, &o);
                topk_group_avx2(lut, h + 24, a3, c3, &o);
            }
            if (__builtin_expect(p->next < h + 32, 0)) {
                topk_samples_avx2(p, h, k0);
                topk_samples_avx2(p, h + 8, k1);
                topk_samples_avx2(p, h + 16, k2);
                topk_samples_avx2(p, h + 24, k3);
            }
        }
    }
done:
    p->cnt = o.cnt;
    _mm256_storeu_pd(p->sq, sqlo);
    _mm256_storeu_pd(p->sq + 4, sqhi);
    return ret;
}

static int topk_have_avx2(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return have;
}
#else
#define TOPK_X86 0
#endif

/** Runs the pass over [0, n).  \return n, or the index of the first 8-element group holding a
 *  non-finite a (or of that element in the tail): everything before it is processed, nothing
 *  from it on. */
static size_t topk_run(topk_pass_t *p, const uint64_t *lut, size_t n)
{
    const size_t nblk = n / SQZ_PU_BLOCK;
    size_t i = nblk * SQZ_PU_BLOCK, stop;
    (void)lut;
#if TOPK_X86
    if (topk_have_avx2()) {
        stop = topk_run_avx2(p, lut, 0, nblk);
    } else {
        stop = topk_run_c(p, 0, nblk);
    }
#else
    stop = topk_run_c(p, 0, nblk);
#endif
    if (stop != i) {
        return stop;
    }
    for (; i < n; i++) {
        if (topk_elem(p, i)) {
            return i;
        }
    }
    return n;
}

/** \return #{i : key(a[i]) >= thr} over the whole vector after the pass, or some value > cap
 *  (> 1.3k) when it is known to be that large: from the candidates when they hold every such
 *  entry, else by one counting pass over av (a, rare). */
static size_t topk_count_ge(const topk_pass_t *p, const float *av, size_t n, uint32_t bound0,
                            uint32_t thr)
{
    size_t c = 0;
    if (thr >= p->bound) {
        /* Every entry >= the final bound is a candidate. */
        for (size_t j = 0; j < p->cnt; j++) {
            c += sqz_pu_abs_key(p->cval[j]) >= thr;
        }
        return c;
    }
    if (p->compacted && thr <= bound0) {
        /* More than cap entries were >= bound0. */
        return p->cap + 1;
    }
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        const float *restrict x = av + i;
        uint32_t cb = 0;
        for (int j = 0; j < SQZ_PU_BLOCK; j++) {
            cb += (uint32_t)(sqz_pu_abs_key(x[j]) >= thr);
        }
        c += cb;
    }
    for (; i < n; i++) {
        c += sqz_pu_abs_key(av[i]) >= thr;
    }
    return c;
}

/* Software prefetch distance (entries) of the scattered output updates of decompress. */
#define TOPK_PREFETCH 32

/* The candidates >= zb hold 0 in res: give them their a back. */
static void topk_put_back(const topk_pass_t *p, float *res)
{
    for (size_t j = 0; j < p->cnt; j++) {
        if (sqz_pu_abs_key(p->cval[j]) >= p->zb) {
            res[p->cidx[j]] = p->cval[j];
        }
    }
}

/** Writes the payload from the candidates of p (index order): those with key >= thr, or the
 *  top k of them (ties: lower index) when more than k are; and fixes the residual (when not
 *  NULL): a sent candidate below p->zb is zeroed, a dropped one at or above it gets a back.
 *  \return m, the entries sent. */
static size_t topk_emit(topk_state_t *st, const topk_pass_t *p, size_t k, uint32_t thr,
                        float *res, uint8_t *out)
{
    const uint32_t *idx = p->cidx;
    const float *val = p->cval;
    const size_t cnt = p->cnt;
    const uint32_t zb = p->zb;
    size_t cnt_t = 0;
    uint32_t lo = UINT32_MAX, hi = 0;
    for (size_t j = 0; j < cnt; j++) {
        const uint32_t key = sqz_pu_abs_key(val[j]);
        cnt_t += key >= thr;
        lo = key < lo ? key : lo;
        hi = key > hi ? key : hi;
    }
    /* Sent: key > kth, or key == kth while ties last (index order). */
    uint32_t kth = thr;
    size_t ties = SIZE_MAX, m = cnt_t;
    if (cnt_t > k) {
        /* The k-th largest candidate is >= thr: select over all of them. */
        size_t above;
        kth = topk_select(val, NULL, cnt, k, st->ktmp, &above, lo, hi, st->hist);
        ties = k - above;
        m = k;
    }
    sqz_pu_store_u32(out, (uint32_t)m);
    uint8_t *io = out + 4, *vo = out + 4 + 4 * m;
    size_t j = 0, w = 0;
    /* Branch-free over the sent ones: w < m holds inside, so the stores stay in the payload. */
    for (; w < m; j++) {
        const uint32_t key = sqz_pu_abs_key(val[j]);
        const size_t eq = key == kth;
        const size_t take = (size_t)(key > kth) | (eq & (size_t)(ties > 0));
        ties -= eq & take;
        sqz_pu_store_u32(io + 4 * w, idx[j]);
        sqz_pu_store_f32(vo + 4 * w, val[j]);
        w += take;
        if (res != NULL && (take ^ (size_t)(key >= zb))) {
            res[idx[j]] = take ? 0.0f : val[j];
        }
    }
    if (res != NULL) {
        for (; j < cnt; j++) {
            if (sqz_pu_abs_key(val[j]) >= zb) {
                res[idx[j]] = val[j];
            }
        }
    }
    return m;
}

/* The pre-sample: at most this many strided keys give the pass's initial bound. */
#define TOPK_PRESAMPLE 16384u

/* The sizes of one compress: the DGC sample (sampled selection only) and the pre-sample that bounds
 * the pass's work. */
typedef struct topk_sizes {
    int    sampled;      /* DGC's sampled threshold applies */
    size_t stride;       /* the DGC sample's stride, and its first index (SIZE_MAX: none) */
    size_t start;
    size_t pstride, S;   /* the pre-sample: S keys, pstride apart */
    size_t c;            /* the bound is the pre-sample's c-th largest key */
    size_t cap;          /* candidate capacity */
} topk_sizes_t;

/* Sizes the call (DGC's stride and random start; the pre-sample's c, a few standard deviations
 * above the sample's share of k, all of a when n is small) and grows the scratch to them. */
static sqz_status_t topk_size_call(topk_state_t *st, const sqz_compress_args_v1_t *args,
                                   size_t k, topk_sizes_t *z)
{
    const size_t n = args->n;
    z->stride =
        st->cfg.select == TOPK_SELECT_SAMPLED ? sqz_pu_ceil_size(1.0 / st->cfg.sample_ratio) : 1;
    z->sampled = !(z->stride <= 1 || n / z->stride < 1 || k == n);
    z->start = SIZE_MAX;
    size_t ns_max = 0;
    if (z->sampled) {
        sqz_pu_rng_t rng;
        sqz_pu_rng_seed4(&rng, st->seed, st->rank, args->seq, args->stage);
        z->start = (size_t)sqz_pu_rng_below(&rng, z->stride);
        ns_max = (n - z->start + z->stride - 1) / z->stride;
    }
    z->pstride = n / TOPK_PRESAMPLE > 1 ? n / TOPK_PRESAMPLE : 1;
    z->S = n / z->pstride;
    if (k == n) {
        z->c = z->S;
    } else if (z->pstride == 1) {
        z->c = k;
    } else {
        const double ks = (double)k * (double)z->S / (double)n;
        z->c = sqz_pu_ceil_size(ks + 5.0 * sqrt(ks) + 8.0);
        z->c = z->c < z->S ? z->c : z->S;
    }
    const double expect = (double)z->c * (double)n / (double)z->S;
    size_t cap = (size_t)(expect * 1.5) + 1024;
    /* More than 1.3k (DGC's adaptation relies on it: see topk_count_ge()). */
    if (cap < k + k / 2 + 1024) {
        cap = k + k / 2 + 1024;
    }
    z->cap = cap < n ? cap : n;
    size_t tmp_need = z->cap > 2 * z->S ? z->cap : 2 * z->S;
    tmp_need = (tmp_need > ns_max ? tmp_need : ns_max) + TOPK_SLACK;
    if (sqz_pu_grow((void **)&st->cidx, &st->cidx_cap, (z->cap + TOPK_SLACK) * sizeof(uint32_t)) ==
            NULL ||
        sqz_pu_grow((void **)&st->cval, &st->cval_cap, (z->cap + TOPK_SLACK) * sizeof(float)) ==
            NULL ||
        sqz_pu_grow((void **)&st->ktmp, &st->ktmp_cap, tmp_need * sizeof(uint32_t)) == NULL ||
        sqz_pu_grow((void **)&st->samp, &st->samp_cap, (ns_max + 1) * sizeof(uint32_t)) ==
            NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    return SQZ_OK;
}

/* The pass's bounds from the pre-sample: *bound0, its c-th largest key (the pass keeps every
 * candidate at or above it; it only sets how much work the pass does, never the result), and
 * *zb, its share of k (candidates at or above it are zeroed in the residual as they are found). */
static void topk_presample(topk_state_t *st, const float *in, const float *res, size_t n,
                           size_t k, const topk_sizes_t *z, uint32_t *bound0, uint32_t *zb)
{
    *bound0 = 0, *zb = 0;
    if (k >= n) {
        return;
    }
    uint32_t *ps = st->ktmp;
    if (res != NULL) {
        for (size_t j = 0; j < z->S; j++) {
            ps[j] = sqz_pu_abs_key(in[j * z->pstride] + res[j * z->pstride]);
        }
    } else {
        for (size_t j = 0; j < z->S; j++) {
            ps[j] = sqz_pu_abs_key(in[j * z->pstride]);
        }
    }
    size_t above;
    size_t kz = (size_t)((double)k * (double)z->S / (double)n + 0.5);
    kz = kz < 1 ? 1 : (kz > z->c ? z->c : kz);
    uint32_t lo, hi;
    topk_key_range(NULL, ps, z->S, &lo, &hi);
    *zb = topk_select(NULL, ps, z->S, kz, ps + z->S, &above, lo, hi, st->hist);
    const uint32_t b = topk_select(NULL, ps, z->S, z->c, ps, &above, lo, hi, st->hist);
    /* A non-finite a makes the pass stop anyway. */
    *bound0 = b < SQZ_PU_F32_INF_BITS ? b : SQZ_PU_F32_INF_BITS;
}

/* DGC's sampled threshold: the ceil(ns * density)-th largest key of the sample, lowered by 0.8
 * while the true count stays under 0.8 k (at most 10 times; see topk_count_ge()). */
static uint32_t topk_sampled_threshold(topk_state_t *st, topk_pass_t *p, const float *in,
                                       float *res, size_t n, size_t k, double density,
                                       uint32_t bound0)
{
    const size_t ns = p->ns;
    size_t ks = sqz_pu_ceil_size((double)ns * density);
    ks = ks < 1 ? 1 : (ks > ns ? ns : ks);
    size_t above;
    uint32_t lo, hi;
    topk_key_range(NULL, p->samp, ns, &lo, &hi);
    uint32_t thr = topk_select(NULL, p->samp, ns, ks, st->ktmp, &above, lo, hi, st->hist);
    /* The counts are the true ones; the residual holds a but for the candidates, which the
     * count takes from the candidates. */
    for (int it = 0; it < 10; it++) {
        size_t cnt;
        if (thr >= p->bound || (p->compacted && thr <= bound0) || res == NULL) {
            cnt = topk_count_ge(p, in, n, bound0, thr);
        } else {
            /* Rare: a count below the candidates' bound needs a in the residual. */
            topk_put_back(p, res);
            cnt = topk_count_ge(p, res, n, bound0, thr);
            for (size_t j = 0; j < p->cnt; j++) {
                if (sqz_pu_abs_key(p->cval[j]) >= p->zb) {
                    res[p->cidx[j]] = 0.0f;
                }
            }
        }
        if ((double)cnt >= 0.8 * (double)k) {
            break; /* (between 0.8 k and 1.3 k, or above: the candidates hold enough) */
        }
        thr = sqz_pu_abs_key(sqz_pu_bits_f32(thr) * 0.8f);
    }
    return thr;
}

/* The candidates hold every entry with key >= bound0 (or, once compacted, the top k of them).
 * When fewer than k passed a bound above thr, entries in [thr, bound0) may be missing: collect
 * again from a (put back whole into the residual) with a bound from a histogram of the keys.  The
 * selected entries are then zeroed by topk_emit (zb: none is 0 yet). */
static void topk_collect_again(topk_state_t *st, topk_pass_t *p, const float *in, float *res,
                               size_t n, size_t k, uint32_t thr)
{
    const float *av = in;
    if (res != NULL) {
        topk_put_back(p, res);
        av = res;
    }
    size_t hist[2048] = {0};
    for (size_t i = 0; i < n; i++) {
        hist[sqz_pu_abs_key(av[i]) >> 20]++;
    }
    size_t cum = 0, d = 2048;
    while (d > 0 && cum < k) {
        cum += hist[--d];
    }
    const uint32_t b1 = (uint32_t)d << 20;
    p->in = av;
    p->res_in = NULL;
    p->res_out = NULL;
    p->cnt = 0;
    p->bound = b1 > thr ? b1 : thr;
    p->zb = UINT32_MAX;
    p->next = SIZE_MAX;
    p->stride = 0;
    (void)topk_run(p, st->lut, n);
}

/* The empty vector's payload: a count of 0. */
static sqz_status_t topk_compress_empty(sqz_compress_args_v1_t *args)
{
    sqz_pu_store_u32((uint8_t *)args->payload, 0);
    args->payload_bytes = 4;
    args->norm2_in = 0.0;
    args->norm2_err = 0.0;
    return SQZ_OK;
}

static sqz_status_t topk_compress(void *state, sqz_compress_args_v1_t *args)
{
    topk_state_t *st = (topk_state_t *)state;
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    uint8_t *out = (uint8_t *)args->payload;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n > UINT32_MAX) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    const double density = topk_stage_density(&st->cfg, args->seq, args->stage);
    const size_t k       = sqz_pu_density_count(density, n);
    if (out == NULL || args->capacity < 4 + 8 * k || (n > 0 && in == NULL)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0) {
        return topk_compress_empty(args);
    }
    topk_sizes_t z;
    const sqz_status_t st_size = topk_size_call(st, args, k, &z);
    if (st_size != SQZ_OK) {
        return st_size;
    }
    uint32_t bound0, zb;
    topk_presample(st, in, res, n, k, &z, &bound0, &zb);
    topk_pass_t p = {
        .in = in,
        .res_in = res,
        .res_out = res,
        .cidx = st->cidx,
        .cval = st->cval,
        .ktmp = st->ktmp,
        .hist = st->hist,
        .cnt = 0,
        .cap = z.cap,
        .k = k,
        .bound = bound0,
        .zb = zb,
        .compacted = 0,
        .samp = st->samp,
        .ns = 0,
        .next = z.start,
        .stride = z.sampled ? z.stride : 0,
    };
    const size_t stop = topk_run(&p, st->lut, n);
    if (stop != n) {
        /* Non-finite: [0, stop) holds a, or 0 for the candidates >= zb; give back the old
         * residual (up to rounding). */
        if (res != NULL) {
            topk_put_back(&p, res);
            for (size_t i = 0; i < stop; i++) {
                res[i] -= in[i];
            }
        }
        return SQZ_ERR_NONFINITE;
    }
    double norm2_in = 0.0;
    for (int l = 0; l < 8; l++) {
        norm2_in += p.sq[l];
    }
    /* Final threshold: the selection is the top k of {key >= thr}. */
    const uint32_t thr =
        z.sampled ? topk_sampled_threshold(st, &p, in, res, n, k, density, bound0) : 0;
    if (bound0 > thr && !p.compacted && p.cnt < k) {
        topk_collect_again(st, &p, in, res, n, k, thr);
    }
    /* The top k of the candidates >= thr: the payload, and the residual fixed up. */
    const size_t m = topk_emit(st, &p, k, thr, res, out);
    double sel_sq = 0.0;
    for (size_t j = 0; j < m; j++) {
        const float v = sqz_pu_load_f32(out + 4 + 4 * m + 4 * j);
        sel_sq += (double)v * v;
    }
    const double norm2_err = norm2_in - sel_sq;
    args->payload_bytes = 4 + 8 * m;
    args->norm2_in = norm2_in;
    args->norm2_err = norm2_err > 0.0 ? norm2_err : 0.0;
    return SQZ_OK;
}

static sqz_status_t topk_decompress(void *state, const void *payload, size_t bytes, float *out,
                                    size_t n)
{
    if (payload == NULL || bytes < 4) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *p = (const uint8_t *)payload;
    const size_t m = sqz_pu_load_u32(p);
    if (m > n || (bytes - 4) / 8 != m || (bytes - 4) % 8 != 0) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *idx = p + 4;
    const uint8_t *val = p + 4 + 4 * m;
    /* Validate everything before the first write. */
    for (size_t j = 0; j < m; j++) {
        const uint32_t ix = sqz_pu_load_u32(idx + 4 * j);
        if (ix >= n || (j > 0 && ix <= sqz_pu_load_u32(idx + 4 * (j - 1))) ||
            !sqz_pu_is_finite_f32(sqz_pu_load_f32(val + 4 * j))) {
            return SQZ_ERR_CORRUPT;
        }
    }
    if (out == NULL) {
        return SQZ_OK;
    }
    for (size_t j = 0; j < m; j++) {
        if (j + TOPK_PREFETCH < m) {
            __builtin_prefetch(out + sqz_pu_load_u32(idx + 4 * (j + TOPK_PREFETCH)), 1);
        }
        out[sqz_pu_load_u32(idx + 4 * j)] += sqz_pu_load_f32(val + 4 * j);
    }
    return SQZ_OK;
}

const sqz_compressor_v1_t sqz_compressor_topk = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "topk",
    .description = "magnitude top-k sparsification with error feedback (DGC; exact or sampled "
                   "threshold)",
    .exchange = SQZ_EXCHANGE_ALLGATHER,
    .params = topk_params,
    .nparams = sizeof topk_params / sizeof topk_params[0],
    .config_size = sizeof(topk_config_t),
    .create = topk_create,
    .query = topk_query,
    .max_payload = topk_max_payload,
    .compress = topk_compress,
    .decompress = topk_decompress,
    .destroy = topk_destroy,
    /* SQZ_ADAPT: densities in parts per million, 0.01 % to 50 % (the engine picks those from a
     * quarter to 4 times SQZ_TOPK_DENSITY). */
    .levels      = "100,250,500,1000,2500,5000,10000,20000,25000,40000,50000,100000,200000,500000",
    .level_param = "TOPK_DENSITY",
    .level_scale = 1e6,
    .flags = SQZ_COMPRESSOR_CONTRACTIVE | SQZ_COMPRESSOR_EF21 | SQZ_COMPRESSOR_EF14_DIVERGES,
    .stage_payload = topk_stage_payload,
};
