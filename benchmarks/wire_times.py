"""What the wire saw: each streamed request's TTFT and E2E from the loopback's own packet stamps.

A client's TTFT is its send stamp to its first-content stamp; both carry the client's own delays (building
and sending the request, its event loop, a core to run on). The loopback interface stamps every packet in
the kernel as it passes, whatever any process is doing: the first packet of a request (the POST line), the
packet that completes the reply's first content chunk, the one that completes `data: [DONE]`. A tool's
figure minus the wire's, over the same run, is that tool's bias; the server's own pace cancels out.

Linux only, as root (an AF_PACKET socket on `lo`); IPv4 HTTP/1.1 on one server port, one request at a
time per connection (keep-alive, no pipelining), as every client here does. The replies are read by the
load generator's own SSE parser.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

from loadgen.responses import StreamParser

_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4  # loopback shows each packet twice: as sent (skipped) and as received
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_ETH_HEADER_BYTES = 14


@dataclass(slots=True)
class WireRequest:
    """One request as the loopback saw it; stamps in wall-clock seconds."""

    sent_ts_s: float
    parser: StreamParser = field(default_factory=StreamParser)
    pending: bytes = b""  # the reply's bytes after its last line end
    done_ts_s: float | None = None

    def feed(self, payload: bytes, ts_s: float) -> bool:
        """A packet of the reply; True once `data: [DONE]` (or an error) ended the stream."""
        lines = (self.pending + payload).split(b"\n")
        self.pending = lines.pop()
        # Only SSE data lines: the HTTP headers and chunked framing share the bytes, not the timing.
        ended = any([self.parser.feed(line, ts_s) for line in lines if line.startswith(b"data:")])
        if ended:
            self.done_ts_s = ts_s
        return ended

    @property
    def ttft_s(self) -> float | None:
        first = self.parser.first_content_s
        return None if first is None else first - self.sent_ts_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.done_ts_s is None or not self.parser.done else self.done_ts_s - self.sent_ts_s


@dataclass
class WireCapture:
    """Captures on `lo` in a thread from `start()` to `stop()`; `requests` holds the ended ones."""

    server_port: int
    requests: list[WireRequest] = field(default_factory=list)
    packets: int = 0
    _open: dict[int, WireRequest] = field(default_factory=dict)  # by the client's port
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> WireCapture:
        """Raises PermissionError when not root (and OSError where AF_PACKET does not exist)."""
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(_ETH_P_ALL))
        sock.bind(("lo", 0))
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[WireRequest]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.requests

    def _run(self, sock: socket.socket) -> None:
        ancillary = socket.CMSG_SPACE(_TIMESPEC.size)
        with sock:
            while not self._stop.is_set():
                try:
                    data, anc, _flags, addr = sock.recvmsg(65535, ancillary)
                except TimeoutError:
                    continue
                if addr[2] == _PACKET_OUTGOING:
                    continue
                for _level, kind, payload in anc:
                    if kind == _SO_TIMESTAMPNS:
                        sec, nsec = _TIMESPEC.unpack_from(payload)
                        self.packets += 1
                        self._packet(data, sec + nsec * 1e-9)

    def _packet(self, frame: bytes, ts_s: float) -> None:
        ip = frame[_ETH_HEADER_BYTES:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
            return
        tcp = ip[(ip[0] & 0x0F) * 4 :]
        src_port, dst_port = struct.unpack_from("!HH", tcp)
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if not payload:
            return
        if dst_port == self.server_port and payload[:5] == b"POST ":
            self._open[src_port] = WireRequest(ts_s)
        elif (
            src_port == self.server_port
            and (req := self._open.get(dst_port)) is not None
            and req.feed(payload, ts_s)
        ):
            self.requests.append(self._open.pop(dst_port))
