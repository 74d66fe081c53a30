/* Run-time resolution of the real NCCL (see sqz_nccl.h). */
#include "config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqz_log.h"
#include "transport/sqz_nccl.h"

static sqz_nccl_api_t  sqz_nccl;
static int             sqz_nccl_state; /* 0 unresolved, 1 resolved, -1 not found */
static pthread_mutex_t sqz_nccl_lock = PTHREAD_MUTEX_INITIALIZER;

/* Any address inside this library, to recognise our own symbols. */
static void sqz_nccl_anchor(void) {}

static int sqz_is_ours(void *fn)
{
    Dl_info a, b;
    if (NULL == fn || 0 == dladdr(fn, &a) || 0 == dladdr((void *)(uintptr_t)sqz_nccl_anchor, &b)) {
        return 0;
    }
    return a.dli_fbase == b.dli_fbase;
}

/* The function `name` (e.g. "AllReduce") from handle: pncclX first, then ncclX. */
static void *sqz_nccl_sym(void *handle, const char *name)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "pnccl%s", name);
    void *fn = dlsym(handle, buf);
    if (NULL == fn || sqz_is_ours(fn)) {
        snprintf(buf, sizeof(buf), "nccl%s", name);
        fn = dlsym(handle, buf);
    }
    return sqz_is_ours(fn) ? NULL : fn;
}

static int sqz_nccl_fill(void *handle)
{
    sqz_nccl_api_t *a = &sqz_nccl;
#define SQZ_RESOLVE(field) (*(void **)&a->field = sqz_nccl_sym(handle, #field))
    SQZ_RESOLVE(AllReduce);
    SQZ_RESOLVE(ReduceScatter);
    SQZ_RESOLVE(AllGather);
    SQZ_RESOLVE(Send);
    SQZ_RESOLVE(Recv);
    SQZ_RESOLVE(AlltoAll);
    SQZ_RESOLVE(GroupStart);
    SQZ_RESOLVE(GroupEnd);
    SQZ_RESOLVE(GetUniqueId);
    SQZ_RESOLVE(CommInitRank);
    SQZ_RESOLVE(CommInitRankConfig);
    SQZ_RESOLVE(CommInitAll);
    SQZ_RESOLVE(CommSplit);
    SQZ_RESOLVE(CommDestroy);
    SQZ_RESOLVE(CommAbort);
    SQZ_RESOLVE(CommCount);
    SQZ_RESOLVE(CommUserRank);
    SQZ_RESOLVE(CommCuDevice);
    SQZ_RESOLVE(GetVersion);
    SQZ_RESOLVE(GetErrorString);
#undef SQZ_RESOLVE
    /* What every path needs; the others are checked where they are used. */
    if (!a->AllReduce || !a->AllGather || !a->GroupStart || !a->GroupEnd || !a->CommCount ||
        !a->CommUserRank || !a->CommCuDevice || !a->GetErrorString) {
        memset(a, 0, sizeof(*a));
        return -1;
    }
    a->version = 0;
    if (a->GetVersion) {
        a->GetVersion(&a->version);
    }
    return 0;
}

const sqz_nccl_api_t *sqz_nccl_resolve(int may_load)
{
    pthread_mutex_lock(&sqz_nccl_lock);
    if (1 == sqz_nccl_state) {
        pthread_mutex_unlock(&sqz_nccl_lock);
        return &sqz_nccl;
    }
    static const char *const names[] = {"libnccl.so.2", "libnccl.so"};
    int ok = -1;
    for (size_t i = 0; ok != 0 && i < sizeof(names) / sizeof(*names); i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_NOLOAD);
        if (h) {
            ok = sqz_nccl_fill(h); /* the handle stays open: NCCL must outlive us */
        }
    }
    if (ok != 0) {
        ok = sqz_nccl_fill(RTLD_NEXT);
    }
    for (size_t i = 0; ok != 0 && may_load && i < sizeof(names) / sizeof(*names); i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) {
            ok = sqz_nccl_fill(h);
        }
    }
    if (ok != 0 && 0 == sqz_nccl_state) {
        SQZ_ERROR("NCCL not found in the process (libnccl.so.2%s): the GPU path is off",
                  may_load ? " could not be loaded either" : "");
    }
    sqz_nccl_state = ok == 0 ? 1 : -1;
    pthread_mutex_unlock(&sqz_nccl_lock);
    return ok == 0 ? &sqz_nccl : NULL;
}

const char *sqz_nccl_error(ncclResult_t r)
{
    if (1 == sqz_nccl_state && sqz_nccl.GetErrorString) {
        return sqz_nccl.GetErrorString(r);
    }
    return "NCCL error";
}

int sqz_nccl_agree_ok(const sqz_nccl_api_t *api, ncclComm_t nc, int ok)
{
    int device = 0, saved = -1;
    if (ncclSuccess != api->CommCuDevice(nc, &device)) {
        return -1;
    }
    cudaGetDevice(&saved);
    cudaSetDevice(device);
    uint32_t    *d = NULL, v = ok ? 1u : 0u;
    cudaStream_t s = NULL;
    int          rc = -1;
    if (cudaSuccess == cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) &&
        cudaSuccess == cudaMalloc((void **)&d, sizeof(*d)) &&
        cudaSuccess == cudaMemcpyAsync(d, &v, sizeof(v), cudaMemcpyHostToDevice, s) &&
        ncclSuccess == api->AllReduce(d, d, 1, ncclUint32, ncclMin, nc, s) &&
        cudaSuccess == cudaMemcpyAsync(&v, d, sizeof(v), cudaMemcpyDeviceToHost, s) &&
        cudaSuccess == cudaStreamSynchronize(s)) {
        rc = v ? 1 : 0;
    }
    cudaGetLastError();
    cudaFree(d);
    if (s) {
        cudaStreamDestroy(s);
    }
    if (saved >= 0) {
        cudaSetDevice(saved);
    }
    return rc;
}
