#include "config.h"

#include <limits.h>
#include <stdlib.h>

#include "sqz_transport_mpi.h"

struct sqz_transport_mpi {
    MPI_Comm comm;
    int      nranks;
    int     *ints; /* 4 * nranks: send counts, send displs, recv counts, recv displs */
};

/* MPI counts are int: refuse (transport error) rather than truncate. */
static int sqz_to_ints(const size_t *in, int *out, int n)
{
    for (int i = 0; i < n; i++) {
        if (in[i] > (size_t)INT_MAX) {
            return -1;
        }
        out[i] = (int)in[i];
    }
    return 0;
}

static int sqz_mpi_allgatherv(void *self, const void *sendbuf, size_t sendbytes, void *recvbuf,
                              const size_t *recvbytes, const size_t *displs)
{
    sqz_transport_mpi_t *m = self;
    int *const           rc = m->ints + 2 * m->nranks, *const rd = m->ints + 3 * m->nranks;
    if (sendbytes > (size_t)INT_MAX || sqz_to_ints(recvbytes, rc, m->nranks) ||
        sqz_to_ints(displs, rd, m->nranks)) {
        return -1;
    }
    return MPI_SUCCESS != PMPI_Allgatherv(sendbuf, (int)sendbytes, MPI_BYTE, recvbuf, rc, rd,
                                          MPI_BYTE, m->comm);
}

static int sqz_mpi_alltoallv(void *self, const void *sendbuf, const size_t *sendbytes,
                             const size_t *sdispls, void *recvbuf, const size_t *recvbytes,
                             const size_t *rdispls)
{
    sqz_transport_mpi_t *m  = self;
    int *const           sc = m->ints, *const sd = m->ints + m->nranks;
    int *const           rc = m->ints + 2 * m->nranks, *const rd = m->ints + 3 * m->nranks;
    if (sqz_to_ints(sendbytes, sc, m->nranks) || sqz_to_ints(sdispls, sd, m->nranks) ||
        sqz_to_ints(recvbytes, rc, m->nranks) || sqz_to_ints(rdispls, rd, m->nranks)) {
        return -1;
    }
    return MPI_SUCCESS != PMPI_Alltoallv(sendbuf, sc, sd, MPI_BYTE, recvbuf, rc, rd, MPI_BYTE,
                                         m->comm);
}

static int sqz_mpi_allreduce_f32_sum(void *self, const float *in, float *out, size_t n)
{
    sqz_transport_mpi_t *m = self;
    /* Pieces of at most INT_MAX elements: the same split on every rank. */
    for (size_t off = 0; off < n;) {
        const size_t c  = (n - off) > (size_t)INT_MAX ? (size_t)INT_MAX : (n - off);
        const void  *sb = (in == out) ? MPI_IN_PLACE : (const void *)(in + off);
        if (MPI_SUCCESS != PMPI_Allreduce(sb, out + off, (int)c, MPI_FLOAT, MPI_SUM, m->comm)) {
            return -1;
        }
        off += c;
    }
    return 0;
}

sqz_status_t sqz_transport_mpi_create(MPI_Comm comm, sqz_transport_t *t)
{
    sqz_transport_mpi_t *m = calloc(1, sizeof(*m));
    if (NULL == m) {
        return SQZ_ERR_NO_MEMORY;
    }
    int rank = 0, size = 1;
    if (MPI_SUCCESS != PMPI_Comm_rank(comm, &rank) || MPI_SUCCESS != PMPI_Comm_size(comm, &size)) {
        free(m);
        return SQZ_ERR_MPI;
    }
    m->comm   = comm;
    m->nranks = size;
    m->ints   = calloc(4 * (size_t)size, sizeof(int));
    if (NULL == m->ints) {
        free(m);
        return SQZ_ERR_NO_MEMORY;
    }
    *t = (sqz_transport_t){
        .size              = sizeof(*t),
        .self              = m,
        .rank              = rank,
        .nranks            = size,
        .allgatherv        = sqz_mpi_allgatherv,
        .alltoallv         = sqz_mpi_alltoallv,
        .allreduce_f32_sum = sqz_mpi_allreduce_f32_sum,
    };
    return SQZ_OK;
}

void sqz_transport_mpi_destroy(sqz_transport_t *t)
{
    sqz_transport_mpi_t *m = t->self;
    if (m) {
        free(m->ints);
        free(m);
    }
    t->self = NULL;
}
