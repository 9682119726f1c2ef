"""HTTP GET of the data center's health URL, expecting a status.

Every probe uses a client of its own, so it really opens a connection
over the path, and a probe cancelled at its deadline cannot leave a
half-open connection in a shared pool for the next one to queue behind.

The connection's socket carries the path's fwmark *before* it connects:
httpcore sets socket options only after the handshake, which would send
the SYN by the main routing table, over whichever path carries the town's
traffic, instead of the path being probed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterable

import anyio.abc
import httpcore
import httpx
from httpcore._backends.anyio import AnyIOStream  # httpcore's own stream wrapper

from netwatch.agent.probes import PathBinding, ProbeResult

SO_MARK = 36

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _BoundBackend(httpcore.AnyIOBackend):
    """Sets socket options and the source address before connecting."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if local_address:
                sock.bind((local_address, 0))
            sock.setblocking(False)
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            stream = await anyio.abc.SocketStream.from_socket(sock)
        except TimeoutError:
            sock.close()
            raise httpcore.ConnectTimeout(f"connect to {host}:{port} timed out") from None
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from None
        return AnyIOStream(stream)


class HttpProber:
    kind = "http"

    def __init__(self, url: str, expected_status: int) -> None:
        self.url = url
        self.expected_status = expected_status
        self._tls = ssl.create_default_context()  # the one costly part of a client
        self._backend = _BoundBackend()

    def _client(self, binding: PathBinding) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(verify=self._tls, retries=0)
        # httpx does not expose httpcore's network backend; the pool is its own.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._tls,
            max_connections=1,
            max_keepalive_connections=0,
            local_address=str(binding.source),
            socket_options=[(socket.SOL_SOCKET, SO_MARK, binding.mark)],
            network_backend=self._backend,
        )
        return httpx.AsyncClient(transport=transport, follow_redirects=False)

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult:
        start = time.perf_counter()
        async with self._client(binding) as client:
            try:
                async with asyncio.timeout(deadline_s):  # one deadline for the whole exchange
                    response = await client.get(self.url, timeout=deadline_s)
            except (TimeoutError, httpx.TimeoutException):
                return ProbeResult(self.kind, False, None, "timeout")
            except httpx.HTTPError as exc:
                return ProbeResult(self.kind, False, None, "error", type(exc).__name__)
        rtt = time.perf_counter() - start
        if response.status_code != self.expected_status:
            return ProbeResult(self.kind, False, rtt, "bad_status", str(response.status_code))
        return ProbeResult(self.kind, True, rtt, "ok")

    async def aclose(self) -> None:
        return None
