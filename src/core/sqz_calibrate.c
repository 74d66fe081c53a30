/* The cost model's measurements at a communicator's first compressed call (see sqz_policy.h):
 * the kernel rates (a throwaway compressor state on a synthetic buffer, scaled by the share of
 * the machine's cores a rank gets) and, under SQZ_LINK_GBPS=0, the link's latency and rates in
 * rounds shaped like the exchanges'.  Every number is agreed by all-reduces, so every rank
 * predicts the same. */
#include "config.h"

#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coll/sqz_coll.h"
#include "sqz_cost.h"
#include "sqz_log.h"
#include "sqz_policy.h"

/* The calibration buffer (1 MiB of floats), worked on at least SQZ_CAL_MIN_ITERS times and for
 * SQZ_CAL_SECONDS: enough iterations that the fastest of them ran undisturbed even on a core
 * shared with other ranks. */
enum { SQZ_CAL_ELEMS = 1 << 18, SQZ_CAL_MIN_ITERS = 16, SQZ_CAL_MAX_ITERS = 256 };
static const double SQZ_CAL_SECONDS = 0.01;

/* Deterministic values shaped like a gradient (a sum of uniforms, some entries much larger). */
static void sqz_cal_fill(float *x, size_t n)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const float u = (float)(s >> 40) / (float)(1u << 24) - 0.5f;
        x[i]          = (i % 97 == 0) ? 8.0f * u : u;
    }
}

/* This rank's compress and decode rates (input bytes per second) on a throwaway compressor
 * state, so that the communicator's own states are untouched.  {0, 0} when it cannot measure. */
static void sqz_cal_measure(const sqz_comm_t *comm, double rates[2])
{
    const sqz_ctx_t *const           ctx = comm->ctx;
    const sqz_compressor_v1_t *const c   = ctx->method;
    const sqz_compressor_env_v1_t    env = {.size = sizeof(env), .rank = comm->rank,
                                            .nranks = comm->nranks, .seed = (uint64_t)ctx->p.seed};
    const size_t n  = SQZ_CAL_ELEMS;
    void        *st = NULL;
    rates[0] = rates[1] = 0.0;
    if (SQZ_OK != c->create(ctx->configs[ctx->method_index], &env, &st)) {
        return;
    }
    const size_t cap  = c->max_payload(st, n);
    const size_t nsh  = c->size > offsetof(sqz_compressor_v1_t, shared_len) && c->shared_len
                            ? c->shared_len(st, n) : 0;
    float       *in   = malloc(n * sizeof(float));
    float       *out  = calloc(n, sizeof(float));
    float       *sh   = nsh ? malloc(nsh * sizeof(float)) : NULL;
    void        *pl   = malloc(cap ? cap : 1);
    double       tc = 0, td = 0, tcmin = INFINITY, tdmin = INFINITY;
    int          it = 0;
    if (in && out && pl && (sh || 0 == nsh)) {
        sqz_cal_fill(in, n);
        if (nsh) {
            c->shared_fill(st, in, NULL, n, sh);
        }
        for (; it < SQZ_CAL_MAX_ITERS && (it < SQZ_CAL_MIN_ITERS || tc + td < SQZ_CAL_SECONDS); it++) {
            sqz_compress_args_v1_t a = {.size = sizeof(a), .in = in, .n = n, .seq = (uint64_t)it,
                                        .payload = pl, .capacity = cap, .shared = sh};
            const double t0 = sqz_time_now();
            if (SQZ_OK != c->compress(st, &a)) {
                break;
            }
            const double t1 = sqz_time_now();
            if (SQZ_OK != c->decompress(st, pl, a.payload_bytes, out, n)) {
                break;
            }
            const double t2 = sqz_time_now();
            tc += t1 - t0, td += t2 - t1;
            tcmin = fmin(tcmin, t1 - t0), tdmin = fmin(tdmin, t2 - t1);
        }
    }
    if (it >= SQZ_CAL_MIN_ITERS && tcmin > 0 && tdmin > 0) {
        /* The fastest iteration: the kernel's own rate on a core (a preemption lands in some
         * intervals only, so means over ranks that share cores swing several-fold). */
        rates[0] = (double)(n * sizeof(float)) / tcmin;
        rates[1] = (double)(n * sizeof(float)) / tdmin;
    }
    (void)tc, (void)td;
    free(pl), free(sh), free(out), free(in);
    c->destroy(st);
}

/* The link measurement's buffers: a send and a receive area of `per` bytes for every rank
 * (128 KiB, less on large communicators: at most 16 MiB each), or NULL. */
static void *sqz_cal_link_buffers(const sqz_comm_t *comm, size_t *per)
{
    const size_t P = (size_t)comm->nranks;
    *per           = (size_t)1 << 17;
    while (*per > 4096 && *per * P > ((size_t)16 << 20)) {
        *per /= 2;
    }
    /* data, then counts and displacements (alltoallv) */
    return calloc(2 * P, *per + 2 * sizeof(size_t));
}

/* One round of `bytes` to every peer, as the point-to-point exchanges send it (sqz_round_t:
 * segments under the credit window), or one all-to-all-v without point-to-point messages.
 * \return its seconds, the ranks' mean (the same on every rank), or a negative value when the
 * transport failed. */
static double sqz_cal_round(sqz_comm_t *comm, unsigned char *buf, size_t per, size_t bytes)
{
    const int      P    = comm->nranks, me = comm->rank;
    unsigned char *send = buf, *recv = buf + (size_t)P * per;
    size_t        *cnt  = (size_t *)(buf + 2 * (size_t)P * per), *dsp = cnt + P;
    int            rc   = 0;
    const double   t0   = sqz_time_now();
    if (comm->p2p) {
        sqz_round_t rd;
        if (SQZ_OK != sqz_round_init(&rd, comm, bytes)) {
            return -1.0; /* (scratch: the transport's state is unchanged, the caller stops) */
        }
        for (int k = 1; k < P && 0 == rc; k++) {
            const int s = (me + P - k) % P;
            rc = sqz_round_recv(&rd, s, recv + (size_t)s * per, bytes);
        }
        for (int k = 1; k < P && 0 == rc; k++) {
            const int r = (me + k) % P;
            rc = sqz_round_send(&rd, r, send + (size_t)r * per, bytes);
        }
        rc |= sqz_round_finish(&rd);
    } else {
        for (int r = 0; r < P; r++) {
            cnt[r] = r == me ? 0 : bytes;
            dsp[r] = (size_t)r * per;
        }
        rc = comm->t.alltoallv(comm->t.self, send, cnt, dsp, recv, cnt, dsp);
    }
    float t = (float)(sqz_time_now() - t0);
    if (0 != rc || 0 != comm->t.allreduce_f32_sum(comm->t.self, &t, &t, 1)) {
        return -1.0;
    }
    return (double)t / (double)P;
}

/* The median seconds of 3 rounds of `bytes` (negative: the transport failed).  The median, not
 * the mean: a round that meets a TCP retransmission timeout (200 ms, longer than a whole round
 * at 16 hosts x 128 KiB on 100 Mbit/s) would otherwise move the link rate of the whole job by a
 * third or more; each round's time is already the ranks' mean, so every rank takes the same. */
static double sqz_cal_rounds(sqz_comm_t *comm, unsigned char *buf, size_t per, size_t bytes)
{
    double t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = sqz_cal_round(comm, buf, per, bytes);
        if (t[i] < 0) {
            return t[i];
        }
    }
    return fmax(fmin(t[0], t[1]), fmin(fmax(t[0], t[1]), t[2]));
}

/* SQZ_LINK_GBPS=0: the latency (rounds of 8-byte messages, after one that opens the
 * connections) and the rate one rank gets in rounds of `per`-byte messages to every peer, sent as
 * the exchanges send them, so that congestion, lost packets and shared cores are in it. */
static sqz_status_t sqz_cal_link(sqz_comm_t *comm, unsigned char *buf, size_t per)
{
    const double lat = sqz_cal_round(comm, buf, per, 8) < 0 ? -1.0 : sqz_cal_rounds(comm, buf, per, 8);
    const double big = lat < 0 ? -1.0 : sqz_cal_rounds(comm, buf, per, per);
    if (big < 0) {
        return SQZ_ERR_TRANSPORT;
    }
    comm->cost.latency_s = lat;
    comm->cost.link_Bps  = (double)(comm->nranks - 1) * (double)per / fmax(big - lat, 1e-9);
    return SQZ_OK;
}

/* This rank's machine bucket for counting the ranks that share a machine's cores: its kernel's
 * boot id (network and UTS namespaces, as in bench/netcluster, share it and the cores), else its
 * hostname, hashed into one of SQZ_CAL_BUCKETS (FNV-1a). */
enum { SQZ_CAL_BUCKETS = 61 };
static int sqz_cal_bucket(void)
{
    char  name[256] = "";
    FILE *f         = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (NULL == f || NULL == fgets(name, sizeof(name), f)) {
        (void)gethostname(name, sizeof(name) - 1);
    }
    if (f) {
        fclose(f);
    }
    uint32_t h = 2166136261u;
    for (const char *c = name; *c; c++) {
        h = (h ^ (uint8_t)*c) * 16777619u;
    }
    return (int)(h % SQZ_CAL_BUCKETS);
}

/* The cores this rank may run on. */
static int sqz_cal_cpus(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (0 != sched_getaffinity(0, sizeof(set), &set)) {
        return 1;
    }
    const int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

/* The kernel rates from the agreed sums (agree[0], agree[1]: seconds per GB summed over the
 * ranks; agree[3]: cores summed; agree[4 + b]: the ranks of machine bucket b): the ranks' mean
 * rates on a core of their own, scaled by the share of its machine's cores that a rank of the
 * busiest machine gets, min(1, cores / ranks there). */
static void sqz_cal_kernel_rates(sqz_comm_t *comm, const float *agree)
{
    double most = 1.0;
    for (int b = 0; b < SQZ_CAL_BUCKETS; b++) {
        most = fmax(most, agree[4 + b]);
    }
    const double share = fmin(1.0, agree[3] / comm->nranks / most);
    comm->cost.compress_Bps = agree[0] > 0 ? share * comm->nranks * 1e9 / agree[0] : 0.0;
    comm->cost.decode_Bps   = agree[1] > 0 ? share * comm->nranks * 1e9 / agree[1] : 0.0;
}

static void sqz_cal_log(const sqz_comm_t *comm)
{
    const sqz_cost_net_t net = sqz_policy_net(comm);
    SQZ_INFO("cost model: %d ranks, link %.4g Gbit/s%s, latency %.3g us, compress %.3g GB/s, "
             "decode %.3g GB/s per rank", comm->nranks, net.link_Bps * 8e-9,
             comm->cost.link_Bps > 0 ? " measured" : "", net.latency_s * 1e6,
             comm->cost.compress_Bps * 1e-9, comm->cost.decode_Bps * 1e-9);
}

sqz_status_t sqz_policy_calibrate(sqz_comm_t *comm)
{
    const sqz_core_params_t *p = &comm->ctx->p;
    if (comm->cost.calibrated || SQZ_EXCHANGE_MODEL_TIME != p->exchange_model ||
        SQZ_EXCHANGE_SUMMABLE == comm->ctx->method->exchange) {
        return SQZ_OK;
    }
    const int kernels = 0 == p->kernel_gbps, link = 0 == p->link_gbps;
    comm->cost.compress_Bps = comm->cost.decode_Bps = p->kernel_gbps * 1e9;
    if ((!kernels && !link) || comm->nranks < 2) {
        comm->cost.calibrated = 1; /* settings: the same on every rank, nothing to measure */
        return SQZ_OK;
    }
    /* One all-reduce (no allocation, so no rank can drop out) agrees on: the kernels' seconds per
     * GB (a rank that could not measure counts as infinitely fast), whether every rank has the
     * link measurement's buffers, the cores, and how many ranks share each machine. */
    size_t per     = 0;
    void  *lbuf    = link ? sqz_cal_link_buffers(comm, &per) : NULL;
    if (lbuf && comm->p2p &&
        SQZ_OK != sqz_scratch_reserve((void **)&comm->scratch.taskbuf, &comm->scratch.taskcap,
                                      sqz_round_scratch(comm->nranks, per))) {
        free(lbuf); /* (the rounds' requests too, before the agreement: no round then) */
        lbuf = NULL;
    }
    double mine[2] = {0, 0};
    if (kernels) {
        sqz_cal_measure(comm, mine);
    }
    float agree[4 + SQZ_CAL_BUCKETS] = {mine[0] > 0 ? (float)(1e9 / mine[0]) : 0.0f,
                                        mine[1] > 0 ? (float)(1e9 / mine[1]) : 0.0f,
                                        lbuf ? 1.0f : 0.0f, (float)sqz_cal_cpus()};
    agree[4 + sqz_cal_bucket()] = 1.0f;
    sqz_status_t st = SQZ_OK;
    if (0 != comm->t.allreduce_f32_sum(comm->t.self, agree, agree, 4 + SQZ_CAL_BUCKETS)) {
        st = SQZ_ERR_TRANSPORT;
    } else if (kernels) {
        sqz_cal_kernel_rates(comm, agree);
    }
    if (SQZ_OK == st && link && (int)agree[2] == comm->nranks) {
        st = sqz_cal_link(comm, lbuf, per);
    }
    free(lbuf);
    comm->cost.calibrated = SQZ_OK == st;
    if (SQZ_OK == st && 0 == comm->rank) {
        sqz_cal_log(comm);
    }
    return st;
}
