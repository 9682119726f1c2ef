"""The fleet as the operations center knows it: pure state, fed with the
towns' checked messages (`ingest.check`) and read with a clock.

What a town *is* at a moment is `TownView.status(now)`, in this order:

    unknown    nothing heard yet, or nothing for longer than `stale_after`:
               shown as unknown, never as the last good state
    offline    its agent's Last Will (or a clean disconnect) said so, lately
               (after `stale_after` of silence that too turns unknown)
    all_down   the agent says every path is down
    backup     traffic is on a path other than the primary
    degraded   on the primary, which is degraded
    ok         on the primary, which is up

Timestamps are the agents' (UTC, from the payloads) except `last_heard`,
which is when this service received the town's last message (epoch
seconds on this host's clock): staleness does not trust a town's clock,
except to age a retained message the broker kept for it.  Drills are
published by `netwatch drill`, not by the town's agent: their messages
say nothing of the agent's health and do not count as hearing from it.

Beside the status, a town shows its maintenance hold (from its state) and
its drills (`netwatch.opscenter.drills`): the last drill message (the
retained topic: the running drill, the lock, or the last outcome), the
last finished drill, and when the last drill passed.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from netwatch.health.state import PathState
from netwatch.messages import (
    DrillMessage,
    DrillStatus,
    EventMessage,
    EventType,
    HoldStatus,
    Message,
    MetricsMessage,
    OnlineMessage,
    PathSummary,
    StateMessage,
)
from netwatch.opscenter import drills
from netwatch.topology import Topology, Town

DEFAULT_STALE_AFTER_S = 20.0  # agents republish their state at least every 5 s
SEEN_EVENT_IDS = 4096  # per town: redeliveries arrive soon after the original


class Status(enum.StrEnum):
    UNKNOWN = "unknown"
    OFFLINE = "offline"
    ALL_DOWN = "all_down"
    BACKUP = "backup"
    DEGRADED = "degraded"
    OK = "ok"

    @property
    def alarming(self) -> bool:
        """Worth a banner on the status page."""
        return self in (Status.OFFLINE, Status.UNKNOWN, Status.ALL_DOWN, Status.BACKUP)


@dataclass(frozen=True)
class PathView:
    state: PathState
    loss_ratio: float | None = None
    rtt_p50_s: float | None = None
    rtt_p95_s: float | None = None
    jitter_s: float | None = None
    damped: bool = False
    since: datetime | None = None

    @classmethod
    def of(
        cls, summary: PathSummary, *, damped: bool = False, since: datetime | None = None
    ) -> PathView:
        return cls(
            summary.state,
            summary.loss_ratio,
            summary.rtt_p50_s,
            summary.rtt_p95_s,
            summary.jitter_s,
            damped,
            since,
        )


# Events the fleet counts per town: the agent met the kernel's tables
# other than it left them.
ROUTE_EVENTS = frozenset(
    {EventType.ROUTE_REINSTALLED, EventType.ROUTE_CONFLICT, EventType.ROUTE_ERROR}
)
COUNTED_FROM_ZERO = (EventType.ROUTE_REINSTALLED, EventType.ROUTE_ERROR)  # the alerts' counters
# Sent by `netwatch drill` or `netwatch acceptance`, not by the agent.
NOT_FROM_THE_AGENT = frozenset({EventType.DRILL_STARTED, EventType.DRILL_RESULT})


@dataclass(frozen=True)
class Failover:
    """The last move of a town's traffic (a failover, failback or switch)."""

    at: datetime
    from_path: str | None
    to_path: str
    kind: str  # failover | failback | switch
    reason: str
    outage_s: float | None = None  # fault suspected -> routes applied, once applied


@dataclass
class TownView:
    town: Town
    last_heard: float | None = None
    online: bool | None = None  # None: never said
    state_ts: datetime | None = None
    active_path: str | None = None
    all_down: bool = False
    route_backend: str | None = None
    paths: dict[str, PathView] = field(default_factory=dict)
    last_failover: Failover | None = None
    backup_since: datetime | None = None
    failovers: dict[tuple[str, str, str], int] = field(default_factory=dict)  # from, to, kind
    route_events: dict[str, int] = field(default_factory=dict)  # by event type (ROUTE_EVENTS)
    route_conflict: bool | None = None  # None: never reported
    probe_summary: MetricsMessage | None = None  # the last, read at scrape time
    hold: HoldStatus | None = None  # from the last state
    drill: DrillMessage | None = None  # the drill topic's newest: running, or the last outcome
    finished_drill: DrillMessage | None = None  # the last drill that ended, kept while one runs
    drill_passed_at: datetime | None = None  # when the last passing drill ended
    acceptance: EventMessage | None = None  # the last acceptance campaign's drill_result
    version: int = 0  # bumped on every change, for live updates
    _probes: tuple[MetricsMessage | None, dict[tuple[str, str, str], float]] = field(
        default_factory=lambda: (None, {})
    )
    _seen: deque[str] = field(default_factory=lambda: deque(maxlen=SEEN_EVENT_IDS))
    _seen_set: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        # The counters a town can expect start at 0, so that its first
        # failover or route event is a change Prometheus sees (`increase`,
        # `changes`), not a new series.
        primary = self.town.primary.name
        for path in self.town.paths:
            if path.name != primary:
                self.failovers.setdefault((primary, path.name, "failover"), 0)
                self.failovers.setdefault((path.name, primary, "failback"), 0)
        for event in COUNTED_FROM_ZERO:
            self.route_events.setdefault(event.value, 0)

    @property
    def id(self) -> str:
        return self.town.id

    @property
    def primary(self) -> str:
        return self.town.primary.name

    def age(self, now: float) -> float | None:
        return None if self.last_heard is None else max(0.0, now - self.last_heard)

    def stale(self, now: float, stale_after: float) -> bool:
        age = self.age(now)
        return age is None or age > stale_after

    def status(self, now: float, stale_after: float) -> Status:
        if self.stale(now, stale_after):
            return Status.UNKNOWN
        if self.online is False:
            return Status.OFFLINE
        if self.state_ts is None:
            return Status.UNKNOWN
        if self.all_down:
            return Status.ALL_DOWN
        if self.active_path is not None and self.active_path != self.primary:
            return Status.BACKUP
        active = self.paths.get(self.active_path or "")
        if active is not None and active.state is PathState.DEGRADED:
            return Status.DEGRADED
        return Status.OK

    def drill_phase(self, now_wall: datetime) -> drills.DrillPhase | None:
        return None if self.drill is None else drills.phase(self.drill, now_wall)

    def on_backup_s(self, now_wall: datetime) -> float | None:
        if self.backup_since is None:
            return None
        return max(0.0, (now_wall - self.backup_since).total_seconds())

    def probe_results(self) -> dict[tuple[str, str, str], float]:
        """The agent's probe counters by (path, kind, outcome), from its last
        metrics summary; read when scraped (twice a minute) rather than at
        each summary (every few seconds a town)."""
        source, results = self._probes
        if source is not self.probe_summary:
            summary = self.probe_summary
            results = summary.outcomes() if summary is not None else {}
            self._probes = (summary, results)
        return results

    def seen(self, event_id: str) -> bool:
        """True if this event was applied already; remembers it otherwise."""
        if event_id in self._seen_set:
            return True
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(event_id)
        self._seen_set.add(event_id)
        return False


class Fleet:
    """Every town of the topology, in cutover order."""

    def __init__(self, topo: Topology, *, stale_after: float = DEFAULT_STALE_AFTER_S) -> None:
        self.stale_after = stale_after
        self.next_drills = drills.NextDrills(topo)
        ordered = sorted(topo.towns, key=lambda t: (t.cutover_week, t.id))
        self.towns: dict[str, TownView] = {t.id: TownView(t) for t in ordered}
        self.version = 0

    def __iter__(self) -> Iterator[TownView]:
        return iter(self.towns.values())

    def apply(self, message: Message, received: float, *, retained: bool = False) -> bool:
        """Take one checked message of a town of the fleet; False when it
        changed nothing (a redelivered event, an older state).  A retained
        message is as fresh as its own timestamp, not its delivery: after a
        restart, a dead agent's last state must not look alive."""
        view = self.towns[message.town]
        if _from_the_agent(message):
            heard = min(received, message.ts.timestamp()) if retained else received
            view.last_heard = max(view.last_heard or heard, heard)
        if isinstance(message, StateMessage):
            changed = self._state(view, message)
        elif isinstance(message, EventMessage):
            changed = self._event(view, message)
        elif isinstance(message, OnlineMessage):
            changed = view.online != message.online
            view.online = message.online
        elif isinstance(message, DrillMessage):
            changed = self._drill(view, message)
        else:
            changed = self._metrics(view, message)
        if changed:
            self.version += 1
            view.version = self.version
        return changed

    def replay(self, history: Iterable[Message]) -> None:
        """Rebuild from stored messages (oldest first) after a restart; the
        towns count as not heard from until they speak again."""
        for message in history:
            if message.town in self.towns:
                self.apply(message, received=0.0)
        for view in self:
            view.last_heard = None

    # -- by kind -------------------------------------------------------------

    def _state(self, view: TownView, message: StateMessage) -> bool:
        if view.state_ts is not None and message.ts < view.state_ts:
            return False  # an old retained state behind a newer one
        view.state_ts = message.ts
        view.active_path = message.active_path
        view.all_down = message.all_down
        view.route_backend = message.route_backend
        view.hold = message.hold
        view.paths = {
            name: PathView.of(status, damped=status.damped, since=status.since)
            for name, status in message.paths.items()
        }
        on_backup = message.active_path is not None and message.active_path != view.primary
        if not on_backup:
            view.backup_since = None
        elif view.backup_since is None:
            active = message.paths[message.active_path] if message.active_path else None
            last = view.last_failover
            # The move onto this path, if it is known; not an older episode's.
            moved = last.at if last is not None and last.to_path == message.active_path else None
            view.backup_since = moved or (active.since if active else message.ts)
        return True

    def _event(self, view: TownView, message: EventMessage) -> bool:
        if view.seen(message.id):
            return False
        details = message.details or {}
        kind = str(details.get("kind", message.event.value))
        if message.event in (EventType.FAILOVER, EventType.FAILBACK) and message.to_path:
            key = (message.from_path or "", message.to_path, kind)
            view.failovers[key] = view.failovers.get(key, 0) + 1
            view.last_failover = Failover(
                message.ts, message.from_path, message.to_path, kind, message.reason
            )
            if message.to_path != view.primary and view.backup_since is None:
                view.backup_since = message.ts
        elif message.event is EventType.ROUTES_APPLIED and message.to_path:
            last = view.last_failover
            if last is not None and last.to_path == message.to_path and last.outage_s is None:
                view.last_failover = Failover(
                    last.at,
                    last.from_path,
                    last.to_path,
                    last.kind,
                    last.reason,
                    message.duration_s,
                )
        elif message.event in ROUTE_EVENTS:
            view.route_events[message.event.value] = (
                view.route_events.get(message.event.value, 0) + 1
            )
            if message.event is EventType.ROUTE_CONFLICT:
                view.route_conflict = True
        elif message.event is EventType.ROUTE_CONFLICT_CLEARED:
            view.route_conflict = False
        elif message.event is EventType.DRILL_RESULT and details.get("kind") == "acceptance":
            view.acceptance = message  # a drill's own result is its drill message
        return True

    def _drill(self, view: TownView, message: DrillMessage) -> bool:
        if not drills.newer(message, view.drill):
            return False  # redelivered, or an older drill's message arriving late
        view.drill = message
        if message.status is not DrillStatus.RUNNING:
            view.finished_drill = message
            if message.status is DrillStatus.PASSED:
                view.drill_passed_at = drills.ended_at(message)
        return True

    def _metrics(self, view: TownView, message: MetricsMessage) -> bool:
        # Figures only: state, activity and `since` come from `state`.
        for name, summary in message.paths.items():
            old = view.paths.get(name)
            view.paths[name] = PathView.of(
                summary,
                damped=old.damped if old else False,
                since=old.since if old else None,
            )
        view.probe_summary = message
        return True


def _from_the_agent(message: Message) -> bool:
    if isinstance(message, DrillMessage):
        return False
    return not (isinstance(message, EventMessage) and message.event in NOT_FROM_THE_AGENT)
