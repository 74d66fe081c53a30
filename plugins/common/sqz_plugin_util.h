/*
 * Header-only helpers shared by the built-in compressors (plugins/<name>/sqz_<name>.c).
 *
 * Everything here is `static inline` and prefixed sqz_pu_: a plugin is written against
 * <squeeze/compressor_v1.h> and this header only, and links against nothing of the core.
 *
 * Performance note: the project builds with -O2, where GCC's loop vectorizer uses its "very cheap"
 * cost model: it only vectorizes loops whose trip count is a known multiple of the vector width
 * and whose pointers cannot alias.  The hot kernels below therefore work on fixed blocks of
 * SQZ_PU_BLOCK elements through `restrict` pointers, and callers handle the short tail with the
 * generic (scalar) variants.
 */
#ifndef SQZ_PLUGIN_UTIL_H
#define SQZ_PLUGIN_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

/** Elements per fixed-size kernel block (a multiple of 8 and of every SIMD width). */
#define SQZ_PU_BLOCK 64

/* --------------------------------------------------------------------------------------------
 * Little-endian loads and stores into byte buffers.  Unaligned-safe; the wire format is
 * little-endian on every host.
 * ------------------------------------------------------------------------------------------ */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SQZ_PU_LITTLE_ENDIAN 1
#else
#define SQZ_PU_LITTLE_ENDIAN 0
#endif

static inline uint32_t sqz_pu_load_u32(const void *p)
{
#if SQZ_PU_LITTLE_ENDIAN
    /* memcpy keeps the access unaligned-safe and lets loops around it vectorize. */
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    const uint8_t *b = (const uint8_t *)p;
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
           ((uint32_t)b[3] << 24);
#endif
}

static inline void sqz_pu_store_u32(void *p, uint32_t v)
{
#if SQZ_PU_LITTLE_ENDIAN
    memcpy(p, &v, sizeof v);
#else
    uint8_t *b = (uint8_t *)p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
#endif
}

static inline uint64_t sqz_pu_load_u64(const void *p)
{
    const uint8_t *b = (const uint8_t *)p;
    return (uint64_t)sqz_pu_load_u32(b) | ((uint64_t)sqz_pu_load_u32(b + 4) << 32);
}

static inline void sqz_pu_store_u64(void *p, uint64_t v)
{
    uint8_t *b = (uint8_t *)p;
    sqz_pu_store_u32(b, (uint32_t)v);
    sqz_pu_store_u32(b + 4, (uint32_t)(v >> 32));
}

static inline uint16_t sqz_pu_load_u16(const void *p)
{
    const uint8_t *b = (const uint8_t *)p;
    return (uint16_t)(b[0] | (b[1] << 8));
}

static inline void sqz_pu_store_u16(void *p, uint16_t v)
{
    uint8_t *b = (uint8_t *)p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}

/** \return the IEEE-754 bits of x. */
static inline uint32_t sqz_pu_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/** \return the float whose IEEE-754 bits are u. */
static inline float sqz_pu_bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline float sqz_pu_load_f32(const void *p)
{
    return sqz_pu_bits_f32(sqz_pu_load_u32(p));
}

static inline void sqz_pu_store_f32(void *p, float v)
{
    sqz_pu_store_u32(p, sqz_pu_f32_bits(v));
}

/* --------------------------------------------------------------------------------------------
 * Finiteness.  Bit tests rather than isfinite() so that they vectorize and stay correct under
 * -ffinite-math-only.
 * ------------------------------------------------------------------------------------------ */

/** The bits of an infinite float with the sign cleared; |x| bits >= this means NaN or Inf. */
#define SQZ_PU_F32_INF_BITS 0x7f800000u

/** \return 1 when x is neither NaN nor +-Inf. */
static inline int sqz_pu_is_finite_f32(float x)
{
    return (sqz_pu_f32_bits(x) & 0x7fffffffu) < SQZ_PU_F32_INF_BITS;
}

/** \return the bits of |x|: for finite x these order like |x| (as unsigned integers). */
static inline uint32_t sqz_pu_abs_key(float x)
{
    return sqz_pu_f32_bits(x) & 0x7fffffffu;
}

/** \return 1 when every x[i] (i < n) is finite.  Block kernel plus scalar tail. */
static inline int sqz_pu_all_finite_f32(const float *x, size_t n)
{
    uint32_t bad = 0;
    size_t i = 0;
    for (; i + SQZ_PU_BLOCK <= n; i += SQZ_PU_BLOCK) {
        const float *restrict xb = x + i;
        for (int j = 0; j < SQZ_PU_BLOCK; j++) {
            bad |= (uint32_t)(sqz_pu_abs_key(xb[j]) >= SQZ_PU_F32_INF_BITS);
        }
        if (bad) {
            return 0;
        }
    }
    for (; i < n; i++) {
        bad |= (uint32_t)(sqz_pu_abs_key(x[i]) >= SQZ_PU_F32_INF_BITS);
    }
    return bad == 0;
}

/* --------------------------------------------------------------------------------------------
 * Deterministic randomness.  Every rank that seeds with the same (seed, rank, seq, stage) gets
 * the same stream, so runs are reproducible; differing ranks get independent streams.
 * ------------------------------------------------------------------------------------------ */

/** One splitmix64 step: advances *s and returns a well-mixed 64-bit value. */
static inline uint64_t sqz_pu_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/** \return a 64-bit key mixing the global seed, the rank, the call counter and the stage. */
static inline uint64_t sqz_pu_seed_key(uint64_t seed, int rank, uint64_t seq, int stage)
{
    uint64_t s = seed;
    uint64_t k = sqz_pu_splitmix64(&s);
    s = k ^ ((uint64_t)(uint32_t)rank << 32 | (uint32_t)stage);
    k = sqz_pu_splitmix64(&s);
    s = k ^ seq;
    return sqz_pu_splitmix64(&s);
}

/** xoshiro128+ state: a fast sequential generator for floats.  Never all zero once seeded. */
typedef struct sqz_pu_rng {
    uint32_t s[4];
} sqz_pu_rng_t;

/** Seeds from a 64-bit key (splitmix64 expansion, so any key, zero included, is fine). */
static inline void sqz_pu_rng_seed(sqz_pu_rng_t *r, uint64_t key)
{
    uint64_t s = key;
    const uint64_t a = sqz_pu_splitmix64(&s);
    const uint64_t b = sqz_pu_splitmix64(&s);
    r->s[0] = (uint32_t)a;
    r->s[1] = (uint32_t)(a >> 32);
    r->s[2] = (uint32_t)b;
    r->s[3] = (uint32_t)(b >> 32);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) {
        r->s[0] = 1;
    }
}

/** Seeds from (seed, rank, seq, stage), see sqz_pu_seed_key(). */
static inline void sqz_pu_rng_seed4(sqz_pu_rng_t *r, uint64_t seed, int rank, uint64_t seq,
                                    int stage)
{
    sqz_pu_rng_seed(r, sqz_pu_seed_key(seed, rank, seq, stage));
}

static inline uint32_t sqz_pu_rotl32(uint32_t x, int k)
{
    return (x << k) | (x >> (32 - k));
}

/** \return the next 32 random bits (xoshiro128+: the upper bits are the good ones). */
static inline uint32_t sqz_pu_rng_u32(sqz_pu_rng_t *r)
{
    const uint32_t result = r->s[0] + r->s[3];
    const uint32_t t = r->s[1] << 9;
    r->s[2] ^= r->s[0];
    r->s[3] ^= r->s[1];
    r->s[1] ^= r->s[2];
    r->s[0] ^= r->s[3];
    r->s[2] ^= t;
    r->s[3] = sqz_pu_rotl32(r->s[3], 11);
    return result;
}

/** \return a uniform float in [0, 1) with 24 random bits. */
static inline float sqz_pu_rng_f32(sqz_pu_rng_t *r)
{
    return (float)(sqz_pu_rng_u32(r) >> 8) * 0x1p-24f;
}

/** \return a uniform integer in [0, bound), bound >= 1 (the tiny modulo bias is irrelevant). */
static inline uint64_t sqz_pu_rng_below(sqz_pu_rng_t *r, uint64_t bound)
{
    /* Two statements: the order of the draws must not depend on the compiler. */
    const uint64_t hi = sqz_pu_rng_u32(r);
    const uint64_t x = (hi << 32) | sqz_pu_rng_u32(r);
    return x % bound;
}

/** Counter-based 32-bit hash (murmur3 finalizer of key + i * golden ratio): a random value per
 *  element index that needs no sequential state, so per-element loops vectorize. */
static inline uint32_t sqz_pu_hash32(uint32_t key, uint32_t i)
{
    uint32_t x = key + i * 0x9e3779b9u;
    x ^= x >> 16;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    x *= 0xc2b2ae35u;
    x ^= x >> 16;
    return x;
}

/** \return a uniform float in [0, 1) (24 bits) for element i under key. */
static inline float sqz_pu_hash_f32(uint32_t key, uint32_t i)
{
    return (float)(sqz_pu_hash32(key, i) >> 8) * 0x1p-24f;
}

/* --------------------------------------------------------------------------------------------
 * Bit packing of b-bit codes (1 <= b <= 8), LSB-first: code i occupies bits [i*b, (i+1)*b) of the
 * byte stream, bit j of a byte being (byte >> j) & 1.  n codes take ceil(n*b/8) bytes.  Groups of
 * 8 codes take exactly b bytes, so a stream cut at a multiple of 8 codes is byte-aligned.
 * ------------------------------------------------------------------------------------------ */

/** \return bytes needed for n codes of b bits. */
static inline size_t sqz_pu_packed_bytes(size_t n, unsigned b)
{
    return (n / 8) * b + ((n % 8) * b + 7) / 8;
}

/* Generic group of 8 codes, any b: through a 64-bit accumulator (8 * b <= 64 bits). */
static inline void sqz_pu_pack8_any_(uint64_t x, unsigned b, uint8_t *out)
{
    uint64_t acc = 0;
    for (unsigned j = 0; j < 8; j++) {
        acc |= ((x >> (8 * j)) & 0xffu) << (j * b);
    }
    for (unsigned j = 0; j < b; j++) {
        out[j] = (uint8_t)(acc >> (8 * j));
    }
}

static inline uint64_t sqz_pu_unpack8_any_(const uint8_t *in, unsigned b)
{
    uint64_t acc = 0;
    for (unsigned j = 0; j < b; j++) {
        acc |= (uint64_t)in[j] << (8 * j);
    }
    const uint64_t mask = (1ull << b) - 1;
    uint64_t x = 0;
    for (unsigned j = 0; j < 8; j++) {
        x |= ((acc >> (j * b)) & mask) << (8 * j);
    }
    return x;
}

/* Packs 8 one-byte codes (each < 2^b) held little-endian in x into b bytes at out (SWAR). */
static inline void sqz_pu_pack8_(uint64_t x, unsigned b, uint8_t *out)
{
    switch (b) {
    case 1:
        /* Each byte is 0/1: the multiply gathers byte j's bit into bit 56 + j. */
        out[0] = (uint8_t)((x * 0x0102040810204080ull) >> 56);
        return;
    case 2:
        x = (x | (x >> 6)) & 0x000f000f000f000full;
        x = (x | (x >> 12)) & 0x000000ff000000ffull;
        out[0] = (uint8_t)x;
        out[1] = (uint8_t)(x >> 32);
        return;
    case 4:
        x = (x | (x >> 4)) & 0x00ff00ff00ff00ffull;
        x = (x | (x >> 8)) & 0x0000ffff0000ffffull;
        x = x | (x >> 16);
        out[0] = (uint8_t)x;
        out[1] = (uint8_t)(x >> 8);
        out[2] = (uint8_t)(x >> 32);
        out[3] = (uint8_t)(x >> 40);
        return;
    /* Odd widths: a literal b lets the compiler unroll the generic loops. */
    case 3:
        sqz_pu_pack8_any_(x, 3, out);
        return;
    case 5:
        sqz_pu_pack8_any_(x, 5, out);
        return;
    case 6:
        sqz_pu_pack8_any_(x, 6, out);
        return;
    case 7:
        sqz_pu_pack8_any_(x, 7, out);
        return;
    default:
        sqz_pu_pack8_any_(x, b, out);
        return;
    }
}

/* Unpacks b bytes at in into 8 one-byte codes, returned little-endian (SWAR). */
static inline uint64_t sqz_pu_unpack8_(const uint8_t *in, unsigned b)
{
    uint64_t x;
    switch (b) {
    case 1:
        /* Broadcast the byte, keep bit j in byte j, then turn each nonzero byte into 1. */
        x = ((uint64_t)in[0] * 0x0101010101010101ull) & 0x8040201008040201ull;
        return ((x + 0x7f7f7f7f7f7f7f7full) >> 7) & 0x0101010101010101ull;
    case 2:
        x = (uint64_t)in[0] | ((uint64_t)in[1] << 32);
        x = (x | (x << 12)) & 0x000f000f000f000full;
        return (x | (x << 6)) & 0x0303030303030303ull;
    case 4:
        x = (uint64_t)sqz_pu_load_u32(in);
        x = (x | (x << 16)) & 0x0000ffff0000ffffull;
        x = (x | (x << 8)) & 0x00ff00ff00ff00ffull;
        return (x | (x << 4)) & 0x0f0f0f0f0f0f0f0full;
    case 3:
        return sqz_pu_unpack8_any_(in, 3);
    case 5:
        return sqz_pu_unpack8_any_(in, 5);
    case 6:
        return sqz_pu_unpack8_any_(in, 6);
    case 7:
        return sqz_pu_unpack8_any_(in, 7);
    default:
        return sqz_pu_unpack8_any_(in, b);
    }
}

/** Packs n codes (each < 2^b; higher bits are masked off) into sqz_pu_packed_bytes(n, b) bytes at
 *  out.  Writes exactly that many bytes.  codes and out must not overlap. */
static inline void sqz_pu_pack_bits(const uint8_t *restrict codes, size_t n, unsigned b,
                                    uint8_t *restrict out)
{
    const uint64_t mask = 0x0101010101010101ull * ((1u << b) - 1u);
    size_t i = 0;
    if (b == 8) {
        memcpy(out, codes, n);
        return;
    }
    for (; i + 8 <= n; i += 8) {
        sqz_pu_pack8_(sqz_pu_load_u64(codes + i) & mask, b, out);
        out += b;
    }
    if (i < n) {
        /* A short last group: pack into a full group, then store only the bytes it covers. */
        uint8_t tmp8[8] = {0};
        uint8_t packed[8];
        memcpy(tmp8, codes + i, n - i);
        sqz_pu_pack8_(sqz_pu_load_u64(tmp8) & mask, b, packed);
        memcpy(out, packed, ((n - i) * b + 7) / 8);
    }
}

/** Unpacks n codes of b bits from in (which holds sqz_pu_packed_bytes(n, b) bytes; nothing past
 *  them is read) into n bytes at codes. */
static inline void sqz_pu_unpack_bits(const uint8_t *restrict in, size_t n, unsigned b,
                                      uint8_t *restrict codes)
{
    size_t i = 0;
    if (b == 8) {
        memcpy(codes, in, n);
        return;
    }
    for (; i + 8 <= n; i += 8) {
        sqz_pu_store_u64(codes + i, sqz_pu_unpack8_(in, b));
        in += b;
    }
    if (i < n) {
        uint8_t packed[8] = {0};
        uint8_t tmp8[8];
        memcpy(packed, in, ((n - i) * b + 7) / 8);
        sqz_pu_store_u64(tmp8, sqz_pu_unpack8_(packed, b));
        memcpy(codes + i, tmp8, n - i);
    }
}

/* --------------------------------------------------------------------------------------------
 * Small numeric helpers.
 * ------------------------------------------------------------------------------------------ */

/** \return ceil(x) for 0 <= x < 2^63 as size_t, without libm. */
static inline size_t sqz_pu_ceil_size(double x)
{
    const size_t t = (size_t)x;
    return ((double)t < x) ? t + 1 : t;
}

/** Entries a sparsifier keeps of n at `density`: max(1, ceil(density * n)) clamped to n, 0 for
 *  n == 0 (top-k's k, random-k's k, FedZip's z). */
static inline size_t sqz_pu_density_count(double density, size_t n)
{
    if (n == 0) {
        return 0;
    }
    const size_t k = sqz_pu_ceil_size(density * (double)n);
    return k < 1 ? 1 : (k < n ? k : n);
}

/** Grow-only scratch: makes *buf hold at least `need` bytes (contents not kept), reallocating
 *  only when *cap is smaller.  \return *buf, or NULL on allocation failure (old buffer kept). */
static inline void *sqz_pu_grow(void **buf, size_t *cap, size_t need)
{
    if (*buf != NULL && *cap >= need) {
        return *buf;
    }
    free(*buf);
    *buf = NULL;
    *cap = 0;
    void *p = malloc(need ? need : 1);
    if (p == NULL) {
        return NULL;
    }
    *buf = p;
    *cap = need;
    return p;
}

/* --------------------------------------------------------------------------------------------
 * Bucketed quantizers (qsgd, terngrad): one f32 per bucket, then b-bit codes.
 * ------------------------------------------------------------------------------------------ */

/** The payload of n elements in buckets of `bucket`, one 4-byte value per bucket then n packed
 *  b-bit codes: *nb buckets and *total bytes.  \return 0 when the size does not fit in size_t. */
static inline int sqz_pu_bucket_layout(size_t n, size_t bucket, unsigned b, size_t *nb,
                                       size_t *total)
{
    if (n > SIZE_MAX / 16) {
        return 0;
    }
    *nb    = n / bucket + (n % bucket != 0);
    *total = 4 * *nb + sqz_pu_packed_bytes(n, b);
    return 1;
}

/** a = in (+ res) for len <= SQZ_PU_BLOCK elements; a short block is padded with zeros, which
 *  the bucketed quantizers encode as their zero code and which add nothing to statistics. */
static inline void sqz_pu_load_block(const float *in, const float *res, size_t len,
                                     float *restrict a)
{
    if (len == SQZ_PU_BLOCK) {
        if (res != NULL) {
            const float *restrict x = in;
            const float *restrict y = res;
            for (int j = 0; j < SQZ_PU_BLOCK; j++) {
                a[j] = x[j] + y[j];
            }
        } else {
            memcpy(a, in, SQZ_PU_BLOCK * sizeof *a);
        }
        return;
    }
    for (size_t j = 0; j < len; j++) {
        a[j] = in[j] + (res != NULL ? res[j] : 0.0f);
    }
    for (size_t j = len; j < SQZ_PU_BLOCK; j++) {
        a[j] = 0.0f;
    }
}

/** lanes[j % 8] += err[j]^2 (in double) over one block of SQZ_PU_BLOCK elements. */
static inline void sqz_pu_sq_lanes8(const float *restrict err, double *restrict lanes)
{
    for (int j = 0; j < SQZ_PU_BLOCK; j += 8) {
        for (int k = 0; k < 8; k++) {
            lanes[k] += (double)err[j + k] * (double)err[j + k];
        }
    }
}

#endif /* SQZ_PLUGIN_UTIL_H */
