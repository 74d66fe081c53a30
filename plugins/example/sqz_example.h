/* The example plugin's parts, shared by its host operations (sqz_example.c) and the file that
 * exports its descriptor (sqz_example_device.cu with CUDA, sqz_example_host_only.c without). */
#ifndef SQZ_EXAMPLE_H
#define SQZ_EXAMPLE_H

#include <squeeze/compressor_v2.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The host table: parameters, state, query, the host codec. */
extern const sqz_host_ops_v2_t example_host_ops;

/** EXAMPLE_ROUND of a state made by example_host_ops.create: 1 round to nearest even, 0
 *  truncate. */
int example_round(const void *state);

#ifdef __cplusplus
}
#endif
#endif /* SQZ_EXAMPLE_H */
