"""HTTP GET of the data center's health URL, expecting a status.

Every probe uses a client of its own, so it really opens a connection
over the path, and a probe cancelled at its deadline cannot leave a
half-open connection in a shared pool for the next one to queue behind.

The connection's socket carries the path's fwmark *before* it connects:
httpcore's own backends set socket options only after the handshake,
which would send the SYN by the main routing table, over whichever path
carries the town's traffic, instead of the path being probed.  So the
probe plugs its own pieces into httpx and httpcore at their public seams:

    httpx.AsyncClient(transport=_PathTransport, trust_env=False)
      _PathTransport        httpx.AsyncBaseTransport; httpcore errors -> httpx errors
        httpcore.AsyncConnectionPool   one connection, no keep-alive, no retries
          _BoundBackend     httpcore.AsyncNetworkBackend; marks and binds, then connects
            _Stream         httpcore.AsyncNetworkStream over anyio's SocketStream / TLSStream;
                            OSError / anyio errors -> httpcore errors

Foreign exceptions are mapped at those two boundaries only, so the probe
sees nothing but httpx's (and asyncio's TimeoutError for its own deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import select
import socket
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.streams.tls
import httpcore
import httpx

from netwatch.agent.probes import SO_MARK, PathBinding, ProbeResult, no_source, register

if TYPE_CHECKING:
    from netwatch.topology.model import Targets

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)
ErrorMap = tuple[tuple[type[BaseException], type[Exception]], ...]
_DETAIL_CHARS = 120


class _CoreNoSource(httpcore.ConnectError):
    """The bind to the path's source address failed: it is not on this host."""


class _NoSourceAddress(httpx.ConnectError):
    """httpx's side of _CoreNoSource."""


@contextlib.contextmanager
def _translate(table: ErrorMap) -> Iterator[None]:
    """Re-raise an exception as the first entry of `table` it is an instance of."""
    try:
        yield
    except Exception as exc:
        for source, target in table:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__) from exc
        raise


# Most specific first.  TimeoutError is an OSError: it must come before it.
_READ_ERRORS: ErrorMap = (
    (TimeoutError, httpcore.ReadTimeout),
    (anyio.BrokenResourceError, httpcore.ReadError),
    (anyio.ClosedResourceError, httpcore.ReadError),
    (OSError, httpcore.ReadError),
)
_WRITE_ERRORS: ErrorMap = (
    (TimeoutError, httpcore.WriteTimeout),
    (anyio.BrokenResourceError, httpcore.WriteError),
    (anyio.ClosedResourceError, httpcore.WriteError),
    (OSError, httpcore.WriteError),
)
_CONNECT_ERRORS: ErrorMap = (
    (TimeoutError, httpcore.ConnectTimeout),
    (anyio.BrokenResourceError, httpcore.ConnectError),
    (anyio.EndOfStream, httpcore.ConnectError),
    (ssl.SSLError, httpcore.ConnectError),
    (OSError, httpcore.ConnectError),
)
_HTTPCORE_TO_HTTPX: ErrorMap = (
    (_CoreNoSource, _NoSourceAddress),
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)


class _Stream(httpcore.AsyncNetworkStream):
    """A connected socket (or TLS over it) as httpcore reads and writes it."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 - httpcore's signature
        with _translate(_READ_ERRORS), anyio.fail_after(timeout):
            try:
                return await self._stream.receive(max_bytes)
            except anyio.EndOfStream:
                return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if buffer:
            with _translate(_WRITE_ERRORS), anyio.fail_after(timeout):
                await self._stream.send(buffer)

    async def aclose(self) -> None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError):
            await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        try:
            with _translate(_CONNECT_ERRORS), anyio.fail_after(timeout):
                tls = await anyio.streams.tls.TLSStream.wrap(
                    self._stream,
                    server_side=False,
                    hostname=server_hostname,
                    ssl_context=ssl_context,
                    standard_compatible=False,
                )
        except BaseException:
            await self.aclose()
            raise
        return _Stream(tls)

    def get_extra_info(self, info: str) -> Any:
        extra = self._stream.extra
        if info == "ssl_object":
            return extra(anyio.streams.tls.TLSAttribute.ssl_object, None)
        if info == "client_addr":
            return extra(anyio.abc.SocketAttribute.local_address, None)
        if info == "server_addr":
            return extra(anyio.abc.SocketAttribute.remote_address, None)
        sock: socket.socket | None = extra(anyio.abc.SocketAttribute.raw_socket, None)
        if info == "socket":
            return sock
        if info == "is_readable":  # readable while idle: the server closed it
            if sock is None or sock.fileno() < 0:
                return True
            return bool(select.select([sock], [], [], 0)[0])
        return None


class _BoundBackend(httpcore.AsyncNetworkBackend):
    """Sets the socket options and binds the source address, then connects.

    asyncio only (it connects with the running loop's sock_connect): anyio
    cannot connect a socket made beforehand.
    """

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _translate(_CONNECT_ERRORS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if local_address:
                    sock.bind((local_address, 0))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    detail = f"source address {local_address} is not on this host"
                    raise _CoreNoSource(detail) from exc
                raise httpcore.ConnectError(f"socket setup: {exc.strerror or exc}") from exc
            sock.setblocking(False)
            with _translate(_CONNECT_ERRORS):
                async with asyncio.timeout(timeout):
                    await asyncio.get_running_loop().sock_connect(sock, (host, port))
                stream = await anyio.abc.SocketStream.from_socket(sock)  # owns sock now
        except BaseException:
            sock.close()
            raise
        return _Stream(stream)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _translate(_HTTPCORE_TO_HTTPX):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _translate(_HTTPCORE_TO_HTTPX):
                await close()


class _PathTransport(httpx.AsyncBaseTransport):
    """httpx over one httpcore pool whose connection is tied to one path.

    The one place httpcore's exceptions become httpx's (most specific wins):

        httpcore                       httpx
        TimeoutException           ->  TimeoutException
          ConnectTimeout           ->    ConnectTimeout
          ReadTimeout              ->    ReadTimeout
          WriteTimeout             ->    WriteTimeout
          PoolTimeout              ->    PoolTimeout
        NetworkError               ->  NetworkError
          ConnectError             ->    ConnectError
            _CoreNoSource          ->      _NoSourceAddress  (the source is not on this host)
          ReadError                ->    ReadError
          WriteError               ->    WriteError
        ProtocolError              ->  ProtocolError
          LocalProtocolError       ->    LocalProtocolError
          RemoteProtocolError      ->    RemoteProtocolError
        UnsupportedProtocol        ->  UnsupportedProtocol
        ProxyError                 ->  ProxyError

    Anything else (a bug) passes through unchanged.
    """

    def __init__(self, binding: PathBinding, tls: ssl.SSLContext) -> None:
        options: list[SocketOption] = []
        if binding.mark:  # 0 is unmarked; setting SO_MARK needs CAP_NET_ADMIN
            options.append((socket.SOL_SOCKET, SO_MARK, binding.mark))
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=tls,
            # No keep-alive: every probe opens its own connection over the
            # path; no limit, so a probe cancelled at its deadline can never
            # leave the next one queued behind its connection.
            max_connections=None,
            max_keepalive_connections=0,
            retries=0,
            local_address=str(binding.source),
            socket_options=options,
            network_backend=_BoundBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("an async transport needs an async request body")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _translate(_HTTPCORE_TO_HTTPX):
            response = await self._pool.handle_async_request(core_request)
        if not isinstance(response.stream, AsyncIterable):
            raise TypeError("an async pool returned a sync response body")
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        with _translate(_HTTPCORE_TO_HTTPX):
            await self._pool.aclose()


class HttpProber:
    kind = "http"

    def __init__(
        self, url: str, expected_status: int, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.url = url
        self.expected_status = expected_status
        # The one costly part of a client, shared by every probe.
        self._tls = tls if tls is not None else ssl.create_default_context()
        # One client per path, made once (building one costs more CPU than
        # the probe); it keeps no connection between probes.
        self._clients: dict[PathBinding, httpx.AsyncClient] = {}

    def _client(self, binding: PathBinding) -> httpx.AsyncClient:
        client = self._clients.get(binding)
        if client is None:
            # trust_env=False: a proxy from the environment would carry the
            # probe over whatever path reaches the proxy.
            client = self._clients[binding] = httpx.AsyncClient(
                transport=_PathTransport(binding, self._tls),
                follow_redirects=False,
                trust_env=False,
            )
        return client

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult:
        try:
            client = self._client(binding)
            start = time.perf_counter()
            async with asyncio.timeout(deadline_s):  # one deadline for the whole exchange
                response = await client.get(self.url, timeout=deadline_s)
            rtt = time.perf_counter() - start
        except (TimeoutError, httpx.TimeoutException):
            return ProbeResult(self.kind, False, None, "timeout")
        except _NoSourceAddress:
            return no_source(self.kind, binding)
        except (httpx.HTTPError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"[:_DETAIL_CHARS]
            return ProbeResult(self.kind, False, None, "error", detail)
        if response.status_code != self.expected_status:
            return ProbeResult(self.kind, False, rtt, "bad_status", str(response.status_code))
        return ProbeResult(self.kind, True, rtt, "ok")

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


@register("http")
def _from_targets(targets: Targets) -> HttpProber:
    return HttpProber(targets.http, targets.http_status)
