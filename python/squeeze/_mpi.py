"""A transport (include/squeeze.h: struct sqz_transport) over an mpi4py communicator.

Every function is a ctypes callback that moves host memory through mpi4py: the collectives on
the caller's communicator, the point-to-point messages on a private duplicate (so that they never
match the application's own), which gives the engine its one-round exchanges.  mpi4py is imported
here only, when a Comm over MPI is made.
"""
import ctypes
import socket

from . import _lib


def _bytes_at(addr, n):
    """A writable memoryview of n bytes at address addr (a zero-length view for n == 0)."""
    return memoryview((ctypes.c_ubyte * n).from_address(addr)).cast("B") if n else \
        memoryview(bytearray(0))


def host_split(comm, host_id=""):
    """(local, inter) mpi4py communicators for sqz_comm_create_hier: this rank's host (host_id,
    else the hostname; hosts in the order of their first rank) and the ranks with this rank's
    local index, one per host; None (collectively) unless comm spans several hosts that all hold
    the same number (> 1) of ranks."""
    names = comm.allgather(host_id or socket.gethostname())
    hosts = list(dict.fromkeys(names))
    sizes = {names.count(h) for h in hosts}
    if len(hosts) < 2 or len(sizes) != 1 or sizes == {1}:
        return None
    me = comm.Get_rank()
    host = hosts.index(names[me])
    local_rank = names[:me].count(names[me])
    return comm.Split(host, me), comm.Split(local_rank, host)


def mpi_transport(comm):
    """(sqz_transport_t, keepalive) over the mpi4py communicator `comm` (collective: duplicates
    it).  keepalive holds the callbacks and the duplicate; it must outlive the engine."""
    from mpi4py import MPI

    p2p = comm.Dup()
    nranks = comm.Get_size()
    reqs = {}  # id -> (request, status, got pointer or None)
    next_id = [1]
    tag = 0x5a51

    def span(counts, displs):
        return max((int(displs[r]) + int(counts[r]) for r in range(nranks)), default=0)

    def allgatherv(_self, sendbuf, sendbytes, recvbuf, recvbytes, displs):
        try:
            rc = [int(recvbytes[r]) for r in range(nranks)]
            rd = [int(displs[r]) for r in range(nranks)]
            comm.Allgatherv([_bytes_at(sendbuf, int(sendbytes)), MPI.BYTE],
                            [_bytes_at(recvbuf, span(rc, rd)), (rc, rd), MPI.BYTE])
            return 0
        except Exception:
            return 1

    def alltoallv(_self, sendbuf, sendbytes, sdispls, recvbuf, recvbytes, rdispls):
        try:
            sc = [int(sendbytes[r]) for r in range(nranks)]
            sd = [int(sdispls[r]) for r in range(nranks)]
            rc = [int(recvbytes[r]) for r in range(nranks)]
            rd = [int(rdispls[r]) for r in range(nranks)]
            comm.Alltoallv([_bytes_at(sendbuf, span(sc, sd)), (sc, sd), MPI.BYTE],
                           [_bytes_at(recvbuf, span(rc, rd)), (rc, rd), MPI.BYTE])
            return 0
        except Exception:
            return 1

    def allreduce(_self, inbuf, outbuf, n):
        try:
            out = _bytes_at(outbuf, 4 * int(n))
            src = MPI.IN_PLACE if inbuf == outbuf else [_bytes_at(inbuf, 4 * int(n)), MPI.FLOAT]
            comm.Allreduce(src, [out, MPI.FLOAT], op=MPI.SUM)
            return 0
        except Exception:
            return 1

    def start(req, got, out):
        k = next_id[0]
        next_id[0] += 1
        reqs[k] = (req, MPI.Status(), got)
        out[0] = k
        return 0

    def finish(k, done_req):
        req, status, got = reqs.pop(k)
        if got:
            got[0] = status.Get_count(MPI.BYTE)
        return 0

    def isend(_self, buf, nbytes, peer, out):
        try:
            return start(p2p.Isend([_bytes_at(buf, int(nbytes)), MPI.BYTE], dest=peer, tag=tag),
                         None, out)
        except Exception:
            return 1

    def irecv(_self, buf, nbytes, peer, got, out):
        try:
            return start(p2p.Irecv([_bytes_at(buf, int(nbytes)), MPI.BYTE], source=peer,
                                   tag=tag), got, out)
        except Exception:
            return 1

    def test(_self, req, done):
        try:
            r, status, _ = reqs[req]
            ok = r.Test(status)
            done[0] = 1 if ok else 0
            return finish(req, r) if ok else 0
        except Exception:
            return 1

    def wait(_self, req):
        try:
            r, status, _ = reqs[req]
            r.Wait(status)
            return finish(req, r)
        except Exception:
            return 1

    cbs = (_lib.TRANSPORT_ALLGATHERV_FN(allgatherv), _lib.TRANSPORT_ALLTOALLV_FN(alltoallv),
           _lib.TRANSPORT_ALLREDUCE_FN(allreduce), _lib.TRANSPORT_ISEND_FN(isend),
           _lib.TRANSPORT_IRECV_FN(irecv), _lib.TRANSPORT_TEST_FN(test),
           _lib.TRANSPORT_WAIT_FN(wait))
    t = _lib.sqz_transport_t()
    t.size = ctypes.sizeof(_lib.sqz_transport_t)
    t.self = None
    t.rank = comm.Get_rank()
    t.nranks = nranks
    (t.allgatherv, t.alltoallv, t.allreduce_f32_sum, t.isend, t.irecv, t.test, t.wait) = cbs
    return t, (cbs, p2p, reqs)
