"""The operations center under a fleet: the four towns, then 1,741 (every
municipality in Japan), each publishing its retained state once a second,
plus events, through a real Mosquitto on loopback.

    .venv/bin/python -m bench.opscenter_bench [--towns 4,1741] [--seconds 30] [--under-load]
                                              [--transport plain,tls]

For each fleet size it starts `netwatch opscenter` in its own process and
reports, over a steady window:

- its CPU (percent of one core, from /proc/<pid>/stat) and peak RSS;
- publish -> fleet latency: a probe town flips its active path every
  0.25 s and the bench polls the fleet until it shows the flip (p50, p99,
  max); the fleet metrics are rendered from that same state at scrape time;
- database rows written per second (netwatch_opscenter_db_rows_written_total);
- the time of one /metrics scrape (median and max of the scrapes taken
  during the window), and its size.

The simulated agents run in their own process over a few MQTT connections
(one per agent would measure the simulator, not the service).
`--under-load` adds two CPU-bound processes beside it (bench/load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import yaml

if TYPE_CHECKING:  # mypy reads bench/ as top-level modules (it has no __init__.py)
    from load import CpuBurners
else:
    from bench.load import CpuBurners
from netwatch import pki
from netwatch.messages import parse_ts
from netwatch.mqtt.broker import Broker, parse_broker
from netwatch.mqtt.mosquitto import ACL, tls_listener

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"cpu_percent": 50.0, "latency_p99_s": 1.0, "scrape_s": 0.5}  # at 1,741 towns
STATE_EVERY_S = 1.0
EVENT_EVERY_S = 60.0  # each town: a failover or a failback a minute (a stormy day)
METRICS_EVERY_S = 5.0
CONNECTIONS = 8
FLIP_EVERY_S = 0.25


# -- a fleet ------------------------------------------------------------------


def town_id(i: int) -> str:
    return f"m{i:04d}"


def fleet_topology(towns: int, out: Path) -> Path:
    """topology.yaml with `towns` towns (the real four first, so at least
    four), each with a primary and a backup path of its own addresses."""
    topo = yaml.safe_load((REPO / "topology.yaml").read_text(encoding="utf-8"))
    real = topo["towns"]
    template = real[0]
    generated = []
    for i in range(towns - len(real)):
        town = json.loads(json.dumps(template))
        town.update(id=town_id(i), name=f"自治体{i:04d}", cutover_week=1 + i % 52)
        for p, path in enumerate(town["paths"]):
            base = IPv4Address("10.64.0.0" if p == 0 else "172.24.0.0") + 4 * i
            path["address"] = f"{base + 2}/30"
            path["gateway"] = str(base + 1)
        generated.append(town)
    topo["towns"] = real + generated
    # Every path has its lab link (the topology says how the lab would build
    # it; the bench builds no lab).
    for town in generated:
        for path, router, up, down in (("primary", "lgwan", "lgwan-takanabe", "lgwan-takanabe"),
                                       ("backup", "flets", "adsl-up", "adsl-down")):  # fmt: skip
            topo["lab"]["links"].append(
                {"id": f"{town['id']}-{path}", "a": town["id"], "b": router, "path": path,
                 "a_to_b": up, "b_to_a": down}
            )  # fmt: skip
    path = out / "topology.yaml"
    path.write_text(yaml.safe_dump(topo, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# -- the broker and the service -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SIMULATOR_CN = "simulator"  # the simulated agents' one identity, allowed every town's topics


def make_pki(workdir: Path) -> Path:
    """A PKI for the TLS transport: the broker's, the operations center's and
    the simulator's certificates."""
    store = pki.Pki(workdir / "pki")
    pki.init(store, ["127.0.0.1"])
    for name in (pki.OPSCENTER_CN, SIMULATOR_CN):
        pki.issue(store, name)
    return store.root


def client_broker(port: int, pki_dir: Path | None, identity: str) -> Broker:
    if pki_dir is None:
        return parse_broker(f"mqtt://127.0.0.1:{port}")
    store = pki.Pki(pki_dir)
    return parse_broker(
        f"mqtts://127.0.0.1:{port}",
        ca=store.ca_cert,
        cert=store.cert(identity),
        key=store.key(identity),
    )


@contextlib.contextmanager
def mosquitto(workdir: Path, pki_dir: Path | None = None) -> Iterator[int]:
    """Plain TCP, or (with `pki_dir`) the fleet's TLS listener and ACL as the
    lab runs it, plus one identity that may write every town's topics (the
    simulated agents share a few connections)."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    if pki_dir is None:
        listener = f"listener {port} 127.0.0.1\nallow_anonymous true\n"
    else:
        acl = workdir / "acl"
        acl.write_text(f"{ACL}user {SIMULATOR_CN}\ntopic write netwatch/v1/#\n", encoding="utf-8")
        store = pki.Pki(pki_dir)
        listener = tls_listener(
            "127.0.0.1", port, ca=str(store.ca_cert), cert=str(store.cert(pki.BROKER)),
            key=str(store.key(pki.BROKER)), acl=str(acl),
        )  # fmt: skip
    conf.write_text(
        f"{listener}user root\nmax_queued_messages 100000\nmax_inflight_messages 0\n",
        encoding="utf-8",
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def opscenter(
    topology: Path, broker_port: int, workdir: Path, pki_dir: Path | None = None
) -> Iterator[tuple[int, int]]:
    port = free_port()
    log = open(workdir / "opscenter.log", "wb")  # noqa: SIM115  # closed below
    broker = client_broker(broker_port, pki_dir, pki.OPSCENTER_CN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "netwatch.cli", "opscenter", "--topology", str(topology),
         "--mqtt", str(broker), *broker.arguments(), "--listen", f"127.0.0.1:{port}",
         "--db", str(workdir / "opscenter.sqlite3"), "--log-level", "warning"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_port(port, timeout=120, proc=proc)
        yield proc.pid, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_port(
    port: int, *, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the service exited at start (code {proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port} after {timeout:g} s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- simulated agents (another process) ---------------------------------------


def simulate(broker: Broker, towns: list[str], probe: str, stop_at: float) -> None:
    # aiomqtt warns at each publish beyond 10 in flight: the simulator keeps 50.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    asyncio.run(_simulate(broker, towns, probe, stop_at))


async def _simulate(broker: Broker, towns: list[str], probe: str, stop_at: float) -> None:
    import aiomqtt

    from netwatch import messages as m
    from netwatch.health.state import PathState

    def state(town: str, active: str) -> m.StateMessage:
        now = m.utc_now()
        rtt = 0.012 + random.random() * 0.002
        return m.StateMessage(
            town=town, ts=now, active_path=active, all_down=False, route_backend="netlink",
            paths={
                "primary": m.PathStatus(state=PathState.UP, damped=False, since=now,
                                        loss_ratio=0.0, rtt_p50_s=rtt, rtt_p95_s=rtt * 1.2,
                                        jitter_s=0.001),
                "backup": m.PathStatus(state=PathState.UP, damped=False, since=now,
                                       loss_ratio=0.01, rtt_p50_s=0.031, rtt_p95_s=0.036,
                                       jitter_s=0.002),
            },
        )  # fmt: skip

    def event(town: str, n: int) -> m.EventMessage:
        back = n % 2 == 1
        return m.EventMessage(
            town=town, event=m.EventType.FAILBACK if back else m.EventType.FAILOVER,
            reason="simulated", from_path="backup" if back else "primary",
            to_path="primary" if back else "backup", duration_s=0.15,
            details={"kind": "failback" if back else "failover"},
        )  # fmt: skip

    # Payloads are rendered once per town; each second only the timestamp
    # changes (a byte replace), so the simulator keeps up with 1,741 towns.
    stamp = m.format_ts(m.utc_now()).encode()

    def template(town: str) -> tuple[str, bytes, str, bytes]:
        s = state(town, "primary")
        figures = {
            k: m.PathSummary(state=v.state, loss_ratio=v.loss_ratio, rtt_p50_s=v.rtt_p50_s)
            for k, v in s.paths.items()
        }
        # As a real agent's: its probe counters by path, kind and outcome.
        counts = {(p, k, o): 1000 for p in s.paths for k in ("icmp", "tcp", "http")
                  for o in ("ok", "timeout")}  # fmt: skip
        probes: dict[str, m.JSON] = {"rounds": 1000, "outcomes": m.outcomes_json(counts)}
        summary = m.MetricsMessage(town=town, ts=s.ts, paths=figures, probes=probes)
        return s.topic, s.to_json(), summary.topic, summary.to_json()

    async def agents(client: aiomqtt.Client, mine: list[str]) -> None:
        mine = [t for t in mine if t != probe]  # the flipper speaks for the probe
        rendered = {}
        for town in mine:
            topic, body, mtopic, mbody = template(town)
            ts = m.format_ts(m.StateMessage.from_json(body).ts).encode()
            rendered[town] = (topic, body.replace(ts, stamp), mtopic, mbody.replace(ts, stamp))
        batch = 50  # publishes in flight per connection
        sent = 0
        while time.time() < stop_at:
            start = time.monotonic()
            now = m.format_ts(m.utc_now()).encode()
            for first in range(0, len(mine), batch):
                jobs = []
                for town in mine[first : first + batch]:
                    topic, body, mtopic, mbody = rendered[town]
                    body_now = body.replace(stamp, now)
                    jobs.append(client.publish(topic, body_now, qos=1, retain=True))
                    if random.random() < STATE_EVERY_S / EVENT_EVERY_S:
                        sent += 1
                        e = event(town, sent)
                        jobs.append(client.publish(e.topic, e.to_json(), qos=1))
                    if random.random() < STATE_EVERY_S / METRICS_EVERY_S:
                        jobs.append(client.publish(mtopic, mbody.replace(stamp, now), qos=0))
                await asyncio.gather(*jobs)
                # Spread over the second, as towns do not publish in step.
                due = start + STATE_EVERY_S * (first + batch) / max(1, len(mine))
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await asyncio.sleep(max(0.0, start + STATE_EVERY_S - time.monotonic()))

    async def flipper(client: aiomqtt.Client) -> None:
        n = 0
        while time.time() < stop_at:
            n += 1
            active = "backup" if n % 2 else "primary"
            msg = state(probe, active)
            await client.publish(m.topic(probe, m.Kind.STATE), msg.to_json(), qos=1, retain=True)
            await asyncio.sleep(FLIP_EVERY_S)

    shares = [towns[i::CONNECTIONS] for i in range(CONNECTIONS)]
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                aiomqtt.Client(**broker.client_options(), identifier=f"sim-{i}")
            )
            for i in range(CONNECTIONS + 1)
        ]
        await asyncio.gather(
            *(agents(c, share) for c, share in zip(clients, shares, strict=False)),
            flipper(clients[-1]),
        )


# -- one measurement ----------------------------------------------------------


@dataclass
class Result:
    towns: int
    seconds: float
    under_load: bool
    cpu_percent: float
    rss_mib: float
    messages_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    latency_max_s: float
    latency_samples: int
    db_rows_per_s: float
    scrape_p50_s: float
    scrape_max_s: float
    scrape_bytes: int
    counters_scrape_max_s: float  # /metrics/counters, scraped half as often
    counters_scrape_bytes: int
    rejected: float
    transport: str = "plain"  # or "tls": the fleet's TLS listener, certificates and ACL


def measure(towns: int, seconds: float, under_load: bool, transport: str = "plain") -> Result:
    with tempfile.TemporaryDirectory(prefix="opscenter-bench-") as tmp:
        work = Path(tmp)
        topology = fleet_topology(towns, work)
        ids = [t["id"] for t in yaml.safe_load(topology.read_text(encoding="utf-8"))["towns"]]
        probe = ids[0]
        pki_dir = make_pki(work) if transport == "tls" else None
        with (
            mosquitto(work, pki_dir) as broker,
            opscenter(topology, broker, work, pki_dir) as (pid, port),
        ):
            base = f"http://127.0.0.1:{port}"
            warmup = 5.0 + towns / 400
            stop_at = time.time() + warmup + 1.5 * seconds + 2
            ids_file = work / "towns.json"
            ids_file.write_text(json.dumps(ids), encoding="utf-8")
            sim = subprocess.Popen(
                [sys.executable, "-m", "bench.opscenter_bench", "--simulate", str(broker),
                 "--towns-file", str(ids_file), "--probe", probe, "--until", str(stop_at),
                 *(["--pki", str(pki_dir)] if pki_dir else [])],
                cwd=REPO,
            )  # fmt: skip
            burners = CpuBurners(2) if under_load else None
            try:
                with httpx.Client(base_url=base, timeout=10) as http:
                    time.sleep(warmup)
                    if burners:
                        burners.start()
                    result = _window(http, pid, towns, seconds, probe, under_load)
                    result.transport = transport
                    return result
            finally:
                if burners:
                    burners.stop()
                try:
                    sim.wait(seconds + 30)
                except subprocess.TimeoutExpired:
                    sim.kill()
                if sim.returncode:
                    raise SystemExit(f"the simulated agents failed (exit {sim.returncode})")


def _window(
    http: httpx.Client, pid: int, towns: int, seconds: float, probe: str, under_load: bool
) -> Result:
    """First the cost, untouched by the bench (one scrape at each end), then
    the latency and the scrapes, polled."""
    first = http.get("/metrics").text
    rows0 = _counter(first, "netwatch_opscenter_db_rows_written_total")
    msgs0 = _counter(first, "netwatch_opscenter_messages_total")
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    rss = rss_mib(pid)
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        rss = max(rss, rss_mib(pid))
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    end = http.get("/metrics").text
    rows = _counter(end, "netwatch_opscenter_db_rows_written_total") - rows0
    msgs = _counter(end, "netwatch_opscenter_messages_total") - msgs0

    latencies: list[float] = []
    scrapes: list[float] = []
    scrape_bytes = 0
    last = http.get(f"/api/v1/towns/{probe}").json()["last_known"]["at"]
    t1 = time.monotonic()
    polled = threading.Event()

    probe_scrapes: list[float] = []
    probes_bytes = 0

    def scrape_every_2s() -> None:
        # Its own thread and connection: a scrape must not hold up the
        # latency poll (the service's load while scraping still counts).
        # The counters every other time, as Prometheus is configured
        # (15 s and 30 s; here 2 s and 4 s).
        nonlocal scrape_bytes, probes_bytes
        with httpx.Client(base_url=str(http.base_url), timeout=10) as scraper:
            tick = 0
            while not polled.wait(1.0):
                tick += 1  # /metrics at even seconds, the probes at every fourth odd one
                if tick % 4 == 3:
                    continue
                path = "/metrics" if tick % 2 == 0 else "/metrics/counters"
                start = time.perf_counter()
                body = scraper.get(path).content
                spent = time.perf_counter() - start
                if path == "/metrics":
                    scrapes.append(spent)
                    scrape_bytes = len(body)
                else:
                    probe_scrapes.append(spent)
                    probes_bytes = len(body)

    scraper = threading.Thread(target=scrape_every_2s, name="scraper")
    scraper.start()
    try:
        while time.monotonic() - t1 < seconds / 2:
            stamp = http.get(f"/api/v1/towns/{probe}").json()["last_known"]["at"]
            if stamp != last:
                # The probe's state carries the time it was published.
                latencies.append(max(0.0, time.time() - parse_ts(stamp).timestamp()))
                last = stamp
            time.sleep(0.01)
    finally:
        polled.set()
        scraper.join()
    latencies.sort()
    return Result(
        towns=towns,
        seconds=round(elapsed, 1),
        under_load=under_load,
        cpu_percent=round(100 * cpu / elapsed, 1),
        rss_mib=round(rss, 1),
        messages_per_s=round(msgs / elapsed, 1),
        latency_p50_s=round(statistics.median(latencies), 4) if latencies else math.nan,
        latency_p99_s=round(_quantile(latencies, 0.99), 4) if latencies else math.nan,
        latency_max_s=round(latencies[-1], 4) if latencies else math.nan,
        latency_samples=len(latencies),
        db_rows_per_s=round(rows / elapsed, 1),
        scrape_p50_s=round(statistics.median(scrapes), 4) if scrapes else math.nan,
        scrape_max_s=round(max(scrapes), 4) if scrapes else math.nan,
        scrape_bytes=scrape_bytes,
        counters_scrape_max_s=round(max(probe_scrapes), 4) if probe_scrapes else math.nan,
        counters_scrape_bytes=probes_bytes,
        rejected=_counter(end, "netwatch_opscenter_messages_rejected_total"),
    )


def _counter(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _quantile(values: list[float], q: float) -> float:
    """Nearest rank."""
    rank = max(1, min(len(values), round(q * len(values) + 0.5)))
    return values[rank - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--towns", default="4,1741", help="fleet sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="steady window per size")
    parser.add_argument("--under-load", action="store_true", help="two CPU burners beside it")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--transport",
        default="plain",
        help="plain, tls or both (plain,tls): tls is the fleet's TLS listener with client "
        "certificates and the ACL",
    )
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    # The simulated agents' own process (started by `measure`).
    parser.add_argument("--simulate", type=int, metavar="BROKER_PORT", help=argparse.SUPPRESS)
    parser.add_argument("--towns-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        towns = json.loads(args.towns_file.read_text(encoding="utf-8"))
        broker = client_broker(args.simulate, args.pki, SIMULATOR_CN)
        simulate(broker, towns, args.probe, args.until)
        return 0
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")  # fmt: skip
    results = []
    transports = args.transport.split(",")
    if not set(transports) <= {"plain", "tls"}:
        parser.error(f"--transport: expected plain, tls or plain,tls, got {args.transport!r}")
    for towns, transport in ((int(t), x) for t in args.towns.split(",") for x in transports):
        print(
            f"-- {towns} towns, {transport}, {args.seconds:g} s"
            f"{' under load' if args.under_load else ''}",
            flush=True,
        )
        result = measure(towns, args.seconds, args.under_load, transport)
        results.append(result)
        for key, value in asdict(result).items():
            print(f"  {key:<16} {value}")
        if towns >= 1741:
            for key, limit in TARGETS.items():
                value = getattr(result, key if key != "scrape_s" else "scrape_max_s")
                verdict = "met" if value <= limit else "NOT met"
                print(f"  target {key} <= {limit:g}: {verdict} ({value})")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
