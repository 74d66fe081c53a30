#!/bin/sh
# Installs what is missing (Debian packages), then bootstraps, configures and builds Squeeze in
# the source tree.  Run by scripts/demo.sh and scripts/test.sh; extra configure flags come from
# $SQZ_CONFIGURE_FLAGS.
# With --mpich: only installs MPICH (mpich, libmpich-dev) when mpicc.mpich is missing, for
# scripts/test.sh's MPICH pass; Open MPI stays the default mpicc and mpirun.
set -eu
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# apt_install PACKAGE...: installs the packages (quietly).
apt_install() {
    echo "setup: installing $*"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# keep_openmpi_default: Debian's alternatives for mpicc, mpirun and the mpi.h directory point to
# Open MPI.  Both MPIs register them in auto mode, so installing MPICH may move them (MPICH is
# then named explicitly: mpicc.mpich, mpiexec.mpich).
keep_openmpi_default() {
    for alt in mpi mpirun "mpi-$(gcc -dumpmachine)"; do
        ompi=$(update-alternatives --list "$alt" 2>/dev/null | grep -m 1 openmpi) || continue
        if [ "$(readlink -f "/etc/alternatives/$alt")" != "$(readlink -f "$ompi")" ]; then
            echo "setup: $alt -> $ompi"
            $SUDO update-alternatives --set "$alt" "$ompi" >/dev/null
        fi
    done
}

if [ "${1:-}" = --mpich ]; then
    command -v mpicc.mpich >/dev/null 2>&1 || apt_install mpich libmpich-dev
    keep_openmpi_default
    exit 0
fi

need=""
command -v mpicc >/dev/null 2>&1 || need="$need libopenmpi-dev openmpi-bin"
command -v mpirun >/dev/null 2>&1 || need="$need openmpi-bin"
[ -f /usr/include/hwloc.h ] || need="$need libhwloc-dev"
[ -f /usr/include/zstd.h ] || need="$need libzstd-dev"
command -v autoreconf >/dev/null 2>&1 || need="$need autoconf"
command -v automake >/dev/null 2>&1 || need="$need automake"
command -v libtoolize >/dev/null 2>&1 || need="$need libtool"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
command -v make >/dev/null 2>&1 || need="$need make"
command -v gcc >/dev/null 2>&1 || need="$need gcc"
/usr/bin/python3 -c "import numpy, mpi4py" >/dev/null 2>&1 || need="$need python3-numpy python3-mpi4py"
/usr/bin/python3 -c "import matplotlib" >/dev/null 2>&1 || need="$need python3-matplotlib"
/usr/bin/python3 -c "import torch" >/dev/null 2>&1 || need="$need python3-torch"
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need="$need python3-pip"
# shellcheck disable=SC2086
[ -z "$need" ] || apt_install $need

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ] ||
    [ -n "$(find config -name 'sqz_*.m4' -newer configure)" ]; then
    ./autogen.sh >/dev/null
fi
if [ ! -f Makefile ] || [ configure -nt config.status ]; then
    # shellcheck disable=SC2086
    ./configure --enable-werror ${SQZ_CONFIGURE_FLAGS:-} >/dev/null
fi
make -j"$(nproc)" >/dev/null
