/*
 * PowerSGD on the device: the kernels of src/cuda/sqz_cuda_powersgd.h (contracts there; the
 * algorithm is the CPU plugin's, plugins/powersgd/sqz_powersgd.c).  No cuBLAS: the products are
 * skinny (r <= 128).  Up to rank 32 each product reads its matrix once and is bound by memory:
 *   - P = M Q: one warp per matrix row, lanes stride the row (coalesced), Q read through L1/L2;
 *   - M^T P: one thread per column in tiles of 128 columns x 256 rows (coalesced row reads, the P
 *     row broadcast), partial sums per row chunk, then summed in chunk order: deterministic;
 *   - CholeskyQR2: Gram partials per row chunk, one block per layer factors (each row of R in
 *     parallel) and inverts (a thread per column), then a thread per row applies R^-1;
 *   - the finish: one thread per element, r-term dot products from P and the two Q's.
 * Above rank 32 the products (P = M Q, M^T P, the Gram matrix, the finish) are tiled through
 * shared memory instead (see "Tiled products" below).  Kernels that need a layer from a flat
 * index find it by binary search over the table's bases.
 */
#include <cuda_runtime.h>
#include <math.h>

#include "sqz_cuda_common.cuh"
#include "sqz_cuda_powersgd.h"

namespace {

constexpr int kThreads = 256;
/* Plans whose largest rank is above this run the tiled products (below). */
constexpr uint32_t kTiledAbove = 32;

/* The last table entry whose base (by the member `Base`) is <= x. */
template <uint64_t sqz_cu_psgd_layer_t::*Base>
__device__ __forceinline__ uint32_t find_layer(const sqz_cu_psgd_layer_t *t, uint32_t n, uint64_t x)
{
    uint32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) / 2;
        if (t[mid].*Base <= x) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

__device__ __forceinline__ uint32_t find_span(const sqz_cu_psgd_span_t *s, uint32_t n, uint64_t pos)
{
    uint32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) / 2;
        if (s[mid].pos <= pos) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* M = residual + in (ef14, none), or M = in - est (ef21: est is this rank's estimator). */
template <typename T>
__global__ void k_add(const T *in, const float *est, float *res, size_t n, uint32_t *flags)
{
    bool bad = false;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float x = sqz_cu_to_f32(in[i]);
        if (sqz_cu_finite(x)) {
            res[i] = est ? x - est[i] : res[i] + x;
        } else {
            bad = true;
        }
    }
    if (bad) {
        flags[0] = 1;
    }
}

/* The first Q's: uniform [-1, 1) per element of the whole warm-start state under one key. */
__global__ void k_init_q(float *q, uint64_t len, uint32_t key)
{
    for (uint64_t e = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; e < len;
         e += (uint64_t)gridDim.x * blockDim.x) {
        q[e] = 2.0f * sqz_cu_hash_f32(key, (uint32_t)e) - 1.0f;
    }
}

/* P = M Q: one warp per row of every layer (ranks up to R <= 32). */
template <int R>
__global__ void k_mq(const sqz_cu_psgd_layer_t *t, uint32_t nl, uint64_t rows, const float *m,
                     const float *qstate, float *msg)
{
    const uint32_t lane  = threadIdx.x & 31;
    const uint64_t warps = (uint64_t)gridDim.x * (blockDim.x / 32);
    for (uint64_t w = blockIdx.x * (uint64_t)(blockDim.x / 32) + threadIdx.x / 32; w < rows;
         w += warps) {
        const sqz_cu_psgd_layer_t L = t[find_layer<&sqz_cu_psgd_layer_t::row_base>(t, nl, w)];
        const uint64_t i   = w - L.row_base;
        const float   *row = m + L.offset + i * L.cols;
        const float   *q   = qstate + L.qs_off;
        const int      kn  = (int)L.r;
        float        acc[R];
#pragma unroll
        for (int k = 0; k < R; k++) {
            acc[k] = 0.0f;
        }
        for (uint32_t j = lane; j < L.cols; j += 32) {
            const float x = row[j];
#pragma unroll
            for (int k = 0; k < R; k++) {
                if (k < kn) {
                    acc[k] = fmaf(x, q[(size_t)k * L.cols + j], acc[k]);
                }
            }
        }
#pragma unroll
        for (int k = 0; k < R; k++) {
            float v = acc[k];
            for (int o = 16; o > 0; o >>= 1) {
                v += __shfl_xor_sync(0xffffffffu, v, o);
            }
            if (0 == lane && k < kn) {
                msg[L.p_off + i * L.r + k] = v;
            }
        }
    }
}

/* The exact part after the P factors; msg[0] poisoned when this rank's input was not finite. */
__global__ void k_gather(const sqz_cu_psgd_span_t *s, uint32_t ns, uint64_t ndense, const float *m,
                         float *dst, const uint32_t *flags, float *msg)
{
    for (uint64_t p = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; p < ndense;
         p += (uint64_t)gridDim.x * blockDim.x) {
        const sqz_cu_psgd_span_t sp = s[find_span(s, ns, p)];
        dst[p]                      = m[sp.lo + (p - sp.pos)];
    }
    if (0 == blockIdx.x && 0 == threadIdx.x && flags[0]) {
        msg[0] = __int_as_float(0x7fc00000);
    }
}

__global__ void k_poison(const uint32_t *flags, float *msg)
{
    if (flags[0]) {
        msg[0] = __int_as_float(0x7fc00000);
    }
}

__global__ void k_check(const float *x, size_t n, uint32_t *flags)
{
    bool bad = false;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        bad |= !sqz_cu_finite(x[i]);
    }
    if (bad) {
        flags[1] = 1;
    }
}

__device__ double block_sum(double v, double *sh)
{
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    const int w = threadIdx.x / 32, lane = threadIdx.x & 31;
    __syncthreads();
    if (0 == lane) {
        sh[w] = v;
    }
    __syncthreads();
    double s = 0;
    for (int i = 0; i < (int)(blockDim.x / 32); i++) {
        s += sh[i]; /* every thread sums in the same order: the same value everywhere */
    }
    return s;
}

/* CholeskyQR2, step 1: partial Gram matrices, one block per (layer, chunk of 256 rows) (the
 * tiles of column 0), thread t < r * r sums P[i][t / r] * P[i][t % r] over the chunk. */
__global__ void k_gram_part(const sqz_cu_psgd_layer_t *t, const sqz_cu_psgd_tile_t *tiles,
                            const float *msg, double *gram)
{
    const sqz_cu_psgd_tile_t T = tiles[blockIdx.x];
    if (0 != T.col0) {
        return;
    }
    const sqz_cu_psgd_layer_t L  = t[T.layer];
    const uint32_t            r  = L.r;
    const uint32_t            i0 = T.chunk * SQZ_CU_PSGD_CHUNK_ROWS;
    const uint32_t            i1 = min(L.rows, i0 + SQZ_CU_PSGD_CHUNK_ROWS);
    const float              *p  = msg + L.p_off;
    for (uint32_t e = threadIdx.x; e < r * r; e += blockDim.x) {
        const uint32_t a = e / r, b = e % r;
        double         g = 0;
        for (uint32_t i = i0; i < i1; i++) {
            g += (double)p[(uint64_t)i * r + a] * (double)p[(uint64_t)i * r + b];
        }
        gram[L.g_off + (uint64_t)T.chunk * r * r + e] = g;
    }
}

/* Step 2, one block per layer: G = the partials summed in chunk order (a thread per entry, in
 * the first chunk's place, where R is then built), its Cholesky factor R (upper, G = R^T R) row
 * by row with each row's entries in parallel (a column whose pivot falls under 1e-12 of its
 * diagonal is dependent and dropped), then R^-1 after the partials (upper triangular; 0 rows
 * and columns for dropped ones), a thread per column.  Every entry is summed in the order of the
 * sequential factorization: the result does not depend on the block size. */
__global__ void k_gram_chol(const sqz_cu_psgd_layer_t *t, double *gram)
{
    __shared__ bool           drop[SQZ_CU_PSGD_RMAX];
    __shared__ double         gkk;
    const sqz_cu_psgd_layer_t L = t[blockIdx.x];
    const uint32_t            r = L.r;
    double                   *g = gram + L.g_off;
    double                   *R = g; /* r x r, row-major: G, overwritten row by row by R */
    for (uint32_t e = threadIdx.x; e < r * r; e += blockDim.x) {
        double s = 0;
        for (uint32_t c = 0; c < L.nchunks; c++) {
            s += g[(uint64_t)c * r * r + e];
        }
        R[e] = s; /* (this thread alone reads and writes entry e) */
    }
    __syncthreads();
    for (uint32_t k = 0; k < r; k++) {
        if (0 == threadIdx.x) {
            gkk = R[k * r + k];
        }
        /* Row k: s_j = G[k][j] - sum_{i<k} R[i][k] R[i][j] for j >= k (rows i < k are final). */
        for (uint32_t j = k + threadIdx.x; j < r; j += blockDim.x) {
            double s = R[k * r + j];
            for (uint32_t i = 0; i < k; i++) {
                s -= R[i * r + k] * R[i * r + j];
            }
            R[k * r + j] = s;
        }
        __syncthreads();
        if (0 == threadIdx.x) {
            const double d = R[k * r + k];
            drop[k]        = !(d > 1e-12 * gkk && d > 1e-300);
            R[k * r + k]   = drop[k] ? 1.0 : sqrt(d);
        }
        __syncthreads();
        for (uint32_t j = k + 1 + threadIdx.x; j < r; j += blockDim.x) {
            R[k * r + j] = drop[k] ? 0.0 : R[k * r + j] / R[k * r + k];
        }
        __syncthreads();
    }
    /* R^-1 by back substitution, a column per thread; dropped indices give zero rows/columns. */
    double *inv = g + (uint64_t)L.nchunks * r * r;
    for (uint32_t c = threadIdx.x; c < r; c += blockDim.x) {
        for (int a = (int)r - 1; a >= 0; a--) {
            double s = (a == (int)c) ? 1.0 : 0.0;
            for (uint32_t b = (uint32_t)a + 1; b < r; b++) {
                s -= R[(uint32_t)a * r + b] * inv[b * r + c];
            }
            inv[(uint32_t)a * r + c] =
                (drop[a] || drop[c] || (uint32_t)a > c) ? 0.0 : s / R[(uint32_t)a * r + a];
        }
    }
}

/* Step 3: P = P R^-1, one thread per row of every layer. */
__global__ void k_gram_apply(const sqz_cu_psgd_layer_t *t, uint32_t nl, uint64_t rows, float *msg,
                             const double *gram)
{
    for (uint64_t w = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; w < rows;
         w += (uint64_t)gridDim.x * blockDim.x) {
        const sqz_cu_psgd_layer_t L   = t[find_layer<&sqz_cu_psgd_layer_t::row_base>(t, nl, w)];
        const uint32_t            r   = L.r;
        float                    *p   = msg + L.p_off + (w - L.row_base) * r;
        const double             *inv = gram + L.g_off + (uint64_t)L.nchunks * r * r;
        /* In place, last column first: column c reads p[0..c], which are not yet written. */
        for (int c = (int)r - 1; c >= 0; c--) {
            double s = 0;
            for (int a = 0; a <= c; a++) {
                s += (double)p[a] * inv[(uint32_t)a * r + (uint32_t)c];
            }
            p[c] = (float)s;
        }
    }
}

/* Partial sums of M^T P per (layer, 128 columns, 256 rows) (ranks up to R <= 32). */
template <int R>
__global__ void k_mtp_part(const sqz_cu_psgd_layer_t *t, const sqz_cu_psgd_tile_t *tiles,
                           const float *m, const float *msg, float *part)
{
    const sqz_cu_psgd_tile_t  T = tiles[blockIdx.x];
    const sqz_cu_psgd_layer_t L = t[T.layer];
    const uint32_t            j = T.col0 + threadIdx.x;
    const uint32_t            i0 = T.chunk * SQZ_CU_PSGD_CHUNK_ROWS;
    const uint32_t            i1 = min(L.rows, i0 + SQZ_CU_PSGD_CHUNK_ROWS);
    if (j >= L.cols) {
        return;
    }
    const float *p  = msg + L.p_off;
    const int    kn = (int)L.r;
    float        acc[R];
#pragma unroll
    for (int k = 0; k < R; k++) {
        acc[k] = 0.0f;
    }
    for (uint32_t i = i0; i < i1; i++) {
        const float x = m[L.offset + (uint64_t)i * L.cols + j];
#pragma unroll
        for (int k = 0; k < R; k++) {
            if (k < kn) {
                acc[k] = fmaf(x, p[(uint64_t)i * L.r + k], acc[k]);
            }
        }
    }
    float *dst = part + L.part_off + (uint64_t)T.chunk * L.r * L.cols;
#pragma unroll
    for (int k = 0; k < R; k++) {
        if (k < kn) {
            dst[(uint64_t)k * L.cols + j] = acc[k];
        }
    }
}

__global__ void k_mtp_sum(const sqz_cu_psgd_layer_t *t, uint32_t nl, uint64_t qelems,
                          const float *part, float *qloc)
{
    for (uint64_t e = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; e < qelems;
         e += (uint64_t)gridDim.x * blockDim.x) {
        const sqz_cu_psgd_layer_t L = t[find_layer<&sqz_cu_psgd_layer_t::qe_base>(t, nl, e)];
        const uint64_t            x = e - L.qe_base; /* k * cols + j */
        const uint64_t            stride = (uint64_t)L.r * L.cols;
        float                     s      = 0.0f;
        for (uint32_t c = 0; c < L.nchunks; c++) {
            s += part[L.part_off + c * stride + x];
        }
        qloc[L.q_off + x] = s;
    }
}

__global__ void k_store_q(const sqz_cu_psgd_layer_t *t, uint32_t nl, uint64_t qelems,
                          const float *qsum, float *qstate, float inv, const uint32_t *flags)
{
    if (flags[0] | flags[1]) {
        return; /* a non-finite call keeps the previous warm start */
    }
    for (uint64_t e = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; e < qelems;
         e += (uint64_t)gridDim.x * blockDim.x) {
        const sqz_cu_psgd_layer_t L = t[find_layer<&sqz_cu_psgd_layer_t::qe_base>(t, nl, e)];
        const uint64_t            x = e - L.qe_base;
        qstate[L.qs_off + x]        = qsum[L.q_off + x] * inv;
    }
}

/* The end of a call for element g of a compressed layer, given s = (P^ Qsum^T)[g] and
 * l = (P^ Qloc^T)[g] (unused when bad): sqz_cu_psgd_finish's contract, element by element. */
template <typename T>
__device__ __forceinline__ void finish_elem(uint64_t g, float s, float l, float *m, const T *in,
                                            T *out, float scale, int ef, sqz_cu_psgd_ef21_t e21,
                                            bool bad)
{
    const float mv = m[g];
    if (bad) {
        if (!e21.est) { /* (ef21's M is scratch: its estimators are left as they were) */
            const float v = sqz_cu_to_f32(in[g]);
            m[g]          = sqz_cu_finite(v) ? mv - v : mv;
        }
        out[g] = sqz_cu_from_f32<T>(__int_as_float(0x7fc00000));
    } else if (e21.est) {
        /* est_i += P^ Q_i^T (this rank's share); G += P^ Q^T; the caller gets G. */
        e21.est[g] += l;
        const float gs = e21.shared[g] + s;
        e21.shared[g]  = gs;
        out[g]         = sqz_cu_from_f32<T>(gs * scale);
    } else {
        out[g] = sqz_cu_from_f32<T>(s * scale);
        m[g]   = ef ? mv - l : 0.0f;
    }
}

template <typename T>
__global__ void k_finish_layers(const sqz_cu_psgd_layer_t *t, uint32_t nl, uint64_t elems,
                                const float *msg, uint64_t qsum_off, const float *qloc, float *m,
                                const T *in, T *out, float scale, int ef, sqz_cu_psgd_ef21_t e21,
                                const uint32_t *flags)
{
    const bool bad = flags[0] | flags[1];
    for (uint64_t e = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; e < elems;
         e += (uint64_t)gridDim.x * blockDim.x) {
        const sqz_cu_psgd_layer_t L = t[find_layer<&sqz_cu_psgd_layer_t::elem_base>(t, nl, e)];
        const uint64_t            x = e - L.elem_base;
        const uint64_t            i = x / L.cols, j = x - i * L.cols;
        float                     s = 0.0f, l = 0.0f;
        if (!bad) {
            const float *p  = msg + L.p_off + i * L.r;
            const float *qs = msg + qsum_off + L.q_off + j;
            const float *ql = qloc + L.q_off + j;
            for (uint32_t k = 0; k < L.r; k++) {
                s = fmaf(p[k], qs[(uint64_t)k * L.cols], s);
                l = fmaf(p[k], ql[(uint64_t)k * L.cols], l);
            }
        }
        finish_elem(L.offset + x, s, l, m, in, out, scale, ef, e21, bad);
    }
}

/* -------------------------------------------------------------------------------------------
 * Tiled products, for plans whose largest rank is over 32 (the kernels above keep every factor
 * column of a row in registers, which stops at 32, and read Q and P from cache for every element
 * of M).  Each block owns one tile of the plan (a layer, 128 columns, 256 rows) and computes its
 * outputs in 64 x 64 tiles, the inner dimension staged through shared memory 16 at a time; each
 * of 256 threads owns 4 x 4 outputs.  The 64 x 64 output tiles of a plan tile are spread over the
 * grid's second dimension (blockIdx.y, every gridDim.y-th pair): a 256-row chunk at rank 128 is up
 * to 8 blocks, not one, so that layers of a few hundred rows fill the GPU.  Each output tile is
 * computed whole by one block, so the split changes no number.  The inner sums run in the same
 * order as the per-element kernels' (fmaf over the inner index, ascending), so the Gram matrix and
 * the finish are the same numbers either way.
 * ----------------------------------------------------------------------------------------- */

constexpr int kTile = 64; /* output tile edge */
constexpr int kStep = 16; /* inner indices staged per round */

typedef float tile_buf_t[kStep][kTile + 1];

/* Output tiles of kTile along an extent of `len` elements. */
__host__ __device__ constexpr uint32_t tiles_of(uint32_t len) { return (len + kTile - 1) / kTile; }

/* The second grid dimension of the tiled launches: the most output tile pairs any plan tile has
 * (256 rows x rank, 128 columns x rank, rank x rank, 256 rows x 128 columns). */
static unsigned tile_pairs(uint32_t rmax)
{
    const uint32_t rows = tiles_of(SQZ_CU_PSGD_CHUNK_ROWS), cols = tiles_of(SQZ_CU_PSGD_TILE_COLS);
    const uint32_t r = tiles_of(rmax);
    uint32_t       y = rows * r;
    y = y > cols * r ? y : cols * r;
    y = y > r * r ? y : r * r;
    return y > rows * cols ? y : rows * cols;
}

/* acc[x][y] += sum over a round of a[s][ty * 4 + x] * b[s][tx * 4 + y] (in Acc precision). */
template <typename Acc>
__device__ __forceinline__ void tile_round(const tile_buf_t &a, const tile_buf_t &b,
                                           Acc (&acc)[4][4])
{
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
    for (int s = 0; s < kStep; s++) {
        Acc av[4], bv[4];
#pragma unroll
        for (int x = 0; x < 4; x++) {
            av[x] = a[s][ty * 4 + x];
            bv[x] = b[s][tx * 4 + x];
        }
#pragma unroll
        for (int x = 0; x < 4; x++) {
#pragma unroll
            for (int y = 0; y < 4; y++) {
                acc[x][y] = fma(av[x], bv[y], acc[x][y]);
            }
        }
    }
}

/* The rows [lo, hi) of tile T's chunk. */
__device__ __forceinline__ void chunk_rows(const sqz_cu_psgd_tile_t &T,
                                           const sqz_cu_psgd_layer_t &L, uint32_t *lo,
                                           uint32_t *hi)
{
    *lo = T.chunk * SQZ_CU_PSGD_CHUNK_ROWS;
    *hi = min(L.rows, *lo + SQZ_CU_PSGD_CHUNK_ROWS);
}

/* P = M Q: the tiles of column 0 (one per 256-row chunk) compute the chunk's rows of P, over 16
 * columns of M a round: M is read once per 64 factor columns, Q once per 64 rows. */
__global__ void k_mq_tiled(const sqz_cu_psgd_layer_t *t, const sqz_cu_psgd_tile_t *tiles,
                           const float *m, const float *qstate, float *msg)
{
    __shared__ tile_buf_t     a, b;
    const sqz_cu_psgd_tile_t  T = tiles[blockIdx.x];
    const sqz_cu_psgd_layer_t L = t[T.layer];
    if (0 != T.col0) {
        return;
    }
    uint32_t lo, hi;
    chunk_rows(T, L, &lo, &hi);
    const float   *M = m + L.offset, *Q = qstate + L.qs_off;
    const int      tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const uint32_t nk = tiles_of(L.r);
    for (uint32_t pair = blockIdx.y; pair < tiles_of(hi - lo) * nk; pair += gridDim.y) {
        const uint32_t i0 = lo + pair / nk * kTile, k0 = pair % nk * kTile;
        float acc[4][4] = {};
        for (uint32_t j0 = 0; j0 < L.cols; j0 += kStep) {
            for (int e = threadIdx.x; e < kTile * kStep; e += blockDim.x) {
                const int      u = e / kStep, v = e % kStep; /* v: along M's rows */
                const uint32_t j = j0 + v;
                const bool     in_j = j < L.cols;
                a[v][u] = (in_j && i0 + u < hi) ? M[(uint64_t)(i0 + u) * L.cols + j] : 0.0f;
                b[v][u] = (in_j && k0 + u < L.r) ? Q[(uint64_t)(k0 + u) * L.cols + j] : 0.0f;
            }
            __syncthreads();
            tile_round(a, b, acc);
            __syncthreads();
        }
#pragma unroll
        for (int x = 0; x < 4; x++) {
#pragma unroll
            for (int y = 0; y < 4; y++) {
                const uint32_t i = i0 + ty * 4 + x, k = k0 + tx * 4 + y;
                if (i < hi && k < L.r) {
                    msg[L.p_off + (uint64_t)i * L.r + k] = acc[x][y];
                }
            }
        }
    }
}

/* Partial sums of M^T P per tile (layer, 128 columns, 256 rows), over 16 rows a round. */
__global__ void k_mtp_tiled(const sqz_cu_psgd_layer_t *t, const sqz_cu_psgd_tile_t *tiles,
                            const float *m, const float *msg, float *part)
{
    __shared__ tile_buf_t     a, b;
    const sqz_cu_psgd_tile_t  T = tiles[blockIdx.x];
    const sqz_cu_psgd_layer_t L = t[T.layer];
    uint32_t                  lo, hi;
    chunk_rows(T, L, &lo, &hi);
    const float   *M = m + L.offset, *P = msg + L.p_off;
    float         *dst = part + L.part_off + (uint64_t)T.chunk * L.r * L.cols;
    const uint32_t j_end = min(L.cols, T.col0 + SQZ_CU_PSGD_TILE_COLS);
    const int      tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const uint32_t nk = tiles_of(L.r);
    for (uint32_t pair = blockIdx.y; pair < tiles_of(j_end - T.col0) * nk; pair += gridDim.y) {
        const uint32_t j0 = T.col0 + pair / nk * kTile, k0 = pair % nk * kTile;
        float acc[4][4] = {};
        for (uint32_t i0 = lo; i0 < hi; i0 += kStep) {
            for (int e = threadIdx.x; e < kTile * kStep; e += blockDim.x) {
                const int      u = e % kTile, v = e / kTile; /* u: along the rows of M, P */
                const uint32_t i = i0 + v;
                const bool     in_i = i < hi;
                a[v][u] = (in_i && j0 + u < j_end) ? M[(uint64_t)i * L.cols + j0 + u] : 0.0f;
                b[v][u] = (in_i && k0 + u < L.r) ? P[(uint64_t)i * L.r + k0 + u] : 0.0f;
            }
            __syncthreads();
            tile_round(a, b, acc);
            __syncthreads();
        }
#pragma unroll
        for (int x = 0; x < 4; x++) {
#pragma unroll
            for (int y = 0; y < 4; y++) {
                const uint32_t j = j0 + ty * 4 + x, k = k0 + tx * 4 + y;
                if (j < j_end && k < L.r) {
                    dst[(uint64_t)k * L.cols + j] = acc[x][y];
                }
            }
        }
    }
}

/* CholeskyQR2, step 1, tiled: the Gram partials of each 256-row chunk (the tiles of column 0),
 * in double, over 16 rows a round: the same sums as k_gram_part's. */
__global__ void k_gram_tiled(const sqz_cu_psgd_layer_t *t, const sqz_cu_psgd_tile_t *tiles,
                             const float *msg, double *gram)
{
    __shared__ tile_buf_t     a, b;
    const sqz_cu_psgd_tile_t  T = tiles[blockIdx.x];
    const sqz_cu_psgd_layer_t L = t[T.layer];
    if (0 != T.col0) {
        return;
    }
    uint32_t lo, hi;
    chunk_rows(T, L, &lo, &hi);
    const uint32_t r = L.r;
    const float   *P = msg + L.p_off;
    double        *g = gram + L.g_off + (uint64_t)T.chunk * r * r;
    const int      tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const uint32_t nr = tiles_of(r);
    for (uint32_t pair = blockIdx.y; pair < nr * nr; pair += gridDim.y) {
        const uint32_t a0 = pair / nr * kTile, b0 = pair % nr * kTile;
        double acc[4][4] = {};
        for (uint32_t i0 = lo; i0 < hi; i0 += kStep) {
            for (int e = threadIdx.x; e < kTile * kStep; e += blockDim.x) {
                const int      u = e % kTile, v = e / kTile;
                const uint32_t i = i0 + v;
                a[v][u] = (i < hi && a0 + u < r) ? P[(uint64_t)i * r + a0 + u] : 0.0f;
                b[v][u] = (i < hi && b0 + u < r) ? P[(uint64_t)i * r + b0 + u] : 0.0f;
            }
            __syncthreads();
            tile_round(a, b, acc);
            __syncthreads();
        }
#pragma unroll
        for (int x = 0; x < 4; x++) {
#pragma unroll
            for (int y = 0; y < 4; y++) {
                const uint32_t ea = a0 + ty * 4 + x, eb = b0 + tx * 4 + y;
                if (ea < r && eb < r) {
                    g[ea * r + eb] = acc[x][y];
                }
            }
        }
    }
}

/* The end of a call on the layers, tiled: each tile's 256 x 128 elements in 64 x 64 tiles, s and
 * l over 16 factor columns a round (P^ and the two Q's staged), then finish_elem. */
template <typename T>
__global__ void k_finish_tiled(const sqz_cu_psgd_layer_t *t, const sqz_cu_psgd_tile_t *tiles,
                               const float *msg, uint64_t qsum_off, const float *qloc, float *m,
                               const T *in, T *out, float scale, int ef, sqz_cu_psgd_ef21_t e21,
                               const uint32_t *flags)
{
    __shared__ tile_buf_t     a, bs, bl;
    const sqz_cu_psgd_tile_t  Tl = tiles[blockIdx.x];
    const sqz_cu_psgd_layer_t L  = t[Tl.layer];
    const bool                bad = flags[0] | flags[1];
    uint32_t                  lo, hi;
    chunk_rows(Tl, L, &lo, &hi);
    const float   *P = msg + L.p_off, *Qs = msg + qsum_off + L.q_off, *Ql = qloc + L.q_off;
    const uint32_t j_end = min(L.cols, Tl.col0 + SQZ_CU_PSGD_TILE_COLS);
    const int      tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const uint32_t nj = tiles_of(j_end - Tl.col0);
    for (uint32_t pair = blockIdx.y; pair < tiles_of(hi - lo) * nj; pair += gridDim.y) {
        const uint32_t i0 = lo + pair / nj * kTile, j0 = Tl.col0 + pair % nj * kTile;
        float as[4][4] = {}, al[4][4] = {};
        for (uint32_t k0 = 0; !bad && k0 < L.r; k0 += kStep) {
            for (int e = threadIdx.x; e < kTile * kStep; e += blockDim.x) {
                const int      u = e / kStep, v = e % kStep; /* P: along its rows */
                const uint32_t k = k0 + v;
                a[v][u] = (k < L.r && i0 + u < hi) ? P[(uint64_t)(i0 + u) * L.r + k] : 0.0f;
                const int      u2 = e % kTile, v2 = e / kTile; /* Q's: along columns */
                const uint32_t k2 = k0 + v2;
                const bool     ok = k2 < L.r && j0 + u2 < j_end;
                bs[v2][u2] = ok ? Qs[(uint64_t)k2 * L.cols + j0 + u2] : 0.0f;
                bl[v2][u2] = ok ? Ql[(uint64_t)k2 * L.cols + j0 + u2] : 0.0f;
            }
            __syncthreads();
            tile_round(a, bs, as);
            tile_round(a, bl, al);
            __syncthreads();
        }
#pragma unroll
        for (int x = 0; x < 4; x++) {
#pragma unroll
            for (int y = 0; y < 4; y++) {
                const uint32_t i = i0 + ty * 4 + x, j = j0 + tx * 4 + y;
                if (i < hi && j < j_end) {
                    finish_elem(L.offset + (uint64_t)i * L.cols + j, as[x][y], al[x][y], m,
                                in, out, scale, ef, e21, bad);
                }
            }
        }
    }
}

template <typename T>
__global__ void k_finish_spans(const sqz_cu_psgd_span_t *s, uint32_t ns, uint64_t ndense,
                               const float *exact, float *m, const T *in, T *out, float scale,
                               sqz_cu_psgd_ef21_t e21, const uint32_t *flags)
{
    const bool bad = flags[0] | flags[1];
    for (uint64_t p = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; p < ndense;
         p += (uint64_t)gridDim.x * blockDim.x) {
        const sqz_cu_psgd_span_t sp = s[find_span(s, ns, p)];
        const uint64_t           g  = sp.lo + (p - sp.pos);
        if (bad) {
            if (!e21.est) {
                const float v = sqz_cu_to_f32(in[g]);
                m[g]          = sqz_cu_finite(v) ? m[g] - v : m[g];
            }
            out[g] = sqz_cu_from_f32<T>(__int_as_float(0x7fc00000));
        } else if (e21.est) {
            /* Sent exactly: est_i += M (= in - est_i), G += the exact sum. */
            e21.est[g] += m[g];
            const float gs = e21.shared[g] + exact[p];
            e21.shared[g]  = gs;
            out[g]         = sqz_cu_from_f32<T>(gs * scale);
        } else {
            out[g] = sqz_cu_from_f32<T>(exact[p] * scale);
            m[g]   = 0.0f;
        }
    }
}

/* Probe statistics of every compressed layer: out[l * SQZ_CU_PSGD_PROBE_STRIDE] = ||M_l||^2, then
 * ||Q_i[:, k]||^2 for k < r (this rank's shares): the error at rank k is the norm minus the first k
 * (Gram-Schmidt's basis is nested). */
__global__ void k_probe(const sqz_cu_psgd_layer_t *t, const float *m, const float *qloc, double *out)
{
    __shared__ double         sh[kThreads / 32];
    const sqz_cu_psgd_layer_t L = t[blockIdx.x];
    double                    nn = 0;
    const uint64_t            e  = (uint64_t)L.rows * L.cols;
    for (uint64_t i = threadIdx.x; i < e; i += blockDim.x) {
        const double v = m[L.offset + i];
        nn += v * v;
    }
    nn = block_sum(nn, sh);
    if (0 == threadIdx.x) {
        out[(uint64_t)blockIdx.x * SQZ_CU_PSGD_PROBE_STRIDE] = nn;
    }
    for (uint32_t k = 0; k < L.r; k++) {
        double c = 0;
        for (uint32_t j = threadIdx.x; j < L.cols; j += blockDim.x) {
            const double v = qloc[L.q_off + (uint64_t)k * L.cols + j];
            c += v * v;
        }
        c = block_sum(c, sh);
        if (0 == threadIdx.x) {
            out[(uint64_t)blockIdx.x * SQZ_CU_PSGD_PROBE_STRIDE + 1 + k] = c;
        }
    }
}

__global__ void k_count(const uint32_t *flags, unsigned long long *counter)
{
    if ((flags[0] | flags[1]) && counter) {
        atomicAdd(counter, 1ull);
    }
}

template <typename T>
sqz_status_t finish_t(const sqz_cu_psgd_plan_t *pl, const float *msg, const float *qloc,
                             float *m, const T *in, T *out, float scale, int ef,
                             sqz_cu_psgd_ef21_t e21, const uint32_t *flags,
                             unsigned long long *counter, cudaStream_t s)
{
    if (pl->elems > 0 && pl->rmax > kTiledAbove) {
        const dim3 grid(pl->ntiles, tile_pairs(pl->rmax));
        k_finish_tiled<T><<<grid, kThreads, 0, s>>>(pl->layers, pl->tiles, msg,
                                                           pl->plen + pl->ndense, qloc, m, in,
                                                           out, scale, ef, e21, flags);
        SQZ_CU_CHECK_LAUNCH();
    } else if (pl->elems > 0) {
        k_finish_layers<T><<<sqz_cu_grid(pl->elems, kThreads * 4), kThreads, 0, s>>>(
            pl->layers, pl->nlayers, pl->elems, msg, pl->plen + pl->ndense, qloc, m, in, out,
            scale, ef, e21, flags);
        SQZ_CU_CHECK_LAUNCH();
    }
    if (pl->ndense > 0) {
        k_finish_spans<T><<<sqz_cu_grid(pl->ndense, kThreads * 4), kThreads, 0, s>>>(
            pl->spans, pl->nspans, pl->ndense, msg + pl->plen, m, in, out, scale, e21, flags);
        SQZ_CU_CHECK_LAUNCH();
    }
    k_count<<<1, 1, 0, s>>>(flags, counter);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

} // namespace

extern "C" {

sqz_status_t sqz_cu_psgd_add(const void *in, sqz_dtype_t dtype, const float *est, float *res,
                             size_t n, uint32_t *flags, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    const unsigned g = sqz_cu_grid(n, kThreads * 8);
    switch (dtype) {
    case SQZ_DTYPE_FLOAT32:
        k_add<<<g, kThreads, 0, s>>>((const float *)in, est, res, n, flags);
        break;
    case SQZ_DTYPE_FLOAT16:
        k_add<<<g, kThreads, 0, s>>>((const __half *)in, est, res, n, flags);
        break;
    case SQZ_DTYPE_BFLOAT16:
        k_add<<<g, kThreads, 0, s>>>((const __nv_bfloat16 *)in, est, res, n, flags);
        break;
    default: return SQZ_ERR_INVALID_PARAM;
    }
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

sqz_status_t sqz_cu_psgd_init_q(float *qstate, size_t len, uint32_t key, void *stream)
{
    k_init_q<<<sqz_cu_grid(len, kThreads * 4), kThreads, 0, (cudaStream_t)stream>>>(qstate, len,
                                                                                     key);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

sqz_status_t sqz_cu_psgd_mq(const sqz_cu_psgd_plan_t *pl, const float *m, const float *qstate,
                            float *msg, int dense, const uint32_t *flags, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    if (pl->rows > 0 && pl->rmax > kTiledAbove) {
        const dim3 grid(pl->ntiles, tile_pairs(pl->rmax));
        k_mq_tiled<<<grid, kThreads, 0, s>>>(pl->layers, pl->tiles, m, qstate, msg);
        SQZ_CU_CHECK_LAUNCH();
    } else if (pl->rows > 0) {
        const unsigned g = sqz_cu_grid(pl->rows, kThreads / 32);
#define SQZ_PSGD_MQ(R) k_mq<R><<<g, kThreads, 0, s>>>(pl->layers, pl->nlayers, pl->rows, m, qstate, msg)
        if (pl->rmax <= 4) {
            SQZ_PSGD_MQ(4);
        } else if (pl->rmax <= 8) {
            SQZ_PSGD_MQ(8);
        } else if (pl->rmax <= 16) {
            SQZ_PSGD_MQ(16);
        } else {
            SQZ_PSGD_MQ(32);
        }
#undef SQZ_PSGD_MQ
        SQZ_CU_CHECK_LAUNCH();
    }
    if (dense && pl->ndense > 0) {
        k_gather<<<sqz_cu_grid(pl->ndense, kThreads * 4), kThreads, 0, s>>>(
            pl->spans, pl->nspans, pl->ndense, m, msg + pl->plen, flags, msg);
    } else {
        k_poison<<<1, 1, 0, s>>>(flags, msg);
    }
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

sqz_status_t sqz_cu_psgd_check(const float *x, size_t n, uint32_t *flags, void *stream)
{
    if (n > 0) {
        k_check<<<sqz_cu_grid(n, kThreads * 8), kThreads, 0, (cudaStream_t)stream>>>(x, n, flags);
        SQZ_CU_CHECK_LAUNCH();
    }
    return SQZ_OK;
}

sqz_status_t sqz_cu_psgd_orth(const sqz_cu_psgd_plan_t *pl, float *msg, double *gram, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    if (0 == pl->nlayers) {
        return SQZ_OK;
    }
    for (int pass = 0; pass < 2; pass++) {
        if (pl->rmax > kTiledAbove) {
            const dim3 grid(pl->ntiles, tile_pairs(pl->rmax));
            k_gram_tiled<<<grid, kThreads, 0, s>>>(pl->layers, pl->tiles, msg, gram);
        } else {
            k_gram_part<<<pl->ntiles, kThreads, 0, s>>>(pl->layers, pl->tiles, msg, gram);
        }
        SQZ_CU_CHECK_LAUNCH();
        k_gram_chol<<<pl->nlayers, kThreads, 0, s>>>(pl->layers, gram);
        SQZ_CU_CHECK_LAUNCH();
        k_gram_apply<<<sqz_cu_grid(pl->rows, kThreads), kThreads, 0, s>>>(pl->layers, pl->nlayers,
                                                                         pl->rows, msg, gram);
        SQZ_CU_CHECK_LAUNCH();
    }
    return SQZ_OK;
}

sqz_status_t sqz_cu_psgd_mtp(const sqz_cu_psgd_plan_t *pl, const float *m, const float *msg,
                             float *qloc, float *part, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    if (0 == pl->ntiles) {
        return SQZ_OK;
    }
#define SQZ_PSGD_MTP(R) \
    k_mtp_part<R><<<pl->ntiles, SQZ_CU_PSGD_TILE_COLS, 0, s>>>(pl->layers, pl->tiles, m, msg, part)
    if (pl->rmax > kTiledAbove) {
        const dim3 grid(pl->ntiles, tile_pairs(pl->rmax));
        k_mtp_tiled<<<grid, kThreads, 0, s>>>(pl->layers, pl->tiles, m, msg, part);
    } else if (pl->rmax <= 4) {
        SQZ_PSGD_MTP(4);
    } else if (pl->rmax <= 8) {
        SQZ_PSGD_MTP(8);
    } else if (pl->rmax <= 16) {
        SQZ_PSGD_MTP(16);
    } else {
        SQZ_PSGD_MTP(32);
    }
#undef SQZ_PSGD_MTP
    SQZ_CU_CHECK_LAUNCH();
    k_mtp_sum<<<sqz_cu_grid(pl->qelems, kThreads), kThreads, 0, s>>>(pl->layers, pl->nlayers,
                                                                       pl->qelems, part, qloc);
    SQZ_CU_CHECK_LAUNCH();
    return SQZ_OK;
}

sqz_status_t sqz_cu_psgd_probe(const sqz_cu_psgd_plan_t *pl, const float *m, const float *qloc,
                               double *out, void *stream)
{
    if (pl->nlayers > 0) {
        k_probe<<<pl->nlayers, kThreads, 0, (cudaStream_t)stream>>>(pl->layers, m, qloc, out);
        SQZ_CU_CHECK_LAUNCH();
    }
    return SQZ_OK;
}

sqz_status_t sqz_cu_psgd_store_q(const sqz_cu_psgd_plan_t *pl, const float *qsum, float *qstate,
                                 float inv_nranks, const uint32_t *flags, void *stream)
{
    if (pl->qelems > 0) {
        k_store_q<<<sqz_cu_grid(pl->qelems, kThreads), kThreads, 0, (cudaStream_t)stream>>>(
            pl->layers, pl->nlayers, pl->qelems, qsum, qstate, inv_nranks, flags);
        SQZ_CU_CHECK_LAUNCH();
    }
    return SQZ_OK;
}

sqz_status_t sqz_cu_psgd_finish(const sqz_cu_psgd_plan_t *pl, const float *msg, const float *qloc,
                                float *m, const void *in, void *out, sqz_dtype_t dtype, size_t n,
                                float scale, int ef, sqz_cu_psgd_ef21_t e21,
                                const uint32_t *flags, unsigned long long *nonfinite_calls,
                                void *stream)
{
    (void)n;
    cudaStream_t s = (cudaStream_t)stream;
    switch (dtype) {
    case SQZ_DTYPE_FLOAT32:
        return finish_t(pl, msg, qloc, m, (const float *)in, (float *)out, scale, ef, e21, flags,
                        nonfinite_calls, s);
    case SQZ_DTYPE_FLOAT16:
        return finish_t(pl, msg, qloc, m, (const __half *)in, (__half *)out, scale, ef, e21,
                        flags, nonfinite_calls, s);
    case SQZ_DTYPE_BFLOAT16:
        return finish_t(pl, msg, qloc, m, (const __nv_bfloat16 *)in, (__nv_bfloat16 *)out, scale,
                        ef, e21, flags, nonfinite_calls, s);
    default: return SQZ_ERR_INVALID_PARAM;
    }
}

} // extern "C"
