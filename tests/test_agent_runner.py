"""The agent's runner without root: fake probers on a simulated network,
an in-memory route backend that fails on demand, a fake sink and a fake
kernel-event watch, all on virtual time (looptime: the event loop's clock
jumps to the next timer when nothing else can run, so a minute of agent
time takes well under a second)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import looptime
import pytest

from netwatch import messages
from netwatch.agent.linkwatch import KernelEvent, LinkEvent, RouteEvent
from netwatch.agent.probes import PathBinding, ProbeResult
from netwatch.agent.routes import (
    DryRunBackend,
    NetlinkBackend,
    PrefixRoute,
    RouteChange,
)
from netwatch.agent.runner import RECONCILE_S, Agent, AgentSettings
from netwatch.constants import RTPROT_NETWATCH
from netwatch.errors import RouteError
from netwatch.health import PathHealth, PathState, Sample, Transition
from netwatch.topology import load

ROOT = Path(__file__).resolve().parent.parent
TOPO = load(ROOT / "topology.yaml")
TOWN = TOPO.town("nishiki")
PREFIX = str(TOPO.routed_prefixes[0])
FAST = TOPO.policy.profile("fast").model_copy(update={"failback_holddown": 3.0})
E = messages.EventType


# --- the fakes ---------------------------------------------------------------------------


@dataclass
class Net:
    """The simulated network: per path an RTT, a cut, an added delay."""

    rtt: dict[str, float] = field(default_factory=lambda: {"primary": 0.012, "backup": 0.032})
    cut: set[str] = field(default_factory=set)
    extra: dict[str, float] = field(default_factory=dict)
    no_source: set[str] = field(default_factory=set)

    def answer(self, path: str) -> float | None:
        if path in self.cut:
            return None
        return self.rtt[path] + self.extra.get(path, 0.0)


class FakeProber:
    """Answers after the path's RTT, or times out at the deadline; an answer
    slower than the deadline is reported late, as the ICMP prober does."""

    def __init__(self, kind: str, net: Net, factor: float = 1.0) -> None:
        self.kind = kind
        self.net = net
        self.factor = factor  # an HTTP probe takes a few round trips
        self.on_late: Callable[[str, str, float], None] | None = None
        self.sent: list[tuple[float, str]] = []

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        self.sent.append((loop.time(), binding.path))
        if binding.path in self.net.no_source:
            return ProbeResult(self.kind, False, None, "no_source", "not on this host")
        rtt = self.net.answer(binding.path)
        if rtt is not None:
            rtt *= self.factor
        if rtt is not None and rtt <= deadline_s:
            await asyncio.sleep(rtt)
            return ProbeResult(self.kind, True, rtt, "ok")
        if rtt is not None and self.on_late is not None:
            loop.call_later(rtt, self.on_late, binding.path, self.kind, rtt)
        await asyncio.sleep(deadline_s)
        return ProbeResult(self.kind, False, None, "timeout")

    async def aclose(self) -> None:
        return None


class FakeKernel:
    """A route backend over an in-memory main table."""

    name = "fake"

    def __init__(self) -> None:
        self.table: dict[str, PrefixRoute] = {}
        self.fail_next = 0
        self.apply_delay = 0.0
        self.applies: list[tuple[float, str, list[str]]] = []
        self.setups = 0

    async def setup(self) -> None:
        self.setups += 1

    async def inspect(self) -> list[PrefixRoute] | None:
        return [self.table.get(PREFIX, PrefixRoute(PREFIX, "none"))]

    async def current(self) -> str | None:
        route = self.table.get(PREFIX)
        return route.path if route is not None and route.owner == "netwatch" else None

    async def apply(self, change: RouteChange, prefixes: Sequence[str] | None = None) -> None:
        wanted = list(prefixes or [PREFIX])
        self.applies.append((asyncio.get_running_loop().time(), change.new, wanted))
        if self.apply_delay:
            await asyncio.sleep(self.apply_delay)
        if self.fail_next:
            self.fail_next -= 1
            raise RouteError("injected failure")
        for prefix in wanted:
            if self.table.get(prefix, PrefixRoute(prefix, "none")).owner != "foreign":
                self.table[prefix] = PrefixRoute(prefix, "netwatch", change.new, RTPROT_NETWATCH)

    async def withdraw(self) -> None:
        self.table.clear()

    async def aclose(self) -> None:
        return None

    def via(self) -> str | None:
        route = self.table.get(PREFIX)
        return route.path if route else None


class FakeSink:
    def __init__(self) -> None:
        self.events: list[tuple[float, messages.EventMessage]] = []
        self.states: list[tuple[float, messages.StateMessage]] = []
        self.summaries: list[messages.MetricsMessage] = []
        self.reconnects = 0

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def publish_state(self, message: messages.StateMessage) -> None:
        self.states.append((self._now(), message))

    def publish_event(self, message: messages.EventMessage) -> None:
        self.events.append((self._now(), message))

    def publish_metrics(self, message: messages.MetricsMessage) -> None:
        self.summaries.append(message)

    def reconnect(self) -> None:
        self.reconnects += 1

    connected = True
    spooled = 0
    spool_dropped = 0
    published_events = 0

    def kinds(self) -> list[messages.EventType]:
        return [m.event for _, m in self.events]

    def first(self, kind: messages.EventType) -> tuple[float, messages.EventMessage]:
        return next((t, m) for t, m in self.events if m.event is kind)


@dataclass
class World:
    agent: Agent
    net: Net
    kernel: FakeKernel
    sink: FakeSink
    events: asyncio.Queue[KernelEvent]
    probers: list[FakeProber]

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def until(self, condition: Callable[[], bool], within: float, what: str) -> float:
        """Poll (in virtual time) until `condition`; returns when it held."""
        end = self.now() + within
        while not condition():
            if self.now() > end:
                raise AssertionError(f"timed out after {within} s waiting for {what}")
            await asyncio.sleep(0.001)
        return self.now()

    async def hold(self, seconds: float, condition: Callable[[], bool], what: str) -> None:
        """`condition` holds for the whole of `seconds`."""
        end = self.now() + seconds
        while self.now() < end:
            assert condition(), what
            await asyncio.sleep(0.01)


Body = Callable[[World], Awaitable[None]]


def scenario(
    body: Body,
    *,
    policy: object = FAST,
    kernel: FakeKernel | None = None,
    net: Net | None = None,
    watch: bool = True,
) -> World:
    """Run the agent on virtual time around `body`; returns the world after."""
    result: list[World] = []

    async def main() -> None:
        queue: asyncio.Queue[KernelEvent] = asyncio.Queue()

        async def kernel_watch(
            ifnames: Sequence[str], prefixes: Sequence[str]
        ) -> AsyncIterator[KernelEvent]:
            for name in ifnames:
                yield LinkEvent(name, True)
            while True:
                yield await queue.get()

        the_net = net or Net()
        the_kernel = kernel or FakeKernel()
        if not the_kernel.table and kernel is None:
            the_kernel.table[PREFIX] = PrefixRoute(PREFIX, "netwatch", "primary", RTPROT_NETWATCH)
        sink = FakeSink()
        probers = [
            FakeProber("icmp", the_net),
            FakeProber("tcp", the_net),
            FakeProber("http", the_net, factor=2.0),
        ]
        settings = AgentSettings(topo=TOPO, town=TOWN, policy=policy)  # type: ignore[arg-type]
        agent = Agent(
            settings,
            the_kernel,
            sink,
            probers=probers,
            kernel_watch=kernel_watch if watch else None,
        )
        world = World(agent, the_net, the_kernel, sink, queue, probers)
        result.append(world)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await world.until(
                lambda: all(h.state is not PathState.UNKNOWN for h in agent.health.values()),
                within=5,
                what="the first rounds",
            )
            await body(world)
        finally:
            stop.set()
            await task

    loop = looptime.new_event_loop(start=1000.0)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return result[0]


# --- failover and failback -------------------------------------------------------------


def test_a_cut_fails_over_and_events_come_before_the_routes() -> None:
    async def body(w: World) -> None:
        await w.hold(2.0, lambda: w.kernel.via() == "primary", "stays on the primary")
        cut = w.now()
        w.net.cut.add("primary")
        moved = await w.until(lambda: w.kernel.via() == "backup", 2.0, "the failover")
        assert moved - cut < 0.2  # fast: ~25 ms phase + 90 ms silence + a round
        w.net.cut.clear()
        back = await w.until(lambda: w.kernel.via() == "primary", 10.0, "the failback")
        assert back - moved >= FAST.failback_holddown

    w = scenario(body)
    kinds = w.sink.kinds()
    assert kinds.index(E.PATH_DOWN) < kinds.index(E.FAILOVER) < kinds.index(E.ROUTES_APPLIED)
    _, failover = w.sink.first(E.FAILOVER)
    _, applied = w.sink.first(E.ROUTES_APPLIED)
    assert (failover.from_path, failover.to_path) == ("primary", "backup")
    assert failover.duration_s is not None
    assert applied.duration_s is not None
    assert 0 < failover.duration_s <= applied.duration_s < 0.3
    assert E.FAILBACK in kinds
    assert w.sink.reconnects == 2
    value = w.agent.metrics.registry.get_sample_value(
        "netwatch_failovers_total",
        {"town": "nishiki", "from": "primary", "to": "backup", "reason": "failover"},
    )
    assert value == 1.0


def test_the_metrics_summary_carries_the_probe_counters_of_the_agents_own_metrics() -> None:
    async def body(w: World) -> None:
        await w.until(lambda: len(w.sink.summaries) >= 2, 30.0, "two metrics summaries")

    w = scenario(body)
    last = w.sink.summaries[-1]
    outcomes = last.outcomes()
    assert {(p, k) for p, k, _ in outcomes} == {
        (p, k) for p in ("primary", "backup") for k in ("icmp", "tcp", "http")
    }
    assert outcomes[("primary", "icmp", "ok")] > 0
    rounds = last.probes["rounds"]
    assert isinstance(rounds, int)
    assert 0 < rounds <= w.agent.rounds
    for (path, kind, outcome), sent in outcomes.items():
        value = w.agent.metrics.registry.get_sample_value(
            "netwatch_probe_results_total",
            {"town": "nishiki", "path": path, "kind": kind, "outcome": outcome},
        )
        assert value is not None
        assert value >= sent


def test_an_event_is_handed_over_at_the_decision_even_while_routes_take_seconds() -> None:
    kernel = FakeKernel()
    kernel.table[PREFIX] = PrefixRoute(PREFIX, "netwatch", "primary", RTPROT_NETWATCH)

    async def body(w: World) -> None:
        w.kernel.apply_delay = 5.0  # a slow `command` backend
        w.net.cut.add("primary")
        await w.until(lambda: E.FAILOVER in w.sink.kinds(), 2.0, "the failover event")
        assert w.kernel.via() == "primary"  # the routes are still being changed
        await w.until(lambda: w.kernel.via() == "backup", 10.0, "the routes")

    w = scenario(body, kernel=kernel)
    t_decided, failover = w.sink.first(E.FAILOVER)
    t_applied, _ = w.sink.first(E.ROUTES_APPLIED)
    assert failover.ts.timestamp() - w.sink.first(E.PATH_DOWN)[1].ts.timestamp() < 0.1
    assert t_applied - t_decided >= 5.0


# --- route changes that fail ------------------------------------------------------------


def test_a_failed_change_is_retried_with_back_off_and_the_selector_follows_the_kernel() -> None:
    seen: list[str | None] = []

    async def body(w: World) -> None:
        w.kernel.fail_next = 3
        w.net.cut.add("primary")
        await w.until(lambda: E.ROUTE_ERROR in w.sink.kinds(), 2.0, "the first failure")
        await w.until(lambda: w.agent.selector.active == "primary", 1.0, "the kernel's truth")
        seen.append(w.agent.selector.active)
        await w.until(lambda: w.kernel.via() == "backup", 10.0, "the change to succeed")

    w = scenario(body)
    attempts = [t for t, path, _ in w.kernel.applies if path == "backup"]
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.5
    assert gaps[1] >= 2 * 0.5 * 0.99
    assert gaps[2] >= 4 * 0.5 * 0.99
    assert seen == ["primary"]
    assert w.sink.kinds().count(E.ROUTE_ERROR) == 3
    assert w.sink.kinds().count(E.FAILOVER) == 1  # decided once, retried quietly
    assert (
        w.agent.metrics.registry.get_sample_value(
            "netwatch_route_apply_errors_total", {"town": "nishiki", "backend": "fake"}
        )
        == 3.0
    )


# --- route truth -----------------------------------------------------------------------------


def test_a_deleted_route_is_put_back_by_the_periodic_check() -> None:
    async def body(w: World) -> None:
        await w.hold(0.5, lambda: w.kernel.via() == "primary", "on the primary")
        deleted = w.now()
        del w.kernel.table[PREFIX]  # `ip route del`, with the event lost
        back = await w.until(lambda: w.kernel.via() == "primary", RECONCILE_S + 1, "reinstall")
        assert back - deleted <= RECONCILE_S + 0.1

    w = scenario(body)
    _, event = w.sink.first(E.ROUTE_REINSTALLED)
    assert event.path == "primary"
    assert "no route" in event.reason
    assert w.agent.snapshot().routes_in_sync is True


def test_a_route_event_makes_the_check_run_at_once() -> None:
    async def body(w: World) -> None:
        await w.hold(0.5, lambda: w.kernel.via() == "primary", "on the primary")
        w.kernel.table[PREFIX] = PrefixRoute(PREFIX, "netwatch", "backup", RTPROT_NETWATCH)
        changed = w.now()
        w.events.put_nowait(RouteEvent(PREFIX, removed=False))
        back = await w.until(lambda: w.kernel.via() == "primary", 1.0, "reinstall")
        assert back - changed < 0.05

    w = scenario(body)
    assert "via backup" in w.sink.first(E.ROUTE_REINSTALLED)[1].reason


def test_a_route_of_another_protocol_is_reported_and_left_alone() -> None:
    kernel = FakeKernel()
    kernel.table[PREFIX] = PrefixRoute(PREFIX, "foreign", None, 4)  # proto static

    async def body(w: World) -> None:
        await w.until(lambda: E.ROUTE_CONFLICT in w.sink.kinds(), 3.0, "the alarm")
        assert w.agent.snapshot().route_conflicts == (PREFIX,)
        await w.hold(3.0, lambda: w.kernel.table[PREFIX].owner == "foreign", "left alone")
        del w.kernel.table[PREFIX]  # the operator removes it
        await w.until(lambda: w.kernel.via() == "primary", 3.0, "netwatch's route")

    w = scenario(body, kernel=kernel)
    assert E.ROUTE_CONFLICT_CLEARED in w.sink.kinds()
    assert w.sink.kinds().count(E.ROUTE_CONFLICT) == 1  # said once


# --- honest timing ----------------------------------------------------------------------------


def test_rounds_reach_the_core_in_time_order() -> None:
    seen: dict[str, list[float]] = {"primary": [], "backup": []}
    real = PathHealth.round

    def spy(
        self: PathHealth, t: float, results: Mapping[str, Sample], *, done: float | None = None
    ) -> Transition | None:
        seen[self.name].append(t)
        return real(self, t, results, done=done)

    async def body(w: World) -> None:
        w.net.extra["primary"] = 0.2  # some probes time out, later ones answer
        await asyncio.sleep(1.0)
        w.net.extra.clear()
        w.net.cut.add("backup")
        await asyncio.sleep(1.0)

    with mock.patch.object(PathHealth, "round", spy):
        scenario(body)
    for name, times in seen.items():
        assert times, name
        assert times == sorted(times), name


def test_a_latency_step_below_the_fail_line_is_no_failover() -> None:
    async def body(w: World) -> None:
        w.net.extra["primary"] = 0.060  # 12 ms -> 72 ms
        await w.hold(60.0, lambda: w.kernel.via() == "primary", "no route change")

    w = scenario(body)
    assert E.FAILOVER not in w.sink.kinds()
    assert w.agent.health["primary"].state is not PathState.DOWN
    icmp = w.agent.paths["primary"].planner.timers["icmp"]
    assert icmp.timeout() > 0.072  # the deadline grew to the new RTT


def test_slow_kinds_are_probed_about_once_a_second_per_path() -> None:
    async def body(w: World) -> None:
        await asyncio.sleep(10.0)

    w = scenario(body)
    icmp, tcp, http = w.probers
    for prober, low, high in ((tcp, 8, 13), (http, 8, 13), (icmp, 150, 230)):
        per_path = sum(1 for t, path in prober.sent if path == "primary")
        assert low <= per_path <= high, (prober.kind, per_path)


# --- all paths down, links --------------------------------------------------------------------


def test_all_paths_down_raises_the_alarm_once_and_leaves_the_routes() -> None:
    async def body(w: World) -> None:
        w.net.cut.add("backup")
        await w.until(lambda: w.agent.health["backup"].state is PathState.DOWN, 2.0, "backup")
        w.net.cut.add("primary")
        await w.until(lambda: w.agent.selector.all_down, 2.0, "the alarm")
        await w.hold(3.0, lambda: w.kernel.via() == "primary", "routes left alone")

    w = scenario(body)
    assert w.sink.kinds().count(E.ALL_DOWN) == 1
    assert [path for _, path, _ in w.kernel.applies] == []


def test_link_down_fails_over_at_once_and_link_up_restores_tables_and_routes() -> None:
    async def body(w: World) -> None:
        await w.hold(0.5, lambda: w.kernel.via() == "primary", "on the primary")
        w.net.cut.add("backup")
        await w.until(lambda: w.agent.health["backup"].state is PathState.DOWN, 2.0, "backup down")
        # primary's link goes down: the kernel flushes its routes
        w.net.cut.add("primary")
        del w.kernel.table[PREFIX]
        w.events.put_nowait(LinkEvent("lgwan0", False))
        await w.until(lambda: w.agent.health["primary"].state is PathState.DOWN, 0.01, "DOWN")
        await asyncio.sleep(2.0)
        setups = w.kernel.setups
        w.net.cut.clear()
        up = w.now()
        w.events.put_nowait(LinkEvent("lgwan0", True))
        back = await w.until(lambda: w.kernel.via() == "primary", 2.0, "the routes back")
        assert back - up < 1.0
        assert w.kernel.setups == setups + 1

    w = scenario(body)
    assert E.ROUTE_REINSTALLED in w.sink.kinds()


# --- a misconfigured agent -------------------------------------------------------------------


def test_a_missing_source_address_is_said_once_a_minute_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = Net(no_source={"primary", "backup"})

    async def body(w: World) -> None:
        await asyncio.sleep(90.0)

    with caplog.at_level("WARNING", logger="netwatch.agent"):
        w = scenario(body, net=net)
    lines = [r.getMessage() for r in caplog.records if "not on this host" in r.getMessage()]
    # per path and kind: once at start, once a minute later
    assert 6 <= len(lines) <= 12, lines
    assert "source address 10.10.1.2 is not on this host" in lines[0]
    count = w.agent.metrics.registry.get_sample_value(
        "netwatch_probe_setup_errors_total",
        {"town": "nishiki", "path": "primary", "kind": "icmp", "cause": "no_source"},
    )
    assert count is not None
    assert count > 100


# --- the netlink backend, on a fake netlink socket ------------------------------------------------


class FakeRoute(dict[str, object]):
    def __init__(self, dst: str, gateway: str | None, proto: int, priority: int = 0) -> None:
        net, _, length = dst.partition("/")
        super().__init__(proto=proto, dst_len=int(length))
        self.attrs = {"RTA_DST": net, "RTA_GATEWAY": gateway, "RTA_PRIORITY": priority}

    def get_attr(self, name: str) -> object:
        return self.attrs.get(name)


class FakeNetlink:
    """Just what NetlinkBackend calls of AsyncIPRoute; `fail_on` makes the
    n-th main-table write fail."""

    def __init__(self, routes: list[FakeRoute]) -> None:
        self.main = {f"{r.attrs['RTA_DST']}/{r['dst_len']}": r for r in routes}
        self.writes = 0
        self.fail_on: set[int] = set()

    async def link_lookup(self, ifname: str) -> list[int]:
        return [{"lgwan0": 2, "flets0": 3}[ifname]]

    async def get_routes(self, family: int, table: int) -> AsyncIterator[FakeRoute]:
        async def it() -> AsyncIterator[FakeRoute]:
            for route in list(self.main.values()):
                yield route

        return it()

    async def route(self, command: str, **kw: object) -> None:
        dst = str(kw["dst"])
        if kw.get("table") != 254:
            return
        self.writes += 1
        if self.writes in self.fail_on:
            from pyroute2.netlink.exceptions import NetlinkError

            raise NetlinkError(101)  # ENETUNREACH
        if command == "del":
            self.main.pop(dst, None)
        else:
            self.main[dst] = FakeRoute(dst, str(kw["gateway"]), int(str(kw["proto"])))

    def close(self) -> None:
        return None


PREFIXES = ["10.200.0.0/24", "10.210.0.0/24"]


def _backend(fake: FakeNetlink) -> NetlinkBackend:
    from ipaddress import IPv4Network

    return NetlinkBackend(TOWN, [IPv4Network(p) for p in PREFIXES], netlink=fake)


def _on(path: str) -> list[FakeRoute]:
    gateway = str(TOWN.path(path).gateway)
    return [FakeRoute(p, gateway, RTPROT_NETWATCH) for p in PREFIXES]


def test_netlink_change_that_fails_part_way_is_rolled_back() -> None:
    fake = FakeNetlink(_on("primary"))
    fake.fail_on = {2}  # the second prefix fails
    backend = _backend(fake)

    async def main() -> None:
        with pytest.raises(RouteError, match="rolled back") as info:
            await backend.apply(RouteChange("nishiki", "primary", "backup", "test"))
        assert not info.value.split
        assert await backend.current() == "primary"

    asyncio.run(main())


def test_netlink_change_whose_roll_back_fails_says_split() -> None:
    fake = FakeNetlink(_on("primary"))
    fake.fail_on = {2, 3}
    backend = _backend(fake)

    async def main() -> None:
        with pytest.raises(RouteError, match="split") as info:
            await backend.apply(RouteChange("nishiki", "primary", "backup", "test"))
        assert info.value.split
        assert await backend.current() is None  # the kernel's truth: no single path

    asyncio.run(main())


def test_netlink_never_writes_over_another_protocols_route() -> None:
    static = FakeRoute(PREFIXES[0], "10.10.1.1", 4)
    fake = FakeNetlink([static, _on("primary")[1]])
    backend = _backend(fake)

    async def main() -> None:
        routes = await backend.inspect()
        assert routes is not None
        assert [r.owner for r in routes] == ["foreign", "netwatch"]
        await backend.apply(RouteChange("nishiki", "primary", "backup", "test"))
        assert fake.main[PREFIXES[0]] is static
        assert fake.main[PREFIXES[1]].get_attr("RTA_GATEWAY") == str(TOWN.path("backup").gateway)
        assert await backend.current() == "backup"  # the prefixes it may write agree

    asyncio.run(main())


def test_netlink_inspect_sees_missing_and_foreign_gateways() -> None:
    fake = FakeNetlink([FakeRoute(PREFIXES[1], "192.0.2.1", RTPROT_NETWATCH)])
    backend = _backend(fake)

    async def main() -> None:
        routes = await backend.inspect()
        assert routes == [
            PrefixRoute(PREFIXES[0], "none"),
            PrefixRoute(PREFIXES[1], "netwatch", None, RTPROT_NETWATCH),
        ]
        assert await backend.current() is None

    asyncio.run(main())


def test_dry_run_cannot_be_inspected() -> None:
    assert asyncio.run(DryRunBackend().inspect()) is None
