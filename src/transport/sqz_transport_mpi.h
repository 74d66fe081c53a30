/* The transport over PMPI: the engine's byte movers on an MPI communicator.  Every call goes to
 * PMPI_* directly, so the interposer never sees the library's own traffic. */
#ifndef SQZ_TRANSPORT_MPI_H
#define SQZ_TRANSPORT_MPI_H

#include <mpi.h>

#include <squeeze.h>

typedef struct sqz_transport_mpi sqz_transport_mpi_t;

/** Creates a transport on comm (not duplicated: the engine's calls are ordered with the user's
 *  collectives on the same communicator, as MPI requires of all collectives).  Fills *t. */
sqz_status_t sqz_transport_mpi_create(MPI_Comm comm, sqz_transport_t *t);

/** Frees what create allocated (t->self).  Accepts a zeroed t. */
void sqz_transport_mpi_destroy(sqz_transport_t *t);

#endif
