/* The GPU entry points of a library built without CUDA or NCCL headers: every one says so. */
#include "config.h"

#include "sqz_ctx.h"
#include "sqz_log.h"

int sqz_gpu_built(void) { return 0; }

sqz_status_t sqz_comm_create_nccl(sqz_ctx_t *ctx, void *nccl_comm, sqz_comm_t **comm)
{
    (void)ctx, (void)nccl_comm;
    if (comm) {
        *comm = NULL;
    }
    SQZ_ERROR("this Squeeze was built without CUDA/NCCL (configure --with-cuda --with-nccl)");
    return SQZ_ERR_NOT_SUPPORTED;
}

sqz_status_t sqz_allreduce_async(sqz_comm_t *comm, const void *sendbuf, void *recvbuf,
                                 size_t count, sqz_dtype_t dtype, sqz_op_t op, uint64_t key,
                                 void *stream)
{
    (void)comm, (void)sendbuf, (void)recvbuf, (void)count, (void)dtype, (void)op, (void)key,
        (void)stream;
    return SQZ_ERR_NOT_SUPPORTED;
}

sqz_status_t sqz_reduce_scatter_async(sqz_comm_t *comm, const void *sendbuf, void *recvbuf,
                                      size_t recvcount, sqz_dtype_t dtype, sqz_op_t op,
                                      uint64_t key, void *stream)
{
    (void)comm, (void)sendbuf, (void)recvbuf, (void)recvcount, (void)dtype, (void)op, (void)key,
        (void)stream;
    return SQZ_ERR_NOT_SUPPORTED;
}

sqz_status_t sqz_nccl_get_unique_id(void *id, size_t len)
{
    (void)id, (void)len;
    return SQZ_ERR_NOT_SUPPORTED;
}

sqz_status_t sqz_nccl_comm_init(int nranks, const void *id, size_t len, int rank, void **comm)
{
    (void)nranks, (void)id, (void)len, (void)rank;
    if (comm) {
        *comm = NULL;
    }
    return SQZ_ERR_NOT_SUPPORTED;
}

void sqz_nccl_comm_destroy(void *comm) { (void)comm; }

sqz_status_t sqz_device_group_create(int nranks, int device, sqz_device_group_t **group)
{
    (void)device;
    if (group) {
        *group = NULL;
    }
    if (NULL == group || nranks < 1 || nranks > 4096) {
        return SQZ_ERR_INVALID_PARAM; /* (the arguments first, as in a GPU build) */
    }
    SQZ_ERROR("this Squeeze was built without CUDA/NCCL (configure --with-cuda --with-nccl)");
    return SQZ_ERR_NOT_SUPPORTED;
}

void sqz_device_group_destroy(sqz_device_group_t *group) { (void)group; }

sqz_status_t sqz_comm_create_device_group(sqz_ctx_t *ctx, sqz_device_group_t *group, int rank,
                                          sqz_comm_t **comm)
{
    (void)ctx, (void)group, (void)rank;
    if (comm) {
        *comm = NULL;
    }
    return SQZ_ERR_NOT_SUPPORTED;
}
