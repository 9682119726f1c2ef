"""Helpers for lab tests: talk from inside a namespace, poll with deadlines."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadprobe import netpath
from netwatch.constants import SO_MARK
from netwatch.emulator.control import EmulatorClient
from netwatch.emulator.netns import entered
from netwatch.lab import links
from netwatch.lab import mqtt as lab_mqtt
from netwatch.lab.namespaces import existing_namespaces, namespace_pids
from netwatch.lab.plan import Plan, make_plan
from netwatch.lab.rundir import RunDir
from netwatch.lab.state import LabState
from netwatch.mqtt.broker import Broker
from netwatch.pki import OPSCENTER_CN
from netwatch.topology import Topology, load

ROOT = Path(__file__).resolve().parent.parent

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
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
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
    tls: ssl.SSLContext | None = None,
) -> bytes:
    """Send an MQTT 3.1.1 CONNECT (over `tls`, if given) and return the
    broker's first 4 bytes (a CONNACK is 20 02 00 00 when accepted)."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(cid).to_bytes(2, "big") + cid
    body = variable + payload
    packet = b"\x10" + bytes([len(body)]) + body
    with tcp_socket_in(netns, mark=mark) as plain:
        plain.settimeout(timeout)
        plain.connect((host, port))
        # The TLS socket takes the plain one over: closing it closes both.
        with tls.wrap_socket(plain, server_hostname=host) if tls else plain as sock:
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
        state = EmulatorClient(RunDir.of(self.run_dir).control_socket(link_id)).get()
        return dict(getattr(state, direction).counters)

    def app(self) -> tuple[str, int]:
        return str(self.plan.app_address), self.plan.app_port

    def broker(self) -> tuple[str, int]:
        return str(self.plan.broker_address), self.plan.broker_port

    def mqtt_client(self, identity: str = OPSCENTER_CN) -> Broker:
        """How `identity` reaches the lab's broker: its certificate, over TLS."""
        return lab_mqtt.client(self.topo, RunDir.of(self.run_dir), identity)

    def tls_args(self, identity: str) -> list[str]:
        """An agent's (or the operations center's) --ca/--cert/--key in the lab."""
        return self.mqtt_client(identity).arguments()

    def mosquitto_args(self, identity: str = OPSCENTER_CN) -> list[str]:
        """mosquitto_pub/sub's address and TLS options, as `identity`."""
        broker = self.mqtt_client(identity)
        args = ["-h", broker.host, "-p", str(broker.port)]
        if broker.tls:
            args += ["--cafile", str(broker.ca), "--cert", str(broker.cert),
                     "--key", str(broker.key)]  # fmt: skip
        return args


def build_lab(
    tmp_path_factory: pytest.TempPathFactory, topology: Path | None = None, *, agents: bool = False
) -> Generator[Lab, None, None]:
    """Bring the whole lab up for a test module; take it down even on failure.

    Use from a module-scoped fixture: `yield from build_lab(tmp_path_factory)`.
    `topology`: a test's own copy of topology.yaml (default the repository's);
    `agents`: with the agents, the operations center and Prometheus.
    A lab kept for other modules (`KEEPER`) is taken down first."""
    KEEPER.release()
    topology = topology or ROOT / "topology.yaml"
    topo = load(topology)
    plan = make_plan(topo)
    clash = sorted(existing_namespaces() & {n.netns for n in plan.nodes.values()})
    if clash and any(namespace_pids(ns) for ns in clash):
        pytest.fail(f"a lab is already up ({', '.join(clash)}): run `netwatch lab down` first")
    if clash:
        # Namespaces with nothing running in them: what a killed run or a
        # reboot-less reset leaves behind.  Nobody is using them.
        down = netwatch("lab", "down")
        assert down.returncode == 0, down.stderr
        print(f"removed an idle leftover lab ({', '.join(clash)})", file=sys.stderr)
    run_dir = str(tmp_path_factory.mktemp("lab") / "run")
    try:
        extra = ["--agents"] if agents else []
        result = netwatch(
            "lab", "up", "--no-rtt", "--run-dir", run_dir, "--topology", str(topology), *extra
        )
        assert result.returncode == 0, result.stderr
        yield Lab(topo, plan, run_dir)
    finally:
        netwatch("lab", "down", "--run-dir", run_dir)


class LabKeeper:
    """At most one lab kept across test modules: the lab with agents that
    test_monitoring_lab and test_opscenter_lab both use (`netwatch lab up
    --agents` on it is theirs), built by the first of them and taken down
    at the end of the session (conftest's `lab_keeper`), or as soon as any
    module builds a lab of its own (`build_lab`: there is one set of nw-*
    namespaces).

    A kept lab is handed over only whole: every process of its record
    alive and not stopped (else it is rebuilt), every town's links back
    to their profile and uncut."""

    def __init__(self) -> None:
        self._held: tuple[Generator[Lab, None, None], Lab] | None = None

    def shared(self, tmp_path_factory: pytest.TempPathFactory) -> Lab:
        if self._held is not None:
            lab = self._held[1]
            state = LabState.load(lab.run_dir)
            if (
                state is not None
                and state.complete
                and all(p.alive() and not p.stopped for p in state.processes)
            ):
                for town in lab.topo.towns:
                    for path in town.paths:
                        links.reset(lab.topo, lab.run_dir, town.id, path.name)
                        links.restore(lab.topo, lab.run_dir, town.id, path.name, "both")
                return lab
            self.release()
        built = build_lab(tmp_path_factory)
        lab = next(built)
        self._held = (built, lab)
        return lab

    def release(self) -> None:
        """Take the kept lab down (the `finally` of `build_lab`), if any."""
        if self._held is not None:
            built, _ = self._held
            self._held = None
            built.close()  # runs its `finally`: `netwatch lab down`


KEEPER = LabKeeper()


class MqttTap:
    """`mosquitto_sub` inside the operations center's namespace, recording
    every message of some topics (persistent session, QoS 1: it picks up
    what was queued for it while the broker was down, once it is back)."""

    def __init__(self, lab: Lab, topic_filter: str, client_id: str) -> None:
        args = lab.mosquitto_args(OPSCENTER_CN)  # the identity that may read every town
        netns = lab.plan.nodes[lab.plan.ops_node].netns
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        # Under the identity's own prefix (the ACL lets it write nothing
        # else), a level deeper than any topic the operations center takes.
        ready_topic = f"netwatch/v1/{OPSCENTER_CN}/labtest/{client_id}"
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "mosquitto_sub",
             *args, "-q", "1", "-c", "-i", client_id, "-v",
             "-t", topic_filter, "-t", ready_topic],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

        # Subscribed for sure once our own message comes back.
        def ready() -> bool:
            subprocess.run(
                ["ip", "netns", "exec", netns, "mosquitto_pub", *args,
                 "-q", "1", "-t", ready_topic, "-m", "{}"],
                check=False, capture_output=True, timeout=10,
            )  # fmt: skip
            with self._lock:
                return any(t == ready_topic for t, _ in self.messages)

        wait_for(ready, timeout=10, step=0.2, what=f"mosquitto_sub {client_id} to subscribe")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            with self._lock:
                self.messages.append((topic, message))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                m for t, m in self.messages
                if t.endswith("/events") and (kind is None or m.get("event") == kind)
            ]  # fmt: skip

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def retained(lab: Lab, topic: str) -> dict[str, Any] | None:
    """The retained message of `topic`, read by a fresh subscriber."""
    result = subprocess.run(
        ["ip", "netns", "exec", lab.plan.nodes[lab.plan.ops_node].netns, "mosquitto_sub",
         *lab.mosquitto_args(), "-t", topic, "-C", "1", "-W", "3", "--retained-only"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    try:
        return dict(json.loads(result.stdout.splitlines()[0]))
    except (IndexError, ValueError):
        return None


def route_dev(netns: str, address: str = "10.200.0.10") -> str | None:
    """The interface a town's traffic to `address` leaves by, right now."""
    return netpath.route_dev(address, netns)


class RouteWatch:
    """Samples a town's route to the data center every 20 ms and records
    every change: an observer of the routes that does not ask the agent."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.changes: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last: str | None = "?"
        while not self._stop.is_set():
            dev = route_dev(self.netns)
            if dev != last:
                self.changes.append((time.monotonic(), dev))
                last = dev
            self._stop.wait(0.02)

    def stop(self) -> list[tuple[float, str | None]]:
        self._stop.set()
        self._thread.join()
        return self.changes
