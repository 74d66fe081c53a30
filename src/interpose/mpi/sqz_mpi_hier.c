/* The hierarchical all-reduce of the MPI interposer (see sqz_mpi_hier.h). */
#include "config.h"

#include <stdlib.h>

#include "sqz_ctx.h"
#include "sqz_log.h"
#include "interpose/mpi/sqz_mpi_board.h"
#include "interpose/mpi/sqz_mpi_hier.h"
#include "transport/sqz_mpi_hosts.h"
#include "transport/sqz_transport_mpi.h"

struct sqz_mpi_hier {
    sqz_comm_t       *flat;     /* counts the passthrough of the leader form's other ranks */
    MPI_Comm          local;    /* this host's ranks, by rank */
    MPI_Comm          inter;    /* sharded: the ranks of this local index, by host; leader: the
                                 * hosts' first ranks (MPI_COMM_NULL on the others) */
    sqz_transport_t   t;        /* over inter */
    sqz_transport_t   lt;       /* sharded: over local */
    sqz_comm_t       *engine;   /* sharded: sqz_comm_create_hier over lt and t; leader: over t;
                                 * NULL where inter is MPI_COMM_NULL or with one host */
    sqz_host_layout_t lay;
    int               sharded;
    int               host_major; /* every rank is host x L + local rank: a reduce-scatter's
                                   * block b belongs to the rank the hierarchy gives it */
};

void sqz_mpi_hier_free(sqz_mpi_hier_t *h)
{
    if (NULL == h) {
        return;
    }
    sqz_comm_destroy(h->engine);
    sqz_transport_mpi_destroy(&h->t);
    sqz_transport_mpi_destroy(&h->lt);
    if (MPI_COMM_NULL != h->inter) {
        PMPI_Comm_free(&h->inter);
    }
    if (MPI_COMM_NULL != h->local) {
        PMPI_Comm_free(&h->local);
    }
    free(h);
}

/* The communicators and the engine of h (collective over comm).  \return 0, or -1. */
static int sqz_mpi_hier_split(sqz_mpi_hier_t *h, MPI_Comm comm)
{
    const sqz_host_layout_t *lay  = &h->lay;
    int                      rank = 0;
    PMPI_Comm_rank(comm, &rank);
    if (MPI_SUCCESS != PMPI_Comm_split(comm, lay->host, rank, &h->local)) {
        h->local = MPI_COMM_NULL;
        return -1;
    }
    const int color = h->sharded ? lay->local_rank : (0 == lay->local_rank ? 0 : MPI_UNDEFINED);
    if (MPI_SUCCESS != PMPI_Comm_split(comm, color, lay->host, &h->inter)) {
        h->inter = MPI_COMM_NULL;
        return -1;
    }
    if (MPI_COMM_NULL == h->inter || lay->hosts < 2) {
        return 0;
    }
    /* Every rank of inter runs the same code on the same sizes: a failure here is memory only. */
    sqz_ctx_t *ctx = h->flat->ctx;
    if (SQZ_OK != sqz_transport_mpi_create(h->inter, &h->t) ||
        (h->sharded && SQZ_OK != sqz_transport_mpi_create(h->local, &h->lt)) ||
        SQZ_OK != (h->sharded ? sqz_comm_create_hier(ctx, &h->lt, &h->t, &h->engine)
                              : sqz_comm_create(ctx, &h->t, &h->engine))) {
        return -1;
    }
    h->engine->cost.hosts = lay->hosts, h->engine->cost.per_host = 1; /* (one rank per host) */
    /* A compressed exchange that waits too long for a peer looks where that peer is. */
    sqz_transport_mpi_on_stall(&h->t, sqz_board_stalled, h->flat->ctx->p.stall_seconds);
    return 0;
}

int sqz_mpi_hier_create(sqz_comm_t *flat, MPI_Comm comm, sqz_mpi_hier_t **out)
{
    *out           = NULL;
    const int mode = flat->ctx->p.hier;
    if (SQZ_HIER_OFF == mode) {
        return 0;
    }
    sqz_host_layout_t lay;
    if (0 != sqz_mpi_hosts(comm, flat->ctx->p.host_id, &lay)) {
        return -1;
    }
    flat->cost.hosts = lay.hosts, flat->cost.per_host = lay.most; /* (the cost model's topology) */
    if (lay.most < 2 || (SQZ_HIER_ON != mode && lay.hosts < 2)) {
        return 0;
    }
    sqz_mpi_hier_t *h = calloc(1, sizeof(*h));
    int             ok = NULL != h, all = 0;
    if (MPI_SUCCESS != PMPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, comm) || !all) {
        free(h);
        return -1;
    }
    h->flat    = flat;
    h->lay     = lay;
    h->local   = h->inter = MPI_COMM_NULL;
    h->sharded = lay.uniform;
    if (0 != sqz_mpi_hier_split(h, comm)) {
        sqz_mpi_hier_free(h);
        return -1;
    }
    h->host_major = h->sharded && lay.host_major; /* (the same on every rank: all keys seen) */
    SQZ_INFO("hierarchical all-reduce (%s): %d host(s), %d rank(s) on this one, local rank %d",
             h->sharded ? "sharded" : "leader", lay.hosts, lay.local_size, lay.local_rank);
    *out = h;
    return 0;
}

sqz_comm_t *sqz_mpi_hier_rs_engine(sqz_mpi_hier_t *h)
{
    return h && h->host_major ? h->engine : NULL;
}

sqz_comm_t *sqz_mpi_hier_engine(sqz_mpi_hier_t *h)
{
    return h ? h->engine : NULL;
}

/* The leader form (see sqz_mpi_hier.h).  Counted by the leaders' engine. */
static sqz_status_t sqz_mpi_hier_leader(sqz_mpi_hier_t *h, const void *sendbuf, void *recvbuf,
                                        int count)
{
    const int lead = 0 == h->lay.local_rank;
    const void *in = MPI_IN_PLACE == sendbuf ? recvbuf : sendbuf;
    if (MPI_SUCCESS != PMPI_Reduce(lead && MPI_IN_PLACE == sendbuf ? MPI_IN_PLACE : in,
                                   lead ? recvbuf : NULL, count, MPI_FLOAT, MPI_SUM, 0,
                                   h->local)) {
        return SQZ_ERR_MPI;
    }
    sqz_status_t st = SQZ_OK;
    if (h->engine) {
        st = sqz_allreduce(h->engine, NULL, recvbuf, (size_t)count, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM,
                           0);
    } else if (!lead) {
        sqz_comm_count_passthrough(h->flat);
    }
    /* Broadcast even after a failure, so that no rank of the host is left waiting. */
    if (MPI_SUCCESS != PMPI_Bcast(recvbuf, count, MPI_FLOAT, 0, h->local)) {
        return SQZ_ERR_MPI;
    }
    return st;
}

sqz_status_t sqz_mpi_hier_allreduce(sqz_mpi_hier_t *h, const void *sendbuf, void *recvbuf,
                                    int count)
{
    if (!h->sharded) {
        return sqz_mpi_hier_leader(h, sendbuf, recvbuf, count);
    }
    /* (sqz_comm_create_hier's all-reduce; with one host, nothing between hosts: dense inside) */
    if (NULL == h->engine) {
        sqz_comm_count_passthrough(h->flat);
        return MPI_SUCCESS == PMPI_Allreduce(sendbuf, recvbuf, count, MPI_FLOAT, MPI_SUM, h->local)
                   ? SQZ_OK : SQZ_ERR_MPI;
    }
    return sqz_allreduce(h->engine, MPI_IN_PLACE == sendbuf ? NULL : sendbuf, recvbuf,
                         (size_t)count, SQZ_DTYPE_FLOAT32, SQZ_OP_SUM, 0);
}
