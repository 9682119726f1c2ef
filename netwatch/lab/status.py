"""What the running lab looks like: nodes, links with counters, processes,
and each town's round-trip time to the data center over each path."""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from netwatch.constants import SO_MARK
from netwatch.emulator.control import EmulatorClient, EmulatorError
from netwatch.emulator.netns import entered
from netwatch.lab.namespaces import existing_namespaces
from netwatch.lab.plan import Plan, make_plan
from netwatch.lab.rundir import RunDir
from netwatch.lab.services import Kind, Service, opscenter_url, prometheus_url
from netwatch.lab.state import LabState
from netwatch.topology import Topology
from netwatch.topology.units import format_duration, format_percentage, format_rate


def collect(topo: Topology, run_dir: str) -> dict[str, Any]:
    plan = make_plan(topo)
    state = LabState.load(run_dir)
    present = existing_namespaces()
    nodes = []
    for node in plan.nodes.values():
        exists = node.netns in present
        nodes.append(
            {
                "node": node.name,
                "role": node.role,
                "netns": node.netns,
                "exists": exists,
                "addresses": _addresses(node.netns) if exists else [],
            }
        )
    links = []
    for link in plan.links:
        entry: dict[str, Any] = {
            "link": link.id,
            "a": link.a.spec(),
            "b": link.b.spec(),
            "town": link.town,
            "path": link.path,
            "configured": {"a_to_b": link.a_to_b_name, "b_to_a": link.b_to_a_name},
        }
        try:
            live = EmulatorClient(RunDir.of(run_dir).control_socket(link.id), timeout=1.0).get()
        except EmulatorError as exc:
            entry["error"] = str(exc)
        else:
            entry["pid"] = live.pid
            for name, direction in (("a_to_b", live.a_to_b), ("b_to_a", live.b_to_a)):
                entry[name] = {
                    "profile": direction.profile.to_json(),
                    "counters": dict(direction.counters),
                }
        links.append(entry)
    processes = [
        {
            "name": p.name,
            "pid": p.pid,
            "alive": p.alive(),
            "stopped": p.stopped,
            "netns": p.netns,
            "log": p.log,
        }
        for p in (state.processes if state else [])
    ]
    up = (
        bool(state and state.complete)
        and all(n["exists"] for n in nodes)
        and all(p["alive"] or p["stopped"] for p in processes)
    )
    opscenter = prometheus = None
    if any(p["name"] == Service(Kind.OPSCENTER).process for p in processes):
        opscenter = opscenter_url(plan)
    if any(p["name"] == Service(Kind.PROMETHEUS).process for p in processes):
        prometheus = prometheus_url(topo)
    return {
        "up": up,
        "run_dir": run_dir,
        "nodes": nodes,
        "links": links,
        "processes": processes,
        "opscenter": opscenter,
        "prometheus": prometheus,
    }


def _addresses(netns: str) -> list[str]:
    with entered(netns), IPRoute() as ipr:
        out = []
        for msg in ipr.get_addr(family=socket.AF_INET):
            index = msg["index"]
            name = ipr.get_links(index)[0].get_attr("IFLA_IFNAME")
            address = msg.get_attr("IFA_ADDRESS")
            if not address.startswith("127."):
                out.append(f"{name} {msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        return out


def render(status: dict[str, Any]) -> str:
    lines = [f"lab: {'UP' if status['up'] else 'NOT UP'} (run dir {status['run_dir']})", "nodes:"]
    for node in status["nodes"]:
        mark = "" if node["exists"] else "  [missing]"
        lines.append(
            f"  {node['netns']:<15} {node['role']:<10} {', '.join(node['addresses'])}{mark}"
        )
    lines.append("links (a_to_b is towards the data center):")
    header = (
        f"    {'dir':<6} {'rate':>8} {'delay':>7} {'jitter':>7} {'loss':>6} {'cut':>4} "
        f"{'passed':>9} {'bytes':>12} {'lost':>6} {'cutdrop':>7} {'qdrop':>6} {'queued':>6}"
    )
    for link in status["links"]:
        lines.append(f"  {link['link']}: {link['a']} <-> {link['b']}")
        if "error" in link:
            lines.append(f"    (emulator not answering: {link['error']})")
            continue
        lines.append(header)
        for name in ("a_to_b", "b_to_a"):
            prof, cnt = link[name]["profile"], link[name]["counters"]
            rate = format_rate(prof["rate_bps"]) if prof["rate_bps"] else "-"
            lines.append(
                f"    {name:<6} {rate:>8} {format_duration(prof['delay_s']):>7} "
                f"{format_duration(prof['jitter_s']):>7} {format_percentage(prof['loss']):>6} "
                f"{'CUT' if prof['cut'] else '-':>4} {cnt['packets_passed']:>9} "
                f"{cnt['bytes_passed']:>12} {cnt['dropped_loss']:>6} {cnt['dropped_cut']:>7} "
                f"{cnt['dropped_queue']:>6} {cnt['queued_now']:>6}"
            )
    if status.get("opscenter"):
        lines.append(f"operations center: {status['opscenter']} (from nw-ops)")
    if status.get("prometheus"):
        lines.append(f"prometheus:        {status['prometheus']} (from nw-ops; alerts at /alerts)")
    lines.append("processes:")
    for proc in status["processes"]:
        alive = "alive" if proc["alive"] else "stopped" if proc["stopped"] else "DEAD"
        where = f" in {proc['netns']}" if proc["netns"] else ""
        lines.append(f"  {proc['name']:<28} pid {proc['pid']:<8} {alive}{where}  log {proc['log']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class PathRtt:
    town: str
    path: str
    samples: int
    failures: int
    median_s: float | None
    min_s: float | None


def measure_rtt(
    topo: Topology, plan: Plan | None = None, *, count: int = 5, timeout: float = 1.0
) -> list[PathRtt]:
    """TCP connect time from each town to the data center's service, per path.

    The socket carries the path's fwmark, so the per-path routing table sends
    it over that path whichever path carries the town's traffic.
    """
    plan = plan or make_plan(topo)
    target = (str(plan.app_address), plan.app_port)
    results = []
    for town in topo.towns:
        for path in town.paths_by_preference:
            rtts: list[float] = []
            failures = 0
            for _ in range(count):
                with entered(plan.nodes[town.id].netns):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                with sock:
                    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, path.mark)
                    sock.settimeout(timeout)
                    start = time.perf_counter()
                    try:
                        sock.connect(target)
                    except OSError:
                        failures += 1
                        if failures >= 2 and not rtts:
                            break  # a cut path: no need to wait out every timeout
                        continue
                    rtts.append(time.perf_counter() - start)
            results.append(
                PathRtt(
                    town.id,
                    path.name,
                    len(rtts),
                    failures,
                    statistics.median(rtts) if rtts else None,
                    min(rtts) if rtts else None,
                )
            )
    return results


def render_rtt(rows: list[PathRtt]) -> str:
    lines = [f"  {'town':<11} {'path':<8} {'rtt p50':>9} {'rtt min':>9} {'ok':>6}"]
    for row in rows:
        p50 = f"{row.median_s * 1000:.1f}ms" if row.median_s is not None else "-"
        low = f"{row.min_s * 1000:.1f}ms" if row.min_s is not None else "-"
        lines.append(
            f"  {row.town:<11} {row.path:<8} {p50:>9} {low:>9} "
            f"{row.samples:>3}/{row.samples + row.failures}"
        )
    return "\n".join(lines)
