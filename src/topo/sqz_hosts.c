/* Ranks grouped by host (see sqz_hosts.h). */
#include "config.h"

#include <unistd.h>

#include "topo/sqz_hosts.h"

uint64_t sqz_host_key(const char *host_id)
{
    char        name[256] = "";
    const char *id        = host_id && host_id[0] ? host_id : name;
    if (id == name && gethostname(name, sizeof(name) - 1) != 0) {
        name[0] = '\0';
    }
    uint64_t h = 1469598103934665603ull;
    for (const char *c = id; *c; c++) {
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    }
    return h;
}

void sqz_host_layout(const uint64_t *keys, int P, int me, sqz_host_layout_t *out)
{
    *out = (sqz_host_layout_t){.uniform = 1};
    int first_size = -1;
    /* O(P^2) once per communicator: a millisecond at a few thousand ranks. */
    for (int r = 0; r < P; r++) {
        int seen = 0, size = 0;
        for (int q = 0; q < r && !seen; q++) {
            seen = keys[q] == keys[r];
        }
        if (seen) {
            continue;
        }
        for (int q = r; q < P; q++) {
            size += keys[q] == keys[r];
        }
        out->uniform &= first_size < 0 || size == first_size;
        first_size = first_size < 0 ? size : first_size;
        out->most  = size > out->most ? size : out->most;
        if (keys[r] == keys[me]) {
            out->host       = out->hosts;
            out->local_size = size;
        }
        out->hosts++;
    }
    for (int q = 0; q < me; q++) {
        out->local_rank += keys[q] == keys[me];
    }
    /* Host-major: hosts of L ranks each, every run of L consecutive ranks on one host (hosts
     * are then numbered in run order, and rank r is host r / L, local rank r % L). */
    out->host_major = out->uniform && first_size > 0;
    for (int r = 0; out->host_major && r < P; r++) {
        out->host_major = keys[r] == keys[r - r % first_size];
    }
}
