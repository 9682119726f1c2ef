"""Fuzzing the ICMP reply parsers: the agent's prober (`parse_icmp`,
`EchoMatcher.feed`, the kernel timestamp's `_receive_stamp`) and the drill
observer's reader, which uses `parse_icmp` itself.  Any bytes give a parsed
reply or None (counted and ignored by the matcher), never an exception; and
only a reply carrying an outstanding probe's identifier, sequence number and
nonce, from the target, ever answers that probe.

Inputs: arbitrary bytes, and IPv4 packets built field by field (version,
header length, protocol, source, ICMP type, identifier, sequence, nonce,
truncated anywhere) around the probes in flight.

Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from ipaddress import IPv4Address
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from netwatch.agent.probes.icmp import (
    ECHO_REPLY,
    NONCE_BYTES,
    SCM_TIMESTAMPNS,
    EchoMatcher,
    IcmpMessage,
    _receive_stamp,
    parse_icmp,
)
from netwatch.drill.observer import Observer

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None)

TARGET = IPv4Address("10.200.0.10")
OTHER = IPv4Address("10.200.0.11")
IDENTS = (0x1234, 0x4321)
NONCES = (bytes(range(NONCE_BYTES)), bytes(range(1, NONCE_BYTES + 1)))


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    """An IPv4 packet built field by field: half of them a well-formed echo
    reply (to a probe in flight or not), the others off in any field."""
    faithful = draw(st.booleans())

    def field(good: int | bytes, *bad: int | bytes) -> int | bytes:
        return good if faithful else draw(st.sampled_from([good, *bad]))

    version = cast(int, field(4, 6, 0, 15))
    ihl = cast(int, field(5, 6, 15, 0, 4))
    protocol = cast(int, field(socket.IPPROTO_ICMP, 6, 17, 0, 255))
    source = cast(bytes, field(TARGET.packed, OTHER.packed))
    header = struct.pack("!B8xB2x4s4x", version << 4 | ihl, protocol, source)
    options = draw(st.binary(min_size=max(0, ihl * 4 - 20), max_size=max(0, ihl * 4 - 20)))
    icmp_type = cast(int, field(ECHO_REPLY, 8, 3, 11, 255))
    if draw(st.booleans()):  # aimed at a probe in flight (seq 1-3 of either identifier)
        i = draw(st.sampled_from([0, 1]))
        ident, seq, nonce = (
            IDENTS[i],
            draw(st.integers(0, 4)),
            NONCES[draw(st.sampled_from([i, 1 - i]))],
        )
    else:
        ident = draw(st.sampled_from(IDENTS) | st.integers(0, 0xFFFF))
        seq = draw(st.integers(0, 0xFFFF))
        nonce = draw(st.binary(max_size=NONCE_BYTES + 4))
    icmp = struct.pack("!BBHHH", icmp_type, draw(st.integers(0, 255)), 0, ident, seq) + nonce
    packet = header + options + icmp + draw(st.binary(max_size=8))
    cut = None if faithful else draw(st.none() | st.integers(0, len(packet)))
    return packet if cut is None else packet[:cut]


any_packet = st.binary(max_size=80) | packets()


# --- parse_icmp ------------------------------------------------------------------


@FUZZ
@given(any_packet, st.sampled_from([bytes, bytearray, memoryview]))
def test_any_bytes_parse_to_a_message_or_none(packet: bytes, kind: type) -> None:
    message = parse_icmp(kind(packet))
    if message is None:
        return
    assert isinstance(message, IcmpMessage)
    offset = (packet[0] & 0x0F) * 4
    assert packet[0] >> 4 == 4
    assert offset >= 20
    assert packet[9] == socket.IPPROTO_ICMP
    assert len(packet) >= offset + 8
    assert message.source == packet[12:16]
    assert (message.icmp_type, message.code) == (packet[offset], packet[offset + 1])
    assert 0 <= message.ident <= 0xFFFF
    assert 0 <= message.seq <= 0xFFFF
    assert message.payload == packet[offset + 8 : offset + 8 + NONCE_BYTES]


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from([socket.SOL_SOCKET, 0, 41]),
            st.sampled_from([SCM_TIMESTAMPNS, 29, 0]),
            st.binary(max_size=24),
        ),
        max_size=3,
    )
)
def test_any_ancillary_data_gives_a_stamp_or_none(ancillary: list[tuple[int, int, bytes]]) -> None:
    stamp = _receive_stamp(ancillary)
    assert stamp is None or isinstance(stamp, int)


# --- EchoMatcher.feed -------------------------------------------------------------


@settings(FUZZ, max_examples=80)
@given(
    st.lists(
        st.tuples(any_packet, st.none() | st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=8
    )
)
def test_only_a_true_reply_answers_a_probe_and_anything_else_is_counted(
    fed: list[tuple[bytes, int | None]],
) -> None:
    async def scenario() -> None:
        matcher = EchoMatcher(TARGET)
        pending = {}
        for ident, nonce in zip(IDENTS, NONCES, strict=True):
            matcher.add_ident(ident)
            for seq in (1, 2, 3):
                probe = matcher.expect(ident, seq, nonce, deadline_s=1.0)
                probe.sending_ns, probe.sent_ns = 1_000, 2_000
                pending[(ident, seq)] = probe
        for packet, stamp in fed:
            before = sum(matcher.counters.values())
            done = {key for key, probe in pending.items() if probe.future.done()}
            matcher.feed(packet, stamp, now=0.5)
            answered = {k for k, p in pending.items() if p.future.done()} - done
            counted = sum(matcher.counters.values()) - before
            assert (counted, len(answered)) in ((1, 0), (0, 1)), (counted, answered)
            for ident, seq in answered:
                message = parse_icmp(packet)
                assert message is not None
                assert message.icmp_type == ECHO_REPLY
                assert message.source == TARGET.packed
                assert (message.ident, message.seq) == (ident, seq)
                assert message.payload == NONCES[IDENTS.index(ident)]
        for probe in pending.values():
            probe.future.cancel()

    asyncio.run(scenario())


# --- the drill observer's reader ------------------------------------------------------


class _Socket:
    """What the observer's ICMP socket reads: the given packets, then nothing."""

    def __init__(self, packets: list[bytes]) -> None:
        self.packets = list(packets)

    def recv(self, size: int) -> bytes:
        if not self.packets:
            raise BlockingIOError
        return self.packets.pop(0)[:size]


@FUZZ
@given(st.lists(any_packet, max_size=6))
def test_the_observer_records_only_its_own_echoes(fed: list[bytes]) -> None:
    observer = Observer(None, str(TARGET), 8080)
    observer._ident = IDENTS[0]
    observer._icmp = cast(socket.socket, _Socket(fed))
    echoes = {seq: 100.0 + seq for seq in (1, 2, 3)}
    observer._read_icmp(echoes, NONCES[0], at=200.0)
    answered = {1, 2, 3} - set(echoes)
    ours = set()
    for packet in fed:
        message = parse_icmp(packet)
        if (
            message is not None
            and message.icmp_type == ECHO_REPLY
            and message.ident == IDENTS[0]
            and message.payload == NONCES[0]
        ):
            ours.add(message.seq)
    assert answered == ours & {1, 2, 3}
    rtts = sorted(p.rtt for p in observer.probes("icmp") if p.rtt is not None)
    assert rtts == sorted(100.0 - seq for seq in answered)
