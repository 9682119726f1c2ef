"""Rules that span several keys of topology.yaml.

Each rule yields (key path, message) so that the loader can point at the
line of the key that is wrong.  The model has already checked every
shape and unit by the time these run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv4Network
from itertools import islice
from zoneinfo import ZoneInfo

from cronsim import CronSim

from netwatch.topology.drills import TimeWindow
from netwatch.topology.model import TRANSACTIONS, Topology
from netwatch.topology.source import KeyPath, format_path
from netwatch.topology.units import format_duration, format_percentage

Finding = tuple[KeyPath, str]


def check(topo: Topology) -> list[Finding]:
    findings: list[Finding] = []
    for rule in (
        _towns,
        _paths,
        _targets,
        _policy,
        _loadtest,
        _drills,
        _lab_links,
        _lab_subnets,
    ):
        findings.extend(rule(topo))
    return findings


def _duplicates(values: list[str]) -> Iterator[tuple[int, str]]:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            yield index, value
        seen.add(value)


def _towns(topo: Topology) -> Iterator[Finding]:
    for index, town_id in _duplicates([t.id for t in topo.towns]):
        yield ("towns", index, "id"), f"duplicate town id {town_id!r}"
    lab_nodes = set(topo.lab.nodes)
    for index, town in enumerate(topo.towns):
        if town.id in lab_nodes:
            yield (
                ("towns", index, "id"),
                f"town id {town.id!r} is also a lab node name; ids must be unique",
            )


def _paths(topo: Topology) -> Iterator[Finding]:
    for t, town in enumerate(topo.towns):
        base: KeyPath = ("towns", t, "paths")
        roles = [p.role for p in town.paths]
        if roles.count("primary") != 1:
            yield (
                base,
                (
                    f"town {town.id!r} has {roles.count('primary')} primary paths; "
                    "expected exactly one"
                ),
            )
        if roles.count("backup") < 1:
            yield base, f"town {town.id!r} has no backup path; expected at least one"
        for key in ("name", "interface", "mark", "table"):
            values = [str(getattr(p, key)) for p in town.paths]
            for index, value in _duplicates(values):
                yield (*base, index, key), f"duplicate {key} {value!r} within town {town.id!r}"
        for p, path in enumerate(town.paths):
            subnet = path.address.network
            if path.gateway not in subnet:
                yield (
                    (*base, p, "gateway"),
                    (
                        f"gateway {path.gateway} is outside the path's subnet {subnet} "
                        f"(from address {path.address})"
                    ),
                )
            elif path.gateway == path.address.ip:
                yield (*base, p, "gateway"), f"gateway {path.gateway} is the path's own address"
            if subnet.prefixlen < 31 and path.address.ip in (
                subnet.network_address,
                subnet.broadcast_address,
            ):
                yield (
                    (*base, p, "address"),
                    (f"{path.address.ip} is the network or broadcast address of {subnet}"),
                )


def _targets(topo: Topology) -> Iterator[Finding]:
    dc = topo.datacenter
    for key, address in (("icmp", dc.targets.icmp), ("tcp", dc.targets.tcp.host)):
        if not any(address in prefix for prefix in dc.prefixes):
            yield (
                ("datacenter", "targets", key),
                (
                    f"{address} is outside the data center's prefixes "
                    f"({', '.join(map(str, dc.prefixes))}); agents route only those"
                ),
            )
    ops = topo.opscenter
    if ops.address not in ops.prefix:
        yield ("opscenter", "address"), f"{ops.address} is outside the prefix {ops.prefix}"


def _policy(topo: Topology) -> Iterator[Finding]:
    policy = topo.policy
    if policy.default not in policy.profiles:
        known = ", ".join(policy.profiles) or "none"
        yield ("policy", "default"), f"no profile named {policy.default!r} (profiles: {known})"
    for name, prof in policy.profiles.items():
        base: KeyPath = ("policy", "profiles", name)
        if prof.recover.loss >= prof.fail.loss and prof.fail.loss > 0:
            yield (
                (*base, "recover", "loss"),
                (
                    f"recover loss {format_percentage(prof.recover.loss)} must be stricter "
                    f"(lower) than fail loss {format_percentage(prof.fail.loss)}, or paths flap"
                ),
            )
        if prof.recover.latency >= prof.fail.latency:
            yield (
                (*base, "recover", "latency"),
                (
                    f"recover latency {format_duration(prof.recover.latency)} must be stricter "
                    f"(lower) than fail latency {format_duration(prof.fail.latency)}, or paths flap"
                ),
            )
        if prof.fail.latency >= prof.timeout:
            yield (
                (*base, "fail", "latency"),
                (
                    f"fail latency {format_duration(prof.fail.latency)} must be below the probe "
                    f"timeout {format_duration(prof.timeout)}: a probe gives up at the timeout, "
                    "so a slower path is only ever seen as loss"
                ),
            )
        if prof.standby_interval is not None and prof.standby_interval < prof.interval:
            yield (
                (*base, "standby_interval"),
                "standby_interval must not be shorter than interval (a standby path is "
                "probed at most as often as the active one)",
            )
        if prof.min_timeout is not None and prof.min_timeout > prof.timeout:
            yield (
                (*base, "min_timeout"),
                f"min_timeout {format_duration(prof.min_timeout)} exceeds timeout "
                f"{format_duration(prof.timeout)}",
            )
        for slow, seconds in prof.probe_intervals.items():
            if slow not in prof.probes:
                yield (
                    (*base, "probe_intervals", slow),
                    f"probe kind {slow!r} is not in probes {list(prof.probes)}",
                )
            elif seconds < prof.interval:
                yield (
                    (*base, "probe_intervals", slow),
                    (
                        f"{format_duration(seconds)} is shorter than the round interval "
                        f"{format_duration(prof.interval)}: a kind is probed at most once a round"
                    ),
                )
        if prof.probes and all(prof.probe_interval(k) > prof.interval for k in prof.probes):
            yield (
                (*base, "probe_intervals"),
                "at least one probe kind must be probed every round (at `interval`)",
            )
        if prof.false_alarm is not None and not 0 < prof.fail.loss < 1:
            yield (
                (*base, "fail", "loss"),
                (
                    "with false_alarm set, fail loss must be between 0 and 100 % "
                    "(the silent rounds needed are log(false_alarm) / log(fail loss))"
                ),
            )
        if prof.degraded.loss > prof.fail.loss:
            yield (*base, "degraded", "loss"), "degraded loss must not exceed fail loss"
        if prof.degraded.latency > prof.fail.latency:
            yield (*base, "degraded", "latency"), "degraded latency must not exceed fail latency"
        if prof.suspect_interval > prof.interval:
            yield (
                (*base, "suspect_interval"),
                (
                    "suspect_interval must not be longer than interval "
                    "(a changing path is probed faster, not slower)"
                ),
            )
        if prof.window < prof.interval:
            yield (*base, "window"), "window must hold at least one probe interval"
        if prof.damping.reuse >= prof.damping.suppress:
            yield (
                (*base, "damping", "reuse"),
                (f"reuse {prof.damping.reuse:g} must be below suppress {prof.damping.suppress:g}"),
            )
        targets = len(prof.probes)
        if prof.reliability > targets:
            yield (
                (*base, "reliability"),
                (f"reliability {prof.reliability} exceeds the {targets} probe kinds configured"),
            )
        for index, kind in _duplicates(list(prof.probes)):
            yield (*base, "probes", index), f"probe kind {kind!r} listed twice"


def _loadtest(topo: Topology) -> Iterator[Finding]:
    lt = topo.loadtest
    if lt.think_time.min > lt.think_time.max:
        yield ("loadtest", "think_time", "min"), "think_time min is above max"
    for name in TRANSACTIONS:
        if name not in lt.sla:
            yield ("loadtest", "sla"), f"no SLA for transaction {name!r}"
    for name, sla in lt.sla.items():
        if sla.p99 < sla.p95:
            yield ("loadtest", "sla", name, "p99"), "p99 limit is below the p95 limit"
    try:
        lt.credentials.user.format(town="nishiki", terminal=1)
    except (KeyError, IndexError, ValueError) as exc:
        yield (
            ("loadtest", "credentials", "user"),
            f"bad template ({exc!s}); use {{town}} and {{terminal}}, "
            "e.g. '{town}-t{terminal:02d}'",
        )


def _drills(topo: Topology) -> Iterator[Finding]:
    known = [t.id for t in topo.towns]
    for s, spec in enumerate(topo.drills_spec.schedules):
        base: KeyPath = ("drills", "schedules", s)
        for index, town in enumerate(spec.towns or ()):
            if town not in known:
                yield (*base, "towns", index), f"unknown town {town!r} (known: {', '.join(known)})"
        for index, town in _duplicates(list(spec.towns or ())):
            yield (*base, "towns", index), f"town {town!r} listed twice"
        for index, blackout in enumerate(spec.blackouts):
            if blackout.to < blackout.from_:
                yield (
                    (*base, "blackouts", index, "to"),
                    f"blackout ends ({blackout.to}) before it starts ({blackout.from_})",
                )
        if spec.windows and not _ever_in_window(spec.cron, spec.timezone, spec.windows):
            yield (
                (*base, "cron"),
                f"cron {spec.cron!r} never falls inside the windows "
                f"{', '.join(map(str, spec.windows))}, so the drill never runs",
            )


def _ever_in_window(cron: str, timezone: str, windows: tuple[TimeWindow, ...]) -> bool:
    # Time of day barely depends on the date: a year's worth of a daily
    # cron (or a few days of a per-minute one) decides it without a clock.
    start = datetime(2001, 1, 1, tzinfo=UTC).astimezone(ZoneInfo(timezone))
    return any(
        any(w.contains(occurrence.time()) for w in windows)
        for occurrence in islice(CronSim(cron, start), 2000)
    )


def _lab_links(topo: Topology) -> Iterator[Finding]:
    lab = topo.lab
    towns = {t.id: t for t in topo.towns}
    roles = [n.role for n in lab.nodes.values()]
    for role in ("datacenter", "opscenter"):
        if roles.count(role) != 1:
            yield ("lab", "nodes"), f"expected exactly one node with role {role}"
    for index, link_id in _duplicates([link.id for link in lab.links]):
        yield ("lab", "links", index, "id"), f"duplicate link id {link_id!r}"
    carried: dict[tuple[str, str], int] = {}
    for i, link in enumerate(lab.links):
        base: KeyPath = ("lab", "links", i)
        for end in ("a", "b"):
            node = getattr(link, end)
            if node not in towns and node not in lab.nodes:
                yield (*base, end), f"unknown node {node!r} (not a town nor a lab node)"
        for direction in ("a_to_b", "b_to_a"):
            name = getattr(link, direction)
            if name not in lab.profiles:
                yield (*base, direction), f"unknown link profile {name!r}"
        if link.b in towns:
            yield (*base, "b"), "a town must be the `a` end of its links"
        if link.a in towns:
            town = towns[link.a]
            if link.b in lab.nodes and lab.nodes[link.b].role != "router":
                yield (*base, "b"), f"a town's path must lead to a router node, not {link.b!r}"
            if link.subnet is not None:
                yield (*base, "subnet"), "a town link takes its subnet from the town's path"
            if link.path is None:
                yield base, f"link {link.id!r} starts at town {town.id!r}: name its `path`"
            elif link.path not in {p.name for p in town.paths}:
                yield (*base, "path"), f"town {town.id!r} has no path {link.path!r}"
            elif (town.id, link.path) in carried:
                yield (*base, "path"), f"path {town.id}/{link.path} already has a link"
            else:
                carried[(town.id, link.path)] = i
        else:
            if link.path is not None:
                yield (*base, "path"), "only a link that starts at a town carries a path"
            if link.subnet is None:
                yield base, f"link {link.id!r} joins two lab nodes: give it a `subnet`"
            elif link.subnet.num_addresses < 2 or (
                link.subnet.prefixlen < 31 and link.subnet.num_addresses < 4
            ):
                yield (*base, "subnet"), f"{link.subnet} has no room for two addresses"
    for t, town in enumerate(topo.towns):
        for p, path in enumerate(town.paths):
            if (town.id, path.name) not in carried:
                yield (
                    ("towns", t, "paths", p),
                    (f"no lab link carries {town.id}/{path.name}; add one under lab.links"),
                )


def _lab_subnets(topo: Topology) -> Iterator[Finding]:
    """Every network the lab builds must be distinct, or routing is ambiguous."""
    owned: list[tuple[IPv4Network, KeyPath]] = []
    for t, town in enumerate(topo.towns):
        for p, path in enumerate(town.paths):
            owned.append((path.address.network, ("towns", t, "paths", p, "address")))
    for d, prefix in enumerate(topo.datacenter.prefixes):
        owned.append((prefix, ("datacenter", "prefixes", d)))
    owned.append((topo.opscenter.prefix, ("opscenter", "prefix")))
    for i, link in enumerate(topo.lab.links):
        if link.subnet is not None:
            owned.append((link.subnet, ("lab", "links", i, "subnet")))
    # A sweep over the networks sorted by address, not every pair: a fleet
    # of 1,741 towns has 3,500 of them.  Reported in file order, each later
    # network naming the earlier one it overlaps.
    spans = sorted(
        (int(net.network_address), int(net.broadcast_address), i)
        for i, (net, _) in enumerate(owned)
    )
    pairs: list[tuple[int, int]] = []
    open_spans: list[tuple[int, int]] = []  # (last address, index) of spans not yet passed
    for first, last, i in spans:
        open_spans = [(end, j) for end, j in open_spans if end >= first]
        pairs += [(max(i, j), min(i, j)) for _, j in open_spans]
        open_spans.append((last, i))
    for i, j in sorted(pairs):
        (net, where), (other, other_where) = owned[i], owned[j]
        yield where, f"{net} overlaps {other} (at {format_path(other_where)})"
