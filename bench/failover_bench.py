"""Failover benchmark: outage per cut, noise, agent cost and probe load, in the lab.

    sudo .venv/bin/python -m bench.failover_bench [--cuts 20] [--profiles fast,...]
        [--soak 600] [--loss-seconds 120] [--rtt-seconds 60] [--steady 60]
        [--burners 2] [--no-frr] [--json PATH] [--under-load]
        [--skip-cuts] [--skip-cost] [--skip-dc] [--skip-noise] [--skip-soak]
        [--skip-load] [--skip-rate]

About 30 minutes with the defaults. Progress lines go to stdout as it runs; each
section prints a Markdown table when it is done (the shape of BENCHMARKS.md's
"Failover" section), a summary against the targets closes the run, and every
figure is written as JSON to --json (default: a file in a new temporary
directory, printed at the start and the end; rewritten after each section, so
an interrupted run keeps what it measured).

It builds its own lab (namespaces nw-*) and refuses to start while any nw-*
namespace exists: someone else's lab must not be taken down by this one.

Sections, in order:

1. **Steady window, default profile** (`--steady` s after `--warmup` s, no
   faults, four agents running): each agent's CPU (utime+stime from
   /proc/PID/stat, percent of one core; mean over the window and the worst
   5 s slice) and RSS (VmRSS; mean and max of 5 s samples). Agents are found
   from the lab's record (lab.json) and checked by their command line.
   In the same window, the probe load on the data center, per town path,
   counted at the data center: an nftables table of our own (`inet nwbench`)
   in nw-dc counts TCP SYNs (SYN without ACK) to the service (10.200.0.10:8080)
   per path source address, and is deleted afterwards. A TCP probe and an
   HTTP probe each open one connection, so SYNs are both; the agents' own
   counters (netwatch_probe_results_total by kind) split them. Without `nft`
   (or if the table cannot be loaded) a packet socket in nw-dc counts the
   same SYNs, and the report says so.
2. **Cuts, per profile**: the four towns are cut in parallel, each
   `cuts / 4` times at a random phase; per cut the data-plane outage (the
   longest gap seen by netwatch.lab.observer: a TCP connect from the town
   every 10 ms over its real routes) and the agent's own figure (fault
   suspected -> routes applied, netwatch_last_failover_duration_seconds).
3. **Noise, default profile**, on every town's primary at once (each town
   counts for itself; four agents busy together is the harder case on a small
   machine): (a) 10 % random loss each way for `--loss-seconds`; (b) a +60 ms
   RTT step for `--rtt-seconds` (each direction's one-way delay set to its
   lab profile's delay + 30 ms); (c) the soak, 3 % loss each way and 10 ms
   jitter for `--soak` s. A route change is counted independently by a
   netlink listener in the town's namespace (RTM_NEWROUTE/RTM_DELROUTE for
   the data-center prefix in the main table; a change of outgoing interface
   is one change) from before the impairment until 5 s after it is lifted;
   the agent's own count (netwatch_failovers_total) is reported beside it.
   Impairments are reset to the topology's profiles afterwards, always.
4. **Under load** (`--under-load` runs only this): two CPU-bound processes
   and the FRR churn of bench/load.py (namespaces bfdload-a/b with zebra and
   bfdd, BFD at 50 ms x 3, brought up and torn down over and over) start
   first; the lab and its agents are brought up and the towns cut (`--cuts`,
   default profile) while they run. Without FRR (`apt-get install frr`) the
   run has the burners only, and says so.
5. **Probe rate** one process sustains per probe kind (32 in flight).

Bench-only policy changes, so that 20 cuts fit in one run: hold-down 2 s
and flap damping off for every profile (they only delay the failback
between cuts, never the failover that is measured; in the noise cases they
make every false failover count, none is hidden by damping).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import yaml
from prometheus_client.parser import text_string_to_metric_families

from loadprobe import netpath
from netwatch.constants import MAIN_TABLE
from netwatch.emulator.control import EmulatorClient, EmulatorError, LinkState
from netwatch.emulator.netns import entered
from netwatch.errors import LabError
from netwatch.lab import links
from netwatch.lab.links import Direction, Impairment
from netwatch.lab.namespaces import lab_namespaces_present
from netwatch.lab.observer import DataPlaneObserver
from netwatch.lab.plan import Link, Plan, make_plan
from netwatch.lab.procs import wait_until
from netwatch.lab.rundir import RunDir
from netwatch.lab.state import STATE_FILE, LabState, pids_with_marker
from netwatch.topology import Topology, load

if TYPE_CHECKING:  # mypy reads bench/ as top-level modules (it has no __init__.py)
    from load import UnderLoad, frr_status
else:
    from bench.load import UnderLoad, frr_status

ROOT = Path(__file__).resolve().parent.parent
PREFIX_PROBE = "10.200.0.10"
METRICS_PORT = 9470
NOISE_TAIL_S = 5.0  # a noise case counts until this long after the impairment is lifted
SAMPLE_STEP_S = 5.0  # CPU slices and RSS samples of the steady window

# The issue's targets, at the default policy.
TARGETS: dict[str, float] = {
    "outage_p50_s": 0.15,
    "outage_p95_s": 0.25,
    "outage_max_s": 0.5,
    "load_outage_p95_s": 0.5,
    "false_route_changes": 0,
    "agent_cpu_pct": 3.0,
    "agent_rss_mib": 64.0,
    "http_per_s_per_path": 2.0,
    "connects_per_s_per_path": 2.0,
}

_T0 = time.monotonic()
_print_lock = threading.Lock()


def progress(text: str) -> None:
    with _print_lock:
        print(f"[{(time.monotonic() - _T0) / 60:5.1f} min] {text}", flush=True)


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, input=stdin)
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


def probe_prefix(topo: Topology) -> IPv4Network:
    """The routed prefix that carries the data-center service."""
    address = IPv4Address(PREFIX_PROBE)
    return next(p for p in topo.routed_prefixes if address in p)


def sleep_progress(seconds: float, what: str, every: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(every, left))
        left = end - time.monotonic()
        if left > 1.0:
            progress(f"  {what}: {left:.0f} s to go")


# --- the agents' metrics ---------------------------------------------------------------------

Sample = tuple[str, dict[str, str], float]


def scrape(netns: str) -> list[Sample] | None:
    """Every sample of the town agent's Prometheus endpoint, or None."""
    try:
        with entered(netns):
            sock = socket.create_connection(("127.0.0.1", METRICS_PORT), timeout=2)
    except OSError:
        return None
    conn = http.client.HTTPConnection("127.0.0.1", METRICS_PORT, timeout=2)
    conn.sock = sock
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def metric_sum(samples: list[Sample] | None, name: str, **labels: str) -> float | None:
    if samples is None:
        return None
    values = [
        value
        for sample_name, have, value in samples
        if sample_name == name and all(have.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def agent_metric(netns: str, name: str) -> float | None:
    """Sum of a metric's samples on the town agent's Prometheus endpoint."""
    return metric_sum(scrape(netns), name)


# --- the lab ---------------------------------------------------------------------------------


def preflight() -> str | None:
    """Why the benchmark must not start, or None."""
    if os.geteuid() != 0:
        return "needs root (it builds the lab)"
    present = lab_namespaces_present()
    if present:
        return (
            f"lab namespaces exist ({', '.join(present)}): a lab is up, maybe someone else's. "
            "The benchmark builds its own lab and would collide with it; take that lab down "
            "first (`netwatch lab down --run-dir ...`) if it is yours"
        )
    return None


class LabSession:
    """`netwatch lab up` on entry (its own run directory), `lab down` on exit."""

    def __init__(
        self,
        topo_path: Path,
        work: Path,
        name: str,
        *,
        agents: bool = True,
        policy: str | None = None,
    ) -> None:
        self.topo_path = topo_path
        self.topo = load(topo_path)
        self.plan: Plan = make_plan(self.topo)
        self.run_dir = str(work / f"run-{name}")
        self.name = name
        self.agents = agents
        self.policy = policy
        self.up_seconds = 0.0

    def __enter__(self) -> LabSession:
        argv = ["lab", "up", "--no-rtt", "--topology", str(self.topo_path)]
        argv += ["--run-dir", self.run_dir]
        if self.agents:
            argv.append("--agents")
            if self.policy:
                argv += ["--policy", self.policy]
        progress(f"lab up ({self.name}{', agents ' + (self.policy or '') if self.agents else ''})")
        started = time.monotonic()
        try:
            netwatch(*argv)
        except BaseException:
            # Only a lab that recorded itself in *our* run directory is ours to take
            # down (`lab up` refuses before recording anything when another lab is up).
            if Path(self.run_dir, STATE_FILE).exists():
                self._down()
            raise
        self.up_seconds = time.monotonic() - started
        progress(f"lab is up in {self.up_seconds:.1f} s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._down()

    def _down(self) -> None:
        try:
            netwatch("lab", "down", "--topology", str(self.topo_path), "--run-dir", self.run_dir)
            progress(f"lab down ({self.name})")
        except Exception as exc:  # never hide the error that brought us here
            progress(f"! lab down ({self.name}) failed: {exc}")

    def netns(self, town: str) -> str:
        return self.plan.nodes[town].netns

    def wait_all_primary(self, timeout: float) -> list[str]:
        """Wait until every town routes over its primary and its agent has
        judged every path (a slow profile's first round comes ~10 s after
        start: a cut before it is a start-up, not a failover); the towns
        that do not."""
        late = []
        deadline = time.monotonic() + timeout
        for town in self.topo.towns:
            left = max(0.1, deadline - time.monotonic())
            netns, primary = self.netns(town.id), town.primary.interface

            def ready(netns: str = netns, primary: str = primary) -> bool:
                unknown = metric_sum(scrape(netns), "netwatch_path_state", state="unknown")
                return unknown == 0.0 and route_dev(netns) == primary

            if not wait_until(ready, timeout=left, step=0.1):
                late.append(town.id)
        return late


# --- cuts ------------------------------------------------------------------------------------


@dataclass
class CutResult:
    town: str
    outage_s: float
    agent_s: float | None
    route_s: float


@dataclass
class ProfileRun:
    profile: str
    label: str
    cuts: list[CutResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_town(
    session: LabSession,
    town_id: str,
    cuts: int,
    detect_max: float,
    back_max: float,
    out: ProfileRun,
    lock: threading.Lock,
    stop: threading.Event,
) -> None:
    plan, topo = session.plan, session.topo
    town = topo.town(town_id)
    netns = plan.nodes[town_id].netns
    link = plan.link_for(town_id, "primary")
    client = EmulatorClient(RunDir.of(session.run_dir).control_socket(link.id))
    primary_if, backup_if = town.primary.interface, town.backups[0].interface
    rng = random.Random(town_id)
    with DataPlaneObserver(netns, str(plan.app_address), plan.app_port) as obs:
        for i in range(cuts):
            if stop.is_set():
                return
            if not wait_until(lambda: route_dev(netns) == primary_if, timeout=back_max, step=0.05):
                with lock:
                    out.failures.append(f"{town_id} cut {i}: never back on the primary")
                return
            time.sleep(rng.uniform(1.0, 2.0))  # a random phase against the probe cadence
            cut_at = time.monotonic()
            client.cut()
            try:
                if not wait_until(
                    lambda: route_dev(netns) == backup_if, timeout=detect_max, step=0.005
                ):
                    with lock:
                        out.failures.append(f"{town_id} cut {i}: no failover in {detect_max:g} s")
                    continue
                routed = time.monotonic()
                flowing_after = routed + 0.2
                wait_until(lambda: (obs.last_ok() or 0) > flowing_after, timeout=5.0, step=0.01)  # noqa: B023
                outage = obs.longest_gap(since=cut_at - 0.5)
                agent_s = agent_metric(netns, "netwatch_last_failover_duration_seconds")
            finally:
                client.restore()
            with lock:
                out.cuts.append(CutResult(town_id, outage, agent_s, routed - cut_at))
            progress(
                f"  {out.label}: {town_id} cut {i + 1}/{cuts}: outage {outage:.3f} s, "
                f"agent {_fmt_s(agent_s)}"
            )


def run_cuts(session: LabSession, profile: str, cuts: int, label: str) -> ProfileRun:
    topo = session.topo
    policy = topo.policy.profile(profile)
    detect_max = policy.interval * (policy.fall + 2) + policy.timeout + 10.0
    back_max = policy.interval * (policy.rise + 2) + policy.failback_holddown + 60.0
    result = ProfileRun(profile, label)
    lock, stop = threading.Lock(), threading.Event()
    per_town = max(1, -(-cuts // len(topo.towns)))
    late = session.wait_all_primary(timeout=back_max)
    if late:
        result.failures.append(f"not settled on the primary before the cuts: {', '.join(late)}")
    progress(f"{label}: {per_town} cuts per town, {len(topo.towns)} towns in parallel")
    started = time.monotonic()
    threads = [
        threading.Thread(
            target=run_town,
            args=(session, t.id, per_town, detect_max, back_max, result, lock, stop),
            name=f"cuts-{t.id}",
            daemon=True,
        )
        for t in topo.towns
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stop.set()
    result.seconds = time.monotonic() - started
    return result


def quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p95 = ordered[max(0, min(len(ordered) - 1, -(-95 * len(ordered) // 100) - 1))]
    return statistics.median(ordered), p95, ordered[-1]


def cuts_summary(run: ProfileRun) -> dict[str, Any]:
    outages = [c.outage_s for c in run.cuts]
    agents = [c.agent_s for c in run.cuts if c.agent_s is not None]
    out: dict[str, Any] = {
        "profile": run.profile,
        "label": run.label,
        "cuts": len(outages),
        "seconds": run.seconds,
        "failures": list(run.failures),
        "per_cut": [asdict(c) for c in run.cuts],
    }
    if outages:
        out["outage_p50_s"], out["outage_p95_s"], out["outage_max_s"] = quantiles(outages)
    if agents:
        out["agent_p50_s"], out["agent_p95_s"], out["agent_max_s"] = quantiles(agents)
    return out


# --- agent cost ------------------------------------------------------------------------------


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_agent(pid: int, town: str) -> bool:
    argv = _argv(pid)
    if not argv or os.path.basename(argv[0]) == "ip":  # `ip netns exec` before its exec
        return False
    joined = " ".join(argv)
    return "netwatch.cli agent" in joined and f"--town {town}" in joined


def agent_pids(run_dir: str, towns: Sequence[str]) -> dict[str, int]:
    """Each town's agent process: the lab's record, checked by its command line;
    failing that, a scan of /proc for the agent with this run's spool."""
    state = LabState.load(run_dir)
    pids: dict[str, int] = {}
    for town in towns:
        record = None
        if state is not None:
            record = next((p for p in state.processes if p.name == f"agent {town}"), None)
        if record is not None and record.alive() and _is_agent(record.pid, town):
            pids[town] = record.pid
            continue
        found = [
            pid
            for pid in pids_with_marker(f"--spool {RunDir.of(run_dir).agent_spool(town)}")
            if _is_agent(pid, town)
        ]
        if found:
            pids[town] = min(found)
    return pids


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (every thread), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass
class AgentCost:
    town: str
    pid: int
    seconds: float = 0.0
    cpu_mean_pct: float | None = None
    cpu_max_pct: float | None = None  # the worst SAMPLE_STEP_S slice
    rss_mean_mib: float | None = None
    rss_max_mib: float | None = None
    samples: int = 0
    died: bool = False


def sample_agents(pids: dict[str, int], seconds: float, step: float) -> dict[str, AgentCost]:
    """CPU and RSS of each agent over `seconds`, sampled every `step` seconds."""
    costs = {town: AgentCost(town, pid) for town, pid in pids.items()}
    start_cpu = {town: cpu_seconds(pid) for town, pid in pids.items()}
    last_cpu = dict(start_cpu)
    start = last_t = time.monotonic()
    slices: dict[str, list[float]] = {town: [] for town in pids}
    rss: dict[str, list[int]] = {town: [] for town in pids}
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(step, end - now))
        now = time.monotonic()
        for town, pid in pids.items():
            cpu, mem = cpu_seconds(pid), rss_bytes(pid)
            before = last_cpu[town]
            if cpu is None or mem is None or before is None:
                costs[town].died = True
                continue
            if now > last_t:
                slices[town].append((cpu - before) / (now - last_t) * 100.0)
            rss[town].append(mem)
            last_cpu[town] = cpu
        last_t = now
    wall = time.monotonic() - start
    for town, cost in costs.items():
        first, final = start_cpu[town], last_cpu[town]
        cost.seconds = wall
        cost.samples = len(rss[town])
        if first is not None and final is not None and wall > 0 and not cost.died:
            cost.cpu_mean_pct = (final - first) / wall * 100.0
        if slices[town]:
            cost.cpu_max_pct = max(slices[town])
        if rss[town]:
            cost.rss_mean_mib = statistics.fmean(rss[town]) / 2**20
            cost.rss_max_mib = max(rss[town]) / 2**20
    return costs


# --- probe load on the data center -----------------------------------------------------------


class SynCounter(Protocol):
    method: str

    def start(self) -> None: ...

    def read(self) -> dict[str, int]: ...

    def close(self) -> None: ...


ALL = "all"  # the counter of every SYN to the service, whatever its source


def nft_ruleset(table: str, host: str, port: int, sources: dict[str, str]) -> str:
    """One counter per source address; add-then-delete first, so that a table
    left by a killed run is replaced in the same transaction."""
    syn = f"ip daddr {host} tcp dport {port} tcp flags & (syn | ack) == syn"
    rules = [
        f'\t\tip saddr {address} {syn} counter comment "{label}"'
        for label, address in sources.items()
    ]
    rules.append(f'\t\t{syn} counter comment "{ALL}"')
    return "\n".join(
        [
            f"table inet {table} {{}}",
            f"delete table inet {table}",
            f"table inet {table} {{",
            "\tchain syn {",
            "\t\ttype filter hook input priority 0; policy accept;",
            *rules,
            "\t}",
            "}",
            "",
        ]
    )


def parse_nft_json(text: str) -> dict[str, int]:
    """`nft -j list table ...`: packets of each commented counter rule."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    counts: dict[str, int] = {}
    items = data.get("nftables", []) if isinstance(data, dict) else []
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or not isinstance(rule.get("comment"), str):
            continue
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict) and isinstance(counter.get("packets"), int):
                counts[rule["comment"]] = counter["packets"]
    return counts


_NFT_PACKETS = re.compile(r"\bcounter packets (\d+) bytes \d+")
_NFT_COMMENT = re.compile(r'\bcomment "([^"]*)"')


def parse_nft_text(text: str) -> dict[str, int]:
    """`nft list table ...` (plain): packets of each commented counter rule."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        packets, comment = _NFT_PACKETS.search(line), _NFT_COMMENT.search(line)
        if packets and comment:
            counts[comment.group(1)] = int(packets.group(1))
    return counts


class NftSynCounter:
    """A table of our own in the data center's namespace, deleted on close()."""

    TABLE = "nwbench"
    method = "nftables counters in nw-dc (table inet nwbench)"

    def __init__(self, netns: str, host: str, port: int, sources: dict[str, str]) -> None:
        self.netns = netns
        self.host, self.port = host, port
        self.sources = sources
        self.nft = shutil.which("nft") or "/usr/sbin/nft"
        self._loaded = False

    def _nft(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        return sh("ip", "netns", "exec", self.netns, self.nft, *args, check=check, stdin=stdin)

    def start(self) -> None:
        self._loaded = True  # from here on, close() has something to delete
        self._nft(
            "-f", "/dev/stdin", stdin=nft_ruleset(self.TABLE, self.host, self.port, self.sources)
        )
        if not self.read():
            raise RuntimeError("nft: the table was loaded but its counters cannot be read")

    def read(self) -> dict[str, int]:
        counts = parse_nft_json(self._nft("-j", "list", "table", "inet", self.TABLE, check=False))
        if not counts:
            counts = parse_nft_text(self._nft("list", "table", "inet", self.TABLE, check=False))
        return counts

    def close(self) -> None:
        if self._loaded:
            self._nft("delete", "table", "inet", self.TABLE, check=False)
            self._loaded = False


ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6


def syn_source(packet: bytes, host: bytes, port: int) -> bytes | None:
    """The source address of an IPv4 TCP SYN (no ACK) to host:port, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_TCP:
        return None
    if packet[16:20] != host:
        return None
    if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:  # a later fragment: no TCP header
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 14:
        return None
    dport = struct.unpack_from("!H", packet, ihl + 2)[0]
    flags = packet[ihl + 13]
    if dport != port or flags & 0x12 != 0x02:
        return None
    return packet[12:16]


class PacketSynCounter:
    """The same count without nftables: a packet socket in the data center's
    namespace sees every IPv4 packet that arrives there (in a thread)."""

    method = "packet socket in nw-dc (nft not available)"

    def __init__(self, netns: str | None, host: str, port: int, sources: dict[str, str]) -> None:
        self.netns = netns
        self.host = socket.inet_aton(host)
        self.port = port
        self.labels = {socket.inet_aton(address): label for label, address in sources.items()}
        self.counts: dict[str, int] = dict.fromkeys([*sources, ALL], 0)
        self.drops = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.netns is None:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        else:
            with entered(self.netns):
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="syn-counter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                packet, address = sock.recvfrom(128)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            source = syn_source(packet, self.host, self.port)
            if source is None:
                continue
            with self._lock:
                self.counts[ALL] += 1
                label = self.labels.get(source)
                if label is not None:
                    self.counts[label] += 1

    def read(self) -> dict[str, int]:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
                self.drops += struct.unpack("II", stats)[1]
        with self._lock:
            return dict(self.counts)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def open_syn_counter(
    netns: str, host: str, port: int, sources: dict[str, str]
) -> tuple[SynCounter, str]:
    """nftables if it works here, else the packet socket; and a note why."""
    note = ""
    if shutil.which("nft"):
        nft = NftSynCounter(netns, host, port, sources)
        try:
            nft.start()
            return nft, note
        except (RuntimeError, OSError) as exc:
            nft.close()
            note = f"nftables failed ({exc}); counted with a packet socket instead"
    else:
        note = "nft is not installed (apt-get install nftables); counted with a packet socket"
    packets = PacketSynCounter(netns, host, port, sources)
    packets.start()
    return packets, note


def active_path(samples: list[Sample] | None) -> str | None:
    """The path the agent says carries the traffic (netwatch_path_active == 1)."""
    for name, labels, value in samples or []:
        if name == "netwatch_path_active" and value == 1.0:
            return labels.get("path")
    return None


def probe_counts(samples: list[Sample] | None) -> dict[tuple[str, str], float]:
    """netwatch_probe_results_total summed over outcomes, by (path, kind)."""
    counts: dict[tuple[str, str], float] = {}
    for name, labels, value in samples or []:
        if name == "netwatch_probe_results_total":
            key = (labels.get("path", "?"), labels.get("kind", "?"))
            counts[key] = counts.get(key, 0.0) + value
    return counts


def steady_window(
    session: LabSession, seconds: float, warmup: float, *, cost: bool, dc: bool
) -> dict[str, Any]:
    """Agent CPU/RSS and data-center probe load over one window without faults."""
    topo, plan = session.topo, session.plan
    towns = [t.id for t in topo.towns]
    result: dict[str, Any] = {"seconds": seconds, "warmup_s": warmup}
    late = session.wait_all_primary(timeout=60.0)
    if late:
        result["not_on_primary"] = late
    progress(f"steady window: {warmup:.0f} s warm-up, then {seconds:.0f} s without faults")
    time.sleep(warmup)
    pids = agent_pids(session.run_dir, towns) if cost else {}
    if cost and len(pids) < len(towns):
        result["agents_not_found"] = sorted(set(towns) - set(pids))
    counter: SynCounter | None = None
    if dc:
        service = topo.datacenter.targets.tcp
        sources = {f"{t.id}/{p.name}": str(p.address.ip) for t in topo.towns for p in t.paths}
        counter, note = open_syn_counter(
            plan.nodes[plan.dc_node].netns, str(service.host), service.port, sources
        )
        result["dc_method"], result["dc_note"] = counter.method, note
        if note:
            progress(f"  data-center counters: {note}")
    try:
        before = {t: probe_counts(scrape(session.netns(t))) for t in towns}
        syn0 = counter.read() if counter else {}
        t0 = time.monotonic()
        if pids:
            costs = sample_agents(pids, seconds, SAMPLE_STEP_S)
            result["agents"] = {town: asdict(c) for town, c in costs.items()}
        else:
            sleep_progress(seconds, "steady window")
        syn1 = counter.read() if counter else {}
        wall = time.monotonic() - t0
        after = {t: probe_counts(scrape(session.netns(t))) for t in towns}
    finally:
        if counter is not None:
            counter.close()
    if isinstance(counter, PacketSynCounter):
        result["dc_packet_drops"] = counter.drops
    paths: dict[str, dict[str, Any]] = {}
    for town in topo.towns:
        for path in town.paths:
            label = f"{town.id}/{path.name}"
            entry: dict[str, Any] = {"address": str(path.address.ip)}
            if counter is not None and label in syn1:
                entry["connects_per_s_dc"] = (syn1[label] - syn0.get(label, 0)) / wall
            for kind in ("icmp", "tcp", "http"):
                key = (path.name, kind)
                if key in after[town.id]:
                    delta = after[town.id][key] - before[town.id].get(key, 0.0)
                    entry[f"{kind}_probes_per_s"] = delta / wall
            paths[label] = entry
    result["paths"] = paths
    result["window_s"] = wall
    if counter is not None and ALL in syn1:
        result["connects_per_s_dc_all"] = (syn1[ALL] - syn0.get(ALL, 0)) / wall
    result["pids"] = pids
    return result


# --- route changes, seen from the kernel -----------------------------------------------------

NETLINK_ROUTE = 0
RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_TABLE = 1, 4, 6, 15
_NLMSG = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")


@dataclass(frozen=True)
class RouteMessage:
    deleted: bool
    dst: IPv4Network
    table: int
    oif: int | None
    priority: int


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_route_messages(data: bytes) -> list[RouteMessage]:
    """IPv4 RTM_NEWROUTE / RTM_DELROUTE messages of one netlink datagram."""
    out: list[RouteMessage] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or offset + length > len(data):
            break
        body = offset + _NLMSG.size
        if kind in (RTM_NEWROUTE, RTM_DELROUTE) and length >= _NLMSG.size + _RTMSG.size:
            family, dst_len, _s, _tos, table, _proto, _scope, _type, _f = _RTMSG.unpack_from(
                data, body
            )
            if family == socket.AF_INET:
                dst, oif, priority = b"\0\0\0\0", None, 0
                attr, end = body + _RTMSG.size, offset + length
                while attr + _RTA.size <= end:
                    rta_len, rta_type = _RTA.unpack_from(data, attr)
                    if rta_len < _RTA.size:
                        break
                    value = data[attr + _RTA.size : attr + rta_len]
                    if rta_type == RTA_DST and len(value) == 4:
                        dst = value
                    elif rta_type == RTA_OIF and len(value) == 4:
                        oif = struct.unpack("=I", value)[0]
                    elif rta_type == RTA_PRIORITY and len(value) == 4:
                        priority = struct.unpack("=I", value)[0]
                    elif rta_type == RTA_TABLE and len(value) == 4:
                        table = struct.unpack("=I", value)[0]
                    attr += _align(rta_len)
                out.append(
                    RouteMessage(
                        kind == RTM_DELROUTE,
                        IPv4Network((IPv4Address(dst), dst_len), strict=False),
                        table,
                        oif,
                        priority,
                    )
                )
        offset += _align(length)
    return out


class RouteMonitor:
    """Every change of a town's main-table route to `prefix` (its outgoing
    interface, or its removal), from the kernel's netlink route events: an
    observer of the routes that does not ask the agent, and misses no flip
    between two samples."""

    def __init__(self, netns: str, prefix: IPv4Network, interfaces: Sequence[str]) -> None:
        self.netns = netns
        self.prefix = prefix
        self.interfaces = list(interfaces)
        self.changes: list[tuple[float, str | None]] = []
        self.overruns = 0  # ENOBUFS: events lost, state read again
        self.initial: str | None = None
        self._dev: str | None = None
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with entered(self.netns):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            for name in self.interfaces:
                with contextlib.suppress(OSError):
                    self._names[socket.if_nametoindex(name)] = name
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_IPV4_ROUTE))
        sock.settimeout(0.2)
        self._sock = sock
        self.initial = self._dev = route_dev(self.netns)  # read after subscribing: no gap
        self._thread = threading.Thread(target=self._run, name="route-monitor", daemon=True)
        self._thread.start()

    def _observe(self, dev: str | None) -> None:
        with self._lock:
            if dev != self._dev:
                self.changes.append((time.monotonic(), dev))
                self._dev = dev

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    self._observe(route_dev(self.netns))
                    continue
                return
            for msg in parse_route_messages(data):
                if msg.dst != self.prefix or msg.table != MAIN_TABLE or msg.priority != 0:
                    continue
                if msg.deleted:
                    self._observe(None)
                elif msg.oif is not None:
                    self._observe(self._names.get(msg.oif, f"ifindex {msg.oif}"))

    def stop(self) -> list[tuple[float, str | None]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._observe(route_dev(self.netns))  # a change the events did not show
        return self.changes


# --- noise -----------------------------------------------------------------------------------

Change = Callable[[Link], list[tuple[Direction, Impairment]]]


def loss_change(loss: float, jitter: float | None = None) -> Change:
    return lambda link: [("both", Impairment(loss=loss, jitter=jitter))]


def rtt_step(extra_rtt: float) -> Change:
    """Each direction's one-way delay: its lab profile's + half the RTT step."""

    def change(link: Link) -> list[tuple[Direction, Impairment]]:
        half = extra_rtt / 2
        return [
            ("up", Impairment(delay=link.a_to_b.delay + half)),
            ("down", Impairment(delay=link.b_to_a.delay + half)),
        ]

    return change


def _link_counters(session: LabSession, link: Link) -> LinkState | None:
    try:
        return EmulatorClient(RunDir.of(session.run_dir).control_socket(link.id), timeout=2.0).get()
    except EmulatorError:
        return None


def _loss_seen(before: LinkState | None, after: LinkState | None) -> dict[str, float | None]:
    """Loss the emulator really applied, per direction, between two states."""
    out: dict[str, float | None] = {}
    for name in ("a_to_b", "b_to_a"):
        if before is None or after is None:
            out[name] = None
            continue
        b, a = getattr(before, name).counters, getattr(after, name).counters
        lost = a.get("dropped_loss", 0) - b.get("dropped_loss", 0)
        passed = a.get("packets_passed", 0) - b.get("packets_passed", 0)
        out[name] = lost / (lost + passed) if lost + passed > 0 else None
    return out


def noise_case(
    session: LabSession, key: str, title: str, seconds: float, change: Change
) -> dict[str, Any]:
    """Impair every town's primary for `seconds`; count the route changes."""
    topo, plan = session.topo, session.plan
    progress(f"noise {key}: {title}, {seconds:.0f} s, every town's primary")
    result: dict[str, Any] = {"title": title, "seconds": seconds, "tail_s": NOISE_TAIL_S}
    late = session.wait_all_primary(timeout=90.0)
    if late:
        result["not_on_primary_at_start"] = late
    prefix = probe_prefix(topo)
    monitors: dict[str, RouteMonitor] = {}
    towns: dict[str, dict[str, Any]] = {}
    try:
        for town in topo.towns:
            monitor = RouteMonitor(
                session.netns(town.id), prefix, [p.interface for p in town.paths]
            )
            monitor.start()
            monitors[town.id] = monitor
        before = {
            t: agent_metric(session.netns(t), "netwatch_failovers_total") or 0.0 for t in monitors
        }
        counters0 = {
            t.id: _link_counters(session, plan.link_for(t.id, "primary")) for t in topo.towns
        }
        applied: dict[str, Any] = {}
        try:
            for town in topo.towns:
                link = plan.link_for(town.id, "primary")
                state = None
                for direction, impairment in change(link):
                    state = links.impair(
                        topo, session.run_dir, town.id, "primary", direction, impairment
                    )
                if state is not None:
                    applied[town.id] = {
                        "a_to_b": state.a_to_b.profile.to_json(),
                        "b_to_a": state.b_to_a.profile.to_json(),
                    }
            sleep_progress(seconds, f"noise {key}")
        finally:
            counters1 = {
                t.id: _link_counters(session, plan.link_for(t.id, "primary")) for t in topo.towns
            }
            for town in topo.towns:
                try:
                    links.reset(topo, session.run_dir, town.id, "primary")
                except LabError as exc:
                    progress(f"! {town.id}: could not reset the primary: {exc}")
        time.sleep(NOISE_TAIL_S)
        final = {t: scrape(session.netns(t)) for t in monitors}
        after = {t: metric_sum(final[t], "netwatch_failovers_total") or 0.0 for t in monitors}
    finally:
        for monitor in monitors.values():
            monitor.stop()
    for town in topo.towns:
        monitor = monitors[town.id]
        primary = town.primary.interface
        towns[town.id] = {
            "route_changes": len(monitor.changes),
            "away_from_primary": sum(1 for _, dev in monitor.changes if dev != primary),
            "changes": [dev for _, dev in monitor.changes],
            "initial_dev": monitor.initial,
            "agent_route_changes": after[town.id] - before[town.id],
            "netlink_overruns": monitor.overruns,
            "final_dev": monitor.changes[-1][1] if monitor.changes else monitor.initial,
            "agent_active_path": active_path(final.get(town.id)),
            "agent_routes_in_sync": metric_sum(final.get(town.id), "netwatch_routes_in_sync"),
            "applied_profile": applied.get(town.id),
            "loss_seen": _loss_seen(counters0.get(town.id), counters1.get(town.id)),
        }
    result["towns"] = towns
    total = sum(t["route_changes"] for t in towns.values())
    progress(f"noise {key}: {total} route changes in all")
    return result


def soak_cpu(session: LabSession, seconds: float, change: Change) -> dict[str, Any]:
    """The soak, with each agent's CPU over it (a busy figure, beside the steady one)."""
    towns = [t.id for t in session.topo.towns]
    pids = agent_pids(session.run_dir, towns)
    cpu0 = {t: cpu_seconds(p) for t, p in pids.items()}
    t0 = time.monotonic()
    result = noise_case(session, "soak", "3 % loss each way, 10 ms jitter", seconds, change)
    wall = time.monotonic() - t0
    during: dict[str, float | None] = {}
    for town, pid in pids.items():
        first, last = cpu0[town], cpu_seconds(pid)
        during[town] = (
            (last - first) / wall * 100.0 if first is not None and last is not None else None
        )
    result["agent_cpu_pct_during"] = during
    result["agent_rss_mib_after"] = {
        t: (r / 2**20 if (r := rss_bytes(p)) is not None else None) for t, p in pids.items()
    }
    return result


# --- under load ------------------------------------------------------------------------------


def run_under_load(
    topo_path: Path, work: Path, profile: str, cuts: int, burners: int, frr: bool
) -> dict[str, Any]:
    progress(f"under load: {burners} CPU burners" + (" and the FRR churn" if frr else ""))
    out: dict[str, Any] = {}
    with UnderLoad(burners=burners, frr=frr, log=progress) as load:
        if load.frr_note:
            progress(f"  {load.frr_note}")
        time.sleep(3.0)  # the burners running, the churn's first round under way
        label = f"{profile} under load" + ("" if load.churn else " (CPU burners only, no FRR)")
        with LabSession(topo_path, work, "load", policy=profile) as session:
            out["lab_up_s"] = session.up_seconds
            run = run_cuts(session, profile, cuts, label)
            out.update(cuts_summary(run))
    out["load"] = load.summary()
    return out


# --- probe rate one core sustains (unchanged) ------------------------------------------------

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
    with LabSession(topo_path, work, "rate", agents=False) as session:
        progress("probe rate: 5 s per kind, 32 in flight, from nw-nishiki")
        out = sh(
            "ip",
            "netns",
            "exec",
            session.netns("nishiki"),
            sys.executable,
            "-c",
            PROBE_RATE_SCRIPT,
            str(topo_path),
        )
    rates = {}
    for line in out.splitlines():
        name, rate, cpu = line.split()
        rates[name] = (float(rate), float(cpu))
    return rates


# --- the report ------------------------------------------------------------------------------


def _fmt_s(value: float | None) -> str:
    return f"{value:.3f} s" if value is not None else "-"


def _fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return f"{value:{spec}}{unit}" if value is not None else "-"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded; every column but the first right-aligned."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (widths[0] + 2), *("-" * (w + 1) + ":" for w in widths[1:])]
    return "\n".join([line(headers), "|" + "|".join(rule) + "|", *(line(r) for r in rows)])


def render_cuts(runs: Sequence[dict[str, Any]], default: str) -> str:
    headers = ["profile", "cuts", "outage p50", "p95", "max", "agent p50", "p95", "max"]
    rows = []
    notes = []
    for run in runs:
        name = f"`{run['profile']}`" + (" (default)" if run["profile"] == default else "")
        if "under load" in run["label"]:
            name = f"`{run['profile']}` {run['label'].removeprefix(run['profile']).strip()}"
        rows.append(
            [
                name,
                str(run["cuts"]),
                _fmt_s(run.get("outage_p50_s")),
                _fmt_s(run.get("outage_p95_s")),
                _fmt_s(run.get("outage_max_s")),
                _fmt_s(run.get("agent_p50_s")),
                _fmt_s(run.get("agent_p95_s")),
                _fmt_s(run.get("agent_max_s")),
            ]
        )
        notes += [f"  ! {run['label']}: {f}" for f in run.get("failures", [])]
    return "\n".join([md_table(headers, rows), *notes])


def render_cost(steady: dict[str, Any], towns: Sequence[str], profile: str) -> str:
    agents: dict[str, dict[str, Any]] = steady.get("agents", {})
    headers = [f"agent cost, `{profile}`, {steady['seconds']:.0f} s steady, four agents", *towns]
    rows = [
        [
            "CPU, % of one core (mean)",
            *(_fmt(agents.get(t, {}).get("cpu_mean_pct"), ".1f", " %") for t in towns),
        ],
        [
            f"CPU, worst {SAMPLE_STEP_S:.0f} s",
            *(_fmt(agents.get(t, {}).get("cpu_max_pct"), ".1f", " %") for t in towns),
        ],
        ["RSS, MiB (mean)", *(_fmt(agents.get(t, {}).get("rss_mean_mib"), ".1f") for t in towns)],
        ["RSS, MiB (max)", *(_fmt(agents.get(t, {}).get("rss_max_mib"), ".1f") for t in towns)],
    ]
    lines = [md_table(headers, rows)]
    if steady.get("agents_not_found"):
        lines.append(f"  ! agent process not found: {', '.join(steady['agents_not_found'])}")
    return "\n".join(lines)


def render_dc(steady: dict[str, Any], profile: str) -> str:
    counted = "nft" if steady.get("dc_method") == NftSynCounter.method else "packet socket"
    headers = [
        f"probe load on the data center, `{profile}`, per path",
        f"connects/s ({counted}, independent)",
        "TCP probes/s (agent)",
        "HTTP probes/s (agent)",
        "ICMP probes/s (agent)",
    ]
    rows = [
        [
            label,
            _fmt(entry.get("connects_per_s_dc")),
            _fmt(entry.get("tcp_probes_per_s")),
            _fmt(entry.get("http_probes_per_s")),
            _fmt(entry.get("icmp_probes_per_s"), ".1f"),
        ]
        for label, entry in steady.get("paths", {}).items()
    ]
    lines = [md_table(headers, rows)]
    lines.append(
        f"  connects counted by: {steady.get('dc_method', '-')}; probes/s: the agents' own "
        "netwatch_probe_results_total (every outcome)"
    )
    if steady.get("dc_note"):
        lines.append(f"  note: {steady['dc_note']}")
    if steady.get("connects_per_s_dc_all") is not None:
        lines.append(f"  all SYNs to the service: {steady['connects_per_s_dc_all']:.2f}/s")
    if steady.get("dc_packet_drops"):
        lines.append(f"  ! the packet socket dropped {steady['dc_packet_drops']} packets")
    return "\n".join(lines)


def render_noise(noise: dict[str, dict[str, Any]], towns: Sequence[str], profile: str) -> str:
    headers = [f"false route changes, `{profile}` (kernel; agent's own)", *towns]
    rows = []
    notes = []
    for case in noise.values():
        per = case.get("towns", {})
        cells, applied = [], []
        for t in towns:
            entry = per.get(t)
            if entry is None:
                cells.append("-")
                continue
            cells.append(f"{entry['route_changes']} ({entry['agent_route_changes']:.0f})")
            seen = entry.get("loss_seen") or {}
            up, down = _pct(seen.get("a_to_b")), _pct(seen.get("b_to_a"))
            if (up or 0) > 0 or (down or 0) > 0:
                applied.append(f"{t} {_fmt(up, '.1f')}/{_fmt(down, '.1f')} %")
            if entry.get("netlink_overruns"):
                notes.append(
                    f"  ! {case['title']}, {t}: {entry['netlink_overruns']} netlink overruns"
                )
            if entry.get("initial_dev") is None:
                notes.append(f"  ! {case['title']}, {t}: no route to the data center at the start")
            if entry.get("agent_routes_in_sync") == 0.0:
                notes.append(f"  ! {case['title']}, {t}: the agent says its routes are not in sync")
        rows.append([f"{case['title']}, {case['seconds']:.0f} s", *cells])
        if case.get("agent_cpu_pct_during"):
            cpu = case["agent_cpu_pct_during"]
            rows.append(["  agent CPU during it", *(_fmt(cpu.get(t), ".1f", " %") for t in towns)])
        if applied:
            notes.append(
                f"  {case['title']}: loss the emulator applied, up/down: {', '.join(applied)}"
            )
        if case.get("not_on_primary_at_start"):
            late = ", ".join(case["not_on_primary_at_start"])
            notes.append(f"  ! {case['title']}: not on the primary at the start: {late}")
    return "\n".join([md_table(headers, rows), *notes])


def _pct(value: float | None) -> float | None:
    return value * 100.0 if value is not None else None


def render_load(load_run: dict[str, Any], quiet_up_s: float | None) -> str:
    load = load_run.get("load", {})
    lines = [f"under load: {load.get('label', '-')}"]
    burners = load.get("burners") or {}
    if burners.get("cores_used") is not None:
        lines.append(
            f"  CPU burners used {burners['cores_used']:.2f} cores "
            f"over {burners['wall_seconds']:.0f} s"
        )
    frr = load.get("frr")
    if frr:
        lines.append(
            f"  FRR churn ({frr['frr']}): {frr['rounds']} rounds, daemons up in "
            f"{frr['rounds_with_daemons']}, BFD up in {frr['rounds_bfd_up']} "
            f"(p50 {_fmt(frr.get('bfd_up_p50_s'), '.2f', ' s')} after bfdd started), "
            f"a round every {_fmt(frr.get('round_mean_s'), '.1f', ' s')}"
        )
        for error in frr.get("errors", []):
            lines.append(f"  ! FRR: {error}")
    if load.get("frr_note"):
        lines.append(f"  note: {load['frr_note']}")
    up = load_run.get("lab_up_s")
    if up is not None:
        quiet = f" (quiet: {quiet_up_s:.1f} s)" if quiet_up_s else ""
        lines.append(f"  lab up with agents took {up:.1f} s under load{quiet}")
    return "\n".join(lines)


def render_rate(rates: dict[str, Any]) -> str:
    headers = [
        "probe rate, one process, 32 in flight",
        "probes/s",
        "CPU of one core",
        "per CPU-second",
    ]
    rows = []
    for name, (rate, cpu) in rates.items():
        per = f"~{rate / cpu:,.0f}" if cpu > 0 else "-"
        rows.append([name, f"{rate:,.0f}", f"{cpu * 100:.0f} %", per])
    return md_table(headers, rows)


def evaluate(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, measured, target, met) for every target that was measured."""
    out: list[tuple[str, str, str, bool | None]] = []
    default = results.get("meta", {}).get("default_profile")
    quiet = next(
        (
            r
            for r in results.get("cuts", [])
            if r["profile"] == default and "under load" not in r["label"]
        ),
        None,
    )
    if quiet and "outage_p50_s" in quiet:
        for key, name in (
            ("outage_p50_s", "outage p50"),
            ("outage_p95_s", "outage p95"),
            ("outage_max_s", f"outage, worst of {quiet['cuts']}"),
        ):
            out.append(
                (name, _fmt_s(quiet[key]), f"<= {TARGETS[key]:g} s", quiet[key] <= TARGETS[key])
            )
    load = results.get("under_load")
    if load and "outage_p95_s" in load:
        out.append(
            (
                "outage p95 under load",
                _fmt_s(load["outage_p95_s"]),
                f"<= {TARGETS['load_outage_p95_s']:g} s",
                load["outage_p95_s"] <= TARGETS["load_outage_p95_s"],
            )
        )
    for case in results.get("noise", {}).values():
        total = sum(t["route_changes"] for t in case.get("towns", {}).values())
        out.append((f"false route changes: {case['title']}", str(total), "0", total == 0))
    agents = results.get("steady", {}).get("agents", {}).values()
    paths = results.get("steady", {}).get("paths", {}).values()
    worst = [
        ("agent CPU (worst agent's mean)", agents, "cpu_mean_pct", "agent_cpu_pct", " %", ".1f"),
        ("agent RSS (worst agent's max)", agents, "rss_max_mib", "agent_rss_mib", " MiB", ".1f"),
        ("HTTP requests/s per path (worst)", paths, "http_probes_per_s", "http_per_s_per_path",
         "", ".2f"),
        ("TCP connects/s per path at the DC (worst)", paths, "connects_per_s_dc",
         "connects_per_s_per_path", "", ".2f"),
    ]  # fmt: skip
    for title, rows, key, target, unit, spec in worst:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            top, limit = max(values), TARGETS[target]
            out.append((title, f"{top:{spec}}{unit}", f"<= {limit:g}{unit}", top <= limit))
    return out


def render_targets(results: dict[str, Any]) -> str:
    rows = [
        [name, measured, target, "met" if met else "NOT met"]
        for name, measured, target, met in evaluate(results)
    ]
    profile = results.get("meta", {}).get("default_profile", "?")
    return md_table([f"target, `{profile}`", "measured", "target", ""], rows)


def save_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def section(title: str, body: str) -> None:
    with _print_lock:
        print(f"\n## {title}\n\n{body}\n", flush=True)


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nft": shutil.which("nft"),
        "frr": frr_status()[1],
    }


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or "failover benchmark"
    parser = argparse.ArgumentParser(
        description=doc.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cuts", type=int, default=20, help="cuts per profile (default 20)")
    parser.add_argument("--profiles", default="fast,mwan3-default,pfsense-default")
    parser.add_argument("--soak", type=float, default=600.0, help="noise soak seconds (600)")
    parser.add_argument(
        "--loss-seconds", type=float, default=120.0, help="10 %% loss case, seconds (120)"
    )
    parser.add_argument(
        "--rtt-seconds", type=float, default=60.0, help="+60 ms RTT step case, seconds (60)"
    )
    parser.add_argument(
        "--steady", type=float, default=60.0, help="steady window for cost and DC load (60)"
    )
    parser.add_argument("--warmup", type=float, default=15.0, help="before the steady window")
    parser.add_argument("--burners", type=int, default=2, help="CPU burners under load (2)")
    parser.add_argument("--no-frr", action="store_true", help="under load: burners only")
    parser.add_argument("--json", type=Path, help="where to write every figure (JSON)")
    parser.add_argument(
        "--under-load", action="store_true", help="only the run under load (section 4)"
    )
    parser.add_argument("--skip-cuts", action="store_true", help="no quiet cuts")
    parser.add_argument("--skip-cost", action="store_true", help="no agent CPU/RSS")
    parser.add_argument("--skip-dc", action="store_true", help="no data-center probe load")
    parser.add_argument("--skip-noise", action="store_true", help="no 10 %% loss / RTT step")
    parser.add_argument("--skip-soak", action="store_true", help="no 3 %% loss soak")
    parser.add_argument("--skip-load", action="store_true", help="no run under load")
    parser.add_argument("--skip-rate", action="store_true", help="no probe-rate run")
    args = parser.parse_args(argv)
    if args.under_load:
        args.skip_cuts = args.skip_cost = args.skip_dc = True
        args.skip_noise = args.skip_soak = args.skip_rate = True
        args.skip_load = False
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # run every finally: lab down, load stopped, tables deleted


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_extras(
    session: LabSession, args: argparse.Namespace, results: dict[str, Any], save: Callable[[], None]
) -> None:
    """What only the default profile's session measures: the steady window
    before its cuts, the noise cases after them."""
    profile = session.policy or ""
    towns = [t.id for t in session.topo.towns]
    if not (args.skip_cost and args.skip_dc):
        steady = steady_window(
            session, args.steady, args.warmup, cost=not args.skip_cost, dc=not args.skip_dc
        )
        results["steady"] = steady
        save()
        if not args.skip_cost:
            section("Agent cost", render_cost(steady, towns, profile))
        if not args.skip_dc:
            section("Probe load on the data center", render_dc(steady, profile))


def default_noise(
    session: LabSession, args: argparse.Namespace, results: dict[str, Any], save: Callable[[], None]
) -> None:
    profile = session.policy or ""
    towns = [t.id for t in session.topo.towns]
    noise: dict[str, Any] = results.setdefault("noise", {})
    if not args.skip_noise:
        noise["loss"] = noise_case(
            session, "loss", "10 % loss each way", args.loss_seconds, loss_change(0.10)
        )
        save()
        noise["rtt"] = noise_case(
            session, "rtt", "+60 ms RTT step", args.rtt_seconds, rtt_step(0.060)
        )
        save()
    if not args.skip_soak:
        noise["soak"] = soak_cpu(session, args.soak, loss_change(0.03, 0.010))
        save()
    if noise:
        section("Noise", render_noise(noise, towns, profile))


def run_all(
    args: argparse.Namespace, work: Path, results: dict[str, Any], save: Callable[[], None]
) -> int:
    topo_path = bench_topology(work)
    topo = load(topo_path)
    default = topo.policy.default
    results["meta"]["default_profile"] = default
    results["meta"]["towns"] = [t.id for t in topo.towns]
    profiles = [p for p in args.profiles.split(",") if p]
    unknown = [p for p in profiles if p not in topo.policy.profiles]
    if unknown:
        print(f"failover_bench: unknown profiles {unknown}", file=sys.stderr)
        return 2
    profiles.sort(key=lambda p: p != default)  # the default first: its session does more
    extras = not (args.skip_cost and args.skip_dc and args.skip_noise and args.skip_soak)
    sessions = [p for p in profiles if not args.skip_cuts]
    if extras and default not in sessions:
        sessions.insert(0, default)
    for profile in sessions:
        with LabSession(topo_path, work, profile, policy=profile) as session:
            if profile == default:
                results["meta"]["lab_up_s"] = session.up_seconds
                default_extras(session, args, results, save)
            if not args.skip_cuts and profile in profiles:
                run = run_cuts(session, profile, args.cuts, profile)
                results["cuts"].append(cuts_summary(run))
                save()
                section(f"Failover, `{profile}`", render_cuts(results["cuts"][-1:], default))
            if profile == default:
                default_noise(session, args, results, save)
    if not args.skip_load:
        under = run_under_load(topo_path, work, default, args.cuts, args.burners, not args.no_frr)
        results["under_load"] = under
        save()
        body = [render_cuts([under], default), render_load(under, results["meta"].get("lab_up_s"))]
        section("Under load", "\n".join(body))
    if not args.skip_rate:
        rates = probe_rate(topo_path, work)
        results["probe_rate"] = {k: {"per_s": r, "cpu": c} for k, (r, c) in rates.items()}
        save()
        section("Probe rate", render_rate(rates))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = preflight()
    if problem:
        print(f"failover_bench: {problem}", file=sys.stderr)
        return 2
    json_path: Path = (
        args.json or Path(tempfile.mkdtemp(prefix="failover-bench-")) / "failover.json"
    )
    results: dict[str, Any] = {
        "meta": machine(),
        "targets": TARGETS,
        "args": vars(args),
        "cuts": [],
    }
    progress(f"figures go to {json_path}")

    def save() -> None:
        save_json(json_path, results)

    code = 1
    with _sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="failover-bench-work-") as tmp:
        try:
            code = run_all(args, Path(tmp), results, save)
        except KeyboardInterrupt:
            progress("interrupted: what was started has been taken down; partial figures kept")
            results["interrupted"] = True
            code = 130
        finally:
            save()
            try:
                print_summary(results)
            except Exception as exc:  # the figures are in the JSON file anyway
                progress(f"! summary could not be printed: {exc!r}")
            progress(f"every figure: {json_path}")
    return code


def print_summary(results: dict[str, Any]) -> None:
    default = results.get("meta", {}).get("default_profile", "")
    towns = list(results.get("meta", {}).get("towns", []))
    runs = list(results.get("cuts", []))
    if results.get("under_load", {}).get("cuts"):
        runs.append(results["under_load"])
    if runs:
        section("Summary: failover", render_cuts(runs, default))
    if results.get("noise"):
        section("Summary: noise", render_noise(results["noise"], towns, default))
    if results.get("steady", {}).get("agents"):
        section("Summary: agent cost", render_cost(results["steady"], towns, default))
    if results.get("steady", {}).get("paths"):
        section("Summary: probe load", render_dc(results["steady"], default))
    if results.get("under_load"):
        section(
            "Summary: under load",
            render_load(results["under_load"], results["meta"].get("lab_up_s")),
        )
    if results.get("probe_rate"):
        rates = {k: (v["per_s"], v["cpu"]) for k, v in results["probe_rate"].items()}
        section("Summary: probe rate", render_rate(rates))
    section("Targets", render_targets(results))


if __name__ == "__main__":
    sys.exit(main())
