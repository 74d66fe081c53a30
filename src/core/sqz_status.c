#include "config.h"

#include <squeeze.h>

unsigned sqz_version_number(void) { return SQZ_VERSION_NUMBER; }

const char *sqz_status_string(sqz_status_t status)
{
    switch (status) {
    case SQZ_OK: return "success";
    case SQZ_ERR_NOT_SUPPORTED: return "not supported";
    case SQZ_ERR_INVALID_PARAM: return "invalid parameter";
    case SQZ_ERR_NO_MEMORY: return "out of memory";
    case SQZ_ERR_CUDA: return "CUDA error";
    case SQZ_ERR_MPI: return "MPI error";
    case SQZ_ERR_NCCL: return "NCCL error";
    case SQZ_ERR_NONFINITE: return "non-finite input (NaN or Inf)";
    case SQZ_ERR_CORRUPT: return "corrupt payload";
    case SQZ_ERR_MISMATCH: return "ranks run with different settings";
    case SQZ_ERR_PLUGIN: return "plugin error";
    case SQZ_ERR_TRANSPORT: return "transport error";
    case SQZ_ERR_INTERNAL: return "internal error";
    case SQZ_ERR_IO: return "I/O error";
    }
    return "unknown status";
}
