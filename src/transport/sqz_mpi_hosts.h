/* Ranks of an MPI communicator grouped by host, for the hierarchies built on MPI communicators
 * (the interposer's, src/interpose/mpi/sqz_mpi_hier.c, and squeeze_bench's). */
#ifndef SQZ_MPI_HOSTS_H
#define SQZ_MPI_HOSTS_H

#include <mpi.h>

#include "topo/sqz_hosts.h"

/** This rank's host among comm's ranks (src/topo/sqz_hosts.h: host_id, else the hostname).
 *  Collective over comm, through PMPI.  \return 0, or -1 on every rank (memory, or an MPI
 *  failure). */
int sqz_mpi_hosts(MPI_Comm comm, const char *host_id, sqz_host_layout_t *lay);

#endif
