/*
 * PowerSGD's device kernels (plugins/powersgd/sqz_powersgd.cu), driven by the GPU engine
 * (src/cuda/sqz_gpu_powersgd.c).  The same algorithm as the CPU plugin (plugins/powersgd/
 * sqz_powersgd.c, whose header comment is the specification), without cuBLAS: every product is
 * skinny (rank r <= SQZ_CU_PSGD_RMAX), so each kernel reads its matrix once per 32 columns of the
 * factors and is bound by memory bandwidth.
 *
 * Layout of the work: the host plans a call (sqz_powersgd_plan.h) into a table of compressed
 * layers and a table of exact spans, uploads them once per plan, and every kernel walks them.
 * Messages: msg = [P factors (rows x r each, row-major) | exact part | Q sums (r x cols each,
 * column-major)], qloc = this rank's Q shares.  flags[0]: this rank's input is not finite;
 * flags[1]: a summed message is not finite (the same on every rank).
 * Plain C declarations, usable from C.
 */
#ifndef SQZ_CUDA_POWERSGD_H
#define SQZ_CUDA_POWERSGD_H

#include <stddef.h>
#include <stdint.h>

#include <squeeze.h>

#ifdef __cplusplus
extern "C" {
#endif

/** One compressed layer of a plan (device table). */
typedef struct sqz_cu_psgd_layer {
    uint64_t offset;    /* first element in the buffer */
    uint32_t rows, cols, r;
    uint32_t pad_;
    uint64_t p_off;     /* its P in msg */
    uint64_t q_off;     /* its Q share in qloc, and its Q sum at msg + qsum_off */
    uint64_t qs_off;    /* its warm-start Q in the state (qslot columns of cols) */
    uint64_t row_base;  /* rows of the layers before it (row-indexed kernels) */
    uint64_t elem_base; /* elements of the layers before it (element-indexed kernels) */
    uint64_t qe_base;   /* r * cols of the layers before it (Q-indexed kernels) */
    uint64_t part_off;  /* its partial sums of M^T P in the workspace */
    uint32_t nchunks;   /* row chunks of the M^T P partial sums (and of the Gram matrix's) */
    uint32_t pad2_;
    uint64_t g_off;     /* its Gram partials (nchunks r x r) then R^-1 (r x r), doubles */
} sqz_cu_psgd_layer_t;

/** One exact span: elements [lo, lo + len) of the buffer at pos in the exact part. */
typedef struct sqz_cu_psgd_span {
    uint64_t lo, len, pos;
} sqz_cu_psgd_span_t;

/** One tile of the M^T P partial sums: a layer, a block of columns, a chunk of rows. */
typedef struct sqz_cu_psgd_tile {
    uint32_t layer, col0, chunk, pad_;
} sqz_cu_psgd_tile_t;

/** The largest rank the kernels take (plugins/powersgd's SQZ_PSGD_QMAX), and the doubles of
 *  sqz_cu_psgd_probe's output per layer. */
#define SQZ_CU_PSGD_RMAX 128u
#define SQZ_CU_PSGD_PROBE_STRIDE (1u + SQZ_CU_PSGD_RMAX)

/** Rows per chunk and columns per tile of the M^T P partial sums. */
#define SQZ_CU_PSGD_CHUNK_ROWS 256u
#define SQZ_CU_PSGD_TILE_COLS 128u

/** A plan on the device, with its totals. */
typedef struct sqz_cu_psgd_plan {
    const sqz_cu_psgd_layer_t *layers; /* device */
    const sqz_cu_psgd_span_t  *spans;  /* device */
    const sqz_cu_psgd_tile_t  *tiles;  /* device */
    uint32_t nlayers, nspans, ntiles, rmax;
    uint64_t rows, elems, qelems, ndense, plen, part;
    uint64_t gram;                     /* doubles of the orthogonalization workspace */
} sqz_cu_psgd_plan_t;

/** SQZ_EF=ef21's estimators of a buffer (device, n floats each), or both NULL: this rank's
 *  estimator g_i and the shared G, identical on every rank (it only adds identical sums). */
typedef struct sqz_cu_psgd_ef21 {
    float *est;
    float *shared;
} sqz_cu_psgd_ef21_t;

/** Forms M in res: res += in (ef14, none), or res = in - est (ef21, est != NULL), where in is
 *  finite; flags[0] = 1 where it is not (res untouched there). */
sqz_status_t sqz_cu_psgd_add(const void *in, sqz_dtype_t dtype, const float *est, float *res,
                             size_t n, uint32_t *flags, void *stream);
/** The first Q's: qstate[e] = uniform [-1, 1) from (key, e) for e < len: the same on every rank. */
sqz_status_t sqz_cu_psgd_init_q(float *qstate, size_t len, uint32_t key, void *stream);
/** P = M Q for every layer, into msg; with dense (first iteration) also the exact part after the
 *  P factors; when flags[0] is set, msg[0] = NaN (every rank will see it). */
sqz_status_t sqz_cu_psgd_mq(const sqz_cu_psgd_plan_t *pl, const float *m, const float *qstate,
                            float *msg, int dense, const uint32_t *flags, void *stream);
/** flags[1] |= any of x[0, n) is not finite. */
sqz_status_t sqz_cu_psgd_check(const float *x, size_t n, uint32_t *flags, void *stream);
/** Orthonormalizes every layer's P in msg by CholeskyQR2 (gram: pl->gram doubles of workspace):
 *  twice, G = P^T P from partial sums per row chunk added in order (deterministic), the Cholesky
 *  factor R of G in double (a column whose pivot falls under 1e-12 of its squared norm is
 *  dependent and becomes 0, as in Gram-Schmidt), then P = P R^-1.  Every step is spread over the
 *  whole grid: no layer waits on r^2 sequential reductions. */
sqz_status_t sqz_cu_psgd_orth(const sqz_cu_psgd_plan_t *pl, float *msg, double *gram, void *stream);
/** qloc = M^T P^ per layer (deterministic: partial sums per row chunk, summed in order). */
sqz_status_t sqz_cu_psgd_mtp(const sqz_cu_psgd_plan_t *pl, const float *m, const float *msg,
                             float *qloc, float *part, void *stream);
/** Layer-adaptive probes: for every compressed layer l (table order), out[l * S] = ||M_l||^2
 *  and out[l * S + 1 + k] = ||Q_i[:, k]||^2 for k < r (S = SQZ_CU_PSGD_PROBE_STRIDE) (doubles; call after the last sqz_cu_psgd_mtp
 *  and before sqz_cu_psgd_finish, which overwrites M). */
sqz_status_t sqz_cu_psgd_probe(const sqz_cu_psgd_plan_t *pl, const float *m, const float *qloc,
                               double *out, void *stream);
/** Warm start: qstate = qsum / nranks for every layer, unless a flag is set (a non-finite call
 *  keeps the previous Q's). */
sqz_status_t sqz_cu_psgd_store_q(const sqz_cu_psgd_plan_t *pl, const float *qsum, float *qstate,
                                 float inv_nranks, const uint32_t *flags, void *stream);
/** The end of a call: out = scale * P^ Qsum^T on the layers and scale * the summed exact part
 *  elsewhere; res = M - P^ Qloc^T on the layers (0 without error feedback, ef == 0) and 0 on the
 *  exact part.  With ef21 estimators (e21.est != NULL) instead: est += P^ Qloc^T on the layers
 *  and += M on the exact part, shared += P^ Qsum^T and the exact sum, out = scale * shared (res
 *  is scratch and left as it is).  When flags[0] or flags[1] is set: out = NaN everywhere,
 *  res = M - in (the residual before the call; ef21: the estimators are untouched), and
 *  *nonfinite_calls += 1. */
sqz_status_t sqz_cu_psgd_finish(const sqz_cu_psgd_plan_t *pl, const float *msg, const float *qloc,
                                float *m, const void *in, void *out, sqz_dtype_t dtype, size_t n,
                                float scale, int ef, sqz_cu_psgd_ef21_t e21,
                                const uint32_t *flags, unsigned long long *nonfinite_calls,
                                void *stream);

#ifdef __cplusplus
}
#endif
#endif
