"""Before any load: is the target there, and do the credentials work?

Runs in `loadprobe run` (plain threads, no gevent), from the town's network
namespace when the run happens in the lab: a socket created inside the
namespace keeps it, so the check takes the same route the terminals will.
Every failure here is bad input (exit 2), said in one line.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from loadprobe.scenario import Scenario
from netwatch.emulator.netns import entered
from netwatch.errors import UserError

TIMEOUT = 5.0


class PreflightError(UserError):
    """The target cannot be used: unreachable, unhealthy or refusing our logon."""


@dataclass(frozen=True)
class Preflight:
    health: dict[str, Any] | None  # the target's /health answer, if it has one
    connect_rtt: float | None  # median TCP connect time, seconds


def _where(netns: str | None) -> Any:
    return entered(netns) if netns else nullcontext()


@contextmanager
def _connection(url: str, netns: str | None) -> Iterator[http.client.HTTPConnection]:
    parts = urlsplit(url)
    host, https = parts.hostname or "", parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    base: type[http.client.HTTPConnection] = (
        http.client.HTTPSConnection if https else http.client.HTTPConnection
    )

    class InNamespace(base):  # type: ignore[misc,valid-type]
        def connect(self) -> None:
            with _where(netns):
                super().connect()

    if https:
        conn = InNamespace(host, port, timeout=TIMEOUT, context=ssl.create_default_context())
    else:
        conn = InNamespace(host, port, timeout=TIMEOUT)
    try:
        yield conn
    finally:
        conn.close()


def _request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
) -> tuple[int, bytes]:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def connect_rtt(scenario: Scenario, netns: str | None, tries: int = 5) -> float | None:
    """Median time to open a TCP connection to the target, seconds."""
    times = []
    for _ in range(tries):
        with _where(netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(TIMEOUT)
            start = time.perf_counter()
            try:
                sock.connect((scenario.target_host, scenario.target_port))
            except OSError:
                continue
            times.append(time.perf_counter() - start)
    return statistics.median(times) if times else None


def check(scenario: Scenario, password: str, netns: str | None) -> Preflight:
    """Health, then one logon (and logoff) as the first terminal."""
    where = f" from {netns}" if netns else ""
    url = scenario.base_url
    health: dict[str, Any] | None = None
    try:
        with _connection(url, netns) as conn:
            status, body = _request(conn, "GET", _path(url, "/health"))
            if status == 200:
                try:
                    loaded = json.loads(body)
                    health = loaded if isinstance(loaded, dict) else None
                except ValueError:
                    health = None
            elif status >= 500:
                raise PreflightError(f"target {url} is unhealthy: /health answered {status}")
            user = scenario.user(1)
            status, body = _request(
                conn,
                "POST",
                _path(url, "/api/v1/logon"),
                {"town": scenario.town, "user": user, "password": password},
            )
            if status in (401, 403):
                raise PreflightError(
                    f"bad credentials: the target refused logon as {user} ({status}); "
                    f"check the password in {scenario.password_source}"
                )
            if status == 422:
                raise PreflightError(f"the target refused the logon of {user} as malformed (422)")
            if status != 200:
                raise PreflightError(f"logon as {user} answered {status}")
            try:
                token = str(json.loads(body)["token"])
            except (ValueError, KeyError, TypeError):
                raise PreflightError(f"logon as {user}: no token in the answer") from None
            _request(conn, "POST", _path(url, "/api/v1/logoff"), token=token)
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise PreflightError(f"target {url} unreachable{where}: {reason}") from None
    return Preflight(health=health, connect_rtt=connect_rtt(scenario, netns))


def _path(base_url: str, path: str) -> str:
    prefix = urlsplit(base_url).path.rstrip("/")
    return f"{prefix}{path}"
