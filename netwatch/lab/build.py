"""Bring the lab up and tear it down.

    up(topo, topology_path, run_dir)   -> UpResult   raises LabError
    down(run_dir, topo)                -> list of what was removed

`up` carries out the plan of `plan.py`: namespaces first (with their
sysctls, so interfaces created later inherit them), then one emulator
process per link (`links.py`; each builds its two TUN ends), then
addresses, routes and the services (`services.py`).  Every process is
recorded in the run directory (`rundir.py`) before the next one starts,
so `down` finds everything even after a crash.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netwatch.emulator.netns import entered
from netwatch.errors import LabError
from netwatch.lab import links, services
from netwatch.lab.namespaces import existing_namespaces, namespace_pids, require_root
from netwatch.lab.plan import Node, Plan, make_plan
from netwatch.lab.procs import stop
from netwatch.lab.rundir import RunDir
from netwatch.lab.state import LabState, pids_with_marker
from netwatch.topology import Topology


@dataclass
class UpResult:
    already_up: bool
    state: LabState
    agents_started: int = 0


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
        started = _with_agents(topo, plan, state, policy) if agents else 0
        return UpResult(already_up=True, state=state, agents_started=started)
    leftovers = sorted(ns for ns in existing_namespaces() if ns in _plan_namespaces(plan))
    if state is not None or leftovers:
        raise LabError(
            "a lab is partly up (" + (", ".join(leftovers) or "stale record in " + run_dir) + "); "
            "run `netwatch lab down` first"
        )
    run = RunDir.of(run_dir)
    run.create()
    state = LabState.new(topology_path, run_dir)
    try:
        _build(topo, plan, state, run)
    except BaseException:
        # Leave nothing half-built behind; the operator gets the first error.
        down(run_dir, topo)
        raise
    state.complete = True
    state.save()
    started = _with_agents(topo, plan, state, policy) if agents else 0
    return UpResult(already_up=False, state=state, agents_started=started)


def _with_agents(topo: Topology, plan: Plan, state: LabState, policy: str | None) -> int:
    """The agents, the operations center that listens to them, and the
    Prometheus that scrapes it."""
    services.start_opscenter(plan, state)
    services.start_prometheus(topo, plan, state)
    return services.start_agents(topo, plan, state, policy)


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
    for pid in pids_with_marker(links.emulator_pids_marker(RunDir.of(run_dir))):
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
    shutil.rmtree(run_dir, ignore_errors=True)
    return removed


def _plan_namespaces(plan: Plan) -> list[str]:
    return [node.netns for node in plan.nodes.values()]


def _build(topo: Topology, plan: Plan, state: LabState, run: RunDir) -> None:
    for node in plan.nodes.values():
        _run(["ip", "netns", "add", node.netns])
        state.namespaces.append(node.netns)
        state.save()
        _configure_sysctls(node)
    links.start_emulators(plan, state, run)
    for node in plan.nodes.values():
        _configure_node(node)
    services.start_target(plan, state, run)
    services.start_broker(topo, plan, state, run)


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
