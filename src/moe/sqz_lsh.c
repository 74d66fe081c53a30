/* Cross-polytope LSH of tokens and the LSH encoder (centroid per bucket).
 *
 * Choices the paper leaves open, made here (docs/methods.md gives the reasons at length):
 *  - Rotation: each of the L hash functions projects a token into d' dimensions (SQZ_LSH_DIM,
 *    default 4) with a d' x d Gaussian matrix whose rows are orthonormalized (a partial random
 *    rotation), drawn from SQZ_SEED: every rank derives the same bits.  d' << d keeps the cost at
 *    L * d' multiply-adds per element (hashing must stay well under the time the bytes would take
 *    on the wire) and the bucket count (2d')^L at a size where clusters are not split apart.
 *  - Code of one hash: argmax over the 2d' signed axes of the projection, as in Eq. 3.
 *  - Combining the L codes: concatenation into one 64-bit id (the AND construction: two tokens
 *    share a bucket only when all L codes agree; more hashes, more buckets), as the paper's
 *    ablation implies.
 *  - Sampling: the hash reads SQZ_LSH_SAMPLE seeded coordinates of each token (default 64; all
 *    when the token is shorter), so its cost per token does not grow with d while the bytes do:
 *    at d = 256 hashing every coordinate costs about as much time as 1 Gbit/s takes to send the
 *    token.  A random subset of coordinates keeps the angles of dense activations roughly (each
 *    coordinate carries a share of every direction), and clusters apart in d dimensions are apart
 *    in the subset too.
 *  - Normalization: none is needed (argmax of a projection is scale-invariant), but the block's
 *    mean is subtracted first: MoE activations share a large common component, and an angular
 *    hash of uncentered tokens would put nearly all of them in one bucket.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_lsh.h"
#include "sqz_plugin_util.h"

struct sqz_lsh {
    size_t    width;
    size_t    ns;                /* coordinates hashed (sampled from width) */
    uint32_t *cols;              /* ns sorted coordinates */
    int       rot_dim, hashes;
    unsigned  bits;
    size_t    nproj;             /* hashes * rot_dim */
    float    *proj;              /* nproj rows of ns: the matrices, row-major */
    /* scratch, grown on demand and kept */
    float    *row, *acc, *mean;  /* ns, nproj, ns */
    double   *msum;              /* ns */
    uint64_t *keys;
    size_t    keycap;
    uint32_t *group, *first, *count;
    size_t    groupcap, firstcap, countcap;
    uint32_t *slots;
    size_t    slotcap;
};

unsigned sqz_lsh_code_bits(int rot_dim)
{
    unsigned b = 0;
    while ((2ull * (unsigned)rot_dim) > (1ull << b)) {
        b++;
    }
    return b;
}

/* A standard normal from the shared generator (Box-Muller in double: the same bits everywhere). */
static double sqz_lsh_gauss(uint64_t *s)
{
    const double u1 = ((double)(sqz_pu_splitmix64(s) >> 11) + 1.0) * 0x1p-53;
    const double u2 = (double)(sqz_pu_splitmix64(s) >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Draws the matrices: Gaussian rows, Gram-Schmidt inside each hash function (rows of one hash are
 * orthonormal when d' <= d; beyond that the extra rows are only normalized). */
static void sqz_lsh_draw(sqz_lsh_t *l, uint64_t seed)
{
    const size_t d = l->ns;
    double      *v = malloc(d * sizeof(double) * (size_t)l->rot_dim);
    uint64_t     s = seed ^ 0x4c53484d6f45ull; /* "LSHMoE": a stream of its own */
    for (int h = 0; h < l->hashes; h++) {
        for (int i = 0; i < l->rot_dim; i++) {
            double *vi = v + (size_t)i * d;
            for (size_t j = 0; j < d; j++) {
                vi[j] = sqz_lsh_gauss(&s);
            }
            for (int k = 0; k < i && (size_t)i < d; k++) {
                const double *vk  = v + (size_t)k * d;
                double        dot = 0;
                for (size_t j = 0; j < d; j++) {
                    dot += vi[j] * vk[j];
                }
                for (size_t j = 0; j < d; j++) {
                    vi[j] -= dot * vk[j];
                }
            }
            double nrm = 0;
            for (size_t j = 0; j < d; j++) {
                nrm += vi[j] * vi[j];
            }
            nrm = nrm > 0 ? 1.0 / sqrt(nrm) : 0.0;
            for (size_t j = 0; j < d; j++) {
                vi[j] *= nrm;
            }
            const size_t p = (size_t)h * (size_t)l->rot_dim + (size_t)i;
            for (size_t j = 0; j < d; j++) {
                l->proj[p * d + j] = (float)vi[j];
            }
        }
    }
    free(v);
}

/* The sampled coordinates: a seeded partial Fisher-Yates shuffle of [0, width), sorted (the
 * gather then walks the token forward). */
static sqz_status_t sqz_lsh_sample(sqz_lsh_t *l, uint64_t seed)
{
    uint32_t *perm = malloc(l->width * sizeof(uint32_t));
    if (NULL == perm) {
        return SQZ_ERR_NO_MEMORY;
    }
    for (size_t j = 0; j < l->width; j++) {
        perm[j] = (uint32_t)j;
    }
    uint64_t s = seed ^ 0x636f6c756d6e73ull; /* "columns" */
    for (size_t k = 0; k < l->ns && l->ns < l->width; k++) {
        const size_t   j = k + (size_t)(sqz_pu_splitmix64(&s) % (l->width - k));
        const uint32_t t = perm[k];
        perm[k]          = perm[j];
        perm[j]          = t;
    }
    /* Insertion sort of the first ns (ns is small). */
    for (size_t k = 1; k < l->ns; k++) {
        const uint32_t v = perm[k];
        size_t         i = k;
        for (; i > 0 && perm[i - 1] > v; i--) {
            perm[i] = perm[i - 1];
        }
        perm[i] = v;
    }
    memcpy(l->cols, perm, l->ns * sizeof(uint32_t));
    free(perm);
    return SQZ_OK;
}

sqz_status_t sqz_lsh_create(size_t width, int rot_dim, int hashes, size_t sample, uint64_t seed,
                            sqz_lsh_t **out)
{
    *out = NULL;
    if (0 == width || width > UINT32_MAX || rot_dim < 1 || rot_dim > SQZ_LSH_MAX_DIM ||
        hashes < 1 || hashes > SQZ_LSH_MAX_HASHES ||
        (unsigned)hashes * sqz_lsh_code_bits(rot_dim) > 64) {
        return SQZ_ERR_INVALID_PARAM;
    }
    sqz_lsh_t *l = calloc(1, sizeof(*l));
    if (NULL == l) {
        return SQZ_ERR_NO_MEMORY;
    }
    l->width     = width;
    l->ns        = (0 == sample || sample > width) ? width : sample;
    l->rot_dim   = rot_dim;
    l->hashes    = hashes;
    l->bits      = sqz_lsh_code_bits(rot_dim);
    l->nproj     = (size_t)hashes * (size_t)rot_dim;
    l->proj      = malloc(l->nproj * l->ns * sizeof(float));
    l->cols      = malloc(l->ns * sizeof(uint32_t));
    l->row       = malloc(l->ns * sizeof(float));
    l->mean      = malloc(l->ns * sizeof(float));
    l->acc       = malloc(l->nproj * sizeof(float));
    l->msum      = malloc(l->ns * sizeof(double));
    if (NULL == l->proj || NULL == l->cols || NULL == l->row || NULL == l->mean || NULL == l->acc ||
        NULL == l->msum || SQZ_OK != sqz_lsh_sample(l, seed)) {
        sqz_lsh_destroy(l);
        return SQZ_ERR_NO_MEMORY;
    }
    sqz_lsh_draw(l, seed);
    *out = l;
    return SQZ_OK;
}

void sqz_lsh_destroy(sqz_lsh_t *l)
{
    if (NULL == l) {
        return;
    }
    free(l->proj);
    free(l->cols);
    free(l->row);
    free(l->mean);
    free(l->acc);
    free(l->msum);
    free(l->keys);
    free(l->group);
    free(l->first);
    free(l->count);
    free(l->slots);
    free(l);
}

size_t       sqz_lsh_width(const sqz_lsh_t *l) { return l->width; }
const float *sqz_lsh_projections(const sqz_lsh_t *l) { return l->proj; }

const uint32_t *sqz_lsh_columns(const sqz_lsh_t *l, size_t *ns, int *rot_dim, int *hashes)
{
    *ns      = l->ns;
    *rot_dim = l->rot_dim;
    *hashes  = l->hashes;
    return l->cols;
}

uint64_t *sqz_lsh_keys(sqz_lsh_t *l, size_t tokens)
{
    return sqz_pu_grow((void **)&l->keys, &l->keycap, (tokens ? tokens : 1) * sizeof(uint64_t));
}

/* The projections of one centered row into l->acc: one dot product per projection row, 4 lanes
 * at a time in a GCC/Clang vector type (one SSE/NEON register), with four independent partial
 * sums so that the adds do not wait on each other.  (The plain loops are not vectorized at -O2,
 * and scalar hashing would cost more time than the bytes it saves.)  The summation order is
 * fixed by this code: the same bits on every rank. */
typedef float sqz_lsh_v4 __attribute__((vector_size(4 * sizeof(float))));

static void sqz_lsh_project(sqz_lsh_t *l, const float *row)
{
    const size_t d = l->ns, dv = d / 16 * 16;
    for (size_t p = 0; p < l->nproj; p++) {
        const float *const r  = l->proj + p * d;
        sqz_lsh_v4         s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        for (size_t j = 0; j < dv; j += 16) {
            sqz_lsh_v4 x[4], w[4];
            memcpy(x, row + j, sizeof(x));
            memcpy(w, r + j, sizeof(w));
            s0 += x[0] * w[0];
            s1 += x[1] * w[1];
            s2 += x[2] * w[2];
            s3 += x[3] * w[3];
        }
        s0 += s1;
        s2 += s3;
        s0 += s2;
        float acc = (s0[0] + s0[1]) + (s0[2] + s0[3]);
        for (size_t j = dv; j < d; j++) {
            acc += row[j] * r[j];
        }
        l->acc[p] = acc;
    }
}

sqz_status_t sqz_lsh_hash(sqz_lsh_t *l, const float *x, size_t tokens, uint64_t *bucket)
{
    const size_t          d = l->width, ns = l->ns;
    const uint32_t *const cols = l->cols;
    /* The block mean of the sampled coordinates, accumulated in double (a long block would lose
     * low bits in float), token by token (a column walk would miss the cache on every token). */
    double *const m = l->msum;
    memset(m, 0, ns * sizeof(double));
    for (size_t t = 0; t < tokens; t++) {
        const float *const xt = x + t * d;
        for (size_t k = 0; k < ns; k++) {
            m[k] += xt[cols[k]];
        }
    }
    for (size_t k = 0; k < ns; k++) {
        l->mean[k] = tokens ? (float)(m[k] / (double)tokens) : 0.0f;
    }
    for (size_t t = 0; t < tokens; t++) {
        const float *const xt = x + t * d;
        for (size_t k = 0; k < ns; k++) {
            l->row[k] = xt[cols[k]] - l->mean[k];
        }
        sqz_lsh_project(l, l->row);
        uint64_t id = 0;
        for (int h = 0; h < l->hashes; h++) {
            const float *a    = l->acc + (size_t)h * (size_t)l->rot_dim;
            int          best = 0;
            float        bmag = fabsf(a[0]);
            for (int i = 1; i < l->rot_dim; i++) {
                if (fabsf(a[i]) > bmag) {
                    bmag = fabsf(a[i]);
                    best = i;
                }
            }
            const uint64_t code = 2u * (unsigned)best + (a[best] < 0.0f ? 1u : 0u);
            id                  = (id << l->bits) | code;
        }
        bucket[t] = id;
    }
    return SQZ_OK;
}

/* splitmix64's finalizer: spreads a key over the table. */
static uint64_t sqz_lsh_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

size_t sqz_lsh_group(sqz_lsh_t *l, const uint64_t *keys, size_t tokens, sqz_lsh_same_fn same,
                     const void *arg, uint32_t **group, uint32_t **first)
{
    size_t nslots = 16;
    while (nslots < 2 * tokens) {
        nslots *= 2;
    }
    const size_t need = (tokens ? tokens : 1) * sizeof(uint32_t);
    if (NULL == sqz_pu_grow((void **)&l->group, &l->groupcap, need) ||
        NULL == sqz_pu_grow((void **)&l->first, &l->firstcap, need) ||
        NULL == sqz_pu_grow((void **)&l->count, &l->countcap, need) ||
        NULL == sqz_pu_grow((void **)&l->slots, &l->slotcap, nslots * sizeof(uint32_t))) {
        return SIZE_MAX;
    }
    /* Open addressing, linear probing; a slot holds a group number + 1 (0: empty). */
    memset(l->slots, 0, nslots * sizeof(uint32_t));
    size_t rows = 0;
    for (size_t t = 0; t < tokens; t++) {
        size_t s = (size_t)sqz_lsh_mix(keys[t]) & (nslots - 1);
        for (;;) {
            const uint32_t g = l->slots[s];
            if (0 == g) {
                l->slots[s]    = (uint32_t)rows + 1;
                l->first[rows] = (uint32_t)t;
                l->group[t]    = (uint32_t)rows++;
                break;
            }
            const uint32_t f = l->first[g - 1];
            if (keys[f] == keys[t] && (NULL == same || same(arg, f, t))) {
                l->group[t] = g - 1;
                break;
            }
            s = (s + 1) & (nslots - 1);
        }
    }
    *group = l->group;
    *first = l->first;
    return rows;
}

sqz_status_t sqz_lsh_encode(sqz_lsh_t *l, const float *x, size_t tokens, void *dst, size_t *bytes,
                            uint32_t *map)
{
    const size_t d    = l->width;
    uint64_t    *keys = sqz_lsh_keys(l, tokens);
    if (NULL == keys) {
        return SQZ_ERR_NO_MEMORY;
    }
    sqz_lsh_hash(l, x, tokens, keys);
    uint32_t    *group, *first;
    const size_t rows = sqz_lsh_group(l, keys, tokens, NULL, NULL, &group, &first);
    if (SIZE_MAX == rows) {
        return SQZ_ERR_NO_MEMORY;
    }
    const unsigned iw  = sqz_tok_index_width(rows);
    const size_t   raw = sqz_tok_raw_bytes(tokens, d, SQZ_DTYPE_FLOAT32);
    const size_t   enc = SQZ_TOKFRAME_HEADER + rows * d * sizeof(float) + tokens * iw;
    if (enc >= raw) {
        sqz_tok_encode_raw(x, tokens, d, SQZ_DTYPE_FLOAT32, dst);
        for (size_t t = 0; map && t < tokens; t++) {
            map[t] = (uint32_t)t;
        }
        *bytes = raw;
        return SQZ_OK;
    }
    /* Centroids: sums in float, in token order, straight into the block (4-byte aligned, see
     * the header), then divided by the bucket's size.  One pass over the tokens. */
    unsigned char *const base = (unsigned char *)dst + SQZ_TOKFRAME_HEADER;
    float *const         cent = (float *)(void *)base;
    memset(cent, 0, rows * d * sizeof(float));
    memset(l->count, 0, rows * sizeof(uint32_t));
    for (size_t t = 0; t < tokens; t++) {
        float *const       c  = cent + (size_t)group[t] * d;
        const float *const xt = x + t * d;
        for (size_t j = 0; j < d; j++) {
            c[j] += xt[j];
        }
        l->count[group[t]]++;
    }
    for (size_t g = 0; g < rows; g++) {
        const float inv = 1.0f / (float)l->count[g];
        for (size_t j = 0; j < d; j++) {
            cent[g * d + j] *= inv;
        }
    }
    unsigned char *const idx = base + rows * d * sizeof(float);
    for (size_t t = 0; t < tokens; t++) {
        sqz_tok_store_index(idx, iw, t, group[t]);
        if (map) {
            map[t] = group[t];
        }
    }
    sqz_tok_header(dst, SQZ_TOKFRAME_ROWS, SQZ_DTYPE_FLOAT32, iw, SQZ_TOKFRAME_LOSSY, d, tokens, rows);
    *bytes = enc;
    return SQZ_OK;
}
