/* The example plugin's descriptor in a build without CUDA: host operations only.  (With CUDA,
 * sqz_example_device.cu exports it with device operations instead.) */
#include "sqz_example.h"

__attribute__((visibility("default"))) const sqz_compressor_v2_t sqz_compressor_v2 = {
    .abi = SQZ_COMPRESSOR_ABI_V2,
    .size = sizeof(sqz_compressor_v2_t),
    .host = &example_host_ops,
    .device = NULL,
};
