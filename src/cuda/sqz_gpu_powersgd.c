/*
 * PowerSGD on the GPU path (see sqz_gpu_powersgd.h; the algorithm is plugins/powersgd/
 * sqz_powersgd.c's, the kernels are plugins/powersgd/sqz_powersgd.cu).
 *
 * Per buffer, once per layout: the plan (sqz_powersgd_plan.h: which layers are compressed at
 * which rank, which elements are summed exactly) becomes three device tables (compressed layers,
 * exact spans, tiles of the M^T P product), and the device memory is sized for it: warm-start
 * Q's, the message [P factors | exact part | Q sums], this rank's Q shares, the partial sums and
 * two flags.  A call is then a fixed sequence on the caller's stream:
 *     m += in                                   (non-finite inputs flagged, not added)
 *     P = M Q, exact part gathered after it     (msg[0] poisoned when flagged)
 *     ncclAllReduce(P | exact)                  check: a non-finite sum flags every rank
 *     orthonormalize P;  Q_i = M^T P^
 *     ncclAllReduce(Q)                          check;  warm start Q = sum / ranks
 *     out = scale * P^ Q^T | exact part;  m = M - P^ Q_i^T
 * (the middle repeated POWERSGD_ITERS times).  A flagged call ends with NaN in out and m
 * restored, on every rank alike: the flags are computed from identical sums.
 *
 * With SQZ_EF=ef21 the buffer keeps two more arrays, this rank's estimator g_i and the shared
 * estimator G: the first step forms M = in - g_i instead, the last adds P^ Q_i^T to g_i and P^ Q^T
 * to G and returns scale * G (a flagged call leaves both as they were).  The start phase runs as
 * a call whose layers are all exact, which sets g_i = in and G = the exact sum; its message (n
 * floats) stays in the grow-only memory, so ef21 holds 3 n floats more than ef14 per buffer.
 *
 * Under SQZ_ADAPT a probing call runs a second plan, the probe's, at every layer's largest
 * candidate rank, on this rank's M alone: P = M Q (the warm start, just updated), orthonormalize,
 * Q_i = M^T P^, and the norms of Q_i's columns give the error at every candidate rank.  It sends
 * nothing: a probing call's wire bytes are any call's.  Its memory is grow-only like the run's.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "adapt/sqz_adapt.h"
#include "cuda/sqz_cuda_powersgd.h"
#include "cuda/sqz_gpu_engine.h"
#include "cuda/sqz_gpu_powersgd.h"
#include "sqz_log.h"
#include "powersgd/sqz_powersgd_plan.h"

/* A plan on the device and the memory it runs in.  Device memory is grow-only (a new plan reuses
 * it when it fits: no allocation, hence no device synchronization, when SQZ_ADAPT switches
 * between plans). */
typedef struct sqz_gpu_psgd_mem {
    sqz_cu_psgd_plan_t plan;    /* device tables and totals */
    uint64_t           key;     /* digest of the ranks the plan was made for (0: none yet) */
    int               *ranks;   /* per layer of the layout: its rank in the plan (0: exact) */
    int               *index;   /* per layer: its entry in the plan's table, or -1 */
    void              *tables;  /* device: layers | spans | tiles */
    float             *msg;     /* device: plen + ndense + qelems floats */
    float             *qloc;    /* device: qelems floats */
    float             *part;    /* device: partial sums of M^T P */
    double            *gram;    /* device: the orthogonalization's workspace */
    size_t             tabcap, msgcap, qloccap, partcap, gramcap; /* bytes */
} sqz_gpu_psgd_mem_t;

struct sqz_gpu_psgd {
    uint64_t           layout;   /* digest of the layout the warm starts are laid out for */
    sqz_gpu_psgd_mem_t run;      /* the plan every call sends by */
    sqz_gpu_psgd_mem_t probe;    /* SQZ_ADAPT: the local plan of probing calls */
    int               *next;     /* per layer: this call's ranks, before they become a plan's */
    double            *probe_d;  /* device: sqz_cu_psgd_probe's output */
    double            *probe_h;  /* host copy */
    size_t             probecap; /* bytes */
    sqz_cu_psgd_ef21_t ef21;     /* device: SQZ_EF=ef21's estimators (n floats each), or NULLs */
    float             *qstate;   /* device: warm-start Q's (bufstate layout) */
    size_t             qstate_len;
    int                qinit;    /* qstate holds Q's */
    uint32_t          *flags;    /* device: 2 flags */
};

#define SQZ_GPU_PSGD_PROBE_STRIDE ((size_t)SQZ_CU_PSGD_PROBE_STRIDE)
_Static_assert(SQZ_PSGD_QMAX == SQZ_CU_PSGD_RMAX, "the kernels take every rank the plugin does");

int sqz_gpu_psgd_config(const sqz_ctx_t *ctx, sqz_gpu_psgd_cfg_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    if (0 != strcmp(ctx->method->name, "powersgd")) {
        return 0;
    }
    cfg->rank     = (int)sqz_ctx_param_num(ctx, "POWERSGD_RANK", 4);
    cfg->iters    = (int)sqz_ctx_param_num(ctx, "POWERSGD_ITERS", 1);
    cfg->start    = (int64_t)sqz_ctx_param_num(ctx, "POWERSGD_START_STEPS", 10);
    cfg->min_rate = sqz_ctx_param_num(ctx, "POWERSGD_MIN_RATE", 2.0);
    const int ef  = SQZ_EF_AUTO == ctx->p.ef ? SQZ_EF_EF14 : ctx->p.ef;
    cfg->ef       = ef == SQZ_EF_EF14   ? SQZ_GPU_PSGD_EF14
                    : ef == SQZ_EF_EF21 ? SQZ_GPU_PSGD_EF21
                                               : SQZ_GPU_PSGD_EF_NONE;
    cfg->seed     = (uint64_t)ctx->p.seed;
    cfg->qcap     = sqz_psgd_qcap(cfg->rank);
    if (SQZ_GPU_PSGD_EF21 == cfg->ef && ctx->p.warmup_steps > cfg->start) {
        /* ef21's dense calls set its estimators: SQZ_WARMUP_STEPS runs as a longer start phase
         * (the engine leaves those calls to this path), as the CPU engine's warm-up does. */
        cfg->start = ctx->p.warmup_steps;
    }
    return 1;
}

static void sqz_gpu_psgd_mem_free(sqz_gpu_psgd_mem_t *m)
{
    cudaFree(m->tables);
    cudaFree(m->msg);
    cudaFree(m->qloc);
    cudaFree(m->part);
    cudaFree(m->gram);
    free(m->ranks);
    free(m->index);
}

void sqz_gpu_psgd_free(struct sqz_gpu_psgd *p)
{
    if (p) {
        sqz_gpu_psgd_mem_free(&p->run);
        sqz_gpu_psgd_mem_free(&p->probe);
        cudaFree(p->probe_d);
        cudaFree(p->qstate);
        cudaFree(p->flags);
        cudaFree(p->ef21.est);
        cudaFree(p->ef21.shared);
        free(p->probe_h);
        free(p->next);
        free(p);
    }
}

static size_t sqz_gpu_psgd_mem_bytes(const sqz_gpu_psgd_mem_t *m)
{
    return m->tabcap + m->msgcap + m->qloccap + m->partcap + m->gramcap;
}

size_t sqz_gpu_psgd_bytes(const struct sqz_gpu_psgd *p, size_t n, int probe)
{
    if (NULL == p) {
        return 0;
    }
    size_t bytes = sqz_gpu_psgd_mem_bytes(&p->run) + p->qstate_len * sizeof(float) +
                   (p->ef21.est ? 2 * n * sizeof(float) : 0);
    if (probe) {
        bytes += sqz_gpu_psgd_mem_bytes(&p->probe) + p->probecap;
    }
    return bytes;
}

/* Makes *ptr hold at least `need` bytes of device memory (kept when it does already). */
static int sqz_gpu_psgd_grow(void **ptr, size_t *cap, size_t need)
{
    if (*ptr && *cap >= need) {
        return 0;
    }
    cudaFree(*ptr);
    *ptr = NULL;
    *cap = 0;
    if (cudaMalloc(ptr, need) != cudaSuccess) {
        cudaGetLastError();
        *ptr = NULL;
        return -1;
    }
    *cap = need;
    return 0;
}

typedef struct sqz_gpu_span_list {
    sqz_cu_psgd_span_t *s;
    size_t              n;
} sqz_gpu_span_list_t;

static void sqz_gpu_psgd_span(void *arg, size_t lo, size_t hi, size_t pos)
{
    sqz_gpu_span_list_t *l = arg;
    l->s[l->n++]           = (sqz_cu_psgd_span_t){.lo = lo, .len = hi - lo, .pos = pos};
}

/* The rank of every layer of a layout: for a call, its level (the uniform rank without a choice),
 * 0 for every layer in ef21's dense start phase; for a probe (pr), the largest rank any candidate
 * compresses it at. */
static uint64_t sqz_gpu_psgd_ranks(const sqz_gpu_psgd_cfg_t *cfg, const sqz_matrix_v1_t *layers,
                                   size_t nl, const int *levels, const sqz_adapt_probe_t *pr,
                                   int dense, int *ranks)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ nl;
    for (size_t l = 0; l < nl; l++) {
        size_t r = (dense || pr) ? 0
                                 : sqz_psgd_layer_rank(&layers[l], levels ? levels[l] : cfg->rank,
                                                       cfg->min_rate, cfg->qcap);
        for (size_t j = 0; pr && j < pr->ncand; j++) {
            const size_t rj =
                sqz_psgd_layer_rank(&layers[l], pr->cand[j], cfg->min_rate, cfg->qcap);
            r               = rj > r ? rj : r;
        }
        ranks[l] = (int)r;
        h        = (h ^ (r + 1)) * 0x100000001b3ull;
    }
    return h;
}

/* Builds the device plan for the ranks in p->ranks (the layout's layers) and its memory. */
static sqz_status_t sqz_gpu_psgd_prepare(sqz_gpu_psgd_mem_t *p, const sqz_matrix_v1_t *layers,
                                         size_t nl, size_t n, size_t qcap, cudaStream_t s)
{
    const int           *plan  = p->ranks;
    sqz_cu_psgd_layer_t *tab   = calloc(nl + 1, sizeof(*tab));
    sqz_cu_psgd_span_t  *spans = calloc(nl + 2, sizeof(*spans));
    sqz_cu_psgd_tile_t  *tiles = NULL;
    sqz_status_t         st    = (tab && spans) ? SQZ_OK : SQZ_ERR_NO_MEMORY;
    sqz_cu_psgd_plan_t   pl    = {0};
    size_t               qs = 1, ntiles = 0; /* qstate[0] is the CPU layout's flag: unused here */
    for (size_t l = 0; SQZ_OK == st && l < nl; l++) {
        const sqz_matrix_v1_t *L = &layers[l];
        const size_t           r = (size_t)plan[l];
        p->index[l]              = -1;
        if (r) {
            const uint32_t chunks = (uint32_t)((L->rows + SQZ_CU_PSGD_CHUNK_ROWS - 1) /
                                               SQZ_CU_PSGD_CHUNK_ROWS);
            p->index[l]       = (int)pl.nlayers;
            tab[pl.nlayers++] = (sqz_cu_psgd_layer_t){
                .offset = L->offset, .rows = (uint32_t)L->rows, .cols = (uint32_t)L->cols,
                .r = (uint32_t)r, .p_off = pl.plen, .q_off = pl.qelems, .qs_off = qs,
                .row_base = pl.rows, .elem_base = pl.elems, .qe_base = pl.qelems,
                .part_off = pl.part, .nchunks = chunks, .g_off = pl.gram};
            pl.plen += L->rows * r;
            pl.qelems += L->cols * r;
            pl.rows += L->rows;
            pl.elems += L->rows * L->cols;
            pl.part += (uint64_t)chunks * r * L->cols;
            pl.gram += (uint64_t)(chunks + 1) * r * r;
            pl.rmax = r > pl.rmax ? (uint32_t)r : pl.rmax;
            ntiles += chunks * ((L->cols + SQZ_CU_PSGD_TILE_COLS - 1) / SQZ_CU_PSGD_TILE_COLS);
        }
        qs += L->cols * sqz_psgd_qslot(L, qcap);
    }
    if (SQZ_OK == st) {
        tiles = calloc(ntiles + 1, sizeof(*tiles));
        st    = tiles ? SQZ_OK : SQZ_ERR_NO_MEMORY;
    }
    for (uint32_t l = 0; SQZ_OK == st && l < pl.nlayers; l++) {
        for (uint32_t c0 = 0; c0 < tab[l].cols; c0 += SQZ_CU_PSGD_TILE_COLS) {
            for (uint32_t ch = 0; ch < tab[l].nchunks; ch++) {
                tiles[pl.ntiles++] = (sqz_cu_psgd_tile_t){.layer = l, .col0 = c0, .chunk = ch};
            }
        }
    }
    sqz_gpu_span_list_t sl = {spans, 0};
    if (SQZ_OK == st) {
        pl.ndense = sqz_psgd_dense_spans(layers, nl, n, plan, sqz_gpu_psgd_span, &sl);
        pl.nspans = (uint32_t)sl.n;
    }
    const size_t tb = (pl.nlayers + 1) * sizeof(*tab) + (pl.nspans + 1) * sizeof(*spans) +
                      (pl.ntiles + 1) * sizeof(*tiles);
    if (SQZ_OK == st &&
        (sqz_gpu_psgd_grow(&p->tables, &p->tabcap, tb) ||
         sqz_gpu_psgd_grow((void **)&p->msg, &p->msgcap,
                           (pl.plen + pl.ndense + pl.qelems + 1) * sizeof(float)) ||
         sqz_gpu_psgd_grow((void **)&p->qloc, &p->qloccap, (pl.qelems + 1) * sizeof(float)) ||
         sqz_gpu_psgd_grow((void **)&p->part, &p->partcap, (pl.part + 1) * sizeof(float)) ||
         sqz_gpu_psgd_grow((void **)&p->gram, &p->gramcap, (pl.gram + 1) * sizeof(double)))) {
        st = SQZ_ERR_NO_MEMORY;
    }
    if (SQZ_OK == st) {
        unsigned char *d = p->tables;
        /* Stream-ordered after the previous call's kernels, which read the old tables; the
         * pageable sources are staged before the copies return, so freeing them is safe. */
        if (cudaMemcpyAsync(d, tab, pl.nlayers * sizeof(*tab), cudaMemcpyHostToDevice, s) !=
                cudaSuccess ||
            cudaMemcpyAsync(d + (pl.nlayers + 1) * sizeof(*tab), spans,
                            pl.nspans * sizeof(*spans), cudaMemcpyHostToDevice, s) != cudaSuccess ||
            cudaMemcpyAsync(d + (pl.nlayers + 1) * sizeof(*tab) + (pl.nspans + 1) * sizeof(*spans),
                            tiles, pl.ntiles * sizeof(*tiles), cudaMemcpyHostToDevice,
                            s) != cudaSuccess) {
            st = SQZ_ERR_CUDA;
        }
        pl.layers = (const sqz_cu_psgd_layer_t *)d;
        pl.spans  = (const sqz_cu_psgd_span_t *)(d + (pl.nlayers + 1) * sizeof(*tab));
        pl.tiles  = (const sqz_cu_psgd_tile_t *)(d + (pl.nlayers + 1) * sizeof(*tab) +
                                                (pl.nspans + 1) * sizeof(*spans));
        p->plan   = pl;
    }
    free(tab), free(spans), free(tiles);
    return st;
}

/* A probing call's errors, from sqz_cu_psgd_probe's output for the probe plan (synchronizes
 * with the stream): err[l * ncand + j] = ||M_l||^2 - the first rank(cand[j]) squared column
 * norms of the local Q_i. */
static sqz_status_t sqz_gpu_psgd_probe_errors(struct sqz_gpu_psgd *p, const sqz_gpu_psgd_cfg_t *cfg,
                                              const sqz_matrix_v1_t *layers, size_t nl,
                                              sqz_adapt_probe_t *pr, cudaStream_t s)
{
    const sqz_gpu_psgd_mem_t *pm     = &p->probe;
    const size_t              nprobe = (size_t)pm->plan.nlayers * SQZ_GPU_PSGD_PROBE_STRIDE;
    if (cudaMemcpyAsync(p->probe_h, p->probe_d, nprobe * sizeof(double), cudaMemcpyDeviceToHost,
                        s) != cudaSuccess ||
        cudaStreamSynchronize(s) != cudaSuccess) {
        return SQZ_ERR_CUDA;
    }
    for (size_t l = 0; l < nl; l++) {
        const int     idx = pm->index[l];
        const double *o   = idx >= 0 ? p->probe_h + (size_t)idx * SQZ_GPU_PSGD_PROBE_STRIDE : NULL;
        pr->norm[l]       = o ? o[0] : 0.0;
        for (size_t j = 0; j < pr->ncand; j++) {
            const size_t want =
                sqz_psgd_layer_rank(&layers[l], pr->cand[j], cfg->min_rate, cfg->qcap);
            double e = 0;
            if (o && want) {
                e = o[0];
                for (size_t c = 0; c < want && c < (size_t)pm->ranks[l]; c++) {
                    e -= o[1 + c];
                }
                e = e > 0 ? e : 0;
            }
            pr->err[l * pr->ncand + j] = e;
        }
    }
    return SQZ_OK;
}

/* The per-layout memory of a fresh state p (warm starts, flags, ef21's estimators; each plan's
 * rank tables come with the plan, sqz_gpu_psgd_replan) for a buffer of n elements in nl layers.  \return 1, or 0 when an allocation failed (the
 * caller agrees on it with the other ranks). */
static int sqz_gpu_psgd_alloc_layout(struct sqz_gpu_psgd *p, const sqz_gpu_psgd_cfg_t *cfg,
                                     const sqz_matrix_v1_t *ml, size_t nl, size_t n,
                                     uint64_t digest, cudaStream_t s)
{
    p->qstate_len  = sqz_psgd_bufstate_len(ml, nl, cfg->qcap);
    const int ef21 = SQZ_GPU_PSGD_EF21 == cfg->ef;
    p->next        = malloc((nl + 1) * sizeof(int));
    const int ok   = p->next &&
                   cudaMalloc((void **)&p->qstate, p->qstate_len * sizeof(float)) == cudaSuccess &&
                   cudaMalloc((void **)&p->flags, 2 * sizeof(uint32_t)) == cudaSuccess &&
                   (!ef21 ||
                    (cudaMalloc((void **)&p->ef21.est, n * sizeof(float)) == cudaSuccess &&
                     cudaMalloc((void **)&p->ef21.shared, n * sizeof(float)) == cudaSuccess &&
                     cudaMemsetAsync(p->ef21.est, 0, n * sizeof(float), s) == cudaSuccess &&
                     cudaMemsetAsync(p->ef21.shared, 0, n * sizeof(float), s) == cudaSuccess));
    if (!ok) {
        cudaGetLastError();
    }
    p->layout = digest;
    return ok;
}

/* Makes m's plan the one for the ranks in p->next (digest key), in m's memory when it fits (its
 * rank tables allocated with its first plan).  \return 1 when the plan is new (an allocation
 * event), and *ok = 0 when building it failed. */
static int sqz_gpu_psgd_replan(struct sqz_gpu_psgd *p, sqz_gpu_psgd_mem_t *m,
                               const sqz_matrix_v1_t *ml, size_t nl, size_t n, size_t qcap,
                               uint64_t key, cudaStream_t s, int *ok)
{
    if (0 != m->key && m->key == key) {
        return 0;
    }
    if (NULL == m->ranks) {
        m->ranks = malloc((nl + 1) * sizeof(int));
        m->index = malloc((nl + 1) * sizeof(int));
        if (NULL == m->ranks || NULL == m->index) {
            *ok = 0;
            return 1;
        }
    }
    int *t   = m->ranks;
    m->ranks = p->next;
    p->next  = t;
    *ok      = SQZ_OK == sqz_gpu_psgd_prepare(m, ml, nl, n, qcap, s);
    m->key   = *ok ? (key ? key : 1) : 0;
    return 1;
}

/* The probe plan of a probing call, and room for its statistics.  \return as sqz_gpu_psgd_replan. */
static int sqz_gpu_psgd_replan_probe(struct sqz_gpu_psgd *p, const sqz_gpu_psgd_cfg_t *cfg,
                                     const sqz_matrix_v1_t *ml, size_t nl, size_t n,
                                     const sqz_adapt_probe_t *pr, cudaStream_t s, int *ok)
{
    const uint64_t key   = sqz_gpu_psgd_ranks(cfg, ml, nl, NULL, pr, 0, p->next);
    const int      event = sqz_gpu_psgd_replan(p, &p->probe, ml, nl, n, cfg->qcap, key, s, ok);
    if (event && *ok) {
        const size_t nprobe = ((size_t)p->probe.plan.nlayers + 1) * SQZ_GPU_PSGD_PROBE_STRIDE;
        double      *h      = realloc(p->probe_h, nprobe * sizeof(double));
        p->probe_h          = h ? h : p->probe_h;
        *ok = h && 0 == sqz_gpu_psgd_grow((void **)&p->probe_d, &p->probecap,
                                          nprobe * sizeof(double));
    }
    return event;
}

/* A probing call's local measurement, on this rank's M and the updated warm start (no NCCL):
 * the probe plan's P = M Q, orthonormalized, Q_i = M^T P^, then the statistics into probe_d. */
static sqz_status_t sqz_gpu_psgd_measure(struct sqz_gpu_psgd *p, const float *m, cudaStream_t s)
{
    sqz_gpu_psgd_mem_t *pm = &p->probe;
    SQZ_CHECK(sqz_cu_psgd_mq(&pm->plan, m, p->qstate, pm->msg, 0, p->flags, s));
    SQZ_CHECK(sqz_cu_psgd_orth(&pm->plan, pm->msg, pm->gram, s));
    SQZ_CHECK(sqz_cu_psgd_mtp(&pm->plan, m, pm->msg, pm->qloc, pm->part, s));
    return sqz_cu_psgd_probe(&pm->plan, m, pm->qloc, p->probe_d, s);
}

/* The power iterations of a call on the run plan: P, its all-reduce, P^, Q_i, the Q all-reduce
 * and the warm start.  \return the wire bytes in *wire. */
static sqz_status_t sqz_gpu_psgd_iterate(struct sqz_gpu_psgd *p, const sqz_gpu_psgd_cfg_t *cfg,
                                         const sqz_nccl_api_t *nccl, ncclComm_t nc, int nranks,
                                         float *m, cudaStream_t s, size_t *wire)
{
    const sqz_cu_psgd_plan_t *pl   = &p->run.plan;
    float *const              msg  = p->run.msg;
    float *const              qsum = msg + pl->plen + pl->ndense;
    *wire                          = 0;
    for (int it = 0; it < (cfg->iters > 0 ? cfg->iters : 1); it++) {
        SQZ_CHECK(sqz_cu_psgd_mq(pl, m, p->qstate, msg, 0 == it, p->flags, s));
        const size_t len1 = pl->plen + (0 == it ? pl->ndense : 0);
        if (len1 > 0) {
            const ncclResult_t r = nccl->AllReduce(msg, msg, len1, ncclFloat32, ncclSum, nc, s);
            if (r != ncclSuccess) {
                SQZ_ERROR("ncclAllReduce (PowerSGD P): %s", sqz_nccl_error(r));
                return SQZ_ERR_NCCL;
            }
            SQZ_CHECK(sqz_cu_psgd_check(msg, len1, p->flags, s));
        }
        *wire += len1 * sizeof(float);
        if (0 == pl->qelems) {
            break;
        }
        SQZ_CHECK(sqz_cu_psgd_orth(pl, msg, p->run.gram, s));
        SQZ_CHECK(sqz_cu_psgd_mtp(pl, m, msg, p->run.qloc, p->run.part, s));
        if (cudaMemcpyAsync(qsum, p->run.qloc, pl->qelems * sizeof(float),
                            cudaMemcpyDeviceToDevice, s) != cudaSuccess) {
            return SQZ_ERR_CUDA;
        }
        const ncclResult_t r = nccl->AllReduce(qsum, qsum, pl->qelems, ncclFloat32, ncclSum, nc, s);
        if (r != ncclSuccess) {
            SQZ_ERROR("ncclAllReduce (PowerSGD Q): %s", sqz_nccl_error(r));
            return SQZ_ERR_NCCL;
        }
        SQZ_CHECK(sqz_cu_psgd_check(qsum, pl->qelems, p->flags, s));
        SQZ_CHECK(sqz_cu_psgd_store_q(pl, qsum, p->qstate, 1.0f / (float)nranks, p->flags, s));
        *wire += pl->qelems * sizeof(float);
    }
    return SQZ_OK;
}

sqz_status_t sqz_gpu_psgd_call(sqz_comm_t *comm, const sqz_gpu_psgd_cfg_t *cfg,
                               const sqz_nccl_api_t *nccl, ncclComm_t nc,
                               struct sqz_gpu_psgd **state, sqz_levels_t *lv, uint64_t seq,
                               uint64_t key, float *m, const void *in,
                               void *out, size_t n, sqz_dtype_t dtype, float scale,
                               unsigned long long *d_nonfinite, cudaStream_t s,
                               sqz_call_stats_t *cs)
{
    size_t             nl = 0;
    uint64_t           digest;
    const sqz_layer_t *layers = sqz_layout_resolve(comm, key, n, &nl, &digest);
    if (NULL == layers) {
        return SQZ_ERR_NO_MEMORY;
    }
    const sqz_matrix_v1_t *ml = (const sqz_matrix_v1_t *)layers;
    struct sqz_gpu_psgd   *p  = *state;
    /* An allocation event (new state, new plan) happens at the same call on every rank (layouts
     * and SQZ_ADAPT's choices are the same everywhere); a failure on one rank is agreed on before
     * anything reaches the network, so that every rank goes dense together. */
    int event = 0, ok = 1;
    if (NULL == p || p->layout != digest) {
        /* A new layout: new warm starts and a new plan. */
        event = 1;
        sqz_gpu_psgd_free(p);
        *state = p = calloc(1, sizeof(*p));
        ok         = p != NULL && sqz_gpu_psgd_alloc_layout(p, cfg, ml, nl, n, digest, s);
    }
    /* ef21's start phase runs here too, every layer exact: it sets the estimators. */
    const int dense = SQZ_GPU_PSGD_EF21 == cfg->ef && (int64_t)seq < cfg->start;
    /* The choice of SQZ_ADAPT, and whether this call probes. */
    sqz_adapt_probe_t pr    = {0};
    int               probe = 0;
    if (ok) {
        probe = dense ? 0 : sqz_adapt_begin(comm, lv, seq, nl, &pr);
        if (probe < 0 && !event) {
            return (sqz_status_t)probe; /* (host memory of the adaptive state) */
        }
        ok = probe >= 0;
    }
    if (ok) {
        const int     *levels = (lv->levels && lv->n == nl) ? lv->levels : NULL;
        const uint64_t k2     = sqz_gpu_psgd_ranks(cfg, ml, nl, levels, NULL, dense, p->next);
        event |= sqz_gpu_psgd_replan(p, &p->run, ml, nl, n, cfg->qcap, k2, s, &ok);
    }
    if (ok && probe > 0) {
        event |= sqz_gpu_psgd_replan_probe(p, cfg, ml, nl, n, &pr, s, &ok);
    }
    if (event) {
        const int all = sqz_gpu_comm_agree(comm, ok, s);
        if (all <= 0) {
            sqz_gpu_psgd_free(p);
            *state = NULL;
            return all < 0 ? SQZ_ERR_NCCL : SQZ_ERR_NO_MEMORY;
        }
    }
    if (cudaMemsetAsync(p->flags, 0, 2 * sizeof(uint32_t), s) != cudaSuccess) {
        return SQZ_ERR_CUDA;
    }
    if (!p->qinit) {
        SQZ_CHECK(sqz_cu_psgd_init_q(p->qstate, p->qstate_len,
                                     (uint32_t)(cfg->seed ^ (cfg->seed >> 32) ^ n), s));
        p->qinit = 1;
    }
    SQZ_CHECK(sqz_cu_psgd_add(in, dtype, p->ef21.est, m, n, p->flags, s));
    size_t wire = 0;
    SQZ_CHECK(sqz_gpu_psgd_iterate(p, cfg, nccl, nc, comm->nranks, m, s, &wire));
    const int measured = probe > 0 && p->probe.plan.nlayers > 0;
    if (measured) {
        SQZ_CHECK(sqz_gpu_psgd_measure(p, m, s));
    }
    SQZ_CHECK(sqz_cu_psgd_finish(&p->run.plan, p->run.msg, p->run.qloc, m, in, out, dtype, n,
                                 scale, SQZ_GPU_PSGD_EF14 == cfg->ef, p->ef21, p->flags,
                                 d_nonfinite, s));
    if (measured) {
        /* The probe's errors go to the host (a stream synchronization, every SQZ_ADAPT_PERIOD
         * calls), are summed over the ranks and solved (src/adapt). */
        SQZ_CHECK(sqz_gpu_psgd_probe_errors(p, cfg, ml, nl, &pr, s));
        SQZ_CHECK(sqz_adapt_end(comm, lv, seq, n, layers, nl, &pr));
    }
    cs->algo       = SQZ_ALGO_SUMMABLE;
    cs->bytes_wire = wire;
    cs->bytes_sent = 2 * (size_t)(comm->nranks - 1) * wire / (size_t)comm->nranks;
    return SQZ_OK;
}
