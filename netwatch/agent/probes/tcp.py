"""TCP connect to the data center's service port.

A SYN-ACK or a RST both prove that the path carried a round trip: the
service being down is not a reason to leave the path (the other path
reaches the same service).  The outcome keeps them apart ("ok",
"refused").  A connected probe is closed normally (FIN), not reset: the
service sees an ordinary client that connects and leaves.

The RTT runs from just before connect() to the moment the socket reports
the handshake's end (perf_counter in the writability callback, not when
the probe's task next runs).  The deadline is a timer racing that
callback for one future, so after an event-loop stall a handshake that had
already completed wins over the timer due in the same loop iteration.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from typing import TYPE_CHECKING

from netwatch.agent.probes import PathBinding, ProbeResult, bind_to_path, register, setup_failed
from netwatch.topology import HostPort

if TYPE_CHECKING:
    from netwatch.topology.model import Targets

_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}


class TcpProber:
    kind = "tcp"

    def __init__(self, target: HostPort) -> None:
        self.target = (str(target.host), target.port)

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            return setup_failed(self.kind, binding, exc)
        try:
            try:
                sock.setblocking(False)
                bind_to_path(sock, binding)
            except OSError as exc:
                return setup_failed(self.kind, binding, exc)
            start = time.perf_counter()
            err = sock.connect_ex(self.target)
            if err in (errno.EINPROGRESS, errno.EAGAIN):
                finished = await _handshake(sock, deadline_s)
                if finished is None:
                    return ProbeResult(self.kind, False, None, "timeout")
                err, end = finished
            else:
                end = time.perf_counter()
            return self._result(err, end - start)
        finally:
            sock.close()

    def _result(self, err: int, rtt: float) -> ProbeResult:
        if err == 0:
            return ProbeResult(self.kind, True, rtt, "ok")
        if err == errno.ECONNREFUSED:
            return ProbeResult(self.kind, True, rtt, "refused")
        outcome = "unreachable" if err in _UNREACHABLE else "error"
        return ProbeResult(self.kind, False, None, outcome, os.strerror(err))

    async def aclose(self) -> None:
        return None


async def _handshake(sock: socket.socket, deadline_s: float) -> tuple[int, float] | None:
    """(SO_ERROR, perf_counter) when a non-blocking connect ends, None at the deadline."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, float] | None] = loop.create_future()
    fd = sock.fileno()

    def on_writable() -> None:
        if not done.done():
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            done.set_result((err, time.perf_counter()))

    def on_deadline() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_writer(fd, on_writable)
    timer = loop.call_at(loop.time() + deadline_s, on_deadline)
    try:
        return await done
    finally:
        timer.cancel()
        loop.remove_writer(fd)


@register("tcp")
def _from_targets(targets: Targets) -> TcpProber:
    return TcpProber(targets.tcp)
