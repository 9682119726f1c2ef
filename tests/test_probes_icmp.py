"""The ICMP prober: packets, reply matching, the deadline race, the registry.

Parsing and matching run on crafted bytes (no sockets, no root); the round
trips to 127.0.0.1 need raw sockets and skip without root.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from collections.abc import Coroutine
from ipaddress import IPv4Address
from typing import Any, TypeVar

import pytest
from scapy.layers.inet import ICMP, IP, IPOption_EOL, IPOption_NOP
from scapy.packet import Raw

from netwatch.agent.probes import PathBinding, UnknownProbeKind, known_kinds, make_prober
from netwatch.agent.probes.http import HttpProber
from netwatch.agent.probes.icmp import (
    NONCE_BYTES,
    EchoMatcher,
    IcmpProber,
    Outstanding,
    build_echo_request,
    echo_template,
    internet_checksum,
    parse_icmp,
)
from netwatch.agent.probes.tcp import TcpProber
from netwatch.topology.model import Targets

T = TypeVar("T")
TARGET = IPv4Address("127.0.0.1")
NONCE = bytes(range(NONCE_BYTES))
IDENT = 0x1234
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def reply(
    ident: int = IDENT,
    seq: int = 1,
    nonce: bytes = NONCE,
    *,
    src: str = "127.0.0.1",
    icmp_type: int = 0,
    code: int = 0,
) -> bytes:
    packet = IP(src=src, dst="127.0.0.1") / ICMP(type=icmp_type, code=code, id=ident, seq=seq)
    return bytes(packet / Raw(nonce))


# --- building ------------------------------------------------------------------


def test_internet_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (carries folded).
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    assert internet_checksum(b"\x01") == internet_checksum(b"\x01\x00")  # padded
    assert internet_checksum(b"") == 0xFFFF


@pytest.mark.parametrize(
    ("ident", "seq", "nonce"),
    [
        (1, 1, NONCE),
        (0xFFFE, 0xFFFF, b"\xff" * NONCE_BYTES),  # carries to fold
        (0x8000, 0, bytes(NONCE_BYTES)),
        # A fresh nonce each run, under an id that does not show it: xdist's
        # workers must collect the same test ids.
        pytest.param(4242, 777, os.urandom(NONCE_BYTES), id="4242-777-random"),
    ],
)
def test_built_request_is_a_valid_echo_request(ident: int, seq: int, nonce: bytes) -> None:
    packet = bytes(build_echo_request(echo_template(), ident, seq, nonce))
    parsed = ICMP(packet)
    assert (parsed.type, parsed.code, parsed.id, parsed.seq) == (8, 0, ident, seq)
    assert bytes(parsed.payload) == nonce
    sent = parsed.chksum
    parsed.chksum = None  # scapy recomputes it when building
    assert ICMP(bytes(parsed)).chksum == sent
    assert internet_checksum(packet) == 0  # a correct checksum sums to all ones


def test_template_is_not_modified_by_building() -> None:
    template = echo_template()
    build_echo_request(template, 7, 7, NONCE)
    assert template == bytes(ICMP(type=8, id=0, seq=0, chksum=0) / Raw(bytes(NONCE_BYTES)))


# --- parsing -------------------------------------------------------------------


def test_parse_reply() -> None:
    message = parse_icmp(reply(IDENT, 9, NONCE, src="10.200.0.10"))
    assert message is not None
    assert message.source == IPv4Address("10.200.0.10").packed
    assert (message.icmp_type, message.code, message.ident, message.seq) == (0, 0, IDENT, 9)
    assert message.payload == NONCE


def test_parse_honours_the_ip_header_length() -> None:
    options = [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()]
    packet = IP(src="127.0.0.1", dst="127.0.0.1", options=options) / ICMP(type=0, id=5, seq=6)
    data = bytes(packet / Raw(NONCE))
    assert data[0] & 0x0F == 6  # 24-byte header
    message = parse_icmp(data)
    assert message is not None
    assert (message.ident, message.seq, message.payload) == (5, 6, NONCE)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        reply()[:19],  # shorter than an IP header
        reply()[:27],  # IP header, part of the ICMP header
        b"\x65" + reply()[1:],  # IP version 6
        b"\x44" + reply()[1:],  # IHL 4 (16 bytes)
        reply()[:9] + b"\x06" + reply()[10:],  # TCP, not ICMP
    ],
)
def test_parse_refuses_malformed_packets(data: bytes) -> None:
    assert parse_icmp(data) is None


# --- matching ------------------------------------------------------------------


def _expect(
    matcher: EchoMatcher, seq: int, nonce: bytes = NONCE, deadline_s: float = 1.0
) -> Outstanding:
    outstanding = matcher.expect(IDENT, seq, nonce, deadline_s)
    outstanding.sending_ns = outstanding.sent_ns = time.time_ns()
    outstanding.sent_perf = time.perf_counter()
    return outstanding


def _matcher() -> EchoMatcher:
    matcher = EchoMatcher(TARGET)
    matcher.add_ident(IDENT)
    return matcher


def _ignored(matcher: EchoMatcher) -> dict[str, int]:
    return {k: v for k, v in matcher.counters.items() if v}


def test_our_reply_answers_the_probe_and_a_copy_is_a_duplicate() -> None:
    async def main() -> None:
        matcher = _matcher()
        outstanding = _expect(matcher, 1)
        matcher.feed(reply(seq=1), None, time.perf_counter())
        assert outstanding.future.done()
        rtt = outstanding.future.result()
        assert rtt is not None
        assert 0 <= rtt < 1
        assert _ignored(matcher) == {}
        assert await matcher.wait(outstanding) == rtt  # already answered
        matcher.feed(reply(seq=1), None, time.perf_counter())
        assert _ignored(matcher) == {"duplicate": 1}

    run(main())


def test_reply_after_the_deadline_is_late() -> None:
    async def main() -> None:
        matcher = _matcher()
        outstanding = _expect(matcher, 1, deadline_s=0.01)
        assert await matcher.wait(outstanding) is None
        late: list[tuple[int, float]] = []
        matcher.on_late = lambda ident, rtt: late.append((ident, rtt))
        matcher.feed(reply(seq=1), None, time.perf_counter())
        matcher.feed(reply(seq=1), None, time.perf_counter())  # a second copy
        assert _ignored(matcher) == {"late": 1, "duplicate": 1}
        assert len(late) == 1
        assert late[0][1] >= 0.01  # its RTT: the path is slow, not silent

    run(main())


def test_cancelled_probe_makes_its_reply_late() -> None:
    async def main() -> None:
        matcher = _matcher()
        outstanding = _expect(matcher, 1)
        task = asyncio.ensure_future(matcher.wait(outstanding))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        matcher.feed(reply(seq=1), None, time.perf_counter())
        assert _ignored(matcher) == {"late": 1}

    run(main())


@pytest.mark.parametrize(
    ("data", "counter"),
    [
        (reply(ident=IDENT + 1), "foreign"),  # another identifier
        (reply(src="127.0.0.2"), "foreign"),  # another source
        (reply(nonce=b"\xee" * NONCE_BYTES), "foreign"),  # not our nonce
        (reply(seq=2), "foreign"),  # a sequence number we never sent
        (reply(icmp_type=8), "foreign"),  # an echo request
        (reply(icmp_type=3, code=1), "foreign"),  # destination unreachable
        (reply(nonce=NONCE[:4]), "malformed"),  # our identifier, payload cut short
        (reply()[:30], "malformed"),  # truncated in the payload
        (reply()[:25], "malformed"),  # truncated in the ICMP header
        (b"\x00" * 3, "malformed"),
    ],
)
def test_other_packets_are_counted_and_ignored(data: bytes, counter: str) -> None:
    async def main() -> None:
        matcher = _matcher()
        outstanding = _expect(matcher, 1)
        matcher.feed(data, None, time.perf_counter())
        assert not outstanding.future.done()
        assert _ignored(matcher) == {counter: 1}
        matcher.feed(reply(seq=1), None, time.perf_counter())  # the real reply still counts
        assert outstanding.future.done()
        assert outstanding.future.result() is not None
        assert _ignored(matcher) == {counter: 1}

    run(main())


def test_wrong_nonce_for_an_answered_probe_is_a_duplicate() -> None:
    # As before the rewrite: only the pending probe's nonce is checked.
    async def main() -> None:
        matcher = _matcher()
        _expect(matcher, 1)
        matcher.feed(reply(seq=1), None, time.perf_counter())
        matcher.feed(reply(seq=1, nonce=b"\xee" * NONCE_BYTES), None, time.perf_counter())
        assert _ignored(matcher) == {"duplicate": 1}

    run(main())


def test_rtt_comes_from_the_kernel_stamp() -> None:
    async def main() -> None:
        matcher = _matcher()
        outstanding = _expect(matcher, 1)
        stamp = outstanding.sent_ns + 5_000_000  # 5 ms after sending
        matcher.feed(reply(seq=1), stamp, outstanding.sent_perf + 0.5)  # read 500 ms later
        assert outstanding.future.result() == pytest.approx(0.005)

    run(main())


def test_stamp_after_the_deadline_is_late_even_if_read_first() -> None:
    async def main() -> None:
        matcher = _matcher()
        outstanding = _expect(matcher, 1, deadline_s=0.1)
        stamp = outstanding.sent_ns + 150_000_000
        matcher.feed(reply(seq=1), stamp, outstanding.sent_perf + 0.3)
        assert outstanding.future.result() is None
        assert _ignored(matcher) == {"late": 1}
        assert await matcher.wait(outstanding) is None

    run(main())


def test_reply_stamped_during_sendto_counts_from_its_start() -> None:
    # Loopback: the kernel delivers request and reply within the sendto call.
    async def main() -> None:
        matcher = _matcher()
        outstanding = _expect(matcher, 1)
        outstanding.sending_ns = outstanding.sent_ns - 10_000
        matcher.feed(reply(seq=1), outstanding.sent_ns - 4_000, outstanding.sent_perf + 0.25)
        assert outstanding.future.result() == pytest.approx(6e-6)

    run(main())


@pytest.mark.parametrize("offset_ns", [-1_000_000, 10_000_000_000])
def test_implausible_stamp_falls_back_to_perf_counter(offset_ns: int) -> None:
    async def main() -> None:
        matcher = _matcher()
        outstanding = _expect(matcher, 1)
        matcher.feed(reply(seq=1), outstanding.sent_ns + offset_ns, outstanding.sent_perf + 0.25)
        assert outstanding.future.result() == pytest.approx(0.25)

    run(main())


# --- the deadline race ---------------------------------------------------------


def test_reply_that_arrived_during_a_stall_beats_the_deadline() -> None:
    """The loop is blocked past the deadline while the reply arrives: when it
    runs again, the reader and the timer are both due, and the reply wins."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        matcher = _matcher()
        reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            reader.setblocking(False)
            loop.add_reader(
                reader.fileno(),
                lambda: matcher.feed(reader.recv(4096), None, time.perf_counter()),
            )

            def stall() -> None:  # the reply arrives while the loop is busy
                writer.send(reply(seq=1))
                time.sleep(0.2)

            outstanding = _expect(matcher, 1, deadline_s=0.05)
            waiting = asyncio.ensure_future(matcher.wait(outstanding))
            loop.call_soon(stall)
            rtt = await waiting
            assert rtt is not None  # no stamp here: the RTT includes the stall
            assert _ignored(matcher) == {}

            # Control: the same race under asyncio.timeout is lost to the timer.
            future: asyncio.Future[bytes] = loop.create_future()
            loop.remove_reader(reader.fileno())
            loop.add_reader(reader.fileno(), lambda: future.set_result(reader.recv(4096)))

            async def naive() -> None:
                async with asyncio.timeout(0.05):
                    await future

            control = asyncio.ensure_future(naive())
            loop.call_soon(stall)
            with pytest.raises(TimeoutError):
                await control
            assert future.done()  # the reply was there all along
        finally:
            loop.remove_reader(reader.fileno())
            reader.close()
            writer.close()

    run(main())


# --- real round trips (root) ------------------------------------------------------


@needs_root
def test_round_trip_to_loopback() -> None:
    async def main() -> None:
        prober = IcmpProber(TARGET)
        try:
            binding = PathBinding("lo", 0, TARGET)
            results = [await prober.probe(binding, 1.0) for _ in range(5)]
        finally:
            await prober.aclose()
        assert [r.outcome for r in results] == ["ok"] * 5
        assert all(r.ok and r.rtt_s is not None and 0 <= r.rtt_s < 1.0 for r in results)
        assert prober.counters == {"late": 0, "duplicate": 0, "foreign": 0, "malformed": 0}

    run(main())


@needs_root
def test_round_trip_survives_a_loop_stall() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        prober = IcmpProber(TARGET)
        binding = PathBinding("lo", 0, TARGET)
        try:
            assert (await prober.probe(binding, 1.0)).ok  # sockets open
            receiver = prober._receiver  # this module's own socket: the test waits on it
            assert receiver is not None

            def stall() -> None:
                # Block the loop once *this* reply is in the socket's buffer
                # (the loopback answer can itself be late on a busy machine;
                # a stray packet ahead of it is dropped), then well past the
                # deadline.
                end = time.monotonic() + 2.0
                while time.monotonic() < end:
                    if not select.select([receiver], [], [], 0.05)[0]:
                        continue
                    message = parse_icmp(receiver.recv(65535, socket.MSG_PEEK))
                    state = prober._paths["lo"]
                    if message is not None and (message.ident, message.seq) == (
                        state.ident,
                        state.seq,
                    ):
                        break
                    receiver.recv(65535)  # not ours: out of the way
                time.sleep(0.2)

            loop.call_soon(stall)  # runs right after the request is sent
            result = await prober.probe(binding, 0.05)
        finally:
            await prober.aclose()
        assert result.outcome == "ok"
        assert result.rtt_s is not None
        assert result.rtt_s < 0.05

    run(main())


@needs_root
def test_source_address_not_on_this_host() -> None:
    async def main() -> None:
        prober = IcmpProber(TARGET)
        try:
            result = await prober.probe(PathBinding("bad", 0, IPv4Address("192.0.2.1")), 0.5)
        finally:
            await prober.aclose()
        assert (result.ok, result.outcome) == (False, "no_source")
        assert result.detail == "source address 192.0.2.1 is not on this host"

    run(main())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open raw sockets")
def test_without_raw_sockets_a_probe_is_an_error() -> None:
    async def main() -> None:
        prober = IcmpProber(TARGET)
        try:
            result = await prober.probe(PathBinding("lo", 0, TARGET), 0.5)
        finally:
            await prober.aclose()
        assert (result.ok, result.outcome) == (False, "error")

    run(main())


# --- the registry ----------------------------------------------------------------

TARGETS = Targets.model_validate(
    {"icmp": "127.0.0.1", "tcp": "127.0.0.1:8080", "http": "http://127.0.0.1:8080/health"}
)


def test_registry_makes_each_kind() -> None:
    assert known_kinds() == ("http", "icmp", "tcp")
    assert isinstance(make_prober("icmp", TARGETS), IcmpProber)
    assert isinstance(make_prober("tcp", TARGETS), TcpProber)
    http = make_prober("http", TARGETS)
    assert isinstance(http, HttpProber)
    assert http.url == "http://127.0.0.1:8080/health"


def test_registry_refuses_an_unknown_kind() -> None:
    with pytest.raises(UnknownProbeKind, match=r"'dns'.*http, icmp, tcp") as info:
        make_prober("dns", TARGETS)
    assert isinstance(info.value, ValueError)
    assert (info.value.kind, info.value.known) == ("dns", ("http", "icmp", "tcp"))
