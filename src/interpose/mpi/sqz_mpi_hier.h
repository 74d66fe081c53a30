/* The hierarchical all-reduce of the MPI interposer (SQZ_HIER).
 *
 * Ranks are grouped by host (src/topo/sqz_hosts.h: SQZ_HOST_ID, else the hostname).  When the
 * communicator spans several hosts and some host holds more than one of its ranks (SQZ_HIER=auto;
 * =on also with one host), an all-reduce takes one of two forms:
 *
 *   sharded (every host holds the same number L of ranks): sqz_comm_create_hier over PMPI
 *     transports on this host's ranks and on the ranks with this rank's local index on the other
 *     hosts (src/coll/sqz_coll_hier.h): a dense reduce-scatter inside the host, each rank's shard
 *     (1/L of the buffer) compressed between hosts, a dense all-gather back; every rank drives its
 *     share of the host's network and compresses 1/L of the buffer.  A NaN or Inf in any input
 *     makes the call the exact dense sum, as on the flat path;
 *   leader (hosts of different sizes): a dense PMPI_Reduce to the host's first rank, the compressed
 *     all-reduce among the hosts' first ranks, and a PMPI_Bcast back (even after a failure, so
 *     that no rank of the host is left waiting).
 *
 * Every engine between hosts ends bit-identical on its ranks (the engine's promise) and the dense
 * copies inside a host move bits, so every rank ends bit-identical.
 *
 * MPI_Reduce_scatter_block takes the sharded form's engine too (sqz_mpi_hier_rs_engine) where the
 * ranks are host-major: each rank then compresses between hosts only its column of blocks. */
#ifndef SQZ_MPI_HIER_H
#define SQZ_MPI_HIER_H

#include <mpi.h>

#include <squeeze.h>

typedef struct sqz_mpi_hier sqz_mpi_hier_t;

/** Sets up the hierarchy of comm, whose flat engine is `flat` (collective over comm: every rank
 *  takes the same decision from the same gathered host keys); tells `flat` its hosts and ranks
 *  per host (the cost model's topology).  *out = NULL when comm stays flat.
 *  \return 0, or -1 when an MPI call or an allocation failed. */
int sqz_mpi_hier_create(sqz_comm_t *flat, MPI_Comm comm, sqz_mpi_hier_t **out);

/** Frees h and its communicators (accepts NULL). */
void sqz_mpi_hier_free(sqz_mpi_hier_t *h);

/** The engine of this rank's exchange between hosts; NULL on the ranks of the leader form that
 *  are not their host's first, and with a single host. */
sqz_comm_t *sqz_mpi_hier_engine(sqz_mpi_hier_t *h);

/** The engine of the hierarchical reduce-scatter (sqz_hier_reduce_scatter_block: each host's
 *  row of blocks reduced inside it, each rank's column of blocks compressed between hosts), or
 *  NULL: only the sharded form whose ranks are host-major (rank = host x L + local rank, the
 *  usual placement: block b then belongs to the rank the hierarchy gives it), agreed by every
 *  rank at creation; otherwise MPI_Reduce_scatter_block stays flat. */
sqz_comm_t *sqz_mpi_hier_rs_engine(sqz_mpi_hier_t *h);

/** The hierarchical float SUM all-reduce of count elements (sendbuf may be MPI_IN_PLACE). */
sqz_status_t sqz_mpi_hier_allreduce(sqz_mpi_hier_t *h, const void *sendbuf, void *recvbuf,
                                    int count);

#endif
