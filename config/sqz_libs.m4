# SQZ_CHECK_HWLOC: hwloc is required (topology, thread binding, ranks per host).
AC_DEFUN([SQZ_CHECK_HWLOC], [
  PKG_CHECK_MODULES([HWLOC], [hwloc], [sqz_have_hwloc=yes], [
    AC_CHECK_HEADER([hwloc.h], [AC_CHECK_LIB([hwloc], [hwloc_topology_init],
        [sqz_have_hwloc=yes; HWLOC_LIBS=-lhwloc], [sqz_have_hwloc=no])], [sqz_have_hwloc=no])])
  AS_IF([test "x$sqz_have_hwloc" != xyes],
        [AC_MSG_ERROR([hwloc not found: apt-get install libhwloc-dev])])
  AC_DEFINE([SQZ_HAVE_HWLOC], [1], [hwloc is available])
])

# SQZ_CHECK_ZSTD: zstd is required (entropy stage, lossless method).
AC_DEFUN([SQZ_CHECK_ZSTD], [
  PKG_CHECK_MODULES([ZSTD], [libzstd], [sqz_have_zstd=yes], [
    AC_CHECK_HEADER([zstd.h], [AC_CHECK_LIB([zstd], [ZSTD_compress],
        [sqz_have_zstd=yes; ZSTD_LIBS=-lzstd], [sqz_have_zstd=no])], [sqz_have_zstd=no])])
  AS_IF([test "x$sqz_have_zstd" != xyes],
        [AC_MSG_ERROR([zstd not found: apt-get install libzstd-dev])])
  AC_DEFINE([SQZ_HAVE_ZSTD], [1], [zstd is available])
])

# AX_PTHREAD_SIMPLE: -pthread works with gcc and clang.
AC_DEFUN([AX_PTHREAD_SIMPLE], [
  PTHREAD_CFLAGS=-pthread
  PTHREAD_LIBS=-pthread
  AC_SUBST([PTHREAD_CFLAGS])
  AC_SUBST([PTHREAD_LIBS])
])
