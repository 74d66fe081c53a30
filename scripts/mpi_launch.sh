# The MPI launcher abstraction (POSIX sh, sourced): the MPI tests (tests/mpi/common.sh), the demo
# (examples/run_demo.sh) and bench/netcluster start their jobs through it.
#
# Two launchers are known: Open MPI's mpirun (orterun) and MPICH's hydra mpiexec.  They differ in
# the flags the suite needs (--oversubscribe, --bind-to, --mca and --allow-run-as-root exist only in
# Open MPI; hydra oversubscribes, binds nothing and runs as root by default) and in how a variable
# reaches the ranks: Open MPI's -x VAR=value applies to its own app context, hydra's -genv VAR value
# to every executable and -env VAR value to one.
#
# Settings, from the environment (configure exports both to make check):
#   MPIRUN     the launcher (default: mpirun)
#   MPI_IMPL   openmpi or mpich (default: told by "$MPIRUN --version")
#
#   mpi_impl_of LAUNCHER   prints openmpi or mpich; fails for another launcher
#   mpi_launch_init        sets and exports MPIRUN and MPI_IMPL; fails with a message on stderr
#                          when the launcher is neither Open MPI's nor hydra
#   mpi_flags              prints the flags every launch takes (words without quotes)
#   mpi_command ARGS...    sets MPI_ARGS to the launcher's arguments for ARGS, quoted for eval;
#                          ARGS are settings, then app contexts separated by ":" (MPMD):
#       [VAR=value | VAR ...] -np N [VAR=value ...] PROGRAM [ARGS...] [: -np N [VAR=value ...] ...]
#                          the words before the first -np reach every rank (a bare VAR: its value
#                          in this environment, nothing when it is unset); the VAR=value words
#                          after an -np reach that app context's ranks only
#   mpi_launch ARGS...     runs "$MPIRUN" $(mpi_flags) with mpi_command's arguments (under timeout
#                          $MPI_TIMEOUT seconds when MPI_TIMEOUT is set); returns the launcher's
#                          status, 124 on the time limit
# Internal variables start with _ml_ (sh has no local variables).

# mpi_impl_of LAUNCHER: the implementation that LAUNCHER belongs to, from its --version.
mpi_impl_of() {
    case $("$1" --version 2>&1) in
    *"Open MPI"* | *OpenRTE*) echo openmpi ;;
    *HYDRA* | *Hydra*) echo mpich ;;
    *) return 1 ;;
    esac
}

# mpi_launch_init: MPIRUN and MPI_IMPL, checked once.
mpi_launch_init() {
    MPIRUN=${MPIRUN:-mpirun}
    case ${MPI_IMPL:-} in
    openmpi | mpich) ;;
    *)
        if ! MPI_IMPL=$(mpi_impl_of "$MPIRUN"); then
            echo "mpi_launch: '$MPIRUN' is neither Open MPI's mpirun nor MPICH's hydra mpiexec" >&2
            return 1
        fi
        ;;
    esac
    export MPIRUN MPI_IMPL
}

# mpi_flags: the launcher's flags for every job of the suite.
mpi_flags() {
    case $MPI_IMPL in
    openmpi)
        # More ranks than cores, no binding, and transports that work in containers (no CMA).
        printf '%s' "--oversubscribe --bind-to none --mca btl self,vader,tcp" \
            " --mca btl_vader_single_copy_mechanism none"
        [ "$(id -u)" != 0 ] || printf ' --allow-run-as-root'
        ;;
    esac
    echo
}

# mpi_quote WORD: WORD in single quotes, for eval.
mpi_quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# mpi_is_assignment WORD: true when WORD is NAME=value with NAME a variable name.
mpi_is_assignment() {
    case ${1%%=*} in
    "$1" | '' | [0-9]* | *[!A-Za-z0-9_]*) return 1 ;;
    esac
    return 0
}

# mpi_env_words SCOPE VAR=value: the launcher's words (quoted) that set VAR for one app context
# (SCOPE context) or for all (SCOPE global; Open MPI has no global form: mpi_command repeats its
# -x in every context).
mpi_env_words() {
    case $MPI_IMPL:$1 in
    openmpi:*) printf ' -x %s' "$(mpi_quote "$2")" ;;
    mpich:global) printf ' -genv %s %s' "${2%%=*}" "$(mpi_quote "${2#*=}")" ;;
    mpich:context) printf ' -env %s %s' "${2%%=*}" "$(mpi_quote "${2#*=}")" ;;
    esac
}

# mpi_command ARGS...: MPI_ARGS for ARGS (see the top of this file); status 2 on a malformed list.
mpi_command() {
    _ml_all=
    while [ $# -gt 0 ] && [ "$1" != -np ]; do
        if mpi_is_assignment "$1"; then
            _ml_all="$_ml_all$(mpi_env_words global "$1")"
        elif mpi_is_assignment "$1=" && eval "[ -n \"\${$1+set}\" ]"; then # a set VAR
            eval "_ml_all=\"\$_ml_all\$(mpi_env_words global \"$1=\${$1}\")\""
        elif ! mpi_is_assignment "$1="; then
            echo "mpi_command: '$1' is neither VAR=value nor a variable name" >&2
            return 2
        fi
        shift
    done
    # Hydra takes the global settings once; Open MPI in every app context.
    MPI_ARGS=
    if [ "$MPI_IMPL" = mpich ]; then
        MPI_ARGS=$_ml_all
        _ml_all=
    fi
    while [ $# -gt 0 ]; do
        if [ "$1" != -np ] || [ $# -lt 3 ]; then
            echo "mpi_command: expected -np N [VAR=value ...] PROGRAM, got '$*'" >&2
            return 2
        fi
        MPI_ARGS="$MPI_ARGS -np $(mpi_quote "$2")$_ml_all"
        shift 2
        while [ $# -gt 0 ] && mpi_is_assignment "$1"; do
            MPI_ARGS="$MPI_ARGS$(mpi_env_words context "$1")"
            shift
        done
        if [ $# -eq 0 ] || [ "$1" = : ]; then
            echo "mpi_command: an app context without a program" >&2
            return 2
        fi
        while [ $# -gt 0 ] && [ "$1" != : ]; do
            MPI_ARGS="$MPI_ARGS $(mpi_quote "$1")"
            shift
        done
        if [ $# -gt 0 ]; then
            MPI_ARGS="$MPI_ARGS :"
            shift
        fi
    done
}

# mpi_launch ARGS...: the job, under timeout when MPI_TIMEOUT is set.
mpi_launch() {
    mpi_command "$@" || return 2
    # shellcheck disable=SC2046 # mpi_flags prints words
    eval "${MPI_TIMEOUT:+timeout \"\$MPI_TIMEOUT\"} \"\$MPIRUN\" $(mpi_flags) $MPI_ARGS"
}
