/* The MPI interposer (libsqueeze_mpi.so, under LD_PRELOAD or linked before libmpi).
 *
 * It defines MPI_Allreduce, MPI_Iallreduce and MPI_Reduce_scatter_block and forwards to PMPI_*;
 * with SQZ_MOE on, also MPI_Alltoall and MPI_Alltoallv (MoE token traffic, see below).
 * A call is compressed only when it is a float SUM on an intra-communicator at or above
 * SQZ_MIN_BYTES (and the method takes it); everything else goes to PMPI untouched, with one
 * relaxed atomic increment as its only cost.  The library's own MPI traffic goes to PMPI_*
 * directly; a thread-local guard also keeps any MPI call made while the engine runs (by the MPI
 * library itself, say) on the PMPI path.
 *
 * MPI_Init/MPI_Init_thread read the configuration and agree on it with every rank before any
 * other collective (sqz_mpi_agree.h): a bad value on any rank, settings that differ, or a rank
 * running without the interposer stop the job within seconds, with a message naming the rank and
 * the cause, instead of leaving the ranks in different collectives.
 * MPI_Finalize writes the statistics. */
#include "config.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <squeeze.h>

#include "sqz_ctx.h"
#include "sqz_log.h"
#include "sqz_moe.h"
#include "sqz_settings.h"
#include "sqz_statefile.h"
#include "interpose/mpi/sqz_mpi_agree.h"
#include "interpose/mpi/sqz_mpi_board.h"
#include "interpose/mpi/sqz_mpi_hier.h"
#include "transport/sqz_transport_mpi.h"

#define SQZ_MPI_API __attribute__((visibility("default")))

static sqz_ctx_t   *sqz_mpi_ctx;     /* NULL: not initialized or disabled */
static int          sqz_mpi_keyval = MPI_KEYVAL_INVALID;
/* Reentry guard.  initial-exec: a preloaded library has static TLS, and the default model would
 * cost a __tls_get_addr call on every intercepted call. */
static __thread int sqz_mpi_inside __attribute__((tls_model("initial-exec")));

/* Per-communicator state, cached as an MPI attribute: freed with the communicator.  With
 * SQZ_HIER, the all-reduces of a communicator that spans several hosts take the hierarchical
 * path (sqz_mpi_hier.h). */
typedef struct sqz_mpi_comm {
    sqz_transport_t t;             /* flat: the whole communicator */
    sqz_comm_t     *engine;
    sqz_mpi_hier_t *hier;          /* NULL: flat */
    size_t         *tokcounts;     /* 4 * size: a token all-to-all's counts and displacements */
} sqz_mpi_comm_t;

static void sqz_mpi_comm_free(sqz_mpi_comm_t *c)
{
    sqz_statefile_detach(sqz_mpi_hier_engine(c->hier));
    sqz_statefile_detach(c->engine);
    sqz_mpi_hier_free(c->hier);
    sqz_comm_destroy(c->engine);
    sqz_transport_mpi_destroy(&c->t);
    free(c->tokcounts);
    free(c);
}

static int sqz_mpi_comm_delete(MPI_Comm comm, int keyval, void *attr, void *extra)
{
    (void)comm;
    (void)keyval;
    (void)extra;
    sqz_mpi_comm_free(attr);
    return MPI_SUCCESS;
}

/* \return the state of comm, created on first use; NULL when it cannot be (the call then passes
 * through, which every rank decides alike: creation fails only on memory). */
static sqz_mpi_comm_t *sqz_mpi_comm(MPI_Comm comm)
{
    void *attr = NULL;
    int   flag = 0;
    if (MPI_SUCCESS == PMPI_Comm_get_attr(comm, sqz_mpi_keyval, &attr, &flag) && flag) {
        return attr;
    }
    sqz_mpi_comm_t *c = calloc(1, sizeof(*c));
    if (NULL == c) {
        return NULL;
    }
    /* Settings are compared before the hierarchical set-up, whose collectives depend on them. */
    if (SQZ_OK != sqz_transport_mpi_create(comm, &c->t) ||
        SQZ_OK != sqz_comm_create(sqz_mpi_ctx, &c->t, &c->engine) ||
        (SQZ_OK == sqz_comm_check_settings(c->engine) &&
         0 != sqz_mpi_hier_create(c->engine, comm, &c->hier)) ||
        MPI_SUCCESS != PMPI_Comm_set_attr(comm, sqz_mpi_keyval, c)) {
        sqz_mpi_comm_free(c);
        return NULL;
    }
    /* A compressed exchange that waits too long for a peer looks where that peer is. */
    sqz_transport_mpi_on_stall(&c->t, sqz_board_stalled, sqz_mpi_ctx->p.stall_seconds);
    /* SQZ_STATE_FILE: the saved state of this communicator (the same creation order on every
     * rank); one that cannot be restored (other settings) stops the job. */
    if (SQZ_OK != sqz_statefile_attach(c->engine) ||
        SQZ_OK != sqz_statefile_attach(sqz_mpi_hier_engine(c->hier))) {
        PMPI_Abort(MPI_COMM_WORLD, 1);
    }
    return c;
}

/* Reads the configuration, agrees on it with every rank (sqz_mpi_agree.h: a bad value, settings
 * that differ or a rank without the interposer stop the whole job with a message naming the rank
 * and the cause), and makes the communicators' attribute key. */
static void sqz_mpi_startup(void)
{
    int rank = 0, size = 1;
    PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
    PMPI_Comm_size(MPI_COMM_WORLD, &size);
    sqz_log_set_rank(rank);
    sqz_config_t *cfg = NULL;
    char          err[4096] = "";
    sqz_status_t  st        = sqz_config_create(&cfg);
    if (SQZ_OK == st) {
        st = sqz_config_load_env(cfg);
    }
    if (SQZ_OK == st) {
        st = sqz_ctx_create(cfg, &sqz_mpi_ctx, err, sizeof(err));
    }
    sqz_config_destroy(cfg);
    if (SQZ_OK != st) {
        SQZ_ERROR("configuration error: %s", err[0] ? err : "cannot read it (see above)");
    }
    char     digest[SQZ_SETTINGS_DIGEST_MAX] = "";
    uint64_t hash                            = 0;
    const int ok = SQZ_OK == st && SQZ_OK == sqz_ctx_settings_digest(sqz_mpi_ctx, digest,
                                                                     sizeof(digest), &hash);
    /* (A rank whose configuration failed waits the default time.) */
    const double timeout = ok ? sqz_mpi_ctx->p.agree_timeout : 6.0;
    const int go = sqz_mpi_agree(rank, size, ok, digest, hash,
                                 ok ? sqz_mpi_ctx->p.check_settings : 1, timeout);
    if (go <= 0) {
        if (rank > 0) {
            /* Rank 0 stops the job too (or every rank does, when rank 0 never answered): let
             * one abort come first, after every rank has printed (several ranks aborting at
             * once garble the launcher's report, and the first abort cuts the others' lines). */
            sleep(0 == go ? 2 : 1);
        } else {
            /* The launcher forwards what the ranks wrote before the abort kills them: MPICH's
             * hydra dropped output still in its pipes about once in 40 jobs on a loaded
             * machine. */
            fflush(NULL);
            usleep(500000);
        }
        PMPI_Abort(MPI_COMM_WORLD, 1);
        return;
    }
    sqz_mpi_ctx->settings_agreed = 1;
    sqz_statefile_init(sqz_mpi_ctx->p.state_file, rank);
    sqz_board_init();
    if (MPI_SUCCESS != PMPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, sqz_mpi_comm_delete,
                                               &sqz_mpi_keyval, NULL)) {
        SQZ_ERROR("cannot create an MPI attribute key: compression disabled");
        sqz_ctx_destroy(sqz_mpi_ctx);
        sqz_mpi_ctx = NULL;
        return;
    }
    SQZ_INFO("squeeze %d.%d.%d active, method %s", SQZ_VERSION_MAJOR, SQZ_VERSION_MINOR,
             SQZ_VERSION_PATCH, sqz_ctx_method(sqz_mpi_ctx));
}

SQZ_MPI_API int MPI_Init(int *argc, char ***argv)
{
    const int rc = PMPI_Init(argc, argv);
    if (MPI_SUCCESS == rc) {
        sqz_mpi_inside = 1;
        sqz_mpi_startup();
        sqz_mpi_inside = 0;
    }
    return rc;
}

SQZ_MPI_API int MPI_Init_thread(int *argc, char ***argv, int required, int *provided)
{
    const int rc = PMPI_Init_thread(argc, argv, required, provided);
    if (MPI_SUCCESS == rc) {
        sqz_mpi_inside = 1;
        sqz_mpi_startup();
        sqz_mpi_inside = 0;
    }
    return rc;
}

static void sqz_mpi_write_stats(void)
{
    const sqz_core_params_t *p = &sqz_mpi_ctx->p;
    int                      rank = 0, size = 1;
    PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
    PMPI_Comm_size(MPI_COMM_WORLD, &size);
    if (0 == strncmp(p->stats, "json:", 5)) {
        (void)sqz_stats_write_json(sqz_mpi_ctx, p->stats + 5, rank);
    } else if (0 == strcmp(p->stats, "summary")) {
        const size_t len  = sqz_stats_export_len(sqz_mpi_ctx);
        double      *mine = malloc(len * sizeof(double));
        double      *all  = 0 == rank ? malloc(len * (size_t)size * sizeof(double)) : NULL;
        if (mine && (rank || all)) {
            sqz_stats_export(sqz_mpi_ctx, mine);
            PMPI_Gather(mine, (int)len, MPI_DOUBLE, all, (int)len, MPI_DOUBLE, 0, MPI_COMM_WORLD);
            if (0 == rank) {
                sqz_stats_print_summary(sqz_mpi_ctx, stdout, all, size);
            }
        } else {
            /* The gather must still happen on every rank that could allocate: skip it everywhere
             * would need agreement; a rank out of memory at finalize just prints nothing. */
            SQZ_WARN("SQZ_STATS=summary: out of memory, no summary");
        }
        free(mine);
        free(all);
    }
}

SQZ_MPI_API int MPI_Finalize(void)
{
    if (sqz_mpi_ctx) {
        sqz_mpi_inside = 1;
        sqz_mpi_write_stats();
        (void)sqz_statefile_save();
        /* Free the engine of WORLD (created at its first eligible call, if any). */
        void *attr = NULL;
        int   flag = 0;
        if (MPI_SUCCESS == PMPI_Comm_get_attr(MPI_COMM_WORLD, sqz_mpi_keyval, &attr, &flag) &&
            flag) {
            PMPI_Comm_delete_attr(MPI_COMM_WORLD, sqz_mpi_keyval);
        }
        PMPI_Comm_free_keyval(&sqz_mpi_keyval);
        sqz_board_fini();
        sqz_mpi_inside = 0;
    }
    const int rc = PMPI_Finalize();
    /* After PMPI_Finalize no attribute callback can run any more. */
    sqz_statefile_fini();
    sqz_ctx_destroy(sqz_mpi_ctx);
    sqz_mpi_ctx = NULL;
    return rc;
}

/* Counts a call that passes through.  A relaxed load and store, not an atomic read-modify-write:
 * this sits on the path of every small all-reduce, and a lost increment between two threads
 * calling MPI at the same instant costs a statistic, not correctness. */
static inline void sqz_mpi_count_passthrough(void)
{
    uint64_t *const n = &sqz_mpi_ctx->calls_passthrough;
    __atomic_store_n(n, __atomic_load_n(n, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* The cheap filter every intercepted call goes through first: nothing but compares until the
 * call is known to be a float SUM large enough to compress (`count` elements in all). */
static inline int sqz_mpi_candidate(MPI_Datatype datatype, MPI_Op op, MPI_Comm comm, long count)
{
    if (__builtin_expect(NULL == sqz_mpi_ctx, 0)) {
        return 0;
    }
    if (MPI_FLOAT != datatype || MPI_SUM != op || count <= 0 ||
        (size_t)count * sizeof(float) < sqz_mpi_ctx->p.min_bytes || MPI_COMM_NULL == comm) {
        sqz_mpi_count_passthrough();
        return 0;
    }
    if (sqz_mpi_inside) {
        return 0; /* the library's own call, or MPI's from inside the engine */
    }
    int inter = 0;
    if (MPI_SUCCESS != PMPI_Comm_test_inter(comm, &inter) || inter) {
        sqz_mpi_count_passthrough();
        return 0;
    }
    return 1;
}

/* A float SUM all-reduce that passes through on this rank, when another rank might compress it
 * (its count may differ: an erroneous program): its communicator's engine is made now if it is
 * not (collective: every rank of comm is in this call, whatever its count, so none makes it
 * alone later), and the board says where this rank is (sqz_mpi_board.h).  \return 1 when the
 * board was marked (the caller clears it). */
static int sqz_mpi_float_sum_passthrough(MPI_Datatype datatype, MPI_Op op, MPI_Comm comm,
                                         long count)
{
    int inter = 0;
    if (NULL == sqz_mpi_ctx || sqz_mpi_inside || MPI_FLOAT != datatype || MPI_SUM != op ||
        count <= 0 || MPI_COMM_NULL == comm || MPI_SUCCESS != PMPI_Comm_test_inter(comm, &inter) ||
        inter) {
        return 0;
    }
    sqz_mpi_inside = 1;
    (void)sqz_mpi_comm(comm);
    sqz_mpi_inside = 0;
    sqz_board_enter(SQZ_BOARD_PASSTHROUGH, (uint64_t)count, 0);
    return 1;
}

static int sqz_mpi_error(MPI_Comm comm, sqz_status_t st)
{
    SQZ_ERROR("compressed collective failed: %s", sqz_status_string(st));
    PMPI_Comm_call_errhandler(comm, MPI_ERR_OTHER);
    return MPI_ERR_OTHER;
}

/* The compressed float SUM all-reduce of a candidate call, hierarchical or flat.  \return 0 when
 * the engine declines it (the caller passes it through), else 1 with the outcome in *st. */
static int sqz_mpi_allreduce_compressed(const void *sendbuf, void *recvbuf, int count,
                                        MPI_Comm comm, sqz_status_t *st)
{
    sqz_mpi_inside    = 1;
    sqz_statefile_poll();
    sqz_mpi_comm_t *c = sqz_mpi_comm(comm);
    if (NULL == c || !sqz_comm_eligible(c->engine, (size_t)count, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM)) {
        if (c) {
            sqz_comm_count_passthrough(c->engine);
        }
        sqz_mpi_inside = 0;
        return 0;
    }
    sqz_board_enter(SQZ_BOARD_COMPRESSED, (uint64_t)count, c->engine->nranks);
    *st = c->hier ? sqz_mpi_hier_allreduce(c->hier, sendbuf, recvbuf, count)
                  : sqz_allreduce(c->engine, MPI_IN_PLACE == sendbuf ? NULL : sendbuf, recvbuf,
                                  (size_t)count, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 0);
    sqz_board_leave();
    sqz_mpi_inside = 0;
    return 1;
}

SQZ_MPI_API int MPI_Allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype,
                              MPI_Op op, MPI_Comm comm)
{
    sqz_status_t st;
    if (!sqz_mpi_candidate(datatype, op, comm, count) ||
        !sqz_mpi_allreduce_compressed(sendbuf, recvbuf, count, comm, &st)) {
        const int mark = sqz_mpi_float_sum_passthrough(datatype, op, comm, count);
        const int rc   = PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
        if (mark) {
            sqz_board_leave();
        }
        return rc;
    }
    return SQZ_OK == st ? MPI_SUCCESS : sqz_mpi_error(comm, st);
}

/* A generalized request that is complete from the start: the eager Iallreduce has already run. */
static int sqz_greq_query(void *extra, MPI_Status *status)
{
    (void)extra;
    PMPI_Status_set_elements(status, MPI_BYTE, 0);
    PMPI_Status_set_cancelled(status, 0);
    status->MPI_SOURCE = MPI_UNDEFINED;
    status->MPI_TAG    = MPI_UNDEFINED;
    return MPI_SUCCESS;
}
static int sqz_greq_free(void *extra) { (void)extra; return MPI_SUCCESS; }
static int sqz_greq_cancel(void *extra, int complete) { (void)extra; (void)complete; return MPI_SUCCESS; }

SQZ_MPI_API int MPI_Iallreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype,
                               MPI_Op op, MPI_Comm comm, MPI_Request *request)
{
    /* Eager: the compressed all-reduce runs now (SQZ_IALLREDUCE documents the trade-off). */
    sqz_status_t st;
    if (!sqz_mpi_candidate(datatype, op, comm, count) ||
        SQZ_IALLREDUCE_PASSTHROUGH == sqz_mpi_ctx->p.iallreduce ||
        !sqz_mpi_allreduce_compressed(sendbuf, recvbuf, count, comm, &st)) {
        return PMPI_Iallreduce(sendbuf, recvbuf, count, datatype, op, comm, request);
    }
    if (SQZ_OK != st) {
        return sqz_mpi_error(comm, st);
    }
    int rc = PMPI_Grequest_start(sqz_greq_query, sqz_greq_free, sqz_greq_cancel, NULL, request);
    if (MPI_SUCCESS == rc) {
        rc = PMPI_Grequest_complete(*request);
    }
    return rc;
}

SQZ_MPI_API int MPI_Reduce_scatter_block(const void *sendbuf, void *recvbuf, int recvcount,
                                         MPI_Datatype datatype, MPI_Op op, MPI_Comm comm)
{
    int size = 1;
    if (MPI_COMM_NULL != comm) {
        PMPI_Comm_size(comm, &size);
    }
    if (!sqz_mpi_candidate(datatype, op, comm, (long)recvcount * size)) {
        return PMPI_Reduce_scatter_block(sendbuf, recvbuf, recvcount, datatype, op, comm);
    }
    sqz_mpi_inside = 1;
    /* (hierarchical where the ranks are host-major, else the flat engine) */
    sqz_mpi_comm_t *c  = sqz_mpi_comm(comm);
    sqz_comm_t     *h  = c ? sqz_mpi_hier_rs_engine(c->hier) : NULL;
    sqz_comm_t     *e  = h ? h : (c ? c->engine : NULL);
    sqz_status_t    st = SQZ_ERR_NOT_SUPPORTED;
    if (e) {
        st = sqz_reduce_scatter_block(e, MPI_IN_PLACE == sendbuf ? NULL : sendbuf, recvbuf,
                                      (size_t)recvcount, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 0);
    }
    sqz_mpi_inside = 0;
    if (SQZ_ERR_NOT_SUPPORTED == st) {
        return PMPI_Reduce_scatter_block(sendbuf, recvbuf, recvcount, datatype, op, comm);
    }
    return SQZ_OK == st ? MPI_SUCCESS : sqz_mpi_error(comm, st);
}

/* ---------------------------------------------------------------------------------------------
 * MoE token all-to-alls.
 *
 * With SQZ_MOE on, an MPI_Alltoall or MPI_Alltoallv is token traffic when both datatypes are
 * MPI_FLOAT (MPI has no standard fp16/bf16 datatype: halves and bfloat16 tokens are the NCCL
 * path's), it is not in place, on an intra-communicator, and every per-peer count and
 * displacement is a multiple of SQZ_MOE_DIM.  Token traffic is coded as SQZ_MOE says (every call
 * dedup, every call lsh, or SQZ_MOE_CYCLE in turn: the shim cannot tell a dispatch from a combine,
 * so the user designates which calls get the lossy LSH); anything else goes to PMPI untouched and
 * is counted in the stats (moe.calls_passthrough).
 *
 * Every rank must take the same decision.  MPI_Alltoall's count is the same on every rank; the
 * counts of MPI_Alltoallv are each rank's own, so the ranks agree with one small all-reduce (MIN)
 * of their verdicts before anything else.
 * ------------------------------------------------------------------------------------------- */

/* The cheap filter of an all-to-all: \return the communicator's state when the call may be token
 * traffic, NULL when it passes through (counted as a MoE passthrough only when SQZ_MOE is on). */
static sqz_mpi_comm_t *sqz_mpi_a2a_candidate(const void *sendbuf, MPI_Datatype sendtype,
                                             MPI_Datatype recvtype, MPI_Comm comm)
{
    if (__builtin_expect(NULL == sqz_mpi_ctx, 0) || SQZ_MOE_OFF == sqz_mpi_ctx->p.moe ||
        sqz_mpi_inside) {
        return NULL;
    }
    int inter = 0;
    if (MPI_FLOAT != sendtype || MPI_FLOAT != recvtype || MPI_IN_PLACE == sendbuf ||
        MPI_COMM_NULL == comm || MPI_SUCCESS != PMPI_Comm_test_inter(comm, &inter) || inter) {
        __atomic_fetch_add(&sqz_mpi_ctx->moe_passthrough, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    sqz_mpi_inside    = 1;
    sqz_mpi_comm_t *c = sqz_mpi_comm(comm);
    int             size = 1;
    PMPI_Comm_size(comm, &size);
    if (c && NULL == c->tokcounts) {
        c->tokcounts = malloc(4 * (size_t)size * sizeof(size_t));
    }
    sqz_mpi_inside = 0;
    if (NULL == c || NULL == c->tokcounts) {
        __atomic_fetch_add(&sqz_mpi_ctx->moe_passthrough, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    return c;
}

/* Converts one int array of elements into tokens of d elements; \return 0 when some entry is
 * negative or not a multiple of d. */
static int sqz_mpi_tokens(const int *in, size_t *out, int n, size_t d)
{
    int ok = 1;
    for (int r = 0; r < n; r++) {
        ok &= in[r] >= 0 && 0 == (size_t)in[r] % d;
        out[r] = in[r] >= 0 ? (size_t)in[r] / d : 0;
    }
    return ok;
}

/* Runs a token all-to-all whose counts are in c->tokcounts (send counts, send displacements,
 * receive counts, receive displacements).  \return 0 when it passes through after all (the
 * codec of this call is "none"), else 1 with the MPI result in *rc. */
static int sqz_mpi_a2a_run(sqz_mpi_comm_t *c, const void *sendbuf, void *recvbuf, MPI_Comm comm,
                           int *rc)
{
    const int     P = c->engine->nranks;
    const size_t *k = c->tokcounts;
    sqz_mpi_inside  = 1;
    const int codec = sqz_moe_next_codec(c->engine);
    if (SQZ_MOE_NONE == codec) {
        sqz_moe_count_passthrough(c->engine);
        sqz_mpi_inside = 0;
        return 0;
    }
    const sqz_status_t st =
        sqz_moe_alltoallv(c->engine, (sqz_moe_codec_t)codec, sendbuf, k, k + P, recvbuf,
                          k + 2 * P, k + 3 * P, (size_t)sqz_mpi_ctx->p.moe_dim, SQZ_DTYPE_FLOAT32);
    sqz_mpi_inside = 0;
    *rc            = SQZ_OK == st ? MPI_SUCCESS : sqz_mpi_error(comm, st);
    return 1;
}

SQZ_MPI_API int MPI_Alltoall(const void *sendbuf, int sendcount, MPI_Datatype sendtype,
                             void *recvbuf, int recvcount, MPI_Datatype recvtype, MPI_Comm comm)
{
    sqz_mpi_comm_t *c = sqz_mpi_a2a_candidate(sendbuf, sendtype, recvtype, comm);
    int             rc;
    if (c) {
        /* The same count on every rank: every rank reaches the same verdict alone. */
        const size_t d = (size_t)sqz_mpi_ctx->p.moe_dim;
        const int    P = c->engine->nranks;
        if (sendcount >= 0 && sendcount == recvcount && 0 == (size_t)sendcount % d) {
            for (int r = 0; r < P; r++) {
                c->tokcounts[r] = c->tokcounts[2 * P + r] = (size_t)sendcount / d;
                c->tokcounts[P + r] = c->tokcounts[3 * P + r] = (size_t)r * ((size_t)sendcount / d);
            }
            if (sqz_mpi_a2a_run(c, sendbuf, recvbuf, comm, &rc)) {
                return rc;
            }
        } else {
            sqz_moe_count_passthrough(c->engine);
        }
    }
    return PMPI_Alltoall(sendbuf, sendcount, sendtype, recvbuf, recvcount, recvtype, comm);
}

SQZ_MPI_API int MPI_Alltoallv(const void *sendbuf, const int sendcounts[], const int sdispls[],
                              MPI_Datatype sendtype, void *recvbuf, const int recvcounts[],
                              const int rdispls[], MPI_Datatype recvtype, MPI_Comm comm)
{
    sqz_mpi_comm_t *c = sqz_mpi_a2a_candidate(sendbuf, sendtype, recvtype, comm);
    int             rc;
    if (c) {
        const size_t d = (size_t)sqz_mpi_ctx->p.moe_dim;
        const int    P = c->engine->nranks;
        size_t      *k = c->tokcounts;
        int          ok = sqz_mpi_tokens(sendcounts, k, P, d) & sqz_mpi_tokens(sdispls, k + P, P, d) &
                 sqz_mpi_tokens(recvcounts, k + 2 * P, P, d) &
                 sqz_mpi_tokens(rdispls, k + 3 * P, P, d);
        int all = 0;
        if (MPI_SUCCESS != PMPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, comm)) {
            all = 0; /* (then every rank failed alike, or the job is broken anyway) */
        }
        if (all) {
            if (sqz_mpi_a2a_run(c, sendbuf, recvbuf, comm, &rc)) {
                return rc;
            }
        } else {
            sqz_moe_count_passthrough(c->engine);
        }
    }
    return PMPI_Alltoallv(sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts, rdispls,
                          recvtype, comm);
}
