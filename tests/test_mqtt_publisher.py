"""The publisher against a real Mosquitto on loopback: retained state, ordered
QoS 1 events with their original timestamps, outages spooled to disk and
delivered later, the Last Will, and a caller that never waits, neither for
the broker nor for a slow or failing disk."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mosquitto import Broker, Received, Recorder, broker_fixture, free_port, recording  # noqa: F401

import netwatch.mqtt.publisher as publisher_module
from netwatch.messages import (
    EventMessage,
    EventType,
    MetricsMessage,
    OnlineMessage,
    PathState,
    PathStatus,
    PathSummary,
    StateMessage,
    parse,
)
from netwatch.mqtt import BadBrokerUrl, Publisher, Spool, SpoolLockedError

ROOT = Path(__file__).resolve().parent.parent
TOWN = "nishiki"
EVENTS = f"netwatch/v1/{TOWN}/events"
STATE = f"netwatch/v1/{TOWN}/state"
ONLINE = f"netwatch/v1/{TOWN}/online"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def publisher(url: str, spool_dir: Path, **kwargs: Any) -> Publisher:
    options: dict[str, Any] = {"backoff_initial": 0.05, "backoff_max": 0.3, "timeout": 2.0}
    return Publisher(town=TOWN, url=url, spool_dir=spool_dir, **(options | kwargs))


def state(active: str = "lgwan") -> StateMessage:
    since = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
    return StateMessage(
        town=TOWN,
        ts=since + timedelta(minutes=1 if active == "lgwan" else 2),
        active_path=active,
        all_down=False,
        route_backend="dry-run",
        paths={
            "lgwan": PathStatus(state=PathState.UP, damped=False, since=since, loss_ratio=0.0),
            "flets": PathStatus(state=PathState.UP, damped=False, since=since, loss_ratio=0.01),
        },
    )


def events(n: int, *, start: int = 0) -> list[EventMessage]:
    """Events stamped an hour ago, so a re-stamped delivery would show."""
    base = datetime.now(UTC) - timedelta(hours=1)
    return [
        EventMessage(
            town=TOWN,
            ts=base + timedelta(milliseconds=i),
            event=EventType.DEGRADED,
            path="lgwan",
            reason=f"event {i}",
        )
        for i in range(start, start + n)
    ]


def delivered(messages: list[Received]) -> list[EventMessage]:
    """Events received, de-duplicated on id (delivery is at least once)."""
    seen: dict[str, EventMessage] = {}
    for m in messages:
        if m.topic == EVENTS:
            event = parse(m.topic, m.payload)
            assert isinstance(event, EventMessage)
            seen.setdefault(event.id, event)
    return list(seen.values())


def got_events(n: int) -> Callable[[list[Received]], bool]:
    return lambda messages: len(delivered(messages)) >= n


def online_values(recorder: Recorder, online_topic: str = ONLINE) -> list[bool]:
    values = []
    for m in recorder.on(online_topic):
        message = parse(m.topic, m.payload)
        assert isinstance(message, OnlineMessage)
        values.append(message.online)
    return values


async def until(condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {within}s")
        await asyncio.sleep(0.01)


def timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def nowhere() -> str:
    """A broker URL that refuses connections: events stay in the spool."""
    return f"mqtt://127.0.0.1:{free_port()}"


def on_disk(spool_dir: Path) -> int:
    """Messages in the spool's directory (renamed in only after their fsync)."""
    return len(list(spool_dir.glob("*.msg")))


def spooled_events(spool_dir: Path) -> list[EventMessage]:
    """What a fresh `Spool` finds in `spool_dir`, oldest first."""
    with Spool(spool_dir) as spool:
        return [EventMessage.from_json(m.payload) for m in spool.peek(len(spool))]


def hold_the_loop(condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
    """Poll without yielding, as a route backend that blocks the loop would."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {within}s")
        time.sleep(0.0005)


def spool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("netwatch-spool-")]


class Disk:
    """The publisher's spool syncs through this: make it slow or failing.
    `sync` runs on the writer thread."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.error: OSError | None = None

    def sync(self, fd: int) -> None:
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        os.fsync(fd)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    disk = Disk()
    monkeypatch.setattr(publisher_module, "Spool", functools.partial(Spool, sync=disk.sync))
    return disk


def test_retained_state_and_online_for_a_late_subscriber(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with publisher(broker.url, tmp_path / "spool") as pub:
            async with recording(broker, STATE) as early:
                pub.publish_state(state("lgwan"))
                pub.publish_state(state("flets"))  # only the latest matters
                await early.wait_for(
                    lambda ms: any(parse(m.topic, m.payload) == state("flets") for m in ms),
                    what="the latest state",
                )
            async with recording(broker, f"netwatch/v1/{TOWN}/+") as late:
                await late.wait_for(lambda ms: len(late.on(STATE)) >= 1, what="retained state")
                await late.wait_for(lambda ms: len(late.on(ONLINE)) >= 1, what="retained online")
                (kept,) = late.on(STATE)
                assert kept.retain
                assert kept.qos == 1
                assert parse(kept.topic, kept.payload) == state("flets")
                assert late.on(ONLINE)[0].retain
                assert online_values(late) == [True]
            assert pub.connected
            assert pub.connects == 1

    run(scenario())


def test_events_arrive_in_order_at_qos1_with_original_timestamps(
    broker: Broker, tmp_path: Path
) -> None:
    sent = events(20)

    async def scenario() -> None:
        async with recording(broker, EVENTS) as rec, publisher(broker.url, tmp_path) as pub:
            for event in sent:
                pub.publish_event(event)
            await rec.wait_for(got_events(20), what="20 events")
            await until(lambda: pub.spooled == 0, "spool empty")
            assert pub.published_events == 20
            assert all(m.qos == 1 and not m.retain for m in rec.messages)
            assert delivered(rec.messages) == sent  # same ids, order and timestamps

    run(scenario())


def test_outage_is_spooled_without_blocking_then_delivered_in_order(
    broker: Broker, tmp_path: Path
) -> None:
    before, during = events(2), events(5, start=2)

    async def scenario() -> None:
        async with (
            recording(broker, f"netwatch/v1/{TOWN}/+") as rec,
            publisher(broker.url, tmp_path / "spool") as pub,
        ):
            pub.publish_state(state())
            for event in before:
                pub.publish_event(event)
            await rec.wait_for(got_events(2), what="events before the outage")
            await until(lambda: pub.spooled == 0, "the delivered events acknowledged")

            broker.stop()
            # Publishing straight away: the publisher may not know yet.
            _, took = timed(lambda: pub.publish_event(during[0]))
            assert took < 0.05
            await until(lambda: not pub.connected, "disconnected")
            for n, event in enumerate(during[1:], start=2):
                _, took = timed(lambda event=event: pub.publish_event(event))  # type: ignore[misc]
                assert took < 0.05, f"publish_event took {took:.3f}s while the broker was down"
                assert pub.spooled + pub.pending_writes == n
            await until(lambda: pub.spooled == 5, "the outage's events on disk")
            _, took = timed(lambda: pub.publish_state(state("flets")))
            assert took < 0.05
            assert pub.last_error is not None

            broker.start()
            await rec.wait_for(got_events(7), within=8, what="the spooled events")
            await until(lambda: pub.spooled == 0, "spool empty")
            assert delivered(rec.messages) == before + during
            assert pub.connects == 2
            # The latest state, given while offline, went out on reconnect.
            await rec.wait_for(
                lambda ms: any(
                    m.topic == STATE and parse(m.topic, m.payload) == state("flets") for m in ms
                ),
                what="the state given during the outage",
            )

    run(scenario())


def test_events_left_in_the_spool_are_sent_by_the_next_publisher(
    broker: Broker, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    first, second = events(3), events(1, start=3)
    broker.stop()

    async def offline_run() -> list[int | None]:
        async with publisher(broker.url, spool) as pub:
            seqs = await asyncio.gather(*[pub.publish_event(event) for event in first])
            assert pub.spooled == 3
            await asyncio.sleep(0.1)  # let it try (and fail) to connect
        return seqs

    seqs, took = timed(lambda: run(offline_run()))
    assert took < 1.5, "stopping while the broker is down must not hang"
    assert seqs == [1, 2, 3]
    broker.start()

    async def next_run() -> None:
        async with recording(broker, EVENTS) as rec, publisher(broker.url, spool) as pub:
            assert pub.spooled == 3
            assert await pub.publish_event(second[0]) == 4  # numbering goes on
            await rec.wait_for(got_events(4), what="the previous run's events")
            assert delivered(rec.messages) == first + second
            await until(lambda: pub.spooled == 0, "spool empty")

    run(next_run())


def test_full_spool_drops_the_oldest_and_counts_them(broker: Broker, tmp_path: Path) -> None:
    sent = events(5)

    async def scenario() -> None:
        # Subscribed before the outage: the broker keeps the session across it.
        async with recording(broker, EVENTS) as rec:
            broker.stop()
            async with publisher(broker.url, tmp_path, spool_max_messages=3) as pub:
                await asyncio.gather(*[pub.publish_event(event) for event in sent])
                assert (pub.spooled, pub.spool_dropped) == (3, 2)
                broker.start()
                await until(lambda: pub.spooled == 0 and pub.published_events == 3, "drained")
                await rec.wait_for(got_events(3), what="the 3 newest events")
                assert delivered(rec.messages) == sent[2:]
                assert pub.spool_dropped == 2

    run(scenario())


def test_metrics_are_qos0_and_dropped_while_offline(broker: Broker, tmp_path: Path) -> None:
    metrics = MetricsMessage(
        town=TOWN, paths={"lgwan": PathSummary(state=PathState.UP)}, probes={"sent": 3}
    )

    async def scenario() -> None:
        async with recording(broker, f"netwatch/v1/{TOWN}/metrics") as rec:
            async with publisher(broker.url, tmp_path) as pub:
                if not pub.connected:  # not yet: dropped, not queued
                    assert pub.publish_metrics(metrics) is False
                    assert pub.metrics_dropped == 1
                await until(lambda: pub.connected, "connected")
                assert pub.publish_metrics(metrics) is True
                await rec.wait_for(lambda ms: len(ms) >= 1, what="metrics")
            (received,) = rec.messages
            assert received.qos == 0
            assert parse(received.topic, received.payload) == metrics

    run(scenario())


def test_clean_exit_publishes_online_false(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with recording(broker, ONLINE) as rec:
            async with publisher(broker.url, tmp_path) as pub:
                await rec.wait_for(lambda _: online_values(rec) == [True], what="online=true")
                assert pub.connected
            await rec.wait_for(lambda _: online_values(rec) == [True, False], what="online=false")
            assert not pub.connected
        async with recording(broker, ONLINE) as late:  # and it is retained
            await late.wait_for(lambda ms: len(ms) == 1, what="retained online")
            assert online_values(late) == [False]
            assert late.messages[0].retain

    run(scenario())


CHILD = """
import asyncio, sys
from netwatch.mqtt import Publisher

async def main() -> None:
    town, url, spool, keepalive = sys.argv[1:5]
    async with Publisher(town=town, url=url, spool_dir=spool, keepalive=int(keepalive)) as pub:
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.parametrize(
    "how",
    [signal.SIGKILL, pytest.param(signal.SIGSTOP, marks=pytest.mark.slow)],
    ids=["SIGKILL", "SIGSTOP"],
)
def test_last_will_sets_online_false_when_the_agent_dies(
    broker: Broker, tmp_path: Path, how: signal.Signals
) -> None:
    """SIGKILL closes the socket, and the broker notices at once.  SIGSTOP
    leaves it open and silent, so only the keepalive can tell: after 1.5 x
    keepalive, but Mosquitto 2.0 scans keepalives only every 5-6 s
    (keepalive.c: ``last_keepalive_check + 5 < now``), hence the slack."""
    keepalive = 1
    limit = keepalive * 1.5 + (1.0 if how == signal.SIGKILL else 6.5)
    town = "tsuno"
    online_topic = f"netwatch/v1/{town}/online"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [town, broker.url, str(tmp_path / "spool"), str(keepalive)]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, cwd=ROOT)

    async def scenario() -> float:
        async with recording(broker, online_topic) as rec:
            await rec.wait_for(
                lambda _: online_values(rec, online_topic)[-1:] == [True],
                within=10,
                what="the child online",
            )
            os.kill(child.pid, how)
            start = time.monotonic()
            await rec.wait_for(
                lambda _: online_values(rec, online_topic)[-1:] == [False],
                within=limit + 1,
                what="the Last Will",
            )
            took = time.monotonic() - start
        async with recording(broker, online_topic) as late:
            await late.wait_for(lambda ms: len(ms) == 1, what="retained will")
            assert late.messages[0].retain
            assert online_values(late, online_topic) == [False]
        return took

    try:
        took = run(scenario())
    finally:
        child.kill()
        child.wait()
    assert took < limit


def test_unreachable_broker_never_blocks_the_caller(tmp_path: Path) -> None:
    async def scenario() -> None:
        # A listener that accepts but never answers: CONNACK times out.
        accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        server = await asyncio.start_server(lambda r, w: accepted.append((r, w)), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with publisher(f"mqtt://127.0.0.1:{port}", tmp_path, timeout=0.3) as pub:
                for event in events(3):
                    _, took = timed(lambda event=event: pub.publish_event(event))  # type: ignore[misc]
                    assert took < 0.05
                pub.publish_state(state())
                await until(lambda: pub.last_error is not None, "an error reported")
                assert "timed out" in (pub.last_error or "")
                assert not pub.connected
                await until(lambda: pub.spooled == 3, "3 events on disk")
            # Each abandoned attempt was closed, not left to linger (aiomqtt
            # leaves the socket open after a CONNACK timeout).
            for reader, _ in accepted:
                assert (await asyncio.wait_for(reader.read(), 1.0)).startswith(b"\x10")  # CONNECT
        finally:
            for _, writer in accepted:
                writer.close()
            server.close()
            await server.wait_closed()

    _, took = timed(lambda: run(scenario()))
    assert took < 3


def test_misuse_is_refused(broker: Broker, tmp_path: Path) -> None:
    with pytest.raises(BadBrokerUrl, match="mqtts://HOST:8883"):
        Publisher(town=TOWN, url="tcp://x:1", spool_dir=tmp_path)
    with pytest.raises(BadBrokerUrl):
        Publisher(town=TOWN, url="mqtt://x:99999", spool_dir=tmp_path)
    pub = publisher(broker.url, tmp_path)
    with pytest.raises(RuntimeError, match="not running"):
        pub.publish_event(events(1)[0])

    async def scenario() -> None:
        async with pub:
            with pytest.raises(ValueError, match="town 'tsuno'"):
                pub.publish_state(
                    StateMessage(
                        town="tsuno", active_path=None, all_down=True, route_backend="x", paths={}
                    )
                )
            with pytest.raises(SpoolLockedError):
                async with publisher(broker.url, tmp_path):
                    pass

    run(scenario())


def test_reconnect_after_a_route_change_loses_no_event(broker: Broker, tmp_path: Path) -> None:
    # The agent calls reconnect() after moving the routes: the session made
    # over the old path is dropped at once and a new one carries on.
    sent = events(30)

    async def scenario() -> None:
        async with recording(broker, EVENTS) as rec, publisher(broker.url, tmp_path) as pub:
            await until(lambda: pub.connected, "connected")
            for i, event in enumerate(sent):
                pub.publish_event(event)
                if i == 10:
                    pub.reconnect()
            await until(lambda: pub.connects == 2, "a second connection")
            await rec.wait_for(got_events(30), what="30 events")
            await until(lambda: pub.spooled == 0, "spool empty")
            # at least once: an event in flight when the session was dropped
            # may come twice; every one arrives, in order of first arrival
            seen: list[EventMessage] = []
            for event in delivered(rec.messages):
                if event not in seen:
                    seen.append(event)
            assert seen == sent
        pub.reconnect()  # not running: harmless

    run(scenario())


def test_a_state_replaced_faster_than_acknowledged_never_holds_events_back(
    broker: Broker, tmp_path: Path
) -> None:
    # The agent refreshes its state often; events must still go out.
    sent = events(5)

    async def scenario() -> None:
        async with recording(broker, EVENTS) as rec, publisher(broker.url, tmp_path) as pub:
            await until(lambda: pub.connected, "connected")
            for event in sent:
                pub.publish_event(event)
            deadline = time.monotonic() + 5.0
            while len(rec.messages) < 5 and time.monotonic() < deadline:
                pub.publish_state(state("flets" if len(rec.messages) % 2 else "lgwan"))
                await asyncio.sleep(0)  # a new state on every turn of the loop
            assert delivered(rec.messages) == sent

    run(scenario())


def test_publish_event_never_waits_for_a_slow_disk(disk: Disk, tmp_path: Path) -> None:
    disk.delay = 0.3  # per fsync; an event takes two
    spool_dir = tmp_path / "spool"
    sent = events(2)

    async def scenario() -> float:
        async with publisher(nowhere(), spool_dir) as pub:
            calls = [timed(lambda event=event: pub.publish_event(event)) for event in sent]  # type: ignore[misc]
            slowest = max(took for _, took in calls)
            assert slowest < 0.05, f"publish_event took {slowest:.3f}s"
            assert (pub.pending_writes, pub.spooled) == (2, 0)
            # The loop stays free for decisions and route changes meanwhile.
            lag = 0.0
            while pub.pending_writes:
                start = time.perf_counter()
                await asyncio.sleep(0.01)
                lag = max(lag, time.perf_counter() - start - 0.01)
            assert lag < 0.05, f"the loop stalled {lag:.3f}s while the disk was slow"
            assert [await future for future, _ in calls] == [1, 2]
            assert (pub.pending_writes, pub.spooled) == (0, 2)
            assert on_disk(spool_dir) == 2
        return slowest

    slowest = run(scenario())
    print(f"\npublish_event with a 0.3 s fsync: slowest call {slowest * 1e3:.3f} ms")
    assert spooled_events(spool_dir) == sent


def test_an_event_is_on_disk_soon_after_it_is_given(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    sent = events(10)

    async def scenario() -> tuple[float, float]:
        async with publisher(nowhere(), spool_dir) as pub:
            # The loop free: until its future says stored (both fsyncs done).
            free = 0.0
            for n, event in enumerate(sent[:5], start=1):
                start = time.perf_counter()
                assert await asyncio.wait_for(pub.publish_event(event), 5) == n
                free = max(free, time.perf_counter() - start)
                assert on_disk(spool_dir) == pub.spooled == n
            # The loop blocked, as by a route backend that does not yield: the
            # event reaches the disk all the same.
            blocked = 0.0
            for n, event in enumerate(sent[5:], start=6):
                start = time.perf_counter()
                pub.publish_event(event)
                hold_the_loop(lambda n=n: on_disk(spool_dir) >= n, f"event {n} on disk")  # type: ignore[misc]
                blocked = max(blocked, time.perf_counter() - start)
            await until(lambda: pub.spooled == 10, "all stored")
        return free, blocked

    free, blocked = run(scenario())
    print(
        f"\ntime to disk, normal disk: {free * 1e3:.1f} ms (loop free, future done), "
        f"{blocked * 1e3:.1f} ms (loop blocked, file in place); worst of 5 each"
    )
    assert free < 1.0  # 0.1 s is the target; CI machines are noisy
    assert blocked < 1.0
    assert spooled_events(spool_dir) == sent


def test_order_is_kept_across_many_events(broker: Broker, tmp_path: Path) -> None:
    sent = events(200)

    async def scenario() -> None:
        async with recording(broker, EVENTS) as rec, publisher(broker.url, tmp_path) as pub:
            await until(lambda: pub.connected, "connected")
            for i, event in enumerate(sent):
                pub.publish_event(event)
                if i % 7 == 0:
                    await asyncio.sleep(0)  # let the sender's peeks and acks interleave
            await rec.wait_for(got_events(200), within=30, what="200 events")
            await until(lambda: pub.spooled == pub.pending_writes == 0, "spool empty")
            assert delivered(rec.messages) == sent
            assert len(rec.messages) == 200  # no reconnect here, so no duplicate
            assert pub.published_events == 200

    run(scenario(), timeout=45)


def test_events_given_just_before_exit_are_on_disk_when_it_returns(
    disk: Disk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk.delay = 0.05  # 10 events: about 1 s to drain, over the stop timeout
    spool_dir = tmp_path / "spool"
    sent = events(10)

    async def scenario() -> None:
        pub = publisher(nowhere(), spool_dir, timeout=0.3)
        async with pub:
            futures = [pub.publish_event(event) for event in sent]
            assert pub.pending_writes == 10
        assert [future.result() for future in futures] == list(range(1, 11))
        assert (pub.pending_writes, pub.spooled) == (0, 10)
        assert not spool_threads()
        with pytest.raises(RuntimeError, match="not running"):
            pub.publish_event(sent[0])

    run(scenario())
    assert spooled_events(spool_dir) == sent
    assert any("still writing" in r.getMessage() for r in caplog.records)


def test_a_failing_disk_loses_events_counts_them_logs_once_and_recovers(
    broker: Broker, disk: Disk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, eio, enospc, later = (
        events(1),
        events(3, start=1),
        events(2, start=4),
        events(2, start=6),
    )

    def disk_errors() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == publisher_module.__name__ and r.levelno >= logging.ERROR
        ]

    async def scenario() -> None:
        async with recording(broker, EVENTS) as rec, publisher(broker.url, tmp_path) as pub:
            assert await pub.publish_event(first[0]) == 1
            await rec.wait_for(got_events(1), what="the first event")
            await until(lambda: pub.spooled == 0, "the first event acknowledged")

            disk.error = OSError(errno.EIO, os.strerror(errno.EIO))
            assert await asyncio.gather(*[pub.publish_event(e) for e in eio]) == [None] * 3
            assert pub.events_lost == 3
            assert (pub.pending_writes, pub.spooled) == (0, 0)
            assert "Input/output error" in (pub.last_error or "")
            (logged,) = disk_errors()  # once, not per event
            assert eio[0].id in logged.getMessage()

            disk.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # another error
            assert await asyncio.gather(*[pub.publish_event(e) for e in enospc]) == [None] * 2
            assert pub.events_lost == 5
            assert len(disk_errors()) == 2
            assert "No space left on device" in (pub.last_error or "")
            assert len(spool_threads()) == 1  # the writer lives on

            disk.error = None
            assert await asyncio.gather(*[pub.publish_event(e) for e in later]) == [2, 3]
            await rec.wait_for(got_events(3), what="the events after the fault")
            assert delivered(rec.messages) == first + later
            assert pub.events_lost == 5
            assert pub.connects == 1  # the session never noticed
            assert any("takes events again" in r.getMessage() for r in caplog.records)

    run(scenario())
    assert not list(tmp_path.glob("*.tmp"))
