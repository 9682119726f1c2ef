"""An independent data-plane observer: how long did a town lose traffic?

From inside the town's namespace, open a TCP connection to the data
center's application every 10 ms, over whatever route the town has at
that moment (no fwmark: it sees what the town's users see).  The longest
gap between two probes that got through is the outage; it is measured
without asking the agent anything.

    with DataPlaneObserver("nw-nishiki", "10.200.0.10", 8080) as obs:
        ...cut a link...
    obs.longest_gap()

It runs in a thread with its own selector, so it keeps its cadence while
the caller blocks or sleeps.
"""

from __future__ import annotations

import errno
import itertools
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from netwatch.emulator.netns import entered

_LINGER_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # close with RST: no TIME_WAIT pile-up


@dataclass(frozen=True)
class Gap:
    start: float  # monotonic send time of the last probe through before the gap
    end: float  # send time of the first probe through after it

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class ObserverResult:
    sent: int = 0
    answered: int = 0
    ok_times: list[float] = field(default_factory=list)

    def gaps(self, threshold: float) -> list[Gap]:
        """Gaps between answered probes longer than `threshold` seconds."""
        times = sorted(self.ok_times)
        return [Gap(a, b) for a, b in itertools.pairwise(times) if b - a > threshold]

    def longest_gap(self, since: float | None = None) -> float:
        times = sorted(t for t in self.ok_times if since is None or t >= since)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class DataPlaneObserver:
    def __init__(
        self,
        netns: str | None,
        host: str,
        port: int,
        *,
        interval: float = 0.01,
        timeout: float = 1.0,
    ) -> None:
        self.netns = netns
        self.target = (host, port)
        self.interval = interval
        self.timeout = timeout
        self.result = ObserverResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="dataplane-observer", daemon=True)

    def __enter__(self) -> DataPlaneObserver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> ObserverResult:
        self._stop.set()
        self._thread.join()
        return self.result

    def snapshot(self) -> ObserverResult:
        with self._lock:
            return ObserverResult(
                self.result.sent, self.result.answered, list(self.result.ok_times)
            )

    def longest_gap(self, since: float | None = None) -> float:
        return self.snapshot().longest_gap(since)

    def last_ok(self) -> float | None:
        with self._lock:
            return self.result.ok_times[-1] if self.result.ok_times else None

    def _socket(self) -> socket.socket:
        if self.netns is None:
            sock = socket.socket()
        else:
            with entered(self.netns):
                sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        return sock

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        pending: dict[socket.socket, float] = {}
        next_send = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_send:
                    sock = self._socket()
                    code = sock.connect_ex(self.target)
                    with self._lock:
                        self.result.sent += 1
                    if code in (0, errno.EINPROGRESS):
                        pending[sock] = now
                        sel.register(sock, selectors.EVENT_WRITE)
                    else:
                        sock.close()
                    next_send += self.interval
                    if next_send < now:  # we fell behind: keep the cadence, skip the backlog
                        next_send = now + self.interval
                for key, _ in sel.select(timeout=max(0.0, next_send - time.monotonic())):
                    sock = key.fileobj  # type: ignore[assignment]
                    sent = pending.pop(sock)
                    sel.unregister(sock)
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        with self._lock:
                            self.result.answered += 1
                            self.result.ok_times.append(sent)
                    sock.close()
                expired = [s for s, sent in pending.items() if now - sent > self.timeout]
                for sock in expired:
                    del pending[sock]
                    sel.unregister(sock)
                    sock.close()
        finally:
            for sock in pending:
                sel.unregister(sock)
                sock.close()
            sel.close()
