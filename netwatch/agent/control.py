"""The agent's local control socket: JSON lines over a unix socket.

One request per connection, one answer line back::

    {"cmd": "show"}
    {"cmd": "hold", "path": "backup", "seconds": 600, "reason": "...", "by": "root@edge"}
    {"cmd": "release", "by": "root@edge", "only_by": "loadprobe:4711"}   only_by optional
    {"cmd": "events", "since": "2026-12-01T02:00:00.000Z"}               since optional

Every answer has ``ok``; a refusal has ``error`` (one line, for people).
The socket is the agent's only way in: it is created mode 0660 (root, or
the group given), so only root and the agent's group can hold a town.
A hold answers once the routes follow it (or after `APPLY_WAIT_S`, saying
so), so a load test that asked for the backup starts on the backup.

`request` is the blocking client for the commands (`netwatch hold`,
loadprobe, drills); it raises `ControlError` with a one-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netwatch import messages
from netwatch.errors import UserError
from netwatch.health import HoldRefused

if TYPE_CHECKING:
    from netwatch.agent.runner import Agent
    from netwatch.topology import Topology

log = logging.getLogger("netwatch.agent")

DEFAULT_DIR = "/run/netwatch"
APPLY_WAIT_S = 5.0  # a hold waits this long for the routes to follow
MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT_S = 10.0
MAX_HOLD_S = 7 * 86400.0  # a hold nobody releases still ends within a week


class ControlError(UserError):
    """The agent could not be asked, or said no."""


def default_socket(town: str) -> Path:
    return Path(DEFAULT_DIR) / f"agent-{town}.sock"


def find_socket(
    topo: Topology, town: str, given: str | None = None, *, lab_run_dir: str | None = None
) -> Path:
    """The control socket of `town`'s agent: `given`, else the one on this
    host (`/run/netwatch/agent-TOWN.sock`), else the lab's (in `lab_run_dir`,
    default topology.yaml's lab.run_dir), if it exists."""
    if given:
        return Path(given)
    host = default_socket(town)
    if host.exists():
        return host
    from netwatch.lab.rundir import RunDir

    lab = RunDir.of(lab_run_dir or topo.lab.run_dir).agent_control(town)
    return lab if lab.exists() else host


def agent_running(path: Path) -> bool:
    """Whether an agent answers on `path`."""
    try:
        request(path, {"cmd": "show"}, timeout=2.0)
    except ControlError:
        return False
    return True


def request(path: Path, message: dict[str, Any], *, timeout: float = REQUEST_TIMEOUT_S) -> Any:
    """Send one request; the answer's fields.  `ControlError` when nobody
    answers or the agent refuses."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            with sock.makefile("rb") as answer:
                line = answer.readline(MAX_REQUEST)
    except FileNotFoundError:
        raise ControlError(f"no agent control socket at {path} (is the agent running?)") from None
    except PermissionError:
        raise ControlError(f"{path}: permission denied (root or the agent's group only)") from None
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(line)
    except json.JSONDecodeError:
        raise ControlError(f"{path}: the agent gave no answer") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: unexpected answer {line[:80]!r}")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error") or "refused"))
    return reply


class ControlServer:
    """Serves one agent's control socket (an async context manager)."""

    def __init__(self, agent: Agent, path: Path, *, group: str | None = None) -> None:
        self.agent = agent
        self.path = path
        self.group = group
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ControlServer:
        gid = -1
        if self.group is not None:
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise UserError(f"--control-group: no group {self.group!r}") from None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_socket() and not agent_running(self.path):
                self.path.unlink()  # a stale socket from a killed agent
            elif self.path.exists():
                raise UserError(f"--control-socket {self.path}: in use (another agent?)")
            old = os.umask(0o117)  # created 0660: root and the group only
            try:
                self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
            finally:
                os.umask(old)
            if gid != -1:
                os.chown(self.path, -1, gid)
        except OSError as exc:
            raise UserError(f"--control-socket {self.path}: {exc.strerror or exc}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                line = await reader.readline()
                reply = await self.handle(line)
                writer.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass  # a client that went away or sent too much: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _refuse("a request is one JSON object on one line")
        if not isinstance(message, dict):
            return _refuse("a request is one JSON object on one line")
        cmd = message.get("cmd")
        if not self.agent.started:
            return _refuse("the agent is starting: ask again in a second")
        try:
            if cmd == "show":
                return {"ok": True, **self.show()}
            if cmd == "hold":
                return await self._hold(message)
            if cmd == "release":
                return self._release(message)
            if cmd == "events":
                return self._events(message)
        except (HoldRefused, ValueError, TypeError) as exc:
            return _refuse(str(exc))
        return _refuse(f"unknown command {cmd!r} (show, hold, release, events)")

    def show(self) -> dict[str, Any]:
        agent = self.agent
        state = agent.state_message(agent.clock.now()).to_dict()
        return {
            "town": agent.town.id,
            "active": state["active_path"],
            "applied": agent.applied,
            "all_down": state["all_down"],
            "routes_in_sync": agent.routes_in_sync,
            "paths": state["paths"],
            "hold": state["hold"],
            "primary": agent.town.primary.name,
            "holddown_s": agent.policy.failback_holddown,
            "route_backend": agent.backend.name,
            "ts": state["ts"],
        }

    async def _hold(self, message: dict[str, Any]) -> dict[str, Any]:
        path, seconds = message.get("path"), message.get("seconds")
        reason, by = message.get("reason") or "maintenance", message.get("by") or "unknown"
        if not isinstance(path, str):
            return _refuse("hold: which path?")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
            return _refuse("hold: seconds must be a positive number")
        if seconds > MAX_HOLD_S:
            return _refuse(f"hold: at most {MAX_HOLD_S / 86400:g} days")
        status = self.agent.place_hold(path, float(seconds), str(reason), str(by))
        applied = await self._wait_applied(path)
        return {**self.show(), "ok": True, "hold": status.to_dict(), "routes_follow": applied}

    async def _wait_applied(self, path: str) -> bool:
        agent = self.agent
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPLY_WAIT_S
        while loop.time() < deadline:
            if agent.applied == path and agent.selector.active == path:
                return True
            await asyncio.sleep(0.01)
        return False

    def _release(self, message: dict[str, Any]) -> dict[str, Any]:
        by = str(message.get("by") or "unknown")
        only_by = message.get("only_by")
        ended = self.agent.release_hold(by, only_by=only_by if isinstance(only_by, str) else None)
        return {**self.show(), "ok": True, "released": None if ended is None else ended.to_dict()}

    def _events(self, message: dict[str, Any]) -> dict[str, Any]:
        since = message.get("since")
        after = messages.parse_ts(since) if isinstance(since, str) else None
        events = [e.to_dict() for e in self.agent.recent_events if after is None or e.ts >= after]
        return {"ok": True, "events": events}


def _refuse(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}
