"""The agent in the lab: real namespaces, real routes, real Mosquitto.

Every outage is measured from the data plane by an independent observer
(a TCP connection from the town to the data-center application every
10 ms, over the town's routes), not from the agent's own report; routes
are watched by sampling `ip route get`, also outside the agent.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from labtools import (
    ROOT,
    Lab,
    MqttTap,
    RouteWatch,
    http_get,
    needs_root,
    netwatch,
    retained,
    route_dev,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from netwatch.emulator.netns import entered
from netwatch.lab import links
from netwatch.lab.observer import DataPlaneObserver
from netwatch.topology.units import parse_duration, parse_percentage

pytestmark = [needs_root, pytest.mark.lab]

HOLDDOWN = 3.0  # the tests' failback hold-down (topology.yaml's is 30 s)
METRICS_PORT = 9471  # beside a lab agent's 9470, should one run


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = yaml.safe_load((ROOT / "topology.yaml").read_text(encoding="utf-8"))
    raw["policy"]["profiles"]["fast"]["failback_holddown"] = f"{HOLDDOWN:g}s"
    path = tmp_path_factory.mktemp("agent-topology") / "topology.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class AgentRun:
    lab: Lab
    town: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.start()

    @property
    def netns(self) -> str:
        return self.lab.plan.nodes[self.town].netns

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, body = http_get(self.netns, "127.0.0.1", METRICS_PORT, "/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float | None:
        try:
            samples = self.metrics()
        except OSError:
            return None
        want = set(labels.items())
        values = [v for (n, ls), v in samples.items() if n == name and want <= ls]
        return sum(values) if values else None

    def active(self) -> str | None:
        for path in ("primary", "backup"):
            if self.metric("netwatch_path_active", path=path) == 1.0:
                return path
        return None

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


Starter = Callable[..., AgentRun]


@pytest.fixture
def start_agent(lab: Lab, topology: Path, tmp_path: Path) -> Iterator[Starter]:
    runs: list[AgentRun] = []

    def start(town: str, *extra: str, wait: bool = True) -> AgentRun:
        """Start an agent in `town`; unless `wait` is false, return once it
        has decided (then call `wait_decided` on it before relying on it)."""
        argv = [
            sys.executable, "-m", "netwatch.cli", "agent", "--town", town,
            "--topology", str(topology), "--spool", str(tmp_path / f"spool-{town}"),
            "--metrics-listen", f"127.0.0.1:{METRICS_PORT}",
            # the lab broker's identity, unless the test names another broker
            *([] if "--mqtt" in extra else lab.tls_args(town)), *extra,
        ]  # fmt: skip
        run = AgentRun(lab, town, argv, tmp_path / f"agent-{town}.log")
        runs.append(run)
        if wait:
            wait_decided(run)
        return run

    try:
        yield start
    finally:
        for run in runs:
            run.stop()
        for town in {run.town for run in runs}:
            _reset_town(lab, town)


def wait_decided(run: AgentRun) -> None:
    """Decided: an active path, and every path judged (a restarted agent
    reports the routes it adopted before its first round)."""
    wait_for(
        lambda: (
            run.active() is not None and run.metric("netwatch_path_state", state="unknown") == 0.0
        ),
        timeout=15,
        what=f"agent {run.town} to decide",
    )


def _reset_town(lab: Lab, town_id: str) -> None:
    """Links back to their profile and uncut, routes back on the primary.

    What `netwatch lab impair --reset` and `netwatch lab restore` do, called
    in-process: a CLI start per call made this cleanup take ~7 s a town."""
    town = lab.topo.town(town_id)
    netns = lab.plan.nodes[town_id].netns
    for path in town.paths:
        links.reset(lab.topo, lab.run_dir, town_id, path.name)
        links.restore(lab.topo, lab.run_dir, town_id, path.name, "both")
        subprocess.run(["ip", "-n", netns, "link", "set", path.interface, "up"], check=True)
    primary = town.primary
    for prefix in lab.topo.routed_prefixes:
        for path, table in [(primary, "main"), *((p, str(p.table)) for p in town.paths)]:
            subprocess.run(
                ["ip", "-n", netns, "route", "replace", str(prefix), "via", str(path.gateway),
                 "dev", path.interface, "proto", "91", "src", str(path.address.ip),
                 "table", table],
                check=True,
            )  # fmt: skip


def _lab(*args: str, lab: Lab) -> None:
    result = netwatch("lab", *args, "--run-dir", lab.run_dir)
    assert result.returncode == 0, result.stderr


def _cut(lab: Lab, town: str, path: str) -> None:
    """What `netwatch lab cut TOWN PATH` does (both directions, in force on
    return), called in-process: for faults whose command is not what a test
    times, without a CLI start (1.5-2.5 s on a busy machine) before each.
    The commands themselves are tested in test_lab.py."""
    links.cut(lab.topo, lab.run_dir, town, path, "both")


def _restore(lab: Lab, town: str, path: str) -> None:
    """What `netwatch lab restore TOWN PATH` does, in-process (see `_cut`)."""
    links.restore(lab.topo, lab.run_dir, town, path, "both")


def _observer(lab: Lab, town: str) -> DataPlaneObserver:
    host, port = lab.app()
    return DataPlaneObserver(lab.plan.nodes[town].netns, host, port)


def _wait_dev(netns: str, dev: str, timeout: float) -> float:
    start = time.monotonic()
    wait_for(
        lambda: route_dev(netns) == dev,
        timeout=timeout,
        step=0.01,
        what=f"{netns} to route via {dev}",
    )
    return time.monotonic() - start


def _traffic_flows(obs: DataPlaneObserver) -> None:
    """Before the fault: the observer has seen traffic get through."""
    wait_for(
        lambda: obs.last_ok() is not None, timeout=5, step=0.01, what="traffic before the fault"
    )


def _outage_after(obs: DataPlaneObserver, since: float) -> float:
    """Wait until traffic flows again, then return the longest gap since `since`."""
    settled = time.monotonic()
    wait_for(
        lambda: (obs.last_ok() or 0) > settled + 0.1,
        timeout=5,
        step=0.01,
        what="traffic to flow again",
    )
    return obs.longest_gap(since=since - 0.2)


# --- 1. a primary cut ------------------------------------------------------------


def test_primary_cut_fails_over_within_a_second(lab: Lab, start_agent: Starter) -> None:
    agent = start_agent("nishiki")
    assert agent.active() == "primary"
    tap = MqttTap(lab, "netwatch/v1/nishiki/#", "test-cut")
    try:
        with _observer(lab, "nishiki") as obs:
            _traffic_flows(obs)
            cut = time.monotonic()
            _lab("cut", "nishiki", "primary", lab=lab)
            _wait_dev(agent.netns, "flets0", timeout=1.0)
            outage = _outage_after(obs, cut)
        assert outage < 1.0, outage
        event = wait_for(
            lambda: tap.events("failover"), timeout=5, what=f"the failover event in {tap.messages}"
        )[0]
        assert (event["from_path"], event["to_path"]) == ("primary", "backup")
        assert 0 < event["duration_s"] < 1.0
        # The publisher sends events before state: the new state follows.
        state = wait_for(
            lambda: (
                (s := retained(lab, "netwatch/v1/nishiki/state")) is not None
                and s["active_path"] == "backup"
                and s
            ),
            timeout=5,
            what="the retained state to name the backup",
        )
        assert state["paths"]["primary"]["state"] == "DOWN"
        assert agent.active() == "backup"
        assert agent.metric("netwatch_failovers_total", to="backup", reason="failover") == 1
        assert 0 < (agent.metric("netwatch_last_failover_duration_seconds") or 0) < 1.0
    finally:
        tap.close()


# --- 2. failback only after the hold-down; a flapping primary --------------------


def test_failback_waits_for_the_hold_down(lab: Lab, start_agent: Starter) -> None:
    agent = start_agent("takaharu")
    _cut(lab, "takaharu", "primary")
    _wait_dev(agent.netns, "flets0", timeout=1.0)
    restored = time.monotonic()
    _restore(lab, "takaharu", "primary")
    wait_for(
        lambda: agent.metric("netwatch_path_up", path="primary") == 1.0,
        timeout=5,
        what="the primary to be UP again",
    )
    assert route_dev(agent.netns) == "flets0"  # UP, but not yet held for the hold-down
    back = _wait_dev(agent.netns, "lgwan0", timeout=HOLDDOWN + 5)
    assert time.monotonic() - restored >= HOLDDOWN
    assert back > HOLDDOWN - 1.0
    assert agent.metric("netwatch_failovers_total", reason="failback") == 1


@pytest.fixture(scope="module")
def flapping_topology(topology: Path) -> Path:
    """Damping that suppresses a path from its second flap (1000 + 1000 x decay
    > 1500) and a hold-down the test's "up" periods clearly exceed."""
    raw = yaml.safe_load(topology.read_text(encoding="utf-8"))
    raw["policy"]["profiles"]["fast"]["damping"].update({"suppress": 1500, "reuse": 750})
    path = topology.parent / "flapping.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_flapping_primary_is_damped(
    lab: Lab, start_agent: Starter, flapping_topology: Path
) -> None:
    """Down 1 s, up HOLDDOWN + 3 s, eight times.  Without damping every cycle
    would move the routes twice (the primary is up longer than the hold-down);
    with it, the second flap suppresses the primary: failover, failback,
    failover, and no failback while damped."""
    agent = start_agent("tsuno", "--topology", str(flapping_topology))
    watch = RouteWatch(agent.netns)
    try:
        for _ in range(8):
            links.cut(lab.topo, lab.run_dir, "tsuno", "primary", "both")
            time.sleep(1.0)
            links.restore(lab.topo, lab.run_dir, "tsuno", "primary", "both")
            time.sleep(HOLDDOWN + 3.0)
    finally:
        changes = watch.stop()
    moves = [dev for _, dev in changes[1:]]  # the first entry is the starting route
    assert moves == ["flets0", "lgwan0", "flets0"], changes
    assert agent.metric("netwatch_path_damped", path="primary") == 1.0


# --- 3. brownouts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "impairment",
    [
        links.Impairment(loss=parse_percentage("30%")),
        links.Impairment(delay=parse_duration("400ms")),
    ],
    ids=["loss-30%", "delay+400ms"],
)
def test_a_brownout_fails_over_within_5s(
    lab: Lab, start_agent: Starter, impairment: links.Impairment
) -> None:
    """Timed from the impairment being in force (what `netwatch lab impair`
    does, in-process: a CLI start is no part of the agent's reaction)."""
    agent = start_agent("kawaminami")
    links.impair(lab.topo, lab.run_dir, "kawaminami", "primary", "both", impairment)
    assert _wait_dev(agent.netns, "flets0", timeout=5.0) < 5.0
    # The metrics are read from the agent's live state at scrape time, but a
    # scrape of an agent probing a lossy path every 2 ms (its suspect
    # cadence) can take seconds on a loaded 2-core CI machine: poll with
    # slack, and say what was seen.
    seen: list[float | None] = []

    def primary_down() -> bool:
        seen.append(agent.metric("netwatch_path_up", path="primary"))
        return seen[-1] == 0.0

    try:
        wait_for(primary_down, timeout=15, what="the metrics to show the primary down")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last scrapes said {seen[-5:]}") from None


# --- 4. noise ----------------------------------------------------------------------


@pytest.mark.slow
def test_noise_under_the_fail_lines_moves_no_route(lab: Lab, start_agent: Starter) -> None:
    """Three towns at once, each watched by its own route sampler for two
    minutes: 3 % loss and 10 ms jitter (Tsuno), 10 % random loss each way
    (Takaharu: 19 % of the probes, under fast's 35 % fail line), and a
    latency step from ~12 to ~72 ms RTT (Nishiki: under the 80 ms degraded
    and 90 ms fail lines; it must be seen as latency, not loss)."""
    impairments = {
        "tsuno": links.Impairment(loss=parse_percentage("3%"), jitter=parse_duration("10ms")),
        "takaharu": links.Impairment(loss=parse_percentage("10%")),
        "nishiki": links.Impairment(delay=parse_duration("34ms")),
    }
    # The three agents start together; each has decided before the noise.
    agents = {town: start_agent(town, wait=False) for town in impairments}
    for agent in agents.values():
        wait_decided(agent)
    watches = {town: RouteWatch(agent.netns) for town, agent in agents.items()}
    try:
        # What `netwatch lab impair` does, in-process: all three within
        # milliseconds, instead of one CLI start after another.
        for town, impairment in impairments.items():
            links.impair(lab.topo, lab.run_dir, town, "primary", "both", impairment)
        time.sleep(120)  # the stimulus lasts two minutes
        p50 = agents["nishiki"].metric("netwatch_path_rtt_p50_seconds", path="primary")
        loss = agents["nishiki"].metric("netwatch_path_loss_ratio", path="primary")
    finally:
        changes = {town: watch.stop() for town, watch in watches.items()}
    for town, agent in agents.items():
        assert [dev for _, dev in changes[town]] == ["lgwan0"], (town, changes[town])
        assert agent.metric("netwatch_failovers_total") in (None, 0.0), town
        assert agent.metric("netwatch_path_up", path="primary") == 1.0, town
    assert p50 is not None
    assert p50 > 0.06  # seen as latency
    assert (loss or 0.0) < 0.05  # not as loss


# --- 5. a one-way fault ------------------------------------------------------------------


def test_a_one_way_fault_fails_over_like_a_cut(lab: Lab, start_agent: Starter) -> None:
    agent = start_agent("nishiki")
    with _observer(lab, "nishiki") as obs:
        _traffic_flows(obs)
        cut = time.monotonic()
        _lab("cut", "nishiki", "primary", "--direction", "down", lab=lab)
        _wait_dev(agent.netns, "flets0", timeout=1.0)
        outage = _outage_after(obs, cut)
    assert outage < 1.0, outage


# --- 6. the broker is down ---------------------------------------------------------------


def test_without_broker_the_route_still_switches_and_the_event_comes_later(
    lab: Lab, start_agent: Starter
) -> None:
    agent = start_agent("tsuno")
    tap = MqttTap(lab, "netwatch/v1/tsuno/events", "test-broker-down")
    wait_for(
        lambda: agent.metric("netwatch_mqtt_connected") == 1.0,
        timeout=10,
        what="the agent to reach the broker",
    )
    _lab("stop", "broker", lab=lab)
    try:
        wait_for(
            lambda: agent.metric("netwatch_mqtt_connected") == 0.0,
            timeout=10,
            what="the agent to notice the broker is gone",
        )
        with _observer(lab, "tsuno") as obs:
            _traffic_flows(obs)
            cut = time.monotonic()
            cut_wall = time.time()
            _lab("cut", "tsuno", "primary", lab=lab)
            cut_done_wall = time.time()  # the cut is in force when the command returns
            _wait_dev(agent.netns, "flets0", timeout=1.0)
            outage = _outage_after(obs, cut)
        assert outage < 1.0, outage
        wait_for(
            lambda: (agent.metric("netwatch_mqtt_spooled_messages") or 0) >= 1,
            timeout=5,
            what="the failover event in the spool",
        )
        time.sleep(1.0)
    finally:
        restart_wall = time.time()
        _lab("start", "broker", lab=lab)
    try:
        event = wait_for(
            lambda: tap.events("failover"), timeout=20, what="the spooled failover event"
        )[0]
        sent = _epoch(event["ts"])
        # Stamped at the failover: within the command that cuts (which takes
        # as long as a CLI takes to start) and a second after it, and before
        # the broker was back, not at the delivery.
        assert cut_wall - 0.05 <= sent <= cut_done_wall + 1.0
        assert sent < restart_wall
        assert time.time() - sent > 1.0
        wait_for(
            lambda: agent.metric("netwatch_mqtt_spooled_messages") == 0,
            timeout=10,
            what="the spool to drain",
        )
    finally:
        tap.close()


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# --- 7. killed on the backup, restarted ------------------------------------------------


def test_a_killed_agent_reconciles_on_restart(lab: Lab, start_agent: Starter) -> None:
    agent = start_agent("kawaminami")
    _cut(lab, "kawaminami", "primary")
    _wait_dev(agent.netns, "flets0", timeout=1.0)
    agent.signal(signal.SIGKILL)
    assert route_dev(agent.netns) == "flets0"  # routes survive the agent
    watch = RouteWatch(agent.netns)
    try:
        agent.start()
        wait_for(
            lambda: "reconciled: routes already point at backup" in agent.log_text(),
            timeout=15,
            what="the restarted agent to reconcile",
        )
        wait_for(lambda: agent.active() == "backup", timeout=5, what="the agent to settle")
        time.sleep(1.0)
    finally:
        changes = watch.stop()
    assert [dev for _, dev in changes] == ["flets0"]  # no flap through the primary
    for prefix in lab.topo.routed_prefixes:
        out = subprocess.run(
            ["ip", "-n", agent.netns, "route", "show", str(prefix)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert len(out.strip().splitlines()) == 1, out  # no duplicates
        assert re.search(r"proto (91|netwatch) ", out), out  # named once rt_protos.d says so
    assert agent.metric("netwatch_failovers_total") in (None, 0.0)


# --- 8. both paths down ----------------------------------------------------------------


def test_both_paths_down_raises_the_alarm_without_churn(lab: Lab, start_agent: Starter) -> None:
    agent = start_agent("nishiki")
    tap = MqttTap(lab, "netwatch/v1/nishiki/events", "test-all-down")
    try:
        _cut(lab, "nishiki", "backup")
        wait_for(
            lambda: agent.metric("netwatch_path_up", path="backup") == 0.0,
            timeout=5,
            what="the backup to be DOWN",
        )
        watch = RouteWatch(agent.netns)
        _cut(lab, "nishiki", "primary")
        wait_for(
            lambda: agent.metric("netwatch_all_paths_down") == 1.0,
            timeout=5,
            what="the all-down alarm",
        )
        time.sleep(2.0)
        assert [dev for _, dev in watch.changes] == ["lgwan0"]  # no churn
        with _observer(lab, "nishiki") as obs:
            _restore(lab, "nishiki", "backup")
            _wait_dev(agent.netns, "flets0", timeout=5.0)
            wait_for(lambda: obs.last_ok() is not None, timeout=5, what="traffic on the backup")
        changes = watch.stop()
        assert [dev for _, dev in changes] == ["lgwan0", "flets0"]
        assert agent.metric("netwatch_all_paths_down") == 0.0
        # With no path, the alarm could only be spooled; it arrives once one is back.
        wait_for(lambda: tap.events("all_down"), timeout=15, what="the all_down event")
    finally:
        tap.close()


# --- 9. bad input --------------------------------------------------------------------------


def _agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netwatch.cli", "agent", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--town", "atlantis"), "unknown town 'atlantis'"),
        (("--town", "nishiki", "--topology", "/nonexistent.yaml"), "/nonexistent.yaml: no such"),
        (("--town", "nishiki", "--policy", "warp"), "unknown policy profile 'warp'"),
        (("--town", "nishiki", "--metrics-listen", "nowhere"), "expected HOST:PORT"),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...], message: str) -> None:
    result = _agent_cli(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_broker_at_start_is_not_fatal(lab: Lab, start_agent: Starter) -> None:
    agent = start_agent("takaharu", "--mqtt", "mqtt://127.0.0.1:1", "--route-backend", "dry-run")
    time.sleep(2.0)
    assert agent.proc.poll() is None
    assert agent.metric("netwatch_mqtt_connected") == 0.0
    assert (agent.metric("netwatch_mqtt_spooled_messages") or 0) >= 1  # agent_start, spooled
    assert "cannot reach mqtt://127.0.0.1:1" in agent.log_text()
    assert "Traceback" not in agent.log_text()


# --- every probe kind crosses its own path -------------------------------------------

PROBE_SCRIPT = """
import asyncio, json, sys
from netwatch.agent.probes import PathBinding
from netwatch.agent.probes.http import HttpProber
from netwatch.agent.probes.icmp import IcmpProber
from netwatch.agent.probes.tcp import TcpProber
from netwatch.topology import load

async def main() -> None:
    topo = load(sys.argv[1])
    town, t = topo.town(sys.argv[2]), topo.datacenter.targets
    probers = [IcmpProber(t.icmp), TcpProber(t.tcp), HttpProber(t.http, t.http_status)]
    out = {}
    for path in town.paths:
        binding = PathBinding(path.name, path.mark, path.address.ip)
        for prober in probers:
            result = await prober.probe(binding, 0.5)
            out[f"{path.name}/{prober.kind}"] = result.ok
    for prober in probers:
        await prober.aclose()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.parametrize("cut", ["primary", "backup"])
def test_each_probe_kind_crosses_its_own_path(lab: Lab, cut: str) -> None:
    # The town's routes point at the primary; whichever path is cut, each
    # path's probes must succeed or fail by that path alone.
    town = "takaharu"
    netns = lab.plan.nodes[town].netns
    _cut(lab, town, cut)
    try:
        result = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-c", PROBE_SCRIPT,
             str(ROOT / "topology.yaml"), town],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    finally:
        _restore(lab, town, cut)
    import json

    outcome = json.loads(result.stdout)
    for key, ok in outcome.items():
        path = key.split("/")[0]
        assert ok is (path != cut), (key, outcome)


# --- a link going down ---------------------------------------------------------------


def test_an_interface_going_down_fails_over_at_once(lab: Lab, start_agent: Starter) -> None:
    # Carrier or admin state, reported by netlink: no probe has to time out.
    agent = start_agent("tsuno")
    town = lab.topo.town("tsuno")
    primary = town.primary
    with _observer(lab, "tsuno") as obs:
        _traffic_flows(obs)
        down = time.monotonic()
        subprocess.run(
            ["ip", "-n", agent.netns, "link", "set", primary.interface, "down"], check=True
        )
        moved = _wait_dev(agent.netns, "flets0", timeout=1.0)
        outage = _outage_after(obs, down)
    assert moved < 0.1, moved  # the kernel's link event, not three probe rounds
    assert outage < 0.3, outage
    assert f"link {primary.interface} down" in agent.log_text()
    # The kernel drops the path's own routes with the link; the agent puts
    # them back when it comes up, then fails back after the hold-down.
    subprocess.run(["ip", "-n", agent.netns, "link", "set", primary.interface, "up"], check=True)

    def table_back() -> bool:
        out = subprocess.run(
            ["ip", "-n", agent.netns, "route", "show", "table", str(primary.table)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return primary.interface in out

    wait_for(table_back, timeout=3, what="the primary's own routing table to be restored")
    _wait_dev(agent.netns, "lgwan0", timeout=HOLDDOWN + 5)


# --- 10. route truth: the kernel follows the decision --------------------------------------


def _route(netns: str, prefix: str = "10.200.0.0/24") -> str:
    return subprocess.run(
        ["ip", "-n", netns, "route", "show", prefix],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_a_flushed_route_comes_back_when_the_link_does(lab: Lab, start_agent: Starter) -> None:
    """The backup is down; the primary's link goes down (the kernel flushes
    its routes) and up again: the agent puts the route back."""
    agent = start_agent("tsuno")
    _cut(lab, "tsuno", "backup")
    wait_for(
        lambda: agent.metric("netwatch_path_up", path="backup") == 0.0,
        timeout=5,
        what="the backup to be DOWN",
    )
    subprocess.run(["ip", "-n", agent.netns, "link", "set", "lgwan0", "down"], check=True)
    wait_for(lambda: _route(agent.netns) == "", timeout=2, what="the kernel to flush the route")
    time.sleep(2.0)  # the stimulus: the link stays down for 2 s
    with _observer(lab, "tsuno") as obs:
        subprocess.run(["ip", "-n", agent.netns, "link", "set", "lgwan0", "up"], check=True)
        up = time.monotonic()
        # In-process: the 2 s below are the agent's, not a CLI's start-up.
        _restore(lab, "tsuno", "backup")
        wait_for(
            lambda: "dev lgwan0" in _route(agent.netns), timeout=2, what="the route to be back"
        )
        wait_for(lambda: (obs.last_ok() or 0) > up, timeout=2, step=0.01, what="traffic to flow")
        assert time.monotonic() - up < 2.0
    state = retained(lab, "netwatch/v1/tsuno/state")
    assert state is not None
    assert state["active_path"] == "primary"
    assert agent.metric("netwatch_routes_in_sync") == 1.0


def test_a_route_deleted_by_hand_is_put_back(lab: Lab, start_agent: Starter) -> None:
    agent = start_agent("kawaminami")
    tap = MqttTap(lab, "netwatch/v1/kawaminami/events", "test-route-del")
    try:
        with _observer(lab, "kawaminami") as obs:
            _traffic_flows(obs)
            deleted = time.monotonic()
            subprocess.run(["ip", "-n", agent.netns, "route", "del", "10.200.0.0/24"], check=True)
            wait_for(
                lambda: "dev lgwan0" in _route(agent.netns),
                timeout=2,
                step=0.01,
                what="the route to be put back",
            )
            wait_for(lambda: (obs.last_ok() or 0) > deleted, timeout=2, step=0.01, what="traffic")
        assert time.monotonic() - deleted < 2.0
        assert agent.metric("netwatch_route_reinstalled_total", path="primary") == 1.0
        event = wait_for(
            lambda: tap.events("route_reinstalled"), timeout=5, what="the reinstall event"
        )[0]
        assert "no route" in event["reason"]
    finally:
        tap.close()


def test_another_protocols_route_is_left_alone_and_reported(lab: Lab, start_agent: Starter) -> None:
    agent = start_agent("nishiki")
    backup = lab.topo.town("nishiki").path("backup")
    subprocess.run(
        ["ip", "-n", agent.netns, "route", "replace", "10.200.0.0/24", "via",
         str(backup.gateway), "dev", backup.interface, "proto", "static"],
        check=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: agent.metric("netwatch_route_conflict", prefix="10.200.0.0/24") == 1.0,
            timeout=5,
            what="the conflict alarm",
        )
        time.sleep(3.0)  # longer than the periodic check: still the operator's route
        assert "proto static" in _route(agent.netns)
    finally:
        subprocess.run(["ip", "-n", agent.netns, "route", "del", "10.200.0.0/24"], check=True)
    wait_for(lambda: "dev lgwan0" in _route(agent.netns), timeout=5, what="netwatch's route again")
    wait_for(
        lambda: agent.metric("netwatch_route_conflict", prefix="10.200.0.0/24") is None,
        timeout=5,
        what="the alarm to clear",
    )


# --- 11. a misconfigured agent ----------------------------------------------------------


def test_a_missing_source_address_is_said_once(tmp_path: Path) -> None:
    """Outside the town's namespace its addresses do not exist: the agent
    says so once per path and kind, in words that name the cause."""
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netwatch.cli", "agent", "--town", "nishiki",
             "--route-backend", "dry-run", "--mqtt", "off", "--no-link-watch",
             "--metrics-listen", "off", "--spool", str(tmp_path / "spool")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: log.read_text().count("not on this host") >= 6,
            timeout=20,
            what="the warnings",
        )
        time.sleep(3.0)  # an observation window: nothing more is said
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    lines = [line for line in log.read_text().splitlines() if "not on this host" in line]
    assert len(lines) == 6, lines  # 2 paths x 3 kinds
    assert "source address 10.10.1.2 is not on this host" in log.read_text()


# --- 12. spoofed replies --------------------------------------------------------------


def _sniff_echo_request(lab: Lab, source: str, timeout: float = 5.0) -> tuple[int, int]:
    """The identifier and sequence of an echo request from `source`, as the
    data center sees it (an attacker there sees the same)."""
    with entered(lab.plan.nodes[lab.plan.dc_node].netns):
        sniffer = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with sniffer:
        sniffer.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                packet = sniffer.recv(2048)
                header = (packet[0] & 0x0F) * 4
                icmp_type, _, _, ident, seq = struct.unpack_from("!BBHHH", packet, header)
                if icmp_type == 8 and socket.inet_ntoa(packet[12:16]) == source:
                    return ident, seq
    raise AssertionError(f"no echo request from {source} within {timeout} s")


def _echo_reply(ident: int, seq: int, payload: bytes) -> bytes:
    def checksum(data: bytes) -> int:
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total & 0xFFFF) + (total >> 16)
        return int(~((total & 0xFFFF) + (total >> 16)) & 0xFFFF)

    body = struct.pack("!BBHHH", 0, 0, 0, ident, seq) + payload
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def test_spoofed_echo_replies_are_foreign_and_change_nothing(
    lab: Lab, start_agent: Starter
) -> None:
    """From the data center's namespace, with the identifier and sequence
    read off the town's own requests: while the primary's requests no longer
    arrive (its uplink cut), forged replies from the target's address with
    every nearby sequence number and a guessed nonce flood the town.  They
    are counted as foreign and the town fails over as if they were not
    there."""
    town = lab.topo.town("takaharu")
    primary = next(p for p in town.paths if p.role == "primary")
    target = str(lab.topo.datacenter.targets.icmp)
    agent = start_agent(town.id)
    before = agent.metric("netwatch_icmp_replies_ignored_total", reason="foreign") or 0.0
    ident, seq = _sniff_echo_request(lab, str(primary.address.ip))
    links.cut(lab.topo, lab.run_dir, town.id, "primary", "up")  # replies still come down
    with entered(lab.plan.nodes[lab.plan.dc_node].netns):
        spoofer = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sent = 0
    with spoofer:
        spoofer.bind((target, 0))  # from the target's own address, as a real reply
        deadline = time.monotonic() + 3.0
        while route_dev(agent.netns) != "flets0" and time.monotonic() < deadline:
            for _ in range(10):  # a burst over the next sequence numbers, then a look
                guess = (seq + 5 + sent) & 0xFFFF  # past what was answered before the cut
                reply = _echo_reply(ident, guess, os.urandom(16))  # the nonce is not on the wire
                spoofer.sendto(reply, (str(primary.address.ip), 0))
                sent += 1
            time.sleep(0.005)
    _wait_dev(agent.netns, "flets0", timeout=5.0)
    links.restore(lab.topo, lab.run_dir, town.id, "primary", "up")

    def counted() -> float:
        return (
            agent.metric("netwatch_icmp_replies_ignored_total", reason="foreign") or 0.0
        ) - before

    # Each that arrives is counted; the emulated link's drop-tail queue may
    # drop some of a burst, so most, not all.
    try:
        wait_for(lambda: counted() >= 0.5 * sent, timeout=10, what=f"{sent} forged replies counted")
    except AssertionError as exc:
        ignored = {r: agent.metric("netwatch_icmp_replies_ignored_total", reason=r)
                   for r in ("foreign", "duplicate", "late", "malformed")}  # fmt: skip
        raise AssertionError(f"{exc}: ignored {ignored}, foreign before {before}") from None
    assert sent >= 50
    assert agent.metric("netwatch_path_up", path="primary") == 0.0
