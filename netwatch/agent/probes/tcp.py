"""TCP connect to the data center's service port.

A SYN-ACK or a RST both prove that the path carried a round trip: the
service being down is not a reason to leave the path (the other path
reaches the same service).  The outcome keeps them apart.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time

from netwatch.agent.probes import PathBinding, ProbeResult
from netwatch.topology import HostPort

SO_MARK = 36


class TcpProber:
    kind = "tcp"

    def __init__(self, target: HostPort) -> None:
        self.target = (str(target.host), target.port)

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, binding.mark)
            # RST on close: a probe must not leave TIME_WAIT sockets behind at 50/s.
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.bind((str(binding.source), 0))
            start = time.perf_counter()
            try:
                async with asyncio.timeout(deadline_s):
                    await loop.sock_connect(sock, self.target)
            except TimeoutError:
                return ProbeResult(self.kind, False, None, "timeout")
            except ConnectionRefusedError:
                return ProbeResult(self.kind, True, time.perf_counter() - start, "refused")
            except OSError as exc:
                outcome = "unreachable" if exc.errno in _UNREACHABLE else "error"
                return ProbeResult(self.kind, False, None, outcome, exc.strerror or str(exc))
            return ProbeResult(self.kind, True, time.perf_counter() - start, "ok")
        finally:
            sock.close()

    async def aclose(self) -> None:
        return None


_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}
