"""Client for an emulator's control socket (what the lab orchestrator uses).

Protocol: one JSON object per line each way over a Unix stream socket.
Requests: ``{"op": "ping"}``, ``{"op": "get"}``,
``{"op": "set", "direction": "a_to_b"|"b_to_a"|"both", "profile": {...}}``
(fields not given keep their value), ``{"op": "shutdown"}``. Replies carry
``"ok": true`` or ``"ok": false, "error": "..."``.

Exceptions::

    EmulatorError                 base of everything raised here
     ├── EmulatorUnavailable      no answer: socket missing, refused, timeout,
     │                            closed early, or not a JSON line
     └── EmulatorRejected         the emulator answered ok=false (.reason)
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from netwatch.emulator.profile import Profile

DirectionName = Literal["a_to_b", "b_to_a", "both"]
ProfileValue = int | float | bool | None
MAX_REPLY = 1 << 20


class EmulatorError(Exception):
    """Base class for control-socket errors."""


class EmulatorUnavailable(EmulatorError):
    """The emulator did not answer (not running, not ready, or stuck)."""


class EmulatorRejected(EmulatorError):
    """The emulator refused the request; ``reason`` is its error text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DirectionState:
    profile: Profile
    #: Effective rate-queue limit (resolves ``queue_packets: null``).
    queue_limit: int
    #: packets_passed, bytes_passed, dropped_loss, dropped_cut, dropped_queue,
    #: queued_now, ... (see ``netwatch.emulator.shaper.Counters``).
    counters: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class LinkState:
    link: str
    pid: int
    uptime_s: float
    a_to_b: DirectionState
    b_to_a: DirectionState

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any]) -> LinkState:
        try:
            dirs = reply["directions"]
            return cls(
                link=str(reply["link"]),
                pid=int(reply["pid"]),
                uptime_s=float(reply["uptime_s"]),
                a_to_b=_direction(dirs["a_to_b"]),
                b_to_a=_direction(dirs["b_to_a"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EmulatorUnavailable(f"malformed state reply: {exc!r}") from None


def _direction(obj: Mapping[str, Any]) -> DirectionState:
    return DirectionState(
        profile=Profile.from_json(obj["profile"]),
        queue_limit=int(obj["queue_limit"]),
        counters={str(k): int(v) for k, v in obj["counters"].items()},
    )


class EmulatorClient:
    """Talks to one emulator; one short connection per request.

    >>> client = EmulatorClient("/run/netwatch/lgwan-nishiki.sock", timeout=2.0)
    >>> client.set("a_to_b", delay_s=0.02, loss=0.01)   # doctest: +SKIP
    >>> client.cut()                                    # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 2.0) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout

    def request(self, request: Mapping[str, object]) -> dict[str, Any]:
        """Send one request, return the reply object whatever its ``ok``."""
        deadline = time.monotonic() + self.timeout
        line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(line)
                buf = bytearray()
                while b"\n" not in buf:
                    sock.settimeout(max(1e-3, deadline - time.monotonic()))
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise EmulatorUnavailable(f"{self.path}: connection closed before reply")
                    buf += chunk
                    if len(buf) > MAX_REPLY:
                        raise EmulatorUnavailable(f"{self.path}: reply too long")
        except TimeoutError:
            raise EmulatorUnavailable(f"{self.path}: no reply within {self.timeout} s") from None
        except OSError as exc:
            raise EmulatorUnavailable(f"{self.path}: {exc.strerror or exc}") from None
        try:
            reply = json.loads(buf[: buf.index(b"\n")])
        except ValueError as exc:
            raise EmulatorUnavailable(f"{self.path}: garbled reply: {exc}") from None
        if not isinstance(reply, dict):
            raise EmulatorUnavailable(f"{self.path}: reply is not a JSON object")
        return reply

    def call(self, request: Mapping[str, object]) -> dict[str, Any]:
        """Like :meth:`request`, but raise :class:`EmulatorRejected` on ok=false."""
        reply = self.request(request)
        if reply.get("ok") is not True:
            raise EmulatorRejected(str(reply.get("error", "request failed")))
        return reply

    def ping(self) -> None:
        self.call({"op": "ping"})

    def get(self) -> LinkState:
        return LinkState.from_reply(self.call({"op": "get"}))

    def set(
        self,
        direction: DirectionName = "both",
        profile: Mapping[str, ProfileValue] | None = None,
        **fields: ProfileValue,
    ) -> LinkState:
        """Change some profile fields; the reply comes after they apply."""
        changes = {**(profile or {}), **fields}
        reply = self.call({"op": "set", "direction": direction, "profile": changes})
        return LinkState.from_reply(reply)

    def cut(self, direction: DirectionName = "both") -> LinkState:
        return self.set(direction, cut=True)

    def restore(self, direction: DirectionName = "both") -> LinkState:
        return self.set(direction, cut=False)

    def shutdown(self) -> None:
        self.call({"op": "shutdown"})

    def wait_ready(
        self,
        timeout: float,
        *,
        interval: float = 0.02,
        alive: Callable[[], bool] | None = None,
    ) -> None:
        """Poll until the emulator answers ``ping``, up to ``timeout`` seconds.

        ``alive`` (e.g. ``lambda: proc.poll() is None``) stops the wait early
        when the process has already died.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ping()
                return
            except EmulatorUnavailable as exc:
                if alive is not None and not alive():
                    raise EmulatorUnavailable(f"{self.path}: emulator exited") from None
                if time.monotonic() >= deadline:
                    raise EmulatorUnavailable(f"not ready within {timeout} s: {exc}") from None
            time.sleep(interval)
