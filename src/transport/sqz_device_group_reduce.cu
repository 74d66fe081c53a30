/* The reduction of the device thread transport (sqz_device_group.h): out[i] = op over the slots,
 * slot after slot in rank order, so every rank that reduces the same slots gets the same bits. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <nccl.h>

#include <stdint.h>

#include "transport/sqz_device_group.h"

template <typename T> struct sqz_dg_acc { typedef T type; };
template <> struct sqz_dg_acc<__half> { typedef float type; };
template <> struct sqz_dg_acc<__nv_bfloat16> { typedef float type; };

template <typename A> __device__ A sqz_dg_apply(A a, A b, int op)
{
    switch (op) {
    case ncclProd: return a * b;
    case ncclMax: return b > a ? b : a;
    case ncclMin: return b < a ? b : a;
    default: return a + b; /* ncclSum, ncclAvg */
    }
}

template <typename T>
__global__ void sqz_dg_reduce_kernel(const T *slots, int nslots, size_t count, int op, T *out)
{
    typedef typename sqz_dg_acc<T>::type A;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        A a = (A)slots[i];
        for (int r = 1; r < nslots; r++) {
            a = sqz_dg_apply<A>(a, (A)slots[(size_t)r * count + i], op);
        }
        if (op == ncclAvg) {
            a = a / (A)nslots;
        }
        out[i] = (T)a;
    }
}

template <typename T>
static int sqz_dg_launch(const void *slots, int nslots, size_t count, int op, void *out,
                         cudaStream_t s)
{
    const unsigned threads = 256;
    size_t         blocks  = (count + threads - 1) / threads;
    blocks                 = blocks > 4096 ? 4096 : blocks;
    sqz_dg_reduce_kernel<T><<<(unsigned)blocks, threads, 0, s>>>((const T *)slots, nslots, count,
                                                                  op, (T *)out);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" size_t sqz_device_group_type_size(ncclDataType_t dtype)
{
    switch (dtype) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;
    }
}

extern "C" int sqz_device_group_reduce(const void *slots, int nslots, size_t count,
                                       ncclDataType_t dtype, ncclRedOp_t op, void *out,
                                       cudaStream_t s)
{
    if (op != ncclSum && op != ncclProd && op != ncclMax && op != ncclMin && op != ncclAvg) {
        return -1;
    }
    switch (dtype) {
    case ncclInt8: return sqz_dg_launch<int8_t>(slots, nslots, count, op, out, s);
    case ncclUint8: return sqz_dg_launch<uint8_t>(slots, nslots, count, op, out, s);
    case ncclInt32: return sqz_dg_launch<int32_t>(slots, nslots, count, op, out, s);
    case ncclUint32: return sqz_dg_launch<uint32_t>(slots, nslots, count, op, out, s);
    case ncclInt64: return sqz_dg_launch<int64_t>(slots, nslots, count, op, out, s);
    case ncclUint64: return sqz_dg_launch<uint64_t>(slots, nslots, count, op, out, s);
    case ncclFloat16: return sqz_dg_launch<__half>(slots, nslots, count, op, out, s);
    case ncclBfloat16: return sqz_dg_launch<__nv_bfloat16>(slots, nslots, count, op, out, s);
    case ncclFloat32: return sqz_dg_launch<float>(slots, nslots, count, op, out, s);
    case ncclFloat64: return sqz_dg_launch<double>(slots, nslots, count, op, out, s);
    default: return -1;
    }
}
