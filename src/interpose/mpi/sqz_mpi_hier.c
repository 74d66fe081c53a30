/* The hierarchical all-reduce of the MPI interposer (see sqz_mpi_hier.h). */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_ctx.h"
#include "sqz_log.h"
#include "interpose/mpi/sqz_mpi_board.h"
#include "interpose/mpi/sqz_mpi_hier.h"
#include "topo/sqz_hosts.h"
#include "transport/sqz_transport_mpi.h"

struct sqz_mpi_hier {
    sqz_comm_t       *flat;     /* counts the passthrough of the leader form's other ranks */
    MPI_Comm          local;    /* this host's ranks, by rank */
    MPI_Comm          inter;    /* sharded: the ranks of this local index, by host; leader: the
                                 * hosts' first ranks (MPI_COMM_NULL on the others) */
    sqz_transport_t   t;        /* over inter */
    sqz_comm_t       *engine;   /* over t; NULL where inter is MPI_COMM_NULL or one host */
    sqz_host_layout_t lay;
    int               sharded;
    int              *counts;   /* sharded: each local rank's shard, then the displacements */
};

void sqz_mpi_hier_free(sqz_mpi_hier_t *h)
{
    if (NULL == h) {
        return;
    }
    sqz_comm_destroy(h->engine);
    sqz_transport_mpi_destroy(&h->t);
    if (MPI_COMM_NULL != h->inter) {
        PMPI_Comm_free(&h->inter);
    }
    if (MPI_COMM_NULL != h->local) {
        PMPI_Comm_free(&h->local);
    }
    free(h->counts);
    free(h);
}

/* The layout of this rank's host among comm's (collective).  \return 0, or -1 on every rank. */
static int sqz_mpi_hier_layout(const sqz_ctx_t *ctx, MPI_Comm comm, sqz_host_layout_t *lay)
{
    int rank = 0, size = 0;
    PMPI_Comm_rank(comm, &rank);
    PMPI_Comm_size(comm, &size);
    uint64_t *keys = malloc((size_t)size * sizeof(*keys));
    int       have = NULL != keys, all = 0;
    /* (agreed first, so that a rank without memory leaves no peer waiting in the gather) */
    if (MPI_SUCCESS != PMPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, comm) || !all) {
        free(keys);
        return -1;
    }
    const uint64_t mine = sqz_host_key(ctx->p.host_id);
    const int      rc   = PMPI_Allgather(&mine, 8, MPI_BYTE, keys, 8, MPI_BYTE, comm);
    if (MPI_SUCCESS == rc) {
        sqz_host_layout(keys, size, rank, lay);
    }
    free(keys);
    return MPI_SUCCESS == rc ? 0 : -1;
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
    if (SQZ_OK != sqz_transport_mpi_create(h->inter, &h->t) ||
        SQZ_OK != sqz_comm_create(h->flat->ctx, &h->t, &h->engine)) {
        return -1;
    }
    /* One rank per host; the sharded form's L exchanges share each host's link. */
    h->engine->hosts = lay->hosts, h->engine->per_host = 1;
    h->engine->link_share = h->sharded ? lay->local_size : 1;
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
    if (0 != sqz_mpi_hier_layout(flat->ctx, comm, &lay)) {
        return -1;
    }
    flat->hosts = lay.hosts, flat->per_host = lay.most; /* (the cost model's topology) */
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
    h->counts  = malloc(2 * (size_t)lay.local_size * sizeof(*h->counts));
    if (NULL == h->counts || 0 != sqz_mpi_hier_split(h, comm)) {
        sqz_mpi_hier_free(h);
        return -1;
    }
    SQZ_INFO("hierarchical all-reduce (%s): %d host(s), %d rank(s) on this one, local rank %d",
             h->sharded ? "sharded" : "leader", lay.hosts, lay.local_size, lay.local_rank);
    *out = h;
    return 0;
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

/* \return 1 when x[0..n-1] holds NaN or Inf (exponent bits all set; vectorizes). */
static int sqz_mpi_hier_nonfinite(const float *x, size_t n)
{
    const uint32_t *u   = (const uint32_t *)x;
    uint32_t        bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    }
    return 0 != bad;
}

/* The sharded form (see sqz_mpi_hier.h).  Counted by each rank's engine between hosts. */
static sqz_status_t sqz_mpi_hier_sharded(sqz_mpi_hier_t *h, const void *sendbuf, void *recvbuf,
                                         int count)
{
    const int L = h->lay.local_size, me = h->lay.local_rank;
    int      *counts = h->counts, *displs = h->counts + L;
    for (int i = 0, at = 0; i < L; i++) {
        counts[i] = count / L + (i < count % L);
        displs[i] = at;
        at += counts[i];
    }
    float *mine = (float *)recvbuf + displs[me];
    if (MPI_IN_PLACE == sendbuf) {
        /* (in place, the shard lands at the start of recvbuf) */
        if (MPI_SUCCESS != PMPI_Reduce_scatter(MPI_IN_PLACE, recvbuf, counts, MPI_FLOAT, MPI_SUM,
                                               h->local)) {
            return SQZ_ERR_MPI;
        }
        memmove(mine, recvbuf, (size_t)counts[me] * sizeof(float));
    } else if (MPI_SUCCESS != PMPI_Reduce_scatter(sendbuf, mine, counts, MPI_FLOAT, MPI_SUM,
                                                  h->local)) {
        return SQZ_ERR_MPI;
    }
    sqz_status_t st = SQZ_OK;
    if (h->engine && counts[me] > 0) {
        /* A non-finite element in any shard of the host sends every shard's exchange dense, so
         * the call is the exact sum as on the flat path (one int all-reduce inside the host). */
        int bad = sqz_mpi_hier_nonfinite(mine, (size_t)counts[me]), any = bad;
        if (MPI_SUCCESS != PMPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, h->local)) {
            any = 1; /* (the dense exchange is agreed with the peers whatever this host knows) */
        }
        st = sqz_allreduce_agreeing(h->engine, mine, (size_t)counts[me], any);
    }
    /* Gathered even after a failure, so that no rank of the host is left waiting. */
    if (MPI_SUCCESS != PMPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recvbuf, counts, displs,
                                       MPI_FLOAT, h->local)) {
        return SQZ_ERR_MPI;
    }
    return st;
}

sqz_status_t sqz_mpi_hier_allreduce(sqz_mpi_hier_t *h, const void *sendbuf, void *recvbuf,
                                    int count)
{
    return h->sharded ? sqz_mpi_hier_sharded(h, sendbuf, recvbuf, count)
                      : sqz_mpi_hier_leader(h, sendbuf, recvbuf, count);
}
