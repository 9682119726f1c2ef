"""The agent's event loop: probe every path, decide, apply, report.

    agent = Agent(settings, backend, publisher)
    await agent.run(stop_event)

Each path has its own probe task, which starts a round every interval
(faster while the path is suspect) without waiting for the previous round:
a probe that times out on one path never delays another path or the next
round.  Every finished round and every link event goes through the pure
core (`netwatch.health`), and a decision is applied by the route backend
at once.  MQTT and metrics only read what the core decided: publishing
never sits between a fault and the route change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from netwatch import messages
from netwatch.agent.linkwatch import watch_links
from netwatch.agent.metrics import AgentMetrics, AgentSnapshot, MqttStatus
from netwatch.agent.probes import PathBinding, Prober, ProbeResult
from netwatch.agent.probes.http import HttpProber
from netwatch.agent.probes.icmp import IcmpProber
from netwatch.agent.probes.tcp import TcpProber
from netwatch.agent.routes import RouteBackend, RouteChange, RouteError
from netwatch.health import Decision, PathHealth, PathSelector, PathState, Sample, Transition
from netwatch.health.rto import ProbeTimer
from netwatch.topology import PolicyProfile, Topology, Town

log = logging.getLogger("netwatch.agent")

STATE_REFRESH_S = 5.0  # retained state republished at least this often
ROUTE_RETRY_S = 1.0
PROBE_SLACK_S = 0.02  # scheduling allowance on a busy 2-core box, added to learned deadlines


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


@dataclass
class _Clock:
    """Monotonic time for decisions, wall time for messages, one origin."""

    mono0: float = field(default_factory=time.monotonic)
    wall0: datetime = field(default_factory=lambda: datetime.now(UTC))

    def now(self) -> float:
        return time.monotonic()

    def wall(self, mono: float) -> datetime:
        return self.wall0 + timedelta(seconds=mono - self.mono0)


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        backend: RouteBackend,
        sink: EventSink | None = None,
        *,
        probers: list[Prober] | None = None,
    ) -> None:
        self.settings = settings
        self.town = settings.town
        self.policy = settings.policy
        self.backend = backend
        self.sink = sink
        self.clock = _Clock()
        targets = settings.topo.datacenter.targets
        self.probers = probers or [_make_prober(kind, settings.topo) for kind in self.policy.probes]
        self.target_of = {"icmp": str(targets.icmp), "tcp": str(targets.tcp), "http": targets.http}
        paths = self.town.paths_by_preference
        kinds = [p.kind for p in self.probers]
        self.health = {p.name: PathHealth(p.name, self.policy, kinds) for p in paths}
        self.selector = PathSelector([p.name for p in paths], self.policy.failback_holddown)
        self.bindings = {p.name: PathBinding(p.name, p.mark, p.address.ip) for p in paths}
        self.by_interface = {p.interface: p.name for p in paths}
        self.metrics = AgentMetrics(self.town.id, lambda: self.snapshot)
        self.snapshot: AgentSnapshot | None = None
        self._wake = {p.name: asyncio.Event() for p in paths}
        # How long each probe waits: learned per path and kind, within the policy.
        self._timers = {
            (p.name, kind): ProbeTimer(
                self.policy.timeout / 3, self.policy.timeout, slack_s=PROBE_SLACK_S
            )
            for p in paths
            for kind in kinds
        }
        self._started = {p.name: 0 for p in paths}
        self._reported = {p.name: 0 for p in paths}
        self._finished: dict[str, dict[int, tuple[float, list[ProbeResult]]]] = {
            p.name: {} for p in paths
        }
        self._delivering = {p.name: False for p in paths}
        self._route_lock = asyncio.Lock()
        self._route_pending = False
        self._last_down: dict[str, Transition] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._alarm_reported = False
        self._outbox: list[messages.EventMessage] = []
        self._state_key: object = None
        self._state_sent = float("-inf")
        self.rounds = 0

    # --- life cycle ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.backend.setup()
        current = await self.backend.current()
        if current is not None:
            # Adopt the routes a previous run left: a restart is not a failover.
            self.selector.active = current
            log.info("reconciled: routes already point at %s", current)
        self._event(messages.EventType.AGENT_START, f"agent started; routes on {current or 'none'}")
        # One unreported round per path first: sockets, clients and lazily
        # imported code paths are ready before the first round that counts,
        # which decides UNKNOWN -> UP/DOWN on its own and must not be slowed
        # by start-up work.
        await asyncio.gather(
            *(
                self._probe(p, b, self.policy.timeout)
                for p in self.probers
                for b in self.bindings.values()
            )
        )
        self._refresh()
        workers = [self._probe_loop(name) for name in self.health]
        workers.append(self._state_loop())
        if self.settings.watch_links:
            workers.append(self._link_loop())
        async with asyncio.TaskGroup() as group:
            running = [group.create_task(w) for w in workers]
            await stop.wait()
            for task in running:
                task.cancel()
        await self._shutdown()

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

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- probing -------------------------------------------------------------

    async def _probe_loop(self, path: str) -> None:
        wake = self._wake[path]
        while True:
            started = self.clock.now()
            self._spawn(self._round(path), f"round-{path}")
            due = started + self.health[path].interval()
            wake.clear()
            # A round that turns the path suspect wakes us to probe sooner.
            while (delay := due - self.clock.now()) > 0:
                try:
                    async with asyncio.timeout(delay):
                        await wake.wait()
                except TimeoutError:
                    break
                wake.clear()
                due = min(due, started + self.health[path].interval())

    async def _round(self, path: str) -> None:
        seq = self._started[path] = self._started[path] + 1
        binding = self.bindings[path]
        timers = [self._timers[(path, p.kind)] for p in self.probers]
        results: list[ProbeResult] = await asyncio.gather(
            *(
                self._probe(p, binding, timer.timeout())
                for p, timer in zip(self.probers, timers, strict=True)
            )
        )
        for result, timer in zip(results, timers, strict=True):
            if result.ok and result.rtt_s is not None:
                timer.observe(result.rtt_s)
        self._finished[path][seq] = (self.clock.now(), results)
        await self._deliver(path)

    async def _deliver(self, path: str) -> None:
        """Feed finished rounds to the core in the order they started: a lost
        probe that times out late must not count after a newer good round."""
        if self._delivering[path]:
            return  # the running delivery picks this round up
        self._delivering[path] = True
        try:
            finished = self._finished[path]
            while (seq := self._reported[path] + 1) in finished:
                t, results = finished.pop(seq)
                self._reported[path] = seq
                await self._report(path, t, results)
        finally:
            self._delivering[path] = False

    async def _report(self, path: str, t: float, results: list[ProbeResult]) -> None:
        self.rounds += 1
        for result in results:
            self.metrics.probe_results.labels(self.town.id, path, result.kind, result.outcome).inc()
            if result.ok and result.rtt_s is not None:
                self.metrics.probe_rtt.labels(
                    self.town.id, path, self.target_of[result.kind], result.kind
                ).observe(result.rtt_s)
        health = self.health[path]
        was_suspect = health.suspect()
        samples = {r.kind: Sample(t, r.ok, r.rtt_s) for r in results}
        transition = health.round(t, samples)
        if transition is not None:
            self._on_transition(transition)
        if health.suspect() and not was_suspect:
            self._wake[path].set()
        await self._decide(t)

    async def _probe(self, prober: Prober, binding: PathBinding, deadline_s: float) -> ProbeResult:
        try:
            async with asyncio.timeout(deadline_s * 1.5):  # a prober must never hang a round
                return await prober.probe(binding, deadline_s)
        except TimeoutError:
            return ProbeResult(prober.kind, False, None, "timeout")
        except Exception as exc:  # one broken prober must not stop the agent
            log.warning("%s probe on %s failed: %r", prober.kind, binding.path, exc)
            return ProbeResult(prober.kind, False, None, "error", repr(exc))

    # --- link events ---------------------------------------------------------

    async def _link_loop(self) -> None:
        try:
            seen_down: set[str] = set()
            async for ifname, up in watch_links(list(self.by_interface)):
                path = self.by_interface[ifname]
                t = self.clock.now()
                if up:
                    self.health[path].link_up(t)
                    if ifname in seen_down:
                        seen_down.discard(ifname)
                        # The kernel dropped every route through the interface
                        # when it went down, the path's own table included:
                        # without it the path's probes would follow the main
                        # table, over the other path.
                        await self._restore_path_tables(ifname)
                    continue
                seen_down.add(ifname)
                transition = self.health[path].link_down(t, f"link {ifname} down")
                if transition is not None:
                    self._on_transition(transition)
                    await self._decide(t)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # probes still cover a lost netlink socket
            log.error("link watch stopped (%r); probes alone detect failures now", exc)

    async def _restore_path_tables(self, ifname: str) -> None:
        try:
            await self.backend.setup()
            log.info("link %s up: per-path routes restored", ifname)
        except RouteError as exc:
            log.error("link %s up, but its per-path routes could not be restored: %s", ifname, exc)

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

    async def _decide(self, t: float) -> None:
        if self._route_lock.locked():
            self._route_pending = True  # the running apply re-decides when done
            return
        async with self._route_lock:
            while True:
                self._route_pending = False
                decision = self.selector.decide(t, self.health)
                if decision is not None:
                    await self._apply(decision)
                self._check_alarm(t)
                self._refresh()
                if not self._route_pending:
                    return
                t = self.clock.now()

    async def _apply(self, decision: Decision) -> None:
        change = RouteChange(self.town.id, decision.old, decision.new, decision.reason)
        try:
            await self.backend.apply(change)
        except RouteError as exc:
            self.metrics.route_errors.labels(self.town.id, self.backend.name).inc()
            log.error("route change to %s failed: %s; retrying", decision.new, exc)
            self.selector.active = decision.old  # not applied: decide again next round
            await asyncio.sleep(ROUTE_RETRY_S)
            return
        applied = self.clock.now()
        if self.sink is not None and decision.old is not None:
            self.sink.reconnect()  # its session still uses the old path's address
        log.info(
            "routes: %s -> %s (%s: %s)", decision.old, decision.new, decision.kind, decision.reason
        )
        if decision.kind == "initial":
            return
        self.metrics.failovers.labels(
            self.town.id, decision.old or "", decision.new, decision.kind
        ).inc()
        duration = None
        down = self._last_down.get(decision.old or "")
        if decision.kind == "failover" and down is not None:
            duration = applied - down.suspected_at
            self.metrics.last_failover.labels(self.town.id).set(duration)
        event = (
            messages.EventType.FAILBACK
            if decision.kind == "failback"
            else messages.EventType.FAILOVER
        )
        self._event(
            event,
            decision.reason,
            from_path=decision.old,
            to_path=decision.new,
            duration_s=duration,
            at=applied,
            details={"kind": decision.kind},
        )

    def _check_alarm(self, t: float) -> None:
        if self.selector.all_down and not self._alarm_reported:
            self._alarm_reported = True
            log.error("ALARM: every path of %s is down; routes left as they are", self.town.id)
            self._event(messages.EventType.ALL_DOWN, "every path is down; routes unchanged", at=t)
        elif not self.selector.all_down:
            self._alarm_reported = False

    # --- reporting ---------------------------------------------------------------

    def _refresh(self) -> None:
        """A new snapshot for the metrics collector and the retained state."""
        t = self.clock.now()
        sink = self.sink
        mqtt = MqttStatus()
        if sink is not None:
            mqtt = MqttStatus(
                True, sink.connected, sink.spooled, sink.spool_dropped, sink.published_events
            )
        icmp = next((p for p in self.probers if isinstance(p, IcmpProber)), None)
        self.snapshot = AgentSnapshot(
            town=self.town.id,
            active=self.selector.active,
            all_down=self.selector.all_down,
            paths={name: h.snapshot(t) for name, h in self.health.items()},
            mqtt=mqtt,
            icmp_ignored=dict(icmp.counters) if icmp else {},
        )
        if sink is not None:
            # The retained state is the current truth: send it when a decision
            # changes, and every STATE_REFRESH_S for the figures; not per round.
            key = (
                self.snapshot.active,
                self.snapshot.all_down,
                tuple((n, p.state, p.damped) for n, p in self.snapshot.paths.items()),
            )
            if key != self._state_key or t - self._state_sent >= STATE_REFRESH_S:
                self._state_key, self._state_sent = key, t
                sink.publish_state(self._state_message(t))
        self._flush_events()  # after the decision they belong to is applied

    def _state_message(self, t: float) -> messages.StateMessage:
        assert self.snapshot is not None
        paths = {}
        for name, snap in self.snapshot.paths.items():
            stats = snap.stats
            paths[name] = messages.PathStatus(
                state=messages.PathState(snap.state.value.upper()),
                loss_ratio=stats.loss_ratio if stats.count else None,
                rtt_p50_s=stats.rtt_p50,
                rtt_p95_s=stats.rtt_p95,
                jitter_s=stats.jitter,
                damped=snap.damped,
                since=self.clock.wall(snap.since if snap.since is not None else self.clock.mono0),
            )
        return messages.StateMessage(
            town=self.town.id,
            ts=self.clock.wall(t),
            active_path=self.snapshot.active,
            all_down=self.snapshot.all_down,
            paths=paths,
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
        if self.sink is None:
            return
        # Queued, not published: publishing writes the event to the spool
        # with an fsync, and a route change must never wait for a disk.
        self._outbox.append(
            messages.EventMessage(
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
        )

    def _flush_events(self) -> None:
        if self.sink is None:
            return
        while self._outbox:
            self.sink.publish_event(self._outbox.pop(0))

    async def _state_loop(self) -> None:
        next_metrics = self.clock.now() + self.settings.metrics_period_s
        while True:
            await asyncio.sleep(STATE_REFRESH_S)
            self._refresh()  # also catches hold-down expiry reported by decide()
            if self.sink is not None and self.clock.now() >= next_metrics:
                next_metrics += self.settings.metrics_period_s
                self.sink.publish_metrics(self._metrics_message())

    def _metrics_message(self) -> messages.MetricsMessage:
        assert self.snapshot is not None
        state = self._state_message(self.clock.now())
        summaries = {
            name: messages.PathSummary(
                state=s.state,
                loss_ratio=s.loss_ratio,
                rtt_p50_s=s.rtt_p50_s,
                rtt_p95_s=s.rtt_p95_s,
                jitter_s=s.jitter_s,
            )
            for name, s in state.paths.items()
        }
        probes: dict[str, messages.JSON] = {"rounds": self.rounds}
        return messages.MetricsMessage(town=self.town.id, paths=summaries, probes=probes)


def _make_prober(kind: str, topo: Topology) -> Prober:
    targets = topo.datacenter.targets
    if kind == "icmp":
        return IcmpProber(targets.icmp)
    if kind == "tcp":
        return TcpProber(targets.tcp)
    return HttpProber(targets.http, targets.http_status)
