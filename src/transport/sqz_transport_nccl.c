/* Host-memory transport over NCCL (see sqz_transport_nccl.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "sqz_log.h"
#include "transport/sqz_transport_nccl.h"

struct sqz_nccl_transport {
    const sqz_nccl_api_t *api;
    ncclComm_t            comm;
    int                   device, rank, nranks;
    cudaStream_t          stream;
    unsigned char        *dbuf; /* device staging */
    size_t                dcap;
    unsigned char        *hbuf; /* host staging */
    size_t                hcap;
};

/* Runs with the communicator's device current, restoring the caller's. */
typedef struct sqz_device_guard {
    int saved;
} sqz_device_guard_t;

static void sqz_guard_enter(sqz_device_guard_t *g, int device)
{
    g->saved = -1;
    if (cudaGetDevice(&g->saved) == cudaSuccess && g->saved != device) {
        cudaSetDevice(device);
    } else {
        g->saved = -1;
    }
}

static void sqz_guard_leave(const sqz_device_guard_t *g)
{
    if (g->saved >= 0) {
        cudaSetDevice(g->saved);
    }
}

static int sqz_nt_reserve(sqz_nccl_transport_t *nt, size_t bytes)
{
    if (bytes <= nt->dcap) {
        return 0;
    }
    cudaFree(nt->dbuf);
    free(nt->hbuf);
    nt->dbuf = NULL, nt->hbuf = NULL, nt->dcap = 0;
    if (cudaMalloc((void **)&nt->dbuf, bytes) != cudaSuccess) {
        nt->dbuf = NULL;
        return -1;
    }
    nt->hbuf = malloc(bytes);
    if (NULL == nt->hbuf) {
        return -1;
    }
    nt->dcap = bytes;
    return 0;
}

static int sqz_nt_allgatherv(void *self, const void *sendbuf, size_t sendbytes, void *recvbuf,
                             const size_t *recvbytes, const size_t *displs)
{
    sqz_nccl_transport_t *nt = self;
    size_t                m  = 1;
    for (int r = 0; r < nt->nranks; r++) {
        m = recvbytes[r] > m ? recvbytes[r] : m;
    }
    sqz_device_guard_t g;
    sqz_guard_enter(&g, nt->device);
    int rc = sqz_nt_reserve(nt, m * (size_t)nt->nranks);
    unsigned char *mine = nt->dbuf + (size_t)nt->rank * m;
    if (0 == rc && sendbytes > 0) {
        rc = cudaMemcpyAsync(mine, sendbuf, sendbytes, cudaMemcpyHostToDevice, nt->stream) !=
             cudaSuccess;
    }
    if (0 == rc) {
        rc = nt->api->AllGather(mine, nt->dbuf, m, ncclUint8, nt->comm, nt->stream) != ncclSuccess;
    }
    if (0 == rc) {
        rc = cudaMemcpyAsync(nt->hbuf, nt->dbuf, m * (size_t)nt->nranks, cudaMemcpyDeviceToHost,
                             nt->stream) != cudaSuccess ||
             cudaStreamSynchronize(nt->stream) != cudaSuccess;
    }
    for (int r = 0; 0 == rc && r < nt->nranks; r++) {
        memcpy((unsigned char *)recvbuf + displs[r], nt->hbuf + (size_t)r * m, recvbytes[r]);
    }
    sqz_guard_leave(&g);
    return rc;
}

static int sqz_nt_alltoallv(void *self, const void *sendbuf, const size_t *sendbytes,
                            const size_t *sdispls, void *recvbuf, const size_t *recvbytes,
                            const size_t *rdispls)
{
    sqz_nccl_transport_t *nt = self;
    const size_t          P  = (size_t)nt->nranks;
    size_t                st = 0, rt = 0;
    for (size_t r = 0; r < P; r++) {
        st += sendbytes[r];
        rt += recvbytes[r];
    }
    sqz_device_guard_t g;
    sqz_guard_enter(&g, nt->device);
    int            rc    = sqz_nt_reserve(nt, st + rt + 1);
    unsigned char *dsend = nt->dbuf, *drecv = nt->dbuf + st;
    size_t         off   = 0;
    for (size_t r = 0; 0 == rc && r < P; r++) {
        if (sendbytes[r] > 0) {
            rc = cudaMemcpyAsync(dsend + off, (const unsigned char *)sendbuf + sdispls[r],
                                 sendbytes[r], cudaMemcpyHostToDevice, nt->stream) != cudaSuccess;
        }
        off += sendbytes[r];
    }
    if (0 == rc) {
        rc = nt->api->GroupStart() != ncclSuccess;
        size_t so = 0, ro = 0;
        for (size_t r = 0; 0 == rc && r < P; r++) {
            if (sendbytes[r] > 0) {
                rc |= nt->api->Send(dsend + so, sendbytes[r], ncclUint8, (int)r, nt->comm,
                                    nt->stream) != ncclSuccess;
            }
            if (recvbytes[r] > 0) {
                rc |= nt->api->Recv(drecv + ro, recvbytes[r], ncclUint8, (int)r, nt->comm,
                                    nt->stream) != ncclSuccess;
            }
            so += sendbytes[r];
            ro += recvbytes[r];
        }
        rc |= nt->api->GroupEnd() != ncclSuccess;
    }
    if (0 == rc) {
        rc = cudaMemcpyAsync(nt->hbuf, drecv, rt, cudaMemcpyDeviceToHost, nt->stream) !=
                 cudaSuccess ||
             cudaStreamSynchronize(nt->stream) != cudaSuccess;
    }
    off = 0;
    for (size_t r = 0; 0 == rc && r < P; r++) {
        memcpy((unsigned char *)recvbuf + rdispls[r], nt->hbuf + off, recvbytes[r]);
        off += recvbytes[r];
    }
    sqz_guard_leave(&g);
    return rc;
}

static int sqz_nt_allreduce(void *self, const float *in, float *out, size_t n)
{
    sqz_nccl_transport_t *nt = self;
    sqz_device_guard_t    g;
    sqz_guard_enter(&g, nt->device);
    const size_t bytes = n * sizeof(float);
    int          rc    = sqz_nt_reserve(nt, bytes + 1);
    if (0 == rc) {
        rc = cudaMemcpyAsync(nt->dbuf, in, bytes, cudaMemcpyHostToDevice, nt->stream) !=
                 cudaSuccess ||
             nt->api->AllReduce(nt->dbuf, nt->dbuf, n, ncclFloat32, ncclSum, nt->comm,
                                nt->stream) != ncclSuccess ||
             cudaMemcpyAsync(out, nt->dbuf, bytes, cudaMemcpyDeviceToHost, nt->stream) !=
                 cudaSuccess ||
             cudaStreamSynchronize(nt->stream) != cudaSuccess;
    }
    sqz_guard_leave(&g);
    return rc;
}

sqz_status_t sqz_nccl_transport_create(const sqz_nccl_api_t *api, ncclComm_t comm,
                                       sqz_transport_t *t, sqz_nccl_transport_t **out)
{
    *out                     = NULL;
    sqz_nccl_transport_t *nt = calloc(1, sizeof(*nt));
    if (NULL == nt) {
        return SQZ_ERR_NO_MEMORY;
    }
    nt->api  = api;
    nt->comm = comm;
    if (api->CommCount(comm, &nt->nranks) != ncclSuccess ||
        api->CommUserRank(comm, &nt->rank) != ncclSuccess ||
        api->CommCuDevice(comm, &nt->device) != ncclSuccess) {
        free(nt);
        return SQZ_ERR_NCCL;
    }
    sqz_device_guard_t g;
    sqz_guard_enter(&g, nt->device);
    const cudaError_t ce = cudaStreamCreateWithFlags(&nt->stream, cudaStreamNonBlocking);
    sqz_guard_leave(&g);
    if (ce != cudaSuccess) {
        SQZ_ERROR("cannot create a CUDA stream on device %d: %s", nt->device,
                  cudaGetErrorString(ce));
        free(nt);
        return SQZ_ERR_CUDA;
    }
    memset(t, 0, sizeof(*t));
    t->size              = sizeof(*t);
    t->self              = nt;
    t->rank              = nt->rank;
    t->nranks            = nt->nranks;
    t->allgatherv        = sqz_nt_allgatherv;
    t->alltoallv         = sqz_nt_alltoallv;
    t->allreduce_f32_sum = sqz_nt_allreduce;
    *out                 = nt;
    return SQZ_OK;
}

void sqz_nccl_transport_destroy(sqz_nccl_transport_t *nt)
{
    if (NULL == nt) {
        return;
    }
    sqz_device_guard_t g;
    sqz_guard_enter(&g, nt->device);
    cudaStreamSynchronize(nt->stream);
    cudaStreamDestroy(nt->stream);
    cudaFree(nt->dbuf);
    sqz_guard_leave(&g);
    free(nt->hbuf);
    free(nt);
}
