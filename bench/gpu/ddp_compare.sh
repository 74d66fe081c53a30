#!/bin/sh
# The ~100M-parameter DDP transformer (examples/pytorch/ddp_train.py) on 2 GPUs, dense over NVLink
# against dense and compressed over NCCL sockets (the emulated network, about 3.5 GB/s), one JSON
# file per run in OUTDIR.  Usage:
#   bench/gpu/ddp_compare.sh BUILDDIR OUTDIR [RUN...]
# RUN names (default: all): dense-nvlink dense-socket preload-quant4 hook-quant4 preload-topk
#   preload-sign torch-fp16 torch-powersgd hook-powersgd4 hook-powersgd4-iters2 preload-powersgd4
#   hook-powersgd4-lgreco hook-powersgd4-adapt1 hook-powersgd4-adapt1-iters2
#   torch-powersgd-s10 hook-powersgd4-s10 hook-powersgd4-adapt2-s10 hook-powersgd4-adapt2-s10-iters2
#   hook-powersgd4-adapt4-s10 (s10: 10 dense steps first, for both hooks) hook-powersgd6
#   hook-powersgd8 (uniform ranks 6 and 8, to compare L-GreCo with at equal loss)
#   hook-powersgd4-adapt4-s10-iters2 hook-powersgd4-adapt4-s10-p30
#   hook-powersgd4-ef21 hook-powersgd4-ef21-s10 hook-powersgd4-ef21-s10-iters2
#   hook-powersgd2-ef21-s10 hook-powersgd8-ef21-s10 hook-powersgd4-ef21-s10-lgreco (SQZ_EF=ef21:
#   the estimators take the rank-r updates and the hook returns the shared one)
# (PowerSGD runs start compressing at step 2, as torch-powersgd's start_powerSGD_iter=2.)
# Any other setting of the DDP hook: hook@NAME=VALUE@NAME=VALUE... passes each NAME=VALUE as
#   --sqz NAME=VALUE (SQZ_ names without the prefix), e.g.
#   hook@METHOD=powersgd@POWERSGD_RANK=32@POWERSGD_START_STEPS=10@EF=ef21
# Extra arguments for ddp_train.py: DDP_ARGS (default "--steps 60 --bf16").
set -u
B=$(cd "$1" && pwd)
OUT=$2
shift 2
S=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
RUNS=${*:-dense-nvlink dense-socket preload-quant4 hook-quant4 preload-topk preload-sign torch-fp16 torch-powersgd}
ARGS=${DDP_ARGS:---steps 60 --bf16}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH="$S/python${PYTHONPATH:+:$PYTHONPATH}" SQUEEZE_LIB="$B/.libs/libsqueeze.so"
SOCK="NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_NET=Socket NCCL_SOCKET_IFNAME=lo"
T="torchrun --standalone --nproc_per_node=2 $S/examples/pytorch/ddp_train.py $ARGS"
P="LD_PRELOAD=$B/.libs/libsqueeze_nccl.so"
for r in $RUNS; do
    case $r in
    dense-nvlink) cmd="$T --comm dense" ;;
    dense-socket) cmd="env $SOCK $T --comm dense" ;;
    preload-quant4) cmd="env $SOCK $P SQZ_METHOD=quant SQZ_QUANT_BITS=4 $T --comm dense" ;;
    hook-quant4) cmd="env $SOCK $T --comm squeeze --sqz METHOD=quant --sqz QUANT_BITS=4" ;;
    preload-topk) cmd="env $SOCK $P SQZ_METHOD=topk SQZ_TOPK_DENSITY=0.01 $T --comm dense" ;;
    preload-sign) cmd="env $SOCK $P SQZ_METHOD=sign $T --comm dense" ;;
    torch-fp16) cmd="env $SOCK $T --comm torch-fp16" ;;
    torch-powersgd) cmd="env $SOCK $T --comm torch-powersgd --powersgd-rank 4" ;;
    hook-powersgd4) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=2" ;;
    hook-powersgd4-iters2) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=2 --sqz POWERSGD_ITERS=2" ;;
    hook-powersgd4-lgreco) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=2 --sqz ADAPT=lgreco --sqz ADAPT_PERIOD=10" ;;
    hook-powersgd4-adapt1) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=2 --sqz ADAPT=lgreco --sqz ADAPT_PERIOD=10 --sqz ADAPT_BYTES=1" ;;
    hook-powersgd4-adapt1-iters2) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=2 --sqz ADAPT=lgreco --sqz ADAPT_PERIOD=10 --sqz ADAPT_BYTES=1 --sqz POWERSGD_ITERS=2" ;;
    torch-powersgd-s10) cmd="env $SOCK $T --comm torch-powersgd --powersgd-rank 4 --powersgd-start 10" ;;
    hook-powersgd4-s10) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=10" ;;
    hook-powersgd4-adapt2-s10) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=10 --sqz ADAPT=lgreco --sqz ADAPT_PERIOD=10 --sqz ADAPT_BYTES=2" ;;
    hook-powersgd4-adapt2-s10-iters2) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=10 --sqz ADAPT=lgreco --sqz ADAPT_PERIOD=10 --sqz ADAPT_BYTES=2 --sqz POWERSGD_ITERS=2" ;;
    hook-powersgd4-adapt4-s10) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=10 --sqz ADAPT=lgreco --sqz ADAPT_PERIOD=10 --sqz ADAPT_BYTES=4" ;;
    hook-powersgd4-adapt4-s10-iters2) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=10 --sqz ADAPT=lgreco --sqz ADAPT_PERIOD=10 --sqz ADAPT_BYTES=4 --sqz POWERSGD_ITERS=2" ;;
    hook-powersgd4-adapt4-s10-p30) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=10 --sqz ADAPT=lgreco --sqz ADAPT_PERIOD=30 --sqz ADAPT_BYTES=4" ;;
    hook-powersgd6) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=6 --sqz POWERSGD_START_STEPS=2" ;;
    hook-powersgd8) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=8 --sqz POWERSGD_START_STEPS=2" ;;
    hook-powersgd4-ef21) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=2 --sqz EF=ef21" ;;
    hook-powersgd4-ef21-s10) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=10 --sqz EF=ef21" ;;
    hook-powersgd4-ef21-s10-iters2) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=10 --sqz EF=ef21 --sqz POWERSGD_ITERS=2" ;;
    hook-powersgd2-ef21-s10) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=2 --sqz POWERSGD_START_STEPS=10 --sqz EF=ef21" ;;
    hook-powersgd8-ef21-s10) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=8 --sqz POWERSGD_START_STEPS=10 --sqz EF=ef21" ;;
    hook-powersgd4-ef21-s10-lgreco) cmd="env $SOCK $T --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK=4 --sqz POWERSGD_START_STEPS=10 --sqz EF=ef21 --sqz ADAPT=lgreco --sqz ADAPT_PERIOD=10" ;;
    hook@*)
        cmd="env $SOCK $T --comm squeeze"
        for kv in $(echo "${r#hook@}" | tr '@' ' '); do cmd="$cmd --sqz $kv"; done ;;
    preload-powersgd4) cmd="env $SOCK $P SQZ_METHOD=powersgd SQZ_POWERSGD_RANK=4 SQZ_POWERSGD_START_STEPS=2 $T --comm dense" ;;
    *) echo "unknown run $r" >&2; exit 2 ;;
    esac
    echo "== $r: $cmd"
    # shellcheck disable=SC2086 # cmd is a word list on purpose
    sh -c "$cmd --json $OUT/$r.json" >"$OUT/$r.log" 2>&1
    echo "   rc=$? $(tail -1 "$OUT/$r.log")"
done
