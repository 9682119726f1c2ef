"""HTTP GET of the data center's health URL, expecting a status.

One client per path, its sockets marked with the path's fwmark; no
keep-alive, so every probe really opens a connection over the path.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx

from netwatch.agent.probes import PathBinding, ProbeResult

SO_MARK = 36


class HttpProber:
    kind = "http"

    def __init__(self, url: str, expected_status: int) -> None:
        self.url = url
        self.expected_status = expected_status
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, binding: PathBinding) -> httpx.AsyncClient:
        client = self._clients.get(binding.path)
        if client is None:
            transport = httpx.AsyncHTTPTransport(
                local_address=str(binding.source),
                socket_options=[(socket.SOL_SOCKET, SO_MARK, binding.mark)],
                limits=httpx.Limits(max_keepalive_connections=0),
                retries=0,
            )
            client = httpx.AsyncClient(transport=transport, follow_redirects=False)
            self._clients[binding.path] = client
        return client

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult:
        client = self._client(binding)
        start = time.perf_counter()
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
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
