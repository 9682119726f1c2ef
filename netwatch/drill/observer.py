"""The drill's independent data-plane observer: ICMP and TCP every 10 ms.

From the town's side (its namespace in the lab, the edge box elsewhere),
over whatever route the town has at that moment (no fwmark, no bound
source: it sees what the town's users see), one thread sends an ICMP echo
to the service's address and opens a TCP connection to its port every
`interval`.  Each probe becomes a `Probe` (send time, RTT or None); the
measurements (`netwatch.drill.measure`) come from those alone, without
asking the agent anything.

    with Observer("nw-nishiki", "10.200.0.10", 8080) as obs:
        ...cut a link...
    obs.probes("icmp")
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass

from netwatch.agent.probes.icmp import (
    ECHO_REPLY,
    NONCE_BYTES,
    build_echo_request,
    echo_template,
    parse_icmp,
)
from netwatch.emulator.netns import entered

_LINGER_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # close with RST: no TIME_WAIT pile-up
KINDS = ("icmp", "tcp")


@dataclass(frozen=True, slots=True)
class Probe:
    sent: float  # epoch seconds
    rtt: float | None  # None: no answer within the timeout


class Observer:
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
        self.host, self.port = host, port
        self.interval = interval
        self.timeout = timeout
        self._probes: dict[str, list[Probe]] = {k: [] for k in KINDS}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._offset = time.time() - time.monotonic()
        self._ident = os.getpid() & 0xFFFF ^ 0x5A5A
        self._thread = threading.Thread(target=self._run, name="drill-observer", daemon=True)

    def __enter__(self) -> Observer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._icmp = self._make(socket.SOCK_RAW, socket.IPPROTO_ICMP)  # fails early without root
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._icmp.close()

    @property
    def error(self) -> BaseException | None:
        """What stopped the observer's thread, if something did."""
        return self._error

    def probes(self, kind: str) -> list[Probe]:
        with self._lock:
            return list(self._probes[kind])

    def last_ok(self, kind: str) -> float | None:
        with self._lock:
            for probe in reversed(self._probes[kind]):
                if probe.rtt is not None:
                    return probe.sent
        return None

    def _make(self, kind: int, proto: int = 0) -> socket.socket:
        if self.netns is None:
            sock = socket.socket(socket.AF_INET, kind, proto)
        else:
            with entered(self.netns):
                sock = socket.socket(socket.AF_INET, kind, proto)
        sock.setblocking(False)
        return sock

    def _record(self, kind: str, sent_mono: float, rtt: float | None) -> None:
        with self._lock:
            self._probes[kind].append(Probe(sent_mono + self._offset, rtt))

    def _run(self) -> None:
        try:
            # The thread lives in the town's namespace: its sockets are made
            # there without a setns() pair each (100 TCP sockets a second).
            with entered(self.netns) if self.netns else contextlib.nullcontext():
                self._loop()
        except BaseException as exc:  # the drill sees it and stops: never a silent observer
            self._error = exc

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._icmp, selectors.EVENT_READ, "icmp")
        template = echo_template()
        nonce = os.urandom(NONCE_BYTES)
        echoes: dict[int, float] = {}  # seq -> send time
        pending: dict[socket.socket, float] = {}
        seq = 0
        next_send = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_send:
                    seq = (seq + 1) & 0xFFFF
                    packet = build_echo_request(template, self._ident, seq, nonce)
                    echoes[seq] = now
                    with contextlib.suppress(OSError):  # no route now: the echo is lost
                        self._icmp.sendto(packet, (self.host, 0))
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                    code = sock.connect_ex((self.host, self.port))
                    if code in (0, errno.EINPROGRESS):
                        pending[sock] = now
                        sel.register(sock, selectors.EVENT_WRITE, "tcp")
                    else:
                        sock.close()
                        self._record("tcp", now, None)
                    next_send += self.interval
                    if next_send < now:  # fell behind: keep the cadence, skip the backlog
                        next_send = now + self.interval
                wait = max(0.0, next_send - time.monotonic())
                for key, _ in sel.select(timeout=wait):
                    at = time.monotonic()
                    if key.data == "icmp":
                        self._read_icmp(echoes, nonce, at)
                        continue
                    sock = key.fileobj  # type: ignore[assignment]
                    sent = pending.pop(sock)
                    sel.unregister(sock)
                    ok = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    self._record("tcp", sent, at - sent if ok else None)
                    sock.close()
                now = time.monotonic()
                for sock in [s for s, sent in pending.items() if now - sent > self.timeout]:
                    self._record("tcp", pending.pop(sock), None)
                    sel.unregister(sock)
                    sock.close()
                for old in [s for s, sent in echoes.items() if now - sent > self.timeout]:
                    self._record("icmp", echoes.pop(old), None)
        finally:
            for sock in pending:
                sel.unregister(sock)
                sock.close()
            sel.close()

    def _read_icmp(self, echoes: dict[int, float], nonce: bytes, at: float) -> None:
        while True:
            try:
                packet = self._icmp.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            message = parse_icmp(packet)
            if (
                message is None
                or message.icmp_type != ECHO_REPLY
                or message.ident != self._ident
                or message.payload != nonce
            ):
                continue  # the agent's probes, or anything else: not ours
            sent = echoes.pop(message.seq, None)
            if sent is not None:
                self._record("icmp", sent, at - sent)
