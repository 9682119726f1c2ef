"""Failover benchmark: data-plane outage per cut, per policy profile, in the lab.

    sudo .venv/bin/python -m bench.failover_bench [--cuts 20] [--profiles fast,...]
                                                  [--soak 600] [--skip-soak]

For each profile the lab is built with one agent per town running that
profile; the four towns are cut in parallel (each town `cuts / 4` times,
at a random phase), and for every cut it records:

- the data-plane outage: the longest gap seen by an independent observer
  (a TCP connection from the town to the data-center application every
  10 ms, over the town's real routes) around the cut;
- the agent's own figure: fault suspected -> routes applied
  (netwatch_last_failover_duration_seconds).

Then a noise soak (3 % random loss each way and 10 ms jitter on every
primary, the `fast` profile) counts false failovers, and one agent's CPU
and RSS are sampled at the default policy, and the probe rate one core
sustains is measured.

Bench-only policy changes, so that 20 cuts fit in one run: hold-down 2 s
and flap damping off for every profile (they only delay the failback
between cuts, never the failover that is measured).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from loadprobe import netpath
from netwatch.emulator.control import EmulatorClient
from netwatch.emulator.netns import entered
from netwatch.lab.build import control_socket
from netwatch.lab.observer import DataPlaneObserver
from netwatch.lab.plan import make_plan
from netwatch.lab.procs import wait_until
from netwatch.topology import Topology, load

ROOT = Path(__file__).resolve().parent.parent
PREFIX_PROBE = "10.200.0.10"


def sh(*argv: str, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def netwatch(*args: str) -> str:
    return sh(sys.executable, "-m", "netwatch.cli", *args)


def bench_topology(directory: Path) -> Path:
    raw = yaml.safe_load((ROOT / "topology.yaml").read_text(encoding="utf-8"))
    for profile in raw["policy"]["profiles"].values():
        profile["failback_holddown"] = "2s"
        profile["damping"]["penalty"] = 0
    path = directory / "topology.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def route_dev(netns: str) -> str | None:
    return netpath.route_dev(PREFIX_PROBE, netns)


def agent_metric(netns: str, name: str) -> float | None:
    """Sum of a metric's samples on the town agent's Prometheus endpoint."""
    with entered(netns):
        sock = socket.create_connection(("127.0.0.1", 9470), timeout=2)
    conn = http.client.HTTPConnection("127.0.0.1", 9470, timeout=2)
    conn.sock = sock
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except OSError:
        return None
    finally:
        conn.close()
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    return sum(values) if values else None


@dataclass
class CutResult:
    town: str
    outage_s: float
    agent_s: float | None
    route_s: float


@dataclass
class ProfileRun:
    profile: str
    cuts: list[CutResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_town(
    topo: Topology,
    run_dir: str,
    town_id: str,
    cuts: int,
    detect_max: float,
    back_max: float,
    out: ProfileRun,
    lock: threading.Lock,
) -> None:
    plan = make_plan(topo)
    town = topo.town(town_id)
    netns = plan.nodes[town_id].netns
    link = plan.link_for(town_id, "primary")
    client = EmulatorClient(control_socket(run_dir, link.id))
    primary_if, backup_if = town.primary.interface, town.backups[0].interface
    rng = random.Random(town_id)
    with DataPlaneObserver(netns, str(plan.app_address), plan.app_port) as obs:
        for i in range(cuts):
            if not wait_until(lambda: route_dev(netns) == primary_if, timeout=back_max, step=0.05):
                with lock:
                    out.failures.append(f"{town_id} cut {i}: never back on the primary")
                return
            time.sleep(rng.uniform(1.0, 2.0))  # a random phase against the probe cadence
            cut_at = time.monotonic()
            client.cut()
            if not wait_until(
                lambda: route_dev(netns) == backup_if, timeout=detect_max, step=0.005
            ):
                with lock:
                    out.failures.append(f"{town_id} cut {i}: no failover in {detect_max:g} s")
                client.restore()
                continue
            routed = time.monotonic()
            flowing_after = routed + 0.2
            wait_until(lambda: (obs.last_ok() or 0) > flowing_after, timeout=5.0, step=0.01)  # noqa: B023
            outage = obs.longest_gap(since=cut_at - 0.5)
            agent_s = agent_metric(netns, "netwatch_last_failover_duration_seconds")
            client.restore()
            with lock:
                out.cuts.append(CutResult(town_id, outage, agent_s, routed - cut_at))


def run_profile(topo_path: Path, profile: str, cuts: int, work: Path) -> ProfileRun:
    topo = load(topo_path)
    run_dir = str(work / f"run-{profile}")
    policy = topo.policy.profile(profile)
    detect_max = policy.interval * (policy.fall + 2) + policy.timeout + 10.0
    back_max = policy.interval * (policy.rise + 2) + policy.failback_holddown + 60.0
    netwatch(
        "lab",
        "up",
        "--no-rtt",
        "--agents",
        "--policy",
        profile,
        "--topology",
        str(topo_path),
        "--run-dir",
        run_dir,
    )
    result = ProfileRun(profile)
    lock = threading.Lock()
    per_town = max(1, -(-cuts // len(topo.towns)))
    try:
        threads = [
            threading.Thread(
                target=run_town,
                args=(topo, run_dir, t.id, per_town, detect_max, back_max, result, lock),
            )
            for t in topo.towns
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        netwatch("lab", "down", "--run-dir", run_dir)
    return result


def quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p95 = ordered[max(0, min(len(ordered) - 1, -(-95 * len(ordered) // 100) - 1))]
    return statistics.median(ordered), p95, ordered[-1]


def soak(topo_path: Path, seconds: float, work: Path) -> dict[str, Any]:
    topo = load(topo_path)
    run_dir = str(work / "run-soak")
    netwatch(
        "lab", "up", "--no-rtt", "--agents", "--topology", str(topo_path), "--run-dir", run_dir
    )
    try:
        plan = make_plan(topo)
        time.sleep(2.0)
        before = {
            t.id: agent_metric(plan.nodes[t.id].netns, "netwatch_failovers_total") or 0.0
            for t in topo.towns
        }
        for town in topo.towns:
            netwatch(
                "lab",
                "impair",
                town.id,
                "primary",
                "--loss",
                "3%",
                "--jitter",
                "10ms",
                "--run-dir",
                run_dir,
            )
        # Agent CPU and RSS at the default policy, while it works through the noise.
        nishiki_pid = next(
            p["pid"]
            for p in json.loads(netwatch("lab", "status", "--json", "--run-dir", run_dir))[
                "processes"
            ]
            if p["name"] == "agent nishiki"
        )
        cpu0, t0 = _cpu_seconds(nishiki_pid), time.monotonic()
        time.sleep(seconds)
        cpu = (_cpu_seconds(nishiki_pid) - cpu0) / (time.monotonic() - t0)
        rss = _rss_bytes(nishiki_pid)
        after = {
            t.id: agent_metric(plan.nodes[t.id].netns, "netwatch_failovers_total") or 0.0
            for t in topo.towns
        }
        false = {t: after[t] - before[t] for t in after}
        return {
            "seconds": seconds,
            "false_failovers": false,
            "agent_cpu_ratio": cpu,
            "agent_rss_bytes": rss,
        }
    finally:
        netwatch("lab", "down", "--run-dir", run_dir)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


PROBE_RATE_SCRIPT = r"""
import asyncio, os, sys, time
from netwatch.agent.probes import PathBinding
from netwatch.agent.probes.icmp import IcmpProber
from netwatch.agent.probes.tcp import TcpProber
from netwatch.agent.probes.http import HttpProber
from netwatch.topology import load

async def main():
    topo = load(sys.argv[1]); town = topo.town("nishiki"); t = topo.datacenter.targets
    path = town.primary
    b = PathBinding(path.name, path.mark, path.address.ip)
    out = {}
    for name, prober in (("icmp", IcmpProber(t.icmp)), ("tcp", TcpProber(t.tcp)),
                         ("http", HttpProber(t.http, t.http_status))):
        await prober.probe(b, 1.0)
        done = 0
        stop = time.monotonic() + 5.0
        cpu0 = time.process_time()
        async def worker():
            nonlocal done
            while time.monotonic() < stop:
                r = await prober.probe(b, 1.0)
                done += r.ok
        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(32)))
        wall = time.monotonic() - start
        out[name] = (done / wall, (time.process_time() - cpu0) / wall)
        await prober.aclose()
    for name, (rate, cpu) in out.items():
        print(f"{name} {rate:.0f} {cpu:.2f}")
asyncio.run(main())
"""


def probe_rate(topo_path: Path, work: Path) -> dict[str, tuple[float, float]]:
    run_dir = str(work / "run-rate")
    netwatch("lab", "up", "--no-rtt", "--topology", str(topo_path), "--run-dir", run_dir)
    try:
        out = sh(
            "ip",
            "netns",
            "exec",
            "nw-nishiki",
            sys.executable,
            "-c",
            PROBE_RATE_SCRIPT,
            str(topo_path),
        )
    finally:
        netwatch("lab", "down", "--run-dir", run_dir)
    rates = {}
    for line in out.splitlines():
        name, rate, cpu = line.split()
        rates[name] = (float(rate), float(cpu))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuts", type=int, default=20, help="cuts per profile (default 20)")
    parser.add_argument("--profiles", default="fast,mwan3-default,pfsense-default")
    parser.add_argument("--soak", type=float, default=600.0, help="noise soak seconds")
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("failover_bench: needs root (it builds the lab)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp:
        work = Path(tmp)
        topo_path = bench_topology(work)
        runs = [run_profile(topo_path, p, args.cuts, work) for p in args.profiles.split(",")]
        print(f"\nfailover over {args.cuts} cuts per profile (4 towns in parallel)")
        print(
            f"{'profile':<16} {'cuts':>4} {'outage p50':>11} {'p95':>7} {'max':>7}   "
            f"{'agent p50':>10} {'p95':>7} {'max':>7}"
        )
        for run in runs:
            outages = [c.outage_s for c in run.cuts]
            agents = [c.agent_s for c in run.cuts if c.agent_s is not None]
            if not outages:
                print(f"{run.profile:<16} no cut measured: {run.failures}")
                continue
            o50, o95, omax = quantiles(outages)
            a50, a95, amax = quantiles(agents) if agents else (float("nan"),) * 3
            print(
                f"{run.profile:<16} {len(outages):>4} {o50:>10.3f}s {o95:>6.3f}s "
                f"{omax:>6.3f}s   {a50:>9.3f}s {a95:>6.3f}s {amax:>6.3f}s"
            )
            for failure in run.failures:
                print(f"  ! {failure}")
        if not args.skip_soak:
            result = soak(topo_path, args.soak, work)
            print(
                f"\nnoise soak {result['seconds']:.0f} s (3 % loss each way, 10 ms jitter on "
                f"every primary, fast profile): false failovers {result['false_failovers']}"
            )
            print(
                f"agent (nishiki, default policy): CPU {result['agent_cpu_ratio'] * 100:.1f} % "
                f"of one core, RSS {result['agent_rss_bytes'] / 2**20:.1f} MiB"
            )
        if not args.skip_rate:
            rates = probe_rate(topo_path, work)
            print("\nprobe rate one core sustains (32 concurrent probes, primary path):")
            for name, (rate, cpu) in rates.items():
                print(f"  {name:<5} {rate:>6.0f} probes/s at {cpu * 100:.0f} % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
