"""Bring the lab up and tear it down.

    up(topo, topology_path, run_dir)   -> UpResult   raises LabError
    down(run_dir, topo)                -> list of what was removed

`up` carries out the plan of `plan.py`: namespaces first (with their
sysctls, so interfaces created later inherit them), then one emulator
process per link (each builds its two TUN ends), then addresses, routes
and the services.  Every process is recorded in the run directory before
the next one starts, so `down` finds everything even after a crash.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netwatch.emulator.control import EmulatorClient, EmulatorUnavailable
from netwatch.emulator.netns import entered
from netwatch.errors import UserError
from netwatch.lab.plan import NS_PREFIX, Link, Node, Plan, emulator_profile, make_plan
from netwatch.lab.procs import running, spawn, stop, wait_until
from netwatch.lab.state import LabState, ProcRecord, pids_with_marker
from netwatch.topology import Topology

EMULATOR_MARKER = "netwatch.emulator run"
READY_TIMEOUT = 20.0
APP_READY_TIMEOUT = 120.0  # the first start seeds the ledger (49,289 residents)


class LabError(UserError):
    """The lab could not be built or inspected; the message is for the operator."""


@dataclass
class UpResult:
    already_up: bool
    state: LabState
    agents_started: int = 0


def require_root() -> None:
    if not _has_cap_net_admin():
        raise LabError(
            "the lab needs root (CAP_NET_ADMIN) to create network namespaces; run it with sudo"
        )


def _has_cap_net_admin() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 12))
    except OSError:
        pass
    return os.geteuid() == 0


def control_socket(run_dir: str, link_id: str) -> str:
    return str(Path(run_dir) / "links" / f"{link_id}.sock")


def existing_namespaces() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def lab_is_up(state: LabState | None) -> bool:
    if state is None or not state.complete:
        return False
    present = existing_namespaces()
    return all(ns in present for ns in state.namespaces) and all(p.alive() for p in state.processes)


def up(
    topo: Topology,
    topology_path: str,
    run_dir: str,
    *,
    agents: bool = False,
    policy: str | None = None,
) -> UpResult:
    require_root()
    plan = make_plan(topo)
    state = LabState.load(run_dir)
    if lab_is_up(state):
        assert state is not None
        started = start_agents(topo, plan, state, policy) if agents else 0
        return UpResult(already_up=True, state=state, agents_started=started)
    leftovers = sorted(ns for ns in existing_namespaces() if ns in _plan_namespaces(plan))
    if state is not None or leftovers:
        raise LabError(
            "a lab is partly up (" + (", ".join(leftovers) or "stale record in " + run_dir) + "); "
            "run `netwatch lab down` first"
        )
    for sub in ("links", "logs", "dc", "mosquitto"):
        Path(run_dir, sub).mkdir(parents=True, exist_ok=True)
    os.chmod(Path(run_dir, "links"), 0o700)  # control sockets: owner only
    state = LabState(topology=os.path.abspath(topology_path), run_dir=run_dir)
    state.save()
    try:
        _build(plan, state, run_dir)
    except BaseException:
        # Leave nothing half-built behind; the operator gets the first error.
        down(run_dir, topo)
        raise
    state.complete = True
    state.save()
    started = start_agents(topo, plan, state, policy) if agents else 0
    return UpResult(already_up=False, state=state, agents_started=started)


AGENT_METRICS_PORT = 9470


def agent_spool(run_dir: str, town: str) -> str:
    return str(Path(run_dir, "agents", town, "spool"))


def start_agents(topo: Topology, plan: Plan, state: LabState, policy: str | None) -> int:
    """One agent per town inside its namespace, pointed at the lab's broker.
    Agents already running are left alone; returns how many were started."""
    started = []
    for town in topo.towns:
        name = f"agent {town.id}"
        record = next((p for p in state.processes if p.name == name), None)
        if record is not None and record.alive():
            continue
        if record is not None:
            state.processes.remove(record)
        spool = agent_spool(state.run_dir, town.id)
        Path(spool).mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "netwatch.cli", "agent",
            "--town", town.id,
            "--topology", state.topology,
            "--mqtt", topo.opscenter.mqtt,
            "--spool", spool,
            "--metrics-listen", f"127.0.0.1:{AGENT_METRICS_PORT}",
        ]  # fmt: skip
        if policy is not None:
            argv += ["--policy", policy]
        log = str(Path(state.run_dir, "logs", f"agent-{town.id}.log"))
        record = spawn(
            name, argv, log=log, marker=f"--spool {spool}", netns=plan.nodes[town.id].netns
        )
        state.processes.append(record)
        state.save()
        started.append(record)
    for record in started:
        assert record.netns is not None
        _wait_listening(record, record.netns, "127.0.0.1", AGENT_METRICS_PORT, READY_TIMEOUT)
    return len(started)


def _plan_namespaces(plan: Plan) -> list[str]:
    return [node.netns for node in plan.nodes.values()]


def _build(plan: Plan, state: LabState, run_dir: str) -> None:
    for node in plan.nodes.values():
        _run(["ip", "netns", "add", node.netns])
        state.namespaces.append(node.netns)
        state.save()
        _configure_sysctls(node)
    for link in plan.links:
        _start_emulator(link, state, run_dir)
    for link in plan.links:
        client = EmulatorClient(control_socket(run_dir, link.id))
        record = next(p for p in state.processes if p.name == f"emulator {link.id}")
        try:
            client.wait_ready(READY_TIMEOUT, alive=functools.partial(running, record.pid))
        except EmulatorUnavailable as exc:
            raise LabError(f"link {link.id} did not come up: {exc}: {_tail(record.log)}") from None
    for node in plan.nodes.values():
        _configure_node(node)
    _start_target(plan, state, run_dir)
    _start_broker(plan, state, run_dir)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip() or 'failed'}")


def _configure_sysctls(node: Node) -> None:
    # rp_filter off: a town receives answers on its standby uplink while its
    # routes point at the other one (probes of the standby path).
    settings = {
        "net/ipv4/conf/all/rp_filter": "0",
        "net/ipv4/conf/default/rp_filter": "0",
        "net/ipv4/ip_forward": "1" if node.forwarding else "0",
        "net/ipv6/conf/all/disable_ipv6": "1",
        "net/ipv6/conf/default/disable_ipv6": "1",
    }
    with entered(node.netns):
        for key, value in settings.items():
            with open(f"/proc/sys/{key}", "w", encoding="ascii") as f:
                f.write(value)
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def _start_emulator(link: Link, state: LabState, run_dir: str) -> None:
    sock = control_socket(run_dir, link.id)
    argv = [
        sys.executable,
        "-m",
        "netwatch.emulator",
        "run",
        "--link",
        link.id,
        "--end-a",
        link.a.spec(),
        "--end-b",
        link.b.spec(),
        "--control",
        sock,
        "--a-to-b",
        json.dumps(emulator_profile(link.a_to_b)),
        "--b-to-a",
        json.dumps(emulator_profile(link.b_to_a)),
    ]
    log = str(Path(run_dir, "logs", f"emulator-{link.id}.log"))
    state.processes.append(spawn(f"emulator {link.id}", argv, log=log, marker=f"--control {sock}"))
    state.save()


def _configure_node(node: Node) -> None:
    with entered(node.netns), IPRoute() as ipr:
        try:
            for local in node.local_addresses:
                index = ipr.link_lookup(ifname=local.ifname)[0]
                for address in local.addresses:
                    ipr.addr(
                        "add",
                        index=index,
                        address=str(address.ip),
                        prefixlen=address.network.prefixlen,
                    )
                ipr.link("set", index=index, state="up")
            for route in node.routes:
                index = ipr.link_lookup(ifname=route.ifname)[0]
                extra = {"prefsrc": str(route.src)} if route.src else {}
                ipr.route(
                    "replace",
                    dst=str(route.dst),
                    gateway=str(route.gateway),
                    oif=index,
                    table=route.table,
                    proto=route.proto,
                    **extra,
                )
            for rule in node.rules:
                ipr.rule("add", fwmark=rule.fwmark, table=rule.table, priority=rule.priority)
        except (NetlinkError, IndexError) as exc:
            raise LabError(f"configuring {node.netns}: {exc}") from None


def _start_target(plan: Plan, state: LabState, run_dir: str) -> None:
    db = str(Path(run_dir, "dc", "target.sqlite3"))
    argv = [
        sys.executable,
        "-m",
        "backoffice",
        "--host",
        "0.0.0.0",
        "--port",
        str(plan.app_port),
        "--db",
        db,
    ]
    netns = plan.nodes[plan.dc_node].netns
    log = str(Path(run_dir, "logs", "target.log"))
    record = spawn("target", argv, log=log, marker=f"--db {db}", netns=netns)
    state.processes.append(record)
    state.save()
    _wait_listening(record, netns, str(plan.app_address), plan.app_port, APP_READY_TIMEOUT)


def _start_broker(plan: Plan, state: LabState, run_dir: str) -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(mosquitto):
        raise LabError("mosquitto is not installed (apt-get install mosquitto)")
    conf = Path(run_dir, "mosquitto", "mosquitto.conf")
    conf.write_text(
        "\n".join(
            [
                "# written by `netwatch lab up`; the lab's broker in the operations center",
                "user root",
                f"listener {plan.broker_port} 0.0.0.0",
                "allow_anonymous true",
                "persistence true",
                f"persistence_location {Path(run_dir, 'mosquitto')}/",
                f"log_dest file {Path(run_dir, 'logs', 'mosquitto.log')}",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "connection_messages true",
                "",
            ]
        ),
        encoding="utf-8",
    )
    netns = plan.nodes[plan.ops_node].netns
    log = str(Path(run_dir, "logs", "mosquitto.stdout.log"))
    record = spawn(
        "mosquitto", [mosquitto, "-c", str(conf)], log=log, marker=str(conf), netns=netns
    )
    state.processes.append(record)
    state.save()
    _wait_listening(record, netns, str(plan.broker_address), plan.broker_port, READY_TIMEOUT)


def _wait_listening(record: ProcRecord, netns: str, host: str, port: int, timeout: float) -> None:
    def ready() -> bool:
        if not running(record.pid):
            raise LabError(f"{record.name} exited while starting: {_tail(record.log)}")
        with entered(netns):
            sock = socket.socket()
        with sock:
            sock.settimeout(0.5)
            return sock.connect_ex((host, port)) == 0

    if not wait_until(ready, timeout=timeout, step=0.1):
        raise LabError(
            f"{record.name} is not listening on {host}:{port} after {timeout:g} s: "
            f"{_tail(record.log)}"
        )


def _tail(log: str, lines: int = 3) -> str:
    """The end of a log, for an error message: `down` removes the run directory."""
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "(no log)"
    return " | ".join(text.splitlines()[-lines:]) or "(empty log)"


def down(run_dir: str, topo: Topology | None) -> list[str]:
    """Remove every namespace and process of the lab; return what was removed."""
    require_root()
    removed: list[str] = []
    state = LabState.load(run_dir)
    namespaces: set[str] = set(state.namespaces) if state else set()
    if topo is not None:
        namespaces.update(_plan_namespaces(make_plan(topo)))
    namespaces &= existing_namespaces() | (set(state.namespaces) if state else set())
    if state is not None:
        for proc in state.processes:
            if proc.alive():
                stop(proc.pid, proc.marker)
                removed.append(f"process {proc.name} (pid {proc.pid})")
    # Emulators whose record was lost (a crash while writing it).
    for pid in pids_with_marker(f"--control {Path(run_dir, 'links')}/"):
        stop(pid)
        removed.append(f"process emulator (pid {pid})")
    # Anything else still running inside a lab namespace: agents, load tests.
    for ns in sorted(namespaces & existing_namespaces()):
        for pid in namespace_pids(ns):
            stop(pid)
            removed.append(f"process {pid} in {ns}")
    for ns in sorted(namespaces & existing_namespaces()):
        _run(["ip", "netns", "del", ns])
        removed.append(f"namespace {ns}")
    if Path(run_dir).exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    return removed


def namespace_pids(ns: str) -> list[int]:
    """Processes inside namespace `ns` (not counting this one)."""
    result = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
    )
    return [int(p) for p in result.stdout.split() if p.isdigit() and int(p) != os.getpid()]


SERVICES = {"target": "target", "broker": "mosquitto"}


def _service(state: LabState | None, service: str) -> ProcRecord:
    if state is None or not state.complete:
        raise LabError("the lab is not up")
    name = SERVICES.get(service) or (f"agent {service[6:]}" if service.startswith("agent-") else "")
    record = next((p for p in state.processes if p.name == name), None)
    if record is None:
        known = ", ".join(
            [
                *SERVICES,
                *(f"agent-{p.name[6:]}" for p in state.processes if p.name.startswith("agent ")),
            ]
        )
        raise LabError(f"no lab service {service!r} (services: {known})")
    return record


def stop_service(run_dir: str, service: str) -> bool:
    """Stop one of the lab's services on purpose; False if it was not running."""
    require_root()
    state = LabState.load(run_dir)
    record = _service(state, service)
    assert state is not None
    was_running = record.alive()
    if was_running:
        stop(record.pid, record.marker)
    record.stopped = True
    state.save()
    return was_running


def start_service(run_dir: str, service: str) -> bool:
    """Start a stopped (or crashed) service again, as it was; False if it ran."""
    require_root()
    state = LabState.load(run_dir)
    record = _service(state, service)
    assert state is not None
    if record.alive():
        return False
    if not record.argv:
        raise LabError(f"{service}: no command recorded (a lab from an older version); rebuild it")
    fresh = spawn(
        record.name, record.argv, log=record.log, marker=record.marker, netns=record.netns
    )
    state.processes[state.processes.index(record)] = fresh
    state.save()
    return True


def lab_namespaces_present() -> list[str]:
    return sorted(ns for ns in existing_namespaces() if ns.startswith(NS_PREFIX))
