"""The MQTT contract between the town agents and the operations center.

Pure: dataclasses, JSON encoding and validation, no I/O.  Topics live under
``netwatch/v1/<town>/``:

========  =======  ===========  =============================================
leaf      kind     QoS          meaning
========  =======  ===========  =============================================
state     state    1, retained  the current truth: active path, each path
events    event    1            failover, failback, degraded, drill results
metrics   metrics  0            periodic summaries; losing one is harmless
online    online   1, retained  true on connect; the Last Will sets it false
drill     drill    1, retained  the town's last (or running) failover drill
========  =======  ===========  =============================================

Every payload is a JSON object carrying ``schema`` (1), ``town``, ``ts`` (UTC,
ISO-8601 with milliseconds and ``Z``) and ``kind``.  Parsing is strict: a
wrong type, a value out of range or an unknown key is a `MessageError` that
names the offending key path.  Any change to a payload bumps ``schema`` and
the topic prefix ``v1`` together.

An event's ``ts`` is when it happened, not when it was delivered: events are
spooled while the broker is unreachable and sent later unchanged.  The Last
Will's ``ts`` is when the will was registered (connect time), since the broker
sends it verbatim.  Events carry a uuid ``id``: delivery is at least once, so
consumers de-duplicate on it.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Self, TypeAlias, TypeVar, cast

from netwatch.health.state import PathState as PathState  # part of the contract
from netwatch.topology.ids import id_problem, is_id

SCHEMA = 1
ROOT = "netwatch/v1"

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"


class MessageError(ValueError):
    """A payload or topic that does not follow the contract.

    ``where`` is the key path inside the payload (``paths.lgwan.loss_ratio``),
    empty when the problem is the payload as a whole; ``topic`` is set by
    `parse`.  ``str()`` gives ``topic: where: problem``.
    """

    def __init__(self, where: str, problem: str, *, topic: str | None = None) -> None:
        located = f"{where}: {problem}" if where else problem
        super().__init__(f"{topic}: {located}" if topic else located)
        self.where = where
        self.problem = problem
        self.topic = topic

    def within(self, prefix: str) -> MessageError:
        """The same problem, located inside the key ``prefix``."""
        where = f"{prefix}.{self.where}" if self.where else prefix
        return MessageError(where, self.problem, topic=self.topic)

    def on(self, topic: str) -> MessageError:
        """The same problem, found in a message received on ``topic``."""
        return MessageError(self.where, self.problem, topic=topic)


class Kind(StrEnum):
    """The ``kind`` of a payload; each has its own topic leaf (`Kind.leaf`)."""

    STATE = "state"
    EVENT = "event"
    METRICS = "metrics"
    ONLINE = "online"
    DRILL = "drill"

    @property
    def leaf(self) -> str:
        return _LEAVES[self]


_LEAVES = {
    Kind.STATE: "state",
    Kind.EVENT: "events",
    Kind.METRICS: "metrics",
    Kind.ONLINE: "online",
    Kind.DRILL: "drill",
}
_KIND_OF_LEAF = {leaf: kind for kind, leaf in _LEAVES.items()}


class EventType(StrEnum):
    FAILOVER = "failover"
    FAILBACK = "failback"
    PATH_DOWN = "path_down"
    PATH_UP = "path_up"
    DEGRADED = "degraded"
    RECOVERED = "recovered"
    ALL_DOWN = "all_down"
    DRILL_RESULT = "drill_result"
    AGENT_START = "agent_start"
    ROUTES_APPLIED = "routes_applied"  # the kernel (or router) carries a failover/failback
    ROUTE_ERROR = "route_error"  # a route change failed; retried with back-off
    ROUTE_REINSTALLED = "route_reinstalled"  # a missing or wrong route was put back
    ROUTE_CONFLICT = "route_conflict"  # another protocol's route sits on a prefix: left alone
    ROUTE_CONFLICT_CLEARED = "route_conflict_cleared"
    HOLD = "hold"  # an operator holds the town on `path` (details: until, reason, by)
    HOLD_RELEASED = "hold_released"  # the hold ended (reason: released, expired, path failed)
    DRILL_STARTED = "drill_started"  # a drill began on the town (details: drill_id, fault)


class DrillStatus(StrEnum):
    """Where a drill is: `running` while it runs (the lock others see), then
    its outcome.  `refused`: the precheck said no, nothing was touched."""

    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ABORTED = "aborted"
    REFUSED = "refused"


# Which optional fields an event type needs (the rest may be null).
_NEEDS_TO_PATH = {EventType.FAILOVER, EventType.FAILBACK, EventType.ROUTES_APPLIED}
_NEEDS_PATH = {
    EventType.PATH_DOWN,
    EventType.PATH_UP,
    EventType.DEGRADED,
    EventType.RECOVERED,
    EventType.HOLD,
    EventType.HOLD_RELEASED,
}

# Same rule as topology.yaml ids (towns and paths): they become topic levels.
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# -- topics -------------------------------------------------------------------


def topic(town: str, kind: Kind) -> str:
    """``netwatch/v1/<town>/<leaf>`` for one town and kind."""
    _check_id(town, "town")
    return f"{ROOT}/{town}/{kind.leaf}"


def topic_filter(town: str = "+") -> str:
    """A subscription filter for every topic of one town (default: all towns)."""
    if town != "+":
        _check_id(town, "town")
    return f"{ROOT}/{town}/+"


def split_topic(name: str) -> tuple[str, Kind]:
    """``(town, kind)`` of a contract topic; `MessageError` for any other topic."""
    prefix, _, rest = name.rpartition("/")
    root, _, town = prefix.rpartition("/")
    if root != ROOT or rest not in _KIND_OF_LEAF or not is_id(town):
        leaves = "|".join(_KIND_OF_LEAF)
        raise MessageError("", f"expected {ROOT}/<town>/{leaves}", topic=name)
    return town, _KIND_OF_LEAF[rest]


# -- timestamps ---------------------------------------------------------------


def utc_now() -> datetime:
    return _to_ms(datetime.now(UTC), "ts")


def format_ts(when: datetime) -> str:
    """``2026-11-26T05:30:00.123Z``; `when` must be timezone-aware."""
    when = _to_ms(when, "ts")
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> datetime:
    if not _TS.fullmatch(text):
        raise MessageError("", f"expected a UTC time like 2026-11-26T05:30:00.123Z, got {text!r}")
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise MessageError("", f"{text!r} is not a valid time ({exc})") from None


def _to_ms(when: datetime, where: str) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise MessageError(where, f"expected a timezone-aware datetime, got {when!r}")
    if when.tzinfo is UTC and when.microsecond % 1000 == 0:
        return when  # already the wire's form (every parsed time is)
    when = when.astimezone(UTC)
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


# -- payload parts ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PathSummary:
    """A path's health as measured over the agent's sliding window.

    Ratios are 0..1 and durations are seconds; None means "no sample yet".
    """

    state: PathState
    loss_ratio: float | None = None
    rtt_p50_s: float | None = None
    rtt_p95_s: float | None = None
    jitter_s: float | None = None

    def __post_init__(self) -> None:
        _check_enum(self.state, PathState, "state")
        _check_float(self.loss_ratio, "loss_ratio", high=1.0)
        for name in ("rtt_p50_s", "rtt_p95_s", "jitter_s"):
            _check_float(getattr(self, name), name)

    def to_dict(self) -> dict[str, JSON]:
        return {
            "state": self.state.wire,
            "loss_ratio": self.loss_ratio,
            "rtt_p50_s": self.rtt_p50_s,
            "rtt_p95_s": self.rtt_p95_s,
            "jitter_s": self.jitter_s,
        }

    @classmethod
    def from_dict(cls, data: object) -> Self:
        with _Reader(data) as r:
            return cls(**r.summary_fields())


@dataclass(frozen=True, kw_only=True)
class PathStatus(PathSummary):
    """A path's health in the state message: also whether flap damping holds it
    and since when it has been in its current state."""

    damped: bool
    since: datetime

    def __post_init__(self) -> None:
        PathSummary.__post_init__(self)
        _check_bool(self.damped, "damped")
        object.__setattr__(self, "since", _to_ms(self.since, "since"))

    def to_dict(self) -> dict[str, JSON]:
        return {**PathSummary.to_dict(self), "damped": self.damped, "since": format_ts(self.since)}

    @classmethod
    def from_dict(cls, data: object) -> Self:
        with _Reader(data) as r:
            return cls(**r.summary_fields(), damped=r.flag("damped"), since=r.ts("since"))


@dataclass(frozen=True, kw_only=True)
class HoldStatus:
    """A maintenance hold in the state message: the operator keeps the town
    on `path` until `until` (or until that path fails), for `reason`."""

    path: str
    reason: str
    by: str  # who placed it (user@host, or the drill's id)
    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        _check_id(self.path, "path")
        for name in ("reason", "by"):
            if not isinstance(getattr(self, name), str):
                raise MessageError(name, f"expected a string, got {getattr(self, name)!r}")
        object.__setattr__(self, "since", _to_ms(self.since, "since"))
        object.__setattr__(self, "until", _to_ms(self.until, "until"))

    def to_dict(self) -> dict[str, JSON]:
        return {
            "path": self.path,
            "reason": self.reason,
            "by": self.by,
            "since": format_ts(self.since),
            "until": format_ts(self.until),
        }

    @classmethod
    def from_dict(cls, data: object) -> Self:
        with _Reader(data) as r:
            return cls(
                path=r.text("path"),
                reason=r.text("reason"),
                by=r.text("by"),
                since=r.ts("since"),
                until=r.ts("until"),
            )


# -- messages -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Message:
    KIND: ClassVar[Kind]

    town: str
    ts: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        _check_id(self.town, "town")
        # Millisecond precision is the wire format; truncating here makes a
        # message equal to itself after a round trip.
        object.__setattr__(self, "ts", _to_ms(self.ts, "ts"))

    @property
    def topic(self) -> str:
        return topic(self.town, self.KIND)

    def to_dict(self) -> dict[str, JSON]:
        head: dict[str, JSON] = {
            "schema": SCHEMA,
            "town": self.town,
            "ts": format_ts(self.ts),
            "kind": self.KIND.value,
        }
        return head | self._body()

    def to_json(self) -> bytes:
        return json.dumps(
            self.to_dict(), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Self:
        return cls.from_dict(load_json(payload))

    @classmethod
    def from_dict(cls, data: object) -> Self:
        with _Reader(data) as r:
            schema = r.get("schema")
            if type(schema) is not int or schema != SCHEMA:
                raise MessageError("schema", f"expected {SCHEMA}, got {schema!r}")
            kind = r.text("kind")
            if kind != cls.KIND.value:
                raise MessageError("kind", f"expected {cls.KIND.value!r}, got {kind!r}")
            return cls(town=r.text("town"), ts=r.ts("ts"), **cls._read_body(r))

    def _body(self) -> dict[str, JSON]:
        raise NotImplementedError

    @classmethod
    def _read_body(cls, r: _Reader) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class StateMessage(_Message):
    """The current truth of one town (retained)."""

    KIND: ClassVar[Kind] = Kind.STATE

    active_path: str | None
    all_down: bool
    paths: Mapping[str, PathStatus]
    route_backend: str
    hold: HoldStatus | None = None  # a maintenance hold in force

    def __post_init__(self) -> None:
        _Message.__post_init__(self)
        _check_bool(self.all_down, "all_down")
        _check_paths(self.paths, PathStatus)
        if self.hold is not None:
            if not isinstance(self.hold, HoldStatus):
                raise MessageError("hold", f"expected a hold, got {self.hold!r}")
            if self.hold.path not in self.paths:
                raise MessageError("hold.path", f"{self.hold.path!r} is not one of the paths")
        if self.active_path is not None and self.active_path not in self.paths:
            known = ", ".join(self.paths) or "none"
            raise MessageError(
                "active_path", f"{self.active_path!r} is not one of the paths ({known})"
            )
        if not isinstance(self.route_backend, str) or not self.route_backend:
            raise MessageError("route_backend", f"expected a name, got {self.route_backend!r}")

    def _body(self) -> dict[str, JSON]:
        return {
            "active_path": self.active_path,
            "all_down": self.all_down,
            "paths": {name: status.to_dict() for name, status in self.paths.items()},
            "route_backend": self.route_backend,
            "hold": None if self.hold is None else self.hold.to_dict(),
        }

    @classmethod
    def _read_body(cls, r: _Reader) -> dict[str, Any]:
        return {
            "active_path": r.opt_text("active_path"),
            "all_down": r.flag("all_down"),
            "paths": r.mapping("paths", PathStatus.from_dict),
            "route_backend": r.text("route_backend"),
            "hold": r.part("hold", HoldStatus.from_dict),
        }


@dataclass(frozen=True, kw_only=True)
class EventMessage(_Message):
    """Something that happened.  A failover or failback is published when it
    is decided (``duration_s``: first suspicion of the fault to the decision),
    before the route change runs, so it is on disk whatever the route backend
    does; ``routes_applied`` follows once the routes carry it (``duration_s``:
    first suspicion to routes applied), or ``route_error`` if they do not."""

    KIND: ClassVar[Kind] = Kind.EVENT

    event: EventType
    reason: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    path: str | None = None
    from_path: str | None = None
    to_path: str | None = None
    duration_s: float | None = None
    details: Mapping[str, JSON] | None = None

    def __post_init__(self) -> None:
        _Message.__post_init__(self)
        _check_enum(self.event, EventType, "event")
        try:
            uuid.UUID(self.id)
        except (TypeError, ValueError, AttributeError):
            raise MessageError("id", f"expected a UUID, got {self.id!r}") from None
        if not isinstance(self.reason, str):
            raise MessageError("reason", f"expected a string, got {self.reason!r}")
        for name in ("path", "from_path", "to_path"):
            value = getattr(self, name)
            if value is not None:
                _check_id(value, name)
        if self.event in _NEEDS_TO_PATH and self.to_path is None:
            raise MessageError("to_path", f"a {self.event.value} event needs a to_path")
        if self.event in _NEEDS_PATH and self.path is None:
            raise MessageError("path", f"a {self.event.value} event needs a path")
        _check_float(self.duration_s, "duration_s")
        if self.details is not None:
            _check_json_object(self.details, "details")

    def _body(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "event": self.event.value,
            "path": self.path,
            "from_path": self.from_path,
            "to_path": self.to_path,
            "reason": self.reason,
            "duration_s": self.duration_s,
            "details": None if self.details is None else dict(self.details),
        }

    @classmethod
    def _read_body(cls, r: _Reader) -> dict[str, Any]:
        return {
            "id": r.text("id"),
            "event": r.choice("event", EventType),
            "path": r.opt_text("path", None),
            "from_path": r.opt_text("from_path", None),
            "to_path": r.opt_text("to_path", None),
            "reason": r.text("reason"),
            "duration_s": r.opt_number("duration_s", None),
            "details": r.json_object("details", None),
        }


@dataclass(frozen=True, kw_only=True)
class MetricsMessage(_Message):
    """A periodic summary: each path's window, and probe counters (free-form)."""

    KIND: ClassVar[Kind] = Kind.METRICS

    paths: Mapping[str, PathSummary]
    probes: Mapping[str, JSON] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _Message.__post_init__(self)
        _check_paths(self.paths, PathSummary)
        _check_json_object(self.probes, "probes")

    def _body(self) -> dict[str, JSON]:
        # A PathStatus passed here is summarised, not sent whole.
        paths: dict[str, JSON] = {n: PathSummary.to_dict(s) for n, s in self.paths.items()}
        return {"paths": paths, "probes": dict(self.probes)}

    @classmethod
    def _read_body(cls, r: _Reader) -> dict[str, Any]:
        paths = r.mapping("paths", PathSummary.from_dict)
        return {"paths": paths, "probes": r.json_object("probes")}

    def outcomes(self) -> dict[tuple[str, str, str], float]:
        """The agent's probe counters since it started, by (path, kind,
        outcome), from `probes["outcomes"]` (see `outcomes_json`). The
        field is free-form: what is not that shape, with ids for names
        and counts for values, is left out rather than refused."""
        found: dict[tuple[str, str, str], float] = {}
        by_path = self.probes.get("outcomes")
        if not isinstance(by_path, dict):
            return found
        for path, by_kind in by_path.items():
            if path not in self.paths or not isinstance(by_kind, dict):
                continue
            for kind, by_outcome in list(by_kind.items())[:MAX_PROBE_KINDS]:
                if not is_id(kind) or not isinstance(by_outcome, dict):
                    continue
                for outcome, n in list(by_outcome.items())[:MAX_PROBE_OUTCOMES]:
                    if is_id(outcome) and _is_count(n):
                        found[(path, kind, outcome)] = float(cast(float, n))
        return found


# Bounds on what one town's summary can add to the fleet's series.
MAX_PROBE_KINDS = 8
MAX_PROBE_OUTCOMES = 8


def outcomes_json(counts: Mapping[tuple[str, str, str], int]) -> dict[str, JSON]:
    """`probes["outcomes"]` of a metrics summary: {path: {kind: {outcome: n}}}."""
    tree: dict[str, dict[str, dict[str, int]]] = {}
    for (path, kind, outcome), n in sorted(counts.items()):
        tree.setdefault(path, {}).setdefault(kind, {})[outcome] = n
    return cast(dict[str, JSON], tree)


def _is_count(n: object) -> bool:
    return isinstance(n, int | float) and not isinstance(n, bool) and 0 <= n < 2**53


@dataclass(frozen=True, kw_only=True)
class OnlineMessage(_Message):
    """Whether the town's agent is connected (retained; the Last Will says false)."""

    KIND: ClassVar[Kind] = Kind.ONLINE

    online: bool

    def __post_init__(self) -> None:
        _Message.__post_init__(self)
        _check_bool(self.online, "online")

    def _body(self) -> dict[str, JSON]:
        return {"online": self.online}

    @classmethod
    def _read_body(cls, r: _Reader) -> dict[str, Any]:
        return {"online": r.flag("online")}


@dataclass(frozen=True, kw_only=True)
class DrillMessage(_Message):
    """The town's last failover drill (retained), or the one running now:
    while `status` is running it is the lock the operations center shows.
    Durations are seconds as the drill's data-plane observer measured them;
    None when the drill did not get that far."""

    KIND: ClassVar[Kind] = Kind.DRILL

    drill_id: str
    status: DrillStatus
    started: datetime
    ended: datetime | None = None
    fault: str = "lab"  # lab | command | manual
    reason: str = ""  # why it failed or aborted, or "" for a pass
    outage_s: float | None = None
    failback_outage_s: float | None = None
    detection_s: float | None = None  # the agent's own account: fault -> failover decided
    load_passed: bool | None = None  # the degraded-mode load test's verdict
    report: str | None = None  # where the report is (a path on the drill's host)

    def __post_init__(self) -> None:
        _Message.__post_init__(self)
        try:
            uuid.UUID(self.drill_id)
        except (TypeError, ValueError, AttributeError):
            raise MessageError("drill_id", f"expected a UUID, got {self.drill_id!r}") from None
        _check_enum(self.status, DrillStatus, "status")
        object.__setattr__(self, "started", _to_ms(self.started, "started"))
        if self.ended is not None:
            object.__setattr__(self, "ended", _to_ms(self.ended, "ended"))
        for name in ("fault", "reason"):
            if not isinstance(getattr(self, name), str):
                raise MessageError(name, f"expected a string, got {getattr(self, name)!r}")
        for name in ("outage_s", "failback_outage_s", "detection_s"):
            _check_float(getattr(self, name), name)
        if self.load_passed is not None:
            _check_bool(self.load_passed, "load_passed")
        if self.report is not None and not isinstance(self.report, str):
            raise MessageError("report", f"expected a string or null, got {self.report!r}")

    def _body(self) -> dict[str, JSON]:
        return {
            "drill_id": self.drill_id,
            "status": self.status.value,
            "started": format_ts(self.started),
            "ended": None if self.ended is None else format_ts(self.ended),
            "fault": self.fault,
            "reason": self.reason,
            "outage_s": self.outage_s,
            "failback_outage_s": self.failback_outage_s,
            "detection_s": self.detection_s,
            "load_passed": self.load_passed,
            "report": self.report,
        }

    @classmethod
    def _read_body(cls, r: _Reader) -> dict[str, Any]:
        load_passed = r.get("load_passed")
        if load_passed is not None:
            _check_bool(load_passed, "load_passed")
        return {
            "drill_id": r.text("drill_id"),
            "status": r.choice("status", DrillStatus),
            "started": r.ts("started"),
            "ended": r.opt_ts("ended"),
            "fault": r.text("fault"),
            "reason": r.text("reason"),
            "outage_s": r.opt_number("outage_s"),
            "failback_outage_s": r.opt_number("failback_outage_s"),
            "detection_s": r.opt_number("detection_s"),
            "load_passed": load_passed,
            "report": r.opt_text("report"),
        }


Message: TypeAlias = StateMessage | EventMessage | MetricsMessage | OnlineMessage | DrillMessage

_CLASSES: dict[Kind, type[Message]] = {
    Kind.STATE: StateMessage,
    Kind.EVENT: EventMessage,
    Kind.METRICS: MetricsMessage,
    Kind.ONLINE: OnlineMessage,
    Kind.DRILL: DrillMessage,
}


def parse(topic_name: str, payload: bytes | str) -> Message:
    """Decode a message received on `topic_name`; the payload's town and kind
    must match the topic.  Every problem is a `MessageError` naming the topic."""
    try:
        data = load_json(payload)
    except MessageError as exc:
        raise exc.on(topic_name) from None
    return decode(topic_name, data)


def load_json(payload: bytes | str) -> Any:
    """A payload's JSON: UTF-8 only (json.loads would also guess UTF-16 and
    -32 from bytes), no BOM; too deep a nesting or an integer of more digits
    than Python converts is a `MessageError`, as bad JSON is."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        reason = "too deeply nested" if isinstance(exc, RecursionError) else str(exc)
        raise MessageError("", f"payload is not JSON ({reason})") from None


def decode(topic_name: str, data: object) -> Message:
    """`parse` for a payload already decoded from JSON."""
    town, kind = split_topic(topic_name)
    try:
        message = _CLASSES[kind].from_dict(data)
    except MessageError as exc:
        raise exc.on(topic_name) from None
    if message.town != town:
        raise MessageError("town", f"{message.town!r} does not match the topic", topic=topic_name)
    return message


# -- validation helpers -------------------------------------------------------

_E = TypeVar("_E", bound=StrEnum)
_T = TypeVar("_T")
_MISSING: Any = object()


class _Reader:
    """Typed access to one JSON object; unknown keys are refused on exit."""

    def __init__(self, data: object) -> None:
        if not isinstance(data, dict):
            raise MessageError("", f"expected a JSON object, got {type(data).__name__}")
        self.data: dict[str, object] = data
        self.used: set[str] = set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and not self.data.keys() <= self.used:
            unknown = sorted(self.data.keys() - self.used)
            expected = ", ".join(sorted(self.used))
            raise MessageError(unknown[0], f"unknown key (expected one of: {expected})")

    def get(self, key: str, default: object = _MISSING) -> object:
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise MessageError(key, "missing")
        return default

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            raise MessageError(key, f"expected a string, got {value!r}")
        _check_unicode(value, key)
        return value

    def opt_text(self, key: str, default: object = _MISSING) -> str | None:
        value = self.get(key, default)
        if value is not None and not isinstance(value, str):
            raise MessageError(key, f"expected a string or null, got {value!r}")
        if value is not None:
            _check_unicode(value, key)
        return value

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise MessageError(key, f"expected true or false, got {value!r}")
        return value

    def opt_number(self, key: str, default: object = _MISSING) -> float | None:
        value = self.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MessageError(key, f"expected a number or null, got {value!r}")
        return float(value)

    def ts(self, key: str) -> datetime:
        value = self.text(key)
        try:
            return parse_ts(value)
        except MessageError as exc:
            raise MessageError(key, exc.problem) from None

    def opt_ts(self, key: str) -> datetime | None:
        return None if self.get(key, None) is None else self.ts(key)

    def choice(self, key: str, enum: type[_E]) -> _E:
        value = self.text(key)
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(m.value for m in enum)
            raise MessageError(key, f"expected one of {allowed}, got {value!r}") from None

    def path_state(self, key: str) -> PathState:
        value = self.text(key)
        try:
            return PathState.from_wire(value)
        except ValueError:
            allowed = ", ".join(PathState.wire_names())
            raise MessageError(key, f"expected one of {allowed}, got {value!r}") from None

    def json_object(self, key: str, default: object = _MISSING) -> dict[str, JSON] | None:
        value = self.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, dict):
            raise MessageError(key, f"expected a JSON object, got {value!r}")
        return value

    def mapping(self, key: str, parse_item: Callable[[object], _T]) -> dict[str, _T]:
        value = self.get(key)
        if not isinstance(value, dict):
            raise MessageError(key, f"expected an object, got {value!r}")
        items = {}
        for name, item in value.items():
            try:
                items[name] = parse_item(item)
            except MessageError as exc:
                raise exc.within(f"{key}.{name}") from None
        return items

    def part(self, key: str, parse_item: Callable[[object], _T]) -> _T | None:
        """An optional nested object: absent or null is None."""
        value = self.get(key, None)
        if value is None:
            return None
        try:
            return parse_item(value)
        except MessageError as exc:
            raise exc.within(key) from None

    def summary_fields(self) -> dict[str, Any]:
        return {
            "state": self.path_state("state"),
            "loss_ratio": self.opt_number("loss_ratio"),
            "rtt_p50_s": self.opt_number("rtt_p50_s"),
            "rtt_p95_s": self.opt_number("rtt_p95_s"),
            "jitter_s": self.opt_number("jitter_s"),
        }


def _check_id(value: object, where: str) -> None:
    problem = id_problem(value)
    if problem:
        raise MessageError(where, problem)


def _check_bool(value: object, where: str) -> None:
    if not isinstance(value, bool):
        raise MessageError(where, f"expected true or false, got {value!r}")


def _check_enum(value: object, enum: type[StrEnum], where: str) -> None:
    if not isinstance(value, enum):
        allowed = ", ".join(PathState.wire_names() if enum is PathState else enum)
        raise MessageError(where, f"expected a {enum.__name__} ({allowed}), got {value!r}")


def _check_float(value: object, where: str, *, high: float = math.inf) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageError(where, f"expected a number, got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= high):
        bound = "a finite number >= 0" if high == math.inf else f"a number in [0, {high:g}]"
        raise MessageError(where, f"expected {bound}, got {value!r}")


def _check_paths(paths: object, kind: type[PathSummary]) -> None:
    if not isinstance(paths, Mapping):
        raise MessageError("paths", f"expected a mapping of path name to status, got {paths!r}")
    for name, status in paths.items():
        _check_id(name, "paths")
        if not isinstance(status, kind):
            raise MessageError(f"paths.{name}", f"expected a {kind.__name__}, got {status!r}")


def _check_json_object(value: object, where: str) -> None:
    if not isinstance(value, Mapping):
        raise MessageError(where, f"expected a JSON object, got {value!r}")
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError: a lone surrogate
        raise MessageError(where, f"not representable as JSON ({exc})") from None


def _check_unicode(value: str, where: str) -> None:
    """JSON's "\\ud800" reads as a string no UTF-8 can carry: refused, or every
    later encoding of the message (the operations center's API) would fail."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError(where, f"not valid Unicode text: {value!r}") from None
