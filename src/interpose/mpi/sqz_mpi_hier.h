/* The hierarchical all-reduce of the MPI interposer (SQZ_HIER).
 *
 * Ranks are grouped by host (src/topo/sqz_hosts.h: SQZ_HOST_ID, else the hostname).  When the
 * communicator spans several hosts and some host holds more than one of its ranks (SQZ_HIER=auto;
 * =on also with one host), an all-reduce takes one of two forms:
 *
 *   sharded (every host holds the same number L of ranks): a dense PMPI_Reduce_scatter inside the
 *     host leaves each rank its shard (1/L of the buffer, the first count % L ranks one element
 *     more), the shard is all-reduced compressed among the ranks with the same local index on the
 *     other hosts (every rank drives its share of the host's network and compresses 1/L of the
 *     buffer), and a dense PMPI_Allgatherv inside the host copies the shards back;
 *   leader (hosts of different sizes): a dense PMPI_Reduce to the host's first rank, the compressed
 *     all-reduce among the hosts' first ranks, and a PMPI_Bcast back.
 *
 * Every engine between hosts ends bit-identical on its ranks (the engine's promise) and the dense
 * copies inside a host move bits, so every rank ends bit-identical.  The dense stage after the
 * exchange runs even when the exchange failed, so no rank of a host is left waiting.  A NaN or
 * Inf in any rank's input makes the whole call dense and exact, as on the flat path: the host
 * whose shard shows it agrees on it inside (one int all-reduce per call), and its exchanges
 * between hosts make their peers go dense too (sqz_allreduce_agreeing).  SQZ_MIN_BYTES is judged
 * on the whole buffer by the interposer; an exchange whose shard is below it runs dense. */
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

/** The hierarchical float SUM all-reduce of count elements (sendbuf may be MPI_IN_PLACE). */
sqz_status_t sqz_mpi_hier_allreduce(sqz_mpi_hier_t *h, const void *sendbuf, void *recvbuf,
                                    int count);

#endif
