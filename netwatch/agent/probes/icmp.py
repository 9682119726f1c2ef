"""ICMP echo over a raw socket, packets built and parsed with scapy.

Each path sends from its own raw socket (carrying the path's fwmark and
bound to its source address); one more raw socket receives every echo
reply.  A reply is ours when its identifier is the path's, its sequence
number is outstanding and its payload carries the probe's random nonce;
anything else is counted (late, duplicate, foreign) and ignored, so a
stray or replayed packet can never make a dead path look alive.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TypeVar

from scapy.layers.inet import ICMP, IP
from scapy.packet import Raw

from netwatch.agent.probes import PathBinding, ProbeResult

SO_MARK = 36
SOL_RAW = 255
ICMP_FILTER = 1
ECHO_REPLY, ECHO_REQUEST = 0, 8
NONCE_BYTES = 16
_LATE_MEMORY = 4096  # sequence numbers remembered after their deadline
V = TypeVar("V")


@dataclass
class _Outstanding:
    nonce: bytes
    sent: float
    future: asyncio.Future[float]


@dataclass
class _PathState:
    ident: int
    sock: socket.socket
    seq: int = 0
    pending: dict[int, _Outstanding] = field(default_factory=dict)
    expired: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    answered: OrderedDict[int, None] = field(default_factory=OrderedDict)


class IcmpProber:
    kind = "icmp"

    def __init__(self, target: IPv4Address) -> None:
        self.target = str(target)
        self._paths: dict[str, _PathState] = {}
        self._receiver: socket.socket | None = None
        self.counters = {"late": 0, "duplicate": 0, "foreign": 0, "malformed": 0}

    def _start_receiver(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.setblocking(False)
        # Only echo replies reach us (a set bit filters that type out).
        sock.setsockopt(
            SOL_RAW, ICMP_FILTER, (~(1 << ECHO_REPLY) & 0xFFFFFFFF).to_bytes(4, "little")
        )
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)
        self._receiver = sock

    def _path(self, binding: PathBinding) -> _PathState:
        state = self._paths.get(binding.path)
        if state is None:
            if self._receiver is None:
                self._start_receiver()
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, binding.mark)
            # A sending socket would get a copy of every ICMP packet: filter all.
            sock.setsockopt(SOL_RAW, ICMP_FILTER, b"\xff\xff\xff\xff")
            sock.bind((str(binding.source), 0))
            used = {p.ident for p in self._paths.values()}
            ident = random.randrange(1, 0xFFFF)
            while ident in used:
                ident = random.randrange(1, 0xFFFF)
            state = _PathState(ident=ident, sock=sock)
            self._paths[binding.path] = state
        return state

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult:
        state = self._path(binding)
        state.seq = (state.seq + 1) & 0xFFFF
        seq = state.seq
        nonce = os.urandom(NONCE_BYTES)
        packet = bytes(ICMP(type=ECHO_REQUEST, id=state.ident, seq=seq) / Raw(nonce))
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        sent = time.perf_counter()
        state.pending[seq] = _Outstanding(nonce, sent, future)
        try:
            state.sock.sendto(packet, (self.target, 0))
        except OSError as exc:
            del state.pending[seq]
            return ProbeResult(self.kind, False, None, "unreachable", exc.strerror or str(exc))
        try:
            async with asyncio.timeout(deadline_s):
                rtt = await future
        except TimeoutError:
            return ProbeResult(self.kind, False, None, "timeout")
        finally:
            outstanding = state.pending.pop(seq, None)
            if outstanding is not None and not future.done():
                _remember(state.expired, seq, outstanding.nonce)
        return ProbeResult(self.kind, True, rtt, "ok")

    def _on_readable(self) -> None:
        assert self._receiver is not None
        now = time.perf_counter()
        while True:
            try:
                data = self._receiver.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._handle(data, now)

    def _handle(self, data: bytes, now: float) -> None:
        try:
            ip = IP(data)
            icmp = ip[ICMP]
            ident, seq, payload = int(icmp.id), int(icmp.seq), bytes(icmp.payload)
        except (IndexError, ValueError, TypeError):
            self.counters["malformed"] += 1
            return
        if icmp.type != ECHO_REPLY or ip.src != self.target:
            self.counters["foreign"] += 1
            return
        state = next((s for s in self._paths.values() if s.ident == ident), None)
        if state is None:
            self.counters["foreign"] += 1
            return
        nonce = payload[:NONCE_BYTES]
        outstanding = state.pending.get(seq)
        if outstanding is not None and outstanding.nonce == nonce:
            if not outstanding.future.done():
                outstanding.future.set_result(now - outstanding.sent)
            del state.pending[seq]
            _remember(state.answered, seq, None)
        elif state.expired.get(seq) == nonce:
            self.counters["late"] += 1
        elif seq in state.answered:
            self.counters["duplicate"] += 1
        else:
            self.counters["foreign"] += 1

    async def aclose(self) -> None:
        if self._receiver is not None:
            asyncio.get_running_loop().remove_reader(self._receiver.fileno())
            self._receiver.close()
            self._receiver = None
        for state in self._paths.values():
            state.sock.close()
        self._paths.clear()


def _remember(memory: OrderedDict[int, V], seq: int, value: V) -> None:
    memory[seq] = value
    memory.move_to_end(seq)
    while len(memory) > _LATE_MEMORY:
        memory.popitem(last=False)
