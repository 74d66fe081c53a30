/*
 * Device token codecs (sqz_cuda_moe.h).  One call codes the blocks of every peer at once: kernels
 * run on a 2-D grid, blockIdx.y the peer's block, blockIdx.x striding over its tokens.
 *
 * Encoding, per block:
 *   1. keys:    LSH bucket id (mean kernel, then hash kernel) or 64-bit row hash (dedup);
 *   2. insert:  each token into the block's open-addressing table (a slot claimed by atomicCAS),
 *               the slot keeping the smallest token of its key (atomicMin): the group's leader;
 *   3. leader:  each token reads its leader (dedup: and compares its bytes with it);
 *   4. scan:    one CUDA block per peer numbers the leaders in token order (the group numbers, in
 *               order of first appearance, as the CPU's sqz_lsh_group), chooses RAW or ROWS by
 *               the same size rule as the CPU, writes the header and the size;
 *   5. fill:    the index of each token, then the rows: distinct rows copied (dedup), centroids
 *               (lsh: one thread per column walks the block's tokens in order, so every sum is
 *               the CPU's sum in the CPU's order), or the tokens as they are (RAW).
 * The kernels after the scan read the block's kind, index width and rows from the header it wrote.
 * Every float operation that decides a bit is an explicit _rn intrinsic (never contracted).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "sqz_cuda_moe.h"

extern "C" {
#include "sqz_lsh.h"
}

#define SQZ_TOK_EMPTY 0xffffffffu

struct sqz_gpu_lsh {
    float    *proj;   /* nproj * ns, row-major (the CPU's matrices) */
    uint32_t *cols;   /* ns sampled coordinates */
    size_t    width, ns;
    int       rot_dim, hashes;
    unsigned  bits;
};

/* The device view of the hash, passed by value to the kernels. */
typedef struct sqz_tok_hash {
    const float    *proj;
    const uint32_t *cols;
    uint32_t        ns, rot_dim, hashes, bits;
} sqz_tok_hash_t;

/* Per-token and per-slot arrays of the encode workspace. */
typedef struct sqz_tok_ws {
    sqz_gpu_tok_blk_t *blks;
    uint64_t          *key;
    uint32_t          *slot_of, *leader, *rank, *first, *cnt, *slot_tok, *slot_min;
    float             *mean;
} sqz_tok_ws_t;

/* ---------------------------------------------------------------------------------------------
 * Small device helpers.
 * ------------------------------------------------------------------------------------------- */
__device__ __forceinline__ uint32_t sqz_tok_ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

__device__ __forceinline__ void sqz_tok_st32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

__device__ __forceinline__ uint32_t sqz_tok_ld_index(const uint8_t *idx, uint32_t iw, uint64_t t)
{
    const uint8_t *p = idx + t * iw;
    switch (iw) {
    case 1: return p[0];
    case 2: return (uint32_t)p[0] | (uint32_t)p[1] << 8;
    default: return sqz_tok_ld32(p);
    }
}

__device__ __forceinline__ void sqz_tok_st_index(uint8_t *idx, uint32_t iw, uint64_t t, uint32_t v)
{
    uint8_t *p = idx + t * iw;
    for (uint32_t k = 0; k < iw; k++) {
        p[k] = (uint8_t)(v >> (8 * k));
    }
}

__host__ __device__ __forceinline__ uint32_t sqz_tok_iw(uint64_t rows)
{
    return rows <= 0x100u ? 1u : (rows <= 0x10000u ? 2u : 4u);
}

/* splitmix64's finalizer (sqz_lsh_mix): spreads a key over the table. */
__device__ __forceinline__ uint64_t sqz_tok_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Copies one element of es bytes (4 or 2; both pointers aligned to es). */
__device__ __forceinline__ void sqz_tok_copy_elem(uint8_t *d, const uint8_t *s, size_t es)
{
    if (4 == es) {
        *(uint32_t *)d = *(const uint32_t *)s;
    } else {
        *(uint16_t *)d = *(const uint16_t *)s;
    }
}

#define SQZ_TOK_FOR_TOKENS(b, t)                                                               \
    for (uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; t < (b).tokens;          \
         t += (uint64_t)gridDim.x * blockDim.x)

/* ---------------------------------------------------------------------------------------------
 * 1. Keys.
 * ------------------------------------------------------------------------------------------- */

/* The block's mean of the sampled coordinates: in double, token by token in order, then rounded
 * to float (sqz_lsh_hash).  One thread per coordinate. */
__global__ void sqz_tok_mean_kernel(sqz_tok_ws_t w, sqz_tok_hash_t h, uint64_t width)
{
    const sqz_gpu_tok_blk_t b = w.blks[blockIdx.y];
    const float *const      x = (const float *)b.src;
    for (uint32_t k = threadIdx.x; k < h.ns; k += blockDim.x) {
        double m = 0.0;
        for (uint64_t t = 0; t < b.tokens; t++) {
            m = __dadd_rn(m, (double)x[t * width + h.cols[k]]);
        }
        w.mean[(size_t)blockIdx.y * h.ns + k] =
            b.tokens ? __double2float_rn(__ddiv_rn(m, (double)b.tokens)) : 0.0f;
    }
}

/* The bucket id of each token: the CPU's projection order exactly (sqz_lsh_project: 16 partial
 * sums s[q] over j = q mod 16, combined as four 4-lane vectors (s0 + s1) + (s2 + s3), lanes as
 * (l0 + l1) + (l2 + l3), then the tail in order). */
__global__ void __launch_bounds__(128) sqz_tok_lsh_kernel(sqz_tok_ws_t w, sqz_tok_hash_t h,
                                                          uint64_t width)
{
    const sqz_gpu_tok_blk_t b    = w.blks[blockIdx.y];
    const float *const      mean = w.mean + (size_t)blockIdx.y * h.ns;
    const uint32_t          dv   = h.ns / 16 * 16;
    SQZ_TOK_FOR_TOKENS(b, t)
    {
        const float *const xt = (const float *)b.src + t * width;
        uint64_t           id = 0;
        for (uint32_t hh = 0; hh < h.hashes; hh++) {
            uint32_t best = 0;
            float    bmag = 0.0f, bval = 0.0f;
            for (uint32_t i = 0; i < h.rot_dim; i++) {
                const float *const r = h.proj + (size_t)(hh * h.rot_dim + i) * h.ns;
                float              s[16];
                for (int q = 0; q < 16; q++) {
                    s[q] = 0.0f;
                }
                for (uint32_t j = 0; j < dv; j += 16) {
                    for (int q = 0; q < 16; q++) {
                        const float v = __fsub_rn(xt[h.cols[j + q]], mean[j + q]);
                        s[q]          = __fadd_rn(s[q], __fmul_rn(v, r[j + q]));
                    }
                }
                float c[4];
                for (int l = 0; l < 4; l++) {
                    c[l] = __fadd_rn(__fadd_rn(s[l], s[4 + l]), __fadd_rn(s[8 + l], s[12 + l]));
                }
                float acc = __fadd_rn(__fadd_rn(c[0], c[1]), __fadd_rn(c[2], c[3]));
                for (uint32_t j = dv; j < h.ns; j++) {
                    acc = __fadd_rn(acc, __fmul_rn(__fsub_rn(xt[h.cols[j]], mean[j]), r[j]));
                }
                if (0 == i || fabsf(acc) > bmag) {
                    bmag = fabsf(acc);
                    best = i;
                    bval = acc;
                }
            }
            const uint64_t code = 2u * best + (bval < 0.0f ? 1u : 0u);
            id                  = (id << h.bits) | code;
        }
        w.key[b.toff + t] = id;
    }
}

/* The CPU's row hash (sqz_dedup_hash): 8 bytes at a time, then the tail. */
__device__ uint64_t sqz_tok_row_hash(const uint8_t *p, size_t n)
{
    uint64_t   h       = 0x9e3779b97f4a7c15ull ^ n;
    size_t     i       = 0;
    const bool aligned = 0 == ((uintptr_t)p & 7);
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        if (aligned) {
            v = *(const uint64_t *)(p + i);
        } else {
            v = (uint64_t)sqz_tok_ld32(p + i) | (uint64_t)sqz_tok_ld32(p + i + 4) << 32;
        }
        h = (h ^ v) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    for (; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

__global__ void __launch_bounds__(128) sqz_tok_dedup_key_kernel(sqz_tok_ws_t w, uint64_t rowbytes)
{
    const sqz_gpu_tok_blk_t b = w.blks[blockIdx.y];
    SQZ_TOK_FOR_TOKENS(b, t)
    {
        w.key[b.toff + t] = sqz_tok_row_hash((const uint8_t *)b.src + t * rowbytes, rowbytes);
    }
}

/* ---------------------------------------------------------------------------------------------
 * 2-3. Grouping.
 * ------------------------------------------------------------------------------------------- */
__global__ void __launch_bounds__(256) sqz_tok_insert_kernel(sqz_tok_ws_t w)
{
    const sqz_gpu_tok_blk_t b    = w.blks[blockIdx.y];
    uint32_t *const         stok = w.slot_tok + b.soff;
    const uint64_t *const   key  = w.key + b.toff;
    const uint64_t          mask = b.nslots - 1;
    SQZ_TOK_FOR_TOKENS(b, t)
    {
        const uint64_t k = key[t];
        uint64_t       s = sqz_tok_mix(k) & mask;
        for (;;) {
            /* A slot goes from EMPTY to a token once and never changes again: a stale EMPTY is
             * corrected by the CAS, a non-empty value is final. */
            uint32_t cur = ((volatile uint32_t *)stok)[s];
            if (SQZ_TOK_EMPTY == cur) {
                const uint32_t prev = atomicCAS(&stok[s], SQZ_TOK_EMPTY, (uint32_t)t);
                cur                 = SQZ_TOK_EMPTY == prev ? (uint32_t)t : prev;
            }
            if (key[cur] == k) {
                atomicMin(&w.slot_min[b.soff + s], (uint32_t)t);
                w.slot_of[b.toff + t] = (uint32_t)s;
                break;
            }
            s = (s + 1) & mask;
        }
    }
}

/* leader = the smallest token of the slot; dedup (rowbytes != 0): a token whose bytes differ from
 * its leader's (a hash collision) leads a group of its own. */
__global__ void __launch_bounds__(256) sqz_tok_leader_kernel(sqz_tok_ws_t w, uint64_t rowbytes)
{
    const sqz_gpu_tok_blk_t b = w.blks[blockIdx.y];
    SQZ_TOK_FOR_TOKENS(b, t)
    {
        uint32_t l = w.slot_min[b.soff + w.slot_of[b.toff + t]];
        if (rowbytes && l != t) {
            const uint8_t *const p = (const uint8_t *)b.src + t * rowbytes;
            const uint8_t *const q = (const uint8_t *)b.src + (uint64_t)l * rowbytes;
            for (uint64_t i = 0; i < rowbytes; i++) {
                if (p[i] != q[i]) {
                    l = (uint32_t)t;
                    break;
                }
            }
        }
        w.leader[b.toff + t] = l;
    }
}

/* ---------------------------------------------------------------------------------------------
 * 4. Group numbers, the RAW/ROWS decision, header and size.  One CUDA block (1024 threads) per
 * peer block; thread i owns a contiguous run of tokens, so numbering in thread order is token
 * order.
 * ------------------------------------------------------------------------------------------- */
#define SQZ_TOK_SCAN_THREADS 1024

__global__ void __launch_bounds__(SQZ_TOK_SCAN_THREADS)
    sqz_tok_scan_kernel(sqz_tok_ws_t w, int n, uint64_t width, uint32_t es, uint32_t dtype,
                        uint32_t lossy, uint64_t *meta)
{
    __shared__ uint32_t part[SQZ_TOK_SCAN_THREADS];
    const sqz_gpu_tok_blk_t b   = w.blks[blockIdx.x];
    const uint64_t          run = (b.tokens + SQZ_TOK_SCAN_THREADS - 1) / SQZ_TOK_SCAN_THREADS;
    const uint64_t          t0  = threadIdx.x * run;
    const uint64_t          t1  = t0 + run < b.tokens ? t0 + run : b.tokens;
    const uint32_t *const   ld  = w.leader + b.toff;
    uint32_t                c   = 0;
    for (uint64_t t = t0; t < t1; t++) {
        c += ld[t] == t;
    }
    part[threadIdx.x] = c;
    __syncthreads();
    /* Hillis-Steele inclusive scan of the per-thread counts. */
    for (unsigned off = 1; off < SQZ_TOK_SCAN_THREADS; off <<= 1) {
        const uint32_t v = threadIdx.x >= off ? part[threadIdx.x - off] : 0;
        __syncthreads();
        part[threadIdx.x] += v;
        __syncthreads();
    }
    uint32_t g = part[threadIdx.x] - c;
    for (uint64_t t = t0; t < t1; t++) {
        if (ld[t] == t) {
            w.rank[b.toff + t]  = g;
            w.first[b.toff + g] = (uint32_t)t;
            g++;
        }
    }
    if (0 != threadIdx.x) {
        return;
    }
    const uint64_t rows = part[SQZ_TOK_SCAN_THREADS - 1], rowbytes = width * es;
    const uint64_t raw  = SQZ_TOKFRAME_HEADER + b.tokens * rowbytes;
    const uint32_t iw   = sqz_tok_iw(rows);
    const uint64_t enc  = SQZ_TOKFRAME_HEADER + rows * rowbytes + b.tokens * iw;
    const bool     asis = enc >= raw;
    if (0 == b.tokens) {
        meta[blockIdx.x]     = 0;
        meta[n + blockIdx.x] = 0;
        return;
    }
    uint8_t *const p = (uint8_t *)b.dst;
    sqz_tok_st32(p, SQZ_TOKFRAME_MAGIC);
    p[4] = (uint8_t)(asis ? SQZ_TOKFRAME_RAW : SQZ_TOKFRAME_ROWS);
    p[5] = (uint8_t)dtype;
    p[6] = (uint8_t)(asis ? 0 : iw);
    p[7] = (uint8_t)(asis ? 0 : lossy);
    sqz_tok_st32(p + 8, (uint32_t)width);
    sqz_tok_st32(p + 12, (uint32_t)b.tokens);
    sqz_tok_st32(p + 16, (uint32_t)(asis ? b.tokens : rows));
    sqz_tok_st32(p + 20, 0);
    meta[blockIdx.x]     = asis ? raw : enc;
    meta[n + blockIdx.x] = asis ? b.tokens : rows;
}

/* ---------------------------------------------------------------------------------------------
 * 5. Fill.
 * ------------------------------------------------------------------------------------------- */
typedef struct sqz_tok_hdr {
    uint32_t kind, iw, rows;
} sqz_tok_hdr_t;

__device__ __forceinline__ sqz_tok_hdr_t sqz_tok_read_hdr(const void *block)
{
    const uint8_t *p = (const uint8_t *)block;
    sqz_tok_hdr_t  h;
    h.kind = p[4];
    h.iw   = p[6];
    h.rows = sqz_tok_ld32(p + 16);
    return h;
}

/* The block of this CUDA block's peer and its header.  \return false when the block has no
 * ROWS form (no tokens, or RAW): nothing to index or average. */
__device__ __forceinline__ bool sqz_tok_rows_block(const sqz_tok_ws_t &w, sqz_gpu_tok_blk_t *b,
                                                   sqz_tok_hdr_t *h)
{
    *b = w.blks[blockIdx.y];
    if (0 == b->tokens) {
        return false;
    }
    *h = sqz_tok_read_hdr(b->dst);
    return SQZ_TOKFRAME_ROWS == h->kind;
}

/* Index of each token (ROWS), and the bucket sizes of LSH (count != 0). */
__global__ void __launch_bounds__(256) sqz_tok_index_kernel(sqz_tok_ws_t w, uint64_t rowbytes,
                                                            int count)
{
    sqz_gpu_tok_blk_t b;
    sqz_tok_hdr_t     h;
    if (!sqz_tok_rows_block(w, &b, &h)) {
        return;
    }
    uint8_t *const idx = (uint8_t *)b.dst + SQZ_TOKFRAME_HEADER + (uint64_t)h.rows * rowbytes;
    SQZ_TOK_FOR_TOKENS(b, t)
    {
        const uint32_t g = w.rank[b.toff + w.leader[b.toff + t]];
        sqz_tok_st_index(idx, h.iw, t, g);
        if (count) {
            atomicAdd(&w.cnt[b.toff + g], 1u); /* integer: the same total in any order */
        }
    }
}

/* Row copies: every token (RAW), or each group's first token (dedup ROWS).  LSH ROWS blocks are
 * left to the centroid kernel. */
__global__ void __launch_bounds__(256) sqz_tok_rows_kernel(sqz_tok_ws_t w, uint64_t width,
                                                           uint32_t es, int lsh)
{
    const sqz_gpu_tok_blk_t b = w.blks[blockIdx.y];
    if (0 == b.tokens) {
        return;
    }
    const sqz_tok_hdr_t h = sqz_tok_read_hdr(b.dst);
    if (lsh && SQZ_TOKFRAME_ROWS == h.kind) {
        return;
    }
    const uint64_t       total = (uint64_t)h.rows * width;
    const uint8_t *const src   = (const uint8_t *)b.src;
    uint8_t *const       dst   = (uint8_t *)b.dst + SQZ_TOKFRAME_HEADER;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t g = i / width, e = i - g * width;
        const uint64_t r = SQZ_TOKFRAME_ROWS == h.kind ? w.first[b.toff + g] : g;
        sqz_tok_copy_elem(dst + i * es, src + (r * width + e) * es, es);
    }
}

/* Centroids of an LSH ROWS block: one thread per column sums the block's tokens in token order
 * into their bucket's row, then scales by 1 / count (sqz_lsh_encode, operation for operation). */
__global__ void __launch_bounds__(256) sqz_tok_centroid_kernel(sqz_tok_ws_t w, uint64_t width)
{
    sqz_gpu_tok_blk_t b;
    sqz_tok_hdr_t     h;
    if (!sqz_tok_rows_block(w, &b, &h)) {
        return;
    }
    float *const       cent = (float *)((uint8_t *)b.dst + SQZ_TOKFRAME_HEADER);
    const float *const x    = (const float *)b.src;
    for (uint64_t j = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; j < width;
         j += (uint64_t)gridDim.x * blockDim.x) {
        for (uint32_t g = 0; g < h.rows; g++) {
            cent[g * width + j] = 0.0f;
        }
        for (uint64_t t = 0; t < b.tokens; t++) {
            const uint32_t g    = w.rank[b.toff + w.leader[b.toff + t]];
            cent[g * width + j] = __fadd_rn(cent[g * width + j], x[t * width + j]);
        }
        for (uint32_t g = 0; g < h.rows; g++) {
            const float inv     = __fdiv_rn(1.0f, (float)w.cnt[b.toff + g]);
            cent[g * width + j] = __fmul_rn(cent[g * width + j], inv);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Decode.
 * ------------------------------------------------------------------------------------------- */

/* sqz_tok_decode's checks, on the device: header fields, exact size, every index (threads share
 * the indices).  status[b] = 1 for a malformed block. */
__global__ void __launch_bounds__(256)
    sqz_tok_validate_kernel(const sqz_gpu_tok_blk_t *blks, uint64_t width, uint32_t es,
                            uint32_t dtype, uint32_t *status, unsigned long long *corrupt)
{
    __shared__ int bad;
    const sqz_gpu_tok_blk_t b = blks[blockIdx.x];
    if (0 == b.tokens && 0 == b.bytes) {
        if (0 == threadIdx.x) {
            status[blockIdx.x] = 0;
        }
        return;
    }
    const uint8_t *const p        = (const uint8_t *)b.src;
    const uint64_t       rowbytes = width * es;
    int                  hb       = b.bytes < SQZ_TOKFRAME_HEADER || b.tokens > 0xffffffffull;
    uint32_t             kind = 0, iw = 0, rows = 0;
    if (!hb) {
        kind = p[4];
        iw   = p[6];
        rows = sqz_tok_ld32(p + 16);
        hb   = SQZ_TOKFRAME_MAGIC != sqz_tok_ld32(p) || p[5] != dtype ||
             sqz_tok_ld32(p + 8) != width || sqz_tok_ld32(p + 12) != b.tokens ||
             0 != sqz_tok_ld32(p + 20);
    }
    const uint64_t avail = hb ? 0 : b.bytes - SQZ_TOKFRAME_HEADER;
    if (!hb) {
        hb = rows > avail / rowbytes;
    }
    const uint64_t rest = hb ? 0 : avail - (uint64_t)rows * rowbytes;
    if (!hb && SQZ_TOKFRAME_RAW == kind) {
        hb = 0 != iw || rows != b.tokens || 0 != rest;
    } else if (!hb) {
        hb = SQZ_TOKFRAME_ROWS != kind || rows > b.tokens || (0 == rows) != (0 == b.tokens) ||
             iw != sqz_tok_iw(rows) || rest / iw < b.tokens || rest != b.tokens * iw;
    }
    if (0 == threadIdx.x) {
        bad = hb;
    }
    __syncthreads();
    if (!hb && SQZ_TOKFRAME_ROWS == kind) {
        const uint8_t *const idx = p + SQZ_TOKFRAME_HEADER + (uint64_t)rows * rowbytes;
        for (uint64_t t = threadIdx.x; t < b.tokens; t += blockDim.x) {
            if (sqz_tok_ld_index(idx, iw, t) >= rows) {
                bad = 1; /* benign race: every writer writes 1 */
            }
        }
    }
    __syncthreads();
    if (0 == threadIdx.x) {
        status[blockIdx.x] = (uint32_t)bad;
        if (bad && corrupt) {
            atomicAdd(corrupt, 1ull);
        }
    }
}

__global__ void __launch_bounds__(256) sqz_tok_expand_kernel(const sqz_gpu_tok_blk_t *blks,
                                                             uint64_t width, uint32_t es,
                                                             const uint32_t *status)
{
    const sqz_gpu_tok_blk_t b = blks[blockIdx.y];
    if (0 == b.tokens || status[blockIdx.y]) {
        return;
    }
    const uint8_t *const p        = (const uint8_t *)b.src;
    const sqz_tok_hdr_t  h        = sqz_tok_read_hdr(p);
    const uint64_t       rowbytes = width * es, total = b.tokens * width;
    const uint8_t *const rowdata  = p + SQZ_TOKFRAME_HEADER;
    const uint8_t *const idx      = rowdata + (uint64_t)h.rows * rowbytes;
    uint8_t *const       out      = (uint8_t *)b.dst;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t t = i / width, e = i - t * width;
        const uint64_t r = SQZ_TOKFRAME_RAW == h.kind ? t : sqz_tok_ld_index(idx, h.iw, t);
        sqz_tok_copy_elem(out + i * es, rowdata + r * rowbytes + e * es, es);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Host side.
 * ------------------------------------------------------------------------------------------- */
static size_t sqz_tok_es(sqz_dtype_t d)
{
    return SQZ_DTYPE_FLOAT32 == d ? 4 : (SQZ_DTYPE_FLOAT16 == d || SQZ_DTYPE_BFLOAT16 == d) ? 2 : 0;
}

static size_t sqz_tok_r256(size_t x)
{
    return (x + 255) / 256 * 256;
}

static unsigned sqz_tok_grid(uint64_t units, unsigned per)
{
    const uint64_t g = (units + per - 1) / per;
    return (unsigned)(g < 1 ? 1 : g > 65535 ? 65535 : g);
}

extern "C" sqz_status_t sqz_gpu_lsh_create(const struct sqz_lsh *lsh, sqz_gpu_lsh_t **out)
{
    *out             = NULL;
    sqz_gpu_lsh_t *g = (sqz_gpu_lsh_t *)calloc(1, sizeof(*g));
    if (NULL == g) {
        return SQZ_ERR_NO_MEMORY;
    }
    const uint32_t *cols = sqz_lsh_columns(lsh, &g->ns, &g->rot_dim, &g->hashes);
    g->width             = sqz_lsh_width(lsh);
    g->bits              = sqz_lsh_code_bits(g->rot_dim);
    const size_t nproj   = (size_t)g->rot_dim * (size_t)g->hashes;
    if (cudaMalloc((void **)&g->proj, nproj * g->ns * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&g->cols, g->ns * sizeof(uint32_t)) != cudaSuccess ||
        cudaMemcpy(g->proj, sqz_lsh_projections(lsh), nproj * g->ns * sizeof(float),
                   cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(g->cols, cols, g->ns * sizeof(uint32_t), cudaMemcpyHostToDevice) !=
            cudaSuccess) {
        cudaGetLastError();
        sqz_gpu_lsh_destroy(g);
        return SQZ_ERR_CUDA;
    }
    *out = g;
    return SQZ_OK;
}

extern "C" void sqz_gpu_lsh_destroy(sqz_gpu_lsh_t *g)
{
    if (g) {
        cudaFree(g->proj);
        cudaFree(g->cols);
        free(g);
    }
}

extern "C" size_t sqz_gpu_lsh_width(const sqz_gpu_lsh_t *g)
{
    return g->width;
}

/* The workspace: descriptors, then per-token arrays, then the tables, then the means. */
static size_t sqz_tok_layout(const sqz_gpu_tok_blk_t *blks, int n, size_t ns, void *base,
                             sqz_tok_ws_t *w)
{
    uint64_t T = 0, S = 0;
    for (int b = 0; b < n; b++) {
        T += blks[b].tokens;
        S += blks[b].nslots;
    }
    T          = T ? T : 1;
    S          = S ? S : 1;
    uint8_t *p = (uint8_t *)base;
    size_t   o = 0;
#define SQZ_TOK_TAKE(field, type, count)                                                       \
    do {                                                                                       \
        if (w) {                                                                               \
            w->field = (type *)(void *)(p + o);                                                \
        }                                                                                      \
        o += sqz_tok_r256((size_t)(count) * sizeof(type));                                     \
    } while (0)
    SQZ_TOK_TAKE(blks, sqz_gpu_tok_blk_t, n);
    SQZ_TOK_TAKE(key, uint64_t, T);
    SQZ_TOK_TAKE(slot_of, uint32_t, T);
    SQZ_TOK_TAKE(leader, uint32_t, T);
    SQZ_TOK_TAKE(rank, uint32_t, T);
    SQZ_TOK_TAKE(first, uint32_t, T);
    SQZ_TOK_TAKE(cnt, uint32_t, T);
    SQZ_TOK_TAKE(slot_tok, uint32_t, S);
    SQZ_TOK_TAKE(slot_min, uint32_t, S);
    SQZ_TOK_TAKE(mean, float, (size_t)n * (ns ? ns : 1));
#undef SQZ_TOK_TAKE
    return o;
}

/* The means take n * width floats: the sample size ns is at most the width. */
extern "C" size_t sqz_gpu_tok_plan(sqz_gpu_tok_blk_t *blks, int n, size_t width)
{
    uint64_t T = 0, S = 0;
    for (int b = 0; b < n; b++) {
        uint64_t slots = 16;
        while (slots < 2 * blks[b].tokens) {
            slots *= 2;
        }
        blks[b].toff   = T;
        blks[b].soff   = S;
        blks[b].nslots = slots;
        T += blks[b].tokens;
        S += slots;
    }
    return sqz_tok_layout(blks, n, width, NULL, NULL);
}

extern "C" size_t sqz_gpu_tok_decode_ws(int n)
{
    return sqz_tok_r256((size_t)(n ? n : 1) * sizeof(sqz_gpu_tok_blk_t));
}

extern "C" sqz_status_t sqz_gpu_tok_encode(const sqz_gpu_lsh_t *lsh, sqz_dtype_t dtype,
                                           size_t width, const sqz_gpu_tok_blk_t *blks, int n,
                                           void *ws, uint64_t *meta, uint64_t *keys, void *stream)
{
    const size_t es = sqz_tok_es(dtype);
    if (n < 1 || n > 65535 || 0 == es || 0 == width || width > 0xffffffffu || NULL == ws ||
        NULL == meta || (lsh && (SQZ_DTYPE_FLOAT32 != dtype || lsh->width != width))) {
        return SQZ_ERR_INVALID_PARAM;
    }
    uint64_t tmax = 0, T = 0;
    for (int b = 0; b < n; b++) {
        if (blks[b].tokens > 0xffffffffull || (blks[b].tokens && (NULL == blks[b].src ||
                                                                 NULL == blks[b].dst))) {
            return SQZ_ERR_INVALID_PARAM;
        }
        tmax = blks[b].tokens > tmax ? blks[b].tokens : tmax;
        T += blks[b].tokens;
    }
    cudaStream_t st = (cudaStream_t)stream;
    sqz_tok_ws_t w;
    sqz_tok_layout(blks, n, width, ws, &w);
    uint64_t S = 0;
    for (int b = 0; b < n; b++) {
        S += blks[b].nslots;
    }
    if (cudaMemcpyAsync(w.blks, blks, (size_t)n * sizeof(*blks), cudaMemcpyHostToDevice, st) !=
            cudaSuccess ||
        cudaMemsetAsync(w.slot_tok, 0xff, S * sizeof(uint32_t), st) != cudaSuccess ||
        cudaMemsetAsync(w.slot_min, 0xff, S * sizeof(uint32_t), st) != cudaSuccess ||
        cudaMemsetAsync(w.cnt, 0, (T ? T : 1) * sizeof(uint32_t), st) != cudaSuccess) {
        cudaGetLastError();
        return SQZ_ERR_CUDA;
    }
    const dim3     tok(sqz_tok_grid(tmax, 256), (unsigned)n);
    const uint64_t rowbytes = width * es;
    if (lsh) {
        const sqz_tok_hash_t h = {lsh->proj, lsh->cols, (uint32_t)lsh->ns, (uint32_t)lsh->rot_dim,
                                  (uint32_t)lsh->hashes, lsh->bits};
        sqz_tok_mean_kernel<<<dim3(1, (unsigned)n), 64, 0, st>>>(w, h, width);
        sqz_tok_lsh_kernel<<<dim3(sqz_tok_grid(tmax, 128), (unsigned)n), 128, 0, st>>>(w, h,
                                                                                      width);
    } else {
        sqz_tok_dedup_key_kernel<<<dim3(sqz_tok_grid(tmax, 128), (unsigned)n), 128, 0, st>>>(
            w, rowbytes);
    }
    sqz_tok_insert_kernel<<<tok, 256, 0, st>>>(w);
    sqz_tok_leader_kernel<<<tok, 256, 0, st>>>(w, lsh ? 0 : rowbytes);
    sqz_tok_scan_kernel<<<(unsigned)n, SQZ_TOK_SCAN_THREADS, 0, st>>>(
        w, n, width, (uint32_t)es, (uint32_t)dtype, lsh ? SQZ_TOKFRAME_LOSSY : 0u, meta);
    sqz_tok_index_kernel<<<tok, 256, 0, st>>>(w, rowbytes, lsh != NULL);
    sqz_tok_rows_kernel<<<dim3(sqz_tok_grid(tmax * width, 256), (unsigned)n), 256, 0, st>>>(
        w, width, (uint32_t)es, lsh != NULL);
    if (lsh) {
        sqz_tok_centroid_kernel<<<dim3(sqz_tok_grid(width, 256), (unsigned)n), 256, 0, st>>>(
            w, width);
    }
    if (keys && T && cudaMemcpyAsync(keys, w.key, T * sizeof(uint64_t), cudaMemcpyDeviceToDevice,
                                     st) != cudaSuccess) {
        cudaGetLastError();
        return SQZ_ERR_CUDA;
    }
    return cudaGetLastError() == cudaSuccess ? SQZ_OK : SQZ_ERR_CUDA;
}

extern "C" sqz_status_t sqz_gpu_tok_decode(sqz_dtype_t dtype, size_t width,
                                           const sqz_gpu_tok_blk_t *blks, int n, void *ws,
                                           uint32_t *status, unsigned long long *corrupt,
                                           void *stream)
{
    const size_t es = sqz_tok_es(dtype);
    if (n < 1 || n > 65535 || 0 == es || 0 == width || width > 0xffffffffu || NULL == ws ||
        NULL == status) {
        return SQZ_ERR_INVALID_PARAM;
    }
    uint64_t tmax = 0;
    for (int b = 0; b < n; b++) {
        if ((blks[b].tokens || blks[b].bytes) && (NULL == blks[b].src || NULL == blks[b].dst)) {
            return SQZ_ERR_INVALID_PARAM;
        }
        tmax = blks[b].tokens > tmax ? blks[b].tokens : tmax;
    }
    cudaStream_t             st = (cudaStream_t)stream;
    sqz_gpu_tok_blk_t *const d  = (sqz_gpu_tok_blk_t *)ws;
    if (cudaMemcpyAsync(d, blks, (size_t)n * sizeof(*blks), cudaMemcpyHostToDevice, st) !=
        cudaSuccess) {
        cudaGetLastError();
        return SQZ_ERR_CUDA;
    }
    sqz_tok_validate_kernel<<<(unsigned)n, 256, 0, st>>>(d, width, (uint32_t)es, (uint32_t)dtype,
                                                         status, corrupt);
    sqz_tok_expand_kernel<<<dim3(sqz_tok_grid(tmax * width, 256), (unsigned)n), 256, 0, st>>>(
        d, width, (uint32_t)es, status);
    return cudaGetLastError() == cudaSuccess ? SQZ_OK : SQZ_ERR_CUDA;
}
