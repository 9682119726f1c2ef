"""The typed model of topology.yaml.

Shapes and units are checked here by pydantic (unknown keys are refused
everywhere); rules that span several keys live in `rules.py`, where each
finding can name the exact key it is about.  Every model is frozen: the
topology is read once and shared by every part of a process.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from netwatch.topology.drills import (
    Blackout,
    Drills,
    DrillSchedule,
    DrillSettings,
    DrillThresholds,
    FaultCommand,
    TimeWindow,
    check_cron,
    check_timezone,
    parse_window,
)
from netwatch.topology.ids import id_problem
from netwatch.topology.units import parse_duration, parse_percentage, parse_rate


def _check_id(value: str) -> str:
    problem = id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_link_id(value: str) -> str:
    if not (1 <= len(value) <= 32) or not value.isascii() or not value[0].isalpha():
        raise ValueError(f"expected a link id of 1-32 ASCII letters, digits or '-', got {value!r}")
    if not all(c.islower() or c.isdigit() or c == "-" for c in value):
        raise ValueError(f"expected a lowercase link id (letters, digits, '-'), got {value!r}")
    return value


def _check_ifname(value: str) -> str:
    # Linux refuses names over 15 bytes and names containing '/', ':' or spaces.
    if not (1 <= len(value.encode()) <= 15) or any(c in value for c in "/: \t"):
        raise ValueError(f"expected an interface name of 1-15 characters, got {value!r}")
    return value


def _url_checker(*schemes: str) -> AfterValidator:
    def check(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            expected = " or ".join(f"{s}://HOST" for s in schemes)
            raise ValueError(f"expected a URL like {expected}..., got {value!r}")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"the port in {value!r} is not a number 0-65535") from None
        return value

    return AfterValidator(check)


@dataclass(frozen=True)
class HostPort:
    host: IPv4Address
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _parse_hostport(value: object) -> object:
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str) or value.count(":") != 1:
        raise ValueError(f"expected ADDRESS:PORT like '10.200.0.10:8080', got {value!r}")
    host, _, port = value.partition(":")
    try:
        address = IPv4Address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv4 address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected a port 1-65535, got {port!r}")
    return HostPort(address, int(port))


def _parse_network(value: object) -> object:
    # Refuse host bits: "10.200.0.1/24" is almost always a typo for an address.
    if isinstance(value, str):
        try:
            return ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"expected an IPv4 network like '10.200.0.0/24': {exc}") from None
    return value


Id = Annotated[str, AfterValidator(_check_id)]
IfName = Annotated[str, AfterValidator(_check_ifname)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
Rate = Annotated[int, BeforeValidator(parse_rate)]
Ratio = Annotated[float, BeforeValidator(parse_percentage)]
Network = Annotated[IPv4Network, BeforeValidator(_parse_network)]
Endpoint = Annotated[HostPort, BeforeValidator(_parse_hostport)]
HttpUrl = Annotated[str, _url_checker("http", "https")]
MqttUrl = Annotated[str, _url_checker("mqtt", "mqtts")]
PositiveInt = Annotated[int, Field(ge=1)]

Transaction = Literal["app_start", "logon", "ledger_inquiry", "certificate", "batch"]
TRANSACTIONS: tuple[Transaction, ...] = get_args(Transaction)  # in workflow order
ProbeKind = Literal["icmp", "tcp", "http"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- towns and their paths -------------------------------------------------


class TownPath(Model):
    name: Id
    role: Literal["primary", "backup"]
    network: Id
    access_point: str
    bandwidth: Rate
    interface: IfName
    address: IPv4Interface
    gateway: IPv4Address
    mark: Annotated[int, Field(ge=1, le=0xFFFFFFFF)]
    table: Annotated[int, Field(ge=1, le=252)]  # 253-255 are default, main, local


class Town(Model):
    id: Id
    name: str
    prefecture: str
    population: PositiveInt
    cutover_week: PositiveInt
    terminals: PositiveInt
    paths: tuple[TownPath, ...]

    @property
    def primary(self) -> TownPath:
        return next(p for p in self.paths if p.role == "primary")

    @property
    def backups(self) -> tuple[TownPath, ...]:
        return tuple(p for p in self.paths if p.role == "backup")

    @property
    def paths_by_preference(self) -> tuple[TownPath, ...]:
        """The primary first, then the backups in the order written."""
        return (self.primary, *self.backups)

    def path(self, name: str) -> TownPath:
        for path in self.paths:
            if path.name == name:
                return path
        raise KeyError(f"town {self.id!r} has no path {name!r}")


# --- the data center and the operations center ------------------------------


class Targets(Model):
    icmp: IPv4Address
    tcp: Endpoint
    http: HttpUrl
    http_status: Annotated[int, Field(ge=100, le=599)] = 200


class Datacenter(Model):
    name: str
    bandwidth: Rate
    prefixes: Annotated[tuple[Network, ...], Field(min_length=1)]
    targets: Targets


class Opscenter(Model):
    name: str
    line: Rate
    prefix: Network
    address: IPv4Address
    mqtt: MqttUrl
    prometheus: HttpUrl
    grafana: HttpUrl = "http://127.0.0.1:3000"  # the alerts' dashboard_url points here


# --- alerts -----------------------------------------------------------------


class Alerts(Model):
    """When the operations center's Prometheus alerts: the rules under
    deploy/prometheus/ are generated from these (`netwatch dashboards`)."""

    path_down_for: Annotated[Duration, Field(ge=0)] = 60.0
    on_backup_after: Annotated[Duration, Field(gt=0)] = 900.0
    all_down_for: Annotated[Duration, Field(ge=0)] = 0.0
    stale_for: Annotated[Duration, Field(ge=0)] = 120.0  # offline or unknown
    flapping_per_hour: PositiveInt = 4  # failovers of one town within an hour
    route_event_window: Annotated[Duration, Field(gt=0)] = 900.0  # a reinstalled route shows
    opscenter_down_for: Annotated[Duration, Field(ge=0)] = 60.0
    acceptance_window: Annotated[Duration, Field(gt=0)] = 21600.0  # a failed verdict shows
    held_for: Annotated[Duration, Field(gt=0)] = 3600.0  # a hold this long gets a reminder
    drill_failed_window: Annotated[Duration, Field(gt=0)] = 21600.0  # a failed drill shows
    no_recent_drill_after: Annotated[Duration, Field(gt=0)] = 100 * 86400.0


# --- failover drills ----------------------------------------------------------


class DrillThresholdsSpec(Model):
    max_outage: Annotated[Duration, Field(gt=0)] = 2.0
    max_failback_outage: Annotated[Duration, Field(gt=0)] = 1.0
    load_test: Literal["pass", "ignore"] = "pass"

    def over(self, base: DrillThresholds) -> DrillThresholds:
        given = self.model_fields_set
        return DrillThresholds(
            max_outage=self.max_outage if "max_outage" in given else base.max_outage,
            max_failback_outage=(
                self.max_failback_outage
                if "max_failback_outage" in given
                else base.max_failback_outage
            ),
            load_test_must_pass=(
                self.load_test == "pass" if "load_test" in given else base.load_test_must_pass
            ),
        )


class DrillSettingsSpec(Model):
    """Every key has a built-in default; as an override (`drills.defaults`, a
    schedule's `settings`, `lab.drills`) only the keys written replace the
    base, as `lab.alerts` does, down into `thresholds`."""

    baseline: Annotated[Duration, Field(gt=0)] = 60.0
    degraded: Annotated[Duration, Field(gt=0)] = 300.0
    terminals: PositiveInt = 10  # the seed's test: 10 terminals at once
    settle: Annotated[Duration, Field(ge=0)] = 5.0
    failback_timeout: Annotated[Duration, Field(gt=0)] = 180.0
    thresholds: DrillThresholdsSpec = DrillThresholdsSpec()

    def over(self, base: DrillSettings) -> DrillSettings:
        given = {k: getattr(self, k) for k in self.model_fields_set if k != "thresholds"}
        return dataclasses.replace(base, **given, thresholds=self.thresholds.over(base.thresholds))


def _builtin_drill_settings() -> DrillSettings:
    spec, t = DrillSettingsSpec(), DrillThresholdsSpec()
    thresholds = DrillThresholds(t.max_outage, t.max_failback_outage, t.load_test == "pass")
    return DrillSettings(
        spec.baseline, spec.degraded, spec.terminals, spec.settle, spec.failback_timeout, thresholds
    )


BUILTIN_DRILL_SETTINGS = _builtin_drill_settings()  # a topology without `drills:` gets these


def _parse_date(value: object) -> object:
    # YAML reads 2027-03-15 as a date; a quoted one is a string.
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ValueError(f"expected a date like 2027-03-15, got {value!r}")


Date = Annotated[date, BeforeValidator(_parse_date)]


class BlackoutSpec(Model):
    from_: Date = Field(alias="from")
    to: Date  # included
    reason: Annotated[str, Field(min_length=1)]


Argv = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]


class FaultSpec(Model):
    command: Argv  # cuts the town's primary
    restore: Argv  # puts it back; a drill always runs it


def _parse_towns(value: object) -> object:
    # None stands for "all": resolved once the towns are known.
    if value == "all":
        return None
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"expected 'all' or a list of town ids like [nishiki], got {value!r}")
    return value


def _parse_fault(value: object) -> object:
    # None stands for "lab" (the lab cuts its own emulated link); YAML's own
    # null is refused so that a forgotten value never means the lab.
    if value == "lab":
        return None
    if not isinstance(value, dict | FaultSpec):
        raise ValueError(
            f"expected 'lab' or {{command: [argv...], restore: [argv...]}}, got {value!r}"
        )
    return value


Window = Annotated[TimeWindow, BeforeValidator(parse_window)]


class DrillScheduleSpec(Model):
    towns: Annotated[tuple[Id, ...] | None, BeforeValidator(_parse_towns)]
    cron: Annotated[str, AfterValidator(check_cron)]  # in `timezone`
    timezone: Annotated[str, AfterValidator(check_timezone)]
    windows: tuple[Window, ...] = ()  # none: any time of day
    blackouts: tuple[BlackoutSpec, ...] = ()
    fault: Annotated[FaultSpec | None, BeforeValidator(_parse_fault)]
    settings: DrillSettingsSpec = DrillSettingsSpec()


class DrillsSpec(Model):
    defaults: DrillSettingsSpec = DrillSettingsSpec()
    schedules: tuple[DrillScheduleSpec, ...] = ()

    def resolve(self, towns: tuple[Town, ...]) -> Drills:
        defaults = self.defaults.over(BUILTIN_DRILL_SETTINGS)
        in_cutover_order = tuple(t.id for t in sorted(towns, key=lambda t: t.cutover_week))
        return Drills(
            defaults=defaults,
            schedules=tuple(
                DrillSchedule(
                    index=index,
                    towns=in_cutover_order if spec.towns is None else spec.towns,
                    cron=spec.cron,
                    timezone=spec.timezone,
                    windows=spec.windows,
                    blackouts=tuple(Blackout(b.from_, b.to, b.reason) for b in spec.blackouts),
                    fault=(
                        "lab"
                        if spec.fault is None
                        else FaultCommand(spec.fault.command, spec.fault.restore)
                    ),
                    settings=spec.settings.over(defaults),
                )
                for index, spec in enumerate(self.schedules)
            ),
        )


# --- probe policy -----------------------------------------------------------


class Thresholds(Model):
    loss: Ratio
    latency: Duration


class Damping(Model):
    """Route-flap damping as in RFC 2439: a decaying penalty per change."""

    penalty: Annotated[float, Field(ge=0)]
    half_life: Annotated[Duration, Field(gt=0)]
    suppress: Annotated[float, Field(gt=0)]
    reuse: Annotated[float, Field(gt=0)]
    max_suppress: Annotated[Duration, Field(gt=0)]


class PolicyProfile(Model):
    interval: Annotated[Duration, Field(gt=0)]
    suspect_interval: Annotated[Duration, Field(gt=0)]
    timeout: Annotated[Duration, Field(gt=0)]
    window: Annotated[Duration, Field(gt=0)]
    fall: PositiveInt
    rise: PositiveInt
    reliability: PositiveInt
    probes: Annotated[tuple[ProbeKind, ...], Field(min_length=1)]
    fail: Thresholds
    recover: Thresholds
    degraded: Thresholds
    failback_holddown: Annotated[Duration, Field(ge=0)]
    damping: Damping
    # Rounds on a path that carries no traffic, while stable (None: `interval`):
    # the standby's state matters at a failover, not to the millisecond.
    standby_interval: Annotated[Duration, Field(gt=0)] | None = None
    # The shortest a probe waits once its RTT is learned (RFC 6298 style);
    # None: always the whole timeout, as mwan3 and dpinger wait.
    min_timeout: Annotated[Duration, Field(gt=0)] | None = None
    # Kinds probed less often than every round (e.g. {tcp: 1s, http: 1s}):
    # cheap ICMP detects, the shared application sees a few requests a second.
    probe_intervals: dict[ProbeKind, Annotated[Duration, Field(gt=0)]] = {}
    # Per-round chance accepted that random loss under the fail line looks like
    # a cut: a silent run must be ceil(log(false_alarm) / log(fail.loss))
    # rounds long to take the path DOWN (None: `fall` rounds).
    false_alarm: Annotated[Ratio, Field(gt=0, lt=1)] | None = None
    # A primary DEGRADED for this long while a backup is UP moves traffic
    # there (None: off); it returns after the hold-down, once the primary is clean.
    degraded_failover: Annotated[Duration, Field(gt=0)] | None = None

    def probe_interval(self, kind: str) -> float:
        """How often `kind` is probed while stable (every round unless slower)."""
        for probed, seconds in self.probe_intervals.items():
            if probed == kind:
                return max(self.interval, seconds)
        return self.interval


class Policy(Model):
    default: str
    profiles: dict[str, PolicyProfile]

    def profile(self, name: str | None = None) -> PolicyProfile:
        return self.profiles[name or self.default]


# --- the acceptance load test -----------------------------------------------


class ThinkTime(Model):
    min: Annotated[Duration, Field(ge=0)]
    max: Annotated[Duration, Field(ge=0)]


class Credentials(Model):
    user: str  # a template: {town} and {terminal} are filled in
    password_env: str = "LOADPROBE_PASSWORD"
    password_file: str | None = None


class Sla(Model):
    p95: Annotated[Duration, Field(gt=0)]
    p99: Annotated[Duration, Field(gt=0)]
    max_error_ratio: Ratio
    max_degradation: Annotated[float, Field(ge=1.0)]


class LoadTest(Model):
    base_url: HttpUrl
    terminals: PositiveInt
    duration: Annotated[Duration, Field(gt=0)]
    think_time: ThinkTime
    credentials: Credentials
    resident_kana: Annotated[tuple[str, ...], Field(min_length=1)]
    sla: dict[Transaction, Sla]
    # Optional knobs of the terminal's workflow; the defaults suit the
    # reference application.
    batch_poll: Annotated[Duration, Field(gt=0)] = 0.5  # between two status polls of a batch
    batch_timeout: Annotated[Duration, Field(gt=0)] = 120.0  # submit → result, or the batch fails
    request_timeout: Annotated[Duration, Field(gt=0)] = 30.0  # one HTTP request (connect + reply)
    fiscal_year: Annotated[int, Field(ge=2012, le=2100)] = 2012  # of the tax recalculation


# --- the lab ------------------------------------------------------------------


class LinkProfile(Model):
    """One direction of an emulated link."""

    rate: Rate | None = None  # None: not rate-limited
    delay: Annotated[Duration, Field(ge=0)] = 0.0
    jitter: Annotated[Duration, Field(ge=0)] = 0.0
    loss: Ratio = 0.0
    queue: PositiveInt = 1000  # packets, drop-tail


class LabNode(Model):
    role: Literal["router", "datacenter", "opscenter"]
    label: str = ""


class LabLink(Model):
    id: Annotated[str, AfterValidator(_check_link_id)]
    a: Id
    b: Id
    path: Id | None = None  # set when `a` is a town: the path this link carries
    subnet: Network | None = None  # set when neither end is a town
    a_to_b: str
    b_to_a: str


class Lab(Model):
    run_dir: str = "/run/netwatch-lab"
    profiles: dict[str, LinkProfile]
    nodes: dict[str, LabNode]
    links: tuple[LabLink, ...]
    alerts: Alerts = Alerts()  # only the keys given replace the topology's `alerts`
    drills: DrillSettingsSpec = DrillSettingsSpec()  # ... and the drills' settings


class Topology(Model):
    schema_: Literal[1] = Field(alias="schema")
    towns: Annotated[tuple[Town, ...], Field(min_length=1)]
    datacenter: Datacenter
    opscenter: Opscenter
    policy: Policy
    loadtest: LoadTest
    alerts: Alerts = Alerts()
    # The written section; `drills` is the resolved one.
    drills_spec: DrillsSpec = Field(DrillsSpec(), alias="drills")
    lab: Lab

    def town(self, town_id: str) -> Town:
        for town in self.towns:
            if town.id == town_id:
                return town
        known = ", ".join(t.id for t in self.towns)
        raise KeyError(f"unknown town {town_id!r} (known: {known})")

    @property
    def lab_alerts(self) -> Alerts:
        """`alerts` with the lab's shorter waits (the keys `lab.alerts` sets)."""
        given = self.lab.alerts.model_dump(include=self.lab.alerts.model_fields_set)
        return self.alerts.model_copy(update=given)

    @cached_property
    def drills(self) -> Drills:
        """The schedules with "all" resolved and their settings merged."""
        return self.drills_spec.resolve(self.towns)

    @property
    def lab_drills(self) -> DrillSettings:
        """The drills' defaults with the lab's shorter runs (the keys `lab.drills` sets)."""
        return self.lab.drills.over(self.drills.defaults)

    def drill_settings(
        self, town: str, *, lab: bool, schedule: DrillSchedule | None = None
    ) -> DrillSettings:
        """What a drill of `town` runs with: the defaults for a manual drill,
        or `schedule`'s settings; in the lab, `lab.drills` over either."""
        self.town(town)  # KeyError naming the known towns
        base = self.drills.defaults if schedule is None else schedule.settings
        return self.lab.drills.over(base) if lab else base

    @property
    def routed_prefixes(self) -> tuple[IPv4Network, ...]:
        """What a town routes over its active path: the data center's
        service networks and the operations center behind it."""
        return (*self.datacenter.prefixes, self.opscenter.prefix)
