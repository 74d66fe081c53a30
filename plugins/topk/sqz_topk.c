/*
 * "topk": magnitude top-k sparsification with error feedback, after Deep Gradient Compression
 * (Lin et al., ICLR 2018; reference code synxlin/deep-gradient-compression, dgc/compression.py).
 *
 * a = in + residual; k = max(1, ceil(TOPK_DENSITY * n)), at most n.  The selected entries are sent
 * exactly and zeroed in the residual; every other entry stays in the residual (exact error
 * feedback).  Two selections (TOPK_SELECT):
 *   exact:   exactly the k entries of largest |a|, ties broken by lower index.  The threshold is
 *            found in O(n) by a 3-level radix select on the bits of |a|.
 *   sampled: DGC's sampled threshold.  A strided sample of |a| (stride ~ 1/TOPK_SAMPLE_RATIO,
 *            random start) gives thr = the ceil(samples * density)-th largest sample; then up to
 *            10 adaptation rounds: more than 1.3k entries >= thr: exact top-k among them, stop;
 *            fewer than 0.8k: thr *= 0.8; otherwise stop.  At most k entries are kept (the first
 *            ones in index order).
 *
 * Wire format (little-endian): u32 m, then m u32 indices strictly increasing and < n, then m f32
 * values (finite).  4 + 8m bytes, m <= k.
 * Exchange: SQZ_EXCHANGE_ALLGATHER (sparse payloads are not summable in compressed form).
 */
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
        .help = "selection: exact top-k (O(n) radix select) or DGC's sampled threshold",
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
};

typedef struct topk_state {
    topk_config_t cfg;
    uint64_t      seed;
    int           rank;
    uint32_t     *keys; /* |a| bits of the current call, n entries (grow-only scratch) */
    size_t        keys_cap;
    uint32_t     *cand; /* samples / candidates for the selection (grow-only scratch) */
    size_t        cand_cap;
} topk_state_t;

static sqz_status_t topk_create(const void *config, const sqz_compressor_env_v1_t *env,
                                void **state)
{
    const topk_config_t *cfg = (const topk_config_t *)config;
    if (cfg == NULL || !(cfg->density > 0.0 && cfg->density <= 1.0) ||
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
    *state = s;
    return SQZ_OK;
}

static void topk_destroy(void *state)
{
    topk_state_t *s = (topk_state_t *)state;
    if (s == NULL) {
        return;
    }
    free(s->keys);
    free(s->cand);
    free(s);
}

/* \return k for n elements: max(1, ceil(density * n)) clamped to n (0 for n == 0). */
static size_t topk_k(double density, size_t n)
{
    if (n == 0) {
        return 0;
    }
    size_t k = sqz_pu_ceil_size(density * (double)n);
    if (k < 1) {
        k = 1;
    }
    return k < n ? k : n;
}

static sqz_status_t topk_query(void *state, const sqz_query_v1_t *q)
{
    /* Indices travel as u32. */
    return q->count > UINT32_MAX ? SQZ_ERR_NOT_SUPPORTED : SQZ_OK;
}

static size_t topk_max_payload(void *state, size_t n)
{
    const topk_state_t *s = (const topk_state_t *)state;
    if (s == NULL || n > UINT32_MAX) {
        return SIZE_MAX;
    }
    return 4 + 8 * topk_k(s->cfg.density, n);
}

/* ---------------------------------------------------------------------------------------------
 * Selection on keys (bits of |a|, which order like |a| for finite a).
 * ------------------------------------------------------------------------------------------- */

/** Finds the r-th largest key (1 <= r <= m) of keys[0, m) by a 3-level MSD radix select and
 *  stores in *n_above how many keys are strictly larger.  O(m); destroys keys[] (compacts the
 *  candidates in place). */
static uint32_t topk_radix_select(uint32_t *keys, size_t m, size_t r, size_t *n_above)
{
    /* Keys are < 2^31: digits are bits [21, 31), [10, 21) and [0, 10). */
    static const int shift[3] = {21, 10, 0};
    static const uint32_t mask[3] = {0x3ffu, 0x7ffu, 0x3ffu};
    size_t hist[2048];
    size_t above = 0;
    uint32_t prefix = 0;
    for (int lv = 0; lv < 3; lv++) {
        const int sh = shift[lv];
        const uint32_t mk = mask[lv];
        memset(hist, 0, (mk + 1) * sizeof hist[0]);
        for (size_t i = 0; i < m; i++) {
            hist[(keys[i] >> sh) & mk]++;
        }
        /* The digit d holding the r-th largest: strictly more than r - 1 keys at digits >= d. */
        uint32_t d = mk;
        size_t cum = 0;
        for (;; d--) {
            if (cum + hist[d] >= r) {
                break;
            }
            cum += hist[d];
        }
        above += cum;
        r -= cum;
        prefix |= d << sh;
        size_t w = 0;
        for (size_t i = 0; i < m; i++) {
            const uint32_t key = keys[i];
            keys[w] = key;
            w += ((key >> sh) & mk) == d;
        }
        m = w;
    }
    *n_above = above;
    return prefix;
}

/* Keys of one block and whether any is NaN/Inf (lane-wise OR, vectorizable). */
static inline uint32_t topk_keys_block(const float *restrict in, const float *restrict res,
                                       uint32_t *restrict keys)
{
    uint32_t bad = 0;
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        const uint32_t key = sqz_pu_abs_key(in[j] + res[j]);
        keys[j] = key;
        bad |= (uint32_t)(key >= SQZ_PU_F32_INF_BITS);
    }
    return bad;
}

static inline uint32_t topk_keys_block_nores(const float *restrict in, uint32_t *restrict keys)
{
    uint32_t bad = 0;
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        const uint32_t key = sqz_pu_abs_key(in[j]);
        keys[j] = key;
        bad |= (uint32_t)(key >= SQZ_PU_F32_INF_BITS);
    }
    return bad;
}

static inline size_t topk_count_block(const uint32_t *restrict keys, uint32_t thr)
{
    uint32_t c = 0;
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        c += (uint32_t)(keys[j] >= thr);
    }
    return c;
}

/* \return how many keys[0, n) are >= thr. */
static size_t topk_count_ge(const uint32_t *keys, size_t n, uint32_t thr)
{
    size_t c = 0, i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        c += topk_count_block(keys + i, thr);
    }
    for (; i < n; i++) {
        c += keys[i] >= thr;
    }
    return c;
}

/* One block of the collection pass: a = in + res, the energy per lane, and whether any key
 * reaches thr (res may be NULL). */
static inline uint32_t topk_scan_block(const float *restrict in, const float *restrict res,
                                       float *restrict a, double *restrict sq, uint32_t thr)
{
    uint32_t any = 0;
    if (res != NULL) {
        for (int j = 0; j < SQZ_PU_BLOCK; j++) {
            a[j] = in[j] + res[j];
        }
    } else {
        memcpy(a, in, SQZ_PU_BLOCK * sizeof *a);
    }
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int l = 0; l < 8; l++) {
            sq[l] += (double)a[j + l] * a[j + l];
            any |= (uint32_t)(sqz_pu_abs_key(a[j + l]) >= thr);
        }
    }
    return any;
}

/** Selection rule of the collection pass: take element i when key > thr, or key == thr while
 *  ties_left > 0 (consumed in index order), and never more than cap elements in total. */
typedef struct topk_rule {
    uint32_t thr;
    size_t   ties_left;
    size_t   cap;
} topk_rule_t;

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
    const size_t k = topk_k(st->cfg.density, n);
    if (out == NULL || args->capacity < 4 + 8 * k || (n > 0 && in == NULL)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (n == 0) {
        sqz_pu_store_u32(out, 0);
        args->payload_bytes = 4;
        args->norm2_in = 0.0;
        args->norm2_err = 0.0;
        return SQZ_OK;
    }
    if (sqz_pu_grow((void **)&st->keys, &st->keys_cap, n * sizeof(uint32_t)) == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    uint32_t *keys = st->keys;

    /* Pass 1: keys and finiteness; the residual is not written before this completes. */
    uint32_t bad = 0;
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        bad |= res != NULL ? topk_keys_block(in + i, res + i, keys + i)
                           : topk_keys_block_nores(in + i, keys + i);
    }
    for (; i < n; i++) {
        keys[i] = sqz_pu_abs_key(in[i] + (res != NULL ? res[i] : 0.0f));
        bad |= (uint32_t)(keys[i] >= SQZ_PU_F32_INF_BITS);
    }
    if (bad) {
        return SQZ_ERR_NONFINITE;
    }

    /* Threshold and selection rule. */
    topk_rule_t rule;
    const size_t stride =
        st->cfg.select == TOPK_SELECT_SAMPLED ? sqz_pu_ceil_size(1.0 / st->cfg.sample_ratio) : 1;
    if (stride <= 1 || n / stride < 1 || k == n) {
        /* Exact, in place on the keys (the collection pass recomputes them). */
        size_t above;
        rule.thr = topk_radix_select(keys, n, k, &above);
        rule.ties_left = k - above;
        rule.cap = k;
    } else {
        sqz_pu_rng_t rng;
        sqz_pu_rng_seed4(&rng, st->seed, st->rank, args->seq, args->stage);
        const size_t start = (size_t)sqz_pu_rng_below(&rng, stride);
        const size_t ns = start < n ? (n - start + stride - 1) / stride : 0;
        if (sqz_pu_grow((void **)&st->cand, &st->cand_cap, (ns + 1) * sizeof(uint32_t)) == NULL) {
            return SQZ_ERR_NO_MEMORY;
        }
        for (size_t j = 0; j < ns; j++) {
            st->cand[j] = keys[start + j * stride];
        }
        size_t ks = sqz_pu_ceil_size((double)ns * st->cfg.density);
        ks = ks < 1 ? 1 : (ks > ns ? ns : ks);
        size_t above;
        uint32_t thr = ns > 0 ? topk_radix_select(st->cand, ns, ks, &above) : 0;
        rule.ties_left = SIZE_MAX;
        rule.cap = k;
        for (int it = 0; it < 10; it++) {
            const size_t cnt = topk_count_ge(keys, n, thr);
            if ((double)cnt > 1.3 * (double)k) {
                /* Exact top-k among the candidates: they contain the global top-k. */
                /* One spare slot: the branch-free gather below stores before it tests. */
                if (sqz_pu_grow((void **)&st->cand, &st->cand_cap,
                                (cnt + 1) * sizeof(uint32_t)) == NULL) {
                    return SQZ_ERR_NO_MEMORY;
                }
                size_t w = 0;
                for (size_t j = 0; j < n; j++) {
                    st->cand[w] = keys[j];
                    w += keys[j] >= thr;
                }
                thr = topk_radix_select(st->cand, cnt, k, &above);
                rule.ties_left = k - above;
                break;
            }
            if ((double)cnt < 0.8 * (double)k) {
                thr = sqz_pu_abs_key(sqz_pu_bits_f32(thr) * 0.8f);
                continue;
            }
            break;
        }
        rule.thr = thr;
    }

    /* Pass 2: collect.  The payload's value area follows the m indices, so m is needed first:
     * with the rule fixed it is min(cap, #{key > thr} + min(ties, #{key == thr})). */
    size_t m;
    if (rule.ties_left == SIZE_MAX) {
        const size_t cnt = topk_count_ge(keys, n, rule.thr);
        m = cnt < rule.cap ? cnt : rule.cap;
    } else {
        m = k;
    }
    uint8_t *idx_out = out + 4;
    uint8_t *val_out = out + 4 + 4 * m;
    size_t taken = 0;
    double sq[8] = {0};
    double sel_sq = 0.0;
    for (i = 0; i < n; i += SQZ_PU_BLOCK) {
        const size_t len = n - i < SQZ_PU_BLOCK ? n - i : SQZ_PU_BLOCK;
        float a[SQZ_PU_BLOCK] = {0};
        uint32_t any;
        if (len == SQZ_PU_BLOCK) {
            any = topk_scan_block(in + i, res != NULL ? res + i : NULL, a, sq, rule.thr);
        } else {
            any = 0;
            for (size_t j = 0; j < len; j++) {
                a[j] = in[i + j] + (res != NULL ? res[i + j] : 0.0f);
                sq[0] += (double)a[j] * a[j];
                any |= (uint32_t)(sqz_pu_abs_key(a[j]) >= rule.thr);
            }
        }
        if (res != NULL) {
            memcpy(res + i, a, len * sizeof *a);
        }
        if (!any || taken == m) {
            continue;
        }
        for (size_t j = 0; j < len && taken < m; j++) {
            /* Skip groups of 8 without a candidate: at typical densities most are empty. */
            if (j % 8 == 0 && j + 8 <= len) {
                uint32_t group = 0;
                for (size_t g = 0; g < 8; g++) {
                    group |= (uint32_t)(sqz_pu_abs_key(a[j + g]) >= rule.thr);
                }
                if (!group) {
                    j += 7;
                    continue;
                }
            }
            const uint32_t key = sqz_pu_abs_key(a[j]);
            int take = key > rule.thr;
            if (key == rule.thr && rule.ties_left > 0) {
                take = 1;
                rule.ties_left--;
            }
            if (take) {
                sqz_pu_store_u32(idx_out + 4 * taken, (uint32_t)(i + j));
                sqz_pu_store_f32(val_out + 4 * taken, a[j]);
                taken++;
                sel_sq += (double)a[j] * a[j];
                if (res != NULL) {
                    res[i + j] = 0.0f;
                }
            }
        }
    }
    /* Both counts come from the same keys, so this holds by construction. */
    if (taken != m) {
        return SQZ_ERR_INTERNAL;
    }
    sqz_pu_store_u32(out, (uint32_t)m);
    double norm2_in = 0.0;
    for (int l = 0; l < 8; l++) {
        norm2_in += sq[l];
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
};
