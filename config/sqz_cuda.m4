# SQZ_CHECK_CUDA: optional.  --with-cuda=DIR (default: /usr/local/cuda when nvcc is there).
AC_DEFUN([SQZ_CHECK_CUDA], [
  AC_ARG_WITH([cuda], [AS_HELP_STRING([--with-cuda=DIR], [CUDA toolkit (default: auto, /usr/local/cuda)])],
              [], [with_cuda=auto])
  sqz_have_cuda=no
  AS_IF([test "x$with_cuda" != xno], [
    AS_IF([test "x$with_cuda" = xauto || test "x$with_cuda" = xyes], [sqz_cuda_dir=/usr/local/cuda], [sqz_cuda_dir="$with_cuda"])
    AC_PATH_PROG([NVCC], [nvcc], [], [$sqz_cuda_dir/bin$PATH_SEPARATOR$PATH])
    AS_IF([test -n "$NVCC" && test -f "$sqz_cuda_dir/include/cuda_runtime.h"], [
      sqz_have_cuda=yes
      CUDA_CPPFLAGS="-isystem $sqz_cuda_dir/include"
      CUDA_LDFLAGS="-L$sqz_cuda_dir/lib64"
    ])
    AS_IF([test "x$with_cuda" != xauto && test "x$sqz_have_cuda" != xyes],
          [AC_MSG_ERROR([CUDA requested but nvcc or cuda_runtime.h not found under $sqz_cuda_dir])])
  ])
  AC_MSG_CHECKING([for CUDA])
  AC_MSG_RESULT([$sqz_have_cuda])
  AS_IF([test "x$sqz_have_cuda" = xyes], [AC_DEFINE([SQZ_HAVE_CUDA], [1], [CUDA toolkit found])])
  AC_ARG_WITH([cuda-arch], [AS_HELP_STRING([--with-cuda-arch=LIST],
              [compute capabilities to build device code for (default: "80 90"; PTX of the last is
               embedded too, for newer GPUs)])], [], [with_cuda_arch="80 90"])
  NVCC_ARCH_FLAGS=""
  sqz_last_arch=""
  for a in $with_cuda_arch; do
    NVCC_ARCH_FLAGS="$NVCC_ARCH_FLAGS -gencode arch=compute_$a,code=sm_$a"
    sqz_last_arch=$a
  done
  AS_IF([test -n "$sqz_last_arch"],
        [NVCC_ARCH_FLAGS="$NVCC_ARCH_FLAGS -gencode arch=compute_$sqz_last_arch,code=compute_$sqz_last_arch"])
  # The CUDA runtime is linked statically (libcudart_static.a): the libraries load on a machine
  # without a GPU or a CUDA installation, and find the driver (libcuda.so.1) at run time.
  CUDA_LIBS="-lcudart_static -lrt -ldl"
  AS_IF([test -f "$sqz_cuda_dir/lib64/libcudart_static.a"], [],
        [AS_IF([test -f "$sqz_cuda_dir/targets/x86_64-linux/lib/libcudart_static.a"],
               [CUDA_LDFLAGS="-L$sqz_cuda_dir/targets/x86_64-linux/lib"])])
  AC_SUBST([NVCC_ARCH_FLAGS])
  AC_SUBST([CUDA_LIBS])
  AC_SUBST([NVCC])
  AC_SUBST([CUDA_CPPFLAGS])
  AC_SUBST([CUDA_LDFLAGS])
  AM_CONDITIONAL([SQZ_HAVE_CUDA], [test "x$sqz_have_cuda" = xyes])
])

# SQZ_CHECK_NCCL: optional, headers only: NCCL is resolved at run time, never linked.
AC_DEFUN([SQZ_CHECK_NCCL], [
  AC_ARG_WITH([nccl], [AS_HELP_STRING([--with-nccl=DIR], [NCCL headers (default: auto)])],
              [], [with_nccl=auto])
  sqz_have_nccl=no
  AS_IF([test "x$with_nccl" != xno], [
    AS_IF([test "x$with_nccl" = xauto || test "x$with_nccl" = xyes], [sqz_nccl_dirs="/usr/local/cuda /usr"], [sqz_nccl_dirs="$with_nccl"])
    for d in $sqz_nccl_dirs; do
      AS_IF([test -f "$d/include/nccl.h"], [sqz_have_nccl=yes; NCCL_CPPFLAGS="-isystem $d/include"; break])
    done
    AS_IF([test "x$with_nccl" != xauto && test "x$sqz_have_nccl" != xyes],
          [AC_MSG_ERROR([NCCL requested but nccl.h not found in $sqz_nccl_dirs])])
  ])
  AC_MSG_CHECKING([for NCCL headers])
  AC_MSG_RESULT([$sqz_have_nccl])
  AS_IF([test "x$sqz_have_nccl" = xyes], [AC_DEFINE([SQZ_HAVE_NCCL], [1], [NCCL headers found])])
  AC_SUBST([NCCL_CPPFLAGS])
  AM_CONDITIONAL([SQZ_HAVE_NCCL], [test "x$sqz_have_nccl" = xyes])
])
