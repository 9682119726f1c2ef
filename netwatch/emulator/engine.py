"""The I/O edge: one epoll loop moving packets between the two TUN fds.

Per packet: read, ask the direction's :class:`Shaper`, then either write it
to the other TUN at once (nothing held and due now) or append it to the
direction's FIFO. Release times are monotonic per direction, so the FIFO
head is always the next packet due; a timerfd armed at the earliest head
wakes the loop with sub-millisecond precision. The control socket lives in
the same loop, so a profile change applies between two packets, before
its reply is written.
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import sys
import time
from collections import deque
from types import FrameType
from typing import Any

from netwatch.emulator.profile import Profile, ProfileError
from netwatch.emulator.server import ControlServer
from netwatch.emulator.shaper import Counters, Shaper
from netwatch.emulator.timerfd import TimerFd

DIRECTIONS = ("a_to_b", "b_to_a")
#: Packets read from one TUN per wake-up before looking at the other one.
BATCH = 64
#: Largest read: TUN MTU is at most 65535.
READ_SIZE = 65536
#: Memory guard for the delay line (about 30 MB of full-size packets).
MAX_HELD = 20_000


class Direction:
    """One way through the link: shaper, FIFO of held packets, fds."""

    __slots__ = ("counters", "fd_in", "fd_out", "name", "packets", "shaper", "times")

    def __init__(self, name: str, fd_in: int, fd_out: int, shaper: Shaper) -> None:
        self.name = name
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.shaper = shaper
        self.counters: Counters = shaper.counters
        # Parallel FIFOs (no per-packet tuple): release time, packet bytes.
        self.times: deque[float] = deque()
        self.packets: deque[bytes] = deque()

    def set_profile(self, profile: Profile) -> None:
        self.shaper.set_profile(profile)
        if profile.cut and self.packets:
            self.shaper.drop_held(len(self.packets))
            self.times.clear()
            self.packets.clear()

    def snapshot(self, now: float) -> dict[str, Any]:
        counters: dict[str, Any] = self.counters.as_dict()
        counters["queued_now"] = len(self.packets)
        counters["rate_queue_now"] = self.shaper.waiting(now)
        profile = self.shaper.profile
        return {
            "profile": profile.to_json(),
            "queue_limit": profile.queue_limit(),
            "counters": counters,
        }


class TunGone(Exception):
    """A TUN fd failed for good (its namespace was deleted, for instance)."""


class Engine:
    """Both directions of one link plus its control server, in one epoll loop."""

    def __init__(
        self,
        *,
        link: str,
        fd_a: int,
        fd_b: int,
        a_to_b: Profile,
        b_to_a: Profile,
        seed: int | None,
        control_path: str,
        info: dict[str, Any],
    ) -> None:
        self.link = link
        self.info = info
        self.dirs = {
            "a_to_b": Direction("a_to_b", fd_a, fd_b, Shaper(a_to_b, rng=_rng(seed, "a_to_b"))),
            "b_to_a": Direction("b_to_a", fd_b, fd_a, Shaper(b_to_a, rng=_rng(seed, "b_to_a"))),
        }
        self._started = time.monotonic()
        self._stop = False
        self._epoll = select.epoll()
        self._timer = TimerFd()
        self.server = ControlServer(control_path, self._epoll, self.handle)

    @property
    def stopping(self) -> bool:
        """True once a shutdown request or signal asked the loop to end."""
        return self._stop

    def close(self) -> None:
        """Release the timer and epoll (run() does it on the way out)."""
        if self._timer.fd >= 0:
            self._timer.close()
            self._epoll.close()

    # -- control ----------------------------------------------------------

    def handle(self, request: object) -> dict[str, Any]:
        """Answer one control request (already parsed from JSON)."""
        if not isinstance(request, dict):
            return _error("request must be a JSON object")
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "link": self.link, "pid": os.getpid()}
        if op == "get":
            return self.state()
        if op == "set":
            return self._set(request)
        if op == "shutdown":
            self._stop = True
            return {"ok": True, "link": self.link}
        return _error(f"unknown op {op!r} (expected ping, get, set, shutdown)")

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "ok": True,
            "link": self.link,
            "directions": {name: d.snapshot(now) for name, d in self.dirs.items()},
            "uptime_s": round(now - self._started, 6),
            "pid": os.getpid(),
            **self.info,
        }

    def _set(self, request: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(request) - {"op", "direction", "profile"})
        if unknown:
            return _error(f"unknown request field(s): {', '.join(unknown)}")
        which = request.get("direction", "both")
        if which == "both":
            names: tuple[str, ...] = DIRECTIONS
        elif which in DIRECTIONS:
            names = (which,)
        else:
            return _error(f"direction must be a_to_b, b_to_a or both, got {which!r}")
        if "profile" not in request:
            return _error("set needs a profile object")
        try:
            # Validate both before applying either: all or nothing.
            new = {n: self.dirs[n].shaper.profile.merged(request["profile"]) for n in names}
        except ProfileError as exc:
            return _error(str(exc))
        for name, profile in new.items():
            self.dirs[name].set_profile(profile)
        self._rearm(time.monotonic())
        return self.state()

    # -- packet path ------------------------------------------------------

    def _pump(self, d: Direction) -> None:
        """Move up to BATCH packets from d.fd_in (fast path kept inline)."""
        read = os.read
        write = os.write
        clock = time.monotonic
        fd_in = d.fd_in
        fd_out = d.fd_out
        times = d.times
        packets = d.packets
        c = d.counters
        shaper = d.shaper
        offer = shaper.offer
        transparent = shaper.profile.transparent
        for _ in range(BATCH):
            try:
                pkt = read(fd_in, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                # EBADFD: the device was deleted, usually with its namespace.
                raise TunGone(f"{d.name}: TUN read failed: {exc.strerror}") from None
            size = len(pkt)
            c.packets_received += 1
            c.bytes_received += size
            if transparent and not packets:
                try:
                    write(fd_out, pkt)
                except OSError:
                    c.dropped_write += 1
                    continue
                c.packets_passed += 1
                c.bytes_passed += size
                continue
            if len(packets) >= MAX_HELD:
                c.dropped_overflow += 1
                continue
            now = clock()
            release = offer(now, size)
            if release < 0.0:
                continue  # dropped; the shaper counted why
            if release <= now and not packets:
                try:
                    write(fd_out, pkt)
                except OSError:
                    c.dropped_write += 1
                    continue
                c.packets_passed += 1
                c.bytes_passed += size
            else:
                times.append(release)
                packets.append(pkt)

    def _release(self, d: Direction, now: float) -> None:
        times = d.times
        packets = d.packets
        c = d.counters
        write = os.write
        fd_out = d.fd_out
        while times and times[0] <= now:
            times.popleft()
            pkt = packets.popleft()
            try:
                write(fd_out, pkt)
            except OSError:
                c.dropped_write += 1
                continue
            c.packets_passed += 1
            c.bytes_passed += len(pkt)

    def _rearm(self, now: float) -> None:
        """Release what is due, then aim the timer at the next head."""
        ab, ba = self.dirs["a_to_b"], self.dirs["b_to_a"]
        if ab.times:
            self._release(ab, now)
        if ba.times:
            self._release(ba, now)
        if ab.times:
            nxt = min(ab.times[0], ba.times[0]) if ba.times else ab.times[0]
        elif ba.times:
            nxt = ba.times[0]
        else:
            return  # an armed timer may fire once for nothing; cheaper than disarming
        if nxt != self._timer.armed_at:
            self._timer.arm(nxt)

    # -- loop -------------------------------------------------------------

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self._stop = True

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT or a shutdown request; always clean up."""
        ab, ba = self.dirs["a_to_b"], self.dirs["b_to_a"]
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        # The handlers only set a flag; the wakeup fd makes epoll return.
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old_term = signal.signal(signal.SIGTERM, self.request_stop)
        old_int = signal.signal(signal.SIGINT, self.request_stop)
        ep = self._epoll
        fa, fb, ft, fw = ab.fd_in, ba.fd_in, self._timer.fd, wake_r.fileno()
        try:
            for fd in (fa, fb, ft, fw):
                ep.register(fd, select.EPOLLIN)
            self.server.open()
            print(
                f"netwatch-emulator: link {self.link} up, control {self.server.path}, "
                f"pid {os.getpid()}",
                file=sys.stderr,
                flush=True,
            )
            poll = ep.poll
            clock = time.monotonic
            rearm = self._rearm
            while not self._stop:
                for fd, mask in poll():
                    if fd == fa:
                        self._pump(ab)
                    elif fd == fb:
                        self._pump(ba)
                    elif fd == ft:
                        self._timer.clear()
                    elif fd == fw:
                        _drain(wake_r)
                    else:
                        self.server.on_event(fd, mask)
                if ab.times or ba.times:
                    rearm(clock())
        finally:
            self.server.close()
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
            signal.set_wakeup_fd(old_wakeup)
            wake_r.close()
            wake_w.close()
            self.close()


def _rng(seed: int | None, direction: str) -> random.Random:
    # Independent, reproducible streams per direction from one --seed.
    return random.Random(f"{seed}/{direction}") if seed is not None else random.Random()


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(256):
            pass
    except (BlockingIOError, InterruptedError):
        pass
