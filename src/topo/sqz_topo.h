/* Machine topology through hwloc: what squeeze_info shows and what thread binding and host
 * grouping build on. */
#ifndef SQZ_TOPO_H
#define SQZ_TOPO_H

#include <stdio.h>

typedef struct sqz_topo_summary {
    int packages, numa_nodes, cores, pus;
    int gpus; /* CUDA/NVML OS devices hwloc reports (0 without GPU support in hwloc) */
} sqz_topo_summary_t;

/** Fills s from hwloc.  \return 0, or -1 when hwloc fails (s zeroed). */
int sqz_topo_summary(sqz_topo_summary_t *s);

/** Prints the summary and the hwloc version. */
void sqz_topo_print(FILE *out);

#endif
