"""The emulator between two real namespaces (root, TUN, ``ip netns``).

One emulator process serves the whole module; each test starts from a
clean profile. UDP echo is done in-process: one socket in each namespace,
the test itself bounces the datagram, so there is no server to manage.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from netwatch.emulator.harness import ScratchLink, start_scratch_link
from netwatch.emulator.netns import socket_in
from netwatch.emulator.profile import Profile

pytestmark = pytest.mark.lab

ECHO_PORT = 7007
DEFAULTS = Profile().to_json()


def _require_lab() -> None:
    if os.geteuid() != 0:
        pytest.skip("lab test needs root (network namespaces, TUN devices)")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("lab test needs /dev/net/tun")


@pytest.fixture(scope="module")
def link() -> Iterator[ScratchLink]:
    _require_lab()
    scratch = start_scratch_link(seed=1234)
    try:
        yield scratch
    finally:
        scratch.close()  # stops the process, deletes namespaces, even on failure


@pytest.fixture(autouse=True)
def clean_profile(link: ScratchLink) -> None:
    link.client.set("both", DEFAULTS)


class Echo:
    """A UDP socket in each namespace; the test plays the echo server."""

    def __init__(self, link: ScratchLink) -> None:
        self.dst = (link.addr_b, ECHO_PORT)
        self.a = socket_in(link.ns_a)
        self.b = socket_in(link.ns_b)
        self.a.bind((link.addr_a, 0))
        self.b.bind(self.dst)
        self.seq = 0

    def close(self) -> None:
        self.a.close()
        self.b.close()

    def send(self) -> bytes:
        self.seq += 1
        payload = self.seq.to_bytes(8, "big")
        self.a.sendto(payload, self.dst)
        return payload

    def arrives(
        self, sock: socket.socket, payload: bytes, timeout: float
    ) -> tuple[bool, tuple[str, int] | None]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                break
            if data == payload:  # ignore stragglers from earlier probes
                return True, peer
        return False, None

    def rtt(self, timeout: float = 0.5) -> float | None:
        """Round trip of one probe in seconds, None if it was lost."""
        start = time.monotonic()
        payload = self.send()
        ok, peer = self.arrives(self.b, payload, timeout)
        if not ok:
            return None
        assert peer is not None
        self.b.sendto(payload, peer)
        ok, _ = self.arrives(self.a, payload, timeout)
        return time.monotonic() - start if ok else None


@pytest.fixture
def echo(link: ScratchLink) -> Iterator[Echo]:
    e = Echo(link)
    try:
        yield e
    finally:
        e.close()


def counters(link: ScratchLink, direction: str) -> dict[str, int]:
    state = link.client.get()
    return dict(state.a_to_b.counters if direction == "a_to_b" else state.b_to_a.counters)


def test_udp_echo_crosses_the_link(link: ScratchLink, echo: Echo) -> None:
    before = counters(link, "a_to_b")["packets_passed"]
    rtts = [echo.rtt() for _ in range(5)]
    assert all(r is not None for r in rtts)
    assert counters(link, "a_to_b")["packets_passed"] - before == 5


def test_delay_gives_the_configured_rtt(link: ScratchLink, echo: Echo) -> None:
    link.client.set("both", delay_s=0.02)
    rtts = [echo.rtt() for _ in range(20)]
    measured = [r for r in rtts if r is not None]
    assert len(measured) == 20
    assert min(measured) >= 0.0399
    assert statistics.median(measured) <= 0.043


def test_cut_stops_at_once_and_uncut_restores(link: ScratchLink, echo: Echo) -> None:
    assert echo.rtt() is not None
    before = counters(link, "a_to_b")["dropped_cut"]
    link.client.cut()
    payload = echo.send()  # the very next packet after the reply
    assert echo.arrives(echo.b, payload, 0.2) == (False, None)
    assert counters(link, "a_to_b")["dropped_cut"] == before + 1
    link.client.restore()
    assert echo.rtt() is not None


def test_cut_drops_packets_in_the_delay_line(link: ScratchLink, echo: Echo) -> None:
    link.client.set("a_to_b", delay_s=0.3)
    payloads = [echo.send() for _ in range(5)]
    deadline = time.monotonic() + 1.0
    while counters(link, "a_to_b")["queued_now"] < 5:  # all five are held
        assert time.monotonic() < deadline
        time.sleep(0.005)
    state = link.client.cut("a_to_b")
    assert state.a_to_b.counters["queued_now"] == 0
    assert state.a_to_b.counters["dropped_cut"] >= 5
    assert echo.arrives(echo.b, payloads[-1], 0.4) == (False, None)


def test_one_way_cut_stops_the_echo(link: ScratchLink, echo: Echo) -> None:
    link.client.cut("b_to_a")
    before = counters(link, "a_to_b")["packets_passed"]
    assert echo.rtt(timeout=0.2) is None
    assert counters(link, "a_to_b")["packets_passed"] == before + 1  # request got there
    assert counters(link, "b_to_a")["dropped_cut"] >= 1  # the reply did not
    link.client.restore("b_to_a")
    assert echo.rtt() is not None


def test_loss_is_counted(link: ScratchLink, echo: Echo) -> None:
    link.client.set("a_to_b", loss=0.5)
    before = counters(link, "a_to_b")
    sent = 400
    for _ in range(sent):
        echo.send()
    received = 0
    echo.b.settimeout(0.2)
    while True:
        try:
            echo.b.recv(2048)
        except TimeoutError:
            break
        received += 1
    after = counters(link, "a_to_b")
    lost = after["dropped_loss"] - before["dropped_loss"]
    passed = after["packets_passed"] - before["packets_passed"]
    assert lost + passed == sent
    assert passed == received
    assert 0.4 < lost / sent < 0.6


def _transfer(link: ScratchLink, size: int) -> tuple[float, bytes]:
    """Send ``size`` random bytes A -> B over TCP; (seconds, digest received)."""
    data = os.urandom(size)
    listener = socket_in(link.ns_b, kind=socket.SOCK_STREAM)
    digest = hashlib.sha256()
    done = threading.Event()

    def receive() -> None:
        conn, _ = listener.accept()
        with conn:
            while chunk := conn.recv(65536):
                digest.update(chunk)
        done.set()

    try:
        listener.bind((link.addr_b, 0))
        listener.listen(1)
        listener.settimeout(10)
        receiver = threading.Thread(target=receive, name="tcp-receiver")
        receiver.start()
        start = time.monotonic()
        with socket_in(link.ns_a, kind=socket.SOCK_STREAM) as sender:
            sender.settimeout(10)
            sender.connect(listener.getsockname())
            sender.sendall(data)
        receiver.join(timeout=15)
        assert done.is_set()
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    assert digest.digest() == hashlib.sha256(data).digest()
    return elapsed, digest.digest()


def test_tcp_survives_delay_and_loss(link: ScratchLink) -> None:
    link.client.set("both", delay_s=0.005, loss=0.01)
    _transfer(link, 1_000_000)
    assert counters(link, "a_to_b")["dropped_loss"] > 0


def test_rate_limit_paces_tcp(link: ScratchLink) -> None:
    link.client.set("a_to_b", rate_bps=8_000_000)
    before = counters(link, "a_to_b")
    elapsed, _ = _transfer(link, 1_000_000)
    after = counters(link, "a_to_b")
    ip_bytes = after["bytes_passed"] - before["bytes_passed"]
    # 1 MB of payload plus headers at 8 Mbit/s takes just over one second.
    assert ip_bytes * 8 / elapsed <= 8_000_000 * 1.02
    assert elapsed < 2.0


def test_sigterm_removes_socket_and_devices() -> None:
    _require_lab()
    scratch = start_scratch_link()
    try:
        assert scratch.proc is not None
        os.kill(scratch.pid, signal.SIGTERM)
        assert scratch.proc.wait(timeout=5) == 0
        assert not os.path.exists(scratch.control)
        links = subprocess.run(
            ["ip", "-n", scratch.ns_a, "-o", "link"], capture_output=True, text=True, check=True
        ).stdout
        assert "lnk0" not in links  # non-persistent TUN: gone with its process
    finally:
        scratch.close()
