/* Ranks grouped by host, for the hierarchical exchanges (MPI: src/interpose/mpi/sqz_mpi_hier.c,
 * GPU: src/cuda/sqz_gpu_hier.c).
 *
 * A rank's host is a 64-bit key: FNV-1a of SQZ_HOST_ID when it is set (tests and benchmarks
 * emulate several hosts on one machine with it), else of the hostname.  Every rank gathers every
 * key and derives the same layout from them: hosts numbered in the order of their first rank,
 * local ranks in the order of the communicator's ranks. */
#ifndef SQZ_HOSTS_H
#define SQZ_HOSTS_H

#include <stdint.h>

typedef struct sqz_host_layout {
    int host;       /* this rank's host, 0 .. hosts - 1 */
    int hosts;      /* hosts the communicator spans */
    int local_rank; /* this rank's index among the ranks of its host */
    int local_size; /* ranks on this rank's host */
    int most;       /* most ranks on one host */
    int uniform;    /* 1: every host holds the same number of ranks */
    int host_major; /* 1: uniform, and every rank r is host r / L, local rank r % L (L ranks a
                       host): a reduce-scatter's block r can go through the hierarchy */
} sqz_host_layout_t;

/** This rank's host key: of host_id when it is not empty, else of the hostname. */
uint64_t sqz_host_key(const char *host_id);

/** The layout of rank `me` among P ranks whose host keys are keys[0..P-1]. */
void sqz_host_layout(const uint64_t *keys, int P, int me, sqz_host_layout_t *out);

#endif
