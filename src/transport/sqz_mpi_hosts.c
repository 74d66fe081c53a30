/* Ranks of an MPI communicator grouped by host (see sqz_mpi_hosts.h). */
#include "config.h"

#include <stdlib.h>

#include "transport/sqz_mpi_hosts.h"

int sqz_mpi_hosts(MPI_Comm comm, const char *host_id, sqz_host_layout_t *lay)
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
    const uint64_t mine = sqz_host_key(host_id);
    const int      rc   = PMPI_Allgather(&mine, 8, MPI_BYTE, keys, 8, MPI_BYTE, comm);
    if (MPI_SUCCESS == rc) {
        sqz_host_layout(keys, size, rank, lay);
    }
    free(keys);
    return MPI_SUCCESS == rc ? 0 : -1;
}
