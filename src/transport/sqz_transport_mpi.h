/* The transport over PMPI: the engine's byte movers on an MPI communicator.  Every call goes to
 * PMPI_* directly, so the interposer never sees the library's own traffic. */
#ifndef SQZ_TRANSPORT_MPI_H
#define SQZ_TRANSPORT_MPI_H

#include <mpi.h>

#include <squeeze.h>

typedef struct sqz_transport_mpi sqz_transport_mpi_t;

/** Creates a transport on comm: collectives run on comm itself (ordered with the job's collectives,
 *  as MPI requires), point-to-point messages on a private duplicate (collective: every rank of
 *  comm must create its transport at the same point).  Fills *t. */
sqz_status_t sqz_transport_mpi_create(MPI_Comm comm, sqz_transport_t *t);

/** Called when a point-to-point request has made no progress for a while: comm, the peer it waits
 *  for (a rank of comm), and the seconds waited. */
typedef void (*sqz_mpi_stall_fn)(MPI_Comm comm, int peer, double waited);

/** Asks the transport to call fn when a test or wait has seen no request complete for `seconds`
 *  (then again every `seconds`).  Waits then poll instead of blocking in MPI_Wait. */
void sqz_transport_mpi_on_stall(sqz_transport_t *t, sqz_mpi_stall_fn fn, double seconds);

/** Frees what create allocated (t->self).  Accepts a zeroed t. */
void sqz_transport_mpi_destroy(sqz_transport_t *t);

#endif
