/*
 * "powersgd": low-rank gradient compression after Vogels, Karimireddy, Jaggi, "PowerSGD: Practical
 * Low-Rank Gradient Compression for Distributed Optimization" (NeurIPS 2019), with the details of
 * the authors' code (epfml/powersgd) and of PyTorch's powerSGD_hook where they matter.
 *
 * The buffer is a list of layers (sqz_matrix_v1_t: a registered layout, a layout file, or
 * pseudo-layers cut by the engine).  For each layer M (rows x cols, row-major) of a = in + residual
 * with rank r = min(level, rows, cols):
 *     P   = M Q                  Q (cols x r) warm-started from the previous call
 *     P   = sum over ranks of P  one SUM all-reduce carrying every layer's P (and the dense part)
 *     P^  = orthonormal columns of P (modified Gram-Schmidt)
 *     Q_i = M^T P^               this rank's share
 *     Q   = sum over ranks of Q_i  one SUM all-reduce carrying every layer's Q
 *     out = P^ Q^T               = P^ P^T (sum of M_i): the projection of the sum onto span(P^)
 *     residual = M - P^ Q_i^T    this rank's own projection error (error feedback)
 * With POWERSGD_ITERS = t > 1 the P/Q pair is repeated t times per call (subspace iteration: a
 * better basis for t - 1 more all-reduces).  The warm start keeps Q / ranks for the next call.
 *
 * Why the local projection error as residual (the paper's code keeps M - out / ranks instead):
 * both give the same sum over ranks, but this one satisfies the error-feedback contract of every
 * other compressor per rank, approximation_i + residual_new == in + residual_old, so the residual
 * holds only what this rank's gradient lost, not the difference between ranks.
 *
 * Layers too small to gain (min(rows, cols) == 1, or (rows + cols) r * POWERSGD_MIN_RATE >=
 * rows * cols, PyTorch's rule) and every element outside the layers are summed exactly, in the
 * first all-reduce, after the P factors: no extra round.  Their residual is sent too and emptied.
 * POWERSGD_START_STEPS first calls of each buffer are dense (the same exact sum, residual
 * included): PowerSGD's start phase, so that EF and the warm start begin from settled buckets.
 *
 * Determinism: P and Q sums are identical on every rank, so P^ and out are too (same code, same
 * inputs).  The first Q of a layer is a uniform [-1, 1) matrix from (SQZ_SEED, layer index): the
 * same on every rank.  NaN/Inf anywhere shows in the summed P buffer on every rank: reduce()
 * returns SQZ_ERR_NONFINITE everywhere after restoring the residual (residual - in).
 *
 * Memory: the residual (n floats, the engine's), Q per layer (cols x min(qcap, rows, cols) floats
 * of per-buffer state, qcap = sqz_psgd_qcap(rank): 32 up to rank 32, then the rank rounded up to a
 * power of two, room for the adaptive levels), and scratch for the P/Q messages and this rank's Q
 * share: sum of (rows + 2 cols) r floats plus the dense part.
 *
 * Levels (layer-adaptive selection, src/adapt): the level of a layer is its rank.  A probing call
 * sends what any other call sends (the layers at their chosen ranks) and measures the candidates
 * on this rank's own M (psgd_probe_local): one power step from the warm start at the largest
 * probed rank; Gram-Schmidt is nested (the first k columns of P^ span the first k columns of P), so
 * ||M||^2 - sum_{c<k} ||Q_i[:, c]||^2 is the error at rank k for every probed k from one
 * computation.  Only those statistics travel (src/adapt's small all-reduce).
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze/compressor_v1.h>

#include "sqz_plugin_util.h"
#include "sqz_powersgd_plan.h"

typedef struct psgd_config {
    int64_t rank;        /* POWERSGD_RANK */
    int64_t iters;       /* POWERSGD_ITERS */
    double  min_rate;    /* POWERSGD_MIN_RATE */
    int64_t start_steps; /* POWERSGD_START_STEPS */
} psgd_config_t;

static const sqz_param_def_v1_t psgd_params[] = {
    {"POWERSGD_RANK", SQZ_PARAM_INT, "4", 1, SQZ_PSGD_QMAX, NULL, offsetof(psgd_config_t, rank),
     "rank r of each layer's approximation P Q^T (PyTorch's matrix_approximation_rank)"},
    {"POWERSGD_ITERS", SQZ_PARAM_INT, "1", 1, 8, NULL, offsetof(psgd_config_t, iters),
     "power iterations per call: each adds one P and one Q all-reduce and sharpens the subspace"},
    {"POWERSGD_MIN_RATE", SQZ_PARAM_DOUBLE, "2", 1, 1e9, NULL, offsetof(psgd_config_t, min_rate),
     "a layer is compressed only when rows*cols exceeds this times (rows+cols)*rank; smaller "
     "layers and 1-D tensors are summed exactly in the first all-reduce"},
    {"POWERSGD_START_STEPS", SQZ_PARAM_INT, "10", 0, 1e12, NULL,
     offsetof(psgd_config_t, start_steps),
     "dense calls per buffer before compressing (PyTorch's start_powerSGD_iter); DDP rebuilds its "
     "buckets after the first step, so keep it >= 2 there"},
};

typedef struct psgd_state {
    psgd_config_t cfg;
    int           nranks;
    uint64_t      seed;
    float        *msg;     /* the message being all-reduced (P factors + dense part, or Q) */
    size_t        msgcap;
    float        *qloc;    /* this rank's Q shares, kept for the residual */
    size_t        qloccap;
    int          *plan;    /* per layer: the rank it is compressed at, 0: exact */
    int           added;   /* this call added its input into the residual */
    size_t        plancap;
    size_t        qcap;    /* warm-start columns per layer at most (sqz_psgd_qcap) */
    float        *probe;   /* a probing call's local P (rows x kmax) then Q share (cols x kmax) */
    size_t        probecap;
} psgd_state_t;

static sqz_status_t psgd_create(const void *config, const sqz_compressor_env_v1_t *env, void **state)
{
    psgd_state_t *s = calloc(1, sizeof(*s));
    if (NULL == s) {
        return SQZ_ERR_NO_MEMORY;
    }
    memcpy(&s->cfg, config, sizeof(s->cfg));
    s->nranks = env->nranks;
    s->seed   = env->seed;
    s->qcap   = sqz_psgd_qcap(s->cfg.rank);
    *state    = s;
    return SQZ_OK;
}

static void psgd_destroy(void *state)
{
    psgd_state_t *s = state;
    if (s) {
        free(s->msg);
        free(s->qloc);
        free(s->plan);
        free(s->probe);
        free(s);
    }
}

static size_t psgd_bufstate_len(void *state, const sqz_matrix_v1_t *layers, size_t nlayers, size_t n)
{
    (void)n;
    return sqz_psgd_bufstate_len(layers, nlayers, ((const psgd_state_t *)state)->qcap);
}

static size_t psgd_layer_rank(const psgd_state_t *s, const sqz_matrix_v1_t *l, int level)
{
    return sqz_psgd_layer_rank(l, level, s->cfg.min_rate, s->qcap);
}

static size_t psgd_level_bytes(void *state, const sqz_matrix_v1_t *l, int level)
{
    const size_t r = psgd_layer_rank(state, l, level);
    return sizeof(float) * (r ? (l->rows + l->cols) * r : l->rows * l->cols);
}

/* Dense kernels.  Q and Q shares are stored column-major per layer (r columns of `cols` floats),
 * P row-major (rows x r), so that every product reads M once, row by row.  The inner loops run
 * over fixed blocks of SQZ_PU_BLOCK columns through restrict pointers, which GCC's -O2 vectorizer
 * takes (sqz_plugin_util.h); a dot product keeps SQZ_PU_BLOCK partial sums, added in a fixed
 * order at the end, so the result does not depend on the vector width. */

#define PSGD_B SQZ_PU_BLOCK

/* acc[t] += x[t] * y[t] for one block. */
static inline void psgd_fma_block(float *restrict acc, const float *restrict x,
                                  const float *restrict y)
{
    for (int t = 0; t < PSGD_B; t++) {
        acc[t] += x[t] * y[t];
    }
}

/* y[t] += a * x[t] for one block. */
static inline void psgd_axpy_block(float *restrict y, float a, const float *restrict x)
{
    for (int t = 0; t < PSGD_B; t++) {
        y[t] += a * x[t];
    }
}

static float psgd_dot(const float *restrict x, const float *restrict y, size_t n)
{
    float  acc[PSGD_B] = {0};
    size_t j           = 0;
    for (; j + PSGD_B <= n; j += PSGD_B) {
        psgd_fma_block(acc, x + j, y + j);
    }
    float tail = 0;
    for (; j < n; j++) {
        tail += x[j] * y[j];
    }
    for (int w = PSGD_B / 2; w > 0; w /= 2) { /* pairwise, fixed order */
        for (int t = 0; t < w; t++) {
            acc[t] += acc[t + w];
        }
    }
    return acc[0] + tail;
}

/** P (rows x r) = M Q. */
static void psgd_mul_mq(const float *restrict m, size_t rows, size_t cols, const float *restrict q,
                        size_t r, float *restrict p)
{
    for (size_t i = 0; i < rows; i++) {
        for (size_t k = 0; k < r; k++) {
            p[i * r + k] = psgd_dot(m + i * cols, q + k * cols, cols);
        }
    }
}

/** Q (column-major, r x cols) = M^T P. */
static void psgd_mul_mtp(const float *restrict m, size_t rows, size_t cols, const float *restrict p,
                         size_t r, float *restrict q)
{
    memset(q, 0, r * cols * sizeof(float));
    for (size_t i = 0; i < rows; i++) {
        const float *row = m + i * cols;
        for (size_t k = 0; k < r; k++) {
            const float pik = p[i * r + k];
            float      *qk  = q + k * cols;
            size_t      j   = 0;
            for (; j + PSGD_B <= cols; j += PSGD_B) {
                psgd_axpy_block(qk + j, pik, row + j);
            }
            for (; j < cols; j++) {
                qk[j] += row[j] * pik;
            }
        }
    }
}

/** Orthonormalizes the r columns of P (rows x r, row-major) by modified Gram-Schmidt, in double,
 *  projecting each column out twice ("twice is enough", Giraud et al. 2005): a column that is
 *  nearly dependent on the previous ones (a gradient of rank below r) keeps, after one pass,
 *  a large share of them from the rounding of the stored basis, and the projection P^ P^T would
 *  no longer be one.  A column left with under 1e-6 of its norm is dependent: it becomes 0. */
static void psgd_orthonormalize(float *p, size_t rows, size_t r)
{
    for (size_t k = 0; k < r; k++) {
        double n0 = 0;
        for (size_t i = 0; i < rows; i++) {
            n0 += (double)p[i * r + k] * (double)p[i * r + k];
        }
        for (int pass = 0; pass < 2; pass++) {
            for (size_t c = 0; c < k; c++) {
                double dot = 0;
                for (size_t i = 0; i < rows; i++) {
                    dot += (double)p[i * r + k] * (double)p[i * r + c];
                }
                for (size_t i = 0; i < rows; i++) {
                    p[i * r + k] = (float)((double)p[i * r + k] - dot * (double)p[i * r + c]);
                }
            }
        }
        double nn = 0;
        for (size_t i = 0; i < rows; i++) {
            nn += (double)p[i * r + k] * (double)p[i * r + k];
        }
        const float inv = (nn > 1e-12 * n0 && nn > 1e-60) ? (float)(1.0 / sqrt(nn)) : 0.0f;
        for (size_t i = 0; i < rows; i++) {
            p[i * r + k] *= inv;
        }
    }
}

/** out = P^ Qs^T (the sum), and with res: res = M - P^ Ql^T (this rank's error), for one layer,
 *  a block of SQZ_PU_BLOCK columns of a row at a time.  M may alias out (in place, no residual):
 *  a block is read before it is written. */
static void psgd_expand(const float *m, size_t rows, size_t cols, const float *restrict p, size_t r,
                        const float *restrict qs, const float *restrict ql, float *out, float *res,
                        double *norm2_in, double *norm2_err)
{
    double ni = 0, ne = 0;
    for (size_t i = 0; i < rows; i++) {
        const float *pi = p + i * r;
        for (size_t j0 = 0; j0 < cols; j0 += PSGD_B) {
            const size_t w = cols - j0 < PSGD_B ? cols - j0 : PSGD_B;
            float        s[PSGD_B] = {0}, l[PSGD_B] = {0};
            if (PSGD_B == w) {
                for (size_t k = 0; k < r; k++) {
                    psgd_axpy_block(s, pi[k], qs + k * cols + j0);
                    psgd_axpy_block(l, pi[k], ql + k * cols + j0);
                }
            } else {
                for (size_t k = 0; k < r; k++) {
                    for (size_t t = 0; t < w; t++) {
                        s[t] += pi[k] * qs[k * cols + j0 + t];
                        l[t] += pi[k] * ql[k * cols + j0 + t];
                    }
                }
            }
            for (size_t t = 0; t < w; t++) {
                const size_t g  = i * cols + j0 + t;
                const float  mv = m[g];
                const float  e  = mv - l[t];
                ni += (double)mv * mv;
                ne += (double)e * e;
                out[g] = s[t];
                if (res) {
                    res[g] = e;
                }
            }
        }
    }
    *norm2_in += ni;
    *norm2_err += ne;
}

typedef struct psgd_span_ctx {
    const float *m;
    float       *msg, *out, *res;
} psgd_span_ctx_t;

static void psgd_span_gather(void *arg, size_t lo, size_t hi, size_t pos)
{
    const psgd_span_ctx_t *c = arg;
    memcpy(c->msg + pos, c->m + lo, (hi - lo) * sizeof(float));
}

static void psgd_span_scatter(void *arg, size_t lo, size_t hi, size_t pos)
{
    const psgd_span_ctx_t *c = arg;
    memcpy(c->out + lo, c->msg + pos, (hi - lo) * sizeof(float));
    if (c->res) {
        memset(c->res + lo, 0, (hi - lo) * sizeof(float));
    }
}

/** The first Q of a layer: uniform [-1, 1) from (seed, layer index), the same on every rank. */
static void psgd_init_q(const psgd_state_t *s, size_t layer, float *q, size_t len)
{
    const uint32_t key = sqz_psgd_init_key(s->seed, layer);
    for (size_t j = 0; j < len; j++) {
        q[j] = 2.0f * sqz_pu_hash_f32(key, (uint32_t)j) - 1.0f;
    }
}

/** Undoes residual += in (the contract's restore on a non-finite or failed call); nothing to
 *  undo when the input was not added (non-finite). */
static void psgd_restore(const psgd_state_t *s, const sqz_reduce_args_v1_t *a)
{
    if (s->added) {
        for (size_t i = 0; i < a->n; i++) {
            a->residual[i] -= a->in[i];
        }
    }
}

/** The largest rank a probing call measures layer L at (0: not probing, or exact at every
 *  candidate). */
static size_t psgd_probe_rank(const psgd_state_t *s, const sqz_reduce_args_v1_t *a,
                              const sqz_matrix_v1_t *L)
{
    size_t kmax = 0;
    for (size_t j = 0; a->probe_err && j < a->nprobe; j++) {
        kmax = sqz_psgd_max(kmax, psgd_layer_rank(s, L, a->probe[j]));
    }
    return kmax;
}

/** A probing call's statistics, from this rank's M alone (nothing is sent): per layer ||M||^2
 *  and the error at every candidate rank, after one power step from the warm start at the
 *  largest one (qstate: the layers' Q slots, whose first r columns this call has just updated;
 *  s->probe: the scratch the plan sized). */
static void psgd_probe_local(psgd_state_t *s, sqz_reduce_args_v1_t *a, const float *m,
                             const float *qstate)
{
    a->probed      = 1;
    const float *q = qstate;
    for (size_t l = 0; l < a->nlayers; l++) {
        const sqz_matrix_v1_t *L    = &a->layers[l];
        const float           *ml   = m + L->offset;
        const size_t           kmax = psgd_probe_rank(s, a, L);
        double                 nn   = 0;
        for (size_t i = 0; i < L->rows * L->cols; i++) {
            nn += (double)ml[i] * ml[i];
        }
        a->probe_norm[l] = nn;
        float *pl = s->probe, *ql = s->probe + L->rows * kmax;
        if (kmax) {
            psgd_mul_mq(ml, L->rows, L->cols, q, kmax, pl);
            psgd_orthonormalize(pl, L->rows, kmax);
            psgd_mul_mtp(ml, L->rows, L->cols, pl, kmax, ql);
        }
        double captured = 0;
        size_t k        = 0;
        for (size_t j = 0; j < a->nprobe; j++) {
            const size_t want = psgd_layer_rank(s, L, a->probe[j]);
            for (; k < want; k++) {
                const float *qk = ql + k * L->cols;
                for (size_t c = 0; c < L->cols; c++) {
                    captured += (double)qk[c] * qk[c];
                }
            }
            a->probe_err[l * a->nprobe + j] = want ? fmax(nn - captured, 0.0) : 0.0;
        }
        q += L->cols * sqz_psgd_qslot(L, s->qcap);
    }
}

/* One reduce() call's plan and buffers. */
typedef struct psgd_call {
    const float *m;           /* M = in + residual (in the residual), or in */
    int          dense_phase; /* the start phase: every layer exact */
    int          local_bad;   /* this rank's input is not finite */
    size_t       plen, qlen;  /* floats of the P factors and of the Q shares */
    size_t       ndense;      /* floats sent exactly */
    float       *pbuf, *qsum; /* the P factors and the exact part; the Q sums after them */
} psgd_call_t;

/* The plan (each layer's rank in s->plan, 0: exact) and every allocation of the call, before
 * anything reaches the network.  \return SQZ_OK or SQZ_ERR_NO_MEMORY (the residual restored). */
static sqz_status_t psgd_plan_call(psgd_state_t *s, sqz_reduce_args_v1_t *a, psgd_call_t *c)
{
    if (!sqz_pu_grow((void **)&s->plan, &s->plancap, (a->nlayers + 1) * sizeof(int))) {
        psgd_restore(s, a);
        return SQZ_ERR_NO_MEMORY;
    }
    size_t probe_len = 0;
    c->plen = 0, c->qlen = 0;
    for (size_t l = 0; l < a->nlayers; l++) {
        const sqz_matrix_v1_t *L     = &a->layers[l];
        const int              level = a->levels ? a->levels[l] : (int)s->cfg.rank;
        const size_t           r     = c->dense_phase ? 0 : psgd_layer_rank(s, L, level);
        const size_t           kmax  = c->dense_phase ? 0 : psgd_probe_rank(s, a, L);
        s->plan[l] = (int)r;
        c->plen += L->rows * r;
        c->qlen += L->cols * r;
        probe_len = sqz_psgd_max(probe_len, (L->rows + L->cols) * kmax);
    }
    c->ndense = sqz_psgd_dense_spans(a->layers, a->nlayers, a->n, s->plan, NULL, NULL);
    /* msg holds the P factors and the exact part, then the Q sums after them: P^ must survive
     * the Q all-reduce. */
    if (!sqz_pu_grow((void **)&s->msg, &s->msgcap,
                     (c->plen + c->ndense + c->qlen + 1) * sizeof(float)) ||
        !sqz_pu_grow((void **)&s->qloc, &s->qloccap, (c->qlen + 1) * sizeof(float)) ||
        !sqz_pu_grow((void **)&s->probe, &s->probecap, (probe_len + 1) * sizeof(float))) {
        psgd_restore(s, a);
        return SQZ_ERR_NO_MEMORY;
    }
    c->pbuf = s->msg;
    c->qsum = c->pbuf + c->plen + c->ndense;
    return SQZ_OK;
}

/* Sums len floats of buf over the ranks and checks them: \return SQZ_OK, SQZ_ERR_TRANSPORT, or
 * SQZ_ERR_NONFINITE (the same sums everywhere: every rank returns it), the residual restored on
 * an error. */
static sqz_status_t psgd_sum(psgd_state_t *s, sqz_reduce_args_v1_t *a, float *buf, size_t len)
{
    if (len > 0 && 0 != a->allreduce_sum(a->allreduce_arg, buf, len)) {
        psgd_restore(s, a);
        return SQZ_ERR_TRANSPORT;
    }
    a->bytes_wire += len * sizeof(float);
    if (!sqz_pu_all_finite_f32(buf, len)) {
        psgd_restore(s, a);
        return SQZ_ERR_NONFINITE;
    }
    return SQZ_OK;
}

/* One power iteration (it): P = M Q summed (with the exact part on the first), orthonormalized;
 * this rank's Q share M^T P^ into qloc, summed into qsum; the warm start Q = sum / ranks. */
static sqz_status_t psgd_iterate(psgd_state_t *s, sqz_reduce_args_v1_t *a, const psgd_call_t *c,
                                 int it)
{
    float *const bs = a->bufstate;
    size_t       po = 0;
    float       *q  = bs + 1;
    for (size_t l = 0; l < a->nlayers; l++) {
        const sqz_matrix_v1_t *L = &a->layers[l];
        const size_t           r = (size_t)s->plan[l];
        if (r) {
            psgd_mul_mq(c->m + L->offset, L->rows, L->cols, q, r, c->pbuf + po);
            po += L->rows * r;
        }
        q += L->cols * sqz_psgd_qslot(L, s->qcap);
    }
    const size_t len1 = c->plen + (0 == it ? c->ndense : 0);
    if (0 == it) {
        psgd_span_ctx_t sc = {.m = c->m, .msg = c->pbuf + c->plen};
        sqz_psgd_dense_spans(a->layers, a->nlayers, a->n, s->plan, psgd_span_gather, &sc);
        if (c->local_bad && len1 > 0) {
            c->pbuf[0] = NAN; /* (it is there already, unless an Inf met only zeros of Q) */
        }
    }
    sqz_status_t st = psgd_sum(s, a, c->pbuf, len1);
    if (SQZ_OK != st || 0 == c->qlen) {
        return st; /* (nothing compressed: the exact sum is all) */
    }
    po = 0;
    size_t qo = 0;
    for (size_t l = 0; l < a->nlayers; l++) {
        const sqz_matrix_v1_t *L = &a->layers[l];
        const size_t           r = (size_t)s->plan[l];
        if (r) {
            psgd_orthonormalize(c->pbuf + po, L->rows, r);
            psgd_mul_mtp(c->m + L->offset, L->rows, L->cols, c->pbuf + po, r, s->qloc + qo);
            po += L->rows * r;
            qo += L->cols * r;
        }
    }
    memcpy(c->qsum, s->qloc, c->qlen * sizeof(float));
    st = psgd_sum(s, a, c->qsum, c->qlen);
    if (SQZ_OK != st) {
        return st;
    }
    q  = bs + 1;
    qo = 0;
    const float inv = 1.0f / (float)s->nranks;
    for (size_t l = 0; l < a->nlayers; l++) {
        const sqz_matrix_v1_t *L = &a->layers[l];
        const size_t           r = (size_t)s->plan[l];
        for (size_t j = 0; j < L->cols * r; j++) {
            q[j] = c->qsum[qo + j] * inv;
        }
        qo += L->cols * r;
        q += L->cols * sqz_psgd_qslot(L, s->qcap);
    }
    return SQZ_OK;
}

/* The outputs: the exact part scattered, then out = P^ Q^T and residual = M - P^ Q_i^T, layer
 * by layer. */
static void psgd_finish(psgd_state_t *s, sqz_reduce_args_v1_t *a, const psgd_call_t *c)
{
    if (c->ndense > 0) {
        psgd_span_ctx_t sc = {.m = c->m, .msg = c->pbuf + c->plen, .out = a->out,
                              .res = a->residual};
        sqz_psgd_dense_spans(a->layers, a->nlayers, a->n, s->plan, psgd_span_scatter, &sc);
    }
    size_t po = 0, qo = 0;
    for (size_t l = 0; l < a->nlayers; l++) {
        const sqz_matrix_v1_t *L = &a->layers[l];
        const size_t           r = (size_t)s->plan[l];
        if (r) {
            psgd_expand(c->m + L->offset, L->rows, L->cols, c->pbuf + po, r, c->qsum + qo,
                        s->qloc + qo, a->out + L->offset,
                        a->residual ? a->residual + L->offset : NULL, &a->norm2_in,
                        &a->norm2_err);
            po += L->rows * r;
            qo += L->cols * r;
        }
    }
}

static sqz_status_t psgd_reduce(void *state, sqz_reduce_args_v1_t *a)
{
    psgd_state_t *const s = state;
    a->bytes_wire = 0, a->norm2_in = 0, a->norm2_err = 0, a->probed = 0;
    a->exact = a->seq < (uint64_t)s->cfg.start_steps;
    psgd_call_t c = {.m = a->in, .dense_phase = a->seq < (uint64_t)s->cfg.start_steps};
    /* A non-finite input is not added into the residual (its old value could not be recovered):
     * this rank poisons its first message instead, so that every rank sees it. */
    c.local_bad = !sqz_pu_all_finite_f32(a->in, a->n);
    /* a = in + residual, formed in the residual: M lives there for the whole call. */
    s->added = a->residual && !c.local_bad;
    if (s->added) {
        for (size_t i = 0; i < a->n; i++) {
            a->residual[i] += a->in[i];
        }
        c.m = a->residual;
    }
    sqz_status_t st = psgd_plan_call(s, a, &c);
    if (SQZ_OK != st) {
        return st;
    }
    /* Warm-start memory: bufstate[0] says whether it holds Q's yet. */
    float *bs = a->bufstate;
    if (0.0f == bs[0] && !c.dense_phase) {
        float *q = bs + 1;
        for (size_t l = 0; l < a->nlayers; l++) {
            const size_t w = sqz_psgd_qslot(&a->layers[l], s->qcap);
            psgd_init_q(s, l, q, a->layers[l].cols * w);
            q += a->layers[l].cols * w;
        }
        bs[0] = 1.0f;
    }
    const int iters = c.dense_phase ? 1 : (int)s->cfg.iters;
    for (int it = 0; it < iters && SQZ_OK == st; it++) {
        st = psgd_iterate(s, a, &c, it);
        if (0 == c.qlen) {
            break;
        }
    }
    if (SQZ_OK != st) {
        return st;
    }
    if (a->probe_err && !c.dense_phase) {
        psgd_probe_local(s, a, c.m, bs + 1);
    }
    /* Nothing is written to out before here: every check that makes the ranks fall back
     * together has passed (out may be the input, which the dense fallback reads). */
    psgd_finish(s, a, &c);
    return SQZ_OK;
}

static size_t psgd_max_payload(void *state, size_t n)
{
    (void)state;
    return n * sizeof(float); /* never more than the dense sum */
}

const sqz_compressor_v1_t sqz_compressor_powersgd = {
    .abi          = SQZ_COMPRESSOR_ABI_V1,
    .size         = sizeof(sqz_compressor_v1_t),
    .name         = "powersgd",
    .description  = "low-rank P Q^T per layer with warm start and error feedback, two SUM "
                    "all-reduces per call (Vogels et al. 2019)",
    .exchange     = SQZ_EXCHANGE_SUMMABLE,
    .params       = psgd_params,
    .nparams      = sizeof psgd_params / sizeof psgd_params[0],
    .config_size  = sizeof(psgd_config_t),
    .create       = psgd_create,
    .max_payload  = psgd_max_payload,
    .destroy      = psgd_destroy,
    .bufstate_len = psgd_bufstate_len,
    .reduce       = psgd_reduce,
    .levels       = "1,2,4,8,16,32,64,128",
    .level_param  = "POWERSGD_RANK",
    .level_bytes  = psgd_level_bytes,
    .flags = SQZ_COMPRESSOR_CONTRACTIVE,
};
