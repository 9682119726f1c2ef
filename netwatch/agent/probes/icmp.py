"""ICMP echo over raw sockets.

Each path sends from its own raw socket (carrying the path's fwmark and
bound to its source address); one more raw socket receives every echo
reply.  A reply is ours when its identifier is the path's, its sequence
number is outstanding and its payload carries the probe's random nonce;
anything else is counted (late, duplicate, foreign, malformed) and
ignored, so a stray or replayed packet can never make a dead path look
alive.  `EchoMatcher` holds those rules and no socket, so they can be
tested on crafted bytes.

Cost: the echo request is one fixed 8-byte header and a nonce, so it is
packed once as a template with struct; each probe patches the identifier,
sequence number, nonce and checksum into a copy, and replies are parsed
with struct.  Building and dissecting scapy packets per probe cost about
1 ms of CPU per probe, now about 60 µs in all, most of it the event loop
and the system calls (bench/probe_cost_bench.py).  Scapy is not imported
by the agent at all: its import costs about 26 MiB of RSS (scapy's core,
its data tables and routes), 40 % of a small edge box's 64 MiB budget for
the whole agent, for 8 bytes of header.  The tests check the template
and every patched request against scapy's own build and dissection.

Timing: the RTT is the kernel's receive timestamp of the reply
(SO_TIMESTAMPNS, CLOCK_REALTIME) minus time.time_ns() taken right after
sendto, so the time a busy event loop takes to get to the reply is not
counted.  (A local target answers within the sendto call itself, stamped
before it returns; such a reply counts from just before sendto.)  The
deadline is a timer (loop.call_at) racing the reply for one future:
asyncio runs the callbacks of ready I/O before the timers due in the same
iteration, so after a stall a reply that had already arrived wins, and
its kernel timestamp decides whether it came within the deadline (if not,
it is late).  Without a usable timestamp the RTT falls back to
perf_counter arithmetic at the time the reply is read.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, NamedTuple, TypeVar

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

SOL_RAW = 255
ICMP_FILTER = 1  # <linux/icmp.h>: a bitmask of ICMP types the raw socket does not receive
SO_TIMESTAMPNS = 35  # <asm-generic/socket.h> SO_TIMESTAMPNS_OLD
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
ECHO_REPLY, ECHO_REQUEST = 0, 8
NONCE_BYTES = 16
ICMP_HEADER_BYTES = 8
_LATE_MEMORY = 4096  # sequence numbers remembered after their deadline
_RECV_BYTES = 65535

_IPV4 = struct.Struct("!B8xB2x4s")  # version+IHL, (...), protocol, (checksum), source
_ICMP = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence number
_ID_SEQ = struct.Struct("!HH")
_CHECKSUM = struct.Struct("!H")
_TIMESPEC = struct.Struct("@ll")  # struct timespec: tv_sec, tv_nsec (native longs)
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
V = TypeVar("V")


# --- packets -----------------------------------------------------------------


@functools.cache
def echo_template() -> bytes:
    """An echo request with identifier, sequence number, nonce and checksum
    still to fill in: 8 bytes of ICMP header, then NONCE_BYTES of payload
    (what scapy's `ICMP(type=8, id=0, seq=0) / Raw(nonce)` builds, without
    its checksum; the tests compare the two)."""
    return _ICMP.pack(ECHO_REQUEST, 0, 0, 0, 0) + b"\0" * NONCE_BYTES


def internet_checksum(data: bytes | bytearray) -> int:
    """RFC 1071: the ones' complement of the ones'-complement sum of the data
    taken as big-endian 16-bit words (an odd last byte is padded with zero)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:  # fold the carries back in
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_echo_request(template: bytes, ident: int, seq: int, nonce: bytes) -> bytearray:
    """A copy of `template` (see echo_template) with its fields filled in."""
    if len(nonce) != NONCE_BYTES or len(template) != ICMP_HEADER_BYTES + NONCE_BYTES:
        raise ValueError("expected the echo template and a nonce of NONCE_BYTES")
    packet = bytearray(template)
    _ID_SEQ.pack_into(packet, 4, ident, seq)
    packet[ICMP_HEADER_BYTES:] = nonce
    _CHECKSUM.pack_into(packet, 2, 0)
    _CHECKSUM.pack_into(packet, 2, internet_checksum(packet))
    return packet


class IcmpMessage(NamedTuple):
    """The fields of an ICMP message that matching looks at."""

    source: bytes  # the IPv4 source address, 4 bytes in network order
    icmp_type: int
    code: int
    ident: int
    seq: int
    payload: bytes  # at most the first NONCE_BYTES after the ICMP header


def parse_icmp(packet: bytes | bytearray | memoryview) -> IcmpMessage | None:
    """An IPv4 packet as a raw socket delivers it (IP header included) as an
    ICMP message, or None if it is too short or not IPv4 carrying ICMP."""
    if len(packet) < 20:
        return None
    version_ihl, protocol, source = _IPV4.unpack_from(packet)
    offset = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or offset < 20 or protocol != socket.IPPROTO_ICMP:
        return None
    if len(packet) < offset + ICMP_HEADER_BYTES:
        return None
    icmp_type, code, _checksum, ident, seq = _ICMP.unpack_from(packet, offset)
    start = offset + ICMP_HEADER_BYTES
    return IcmpMessage(
        source, icmp_type, code, ident, seq, bytes(packet[start : start + NONCE_BYTES])
    )


# --- matching ------------------------------------------------------------------


@dataclass(eq=False)
class Outstanding:
    """One probe waiting for its reply."""

    ident: int
    seq: int
    nonce: bytes
    deadline_s: float
    future: asyncio.Future[float | None]
    sending_ns: int = 0  # time.time_ns() right before sendto (CLOCK_REALTIME, as the kernel stamp)
    sent_ns: int = 0  # time.time_ns() right after sendto
    sent_perf: float = 0.0  # time.perf_counter() right after sendto


@dataclass
class _Flight:
    """The probes of one identifier (one path)."""

    pending: dict[int, Outstanding] = field(default_factory=dict)
    expired: OrderedDict[int, Outstanding] = field(default_factory=OrderedDict)
    answered: OrderedDict[int, None] = field(default_factory=OrderedDict)


class EchoMatcher:
    """Which echo replies answer an outstanding probe; counts the others.

    No sockets: `feed()` takes a packet as the receiving raw socket reads it.
    """

    def __init__(self, target: IPv4Address) -> None:
        self._target = target.packed
        self._flights: dict[int, _Flight] = {}
        self.counters = {"late": 0, "duplicate": 0, "foreign": 0, "malformed": 0}
        # Told of each late reply (identifier, RTT): a slow path, not a lost probe.
        self.on_late: Callable[[int, float], None] | None = None

    @property
    def idents(self) -> frozenset[int]:
        return frozenset(self._flights)

    def add_ident(self, ident: int) -> None:
        self._flights.setdefault(ident, _Flight())

    def expect(self, ident: int, seq: int, nonce: bytes, deadline_s: float) -> Outstanding:
        """Register a probe about to be sent; set its sent_* right after sending."""
        future: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        outstanding = Outstanding(ident, seq, nonce, deadline_s, future)
        self._flights[ident].pending[seq] = outstanding
        return outstanding

    def discard(self, outstanding: Outstanding) -> None:
        """Forget a probe that was never sent."""
        flight = self._flights[outstanding.ident]
        if flight.pending.get(outstanding.seq) is outstanding:
            del flight.pending[outstanding.seq]
        outstanding.future.cancel()

    async def wait(self, outstanding: Outstanding) -> float | None:
        """The RTT, or None if no reply came within the deadline.

        The deadline timer and the reader race to resolve one future: the
        first wins, and the other finds it done.
        """
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + outstanding.deadline_s, self._expire, outstanding)
        try:
            return await outstanding.future
        finally:
            timer.cancel()
            self._expire(outstanding)  # cancelled: a reply that still comes is late

    def _expire(self, outstanding: Outstanding) -> None:
        flight = self._flights.get(outstanding.ident)
        if flight is not None and flight.pending.get(outstanding.seq) is outstanding:
            del flight.pending[outstanding.seq]
            _remember(flight.expired, outstanding.seq, outstanding)
        if not outstanding.future.done():
            outstanding.future.set_result(None)

    def feed(
        self, packet: bytes | bytearray | memoryview, stamp_ns: int | None, now: float
    ) -> None:
        """Match one received packet: `stamp_ns` is its kernel receive time
        (time.time_ns() scale) if known, `now` the perf_counter() at reading."""
        message = parse_icmp(packet)
        if message is None:
            self.counters["malformed"] += 1
            return
        if message.icmp_type != ECHO_REPLY or message.source != self._target:
            self.counters["foreign"] += 1
            return
        flight = self._flights.get(message.ident)
        if flight is None:
            self.counters["foreign"] += 1
            return
        nonce, seq = message.payload, message.seq
        if len(nonce) < NONCE_BYTES:  # our identifier, but not a whole reply to our request
            self.counters["malformed"] += 1
            return
        outstanding = flight.pending.get(seq)
        if outstanding is not None and outstanding.nonce == nonce:
            del flight.pending[seq]
            rtt, stamped = _rtt(outstanding, stamp_ns, now)
            if stamped and rtt > outstanding.deadline_s:
                # Read only now (the loop was busy), but it came after the deadline.
                _remember(flight.expired, seq, outstanding)
                self.counters["late"] += 1
                if not outstanding.future.done():
                    outstanding.future.set_result(None)
                self._late(message.ident, rtt)
                return
            _remember(flight.answered, seq, None)
            if not outstanding.future.done():
                outstanding.future.set_result(rtt)
        elif (expired := flight.expired.get(seq)) is not None and expired.nonce == nonce:
            self.counters["late"] += 1
            del flight.expired[seq]  # a second copy is a duplicate, not news
            _remember(flight.answered, seq, None)
            self._late(message.ident, _rtt(expired, stamp_ns, now)[0])
        elif seq in flight.answered:
            self.counters["duplicate"] += 1
        else:
            self.counters["foreign"] += 1

    def _late(self, ident: int, rtt: float) -> None:
        if self.on_late is not None:
            self.on_late(ident, rtt)


def _rtt(outstanding: Outstanding, stamp_ns: int | None, now: float) -> tuple[float, bool]:
    """The RTT and whether it comes from the kernel's timestamp.

    The RTT runs from the end of sendto to the stamp; a reply stamped while
    sendto still ran (a local target: loopback delivers the request and
    the reply within the sendto call) counts from its start instead.  The
    stamp is trusted only if it lies between the send and the reading: a
    wall-clock step in between would make it meaningless.
    """
    sending, sent = outstanding.sending_ns, outstanding.sent_ns
    elapsed = now - outstanding.sent_perf
    if stamp_ns is not None and sending <= stamp_ns <= sent + elapsed * 1e9:
        return (stamp_ns - (sent if stamp_ns >= sent else sending)) / 1e9, True
    return max(elapsed, 0.0), False


def _receive_stamp(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The SCM_TIMESTAMPNS of a recvmsg, in nanoseconds since the epoch."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return None


def _remember(memory: OrderedDict[int, V], seq: int, value: V) -> None:
    memory[seq] = value
    memory.move_to_end(seq)
    while len(memory) > _LATE_MEMORY:
        memory.popitem(last=False)


# --- the prober ----------------------------------------------------------------


@dataclass
class _PathState:
    ident: int
    sock: socket.socket
    seq: int = 0


class IcmpProber:
    kind = "icmp"

    def __init__(self, target: IPv4Address) -> None:
        self.target = str(target)
        self._template = echo_template()
        self._matcher = EchoMatcher(target)
        self.counters = self._matcher.counters  # ignored replies by reason, for the metrics
        self._paths: dict[str, _PathState] = {}
        self._path_of: dict[int, str] = {}  # identifier -> path
        # Told of each reply that came after its deadline: (path, kind, RTT).
        self.on_late: Callable[[str, str, float], None] | None = None
        self._matcher.on_late = self._on_late_reply
        self._receiver: socket.socket | None = None
        self._buffer = bytearray(_RECV_BYTES)
        self._view = memoryview(self._buffer)

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult:
        state = self._paths.get(binding.path)
        if state is None:
            try:
                state = self._open_path(binding)
            except OSError as exc:
                return setup_failed(self.kind, binding, exc)
        state.seq = seq = (state.seq + 1) & 0xFFFF
        nonce = os.urandom(NONCE_BYTES)
        packet = build_echo_request(self._template, state.ident, seq, nonce)
        outstanding = self._matcher.expect(state.ident, seq, nonce, deadline_s)
        outstanding.sending_ns = time.time_ns()
        try:
            state.sock.sendto(packet, (self.target, 0))
        except OSError as exc:
            self._matcher.discard(outstanding)
            if not source_is_local(binding):  # it went away since the bind: ENETUNREACH
                return no_source(self.kind, binding)
            return ProbeResult(self.kind, False, None, "unreachable", exc.strerror or str(exc))
        outstanding.sent_ns = time.time_ns()
        outstanding.sent_perf = time.perf_counter()
        rtt = await self._matcher.wait(outstanding)
        if rtt is None:
            return ProbeResult(self.kind, False, None, "timeout")
        return ProbeResult(self.kind, True, rtt, "ok")

    def _open_path(self, binding: PathBinding) -> _PathState:
        if self._receiver is None:
            self._start_receiver()
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            sock.setblocking(False)
            # A sending socket would get a copy of every ICMP packet: filter all.
            sock.setsockopt(SOL_RAW, ICMP_FILTER, b"\xff\xff\xff\xff")
            bind_to_path(sock, binding)
        except OSError:
            sock.close()
            raise
        used = self._matcher.idents
        ident = random.randrange(1, 0xFFFF)
        while ident in used:
            ident = random.randrange(1, 0xFFFF)
        self._matcher.add_ident(ident)
        self._path_of[ident] = binding.path
        state = self._paths[binding.path] = _PathState(ident=ident, sock=sock)
        return state

    def _on_late_reply(self, ident: int, rtt: float) -> None:
        path = self._path_of.get(ident)
        if path is not None and self.on_late is not None:
            self.on_late(path, self.kind, rtt)

    def _start_receiver(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            sock.setblocking(False)
            # Only echo replies reach us (a set bit filters that type out).
            mask = ~(1 << ECHO_REPLY) & 0xFFFFFFFF
            sock.setsockopt(SOL_RAW, ICMP_FILTER, mask.to_bytes(4, "little"))
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)
        except OSError:
            sock.close()
            raise
        self._receiver = sock

    def _on_readable(self) -> None:
        sock = self._receiver
        if sock is None:
            return
        while True:
            try:
                size, ancillary, _flags, _addr = sock.recvmsg_into([self._buffer], _ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            # Read after each packet: one that arrived while this loop ran
            # has a kernel stamp later than a time taken before it.
            now = time.perf_counter()
            self._matcher.feed(self._view[:size], _receive_stamp(ancillary), now)

    async def aclose(self) -> None:
        if self._receiver is not None:
            asyncio.get_running_loop().remove_reader(self._receiver.fileno())
            self._receiver.close()
            self._receiver = None
        for state in self._paths.values():
            state.sock.close()
        self._paths.clear()


@register("icmp")
def _from_targets(targets: Targets) -> IcmpProber:
    return IcmpProber(targets.icmp)
