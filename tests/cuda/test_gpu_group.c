/* The GPU engine's collective tier on ONE GPU: N ranks as threads of this process
 * (sqz_device_group, the device thread transport), N = 2, 3, 4, 8, for every method the GPU path
 * runs x fp32/fp16/bf16, as an all-reduce (SUM) and as a reduce-scatter (AVG):
 *   - replicas: every rank's all-reduce output is the same bits, at every step;
 *   - warm-up (SQZ_WARMUP_STEPS=1) and SQZ_METHOD=none: the exact sum (rank order, rounded once);
 *   - nothing lost (error feedback, fp32): once the inputs stop, calls with zero input flush the
 *     residuals, and the outputs' total equals the inputs' total;
 *   - NaN on one rank: every rank's output is NaN at that step (the element, on the dense path),
 *     the residuals restored: the totals above exclude that step and still match;
 *   - the exchange: quant, sign, qsgd and randk (the last two without error feedback, their
 *     default) run the scatter-reduce exchange (a reduce-scatter at any N, an all-reduce from
 *     N = 3) and send less than the all-gather's N-1 payloads per call (stats); the bytes per
 *     call are printed against one payload;
 *   - SQZ_HIER across emulated hosts (SQZ_HOST_ID; N = 4 on 2 hosts, N = 8 on 2 and 4): the
 *     same replica, exactness and nothing-lost checks (fp32, fp16), the NaN element NaN on every
 *     rank; reduce-scatters too (each rank's block exact or, where compressed, nothing lost;
 *     the compressed engine fed 1/L of the input: the column);
 *   - checkpoints: saved after 3 steps and loaded into new communicators, the run goes on with
 *     the same bits as without the interruption (N = 2 flat, N = 4 on 2 emulated hosts);
 *   - EF21 (topk, quant 4 bits): the shared estimator decays to zero once the inputs stop;
 *   - the policy's dense switch (top-k at 50 %: dense, exact, counted as dense_switch);
 *   - DGC's momentum (quant 8 bits with masking, top-k with Nesterov and clipping): replicas
 *     identical, the NaN step alone falls back (the momentum is not poisoned);
 *   - every output of every step without a NaN is finite;
 *   - an option the device path declines (rand-k's RANDK_SCALE=unbiased): every call the exact
 *     dense sum, counted in the stats' device_declined;
 *   - settings that differ on one rank: every rank's sqz_comm_create_device_group fails with
 *     SQZ_ERR_MISMATCH;
 *   - the transport itself: all-reduce (int32 min/max, uint8 max, float64 sum, float32 avg),
 *     all-gather, all-to-all, reduce-scatter and a grouped send/receive ring, against the host.
 * Skips (77) without a GPU. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squeeze.h>

#include "sqz_cuda_test.h"
#include "cuda/sqz_gpu_engine.h"
#include "transport/sqz_device_group.h"

void sqz_thread_run(int nranks, void (*fn)(int rank, void *arg), void *arg);

#define MAXR    8
#define KEY     7
#define S_IN    5 /* steps with inputs; step 0 is the warm-up */
#define S_FLUSH 32 /* (top-k at 5 %: about 20 calls to send a full residual) */
#define NAN_AT  2 /* the step where the last rank's element NAN_EL is NaN */
#define NAN_EL  5

/* ---- host conversions (round to nearest even) ---- */
static uint16_t f2h(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, m = x & 0x7fffffu;
    const int      e    = (int)((x >> 23) & 0xffu) - 127 + 15;
    if (((x >> 23) & 0xffu) == 0xffu) {
        return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0u));
    }
    if (e >= 31) {
        return (uint16_t)(sign | 0x7c00u);
    }
    if (e <= 0) {
        if (e < -10) {
            return (uint16_t)sign;
        }
        const uint32_t mm = m | 0x800000u, shift = (uint32_t)(14 - e);
        uint32_t       hm = mm >> shift, rem = mm & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        hm += rem > half || (rem == half && (hm & 1u));
        return (uint16_t)(sign | hm);
    }
    uint32_t       h   = sign | ((uint32_t)e << 10) | (m >> 13);
    const uint32_t rem = m & 0x1fffu;
    h += rem > 0x1000u || (rem == 0x1000u && (h & 1u));
    return (uint16_t)h;
}

static float h2f(uint16_t h)
{
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float          f = e == 0    ? ldexpf((float)m, -24)
                       : e == 31 ? (m ? NAN : INFINITY)
                                 : ldexpf((float)(m | 0x400u), (int)e - 25);
    return (h & 0x8000u) ? -f : f;
}

static uint16_t f2b(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((x >> 16) | 0x40u);
    }
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static float b2f(uint16_t b)
{
    const uint32_t x = (uint32_t)b << 16;
    float          f;
    memcpy(&f, &x, 4);
    return f;
}

static size_t esize(sqz_dtype_t t) { return t == SQZ_DTYPE_FLOAT32 ? 4 : 2; }

static void put(void *buf, size_t i, float v, sqz_dtype_t t)
{
    if (t == SQZ_DTYPE_FLOAT32) {
        ((float *)buf)[i] = v;
    } else {
        ((uint16_t *)buf)[i] = t == SQZ_DTYPE_FLOAT16 ? f2h(v) : f2b(v);
    }
}

static float get(const void *buf, size_t i, sqz_dtype_t t)
{
    return t == SQZ_DTYPE_FLOAT32   ? ((const float *)buf)[i]
           : t == SQZ_DTYPE_FLOAT16 ? h2f(((const uint16_t *)buf)[i])
                                    : b2f(((const uint16_t *)buf)[i]);
}

/* Rank r's input at step s: k/64 with |k| <= 255 (exact in every type, sums of 8 exact in fp32
 * and fp16); zero in the flush steps. */
static float input(int r, int s, size_t i)
{
    if (s >= S_IN) {
        return 0.0f;
    }
    uint32_t h = (uint32_t)(r * 7919 + s * 104729) ^ (uint32_t)(i * 2654435761u);
    h ^= h >> 15, h *= 0x2c1b3c6du, h ^= h >> 12;
    return (float)((int)(h % 511u) - 255) / 64.0f;
}

/* ---- one configuration ---- */
typedef struct method {
    const char        *name;
    const char *const *kv;
    int                ef;         /* error feedback: the totals must match after the flush */
    int                compressed; /* a compressed call's output is all NaN at the NaN step */
    int                sra;        /* runs the scatter-reduce exchange where it pays */
    int                reselect;   /* TOPK_RESELECT (0: 1): the scatter-reduce sends fewer bytes
                                      than the all-gather from N > reselect + 1 ranks only */
    int                ef21;       /* EF21: the output converges to 0 once the inputs stop */
    int                declined;   /* the device path declines it: every call dense, counted */
    int                dgc;        /* DGC's momentum: the NaN step alone falls back (the momentum
                                      is not poisoned), every other step compressed */
    int                fp32_only;  /* its query declines 16-bit buffers: those pass through */
    int                plugin;     /* loaded from SQUEEZE_TEST_PLUGIN (skipped without it) */
    double             lost;       /* the nothing-lost check's tolerance (0: 1e-3 of the inputs'
                                      total): compact residuals (SQZ_EF_STORAGE) lose their
                                      rounding */
    int                flush;      /* flush calls beyond S_FLUSH: top-k's scatter-reduce keeps a
                                      second residual (the server's), drained after the workers'
                                      at the same density: about twice their calls */
} method_t;

static const char *const m_none[]  = {"SQZ_METHOD", "none", NULL};
static const char *const m_topk[]  = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_EF",
                                      "ef14", NULL};
static const char *const m_q8[]    = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8", "SQZ_EF",
                                      "ef14", NULL};
static const char *const m_q4s[]   = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "4",
                                      "SQZ_QUANT_ROUNDING", "stochastic", "SQZ_EF", "ef14", NULL};
static const char *const m_sign[]  = {"SQZ_METHOD", "sign", NULL};
/* top-k through the scatter-reduce with re-sparsification (SQZ_SPARSE_ALGO=scatter) */
static const char *const m_tksc[]  = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_EF",
                                      "ef14", "SQZ_SPARSE_ALGO", "scatter", NULL};
/* ... with its second selection at twice the density (SQZ_TOPK_RESELECT) */
static const char *const m_tkre[]  = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_EF",
                                      "ef14", "SQZ_SPARSE_ALGO", "scatter", "SQZ_TOPK_RESELECT",
                                      "2", NULL};
static const char *const m_topk21[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.1", "SQZ_EF",
                                       "ef21", NULL};
static const char *const m_q4_21[]  = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "4", "SQZ_EF",
                                       "ef21", NULL};
static const char *const m_randk[] = {"SQZ_METHOD", "randk", "SQZ_RANDK_DENSITY", "0.05", NULL};
static const char *const m_terng[] = {"SQZ_METHOD", "terngrad", "SQZ_TERNGRAD_BUCKET", "500",
                                      NULL};
static const char *const m_rkub[]  = {"SQZ_METHOD", "randk", "SQZ_RANDK_DENSITY", "0.05",
                                      "SQZ_RANDK_SCALE", "unbiased", NULL};
static const char *const m_q8dgc[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8",
                                      "SQZ_EF", "ef14", "SQZ_DGC_MOMENTUM", "0.9",
                                      "SQZ_DGC_MASKING", "1", NULL};
static const char *const m_tkdgc[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_EF",
                                      "ef14", "SQZ_DGC_MOMENTUM", "0.9", "SQZ_DGC_NESTEROV", "1",
                                      "SQZ_DGC_CLIP", "50", NULL};
static const char *const m_qsgd[]  = {"SQZ_METHOD", "qsgd", "SQZ_QSGD_BUCKET", "500", NULL};
static const char *const m_psgd[]  = {"SQZ_METHOD", "powersgd", "SQZ_POWERSGD_RANK", "4",
                                      "SQZ_POWERSGD_START_STEPS", "0", NULL};
static const char *const m_q8bf[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8", "SQZ_EF",
                                     "ef14", "SQZ_EF_STORAGE", "bf16", NULL};
static const char *const m_q4ec[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "4", "SQZ_EF",
                                     "econtrol", "SQZ_ECONTROL_ETA", "0.1", NULL};
static const char *const m_tki8[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_EF",
                                     "ef14", "SQZ_EF_STORAGE", "int8", NULL};
/* The example plugin's device operations (compressor ABI v2); SQZ_PLUGINS is set in main. */
static const char       *m_example[] = {"SQZ_METHOD", "example", "SQZ_PLUGINS", NULL, NULL};
static const method_t    methods[] = {
    {"none", m_none, .ef = 0},
    {"topk", m_topk, .ef = 1, .compressed = 1},
    {"topk-scatter", m_tksc, .ef = 1, .compressed = 1, .sra = 1, .flush = S_FLUSH},
    {"topk-reselect", m_tkre, .ef = 1, .compressed = 1, .sra = 1, .reselect = 2,
     .flush = S_FLUSH},
    {"quant8", m_q8, .ef = 1, .compressed = 1, .sra = 1},
    {"quant4-sr", m_q4s, .ef = 1, .compressed = 1, .sra = 1},
    {"sign", m_sign, .compressed = 1, .sra = 1},
    {"powersgd", m_psgd, .compressed = 1},
    {"topk-ef21", m_topk21, .compressed = 1, .ef21 = 1},
    {"quant4-ef21", m_q4_21, .compressed = 1, .ef21 = 1},
    {"qsgd", m_qsgd, .compressed = 1, .sra = 1},
    {"randk", m_randk, .compressed = 1, .sra = 1},
    {"terngrad", m_terng, .compressed = 1, .sra = 1},
    {"randk-unbiased-declined", m_rkub, .declined = 1},
    {"quant8-dgc", m_q8dgc, .compressed = 1, .sra = 1, .dgc = 1},
    {"topk-dgc-nesterov-clip", m_tkdgc, .compressed = 1, .dgc = 1},
    {"example-plugin-v2", m_example, .ef = 1, .compressed = 1, .sra = 1, .fp32_only = 1,
     .plugin = 1},
    {"quant8-bf16-residual", m_q8bf, .ef = 1, .compressed = 1, .sra = 1, .lost = 1e-2},
    {"topk-int8-residual", m_tki8, .ef = 1, .compressed = 1, .lost = 5e-2},
    {"quant4-econtrol", m_q4ec, .compressed = 1, .ef21 = 1},
};

/* Whether the method runs here (a plugin needs its shared object), and whether its calls of
 * dtype t are compressed at all (else they pass through, exact). */
static int method_skipped(const method_t *m) { return m->plugin && NULL == m_example[3]; }
static int method_takes(const method_t *m, sqz_dtype_t t)
{
    return !m->fp32_only || SQZ_DTYPE_FLOAT32 == t;
}
static const char *const base[] = {"SQZ_MIN_BYTES", "0", "SQZ_WARMUP_STEPS", "1", "SQZ_LOG",
                                   "error", NULL};

typedef struct job {
    sqz_device_group_t *grp;
    const method_t     *m;
    const char *const  *odd; /* settings of the last rank only (the mismatch case), or NULL */
    int                 nranks, rs, nsteps;
    int                 hosts;   /* > 0: emulated hosts (SQZ_HOST_ID), SQZ_HIER's GPU form */
    int                 no_nan;  /* no NaN step */
    int                 moving;  /* intercepted calls (key 0); every rank but 0 moves its
                                    buffers at every step (test_moving) */
    int                 ckpt_at; /* > 0: every rank checkpoints after this many steps, and a new
                                    communicator resumes from the checkpoint */
    sqz_dtype_t         dtype;
    size_t              count; /* elements in (out: count / nranks for a reduce-scatter) */
    sqz_status_t        st[MAXR];
    unsigned char      *out[MAXR]; /* nsteps outputs, raw */
    /* from each rank's stats: bytes sent, compressed calls, whether the scatter-reduce ran */
    unsigned long long  sent[MAXR], compressed[MAXR], declined[MAXR], fallback[MAXR];
    unsigned long long  bytes_in[MAXR];
    int                 sra[MAXR], dense_switch[MAXR];
    size_t              payload; /* bytes of one payload of the whole buffer (the all-gather's) */
} job_t;

static size_t out_count(const job_t *j) { return j->rs ? j->count / (size_t)j->nranks : j->count; }

static sqz_status_t run_steps(job_t *j, int rank, sqz_comm_t *comm, int from, int to)
{
    const size_t  esz = esize(j->dtype), n = j->count, on = out_count(j);
    unsigned char *h  = malloc(n * esz);
    void          *din = dalloc(n * esz), *dout = dalloc(on * esz);
    cudaStream_t   s;
    CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    sqz_status_t   st  = SQZ_OK;
    const uint64_t key = j->moving ? 0 : KEY;
    for (int step = from; SQZ_OK == st && step < to; step++) {
        for (size_t i = 0; i < n; i++) {
            put(h, i, input(rank, step, i), j->dtype);
        }
        if (step == NAN_AT && rank == j->nranks - 1 && !j->no_nan) {
            put(h, NAN_EL, NAN, j->dtype);
        }
        /* (moving: a new allocation at a step-dependent offset, so that no address repeats) */
        const size_t   span = (n * esz + 255) / 256 * 256, pad = 256 * (size_t)(step % 13);
        unsigned char *blk  = j->moving && rank > 0 ? dalloc(pad + span + on * esz) : NULL;
        void          *sin  = blk ? blk + pad : din, *sout = blk ? blk + pad + span : dout;
        CU(cudaMemcpyAsync(sin, h, n * esz, cudaMemcpyHostToDevice, s));
        st = j->rs ? sqz_reduce_scatter_async(comm, sin, sout, on, j->dtype, SQZ_OP_AVG, key, s)
                   : sqz_allreduce_async(comm, sin, sout, n, j->dtype, SQZ_OP_SUM, key, s);
        CU(cudaMemcpyAsync(j->out[rank] + (size_t)step * on * esz, sout, on * esz,
                           cudaMemcpyDeviceToHost, s));
        CU(cudaStreamSynchronize(s));
        if (blk) {
            CU(cudaFree(blk));
        }
    }
    CU(cudaStreamDestroy(s));
    cudaFree(din), cudaFree(dout), free(h);
    return st;
}

/* The first number after `"name": ` in the stats JSON, or 0. */
static unsigned long long json_num(const char *js, const char *name)
{
    const char *at = strstr(js, name);
    return at ? strtoull(at + strlen(name), NULL, 10) : 0;
}

static void read_stats(job_t *j, int rank, const sqz_ctx_t *ctx, const sqz_comm_t *comm)
{
    static char js[16384];
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    sqz_stats_json(ctx, rank, js, sizeof(js));
    j->sent[rank]       = json_num(js, "\"bytes_sent\": ");
    j->bytes_in[rank]   = json_num(js, "\"bytes_in\": ");
    /* (a call found non-finite moves from compressed to fallback: it sent all the same) */
    j->compressed[rank] = json_num(js, "\"calls_compressed\": ") +
                          json_num(js, "\"calls_nonfinite\": ");
    j->sra[rank]        = NULL != strstr(js, "\"reduce_scatter\": ");
    j->dense_switch[rank] = NULL != strstr(js, "\"dense_switch\": ");
    j->declined[rank]   = json_num(js, "\"device_declined\": {\"calls\": ");
    j->fallback[rank]   = json_num(js, "\"calls_fallback\": ");
    pthread_mutex_unlock(&lock);
    sqz_gpu_params_t gp;
    if (0 == rank && sqz_gpu_params_from_ctx(ctx, comm->cstate, &gp)) {
        j->payload = sqz_gpu_payload_bytes(&gp, j->count);
    }
}

static void rank_main(int rank, void *arg)
{
    job_t *j = arg;
    CU(cudaSetDevice(0));
    char        host[16];
    const char *kv[32] = {NULL};
    size_t      k      = 0;
    for (const char *const *m = j->m->kv; *m && k < 28; m++) {
        kv[k++] = *m;
    }
    if (j->hosts > 0) {
        snprintf(host, sizeof(host), "h%d", rank / (j->nranks / j->hosts));
        kv[k++] = "SQZ_HOST_ID", kv[k++] = host;
    }
    const char *const *mine = rank == j->nranks - 1 && j->odd ? j->odd : kv;
    sqz_ctx_t         *ctx  = sqz_cuda_make_ctx(base, mine);
    sqz_ctx_set_log_rank(ctx, rank);
    sqz_comm_t *comm = NULL;
    j->st[rank]      = sqz_comm_create_device_group(ctx, j->grp, rank, &comm);
    int done         = 0;
    if (SQZ_OK == j->st[rank] && j->ckpt_at > 0) {
        /* checkpoint, then a new communicator on a new context resumes from it */
        j->st[rank] = run_steps(j, rank, comm, 0, j->ckpt_at);
        size_t         len  = sqz_state_save(comm, NULL, 0);
        unsigned char *ckpt = malloc(len ? len : 1);
        if (SQZ_OK == j->st[rank] && sqz_state_save(comm, ckpt, len) != len) {
            j->st[rank] = SQZ_ERR_INTERNAL;
        }
        sqz_comm_destroy(comm);
        sqz_ctx_destroy(ctx);
        ctx  = sqz_cuda_make_ctx(base, mine);
        comm = NULL;
        if (SQZ_OK == j->st[rank]) {
            j->st[rank] = sqz_comm_create_device_group(ctx, j->grp, rank, &comm);
        }
        if (SQZ_OK == j->st[rank]) {
            j->st[rank] = sqz_state_load(comm, ckpt, len);
        }
        free(ckpt);
        done = j->ckpt_at;
    }
    if (SQZ_OK == j->st[rank]) {
        j->st[rank] = run_steps(j, rank, comm, done, j->nsteps);
        read_stats(j, rank, ctx, comm);
    }
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

/* The exact result of step s at element i (the sum rounded once; AVG: the float quotient). */
static float exact(const job_t *j, int s, size_t i)
{
    double sum = 0;
    for (int r = 0; r < j->nranks; r++) {
        sum += input(r, s, i);
    }
    float v = j->rs ? (float)sum / (float)j->nranks : (float)sum;
    unsigned char b[4];
    put(b, 0, v, j->dtype);
    return get(b, 0, j->dtype);
}

/* Rank r's output at step s, element i of its own block. */
static float out_at(const job_t *j, int r, int s, size_t i)
{
    return get(j->out[r] + (size_t)s * out_count(j) * esize(j->dtype), i, j->dtype);
}

/* Whether step s is the one with a NaN input. */
static int nan_step(const job_t *j, int s) { return s == NAN_AT && !j->no_nan; }

/* The first element of rank r's output at step s that is not the exact sum, or -1. */
static long first_inexact(const job_t *j, int r, int s)
{
    const size_t on = out_count(j), base_i = j->rs ? (size_t)r * on : 0;
    for (size_t i = 0; i < on; i++) {
        const float o = out_at(j, r, s, i);
        if (nan_step(j, s) && base_i + i == NAN_EL ? !isnan(o) : o != exact(j, s, base_i + i)) {
            return (long)(base_i + i);
        }
    }
    return -1;
}

/* The dense path at the NaN step: the NaN element NaN, every other exact. */
static int dense_nan(const job_t *j, int r, int s) { return first_inexact(j, r, s) < 0; }

static int all_nan(const job_t *j, int r, int s)
{
    for (size_t i = 0; i < out_count(j); i++) {
        if (!isnan(out_at(j, r, s, i))) {
            return 0;
        }
    }
    return 1;
}

/* A hierarchical reduce-scatter's local index whose column holds the NaN element. */
static int nan_column(const job_t *j)
{
    return (int)((NAN_EL / out_count(j)) % (size_t)(j->nranks / j->hosts));
}

/* Rank r's outputs at step s that are not finite. */
static size_t count_nonfinite(const job_t *j, int r, int s)
{
    size_t n = 0;
    for (size_t i = 0; i < out_count(j); i++) {
        n += !isfinite(out_at(j, r, s, i));
    }
    return n;
}

/* quant, sign and top-k asked to: the scatter-reduce exchange where it pays, and fewer bytes than the all-gather;
 * every reduce-scatter of a compressed method without ef21 (top-k's too: its first phase). */
static void check_exchange(const job_t *j, const char *what)
{
    /* (a reduce-scatter under ef21 keeps classic error feedback, as on the host) */
    const int any_rs = j->rs && j->m->compressed && j->m->kv != m_psgd;
    const int want   = ((j->m->sra && (j->rs || j->nranks > 2)) || any_rs) &&
                     method_takes(j->m, j->dtype);
    for (int r = 0; r < j->nranks; r++) {
        EXPECT(j->sra[r] == want, "%s: rank %d: scatter-reduce exchange %s", what, r,
               want ? "not used" : "used");
        if (want && j->compressed[r] > 0 && j->payload > 0 &&
            (j->rs || j->nranks > 1 + (j->m->reselect > 0 ? j->m->reselect : 1))) {
            const double per_call = (double)j->sent[r] / (double)j->compressed[r];
            EXPECT(per_call < (double)(j->nranks - 1) * (double)j->payload,
                   "%s: rank %d sent %.0f bytes a call, the all-gather's %zu", what, r, per_call,
                   (size_t)(j->nranks - 1) * j->payload);
            if (0 == r && j->dtype == SQZ_DTYPE_FLOAT32) {
                printf("%s: %.3f payloads sent per call (all-gather: %d)\n", what,
                       per_call / (double)j->payload, j->nranks - 1);
            }
        }
    }
}

static int check_job(const job_t *j, const char *what)
{
    const size_t on = out_count(j), esz = esize(j->dtype);
    const int    before = sqz_cuda_failures;
    for (int r = 0; r < j->nranks; r++) {
        EXPECT(SQZ_OK == j->st[r], "%s: rank %d: %s", what, r, sqz_status_string(j->st[r]));
    }
    if (sqz_cuda_failures != before) {
        return 1;
    }
    for (int r = 1; !j->rs && r < j->nranks; r++) {
        EXPECT(0 == memcmp(j->out[0], j->out[r], (size_t)j->nsteps * on * esz),
               "%s: rank %d's outputs differ from rank 0's", what, r);
    }
    for (int r = 0; r < j->nranks; r++) {
        for (int s = 0; s < j->nsteps; s++) {
            if (nan_step(j, s) && j->hosts > 0 && !j->rs) {
                /* (hierarchical: the shard that holds the element is NaN on every rank) */
                EXPECT(isnan(out_at(j, r, s, NAN_EL)), "%s: rank %d: element %d not NaN", what,
                       r, NAN_EL);
            } else if (nan_step(j, s) && j->hosts > 0 && j->m->kv != m_psgd &&
                       r % (j->nranks / j->hosts) != nan_column(j)) {
                /* (hierarchical reduce-scatter: the columns without the NaN stay compressed;
                 * PowerSGD's stays flat) */
                EXPECT(0 == count_nonfinite(j, r, s), "%s: rank %d: the NaN reached a column "
                                                      "without it", what, r);
            } else if (nan_step(j, s)) {
                EXPECT((j->m->compressed && all_nan(j, r, s)) || dense_nan(j, r, s),
                       "%s: rank %d: the NaN step's output is neither all NaN (compressed) nor "
                       "the dense sum", what, r);
            } else if (s == 0 || !j->m->compressed || !method_takes(j->m, j->dtype)) {
                const long bad = first_inexact(j, r, s);
                EXPECT(bad < 0, "%s: rank %d, step %d, element %ld: not the exact sum", what, r,
                       s, bad);
            }
        }
    }
    if (j->m->ef21 && !j->rs) {
        /* EF21 after the inputs stopped: the shared estimator decays to zero */
        double last = 0, first = 0;
        for (size_t i = 0; i < on; i++) {
            last  = fmax(last, fabs(out_at(j, 0, j->nsteps - 1, i)));
            first = fmax(first, fabs(exact(j, 1, i)));
        }
        EXPECT(last <= 0.1 * first, "%s: ef21 output %g after %d zero calls (inputs ~%g)", what,
               last, S_FLUSH, first);
    }
    for (int r = 0; r < j->nranks; r++) {
        for (int s = 0; s < j->nsteps; s++) {
            const size_t nonfinite = nan_step(j, s) ? 0 : count_nonfinite(j, r, s);
            EXPECT(0 == nonfinite, "%s: rank %d, step %d: %zu outputs not finite", what, r, s,
                   nonfinite);
        }
        /* DGC: the NaN step alone falls back, unless the policy sent this size dense (top-k's
         * all-gather of 16-bit data at N = 8 costs more than the dense reduce-scatter) */
        const unsigned long long nan_calls = !j->no_nan && !j->dense_switch[r];
        EXPECT(!j->m->dgc || j->hosts > 0 || j->fallback[r] == nan_calls,
               "%s: rank %d: %llu fallbacks (DGC: the NaN step alone, %llu)", what, r,
               j->fallback[r], nan_calls);
    }
    for (int r = 0; j->m->declined && r < j->nranks; r++) {
        EXPECT(j->declined[r] == (unsigned long long)j->nsteps,
               "%s: rank %d: %llu calls counted as declined on device buffers, of %d", what, r,
               j->declined[r], j->nsteps);
    }
    if (0 == j->hosts) {
        check_exchange(j, what);
    } else if (j->compressed[0] > 0 && j->payload > 0 && j->dtype == SQZ_DTYPE_FLOAT32) {
        printf("%s: %.3f payloads of the whole buffer sent per call and rank between hosts\n",
               what, (double)j->sent[0] / (double)j->compressed[0] / (double)j->payload);
    }
    if (!j->m->ef || j->dtype != SQZ_DTYPE_FLOAT32 || (j->hosts > 0 && !j->no_nan)) {
        return 0;
    }
    /* Nothing lost: the outputs' total (x nranks for AVG) against the inputs' (NaN step out). */
    double worst = 0, scale = 1;
    for (int r = 0; r < j->nranks; r++) {
        const size_t base_i = j->rs ? (size_t)r * on : 0;
        for (size_t i = 0; i < on; i++) {
            double tin = 0, tout = 0;
            for (int s = 0; s < j->nsteps; s++) {
                if (nan_step(j, s)) {
                    continue;
                }
                for (int q = 0; q < j->nranks; q++) {
                    tin += input(q, s, base_i + i);
                }
                tout += out_at(j, r, s, i) * (j->rs ? j->nranks : 1);
            }
            worst = fmax(worst, fabs(tout - tin));
            scale = fmax(scale, fabs(tin));
        }
    }
    const double tol = j->m->lost > 0 ? j->m->lost : 1e-3;
    EXPECT(worst <= tol * scale, "%s: residuals lost: outputs' total off by %g (inputs' %g)",
           what, worst, scale);
    return 0;
}

static const char *dname(sqz_dtype_t t)
{
    return t == SQZ_DTYPE_FLOAT32 ? "fp32" : t == SQZ_DTYPE_FLOAT16 ? "fp16" : "bf16";
}

static void run_job(job_t *j, const char *what)
{
    const size_t bytes = (size_t)j->nsteps * out_count(j) * esize(j->dtype);
    for (int r = 0; r < j->nranks; r++) {
        j->out[r] = calloc(1, bytes);
        j->st[r]  = SQZ_OK;
    }
    sqz_thread_run(j->nranks, rank_main, j);
    check_job(j, what);
    for (int r = 0; r < j->nranks; r++) {
        free(j->out[r]);
    }
}

static void test_engine(sqz_device_group_t *grp, int nranks)
{
    static const sqz_dtype_t types[] = {SQZ_DTYPE_FLOAT32, SQZ_DTYPE_FLOAT16, SQZ_DTYPE_BFLOAT16};
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
        if (method_skipped(&methods[m])) {
            continue;
        }
        for (int t = 0; t < 3; t++) {
            for (int rs = 0; rs < 2; rs++) {
                job_t j  = {.grp = grp, .m = &methods[m], .nranks = nranks, .rs = rs,
                            .dtype = types[t]};
                j.nsteps = S_IN + (methods[m].ef || methods[m].ef21 ? S_FLUSH + methods[m].flush
                                                                    : 0);
                j.count  = (size_t)nranks * 4096 + (rs ? 0 : 37);
                char what[128];
                snprintf(what, sizeof(what), "N=%d %s %s %s", nranks, methods[m].name,
                         dname(types[t]), rs ? "reduce-scatter" : "all-reduce");
                run_job(&j, what);
            }
        }
    }
}

/* One key, all-reduces and reduce-scatters in turn under SQZ_EF=ef21 (quant, 4 bits): the first
 * call (an all-reduce, the warm-up) makes the buffer EF21's, so its reduce-scatters go dense (the
 * exact sum, counted as fallbacks) instead of running EF21's update on a reduce-scatter, and its
 * later all-reduces stay compressed; replicas identical. */
#define MIXED_CALLS 6
typedef struct mixed_job {
    sqz_device_group_t *grp;
    int                 nranks;
    size_t              count;
    float              *ar[MAXR], *rs[MAXR]; /* outputs of the all-reduces, reduce-scatters */
    sqz_stats_t         stats[MAXR];
    sqz_status_t        st[MAXR];
} mixed_job_t;

static void mixed_rank(int rank, void *arg)
{
    mixed_job_t *j = arg;
    CU(cudaSetDevice(0));
    sqz_ctx_t   *ctx  = sqz_cuda_make_ctx(base, m_q4_21);
    sqz_comm_t  *comm = NULL;
    const size_t n = j->count, blk = n / (size_t)j->nranks;
    float       *h = malloc(n * sizeof(float));
    float       *din = dalloc(n * sizeof(float)), *dout = dalloc(n * sizeof(float));
    cudaStream_t s;
    CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    j->st[rank] = sqz_comm_create_device_group(ctx, j->grp, rank, &comm);
    for (int c = 0; SQZ_OK == j->st[rank] && c < MIXED_CALLS; c++) {
        for (size_t i = 0; i < n; i++) {
            h[i] = input(rank, c, i);
        }
        CU(cudaMemcpyAsync(din, h, n * sizeof(float), cudaMemcpyHostToDevice, s));
        const int rs = c % 2;
        j->st[rank]  = rs ? sqz_reduce_scatter_async(comm, din, dout, blk, SQZ_DTYPE_FLOAT32,
                                                     SQZ_OP_SUM, KEY, s)
                          : sqz_allreduce_async(comm, din, dout, n, SQZ_DTYPE_FLOAT32,
                                                SQZ_OP_SUM, KEY, s);
        float *to = rs ? j->rs[rank] + (size_t)(c / 2) * blk : j->ar[rank] + (size_t)(c / 2) * n;
        CU(cudaMemcpyAsync(to, dout, (rs ? blk : n) * sizeof(float), cudaMemcpyDeviceToHost, s));
        CU(cudaStreamSynchronize(s));
    }
    sqz_stats_get(ctx, &j->stats[rank]);
    CU(cudaStreamDestroy(s));
    cudaFree(din), cudaFree(dout), free(h);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

static void test_mixed_kinds(sqz_device_group_t *grp, int nranks)
{
    mixed_job_t  j = {.grp = grp, .nranks = nranks, .count = (size_t)nranks * 4096};
    const size_t blk = j.count / (size_t)nranks, half = MIXED_CALLS / 2;
    for (int r = 0; r < nranks; r++) {
        j.ar[r] = calloc(half * j.count, sizeof(float));
        j.rs[r] = calloc(half * blk, sizeof(float));
    }
    sqz_thread_run(nranks, mixed_rank, &j);
    for (int r = 0; r < nranks; r++) {
        EXPECT(SQZ_OK == j.st[r], "N=%d mixed kinds: rank %d: %s", nranks, r,
               sqz_status_string(j.st[r]));
        size_t diff = half * j.count;
        for (size_t q = 0; q < half * j.count && diff == half * j.count; q++) {
            diff = memcmp(&j.ar[r][q], &j.ar[0][q], sizeof(float)) ? q : diff;
        }
        EXPECT(diff == half * j.count, "N=%d mixed kinds: rank %d's all-reduces differ from rank "
               "0's, first at call %zu element %zu (%.9g against %.9g)", nranks, r,
               2 * (diff / j.count), diff % j.count, j.ar[r][diff % (half * j.count)],
               j.ar[0][diff % (half * j.count)]);
        long bad = -1;
        for (size_t k = 0; k < half && bad < 0; k++) {
            for (size_t i = 0; i < blk && bad < 0; i++) {
                float sum = 0.0f; /* (exact: multiples of 1/64, small) */
                for (int q = 0; q < nranks; q++) {
                    sum += input(q, (int)(2 * k + 1), (size_t)r * blk + i);
                }
                bad = j.rs[r][k * blk + i] == sum ? -1 : (long)i;
            }
        }
        EXPECT(bad < 0, "N=%d mixed kinds: rank %d: a reduce-scatter's element %ld is not the "
                        "exact sum", nranks, r, bad);
        EXPECT(j.stats[r].calls_fallback == half && j.stats[r].calls_compressed == half - 1,
               "N=%d mixed kinds: rank %d: %llu fallbacks, %llu compressed (want %zu, %zu)",
               nranks, r, (unsigned long long)j.stats[r].calls_fallback,
               (unsigned long long)j.stats[r].calls_compressed, half, half - 1);
    }
    for (int r = 0; r < nranks; r++) {
        free(j.ar[r]), free(j.rs[r]); /* (after the loop: every rank is compared to rank 0's) */
    }
    printf("N=%d mixed kinds on one key (ef21): reduce-scatters dense, all-reduces compressed\n",
           nranks);
}

/* Intercepted calls (key 0) whose buffers move at every step on every rank but rank 0, which
 * keeps one address: while the call sequence learns, rank 0's fresh slots find an heir by address
 * (the slot that last used it) and take over its residual, the others' find none.  Every rank
 * must still allocate each new slot's buffer and agree on it at the same call: before session 16
 * an heir's whole device buffer moved to the new slot on rank 0 alone, which then skipped the
 * agreement the other ranks made, and the ranks' NCCL calls went out of step.  Replicas stay
 * identical; residuals the other ranks could not claim are dropped (no "nothing lost" check). */
static void test_moving(sqz_device_group_t *grp, int nranks)
{
    static const method_t moving[] = {
        {"quant8 moving buffers", m_q8, .compressed = 1, .sra = 1},
        {"topk moving buffers", m_topk, .compressed = 1},
    };
    for (size_t m = 0; m < sizeof(moving) / sizeof(moving[0]); m++) {
        job_t j  = {.grp = grp, .m = &moving[m], .nranks = nranks, .no_nan = 1, .moving = 1,
                    .dtype = SQZ_DTYPE_FLOAT32, .nsteps = S_IN + S_FLUSH};
        j.count  = (size_t)nranks * 4096 + 37;
        char what[128];
        snprintf(what, sizeof(what), "N=%d %s", nranks, moving[m].name);
        run_job(&j, what);
    }
}

/* SQZ_HIER's GPU form on emulated hosts (SQZ_HOST_ID): fp32 and fp16 all-reduces and
 * reduce-scatters, whose two-level sums stay exact on these inputs; with and without a NaN
 * step.  A hierarchical reduce-scatter's inter-host engine sees the column alone: 1/L of the
 * input per call, against the whole input flat. */
static void test_hier(sqz_device_group_t *grp, int nranks, int hosts)
{
    static const sqz_dtype_t types[] = {SQZ_DTYPE_FLOAT32, SQZ_DTYPE_FLOAT16};
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
        if (method_skipped(&methods[m])) {
            continue;
        }
        for (int t = 0; t < 2; t++) {
            for (int k = 0; k < 4; k++) {
                const int no_nan = k & 1, rs = k >> 1;
                job_t     j = {.grp = grp, .m = &methods[m], .nranks = nranks, .hosts = hosts,
                               .no_nan = no_nan, .rs = rs, .dtype = types[t]};
                j.nsteps = S_IN + (methods[m].ef || methods[m].ef21 ? S_FLUSH + methods[m].flush
                                                                    : 0);
                j.count  = rs ? (size_t)nranks * (4096 + 5) : (size_t)nranks * 4096 + 37;
                char what[128];
                snprintf(what, sizeof(what), "N=%d on %d hosts %s %s%s%s", nranks, hosts,
                         methods[m].name, dname(types[t]), rs ? " reduce-scatter" : "",
                         no_nan ? "" : " (NaN step)");
                run_job(&j, what);
                const size_t local = (size_t)(nranks / hosts);
                for (int r = 0; rs && !methods[m].declined && m_psgd != methods[m].kv &&
                                r < nranks;
                     r++) {
                    EXPECT(j.bytes_in[r] * local <= (unsigned long long)j.nsteps * j.count *
                                                        esize(j.dtype),
                           "%s: rank %d: %llu bytes into the compressed engine: not the "
                           "hierarchical reduce-scatter's column", what, r, j.bytes_in[r]);
                }
            }
        }
    }
}

/* The policy's dense switch: top-k at 50 % on N > 2 ranks would send more than a dense ring
 * all-reduce through its all-gather, so every call goes dense, exactly. */
static void test_dense_switch(sqz_device_group_t *grp, int nranks)
{
    static const char *const kv[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.5", "SQZ_EF",
                                     "ef14", NULL};
    static const method_t    m    = {"topk-50%", kv, .ef = 0};
    job_t j = {.grp = grp, .m = &m, .nranks = nranks, .nsteps = S_IN, .dtype = SQZ_DTYPE_FLOAT32,
               .count = (size_t)nranks * 4096 + 37};
    char  what[64];
    snprintf(what, sizeof(what), "N=%d topk 50%% (dense switch)", nranks);
    run_job(&j, what);
    EXPECT(j.dense_switch[0], "%s: the policy did not switch to dense", what);
    /* SQZ_EXCHANGE_MODEL=time: quant 4 bits goes dense on a fast link with slow kernels, and
     * stays compressed on a slow link with fast ones (the prediction decides, not the bytes). */
    static const char *const fast[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "4",
                                       "SQZ_EXCHANGE_MODEL", "time", "SQZ_LINK_GBPS", "100000",
                                       "SQZ_KERNEL_GBPS", "0.01", NULL};
    static const char *const slow[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "4",
                                       "SQZ_EXCHANGE_MODEL", "time", "SQZ_LINK_GBPS", "0.01",
                                       "SQZ_KERNEL_GBPS", "1000", NULL};
    static const method_t mf = {"quant4-time-fast-link", fast, .ef = 0};
    static const method_t ms = {"quant4-time-slow-link", slow, .ef = 1, .compressed = 1, .sra = 1};
    job_t f = j, w = j;
    f.m = &mf, w.m = &ms;
    w.nsteps = S_IN + S_FLUSH; /* (compressed with error feedback: flushed, nothing lost) */
    snprintf(what, sizeof(what), "N=%d quant4, time model, fast link", nranks);
    run_job(&f, what);
    EXPECT(f.dense_switch[0], "%s: the time model did not switch to dense", what);
    snprintf(what, sizeof(what), "N=%d quant4, time model, slow link", nranks);
    run_job(&w, what);
    EXPECT(!w.dense_switch[0], "%s: the time model switched to dense", what);
}

/* A checkpoint taken after some steps and loaded into new communicators gives the same bits
 * as the uninterrupted run, flat (N = 2) and across 2 emulated hosts (the inter-host engine's
 * residuals travel in the same checkpoint), DGC's momentum included. */
static void test_checkpoint(sqz_device_group_t *grp, int nranks, int hosts)
{
    /* topk, quant8, quant8-dgc (its momentum), quant8 with bf16 residuals (kept compact) */
    static const size_t which[] = {1, 2, 11, 14};
    for (size_t q = 0; q < sizeof(which) / sizeof(which[0]); q++) {
        const size_t m = which[q];
        job_t a = {.grp = grp, .m = &methods[m], .nranks = nranks, .hosts = hosts, .no_nan = 1,
                   .dtype = SQZ_DTYPE_FLOAT32, .nsteps = S_IN + 4,
                   .count = (size_t)nranks * 4096 + 37};
        job_t b = a;
        b.ckpt_at = 3;
        char what[96];
        snprintf(what, sizeof(what), "N=%d on %d hosts %s, checkpointed", nranks, hosts,
                 methods[m].name);
        const size_t bytes = (size_t)a.nsteps * a.count * 4;
        for (int r = 0; r < nranks; r++) {
            a.out[r] = calloc(1, bytes), b.out[r] = calloc(1, bytes);
        }
        sqz_thread_run(nranks, rank_main, &a);
        sqz_thread_run(nranks, rank_main, &b);
        for (int r = 0; r < nranks; r++) {
            EXPECT(SQZ_OK == a.st[r] && SQZ_OK == b.st[r], "%s: rank %d: %s / %s", what, r,
                   sqz_status_string(a.st[r]), sqz_status_string(b.st[r]));
            EXPECT(0 == memcmp(a.out[r], b.out[r], bytes),
                   "%s: rank %d: the resumed run differs from the uninterrupted one", what, r);
            free(a.out[r]), free(b.out[r]);
        }
    }
}

/* SQZ_STATE_MAX_BYTES on device buffers: with a bound of one byte every new buffer's first call
 * frees the others (least recently used first), on every rank alike: 4 keys called in turn 3
 * times evict 11 buffers on each rank, no rank waits for another (each re-creation agrees on
 * its allocation with every rank), replicas stay identical, and every rank holds the same
 * bytes at the end. */
#define BOUND_KEYS   4
#define BOUND_ROUNDS 3
typedef struct bound_job {
    sqz_device_group_t *grp;
    const char *const  *kv;
    int                 nranks, inplace;
    size_t              count;
    sqz_status_t        st[MAXR];
    float              *out[MAXR]; /* BOUND_KEYS * BOUND_ROUNDS outputs */
    unsigned long long  evictions[MAXR], state_bytes[MAXR], compressed[MAXR];
} bound_job_t;

static void bound_rank(int rank, void *arg)
{
    bound_job_t *j = arg;
    CU(cudaSetDevice(0));
    sqz_ctx_t  *ctx  = sqz_cuda_make_ctx(base, j->kv);
    sqz_comm_t *comm = NULL;
    j->st[rank]      = sqz_comm_create_device_group(ctx, j->grp, rank, &comm);
    float       *h   = malloc(j->count * sizeof(float));
    float       *d   = dalloc(j->count * sizeof(float));
    float       *o   = j->inplace ? d : dalloc(j->count * sizeof(float));
    cudaStream_t s;
    CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    for (int c = 0; SQZ_OK == j->st[rank] && c < BOUND_KEYS * BOUND_ROUNDS; c++) {
        for (size_t i = 0; i < j->count; i++) {
            h[i] = input(rank, c % S_IN, i);
        }
        CU(cudaMemcpyAsync(d, h, j->count * sizeof(float), cudaMemcpyHostToDevice, s));
        j->st[rank] = sqz_allreduce_async(comm, j->inplace ? NULL : d, o, j->count,
                                          SQZ_DTYPE_FLOAT32, SQZ_OP_SUM,
                                          100 + (uint64_t)(c % BOUND_KEYS), s);
        CU(cudaMemcpyAsync(j->out[rank] + (size_t)c * j->count, o, j->count * sizeof(float),
                           cudaMemcpyDeviceToHost, s));
        CU(cudaStreamSynchronize(s));
    }
    sqz_stats_t st;
    sqz_stats_get(ctx, &st);
    j->evictions[rank]   = st.state_evictions;
    j->state_bytes[rank] = st.state_bytes;
    j->compressed[rank]  = st.calls_compressed;
    CU(cudaStreamDestroy(s));
    if (o != d) {
        cudaFree(o);
    }
    cudaFree(d), free(h);
    sqz_comm_destroy(comm);
    sqz_ctx_destroy(ctx);
}

/* The first call and element where rank r's outputs differ from rank 0's, or -1. */
static long bound_first_diff(const bound_job_t *j, int r, size_t *el)
{
    for (size_t c = 0; c < (size_t)BOUND_KEYS * BOUND_ROUNDS; c++) {
        for (size_t i = 0; i < j->count; i++) {
            const size_t at = c * j->count + i;
            if (0 != memcmp(&j->out[r][at], &j->out[0][at], sizeof(float))) {
                *el = i;
                return (long)c;
            }
        }
    }
    return -1;
}

static void test_state_bound(sqz_device_group_t *grp, int nranks)
{
    static const char *const q8[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8", "SQZ_EF",
                                     "ef14", "SQZ_WARMUP_STEPS", "0", "SQZ_STATE_MAX_BYTES", "1",
                                     NULL};
    static const char *const tk[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05", "SQZ_EF",
                                     "ef21", "SQZ_WARMUP_STEPS", "0", "SQZ_STATE_MAX_BYTES", "1",
                                     NULL};
    static const char *const q8u[] = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8", "SQZ_EF",
                                      "ef14", "SQZ_WARMUP_STEPS", "0", NULL};
    const char *const *const which[] = {q8, tk, q8u};
    for (int m = 0; m < 3; m++) {
        for (int inplace = 0; inplace < 2; inplace++) {
            bound_job_t j = {.grp = grp, .kv = which[m], .nranks = nranks, .inplace = inplace,
                             .count = (size_t)nranks * 4096 + 37};
            const int    bounded = 2 != m;
            char         what[96];
            snprintf(what, sizeof(what), "N=%d %s %s%s", nranks, which[m][1],
                         bounded ? "state bound" : "unbounded", inplace ? " in place" : "");
            const size_t bytes = (size_t)BOUND_KEYS * BOUND_ROUNDS * j.count * sizeof(float);
            for (int r = 0; r < nranks; r++) {
                j.out[r] = calloc(1, bytes);
            }
            sqz_thread_run(nranks, bound_rank, &j);
            for (int r = 0; r < nranks; r++) {
                size_t     el = 0;
                const long c  = bound_first_diff(&j, r, &el);
                EXPECT(SQZ_OK == j.st[r], "%s: rank %d: %s", what, r, sqz_status_string(j.st[r]));
                EXPECT(c < 0, "%s: rank %d's output of call %ld differs from rank 0's at %zu: "
                              "%g against %g", what, r, c, el,
                       c < 0 ? 0.0 : (double)j.out[r][(size_t)c * j.count + el],
                       c < 0 ? 0.0 : (double)j.out[0][(size_t)c * j.count + el]);
                EXPECT(!bounded || BOUND_KEYS * BOUND_ROUNDS - 1 == j.evictions[r],
                       "%s: rank %d evicted %llu buffers, want %d", what, r, j.evictions[r],
                       BOUND_KEYS * BOUND_ROUNDS - 1);
                EXPECT(j.state_bytes[r] == j.state_bytes[0] && j.compressed[r] > 0,
                       "%s: rank %d holds %llu bytes (rank 0 %llu), %llu calls compressed", what,
                       r, j.state_bytes[r], j.state_bytes[0], j.compressed[r]);
            }
            for (int r = 0; r < nranks; r++) {
                free(j.out[r]);
            }
            printf("%s: %llu evictions, %llu bytes left, %llu calls compressed (rank 0)\n", what,
                   j.evictions[0], j.state_bytes[0], j.compressed[0]);
        }
    }
}

/* Out of device memory on one rank (a test hook in the engine): the last rank cannot allocate any
 * buffer's memory, so the ranks agree to send every buffer dense: no call compressed on any
 * rank, each output bit for bit what SQZ_METHOD=none gives, no rank waiting for another. */
static int g_fail_rank = -1;
static int fail_last_rank(int rank, size_t count)
{
    (void)count;
    return rank == g_fail_rank;
}

static void test_alloc_fails(sqz_device_group_t *grp, int nranks)
{
    static const char *const q8[]   = {"SQZ_METHOD", "quant", "SQZ_QUANT_BITS", "8", "SQZ_EF",
                                       "ef14", "SQZ_WARMUP_STEPS", "0", NULL};
    static const char *const tk[]   = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.05",
                                       "SQZ_WARMUP_STEPS", "0", NULL};
    static const char *const none[] = {"SQZ_METHOD", "none", NULL};
    const char *const *const which[] = {q8, tk};
    for (int m = 0; m < 2; m++) {
        bound_job_t  a = {.grp = grp, .kv = which[m], .nranks = nranks,
                          .count = (size_t)nranks * 4096 + 37};
        bound_job_t  d = a;
        const size_t bytes = (size_t)BOUND_KEYS * BOUND_ROUNDS * a.count * sizeof(float);
        d.kv               = none;
        for (int r = 0; r < nranks; r++) {
            a.out[r] = calloc(1, bytes), d.out[r] = calloc(1, bytes);
        }
        g_fail_rank          = nranks - 1;
        sqz_gpu_alloc_fails = fail_last_rank;
        sqz_thread_run(nranks, bound_rank, &a);
        sqz_gpu_alloc_fails = NULL;
        sqz_thread_run(nranks, bound_rank, &d);
        for (int r = 0; r < nranks; r++) {
            EXPECT(SQZ_OK == a.st[r] && 0 == a.compressed[r],
                   "N=%d %s, no device memory on rank %d: rank %d: %s, %llu calls compressed",
                   nranks, which[m][1], nranks - 1, r, sqz_status_string(a.st[r]),
                   a.compressed[r]);
            EXPECT(0 == memcmp(a.out[r], d.out[r], bytes),
                   "N=%d %s, no device memory on rank %d: rank %d's outputs are not the dense "
                   "ones", nranks, which[m][1], nranks - 1, r);
        }
        for (int r = 0; r < nranks; r++) {
            free(a.out[r]), free(d.out[r]);
        }
        printf("N=%d %s, no device memory on rank %d: every buffer dense on every rank\n", nranks,
               which[m][1], nranks - 1);
    }
}

/* Settings that differ on the last rank: every rank's communicator creation fails. */
static void test_mismatch(sqz_device_group_t *grp, int nranks)
{
    static const char *const odd[] = {"SQZ_METHOD", "topk", "SQZ_TOPK_DENSITY", "0.5", NULL};
    job_t j = {.grp = grp, .m = &methods[1], .odd = odd, .nranks = nranks, .nsteps = 1,
               .dtype = SQZ_DTYPE_FLOAT32, .count = 64};
    for (int r = 0; r < nranks; r++) {
        j.out[r] = calloc(1, 64 * 4);
    }
    sqz_thread_run(nranks, rank_main, &j);
    for (int r = 0; r < nranks; r++) {
        EXPECT(SQZ_ERR_MISMATCH == j.st[r], "N=%d mismatch: rank %d got %s", nranks, r,
               sqz_status_string(j.st[r]));
        free(j.out[r]);
    }
}

/* ---- the transport's own operations ---- */
typedef struct tjob {
    sqz_device_group_t *grp;
    int                 nranks;
    int                 bad[MAXR];
} tjob_t;

#define TN 1000

static int ival(int r, size_t i) { return (int)((r * 31 + (int)i * 17) % 201) - 100; }

static int check_ints(const void *dev, cudaStream_t s, size_t n, int (*want)(size_t, void *),
                      void *arg)
{
    int *h = malloc(n * sizeof(int)), bad = 0;
    CU(cudaMemcpyAsync(h, dev, n * sizeof(int), cudaMemcpyDeviceToHost, s));
    CU(cudaStreamSynchronize(s));
    for (size_t i = 0; i < n && !bad; i++) {
        bad = h[i] != want(i, arg);
    }
    free(h);
    return bad;
}

typedef struct want_arg {
    int nranks, rank, op; /* op: 0 min, 1 max, 2 gather, 3 alltoall, 4 ring, 5 rs-sum */
} want_arg_t;

static int want_int(size_t i, void *p)
{
    const want_arg_t *a = p;
    int               v = a->op == 0 ? INT32_MAX : a->op == 1 ? INT32_MIN : 0;
    switch (a->op) {
    case 0:
    case 1:
        for (int r = 0; r < a->nranks; r++) {
            v = a->op == 0 ? (ival(r, i) < v ? ival(r, i) : v) : (ival(r, i) > v ? ival(r, i) : v);
        }
        return v;
    case 2: return ival((int)(i / TN), i % TN);
    case 3: return ival((int)(i / TN), (size_t)a->rank * TN + i % TN);
    case 4: return ival((a->rank + a->nranks - 1) % a->nranks, i);
    default:
        for (int r = 0; r < a->nranks; r++) {
            v += ival(r, (size_t)a->rank * TN + i);
        }
        return v;
    }
}

static void transport_main(int rank, void *arg)
{
    tjob_t                 *t   = arg;
    const sqz_nccl_api_t   *api = &sqz_device_group_nccl;
    const ncclComm_t        c   = sqz_device_group_handle(t->grp, rank);
    const int               N   = t->nranks;
    const size_t            big = (size_t)N * TN;
    cudaStream_t            s;
    CU(cudaSetDevice(0));
    CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    int *h = malloc(big * sizeof(int)), *din = dalloc(big * sizeof(int)),
        *dout = dalloc(big * sizeof(int));
    for (size_t i = 0; i < big; i++) {
        h[i] = ival(rank, i);
    }
    CU(cudaMemcpy(din, h, big * sizeof(int), cudaMemcpyHostToDevice));
    int bad = 0;
    for (int op = 0; op < 6; op++) {
        want_arg_t   a = {N, rank, op};
        ncclResult_t r = ncclSuccess;
        size_t       n = TN;
        switch (op) {
        case 0:
        case 1:
            r = api->AllReduce(din, dout, TN, ncclInt32, op ? ncclMax : ncclMin, c, s);
            break;
        case 2: r = api->AllGather(din, dout, TN, ncclInt32, c, s), n = big; break;
        case 3: r = api->AlltoAll(din, dout, TN, ncclInt32, c, s), n = big; break;
        case 4:
            api->GroupStart();
            api->Send(din, TN, ncclInt32, (rank + 1) % N, c, s);
            api->Recv(dout, TN, ncclInt32, (rank + N - 1) % N, c, s);
            r = api->GroupEnd();
            break;
        default: r = api->ReduceScatter(din, dout, TN, ncclInt32, ncclSum, c, s); break;
        }
        bad |= (r != ncclSuccess || check_ints(dout, s, n, want_int, &a)) << op;
    }
    /* float64 sum and float32 avg of k/64 values: exact, in place. */
    double *hd = malloc(TN * sizeof(double)), *dd = dalloc(TN * sizeof(double));
    for (size_t i = 0; i < TN; i++) {
        hd[i] = input(rank, 0, i);
    }
    CU(cudaMemcpy(dd, hd, TN * sizeof(double), cudaMemcpyHostToDevice));
    bad |= (api->AllReduce(dd, dd, TN, ncclFloat64, ncclSum, c, s) != ncclSuccess) << 6;
    CU(cudaMemcpyAsync(hd, dd, TN * sizeof(double), cudaMemcpyDeviceToHost, s));
    CU(cudaStreamSynchronize(s));
    for (size_t i = 0; i < TN; i++) {
        double want = 0;
        for (int r = 0; r < N; r++) {
            want += input(r, 0, i);
        }
        bad |= (hd[i] != want) << 7;
    }
    t->bad[rank] = bad;
    free(h), free(hd);
    cudaFree(din), cudaFree(dout), cudaFree(dd);
    CU(cudaStreamDestroy(s));
}

static void test_transport(sqz_device_group_t *grp, int nranks)
{
    tjob_t t = {.grp = grp, .nranks = nranks};
    sqz_thread_run(nranks, transport_main, &t);
    for (int r = 0; r < nranks; r++) {
        EXPECT(0 == t.bad[r], "N=%d transport: rank %d failed checks 0x%x (bit: 0 min, 1 max, "
                              "2 all-gather, 3 all-to-all, 4 ring, 5 reduce-scatter, 6-7 float64)",
               nranks, r, t.bad[r]);
    }
}

int main(int argc, char **argv)
{
    /* --bound: the state bound, allocation failure, moving buffer and mixed kind cases alone */
    const int bound_only = argc > 1 && 0 == strcmp(argv[1], "--bound");
    int       ndev       = 0;
    if (cudaSuccess != cudaGetDeviceCount(&ndev) || 0 == ndev || !sqz_gpu_built()) {
        printf("SKIP: no GPU\n");
        return 77;
    }
    m_example[3] = getenv("SQUEEZE_TEST_PLUGIN");
    if (NULL == m_example[3] || '\0' == m_example[3][0]) {
        m_example[3] = NULL;
        printf("SQUEEZE_TEST_PLUGIN not set: the example plugin's device operations not run\n");
    }
    static const int sizes[] = {2, 3, 4, 8};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        sqz_device_group_t *grp = NULL;
        if (SQZ_OK != sqz_device_group_create(sizes[k], 0, &grp)) {
            fprintf(stderr, "sqz_device_group_create(%d) failed\n", sizes[k]);
            return 1;
        }
        if (bound_only) {
            test_state_bound(grp, sizes[k]);
            test_alloc_fails(grp, sizes[k]);
            test_moving(grp, sizes[k]);
            test_mixed_kinds(grp, sizes[k]);
            sqz_device_group_destroy(grp);
            continue;
        }
        test_transport(grp, sizes[k]);
        printf("N=%d: the settings mismatch case (errors expected)\n", sizes[k]);
        fflush(stdout);
        test_mismatch(grp, sizes[k]);
        test_engine(grp, sizes[k]);
        test_state_bound(grp, sizes[k]);
        test_alloc_fails(grp, sizes[k]);
        test_moving(grp, sizes[k]);
        test_mixed_kinds(grp, sizes[k]);
        if (sizes[k] > 2) {
            test_dense_switch(grp, sizes[k]);
        }
        if (2 == sizes[k] || 4 == sizes[k]) {
            /* (flat at 2 ranks; 2 hosts of 2 at 4: both exchanges without server residuals,
             * which checkpoints do not hold) */
            test_checkpoint(grp, sizes[k], 2 == sizes[k] ? 0 : 2);
        }
        for (int hosts = 2; hosts <= sizes[k] / 2; hosts *= 2) {
            if (sizes[k] % hosts == 0) {
                test_hier(grp, sizes[k], hosts);
            }
        }
        sqz_device_group_destroy(grp);
        printf("N=%d: %d failures so far\n", sizes[k], sqz_cuda_failures);
        fflush(stdout);
    }
    printf("%s\n", sqz_cuda_failures ? "FAIL" : "PASS");
    return sqz_cuda_failures ? 1 : 0;
}
