"""Maintenance holds through the agent: the runner on virtual time (the
fakes of test_agent_runner), the control protocol's answers, and the unix
socket itself with a real client."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_agent_runner import FAST, World, scenario

from netwatch import messages
from netwatch.agent import control
from netwatch.errors import UserError
from netwatch.health import HoldRefused

E = messages.EventType


def _ask(server: control.ControlServer, request: dict[str, Any]) -> Any:
    return server.handle(json.dumps(request).encode())


def test_a_hold_moves_the_routes_keeps_them_and_expires_into_a_failback() -> None:
    replies: list[dict[str, Any]] = []

    async def body(w: World) -> None:
        server = control.ControlServer(w.agent, Path("/nonexistent"))
        reply = await _ask(
            server, {"cmd": "hold", "path": "backup", "seconds": 20, "reason": "LGWAN work"}
        )
        replies.append(reply)
        assert w.kernel.via() == "backup"  # the answer comes once the routes follow
        held = w.sink.states[-1][1].hold
        assert held is not None
        assert (held.path, held.reason) == ("backup", "LGWAN work")
        # The primary is up all along, far beyond the 3 s hold-down: still held.
        await w.hold(15.0, lambda: w.kernel.via() == "backup", "held on the backup")
        await w.until(lambda: w.kernel.via() == "primary", 10.0, "the end of the hold")
        assert w.agent.selector.hold is None

    w = scenario(body)
    reply = replies[0]
    assert reply["ok"]
    assert reply["routes_follow"] is True
    assert (reply["active"], reply["applied"]) == ("backup", "backup")
    kinds = w.sink.kinds()
    assert kinds.index(E.HOLD) < kinds.index(E.FAILOVER) < kinds.index(E.HOLD_RELEASED)
    assert kinds.index(E.HOLD_RELEASED) < kinds.index(E.FAILBACK)
    _, moved = w.sink.first(E.FAILOVER)
    assert moved.details == {"kind": "hold"}
    _, released = w.sink.first(E.HOLD_RELEASED)
    assert (released.path, released.reason) == ("backup", "expired after 20s")
    assert w.sink.states[-1][1].hold is None


def test_a_held_path_that_fails_ends_the_hold_and_the_town_fails_over() -> None:
    async def body(w: World) -> None:
        w.agent.place_hold("backup", 600.0, "test", "pytest")
        await w.until(lambda: w.kernel.via() == "backup", 2.0, "the hold")
        w.net.cut.add("backup")
        await w.until(lambda: w.kernel.via() == "primary", 2.0, "the failover off the hold")

    w = scenario(body)
    _, released = w.sink.first(E.HOLD_RELEASED)
    assert released.reason.startswith("backup is down")
    assert w.agent.selector.hold is None


def test_a_hold_is_in_the_metrics_while_it_stands() -> None:
    values: list[float | None] = []

    async def body(w: World) -> None:
        status = w.agent.place_hold("backup", 60.0, "test", "pytest")
        registry = w.agent.metrics.registry
        values.append(
            registry.get_sample_value("netwatch_held", {"town": "nishiki", "path": "backup"})
        )
        values.append(
            registry.get_sample_value("netwatch_hold_expiry_timestamp_seconds", {"town": "nishiki"})
        )
        values.append(status.until.timestamp())
        w.agent.release_hold("pytest")
        values.append(
            registry.get_sample_value("netwatch_held", {"town": "nishiki", "path": "backup"})
        )

    scenario(body)
    assert values[0] == 1.0
    assert values[1] == pytest.approx(values[2])
    assert values[3] is None


def test_release_only_by_leaves_someone_elses_hold_alone() -> None:
    async def body(w: World) -> None:
        server = control.ControlServer(w.agent, Path("/nonexistent"))
        w.agent.place_hold("backup", 600.0, "operator's work", "alice@ops")
        reply = await _ask(server, {"cmd": "release", "by": "loadprobe", "only_by": "loadprobe"})
        assert reply["ok"]
        assert reply["released"] is None
        assert w.agent.selector.hold is not None
        reply = await _ask(server, {"cmd": "release", "by": "alice@ops"})
        assert reply["released"]["by"] == "alice@ops"
        assert w.agent.selector.hold is None

    scenario(body)


def test_refusals_are_one_line_answers() -> None:
    answers: list[dict[str, Any]] = []

    async def body(w: World) -> None:
        server = control.ControlServer(w.agent, Path("/nonexistent"))
        w.net.cut.add("backup")
        await w.until(lambda: not w.agent.health["backup"].state.carries_traffic, 3.0, "down")
        for line in (
            b"not json",
            b"[1]",
            json.dumps({"cmd": "reboot"}).encode(),
            json.dumps({"cmd": "hold", "seconds": 5}).encode(),
            json.dumps({"cmd": "hold", "path": "backup", "seconds": -1}).encode(),
            json.dumps({"cmd": "hold", "path": "backup", "seconds": 5}).encode(),
            json.dumps({"cmd": "hold", "path": "moon", "seconds": 5}).encode(),
            json.dumps({"cmd": "hold", "path": "primary", "seconds": 1e9}).encode(),
        ):
            answers.append(await server.handle(line))

    scenario(body)
    errors = [a["error"] for a in answers]
    assert all(not a["ok"] for a in answers)
    assert errors[0] == errors[1] == "a request is one JSON object on one line"
    assert errors[2] == "unknown command 'reboot' (show, hold, release, events)"
    assert errors[3] == "hold: which path?"
    assert errors[4] == "hold: seconds must be a positive number"
    assert errors[5].startswith("backup is down")
    assert errors[6].startswith("no path 'moon'")
    assert errors[7] == "hold: at most 7 days"
    assert all("\n" not in e for e in errors)


def test_events_since_returns_the_agents_own_account() -> None:
    found: list[dict[str, Any]] = []

    async def body(w: World) -> None:
        server = control.ControlServer(w.agent, Path("/nonexistent"))
        mark = messages.format_ts(w.agent.clock.wall(w.now()))
        w.net.cut.add("primary")
        await w.until(lambda: w.kernel.via() == "backup", 2.0, "the failover")
        reply = await _ask(server, {"cmd": "events", "since": mark})
        found.extend(reply["events"])

    scenario(body)
    kinds = [e["event"] for e in found]
    assert "agent_start" not in kinds  # before the mark
    assert {"path_down", "failover", "routes_applied"} <= set(kinds)
    failover = next(e for e in found if e["event"] == "failover")
    assert failover["duration_s"] > 0


def test_place_hold_raises_for_a_dead_path() -> None:
    async def body(w: World) -> None:
        w.net.cut.add("backup")
        await w.until(lambda: not w.agent.health["backup"].state.carries_traffic, 3.0, "down")
        with pytest.raises(HoldRefused):
            w.agent.place_hold("backup", 60.0, "x", "y")

    scenario(body, policy=FAST)


# --- the socket ----------------------------------------------------------------------------


class _StubAgent:
    """Enough of an agent for the transport: the protocol is tested above."""

    started = True

    def __init__(self) -> None:
        self.requests: list[str] = []


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "agent.sock"
    ready = threading.Event()
    stop: list[asyncio.Event] = []

    class Server(control.ControlServer):
        async def handle(self, line: bytes) -> dict[str, Any]:
            return {"ok": True, "echo": json.loads(line)}

    async def main() -> None:
        stop.append(asyncio.Event())
        async with Server(_StubAgent(), path):  # type: ignore[arg-type]
            ready.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the control server did not start"
    try:
        yield path
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


def test_the_socket_is_for_root_and_the_group_only(served: Path) -> None:
    mode = stat.S_IMODE(os.stat(served).st_mode)
    assert mode == 0o660
    assert control.request(served, {"cmd": "show"}) == {"ok": True, "echo": {"cmd": "show"}}


def test_a_second_agent_cannot_take_a_socket_in_use(served: Path) -> None:
    async def main() -> None:
        async with control.ControlServer(_StubAgent(), served):  # type: ignore[arg-type]
            pass

    with pytest.raises(UserError, match="in use"):
        asyncio.run(main())


def test_a_stale_socket_of_a_killed_agent_is_replaced(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # bound, never listening: what a SIGKILL leaves
    assert path.is_socket()

    async def main() -> bool:
        async with control.ControlServer(_StubAgent(), path):  # type: ignore[arg-type]
            return path.is_socket()

    assert asyncio.run(main())
    assert not path.exists()  # removed on exit


def test_the_client_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(control.ControlError, match="is the agent running"):
        control.request(tmp_path / "none.sock", {"cmd": "show"})
