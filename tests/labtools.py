"""Helpers for lab tests: talk from inside a namespace, poll with deadlines."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netwatch.emulator.control import EmulatorClient
from netwatch.emulator.netns import entered
from netwatch.lab.build import control_socket, existing_namespaces
from netwatch.lab.plan import Plan, make_plan
from netwatch.topology import Topology, load

ROOT = Path(__file__).resolve().parent.parent
SO_MARK = 36

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="lab tests need root to create network namespaces"
)


def netwatch(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netwatch.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tcp_socket_in(
    netns: str, *, mark: int | None = None, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    with entered(netns):
        sock = socket.socket(socket.AF_INET, kind)
    if mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    return sock


def connect_time(
    netns: str, host: str, port: int, *, mark: int | None = None, timeout: float = 2.0
) -> float | None:
    """Seconds to complete a TCP handshake, or None when it fails."""
    with tcp_socket_in(netns, mark=mark) as sock:
        sock.settimeout(timeout)
        start = time.perf_counter()
        try:
            sock.connect((host, port))
        except OSError:
            return None
        return time.perf_counter() - start


def http_get(
    netns: str, host: str, port: int, path: str, *, mark: int | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET over a socket made inside `netns` (carrying `mark`, if given)."""
    sock = tcp_socket_in(netns, mark=mark)
    sock.settimeout(timeout)
    sock.connect((host, port))
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def mqtt_connack(
    netns: str,
    host: str,
    port: int,
    *,
    mark: int | None = None,
    client_id: str = "labtest",
    timeout: float = 3.0,
) -> bytes:
    """Send an MQTT 3.1.1 CONNECT and return the broker's first 4 bytes (a
    CONNACK is 20 02 00 00 when accepted)."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(cid).to_bytes(2, "big") + cid
    body = variable + payload
    packet = b"\x10" + bytes([len(body)]) + body
    with tcp_socket_in(netns, mark=mark) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(packet)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                break
            reply += chunk
        return reply


def wait_for(
    condition: Callable[[], Any], *, timeout: float, step: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


@dataclass
class Lab:
    topo: Topology
    plan: Plan
    run_dir: str

    def counters(self, link_id: str, direction: str = "a_to_b") -> dict[str, int]:
        state = EmulatorClient(control_socket(self.run_dir, link_id)).get()
        return dict(getattr(state, direction).counters)

    def app(self) -> tuple[str, int]:
        return str(self.plan.app_address), self.plan.app_port

    def broker(self) -> tuple[str, int]:
        return str(self.plan.broker_address), self.plan.broker_port


def build_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Bring the whole lab up for a test module; take it down even on failure.

    Use from a module-scoped fixture: `yield from build_lab(tmp_path_factory)`."""
    topo = load(ROOT / "topology.yaml")
    plan = make_plan(topo)
    clash = sorted(existing_namespaces() & {n.netns for n in plan.nodes.values()})
    if clash:
        pytest.fail(f"a lab is already up ({', '.join(clash)}): run `netwatch lab down` first")
    run_dir = str(tmp_path_factory.mktemp("lab") / "run")
    try:
        result = netwatch("lab", "up", "--no-rtt", "--run-dir", run_dir)
        assert result.returncode == 0, result.stderr
        yield Lab(topo, plan, run_dir)
    finally:
        netwatch("lab", "down", "--run-dir", run_dir)
