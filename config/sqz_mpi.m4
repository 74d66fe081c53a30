# SQZ_PROG_MPICC: prefer the MPI compiler wrapper unless CC is set.
AC_DEFUN([SQZ_PROG_MPICC], [
  AC_ARG_VAR([MPICC], [MPI C compiler wrapper])
  AS_IF([test -z "$CC"], [
    AC_PATH_PROGS([MPICC], [mpicc], [])
    AS_IF([test -n "$MPICC"], [CC="$MPICC"])
  ])
])

# SQZ_CHECK_MPI: the compiler must see mpi.h and link MPI_Init and the PMPI profiling layer.
AC_DEFUN([SQZ_CHECK_MPI], [
  sqz_have_mpi=no
  AC_CHECK_HEADER([mpi.h], [
    AC_MSG_CHECKING([whether $CC links MPI with the PMPI layer])
    AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>]],
                   [[int f = 0; PMPI_Initialized(&f); return MPI_Init(0, 0);]])],
                   [sqz_have_mpi=yes], [])
    AC_MSG_RESULT([$sqz_have_mpi])
  ])
  AS_IF([test "x$sqz_have_mpi" != xyes],
        [AC_MSG_ERROR([MPI not found: install Open MPI (apt-get install libopenmpi-dev openmpi-bin) or MPICH, or set CC=mpicc])])
  AC_DEFINE([SQZ_HAVE_MPI], [1], [MPI is available])
  AC_MSG_CHECKING([for the MPI implementation])
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>]], [[
#ifndef OPEN_MPI
#error not open mpi
#endif
]])], [sqz_mpi_impl=openmpi], [sqz_mpi_impl=other])
  AC_MSG_RESULT([$sqz_mpi_impl])
  AM_CONDITIONAL([SQZ_OPENMPI], [test "x$sqz_mpi_impl" = xopenmpi])
])
