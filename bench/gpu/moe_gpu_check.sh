#!/bin/sh
# The GPU checks of the NCCL MoE path, from an existing build (builds nothing).  Usage:
#   sh bench/gpu/moe_gpu_check.sh BUILDDIR
# Runs, and prints a summary of:
#   1. BUILDDIR/tests/cuda/test_moe_gpu: GPU token codecs against the CPU ones (1 GPU);
#   2. tests/cuda/test_nccl_torch.sh, MoE part only (TORCHTEST_MODES=moe): torchrun with 2
#      processes on 2 GPUs, LD_PRELOAD=libsqueeze_nccl.so, SQZ_MOE=dedup and lsh;
#   3. BUILDDIR/tests/cuda/test_cuda_kernels (the existing GPU kernels, as a regression check).
# Exit status: 0 when every check that ran passed (a skip, 77, is reported, not failed), 1
# otherwise.  Logs stay in $MOE_CHECK_LOGS (default: a temporary directory, printed).
set -u
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: sh $0 BUILDDIR" >&2
    exit 2
fi
B=$(cd "$1" && pwd)
S=$(cd "$(dirname "$0")/../.." && pwd)
LOGS=${MOE_CHECK_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/sqz-moe-check.XXXXXX")}
mkdir -p "$LOGS"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
summary=""
failed=0

# run NAME COMMAND...: runs one check, its output in $LOGS/NAME.log (and on the terminal).
run() {
    name=$1
    shift
    echo "=== $name"
    "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    cat "$LOGS/$name.log"
    case $rc in
    0) res=PASS ;;
    77) res=SKIP ;;
    *) res="FAIL (exit $rc)"; failed=1 ;;
    esac
    summary="$summary
  $name: $res"
}

if [ -x "$B/tests/cuda/test_moe_gpu" ]; then
    run test_moe_gpu "$B/tests/cuda/test_moe_gpu"
else
    summary="$summary
  test_moe_gpu: MISSING (run 'make check' or 'make tests/cuda/test_moe_gpu' in $B first)"
    failed=1
fi
run moe_torch env top_builddir="$B" top_srcdir="$S" TORCHTEST_MODES=moe \
    sh "$S/tests/cuda/test_nccl_torch.sh"
if [ -x "$B/tests/cuda/test_cuda_kernels" ]; then
    run test_cuda_kernels "$B/tests/cuda/test_cuda_kernels"
fi

echo
echo "=== summary (logs in $LOGS)$summary"
exit $failed
