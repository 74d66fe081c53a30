#include "config.h"

#include <hwloc.h>
#include <string.h>

#include "sqz_topo.h"

int sqz_topo_summary(sqz_topo_summary_t *s)
{
    memset(s, 0, sizeof(*s));
    hwloc_topology_t t;
    if (0 != hwloc_topology_init(&t)) {
        return -1;
    }
    hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    if (0 != hwloc_topology_load(t)) {
        hwloc_topology_destroy(t);
        return -1;
    }
    s->packages   = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE);
    s->numa_nodes = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    s->cores      = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
    s->pus        = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
    for (hwloc_obj_t o = hwloc_get_next_osdev(t, NULL); o; o = hwloc_get_next_osdev(t, o)) {
        if (HWLOC_OBJ_OSDEV_COPROC == o->attr->osdev.type || HWLOC_OBJ_OSDEV_GPU == o->attr->osdev.type) {
            s->gpus++;
        }
    }
    hwloc_topology_destroy(t);
    return 0;
}

void sqz_topo_print(FILE *out)
{
    sqz_topo_summary_t s;
    if (0 != sqz_topo_summary(&s)) {
        fprintf(out, "topology: hwloc failed to load the topology\n");
        return;
    }
    fprintf(out, "topology (hwloc %s): %d package(s), %d NUMA node(s), %d core(s), %d PU(s), %d GPU/coprocessor device(s)\n",
            HWLOC_API_VERSION >= 0x00020000 ? "2.x" : "1.x", s.packages, s.numa_nodes, s.cores,
            s.pus, s.gpus);
}
