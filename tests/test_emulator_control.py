"""Control socket, both sides, without root: a real Unix socket, no TUNs.

The engine answers requests without touching its TUN fds, so it is built
with fds of -1 and its control server is driven by a small test loop.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from netwatch.emulator.control import (
    EmulatorClient,
    EmulatorRejected,
    EmulatorUnavailable,
)
from netwatch.emulator.engine import Engine
from netwatch.emulator.profile import Profile
from netwatch.emulator.server import ControlServer, ControlSocketInUse, remove_stale


class Served:
    def __init__(self, engine: Engine, path: str) -> None:
        self.engine = engine
        self.path = path
        self.client = EmulatorClient(path, timeout=2.0)

    def raw(self, payload: bytes, replies: int) -> list[bytes]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(self.path)
            sock.sendall(payload)
            buf = b""
            while buf.count(b"\n") < replies:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return buf.splitlines()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    path = str(tmp_path / "link.sock")
    engine = Engine(
        link="test-link",
        fd_a=-1,
        fd_b=-1,
        a_to_b=Profile(),
        b_to_a=Profile(delay_s=0.01),
        seed=1,
        control_path=path,
        info={"mtu": 1500},
    )
    ep = select.epoll()
    server = ControlServer(path, ep, engine.handle)
    server.open()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for fd, mask in ep.poll(0.02):
                server.on_event(fd, mask)

    thread = threading.Thread(target=loop, name="control-loop")
    thread.start()
    try:
        yield Served(engine, path)
    finally:
        stop.set()
        thread.join()
        server.close()
        ep.close()
        engine.close()


def test_socket_is_private(served: Served) -> None:
    assert stat.S_IMODE(os.stat(served.path).st_mode) == 0o600


def test_ping_and_get(served: Served) -> None:
    served.client.ping()
    state = served.client.get()
    assert state.link == "test-link"
    assert state.pid == os.getpid()
    assert state.a_to_b.profile == Profile()
    assert state.b_to_a.profile.delay_s == 0.01
    assert state.a_to_b.counters["packets_passed"] == 0
    assert {"dropped_loss", "dropped_cut", "dropped_queue", "queued_now"} <= set(
        state.b_to_a.counters
    )


def test_set_one_direction_keeps_other_fields(served: Served) -> None:
    state = served.client.set("b_to_a", loss=0.25)
    assert state.b_to_a.profile == Profile(delay_s=0.01, loss=0.25)
    assert state.a_to_b.profile == Profile()


def test_set_both_with_profile_mapping(served: Served) -> None:
    state = served.client.set("both", {"rate_bps": 1_000_000, "queue_packets": 5})
    for d in (state.a_to_b, state.b_to_a):
        assert (d.profile.rate_bps, d.queue_limit) == (1_000_000, 5)


def test_bad_set_changes_nothing(served: Served) -> None:
    with pytest.raises(EmulatorRejected, match=r"loss must be in 0\.\.1"):
        served.client.set("both", delay_s=0.5, loss=2.0)
    assert served.client.get().a_to_b.profile == Profile()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"op": "set", "direction": "up", "profile": {}}, "direction must be"),
        ({"op": "set", "direction": "both"}, "needs a profile"),
        ({"op": "set", "profile": {}, "extra": 1}, "unknown request field"),
        ({"op": "reboot"}, "unknown op"),
        ({}, "unknown op"),
    ],
)
def test_bad_requests_are_answered(
    served: Served, request_: dict[str, object], message: str
) -> None:
    reply = served.client.request(request_)
    assert reply["ok"] is False
    assert message in reply["error"]


def test_garbage_does_not_break_the_connection(served: Served) -> None:
    lines = served.raw(b'not json\n[1]\n{"op":"ping"}\n', replies=3)
    assert [b'"ok":false' in line for line in lines] == [True, True, False]
    assert b'"ok":true' in lines[2]


def test_overlong_request_is_refused(served: Served) -> None:
    lines = served.raw(b"x" * (70 * 1024), replies=1)
    assert b"longer than" in lines[0]
    served.client.ping()  # the server is still fine


def test_cut_drops_held_packets_before_replying(served: Served) -> None:
    d = served.engine.dirs["b_to_a"]
    for i in range(3):  # as if three packets sat in the 10 ms delay line
        d.times.append(1e9 + i)
        d.packets.append(b"\x45" + bytes(27))
    assert served.client.get().b_to_a.counters["queued_now"] == 3
    state = served.client.cut("b_to_a")
    assert state.b_to_a.counters["queued_now"] == 0
    assert state.b_to_a.counters["dropped_cut"] == 3
    assert state.b_to_a.profile.cut
    assert not state.a_to_b.profile.cut
    assert not served.client.restore().b_to_a.profile.cut


def test_shutdown_request_stops_the_engine(served: Served) -> None:
    served.client.shutdown()
    assert served.engine.stopping


def test_missing_socket_is_unavailable(tmp_path: Path) -> None:
    client = EmulatorClient(str(tmp_path / "none.sock"), timeout=0.2)
    with pytest.raises(EmulatorUnavailable):
        client.ping()
    with pytest.raises(EmulatorUnavailable, match="not ready within"):
        client.wait_ready(0.1, interval=0.01)


def test_wait_ready_stops_when_process_died(tmp_path: Path) -> None:
    client = EmulatorClient(str(tmp_path / "none.sock"), timeout=0.2)
    with pytest.raises(EmulatorUnavailable, match="exited"):
        client.wait_ready(30.0, alive=lambda: False)


def test_silent_server_times_out(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(path)
        mute.listen(1)
        with pytest.raises(EmulatorUnavailable, match="no reply"):
            EmulatorClient(path, timeout=0.2).ping()


def test_remove_stale(tmp_path: Path) -> None:
    stale = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(stale)  # bound, never listening: what a killed process leaves
    remove_stale(stale)
    assert not os.path.exists(stale)

    live = str(tmp_path / "live.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(live)
        sock.listen(1)
        with pytest.raises(ControlSocketInUse, match="in use"):
            remove_stale(live)

    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(ControlSocketInUse, match="not a socket"):
        remove_stale(str(regular))
    assert regular.read_text() == "keep me"
