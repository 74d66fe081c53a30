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
  sqz_mpi_impl=other
  _SQZ_MPI_IMPL_IF([OMPI_MAJOR_VERSION], [sqz_mpi_impl=openmpi])
  _SQZ_MPI_IMPL_IF([MPICH_VERSION], [sqz_mpi_impl=mpich])
  AC_MSG_RESULT([$sqz_mpi_impl])
  AM_CONDITIONAL([SQZ_OPENMPI], [test "x$sqz_mpi_impl" = xopenmpi])
  MPI_IMPL=$sqz_mpi_impl
  AC_SUBST([MPI_IMPL])
])

# _SQZ_MPI_IMPL_IF(MACRO, ACTION): ACTION when mpi.h defines MACRO (Open MPI: OMPI_MAJOR_VERSION;
# MPICH and its derivatives: MPICH_VERSION).
AC_DEFUN([_SQZ_MPI_IMPL_IF], [
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>]], [[
#ifndef $1
#error no $1
#endif
]])], [$2])
])

# SQZ_PROG_MPIRUN: the launcher of the tests and the demo, MPIRUN, unless the user set it: the
# first of the implementation's launcher names (with the suffix of the compiler's name, e.g.
# mpicc.mpich -> mpiexec.mpich, first) whose --version names the same implementation, so that an
# mpirun of another MPI on PATH (Debian's alternatives) is never taken.  After SQZ_CHECK_MPI.
AC_DEFUN([SQZ_PROG_MPIRUN], [
  AC_ARG_VAR([MPIRUN], [MPI launcher for the tests and the demo (default: the launcher of the MPI
              that CC compiles with)])
  AS_IF([test -z "$MPIRUN"], [
    AC_MSG_CHECKING([for the launcher of $sqz_mpi_impl])
    set dummy $CC
    sqz_cc_name=`basename "$[2]"`
    sqz_suffix=`echo "$sqz_cc_name" | sed -n 's/^mpicc\(\..*\)$/\1/p'`
    AS_CASE([$sqz_mpi_impl],
      [openmpi], [sqz_names="mpirun mpiexec orterun"],
      [mpich], [sqz_names="mpiexec mpiexec.hydra mpirun"],
      [sqz_names="mpirun mpiexec"])
    sqz_candidates=
    for sqz_n in $sqz_names; do
      test -z "$sqz_suffix" || sqz_candidates="$sqz_candidates $sqz_n$sqz_suffix"
      sqz_candidates="$sqz_candidates $sqz_n.$sqz_mpi_impl"
    done
    for sqz_n in $sqz_candidates $sqz_names; do
      sqz_path=`command -v "$sqz_n" 2>/dev/null` || continue
      AS_CASE([`"$sqz_path" --version 2>&1`],
        [*"Open MPI"* | *OpenRTE*], [sqz_impl=openmpi],
        [*HYDRA* | *Hydra*], [sqz_impl=mpich],
        [sqz_impl=other])
      AS_IF([test "x$sqz_impl" = "x$sqz_mpi_impl" || test "x$sqz_mpi_impl" = xother],
            [MPIRUN=$sqz_path; break])
    done
    AC_MSG_RESULT([${MPIRUN:-none}])
    AS_IF([test -z "$MPIRUN"],
          [AC_MSG_WARN([no launcher of $sqz_mpi_impl found: the MPI tests will skip (set MPIRUN)])])
  ])
  AC_SUBST([MPIRUN])
])
