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

/** Frees what create allocated (t->self).  Accepts a zeroed t. */
void sqz_transport_mpi_destroy(sqz_transport_t *t);

#endif
