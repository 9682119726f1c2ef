"""The agent's event loop: probe every path, decide, apply, check, report.

    agent = Agent(settings, backend, sink)
    await agent.run(stop_event)

Each path has one `PathRunner` (its health, round planner, binding and
round timer); its probe loop starts a round every interval (faster while the
path is suspect) without waiting for the previous one, so a probe that
times out never delays another path or the next round.  Finished rounds
and link events go through the pure core (`netwatch.health`) at once, and
deciding is synchronous: a decision's events are handed to the sink (which
spools them on its own thread) before any route is touched.

One route task makes the kernel follow the decision: it applies changes,
retries failures with back-off, and compares the kernel's table with the
decision after every change, on every route event from netlink and every
`RECONCILE_S` (a missing or wrong route is put back, a route of another
protocol is reported and left alone).  After a failed change the
selector is told what the kernel really has.  MQTT and metrics only read
what was decided: publishing never sits between a fault and a route change.

Background work runs in one TaskGroup with named tasks, cancelled and
awaited on exit (as aiomqtt does).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from netwatch import messages
from netwatch.agent import wire
from netwatch.agent.linkwatch import KernelEvent, LinkEvent, RouteEvent, watch_kernel
from netwatch.agent.metrics import AgentMetrics, AgentSnapshot, MqttStatus
from netwatch.agent.probes import PathBinding, Prober, ProbeResult, ReportsLate, make_prober
from netwatch.agent.routes import PrefixRoute, RouteBackend, RouteChange
from netwatch.errors import RouteError
from netwatch.health import (
    Decision,
    Hold,
    PathHealth,
    PathSelector,
    PathState,
    Transition,
)
from netwatch.health.rounds import DoneRound, RoundPlanner
from netwatch.throttle import LogThrottle
from netwatch.topology import PolicyProfile, Topology, Town, TownPath

log = logging.getLogger("netwatch.agent")

STATE_REFRESH_S = 5.0  # retained state republished at least this often
RECONCILE_S = 2.0  # the kernel's table is compared with the decision at least this often
ROUTE_RETRY_S = 0.5  # first retry of a failed route change; doubles up to the max
ROUTE_RETRY_MAX_S = 30.0
PROBE_GUARD = 1.5  # a prober must never hang a round: cancelled at this x its deadline
LOG_PERIOD_S = 60.0  # a repeated problem is logged at most this often
RECENT_EVENTS = 500  # kept for the control socket (a drill reads the agent's own account)

KernelWatch = Callable[[Sequence[str], Sequence[str]], AsyncIterator[KernelEvent]]


class EventSink(Protocol):
    """What the agent needs of the MQTT publisher (never blocks)."""

    def publish_state(self, message: messages.StateMessage) -> object: ...

    def publish_event(self, message: messages.EventMessage) -> object: ...

    def publish_metrics(self, message: messages.MetricsMessage) -> object: ...

    def reconnect(self) -> None: ...

    @property
    def connected(self) -> bool: ...

    @property
    def spooled(self) -> int: ...

    @property
    def spool_dropped(self) -> int: ...

    @property
    def published_events(self) -> int: ...


@dataclass
class AgentSettings:
    topo: Topology
    town: Town
    policy: PolicyProfile
    withdraw_on_exit: bool = False
    metrics_period_s: float = 10.0
    watch_links: bool = True


class _Clock:
    """The event loop's monotonic time for decisions (virtual in tests),
    wall time for messages, one origin."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.mono0 = self.loop.time()
        self.wall0 = datetime.now(UTC)

    def now(self) -> float:
        return self.loop.time()

    def wall(self, mono: float) -> datetime:
        return self.wall0 + timedelta(seconds=mono - self.mono0)


@dataclass
class PathRunner:
    """Everything the agent keeps for one path."""

    path: TownPath
    binding: PathBinding
    health: PathHealth
    planner: RoundPlanner
    timer: asyncio.TimerHandle | None = None  # the next round's start
    started: float = float("-inf")  # the last round's start
    link_event_at: float = float("-inf")  # rounds sent before it are stale
    link_was_down: bool = False

    @property
    def name(self) -> str:
        return self.path.name


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        backend: RouteBackend,
        sink: EventSink | None = None,
        *,
        probers: Sequence[Prober] | None = None,
        kernel_watch: KernelWatch | None = watch_kernel,
    ) -> None:
        self.settings = settings
        self.town = settings.town
        self.policy = settings.policy
        self.backend = backend
        self.sink = sink
        self.kernel_watch = kernel_watch if settings.watch_links else None
        targets = settings.topo.datacenter.targets
        self.probers = list(probers or [make_prober(k, targets) for k in self.policy.probes])
        self.target_of = {"icmp": str(targets.icmp), "tcp": str(targets.tcp), "http": targets.http}
        self.prefixes = [str(p) for p in settings.topo.routed_prefixes]
        kinds = [p.kind for p in self.probers]
        self.paths = {
            p.name: PathRunner(
                path=p,
                binding=PathBinding(p.name, p.mark, p.address.ip),
                health=PathHealth(p.name, self.policy, kinds),
                planner=RoundPlanner(self.policy, kinds),
            )
            for p in self.town.paths_by_preference
        }
        self.health = {name: runner.health for name, runner in self.paths.items()}
        self.selector = PathSelector(
            list(self.paths),
            self.policy.failback_holddown,
            degraded_after=self.policy.degraded_failover,
        )
        self.by_interface = {r.path.interface: r for r in self.paths.values()}
        self._prober_of = {p.kind: p for p in self.probers}
        for prober in self.probers:
            if isinstance(prober, ReportsLate):  # answers after their deadline are latency
                prober.on_late = self._on_late
        self.metrics = AgentMetrics(self.town.id, self.snapshot)
        # Probes by (path, kind, outcome): exported from the snapshot and sent
        # in the metrics summaries.
        self._result_counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._rtt_histograms: dict[tuple[str, str], Any] = {}
        self.rounds = 0
        # routes
        self.applied: str | None = None  # what the backend last carried out
        self.routes_in_sync: bool | None = None
        self.route_conflicts: dict[str, PrefixRoute] = {}
        self._pending: Decision | None = None  # the decision being carried out
        self._announced: tuple[str | None, str] | None = None
        self._retry_at = float("-inf")
        self._retry_s = ROUTE_RETRY_S
        self._restore_tables = False
        self._last_down: dict[str, Transition] = {}
        self._alarm_reported = False
        self.recent_events: collections.deque[messages.EventMessage] = collections.deque(
            maxlen=RECENT_EVENTS
        )
        # reporting
        self._state_key: object = None
        self._state_sent = float("-inf")
        self._tasks: set[asyncio.Task[None]] = set()
        self._clock: _Clock | None = None
        self._route_wake: asyncio.Event | None = None
        self._throttle: LogThrottle | None = None

    # --- life cycle ---------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._clock is not None

    @property
    def clock(self) -> _Clock:
        assert self._clock is not None, "the agent is not running"
        return self._clock

    async def run(self, stop: asyncio.Event) -> None:
        self._clock = _Clock()
        self._route_wake = asyncio.Event()
        self._throttle = LogThrottle(log, self.clock.now, period_s=LOG_PERIOD_S)
        await self.backend.setup()
        current = await self.backend.current()
        self.applied = current
        if current is not None:
            # Adopt the routes a previous run left: a restart is not a failover.
            self.selector.active = current
            log.info("reconciled: routes already point at %s", current)
        self._event(messages.EventType.AGENT_START, f"agent started; routes on {current or 'none'}")
        await self._warm_up()
        self._publish_state(self.clock.now())
        async with asyncio.TaskGroup() as group:
            running = [
                group.create_task(self._probe_loop(r), name=f"probe-{r.name}")
                for r in self.paths.values()
            ]
            running.append(group.create_task(self._route_loop(), name="routes"))
            running.append(group.create_task(self._state_loop(), name="state"))
            if self.kernel_watch is not None:
                running.append(group.create_task(self._kernel_loop(), name="kernel-events"))
            await stop.wait()
            for task in running:
                task.cancel()
        await self._shutdown()

    async def _warm_up(self) -> None:
        """One unreported probe of each kind per path: sockets, clients and
        lazily imported code are ready, and each deadline starts from a
        real RTT, before the first round that counts (which decides
        UNKNOWN -> UP/DOWN on its own and must not be slowed by start-up)."""
        runners = list(self.paths.values())
        pairs = [(r, p) for r in runners for p in self.probers]
        results = await asyncio.gather(
            *(self._probe(p, r.binding, self.policy.timeout) for r, p in pairs)
        )
        for (runner, _), result in zip(pairs, results, strict=True):
            if result.ok and result.rtt_s is not None:
                runner.planner.late(result.kind, result.rtt_s)
            self._account(runner, result)

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.settings.withdraw_on_exit:
            try:
                await self.backend.withdraw()
                log.info("withdrew netwatch's routes")
            except RouteError as exc:
                log.error("could not withdraw routes: %s", exc)
        for prober in self.probers:
            await prober.aclose()
        await self.backend.aclose()

    # --- probing -------------------------------------------------------------

    async def _probe_loop(self, runner: PathRunner) -> None:
        """Rounds start from a timer, not a task per round: a round every
        interval, sooner when a round turns the path suspect (`_hurry`)."""
        loop = asyncio.get_running_loop()
        runner.timer = loop.call_at(loop.time(), self._tick, runner)
        try:
            await loop.create_future()  # until cancelled
        finally:
            if runner.timer is not None:
                runner.timer.cancel()

    def _interval(self, runner: PathRunner) -> float:
        """Seconds between rounds: faster while suspect; slower on a path that
        carries no traffic, if the policy says so (`standby_interval`)."""
        health = runner.health
        standby = self.policy.standby_interval
        if standby is None or health.suspect() or runner.name == self.selector.active:
            return health.interval()
        return standby

    def _tick(self, runner: PathRunner) -> None:
        runner.started = started = self.clock.now()
        self._start_round(runner, started)
        due = started + self._interval(runner)
        runner.timer = self.clock.loop.call_at(due, self._tick, runner)

    def _hurry(self, runner: PathRunner) -> None:
        """The path turned suspect or active: the next round may be due sooner."""
        timer = runner.timer
        due = max(runner.started + self._interval(runner), self.clock.now())
        if timer is not None and not timer.cancelled() and due < timer.when():
            timer.cancel()
            runner.timer = self.clock.loop.call_at(due, self._tick, runner)

    def _start_round(self, runner: PathRunner, t: float) -> None:
        planned = runner.planner.start(t)
        for kind, deadline in planned.deadlines.items():
            prober = self._prober_of[kind]
            self._spawn(
                self._probe_one(runner, planned.seq, prober, deadline),
                f"probe-{runner.name}-{kind}",
            )

    async def _probe_one(
        self, runner: PathRunner, seq: int, prober: Prober, deadline: float
    ) -> None:
        result = await self._probe(prober, runner.binding, deadline)
        at = self.clock.now()
        self._account(runner, result)
        for done in runner.planner.finish(seq, result.kind, result.ok, result.rtt_s, at):
            self._report(runner, done)

    async def _probe(self, prober: Prober, binding: PathBinding, deadline_s: float) -> ProbeResult:
        try:
            async with asyncio.timeout(deadline_s * PROBE_GUARD):
                return await prober.probe(binding, deadline_s)
        except TimeoutError:
            return ProbeResult(prober.kind, False, None, "timeout")
        except Exception as exc:  # one broken prober must not stop the agent
            return ProbeResult(prober.kind, False, None, "error", repr(exc))

    def _account(self, runner: PathRunner, result: ProbeResult) -> None:
        """Count a probe; say a probe that could not be sent once a minute."""
        town, path, kind = self.town.id, runner.name, result.kind
        self._result_counts[(path, kind, result.outcome)] += 1
        if result.ok and result.rtt_s is not None:
            histogram = self._rtt_histograms.get((path, kind))
            if histogram is None:
                histogram = self._rtt_histograms[(path, kind)] = self.metrics.probe_rtt.labels(
                    town, path, self.target_of[kind], kind
                )
            histogram.observe(result.rtt_s)
            return
        if result.outcome not in ("no_source", "error"):
            return
        self.metrics.probe_errors.labels(town, path, kind, result.outcome).inc()
        if result.outcome == "no_source":
            text = (
                f"path {path}: {kind} probes cannot be sent: the path's source address "
                f"{runner.binding.source} is not on this host (is the agent running at "
                f"{self.town.id}'s edge, with {runner.path.interface} configured?)"
            )
        else:
            text = f"path {path}: {kind} probe failed: {result.detail}"
        assert self._throttle is not None
        self._throttle.warning((path, kind, result.outcome), text)

    def _on_late(self, path: str, kind: str, rtt_s: float) -> None:
        self.late_answer(path, kind, self.clock.now() - rtt_s, rtt_s)

    def late_answer(self, path: str, kind: str, sent: float, rtt_s: float) -> None:
        """A probe sent at `sent` (loop time) answered after its deadline."""
        runner = self.paths.get(path)
        if runner is None:
            return
        runner.planner.late(kind, rtt_s)
        runner.health.late_answer(sent, kind, rtt_s)

    def _report(self, runner: PathRunner, done: DoneRound) -> None:
        if done.t < runner.link_event_at:
            return  # sent before the link changed under it
        self.rounds += 1
        health = runner.health
        was_suspect = health.suspect()
        transition = health.round(done.t, done.samples, done=done.done)
        if transition is not None:
            self._on_transition(transition)
        if health.suspect() and not was_suspect:
            self._hurry(runner)
        self._decide(done.done)

    # --- kernel events -----------------------------------------------------------

    async def _kernel_loop(self) -> None:
        assert self.kernel_watch is not None
        try:
            async for event in self.kernel_watch(list(self.by_interface), self.prefixes):
                t = self.clock.now()
                if isinstance(event, RouteEvent):
                    self._wake_routes()  # compare the table with the decision now
                elif isinstance(event, LinkEvent):
                    self._on_link(t, event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # probes and the periodic check still cover it
            log.error("kernel event watch stopped (%r); probes alone detect failures now", exc)

    def _on_link(self, t: float, event: LinkEvent) -> None:
        runner = self.by_interface[event.ifname]
        runner.link_event_at = t
        for done in runner.planner.drop_before(t):
            self._report(runner, done)
        if event.up:
            runner.health.link_up(t)
            if runner.link_was_down:
                runner.link_was_down = False
                # The kernel dropped every route through the interface when it
                # went down: the path's own table (without it the path's probes
                # would follow the main table, over the other path) and, if the
                # path is active, the town's routes.
                self._restore_tables = True
                self._wake_routes()
            return
        runner.link_was_down = True
        transition = runner.health.link_down(t, f"link {event.ifname} down")
        if transition is not None:
            self._on_transition(transition)
            self._decide(t)

    # --- decisions -------------------------------------------------------------

    def _on_transition(self, tr: Transition) -> None:
        log.info("%s: %s -> %s (%s)", tr.path, tr.old, tr.new, tr.reason)
        self.metrics.transitions.labels(self.town.id, tr.path, tr.new.value).inc()
        if tr.new is PathState.DOWN:
            self._last_down[tr.path] = tr
        kind = {
            PathState.DOWN: messages.EventType.PATH_DOWN,
            PathState.DEGRADED: messages.EventType.DEGRADED,
        }.get(tr.new)
        if kind is None and tr.new is PathState.UP:
            kind = (
                messages.EventType.RECOVERED
                if tr.old is PathState.DEGRADED
                else messages.EventType.PATH_UP
            )
        if kind is not None and tr.old is not PathState.UNKNOWN:
            self._event(kind, tr.reason, path=tr.path, at=tr.t)

    def _decide(self, t: float) -> None:
        """Re-evaluate after a round or a link event: synchronous, so the
        decision and its events never wait for a route change."""
        ended = self.selector.check_hold(t, self.health)
        if ended is not None:
            self._hold_ended(*ended, t)
        if t >= self._retry_at:
            decision = self.selector.decide(t, self.health)
            if decision is not None:
                self._pending = decision
                self._announce(decision)
                self._wake_routes()
                self._hurry(self.paths[decision.new])  # the active path is probed at `interval`
        self._check_alarm(t)
        self._publish_state(t)

    def _announce(self, decision: Decision) -> None:
        if decision.kind == "initial":
            return
        key = (decision.old, decision.new)
        if key == self._announced:
            return  # a retry of the change already announced
        self._announced = key
        log.info(
            "decided: %s -> %s (%s: %s)", decision.old, decision.new, decision.kind, decision.reason
        )
        down = self._last_down.get(decision.old or "")
        detect = decision.t - down.suspected_at if decision.kind == "failover" and down else None
        back = decision.kind == "failback" or (
            decision.kind == "hold" and decision.new == self.town.primary.name
        )
        event = messages.EventType.FAILBACK if back else messages.EventType.FAILOVER
        self._event(
            event,
            decision.reason,
            from_path=decision.old,
            to_path=decision.new,
            duration_s=detect,
            at=decision.t,
            details={"kind": decision.kind},
        )

    # --- maintenance holds (the control socket) -----------------------------------

    def place_hold(self, path: str, seconds: float, reason: str, by: str) -> messages.HoldStatus:
        """Keep the town on `path` for `seconds` (replacing any hold); the
        routes follow at once.  `HoldRefused` when the path cannot carry it."""
        t = self.clock.now()
        self.selector.place_hold(Hold(path, t, t + seconds, reason, by), self.health)
        status = self.hold_status()
        assert status is not None
        log.warning(
            "hold: %s on %s until %s by %s (%s)",
            self.town.id,
            path,
            messages.format_ts(status.until),
            by,
            reason,
        )
        self._event(
            messages.EventType.HOLD,
            reason,
            path=path,
            at=t,
            details={"until": messages.format_ts(status.until), "by": by, "seconds": seconds},
        )
        self._state_key = None  # the state changed: published by the next decide
        self._decide(t)
        return status

    def release_hold(self, by: str, *, only_by: str | None = None) -> messages.HoldStatus | None:
        """End the hold in force (only if `only_by` placed it, when given);
        the hold that ended, or None."""
        hold = self.selector.hold
        if hold is None or (only_by is not None and hold.by != only_by):
            return None
        status = self.hold_status()
        self.selector.release_hold()
        self._hold_ended(hold, f"released by {by}", self.clock.now())
        self._decide(self.clock.now())
        return status

    def _hold_ended(self, hold: Hold, reason: str, t: float) -> None:
        log.warning("hold of %s on %s ended: %s", self.town.id, hold.path, reason)
        self._state_key = None
        self._event(messages.EventType.HOLD_RELEASED, reason, path=hold.path, at=t)

    def hold_status(self) -> messages.HoldStatus | None:
        hold = self.selector.hold
        if hold is None:
            return None
        return messages.HoldStatus(
            path=hold.path,
            reason=hold.reason,
            by=hold.by,
            since=self.clock.wall(hold.since),
            until=self.clock.wall(hold.until),
        )

    def _check_alarm(self, t: float) -> None:
        if self.selector.all_down and not self._alarm_reported:
            self._alarm_reported = True
            log.error("ALARM: every path of %s is down; routes left as they are", self.town.id)
            self._event(messages.EventType.ALL_DOWN, "every path is down; routes unchanged", at=t)
        elif not self.selector.all_down:
            self._alarm_reported = False

    # --- routes: the kernel follows the decision ---------------------------------

    def _wake_routes(self) -> None:
        if self._route_wake is not None:
            self._route_wake.set()

    async def _route_loop(self) -> None:
        wake = self._route_wake
        assert wake is not None
        while True:
            now = self.clock.now()
            if now >= self._retry_at > float("-inf"):
                self._retry_at = float("-inf")
                self._decide(now)  # the failed change is decided again
            timeout = RECONCILE_S
            if self._retry_at > now:
                timeout = min(timeout, self._retry_at - now)
            try:
                async with asyncio.timeout(timeout):
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()
            if self.clock.now() < self._retry_at:
                continue
            await self.converge()

    async def converge(self) -> None:
        """Make the routes follow the selector's active path, then check."""
        if self._restore_tables:
            self._restore_tables = False
            try:
                await self.backend.setup()
                log.info("link up: per-path routes restored")
            except RouteError as exc:
                log.error("link up, but the per-path routes could not be restored: %s", exc)
                self._restore_tables = True
        target = self.selector.active
        if target is None:
            return
        if target != self.applied and not await self._apply(target):
            return
        await self.reconcile()

    async def _apply(self, target: str) -> bool:
        decision = self._pending if self._pending and self._pending.new == target else None
        reason = decision.reason if decision else f"routes to {target}"
        change = RouteChange(self.town.id, self.applied, target, reason)
        try:
            await self.backend.apply(change)
        except RouteError as exc:
            await self._route_failed(change, exc)
            return False
        applied = self.clock.now()
        old, self.applied = self.applied, target
        self._retry_s = ROUTE_RETRY_S
        self._announced = None
        if self.sink is not None and old is not None:
            self.sink.reconnect()  # its session still uses the old path's address
        log.info("routes: %s -> %s (%s)", old, target, reason)
        kind = decision.kind if decision else "switch"
        if decision is None or kind == "initial":
            return True
        self._pending = None
        self.metrics.failovers.labels(self.town.id, old or "", target, kind).inc()
        duration = None
        down = self._last_down.get(old or "")
        if kind == "failover" and down is not None:
            duration = applied - down.suspected_at
            self.metrics.last_failover.labels(self.town.id).set(duration)
        self._event(
            messages.EventType.ROUTES_APPLIED,
            f"routes follow {target}",
            from_path=old,
            to_path=target,
            duration_s=duration,
            at=applied,
            details={"kind": kind, "apply_s": round(applied - decision.t, 6)},
        )
        return True

    async def _route_failed(self, change: RouteChange, exc: RouteError) -> None:
        self.metrics.route_errors.labels(self.town.id, self.backend.name).inc()
        retry = self._retry_s
        self._retry_s = min(2 * self._retry_s, ROUTE_RETRY_MAX_S)
        self._retry_at = self.clock.now() + retry
        log.error(
            "route change %s -> %s failed: %s; retry in %gs", change.old, change.new, exc, retry
        )
        self._event(
            messages.EventType.ROUTE_ERROR,
            str(exc),
            from_path=change.old,
            to_path=change.new,
            details={"backend": self.backend.name, "split": exc.split, "retry_s": retry},
        )
        # After a failure, the selector's active path is what the kernel has.
        try:
            actual = await self.backend.current()
        except RouteError as unread:
            log.error("cannot read the routes back: %s", unread)
            return
        self.applied = actual
        self.selector.active = actual
        self._publish_state(self.clock.now())

    async def reconcile(self) -> None:
        """Compare the kernel's table with the decision; put back what is
        missing or wrong, report (and leave) what another protocol holds."""
        target = self.selector.active
        try:
            routes = await self.backend.inspect()
        except RouteError as exc:
            assert self._throttle is not None
            self._throttle.error("inspect", f"cannot read the routing table: {exc}")
            return
        if routes is None or target is None:
            self.routes_in_sync = None
            return
        self._note_conflicts([r for r in routes if r.owner == "foreign"])
        wrong = [
            r for r in routes if r.owner == "none" or (r.owner == "netwatch" and r.path != target)
        ]
        if not wrong:
            self.routes_in_sync = True
            return
        self.routes_in_sync = False
        runner = self.paths[target]
        if not runner.health.carrier:
            assert self._throttle is not None
            self._throttle.warning(
                ("reinstall", target),
                f"routes to {', '.join(r.prefix for r in wrong)} missing, but {target}'s link "
                f"{runner.path.interface} is down: they are put back when it comes up",
            )
            return
        found = ", ".join(
            f"{r.prefix}: "
            + ("no route" if r.owner == "none" else f"via {r.path or 'an unknown gateway'}")
            for r in wrong
        )
        change = RouteChange(self.town.id, target, target, "reinstall")
        try:
            await self.backend.apply(change, [r.prefix for r in wrong])
        except RouteError as exc:
            await self._route_failed(change, exc)
            return
        self.routes_in_sync = True
        self.metrics.route_reinstalled.labels(self.town.id, target).inc()
        log.warning("routes put back via %s (found %s)", target, found)
        self._event(
            messages.EventType.ROUTE_REINSTALLED,
            f"found {found}; put back via {target}",
            path=target,
            details={"prefixes": [r.prefix for r in wrong]},
        )

    def _note_conflicts(self, foreign: list[PrefixRoute]) -> None:
        now = {r.prefix: r for r in foreign}
        for prefix, route in now.items():
            if prefix not in self.route_conflicts:
                text = (
                    f"route {prefix} in the main table belongs to protocol {route.proto}, not "
                    "netwatch: left alone (netwatch never replaces other protocols' routes)"
                )
                log.error("ALARM: %s", text)
                self._event(
                    messages.EventType.ROUTE_CONFLICT,
                    text,
                    details={"prefix": prefix, "proto": route.proto},
                )
        for prefix in set(self.route_conflicts) - set(now):
            log.info("route conflict on %s cleared", prefix)
            self._event(
                messages.EventType.ROUTE_CONFLICT_CLEARED,
                f"{prefix} no longer held by another protocol",
                details={"prefix": prefix},
            )
        self.route_conflicts = now

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- reporting ---------------------------------------------------------------

    def snapshot(self) -> AgentSnapshot:
        """The agent at this moment, built when asked (a scrape, a message)."""
        t = self.clock.now() if self._clock is not None else 0.0
        sink = self.sink
        mqtt = MqttStatus()
        if sink is not None:
            mqtt = MqttStatus(
                True, sink.connected, sink.spooled, sink.spool_dropped, sink.published_events
            )
        counters = getattr(self._prober_of.get("icmp"), "counters", None)
        return AgentSnapshot(
            town=self.town.id,
            active=self.selector.active,
            all_down=self.selector.all_down,
            paths={name: h.snapshot(t) for name, h in self.health.items()},
            mqtt=mqtt,
            icmp_ignored=dict(counters) if isinstance(counters, dict) else {},
            probe_results=dict(self._result_counts),
            routes_in_sync=self.routes_in_sync,
            route_conflicts=tuple(sorted(self.route_conflicts)),
            hold=self.hold_status() if self._clock is not None else None,
        )

    def _publish_state(self, t: float, *, force: bool = False) -> None:
        """The retained state is the current truth: sent when a decision
        changes it, and every STATE_REFRESH_S for the figures; not per round."""
        if self.sink is None:
            return
        key = (
            self.selector.active,
            self.selector.all_down,
            self.selector.hold,
            tuple((n, h.state, h.damped(t)) for n, h in self.health.items()),
        )
        if not force and key == self._state_key and t - self._state_sent < STATE_REFRESH_S:
            return
        self._state_key, self._state_sent = key, t
        self.sink.publish_state(self.state_message(t))

    def state_message(self, t: float) -> messages.StateMessage:
        return wire.state_message(
            self.snapshot(),
            t=t,
            wall=self.clock.wall,
            origin=self.clock.mono0,
            route_backend=self.backend.name,
        )

    def _event(
        self,
        kind: messages.EventType,
        reason: str,
        *,
        at: float | None = None,
        path: str | None = None,
        from_path: str | None = None,
        to_path: str | None = None,
        duration_s: float | None = None,
        details: dict[str, messages.JSON] | None = None,
    ) -> None:
        message = messages.EventMessage(
            town=self.town.id,
            ts=self.clock.wall(at if at is not None else self.clock.now()),
            event=kind,
            reason=reason,
            path=path,
            from_path=from_path,
            to_path=to_path,
            duration_s=duration_s,
            details=details,
        )
        self.recent_events.append(message)
        if self.sink is not None:
            # Handed over at once: the sink spools it on its own thread, so an
            # event is on disk within milliseconds, whatever the routes are doing.
            self.sink.publish_event(message)

    async def _state_loop(self) -> None:
        next_metrics = self.clock.now() + self.settings.metrics_period_s
        while True:
            await asyncio.sleep(STATE_REFRESH_S)
            now = self.clock.now()
            self._decide(now)  # also catches hold-down expiry between rounds; publishes
            if self.sink is not None and now >= next_metrics:
                next_metrics += self.settings.metrics_period_s
                state = self.state_message(now)
                probes: dict[str, messages.JSON] = {
                    "rounds": self.rounds,
                    "outcomes": messages.outcomes_json(self._result_counts),
                }
                self.sink.publish_metrics(wire.metrics_message(state, probes))
