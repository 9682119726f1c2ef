"""topology.yaml and its validator: the real file passes; each rule rejects
its own bad file with a located message (file, line, key path, reason)."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest

from netwatch.check import print_summary
from netwatch.topology import (
    Blackout,
    DrillSettings,
    DrillThresholds,
    FaultCommand,
    TimeWindow,
    TopologyError,
    load,
    loads,
)

ROOT = Path(__file__).resolve().parent.parent
GOOD = (ROOT / "topology.yaml").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Case:
    """Replace `old` (its `nth` occurrence, 1-based) by `new` in the real file;
    expect a problem on the line where `old` stood (shifted by `line_offset`)."""

    name: str
    old: str
    new: str
    path: str
    message: str
    nth: int = 1
    line_offset: int = 0
    line_of: str | None = None  # expect the line of this text instead


def _mutate(case: Case) -> tuple[str, int]:
    start = -1
    for _ in range(case.nth):
        start = GOOD.find(case.old, start + 1)
        assert start >= 0, f"{case.name}: {case.old!r} not found in topology.yaml"
    line = GOOD.count("\n", 0, start) + 1 + case.line_offset
    if case.line_of is not None:
        line = GOOD.count("\n", 0, GOOD.index(case.line_of)) + 1
    return GOOD[:start] + case.new + GOOD[start + len(case.old) :], line


CASES = [
    Case(
        "unknown key",
        "    terminals: 10\n",
        "    terminals: 10\n    colour: red\n",
        "towns[0].colour",
        "unknown key 'colour' (expected one of: id, name",
        line_offset=1,
    ),
    Case(
        "unknown top-level key",
        "schema: 1\n",
        "schema: 1\nextras: {}\n",
        "extras",
        "unknown key 'extras'",
        line_offset=1,
    ),
    Case(
        "duplicate town id",
        "id: takaharu",
        "id: nishiki",
        "towns[1].id",
        "duplicate town id 'nishiki'",
    ),
    Case(
        "duplicate mapping key",
        "    population: 11407\n",
        "    population: 11407\n    population: 1\n",
        "towns[0].population",
        "duplicate key 'population'",
        line_offset=1,
    ),
    Case(
        "no primary path",
        "        role: primary",
        "        role: backup",
        "towns[0].paths",
        "0 primary paths; expected exactly one",
        line_of="    paths:",
    ),
    Case(
        "no backup path",
        "        role: backup",
        "        role: primary",
        "towns[0].paths",
        "no backup path",
        line_of="    paths:",
    ),
    Case(
        "duplicate path name",
        "      - name: backup",
        "      - name: primary",
        "towns[0].paths[1].name",
        "duplicate name 'primary'",
    ),
    Case(
        "duration without unit",
        "interval: 50ms",
        "interval: 50",
        "policy.profiles.fast.interval",
        "expected a duration with a unit",
    ),
    Case(
        "unknown duration unit",
        "interval: 50ms",
        "interval: 100parsecs",
        "policy.profiles.fast.interval",
        "unknown duration unit 'parsecs'",
    ),
    Case(
        "rate that does not parse",
        "bandwidth: 47mbit",
        "bandwidth: fast",
        "towns[0].paths[1].bandwidth",
        "expected a rate with a unit",
    ),
    Case(
        "rate with unknown unit",
        "bandwidth: 47mbit",
        "bandwidth: 47furlongs",
        "towns[0].paths[1].bandwidth",
        "unknown rate unit 'furlongs'",
    ),
    Case(
        "percentage without %",
        "fail: {loss: 35%",
        "fail: {loss: 35",
        "policy.profiles.fast.fail.loss",
        "expected a percentage with a unit, like '2%', got 35",
    ),
    Case(
        "percentage over 100",
        "fail: {loss: 35%",
        "fail: {loss: 135%",
        "policy.profiles.fast.fail.loss",
        "at most 100%",
    ),
    Case(
        "address that does not parse",
        "address: 10.10.1.2/30",
        "address: 10.10.1.300/30",
        "towns[0].paths[0].address",
        "expected an IPv4 interface",
    ),
    Case(
        "gateway that does not parse",
        "gateway: 10.10.1.1",
        "gateway: gw.example",
        "towns[0].paths[0].gateway",
        "expected an IPv4 address",
    ),
    Case(
        "gateway outside the subnet",
        "gateway: 10.10.1.1",
        "gateway: 10.10.9.1",
        "towns[0].paths[0].gateway",
        "outside the path's subnet 10.10.1.0/30",
    ),
    Case(
        "address is the network address",
        "address: 10.10.1.2/30",
        "address: 10.10.1.0/30",
        "towns[0].paths[0].address",
        "network or broadcast address",
    ),
    Case(
        "network with host bits",
        "prefixes: [10.200.0.0/24]",
        "prefixes: [10.200.0.1/24]",
        "datacenter.prefixes[0]",
        "expected an IPv4 network",
    ),
    Case(
        "tcp target without port",
        "tcp: 10.200.0.10:8080",
        "tcp: 10.200.0.10",
        "datacenter.targets.tcp",
        "expected ADDRESS:PORT",
    ),
    Case(
        "target outside the data center",
        "icmp: 10.200.0.10",
        "icmp: 10.201.0.10",
        "datacenter.targets.icmp",
        "outside the data center's prefixes",
    ),
    Case(
        "http target with wrong scheme",
        "http: http://10.200.0.10:8080/health",
        "http: ftp://10.200.0.10/health",
        "datacenter.targets.http",
        "expected a URL like http",
    ),
    Case(
        "mqtt URL with wrong scheme",
        "mqtt: mqtts://",
        "mqtt: http://",
        "opscenter.mqtt",
        "expected a URL like mqtt://HOST",
    ),
    Case(
        "overlapping lab link subnets",
        "subnet: 10.255.0.8/30",
        "subnet: 10.255.0.0/29",
        "lab.links[10].subnet",
        "10.255.0.0/29 overlaps 10.255.0.0/30 (at lab.links[8].subnet)",
    ),
    Case(
        "overlapping path subnets",
        "address: 10.10.2.2/30\n        gateway: 10.10.2.1",
        "address: 10.10.1.2/30\n        gateway: 10.10.1.1",
        "towns[1].paths[0].address",
        "overlaps 10.10.1.0/30 (at towns[0].paths[0].address)",
    ),
    Case(
        "recover loss not stricter than fail",
        "recover: {loss: 5%",
        "recover: {loss: 40%",
        "policy.profiles.fast.recover.loss",
        "must be stricter (lower) than fail loss 35%",
    ),
    Case(
        "recover latency not stricter than fail",
        "recover: {loss: 5%, latency: 80ms}",
        "recover: {loss: 5%, latency: 90ms}",
        "policy.profiles.fast.recover.latency",
        "must be stricter (lower) than fail latency 90ms",
    ),
    Case(
        "fail latency at or above the timeout",
        "fail: {loss: 35%, latency: 90ms}",
        "fail: {loss: 35%, latency: 250ms}",
        "policy.profiles.fast.fail.latency",
        "fail latency 250ms must be below the probe timeout 250ms",
    ),
    Case(
        "false_alarm with a fail loss of 100 %",
        "fail: {loss: 35%, latency: 90ms}",
        "fail: {loss: 100%, latency: 90ms}",
        "policy.profiles.fast.fail.loss",
        "with false_alarm set, fail loss must be between 0 and 100 %",
    ),
    Case(
        "probe interval for a kind not probed",
        "      interval: 10s\n",
        "      interval: 10s\n      probe_intervals: {tcp: 20s}\n",
        "policy.profiles.mwan3-default.probe_intervals.tcp",
        "probe kind 'tcp' is not in probes ['icmp']",
        line_offset=1,
    ),
    Case(
        "probe interval shorter than a round",
        "probe_intervals: {tcp: 1s, http: 1s}",
        "probe_intervals: {tcp: 10ms, http: 1s}",
        "policy.profiles.fast.probe_intervals.tcp",
        "10ms is shorter than the round interval 50ms",
    ),
    Case(
        "every kind slower than a round",
        "probe_intervals: {tcp: 1s, http: 1s}",
        "probe_intervals: {icmp: 1s, tcp: 1s, http: 1s}",
        "policy.profiles.fast.probe_intervals",
        "at least one probe kind must be probed every round",
    ),
    Case(
        "min_timeout above the timeout",
        "min_timeout: 20ms",
        "min_timeout: 300ms",
        "policy.profiles.fast.min_timeout",
        "min_timeout 300ms exceeds timeout 250ms",
    ),
    Case(
        "damping reuse above suppress",
        "suppress: 2000, reuse: 750",
        "suppress: 2000, reuse: 2500",
        "policy.profiles.fast.damping.reuse",
        "reuse 2500 must be below suppress 2000",
    ),
    Case(
        "unknown default profile",
        "default: fast",
        "default: fastest",
        "policy.default",
        "no profile named 'fastest'",
    ),
    Case(
        "reserved routing table",
        "table: 111",
        "table: 254",
        "towns[0].paths[0].table",
        "less than or equal to 252",
    ),
    Case(
        "population not a number",
        "population: 11407",
        "population: many",
        "towns[0].population",
        "valid integer",
    ),
    Case(
        "unknown role",
        "role: backup",
        "role: spare",
        "towns[0].paths[1].role",
        "'primary' or 'backup'",
    ),
    Case(
        "p99 below p95",
        "app_start:      {p95: 3s,  p99: 5s",
        "app_start:      {p95: 3s,  p99: 2s",
        "loadtest.sla.app_start.p99",
        "p99 limit is below the p95 limit",
    ),
    Case(
        "unknown transaction",
        "    logon:   ",
        "    logoff:  ",
        "loadtest.sla.logoff",
        "Input should be 'app_start'",
    ),
    Case(
        "link with unknown profile",
        "a_to_b: lgwan-kuma",
        "a_to_b: lgwan-kumamoto",
        "lab.links[0].a_to_b",
        "unknown link profile 'lgwan-kumamoto'",
    ),
    Case(
        "link to unknown node",
        "b: lgwan, path: primary",
        "b: lgwan2, path: primary",
        "lab.links[0].b",
        "unknown node 'lgwan2'",
    ),
    Case(
        "path without a lab link",
        "{id: nishiki-backup,     a: nishiki,    b: flets, path: backup,",
        "{id: nishiki-backup,     a: nishiki,    b: flets, path: primary,",
        "lab.links[1].path",
        "path nishiki/primary already has a link",
    ),
    Case(
        "interface name too long",
        "interface: flets0",
        "interface: flets0-backup-line",
        "towns[0].paths[1].interface",
        "interface name of 1-15 characters",
    ),
    Case("town id with capitals", "id: nishiki", "id: Nishiki", "towns[0].id", "lowercase id"),
    Case(
        "alert threshold without a unit",
        "on_backup_after: 15m",
        "on_backup_after: soon",
        "alerts.on_backup_after",
        "duration",
    ),
    Case(
        "unknown key in the lab's alerts",
        "alerts: {path_down_for: 2s,",
        "alerts: {path_down: 2s,",
        "lab.alerts.path_down",
        "unknown key 'path_down'",
    ),
    Case(
        "unknown key in the lab's drills",
        "drills: {baseline: 10s,",
        "drills: {baselin: 10s,",
        "lab.drills.baselin",
        "unknown key 'baselin' (expected one of: baseline, degraded, terminals, settle,",
    ),
    Case(
        "unknown key in a drill schedule",
        '      cron: "0 2 * * 2#2"',
        '      cron: "0 2 * * 2#2"\n      when: never',
        "drills.schedules[1].when",
        "unknown key 'when' (expected one of: towns, cron, timezone, windows, blackouts,",
        line_offset=1,
    ),
    Case(
        "unknown key in the drills' thresholds",
        "      max_outage: 2s",
        "      max_outag: 2s",
        "drills.defaults.thresholds.max_outag",
        "unknown key 'max_outag' (expected one of: max_outage, max_failback_outage, load_test)",
    ),
    Case(
        "unknown town in a drill schedule",
        "towns: [tsuno]",
        "towns: [tsuno, tsunoo]",
        "drills.schedules[2].towns[1]",
        "unknown town 'tsunoo' (known: nishiki, takaharu, tsuno, kawaminami)",
    ),
    Case(
        "town listed twice in a drill schedule",
        "towns: [tsuno]",
        "towns: [tsuno, tsuno]",
        "drills.schedules[2].towns[1]",
        "town 'tsuno' listed twice",
    ),
    Case(
        "drill towns neither all nor a list",
        "towns: [tsuno]",
        "towns: tsuno",
        "drills.schedules[2].towns",
        "expected 'all' or a list of town ids like [nishiki], got 'tsuno'",
    ),
    Case(
        "cron field out of range",
        'cron: "0 2 * * 2#1"',
        'cron: "0 25 * * 2"',
        "drills.schedules[0].cron",
        "bad hour field '25' in cron '0 25 * * 2'",
    ),
    Case(
        "cron day that never comes",
        'cron: "0 2 * * 2#1"',
        'cron: "0 2 31 2 *"',
        "drills.schedules[0].cron",
        "bad day-of-month field '31'",
    ),
    Case(
        "cron with too few fields",
        'cron: "0 2 * * 2#1"',
        'cron: "0 2 * *"',
        "drills.schedules[0].cron",
        "expected 5 cron fields (minute hour day-of-month month day-of-week), got 4",
    ),
    Case(
        "cron never inside the windows",
        'cron: "0 2 * * 2#3"',
        'cron: "0 12 * * 2#3"',
        "drills.schedules[2].cron",
        "never falls inside the windows 01:00-05:00, so the drill never runs",
    ),
    Case(
        "unknown timezone",
        "timezone: Asia/Tokyo",
        "timezone: Asia/Tokio",
        "drills.schedules[0].timezone",
        "unknown timezone 'Asia/Tokio'",
    ),
    Case(
        "window that does not parse",
        'windows: ["01:00-05:00"] #',
        'windows: ["1am-5am"] #',
        "drills.schedules[0].windows[0]",
        "expected a window of local times like '01:00-05:00', got '1am-5am'",
    ),
    Case(
        "window past midnight's hours",
        'windows: ["01:00-05:00"] #',
        'windows: ["01:00-24:00"] #',
        "drills.schedules[0].windows[0]",
        "times of day run from 00:00 to 23:59",
    ),
    Case(
        "empty window",
        'windows: ["01:00-05:00"] #',
        'windows: ["01:00-01:00"] #',
        "drills.schedules[0].windows[0]",
        "is empty; leave out `windows` to allow any time",
    ),
    Case(
        "blackout that ends before it starts",
        "{from: 2027-05-10, to: 2027-06-15,",
        "{from: 2027-05-10, to: 2027-04-15,",
        "drills.schedules[0].blackouts[2].to",
        "blackout ends (2027-04-15) before it starts (2027-05-10)",
    ),
    Case(
        "blackout date that does not parse",
        "{from: 2027-05-10, to: 2027-06-15,",
        "{from: May 10th, to: 2027-06-15,",
        "drills.schedules[0].blackouts[2].from",
        "expected a date like 2027-03-15, got 'May 10th'",
    ),
    Case(
        "zero drill threshold",
        "max_outage: 2s",
        "max_outage: 0s",
        "drills.defaults.thresholds.max_outage",
        "greater than 0",
    ),
    Case(
        "drill duration without a unit",
        "baseline: 1m",
        "baseline: 60",
        "drills.defaults.baseline",
        "expected a duration with a unit",
    ),
    Case(
        "load test verdict neither pass nor ignore",
        "load_test: pass",
        "load_test: maybe",
        "drills.defaults.thresholds.load_test",
        "Input should be 'pass' or 'ignore'",
    ),
    Case(
        "fault neither lab nor a command",
        "      fault: lab               #",
        "      fault: pull-the-plug #",
        "drills.schedules[0].fault",
        "expected 'lab' or {command: [argv...], restore: [argv...]}, got 'pull-the-plug'",
    ),
    Case(
        "fault left empty",
        "      fault: lab               #",
        "      fault: #",
        "drills.schedules[0].fault",
        "expected 'lab' or {command: [argv...], restore: [argv...]}, got None",
    ),
    Case(
        "fault command without its restore",
        "      fault: lab               #",
        "      fault: {command: [ip, link, set, lgwan0, down]} #",
        "drills.schedules[0].fault.restore",
        "missing required key",
    ),
    Case(
        "fault command with an empty argv",
        "      fault: lab               #",
        "      fault: {command: [], restore: [ip, link, set, lgwan0, up]} #",
        "drills.schedules[0].fault.command",
        "at least 1 item",
    ),
]


def test_the_labs_alerts_replace_only_the_keys_they_give() -> None:
    topo = loads(GOOD, "topology.yaml")
    lab = topo.lab_alerts
    assert (lab.path_down_for, lab.on_backup_after, lab.stale_for) == (2.0, 5.0, 10.0)
    assert lab.flapping_per_hour == topo.alerts.flapping_per_hour == 4
    assert lab.acceptance_window == topo.alerts.acceptance_window == 6 * 3600
    assert topo.alerts.on_backup_after == 15 * 60


def test_the_labs_drills_replace_only_the_keys_they_give() -> None:
    topo = loads(GOOD, "topology.yaml")
    lab, defaults = topo.lab_drills, topo.drills.defaults
    assert (lab.baseline, lab.degraded, lab.settle, lab.failback_timeout) == (10, 15, 2, 60)
    assert (defaults.baseline, defaults.degraded, defaults.settle) == (60, 300, 5)
    assert defaults.failback_timeout == 180
    assert lab.terminals == defaults.terminals == 10
    assert lab.thresholds == defaults.thresholds == DrillThresholds(2.0, 1.0, True)
    assert topo.drill_settings("nishiki", lab=True) == lab
    assert topo.drill_settings("nishiki", lab=False) == defaults
    with pytest.raises(KeyError, match="unknown town 'nowhere'"):
        topo.drill_settings("nowhere", lab=False)


def test_a_schedules_settings_override_the_defaults_key_by_key() -> None:
    text = GOOD.replace(
        '      cron: "0 2 * * 2#4"      # fourth Tuesday\n',
        '      cron: "0 2 * * 2#4"\n'
        "      settings: {degraded: 2m, thresholds: {max_outage: 3s, load_test: ignore}}\n",
        1,
    )
    topo = loads(text, "t.yaml")
    defaults, settings = topo.drills.defaults, topo.drills.schedules[3].settings
    assert settings == DrillSettings(
        baseline=60.0,
        degraded=120.0,
        terminals=10,
        settle=5.0,
        failback_timeout=180.0,
        thresholds=DrillThresholds(
            max_outage=3.0, max_failback_outage=1.0, load_test_must_pass=False
        ),
    )
    assert topo.drills.schedules[2].settings == defaults
    # In the lab, the lab's short runs apply over the schedule's settings.
    in_lab = topo.drill_settings("kawaminami", lab=True, schedule=topo.drills.schedules[3])
    assert (in_lab.baseline, in_lab.degraded, in_lab.thresholds.max_outage) == (10, 15, 3)


def test_the_real_drill_schedules_are_resolved() -> None:
    topo = loads(GOOD, "topology.yaml")
    schedules = topo.drills.schedules
    assert [s.towns for s in schedules] == [
        ("nishiki",),
        ("takaharu",),
        ("tsuno",),
        ("kawaminami",),
    ]
    assert [s.index for s in schedules] == [0, 1, 2, 3]
    for s in schedules:
        assert (s.timezone, s.fault) == ("Asia/Tokyo", "lab")
        assert s.windows == (TimeWindow(time(1, 0), time(5, 0)),)
        assert s.blackouts == schedules[0].blackouts  # one list, written once
        assert all(b.start <= b.end and b.reason for b in s.blackouts)
    assert Blackout(date(2026, 12, 28), date(2027, 1, 4), schedules[0].blackouts[0].reason) in (
        schedules[0].blackouts
    )


def test_drill_towns_all_means_every_town_in_cutover_order() -> None:
    text = GOOD.replace("cutover_week: 1 ", "cutover_week: 5 ", 1).replace(
        "towns: [tsuno]", "towns: all", 1
    )
    text = text.replace(
        "fault: lab\n", "fault: {command: [cut, lgwan0], restore: [mend, lgwan0]}\n", 1
    )
    topo = loads(text, "t.yaml")
    assert topo.drills.schedules[2].towns == ("takaharu", "tsuno", "kawaminami", "nishiki")
    assert topo.drills.schedules[1].fault == FaultCommand(("cut", "lgwan0"), ("mend", "lgwan0"))


def test_a_topology_without_drills_gets_the_builtin_defaults() -> None:
    start = GOOD.index("drills:\n")
    text = GOOD[:start] + GOOD[GOOD.index("# The emulated network") :]
    topo = loads(text, "t.yaml")
    assert topo.drills.schedules == ()
    assert (
        topo.drills.defaults == loads(GOOD, "t.yaml").drills.defaults
    )  # the file's are the built-in ones
    assert topo.lab_drills.baseline == 10.0


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_file_is_rejected_with_location(case: Case) -> None:
    text, line = _mutate(case)
    with pytest.raises(TopologyError) as info:
        loads(text, "bad.yaml")
    rendered = [str(p) for p in info.value.problems]
    matching = [p for p in info.value.problems if p.path == case.path and case.message in p.message]
    assert matching, f"no problem at {case.path} with {case.message!r}; got {rendered}"
    assert matching[0].line == line, rendered
    assert matching[0].file == "bad.yaml"
    assert str(matching[0]).startswith(f"bad.yaml:{line}: {case.path}: ")


def test_real_topology_is_valid_and_matches_the_seed_facts() -> None:
    topo = load(ROOT / "topology.yaml")
    populations = {t.id: t.population for t in topo.towns}
    assert populations == {"nishiki": 11407, "takaharu": 9847, "tsuno": 11130, "kawaminami": 16905}
    assert sum(populations.values()) == 49289
    assert [t.cutover_week for t in topo.towns] == [1, 2, 3, 4]
    assert all(t.terminals == 10 for t in topo.towns)
    for town in topo.towns:
        assert town.primary.network == "lgwan"
        assert town.primary.bandwidth == 100_000_000
        assert [b.bandwidth for b in town.backups] == [47_000_000]
    assert "Kuma" in topo.town("nishiki").primary.access_point
    assert all(
        "Takanabe" in topo.town(t).primary.access_point for t in ("takaharu", "tsuno", "kawaminami")
    )
    assert {"fast", "mwan3-default", "pfsense-default"} <= set(topo.policy.profiles)
    assert topo.policy.profiles["mwan3-default"].interval == 10.0
    assert topo.policy.profiles["pfsense-default"].window == 60.0


def test_yaml_syntax_error_is_located_not_a_traceback() -> None:
    text = GOOD.replace("prefixes: [10.200.0.0/24]", "prefixes: [10.200.0.0/24", 1)
    with pytest.raises(TopologyError) as info:
        loads(text, "broken.yaml")
    (problem,) = info.value.problems
    assert problem.file == "broken.yaml"
    assert problem.line is not None
    assert "YAML syntax error" in problem.message


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "42\n"])
def test_a_file_that_is_not_a_mapping_is_rejected(text: str) -> None:
    with pytest.raises(TopologyError) as info:
        loads(text, "odd.yaml")
    assert "expected a mapping of top-level keys" in str(info.value)


def test_missing_key_points_at_its_parent() -> None:
    text = GOOD.replace("        gateway: 10.10.1.1\n", "", 1)
    with pytest.raises(TopologyError) as info:
        loads(text, "t.yaml")
    (problem,) = info.value.problems
    assert problem.path == "towns[0].paths[0].gateway"
    assert problem.message == "missing required key"
    assert problem.line == GOOD.count("\n", 0, GOOD.find("      - name: primary")) + 1


def test_every_problem_is_reported_not_only_the_first() -> None:
    text = GOOD.replace("gateway: 10.10.1.1", "gateway: 10.10.9.1", 1).replace(
        "recover: {loss: 5%", "recover: {loss: 40%", 1
    )
    with pytest.raises(TopologyError) as info:
        loads(text, "t.yaml")
    paths = {p.path for p in info.value.problems}
    assert {"towns[0].paths[0].gateway", "policy.profiles.fast.recover.loss"} <= paths


def _netwatch(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netwatch.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_command_prints_summary_and_exits_zero() -> None:
    result = _netwatch("check")
    assert result.returncode == 0, result.stderr
    assert "topology.yaml: valid" in result.stdout
    assert "49,289 residents" in result.stdout
    for town in ("nishiki", "takaharu", "tsuno", "kawaminami"):
        assert town in result.stdout
    assert "drills: baseline 1m, degraded 5m, 10 terminals" in result.stdout
    assert "  in the lab: baseline 10s, degraded 15s" in result.stdout
    assert "  schedule 0: nishiki; cron '0 2 * * 2#1' (Asia/Tokyo)" in result.stdout


def test_check_prints_each_towns_next_drill() -> None:
    out = io.StringIO()
    print_summary("topology.yaml", loads(GOOD), out, now=datetime(2026, 12, 1, 22, 52, tzinfo=UTC))
    text = out.getvalue()
    assert "  next drills (after 2026-12-01 22:52 UTC):\n" in text
    assert "    nishiki     Tue 2027-01-05 02:00 JST\n" in text
    assert "    takaharu    Tue 2026-12-08 02:00 JST\n" in text
    assert "windows 01:00-05:00, 7 blackouts, fault lab" in text


def test_check_command_lists_every_problem_and_exits_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GOOD.replace("gateway: 10.10.1.1", "gateway: 10.10.9.1", 1).replace(
            "default: fast", "default: fastest", 1
        ),
        encoding="utf-8",
    )
    result = _netwatch("check", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}:" in result.stderr
    assert "towns[0].paths[0].gateway" in result.stderr
    assert "policy.default" in result.stderr
    assert result.stderr.strip().endswith("2 problems")


@pytest.mark.parametrize("content", [None, b"\xff\xfe not utf-8"])
def test_check_command_unreadable_file_is_one_line(tmp_path: Path, content: bytes | None) -> None:
    target = tmp_path / "topology.yaml"
    if content is not None:
        target.write_bytes(content)
    result = _netwatch("check", str(target))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2
