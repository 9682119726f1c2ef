"""HTTP GET of the data center's health URL, expecting a status.

Every probe opens its own connection over the path (no keep-alive), so
it really tests the path, and a probe cancelled at its deadline can
never leave a connection behind for the next one to queue on.

The socket carries the path's fwmark and source address *before* it
connects: the SYN must follow the path's routing table, not the main
table (over whichever path carries the town's traffic).

The exchange is framed by h11 (the HTTP/1.1 state machine httpx itself
runs on, through httpcore) over that socket, with TLS from the standard
library for https.  Through httpx, two GETs a second cost an agent 0.85 %
of a core, a quarter of all it did (measured in the lab from /proc, four
agents, with and without the HTTP probe); h11 alone frames the same
exchange for a fraction of that.

Errors map to outcomes at one place (`probe`):

    TimeoutError (the deadline)                 -> timeout
    OSError at bind, address not on the host    -> no_source
    OSError on connect                          -> error "ConnectError: ..."
    ssl.SSLError                                -> error "SSLError: ..."
    h11.ProtocolError, a closed connection      -> error "ProtocolError: ..."
    a status other than the expected one        -> bad_status (the path worked)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11

from netwatch.agent.probes import (
    PathBinding,
    ProbeResult,
    bind_to_path,
    no_source,
    register,
    setup_failed,
    source_is_local,
)

if TYPE_CHECKING:
    from netwatch.topology.model import Targets

_DETAIL_CHARS = 200
_READ_BYTES = 16384


class _ConnectFailed(Exception):
    """The TCP handshake failed (refused, unreachable)."""


class HttpProber:
    kind = "http"

    def __init__(
        self, url: str, expected_status: int, *, tls: ssl.SSLContext | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        self.url = url
        self.expected_status = expected_status
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        self._headers = [
            ("Host", authority),
            ("User-Agent", "netwatch-probe"),
            ("Connection", "close"),
        ]
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":  # the one costly part, shared by every probe
            self._tls = tls if tls is not None else ssl.create_default_context()

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            bind_to_path(sock, binding)
        except OSError as exc:
            sock.close()
            return setup_failed(self.kind, binding, exc)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(deadline_s):  # one deadline for the whole exchange
                status = await self._exchange(sock)
            rtt = time.perf_counter() - start
        except TimeoutError:
            return ProbeResult(self.kind, False, None, "timeout")
        except _ConnectFailed as exc:
            if not source_is_local(binding):  # it went away since the bind
                return no_source(self.kind, binding)
            return self._error("ConnectError", exc.__cause__ or exc)
        except ssl.SSLError as exc:
            return self._error("SSLError", exc)
        except (h11.ProtocolError, ConnectionError, EOFError) as exc:
            return self._error("ProtocolError", exc)
        except OSError as exc:
            return self._error("ConnectError", exc)
        finally:
            sock.close()
        if status != self.expected_status:
            return ProbeResult(self.kind, False, rtt, "bad_status", str(status))
        return ProbeResult(self.kind, True, rtt, "ok")

    async def _exchange(self, sock: socket.socket) -> int:
        """Connect, send the GET, read until the response head: its status."""
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, (self.host, self.port))
        except OSError as exc:
            raise _ConnectFailed(str(exc)) from exc
        conn = h11.Connection(our_role=h11.CLIENT)
        request = conn.send(h11.Request(method="GET", target=self.target, headers=self._headers))
        end = conn.send(h11.EndOfMessage())
        assert request is not None
        assert end is not None
        if self._tls is None:
            await loop.sock_sendall(sock, request + end)
            return await _read_status(conn, lambda: loop.sock_recv(sock, _READ_BYTES))
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=self._tls, server_hostname=self.host
        )
        try:
            writer.write(request + end)
            await writer.drain()
            return await _read_status(conn, lambda: reader.read(_READ_BYTES))
        finally:
            writer.transport.abort()  # a probe does not wait for the TLS close

    def _error(self, name: str, exc: BaseException) -> ProbeResult:
        detail = f"{name}: {exc}"[:_DETAIL_CHARS]
        return ProbeResult(self.kind, False, None, "error", detail)

    async def aclose(self) -> None:
        return None


async def _read_status(conn: h11.Connection, recv: Callable[[], Awaitable[bytes]]) -> int:
    """Feed what `recv()` returns to h11 until the response head is parsed."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await recv()
            if not data:
                raise EOFError("the server closed the connection before answering")
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            return int(event.status_code)
        if isinstance(event, h11.ConnectionClosed):
            raise EOFError("the server closed the connection before answering")


@register("http")
def _from_targets(targets: Targets) -> HttpProber:
    return HttpProber(targets.http, targets.http_status)
