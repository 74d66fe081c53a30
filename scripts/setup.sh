#!/bin/sh
# Installs what is missing (Debian packages), then bootstraps, configures and builds Squeeze in
# the source tree.  Sourced by scripts/demo.sh and scripts/test.sh; extra configure flags come from
# $SQZ_CONFIGURE_FLAGS.
set -eu
cd "$(dirname "$0")/.."

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
if [ -n "$need" ]; then
    echo "setup: installing$need"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
fi

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
    ./autogen.sh >/dev/null
fi
if [ ! -f Makefile ] || [ configure -nt config.status ]; then
    # shellcheck disable=SC2086
    ./configure --enable-werror ${SQZ_CONFIGURE_FLAGS:-} >/dev/null
fi
make -j"$(nproc)" >/dev/null
