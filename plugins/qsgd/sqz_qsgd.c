/*
 * "qsgd": QSGD stochastic quantization (Alistarh, Grubic, Li, Tomioka, Vojnovic, NeurIPS 2017),
 * with the practical fixed-width encoding of ALGORITHMS.md section 5.1.
 *
 * a = in + residual is cut into buckets of QSGD_BUCKET elements (the last one may be short).  Per
 * bucket v with s = QSGD_LEVELS levels and norm = ||v||_2 (QSGD_NORM=l2, the paper) or max |v_i|
 * (QSGD_NORM=max, the common practical variant), each element is sent as its sign and a level
 *   r = |v_i| / norm * s,   l = floor(r) + Bernoulli(r - floor(r)),   l in [0, s]
 * and decoded as sign * l * (norm / s) (float; qsgd_decode_one, the same on both sides).
 * E[decoded] = v (unbiased) and E||decoded - v||^2 <= min(d / s^2, sqrt(d) / s) ||v||^2.
 * The Bernoulli draw compares r - floor(r) with a counter-based hash of (seed, rank, seq, stage,
 * element index), so a call is reproducible and ranks and stages draw independent noise.
 * Float rounding: norm is rounded to f32; a bucket whose norm is too small for s / norm to be a
 * finite float sends norm 0 (everything stays in the residual), one whose ||v||_2 overflows f32
 * sends the largest safe norm and clamps its levels to s; both are biased, both are far outside
 * the range of gradients.  Error feedback is optional (QSGD needs none): residual = a - decoded.
 *
 * Parameters: QSGD_LEVELS (s, 1..255), QSGD_BUCKET (d, 8..2^20), QSGD_NORM (l2|max).
 *
 * Wire format (little-endian), a deterministic function of (n, s, d): nb = ceil(n / d) f32 norms
 * (finite, >= 0), then n codes of b = 1 + L bits packed LSB-first (L = ceil(log2(s + 1))): code
 * bits [0, L) hold the level (<= s), bit L the sign (1: negative); padding bits zero.
 * 4 * nb + ceil(n * b / 8) bytes, e.g. 5 + 32/512 bits per element for s = 15, d = 512.
 * Exchange: SQZ_EXCHANGE_REDUCE_SCATTER: QSGD messages cannot be summed, so each chunk is decoded
 * and summed by its owner and the sum is quantized again (stage 1, its own noise; still unbiased).
 *
 * What a shim cannot know: nothing essential, QSGD is bucket-wise; the paper leaves small layers
 * (and CGX 1-D layers) uncompressed, which needs layer boundaries the engine does not see.
 *
 * Implementation: one pass over memory, bucket by bucket: the bucket's statistics (finiteness,
 * sum a^2, max |a|) then its encode, while it sits in cache.  The kernels are C loops over fixed
 * blocks of 64 elements, built twice (baseline and AVX2, chosen at run time): the same operations
 * in the same order, so payloads are bit-identical.  On a non-finite bucket, the buckets already
 * written get their residual back (residual_new + decoded - in) before SQZ_ERR_NONFINITE.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"

enum { QSGD_NORM_L2 = 0, QSGD_NORM_MAX = 1 };

/** Config struct filled by the core from qsgd_params. */
typedef struct qsgd_config {
    int64_t levels; /* QSGD_LEVELS: s, 1..255 */
    int64_t bucket; /* QSGD_BUCKET: elements per norm */
    int     norm;   /* QSGD_NORM: QSGD_NORM_L2 or QSGD_NORM_MAX */
} qsgd_config_t;

static const sqz_param_def_v1_t qsgd_params[] = {
    {
        .name = "QSGD_LEVELS",
        .type = SQZ_PARAM_INT,
        .default_value = "15",
        .min = 1,
        .max = 255,
        .offset = offsetof(qsgd_config_t, levels),
        .help = "quantization levels s per sign: 1 + ceil(log2(s + 1)) bits per element",
    },
    {
        .name = "QSGD_BUCKET",
        .type = SQZ_PARAM_INT,
        .default_value = "512",
        .min = 8,
        .max = 1048576,
        .offset = offsetof(qsgd_config_t, bucket),
        .help = "elements per bucket (each bucket sends its own f32 norm)",
    },
    {
        .name = "QSGD_NORM",
        .type = SQZ_PARAM_ENUM,
        .default_value = "l2",
        .choices = "l2|max",
        .offset = offsetof(qsgd_config_t, norm),
        .help = "bucket norm the levels divide: l2 (the paper's ||v||_2) or max (max |v_i|)",
    },
};

typedef struct qsgd_state {
    uint32_t s;      /* levels */
    unsigned lbits;  /* L = ceil(log2(s + 1)): level bits */
    unsigned b;      /* code bits, 1 + L (2..9) */
    int      check;  /* 1 when some L-bit level exceeds s, so decompress must look at levels */
    size_t   bucket;
    int      norm;
    uint64_t seed;
    int      rank;
} qsgd_state_t;

/* Codes are staged in tiles of this many elements: a multiple of 8 (each tile starts on a byte of
 * the packed stream) and of SQZ_PU_BLOCK, small enough to live on the stack. */
#define QSGD_TILE 1024

static sqz_status_t qsgd_create(const void *config, const sqz_compressor_env_v1_t *env,
                                void **state)
{
    const qsgd_config_t *cfg = (const qsgd_config_t *)config;
    if (cfg == NULL || cfg->levels < 1 || cfg->levels > 255 || cfg->bucket < 8 ||
        cfg->bucket > ((int64_t)1 << 20) ||
        (cfg->norm != QSGD_NORM_L2 && cfg->norm != QSGD_NORM_MAX)) {
        return SQZ_ERR_INVALID_PARAM;
    }
    qsgd_state_t *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return SQZ_ERR_NO_MEMORY;
    }
    st->s = (uint32_t)cfg->levels;
    st->lbits = 0;
    while ((1u << st->lbits) < st->s + 1u) {
        st->lbits++;
    }
    st->b = 1 + st->lbits;
    st->check = st->s != (1u << st->lbits) - 1u;
    st->bucket = (size_t)cfg->bucket;
    st->norm = cfg->norm;
    st->seed = env != NULL ? env->seed : 0;
    st->rank = env != NULL ? env->rank : 0;
    *state = st;
    return SQZ_OK;
}

static void qsgd_destroy(void *state)
{
    free(state);
}

/* Payload layout for n elements.  \return 0 when the size does not fit in size_t. */
static int qsgd_layout(const qsgd_state_t *st, size_t n, size_t *nb, size_t *total)
{
    return sqz_pu_bucket_layout(n, st->bucket, st->b, nb, total);
}

static size_t qsgd_max_payload(void *state, size_t n)
{
    size_t nb, total;
    if (state == NULL || !qsgd_layout((const qsgd_state_t *)state, n, &nb, &total)) {
        return SIZE_MAX;
    }
    return total;
}

/** The decoded value of (level, sign) under scale = norm / s: the single definition used by
 *  compress (for the residual) and decompress, so that decode + residual == a up to rounding. */
static inline float qsgd_decode_one(float scale, uint32_t level, uint32_t sign)
{
    return sqz_pu_bits_f32(sqz_pu_f32_bits((float)level * scale) | (sign << 31));
}

/* \return scale = norm / s, as both sides compute it. */
static inline float qsgd_scale(float norm, uint32_t s)
{
    return norm / (float)s;
}

/* The f32 norm sent for a bucket whose exact norm is nd >= 0: every decoded value, s * scale
 * included, is finite and s / norm is a finite float (else 0: the bucket sends zeros). */
static float qsgd_norm_f32(double nd, uint32_t s)
{
    if (!(nd > 0.0)) {
        return 0.0f;
    }
    float norm = nd >= (double)FLT_MAX ? FLT_MAX : (float)nd;
    for (int i = 0; i < 64 && !sqz_pu_is_finite_f32(qsgd_decode_one(qsgd_scale(norm, s), s, 0));
         i++) {
        norm = nextafterf(norm, 0.0f);
    }
    if (!sqz_pu_is_finite_f32(qsgd_decode_one(qsgd_scale(norm, s), s, 0)) ||
        !sqz_pu_is_finite_f32((float)s / norm)) {
        return 0.0f;
    }
    return norm;
}

/* ---------------------------------------------------------------------------------------------
 * Block kernels: SQZ_PU_BLOCK elements through restrict pointers, so that they vectorize at -O2.
 * Sums keep 8 lanes (element j goes to lane j % 8), combined in a fixed order.
 * ------------------------------------------------------------------------------------------- */

/* Statistics of one block: per-lane sum a^2 (double: a^2 overflows float) and max |a| bits.
 * \return nonzero when some a is NaN or Inf. */
static inline uint32_t qsgd_stats_block(const float *restrict a, double *restrict sq,
                                        uint32_t *restrict mx)
{
    uint32_t bad = 0;
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int k = 0; k < 8; k++) {
            const float x = a[j + k];
            const uint32_t key = sqz_pu_abs_key(x);
            bad |= (uint32_t)(key >= SQZ_PU_F32_INF_BITS);
            mx[k] = key > mx[k] ? key : mx[k];
            sq[k] += (double)x * (double)x;
        }
    }
    return bad;
}

/* Encodes one block: level, sign and error a - decoded per element.  inv = s / norm (0 for a
 * zero norm), so r = |a| * inv; l = floor(r) + (u < r - floor(r)) with u uniform in [0, 1) from
 * the hash is floor(r) + Bernoulli(r - floor(r)) (r - floor(r) is exact in float). */
static inline void qsgd_encode_block(const float *restrict a, uint32_t key, uint32_t first,
                                     float inv, float scale, uint32_t s, uint8_t *restrict lev,
                                     uint8_t *restrict sgn, float *restrict err)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        const uint32_t bits = sqz_pu_f32_bits(a[j]);
        const uint32_t sb = bits >> 31;
        const float r = sqz_pu_bits_f32(bits & 0x7fffffffu) * inv;
        const int32_t f = (int32_t)r;
        const float frac = r - (float)f;
        const float u = sqz_pu_hash_f32(key, first + (uint32_t)j);
        uint32_t l = (uint32_t)f + (uint32_t)(u < frac);
        /* r exceeds s by a rounding at most (|a| <= norm up to the rounding of the norm). */
        l = l < s ? l : s;
        lev[j] = (uint8_t)l;
        sgn[j] = (uint8_t)sb;
        err[j] = a[j] - qsgd_decode_one(scale, l, sb);
    }
}

/* out[j] += decoded value of (lev[j], sgn[j]) for one block. */
static inline void qsgd_add_block(float *restrict out, const uint8_t *restrict lev,
                                  const uint8_t *restrict sgn, float scale)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j++) {
        out[j] += qsgd_decode_one(scale, lev[j], sgn[j]);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Code packing: the layout of sqz_pu_pack_bits() (LSB-first, 8 codes in b bytes), extended to
 * b = 9, with code = level | sign << L.  Specialized per b (a literal b turns the shifts into
 * constants and the byte copies into fixed-size loads and stores); b = 8 (s = 64..127) is one
 * byte per code and b = 4 (s = 4..7) two codes per byte, in vectorizable loops.  n codes take
 * sqz_pu_packed_bytes(n, b) bytes; pack writes exactly those, unpack reads no more.
 * ------------------------------------------------------------------------------------------- */
/* k <= 8 bytes, little-endian, as whole loads and stores (a literal k folds to one or a few;
 * a memcpy through the stack would stall on store forwarding). */
static inline __attribute__((always_inline)) uint64_t qsgd_load_le(const uint8_t *p, size_t k)
{
    uint64_t v = 0;
    size_t o = 0;
    if (k >= 8) {
        return sqz_pu_load_u64(p);
    }
    if (k - o >= 4) {
        v = sqz_pu_load_u32(p);
        o = 4;
    }
    if (k - o >= 2) {
        v |= (uint64_t)sqz_pu_load_u16(p + o) << (8 * o);
        o += 2;
    }
    if (k - o >= 1) {
        v |= (uint64_t)p[o] << (8 * o);
    }
    return v;
}

static inline __attribute__((always_inline)) void qsgd_store_le(uint8_t *p, uint64_t v, size_t k)
{
    size_t o = 0;
    if (k >= 8) {
        sqz_pu_store_u64(p, v);
        return;
    }
    if (k - o >= 4) {
        sqz_pu_store_u32(p, (uint32_t)v);
        o = 4;
    }
    if (k - o >= 2) {
        sqz_pu_store_u16(p + o, (uint16_t)(v >> (8 * o)));
        o += 2;
    }
    if (k - o >= 1) {
        p[o] = (uint8_t)(v >> (8 * o));
    }
}

/* Packs m codes of b bits (2 <= b <= 9, a literal at every call site). */
static inline __attribute__((always_inline)) void
qsgd_pack_b(const uint8_t *restrict lev, const uint8_t *restrict sgn, size_t m, unsigned b,
            uint8_t *restrict out)
{
    const unsigned L = b - 1;
    size_t j = 0;
    if (b == 8) {
        for (; j < m; j++) {
            out[j] = (uint8_t)(lev[j] | (sgn[j] << 7));
        }
        return;
    }
    if (b == 4) {
        for (; j + 2 <= m; j += 2) {
            out[j / 2] = (uint8_t)(lev[j] | (sgn[j] << 3) | (lev[j + 1] << 4) | (sgn[j + 1] << 7));
        }
        if (j < m) {
            out[j / 2] = (uint8_t)(lev[j] | (sgn[j] << 3));
        }
        return;
    }
    for (; j + 8 <= m; j += 8) {
        uint64_t acc = 0;
#pragma GCC unroll 8
        for (unsigned q = 0; q < 8; q++) {
            /* b = 9: only bit 0 of the last code fits; its other bits go to the ninth byte. */
            acc |= (uint64_t)(lev[j + q] | ((uint32_t)sgn[j + q] << L)) << (q * b);
        }
        if (b <= 8) {
            qsgd_store_le(out, acc, b);
        } else {
            qsgd_store_le(out, acc, 8);
            out[8] = (uint8_t)((lev[j + 7] | ((uint32_t)sgn[j + 7] << L)) >> 1);
        }
        out += b;
    }
    if (j < m) {
        /* Fewer than 8 codes: at most 7 * 9 = 63 bits. */
        uint64_t acc = 0;
        for (unsigned q = 0; q < m - j; q++) {
            acc |= (uint64_t)(lev[j + q] | ((uint32_t)sgn[j + q] << L)) << (q * b);
        }
        qsgd_store_le(out, acc, ((m - j) * b + 7) / 8);
    }
}

/* Unpacks m codes of b bits (2 <= b <= 9, a literal at every call site). */
static inline __attribute__((always_inline)) void
qsgd_unpack_b(const uint8_t *restrict in, size_t m, unsigned b, uint8_t *restrict lev,
              uint8_t *restrict sgn)
{
    const unsigned L = b - 1;
    const uint32_t lmask = (1u << L) - 1u;
    size_t j = 0;
    if (b == 8) {
        for (; j < m; j++) {
            lev[j] = in[j] & 0x7fu;
            sgn[j] = in[j] >> 7;
        }
        return;
    }
    if (b == 4) {
        for (; j + 2 <= m; j += 2) {
            const uint8_t c = in[j / 2];
            lev[j] = c & 0x7u;
            sgn[j] = (c >> 3) & 1u;
            lev[j + 1] = (c >> 4) & 0x7u;
            sgn[j + 1] = c >> 7;
        }
        if (j < m) {
            lev[j] = in[j / 2] & 0x7u;
            sgn[j] = (in[j / 2] >> 3) & 1u;
        }
        return;
    }
    for (; j + 8 <= m; j += 8) {
        const uint64_t acc = qsgd_load_le(in, b <= 8 ? b : 8);
#pragma GCC unroll 8
        for (unsigned q = 0; q < 8; q++) {
            uint32_t c = (uint32_t)(acc >> (q * b));
            if (b == 9 && q == 7) {
                c |= (uint32_t)in[8] << 1;
            }
            lev[j + q] = (uint8_t)(c & lmask);
            sgn[j + q] = (uint8_t)((c >> L) & 1u);
        }
        in += b;
    }
    if (j < m) {
        const uint64_t acc = qsgd_load_le(in, ((m - j) * b + 7) / 8);
        for (unsigned q = 0; q < m - j; q++) {
            const uint32_t c = (uint32_t)(acc >> (q * b));
            lev[j + q] = (uint8_t)(c & lmask);
            sgn[j + q] = (uint8_t)((c >> L) & 1u);
        }
    }
}

/* Packs m codes (m <= QSGD_TILE + SQZ_PU_BLOCK) into out. */
static inline __attribute__((always_inline)) void qsgd_pack(const qsgd_state_t *st,
                                                            const uint8_t *lev,
                                                            const uint8_t *sgn, size_t m,
                                                            uint8_t *out)
{
    switch (st->b) {
    case 2: qsgd_pack_b(lev, sgn, m, 2, out); break;
    case 3: qsgd_pack_b(lev, sgn, m, 3, out); break;
    case 4: qsgd_pack_b(lev, sgn, m, 4, out); break;
    case 5: qsgd_pack_b(lev, sgn, m, 5, out); break;
    case 6: qsgd_pack_b(lev, sgn, m, 6, out); break;
    case 7: qsgd_pack_b(lev, sgn, m, 7, out); break;
    case 8: qsgd_pack_b(lev, sgn, m, 8, out); break;
    default: qsgd_pack_b(lev, sgn, m, 9, out); break;
    }
}

/* Unpacks m codes from in into levels and signs. */
static inline __attribute__((always_inline)) void qsgd_unpack(const qsgd_state_t *st,
                                                              const uint8_t *in, size_t m,
                                                              uint8_t *lev, uint8_t *sgn)
{
    switch (st->b) {
    case 2: qsgd_unpack_b(in, m, 2, lev, sgn); break;
    case 3: qsgd_unpack_b(in, m, 3, lev, sgn); break;
    case 4: qsgd_unpack_b(in, m, 4, lev, sgn); break;
    case 5: qsgd_unpack_b(in, m, 5, lev, sgn); break;
    case 6: qsgd_unpack_b(in, m, 6, lev, sgn); break;
    case 7: qsgd_unpack_b(in, m, 7, lev, sgn); break;
    case 8: qsgd_unpack_b(in, m, 8, lev, sgn); break;
    default: qsgd_unpack_b(in, m, 9, lev, sgn); break;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Bodies, instantiated for the baseline ISA and for AVX2 below.
 * ------------------------------------------------------------------------------------------- */

/* The hash key of the element block starting at global index i: indices past 2^32 re-key the
 * hash rather than repeat its stream. */
static inline uint32_t qsgd_block_key(uint32_t key, size_t i)
{
    return (i >> 32) ? key ^ (uint32_t)sqz_pu_seed_key(key, 0, (uint64_t)(i >> 32), 0) : key;
}

/* out[from, to) += decoded values; from is a multiple of QSGD_TILE.  The payload is valid. */
static inline __attribute__((always_inline)) void
qsgd_decode_body(const qsgd_state_t *st, const uint8_t *norms, const uint8_t *packed, size_t from,
                 size_t to, float *out)
{
    const size_t B = st->bucket;
    uint8_t lev[QSGD_TILE], sgn[QSGD_TILE];
    for (size_t t0 = from; t0 < to; t0 += QSGD_TILE) {
        const size_t t1 = t0 + QSGD_TILE < to ? t0 + QSGD_TILE : to;
        qsgd_unpack(st, packed + t0 / 8 * st->b, t1 - t0, lev, sgn);
        size_t i = t0;
        while (i < t1) {
            const size_t k = i / B;
            const size_t e = (k + 1) * B < t1 ? (k + 1) * B : t1;
            const float scale = qsgd_scale(sqz_pu_load_f32(norms + 4 * k), st->s);
            for (; i + SQZ_PU_BLOCK <= e; i += SQZ_PU_BLOCK) {
                qsgd_add_block(out + i, lev + (i - t0), sgn + (i - t0), scale);
            }
            for (; i < e; i++) {
                out[i] += qsgd_decode_one(scale, lev[i - t0], sgn[i - t0]);
            }
        }
    }
}

/* \return 1 when every level of the n packed codes is <= s. */
static inline __attribute__((always_inline)) int qsgd_levels_ok_body(const qsgd_state_t *st,
                                                                    const uint8_t *packed,
                                                                    size_t n)
{
    uint8_t lev[QSGD_TILE], sgn[QSGD_TILE];
    const uint8_t s = (uint8_t)st->s;
    for (size_t t0 = 0; t0 < n; t0 += QSGD_TILE) {
        const size_t m = n - t0 < QSGD_TILE ? n - t0 : QSGD_TILE;
        qsgd_unpack(st, packed + t0 / 8 * st->b, m, lev, sgn);
        uint8_t over = 0;
        for (size_t j = 0; j < m; j++) {
            over |= (uint8_t)(lev[j] > s);
        }
        if (over) {
            return 0;
        }
    }
    return 1;
}

static inline __attribute__((always_inline)) sqz_status_t
qsgd_compress_body(const qsgd_state_t *st, sqz_compress_args_v1_t *args, uint8_t *norms,
                   uint8_t *packed, size_t nb)
{
    const size_t n = args->n;
    const float *in = args->in;
    float *res = args->residual;
    const size_t B = st->bucket;
    const uint32_t s = st->s;
    const uint32_t key = (uint32_t)sqz_pu_seed_key(st->seed, st->rank, args->seq, args->stage);
    /* Codes of [p0, p0 + fill) wait in the stage; the slack takes a padded short block. */
    uint8_t lev[QSGD_TILE + SQZ_PU_BLOCK], sgn[QSGD_TILE + SQZ_PU_BLOCK];
    size_t p0 = 0, fill = 0;
    double sq_total = 0.0, err_lanes[8] = {0}, err_tail = 0.0;
    for (size_t k = 0; k < nb; k++) {
        const size_t s0 = k * B;
        const size_t e = s0 + B < n ? s0 + B : n;
        double sq[8] = {0};
        uint32_t mx[8] = {0};
        uint32_t bad = 0;
        for (size_t i = s0; i < e; i += SQZ_PU_BLOCK) {
            float a[SQZ_PU_BLOCK];
            const size_t len = e - i < SQZ_PU_BLOCK ? e - i : SQZ_PU_BLOCK;
            sqz_pu_load_block(in + i, res != NULL ? res + i : NULL, len, a);
            bad |= qsgd_stats_block(a, sq, mx);
        }
        if (bad) {
            if (res != NULL && s0 > 0) {
                /* Give the buckets already written their residual back: res + decoded - in. */
                qsgd_pack(st, lev, sgn, fill, packed + p0 / 8 * st->b);
                qsgd_decode_body(st, norms, packed, 0, s0, res);
                for (size_t i = 0; i < s0; i++) {
                    res[i] -= in[i];
                }
            }
            return SQZ_ERR_NONFINITE;
        }
        double bsq = 0.0;
        uint32_t bmx = 0;
        for (int j = 0; j < 8; j++) {
            bsq += sq[j];
            bmx = mx[j] > bmx ? mx[j] : bmx;
        }
        sq_total += bsq;
        const double nd = st->norm == QSGD_NORM_L2 ? sqrt(bsq) : (double)sqz_pu_bits_f32(bmx);
        const float norm = qsgd_norm_f32(nd, s);
        sqz_pu_store_f32(norms + 4 * k, norm);
        const float scale = qsgd_scale(norm, s);
        const float inv = norm > 0.0f ? (float)s / norm : 0.0f;

        for (size_t i = s0; i < e;) {
            size_t len = e - i < SQZ_PU_BLOCK ? e - i : SQZ_PU_BLOCK;
            len = len < QSGD_TILE - fill ? len : QSGD_TILE - fill;
            float a[SQZ_PU_BLOCK], err[SQZ_PU_BLOCK];
            sqz_pu_load_block(in + i, res != NULL ? res + i : NULL, len, a);
            qsgd_encode_block(a, qsgd_block_key(key, i), (uint32_t)i, inv, scale, s, lev + fill,
                              sgn + fill, err);
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
            if (fill == QSGD_TILE) {
                qsgd_pack(st, lev, sgn, QSGD_TILE, packed + p0 / 8 * st->b);
                p0 += QSGD_TILE;
                fill = 0;
            }
        }
    }
    if (fill > 0) {
        qsgd_pack(st, lev, sgn, fill, packed + p0 / 8 * st->b);
    }
    double norm2_err = err_tail;
    for (int j = 0; j < 8; j++) {
        norm2_err += err_lanes[j];
    }
    args->norm2_in = sq_total;
    args->norm2_err = norm2_err;
    return SQZ_OK;
}

static sqz_status_t qsgd_compress_c(const qsgd_state_t *st, sqz_compress_args_v1_t *args,
                                    uint8_t *norms, uint8_t *packed, size_t nb)
{
    return qsgd_compress_body(st, args, norms, packed, nb);
}

static void qsgd_decode_c(const qsgd_state_t *st, const uint8_t *norms, const uint8_t *packed,
                          size_t n, float *out)
{
    qsgd_decode_body(st, norms, packed, 0, n, out);
}

static int qsgd_levels_ok_c(const qsgd_state_t *st, const uint8_t *packed, size_t n)
{
    return qsgd_levels_ok_body(st, packed, n);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SQZ_PU_NO_SIMD)
#define QSGD_X86 1
/* The same bodies compiled for AVX2 (no FMA: -ffp-contract=off and no "fma" target), so every
 * float operation rounds as in the baseline build and payloads are bit-identical. */
__attribute__((target("avx2"))) static sqz_status_t
qsgd_compress_avx2(const qsgd_state_t *st, sqz_compress_args_v1_t *args, uint8_t *norms,
                   uint8_t *packed, size_t nb)
{
    return qsgd_compress_body(st, args, norms, packed, nb);
}

__attribute__((target("avx2"))) static void qsgd_decode_avx2(const qsgd_state_t *st,
                                                             const uint8_t *norms,
                                                             const uint8_t *packed, size_t n,
                                                             float *out)
{
    qsgd_decode_body(st, norms, packed, 0, n, out);
}

__attribute__((target("avx2"))) static int qsgd_levels_ok_avx2(const qsgd_state_t *st,
                                                                const uint8_t *packed, size_t n)
{
    return qsgd_levels_ok_body(st, packed, n);
}

static int qsgd_have_avx2(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return have;
}
#else
#define QSGD_X86 0
#endif

static sqz_status_t qsgd_compress(void *state, sqz_compress_args_v1_t *args)
{
    const qsgd_state_t *st = (const qsgd_state_t *)state;
    size_t nb, total;
    if (st == NULL || args == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    const size_t n = args->n;
    if (!qsgd_layout(st, n, &nb, &total)) {
        return SQZ_ERR_NOT_SUPPORTED;
    }
    if (args->capacity < total || (n > 0 && (args->in == NULL || args->payload == NULL))) {
        return SQZ_ERR_INVALID_PARAM;
    }
    uint8_t *norms = (uint8_t *)args->payload;
    uint8_t *packed = norms + 4 * nb;
    sqz_status_t r;
#if QSGD_X86
    if (qsgd_have_avx2()) {
        r = qsgd_compress_avx2(st, args, norms, packed, nb);
    } else {
        r = qsgd_compress_c(st, args, norms, packed, nb);
    }
#else
    r = qsgd_compress_c(st, args, norms, packed, nb);
#endif
    if (r == SQZ_OK) {
        args->payload_bytes = total;
    }
    return r;
}

static sqz_status_t qsgd_decompress(void *state, const void *payload, size_t bytes, float *out,
                                    size_t n)
{
    const qsgd_state_t *st = (const qsgd_state_t *)state;
    size_t nb, total;
    if (st == NULL) {
        return SQZ_ERR_INVALID_PARAM;
    }
    if (!qsgd_layout(st, n, &nb, &total) || bytes != total || (bytes > 0 && payload == NULL)) {
        return SQZ_ERR_CORRUPT;
    }
    const uint8_t *norms = (const uint8_t *)payload;
    const uint8_t *packed = norms + 4 * nb;
    /* Validate everything before writing: norms, then levels when an L-bit field can exceed s. */
    for (size_t k = 0; k < nb; k++) {
        const float norm = sqz_pu_load_f32(norms + 4 * k);
        if (!sqz_pu_is_finite_f32(norm) || !(norm >= 0.0f) ||
            !sqz_pu_is_finite_f32(qsgd_decode_one(qsgd_scale(norm, st->s), st->s, 0))) {
            return SQZ_ERR_CORRUPT;
        }
    }
#if QSGD_X86
    const int avx2 = qsgd_have_avx2();
#endif
    if (st->check && n > 0) {
#if QSGD_X86
        const int ok = avx2 ? qsgd_levels_ok_avx2(st, packed, n) : qsgd_levels_ok_c(st, packed, n);
#else
        const int ok = qsgd_levels_ok_c(st, packed, n);
#endif
        if (!ok) {
            return SQZ_ERR_CORRUPT;
        }
    }
    if (out == NULL || n == 0) {
        return SQZ_OK;
    }
#if QSGD_X86
    if (avx2) {
        qsgd_decode_avx2(st, norms, packed, n, out);
        return SQZ_OK;
    }
#endif
    qsgd_decode_c(st, norms, packed, n, out);
    return SQZ_OK;
}

const sqz_compressor_v1_t sqz_compressor_qsgd = {
    .abi = SQZ_COMPRESSOR_ABI_V1,
    .size = sizeof(sqz_compressor_v1_t),
    .name = "qsgd",
    .description = "QSGD stochastic s-level quantization per bucket (unbiased, l2 or max norm)",
    .exchange = SQZ_EXCHANGE_REDUCE_SCATTER,
    .params = qsgd_params,
    .nparams = sizeof qsgd_params / sizeof qsgd_params[0],
    .config_size = sizeof(qsgd_config_t),
    .create = qsgd_create,
    .query = NULL,
    .max_payload = qsgd_max_payload,
    .compress = qsgd_compress,
    .decompress = qsgd_decompress,
    .destroy = qsgd_destroy,
    .flags = SQZ_COMPRESSOR_FIXED_PAYLOAD | SQZ_COMPRESSOR_UNBIASED |
             SQZ_COMPRESSOR_EF_NONE | SQZ_COMPRESSOR_EF14_DIVERGES |
             SQZ_COMPRESSOR_EF21_DIVERGES,
};
