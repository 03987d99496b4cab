"""When did a stream's bytes reach the socket? The kernel's receive timestamp, not when a greenlet ran.

A stamp taken after `recv` returns carries every delay between the bytes arriving and this user's
greenlet running: other users' chunks parsed first (gevent runs one greenlet at a time) and, on a busy
machine, the whole process waiting for a core. Linux records when each packet arrived (SO_TIMESTAMPNS)
and hands it over with `recvmsg`; that is the moment the bytes were there to be read, whatever ran
meanwhile. Where the option is missing (not Linux, or the kernel gives no stamp) the stamp falls back to
the moment the read returned, as before.

The limit: packets that queue up while nobody reads are merged by the kernel into one buffer that keeps
the newest stamp (tcp_try_coalesce), so a reader late by more than a token's gap dates the earlier tokens
by the last one queued: still no later than the read, never earlier than the truth.

The kernel stamp is wall-clock time; the harness times requests with perf_counter, so each stamp is
converted by how long the bytes waited: `perf_counter() - (time.time() - kernel_ts)`, both clocks read at
the same moment, right after the read.
"""

from __future__ import annotations

import atexit
import socket
import struct
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time runstate imports this module and must stay free of gevent
    from geventhttpclient.client import HTTPClient
    from geventhttpclient.response import HTTPSocketPoolResponse

# Linux's values (asm-generic/socket.h; the same on x86-64 and arm64): Python's socket module does not
# export them. SCM_TIMESTAMPNS equals SO_TIMESTAMPNS; the payload is a struct timespec of two longs.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
# A stamp older than this is not believed (a wall clock stepped by NTP mid-read): the read time is used.
_MAX_WAIT_S = 5.0
ENABLED = sys.platform.startswith("linux") and _ANCILLARY_BYTES > 0


# Linux switches receive stamping on for the whole machine when the first socket asks, but later: the
# switch is deferred to a work queue (net_enable_timestamp), and switched off again, also deferred, when
# the last socket that asked closes. Packets that arrive in between carry no stamp. Measured on this
# project's 2-core Linux machines: 189 of 200 first reads of a fresh loopback connection unstamped when
# no other socket held the option, 0 of 200 while one did. So each process keeps one socket holding it.
_KEEP_ON_WAIT_S = 1.0  # bound on the wait for the switch (it takes well under a millisecond when idle)
_keeper: socket.socket | None = None
_tried = False  # keep_on ran in this process: a kernel that never stamps costs one probe, not one per read
_live = False


def keep_on() -> bool:
    """Switch the kernel's receive stamping on for this process's life and wait (bounded) until a probe
    read over loopback comes back stamped: True once stamps are live. Idempotent and cheap after the first
    call; the load generator calls it before its clock starts, `enable` calls it for any other caller."""
    global _keeper, _live, _tried
    if not ENABLED or _tried:
        return _live
    _tried = True
    deadline_s = time.monotonic() + _KEEP_ON_WAIT_S
    with socket.create_server(("127.0.0.1", 0)) as server:
        probe = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with peer:
            try:
                probe.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            except OSError:
                probe.close()
                return False
            while not _live and time.monotonic() < deadline_s:
                peer.sendall(b"x")
                _live = recv_stamped(probe, 64, True)[2]
                if not _live:
                    time.sleep(0.005)
    _keeper = probe  # held open, stamped or not: as long as it is open, the switch stays on
    atexit.register(probe.close)  # closed on purpose at exit, not collected with a ResourceWarning
    return _live


def stamps_live() -> bool:
    """Whether `keep_on` saw the kernel stamp a read in this process (metadata: how arrivals were timed)."""
    return _live


def enable(sock: socket.socket | None) -> bool:
    """Ask the kernel to stamp arrivals on this socket; False where it cannot (the caller falls back)."""
    if not ENABLED or sock is None or hasattr(sock, "getpeercert"):
        return False  # TLS sockets refuse recvmsg: their reads are stamped when they return
    keep_on()
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def recv_stamped(sock: socket.socket, size: int, stamped: bool) -> tuple[bytes, float, bool]:
    """Read up to `size` bytes: (data, arrival in perf_counter seconds, whether the kernel stamped it)."""
    if not stamped:
        data = sock.recv(size)
        return data, time.perf_counter(), False
    data, ancillary, _flags, _addr = sock.recvmsg(size, _ANCILLARY_BYTES)
    now_perf, now_wall = time.perf_counter(), time.time()
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(payload)
            waited_s = now_wall - (sec + nsec * 1e-9)
            if sec > 0 and 0.0 <= waited_s <= _MAX_WAIT_S:
                return data, now_perf - waited_s, True
            # a clock step can make the wait slightly negative: the bytes arrived just now
            return data, now_perf, False
    return data, now_perf, False


def request_stamped(
    client: HTTPClient, method: str, uri: str, body: bytes, headers: dict[str, str]
) -> tuple[HTTPSocketPoolResponse, float]:
    """Send one request on `client`'s pool (a geventhttpclient HTTPClient) and read the response's headers:
    (response, kernel arrival of its first bytes in perf_counter seconds).

    geventhttpclient's own `request` reads the headers with plain `recv`, so its stamp would be when this
    greenlet got to run. A server that sends its headers with the first token (GuideLLM's mock does)
    would then carry that wait in TTFT. Here the first read is stamped like a body read; the response
    object is geventhttpclient's own, given those bytes (`pre_buffered`). As in geventhttpclient, a POST
    whose connection broke after the send is not retried: it may have reached the server.
    """
    from geventhttpclient.response import HTTPSocketPoolResponse

    pool = client._connection_pool
    request = client._build_request(method, uri, body=body, headers=headers).encode("latin-1") + body
    sock = pool.get_socket()
    try:
        stamped = enable(sock)
        sock.sendall(request)
        first, first_s, _kernel = recv_stamped(sock, client.block_size, stamped)
    except BaseException:
        pool.release_socket(sock)
        raise
    # An empty first read (the server closed the connection) makes the response raise
    # HTTPConnectionClosed, as geventhttpclient's own request does; the response releases the socket.
    resp = HTTPSocketPoolResponse(
        sock, pool, block_size=client.block_size, method=method, headers_type=client.headers_type,
        pre_buffered=first,
    )  # fmt: skip
    return resp, first_s


def _errors() -> ModuleType:
    """geventhttpclient's exceptions, imported when needed: runstate reads ENABLED and must stay free of
    gevent (tests/loadgen/test_core.py)."""
    from geventhttpclient import response

    return response


class StampedLines:
    """Lines of a geventhttpclient response body, each with the arrival time of the read that completed it.

    Replaces `resp.readline(b"\\n")` (which reads with plain `recv`, dropping the kernel's stamp); it uses the
    response's own parser (`feed`) and body buffer, so chunked framing, message end and the socket's
    return to the pool behave as in geventhttpclient. Bytes already buffered with the headers carry the
    time the headers were read (`buffered_s`).
    """

    def __init__(self, resp: HTTPSocketPoolResponse, buffered_s: float) -> None:
        self._resp = resp
        self.last_s = buffered_s
        self.kernel_stamps = 0  # reads the kernel stamped (0 where unsupported: the fallback was used)
        self._stamped = enable(getattr(resp, "_sock", None))

    def readline(self) -> tuple[bytes, float]:
        """(line including b"\\n", arrival); (b"", time) at the end of the body."""
        resp = self._resp
        buf = resp._body_buffer
        while True:
            end = buf.find(b"\n")
            if end >= 0:
                line = bytes(buf[: end + 1])
                del buf[: end + 1]
                return line, self.last_s
            if resp.message_complete:
                return b"", self.last_s
            sock = resp._sock
            if sock is None:
                raise _errors().HTTPConnectionClosed("connection closed.")
            try:
                data, self.last_s, kernel = recv_stamped(sock, resp.block_size, self._stamped)
                self.kernel_stamps += kernel
                resp.feed(data)
                if not data and not resp.message_complete:
                    # what llhttp reports for a body cut short: a truncated stream, not a reset
                    raise _errors().HTTPParseError("connection closed before the end of the body")
            except BaseException:
                resp.release()
                raise
