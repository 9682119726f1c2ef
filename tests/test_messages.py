"""The MQTT contract: round trips, topic names, and located validation errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from netwatch import messages as m
from netwatch.messages import (
    EventMessage,
    EventType,
    Kind,
    MessageError,
    MetricsMessage,
    OnlineMessage,
    PathState,
    PathStatus,
    PathSummary,
    StateMessage,
    format_ts,
    parse,
    parse_ts,
    split_topic,
    topic,
    topic_filter,
)

T0 = datetime(2026, 11, 26, 5, 30, 0, 123456, tzinfo=UTC)


def state() -> StateMessage:
    return StateMessage(
        town="nishiki",
        ts=T0,
        active_path="lgwan",
        all_down=False,
        route_backend="netlink",
        paths={
            "lgwan": PathStatus(
                state=PathState.UP,
                damped=False,
                loss_ratio=0.0,
                rtt_p50_s=0.012,
                rtt_p95_s=0.020,
                jitter_s=0.002,
                since=T0 - timedelta(hours=1),
            ),
            "flets": PathStatus(state=PathState.UNKNOWN, damped=True, since=T0),
        },
    )


def event() -> EventMessage:
    return EventMessage(
        town="nishiki",
        ts=T0,
        event=EventType.FAILOVER,
        from_path="lgwan",
        to_path="flets",
        reason="lgwan loss 100% for 3 probes",
        duration_s=1.25,
        details={"probes": [1, 2, 3], "note": "錦町"},
    )


def metrics() -> MetricsMessage:
    return MetricsMessage(
        town="tsuno",
        ts=T0,
        paths={"lgwan": PathSummary(state=PathState.DEGRADED, loss_ratio=0.05, rtt_p50_s=0.03)},
        probes={"sent": 120, "lost": 6, "by_kind": {"icmp": 60, "tcp": 60}},
    )


ALL = [state(), event(), metrics(), OnlineMessage(town="kawaminami", ts=T0, online=False)]


@pytest.mark.parametrize("message", ALL, ids=lambda m: m.KIND.value)
def test_round_trip_through_parse(message: Any) -> None:
    payload = message.to_json()
    decoded = json.loads(payload)
    assert decoded["schema"] == 1
    assert decoded["kind"] == message.KIND.value
    assert decoded["ts"] == "2026-11-26T05:30:00.123Z"
    assert parse(message.topic, payload) == message
    assert type(message).from_dict(decoded) == message


def test_ts_is_utc_milliseconds_with_z() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert format_ts(datetime(2026, 11, 26, 14, 30, 0, 999999, tzinfo=tokyo)) == (
        "2026-11-26T05:30:00.999Z"
    )
    assert parse_ts("2026-11-26T05:30:00.123Z") == T0.replace(microsecond=123000)
    # Stored at wire precision, so a message equals itself after a round trip.
    assert state().ts == T0.replace(microsecond=123000)
    for bad in (
        "2026-11-26T05:30:00Z",
        "2026-11-26T05:30:00.123+00:00",
        "2026-13-01T00:00:00.000Z",
    ):
        with pytest.raises(MessageError):
            parse_ts(bad)
    with pytest.raises(MessageError, match="timezone-aware"):
        OnlineMessage(town="tsuno", online=True, ts=datetime(2026, 1, 1))


def test_event_defaults_are_unique_and_now() -> None:
    a = EventMessage(town="tsuno", event=EventType.AGENT_START, reason="start")
    b = EventMessage(town="tsuno", event=EventType.AGENT_START, reason="start")
    assert a.id != b.id
    assert abs((datetime.now(UTC) - a.ts).total_seconds()) < 5
    payload = json.loads(a.to_json())
    assert payload["path"] is None
    assert payload["details"] is None


def test_topics() -> None:
    assert topic("nishiki", Kind.STATE) == "netwatch/v1/nishiki/state"
    assert topic("nishiki", Kind.EVENT) == "netwatch/v1/nishiki/events"
    assert topic("nishiki", Kind.METRICS) == "netwatch/v1/nishiki/metrics"
    assert topic("nishiki", Kind.ONLINE) == "netwatch/v1/nishiki/online"
    assert topic_filter() == "netwatch/v1/+/+"
    assert topic_filter("tsuno") == "netwatch/v1/tsuno/+"
    assert split_topic("netwatch/v1/takaharu/events") == ("takaharu", Kind.EVENT)
    assert event().topic == "netwatch/v1/nishiki/events"
    for bad in ("netwatch/v1/nishiki/event", "netwatch/v2/nishiki/state", "netwatch/v1/a/b/state"):
        with pytest.raises(MessageError, match="expected netwatch/v1/<town>/"):
            split_topic(bad)
    with pytest.raises(MessageError, match="town"):
        topic("Nishiki/#", Kind.STATE)


def mutate(message: Any, change: Any) -> bytes:
    data = json.loads(message.to_json())
    change(data)
    return json.dumps(data).encode()


STATE_TOPIC = "netwatch/v1/nishiki/state"
EVENT_TOPIC = "netwatch/v1/nishiki/events"


@pytest.mark.parametrize(
    ("topic_name", "payload", "message"),
    [
        (STATE_TOPIC, b"{not json", "payload is not JSON"),
        (STATE_TOPIC, b"[1, 2]", "expected a JSON object, got list"),
        (STATE_TOPIC, mutate(state(), lambda d: d.update(schema=2)), "schema: expected 1, got 2"),
        (STATE_TOPIC, mutate(state(), lambda d: d.update(schema=True)), "schema: expected 1"),
        (STATE_TOPIC, mutate(state(), lambda d: d.update(kind="event")), "kind: expected 'state'"),
        (STATE_TOPIC, mutate(state(), lambda d: d.pop("all_down")), "all_down: missing"),
        (STATE_TOPIC, mutate(state(), lambda d: d.update(colour="red")), "colour: unknown key"),
        (STATE_TOPIC, mutate(state(), lambda d: d.update(town="tsuno")), "town: 'tsuno' does not"),
        (STATE_TOPIC, mutate(state(), lambda d: d.update(ts="yesterday")), "ts: expected a UTC"),
        (
            STATE_TOPIC,
            mutate(state(), lambda d: d["paths"]["lgwan"].update(loss_ratio=1.5)),
            "paths.lgwan.loss_ratio: expected a number in [0, 1], got 1.5",
        ),
        (
            STATE_TOPIC,
            mutate(state(), lambda d: d["paths"]["lgwan"].update(state="SIDEWAYS")),
            "paths.lgwan.state: expected one of UP, DEGRADED, DOWN, UNKNOWN",
        ),
        (
            STATE_TOPIC,
            mutate(state(), lambda d: d["paths"]["flets"].update(rtt_p50_s="fast")),
            "paths.flets.rtt_p50_s: expected a number or null",
        ),
        (
            STATE_TOPIC,
            mutate(state(), lambda d: d["paths"]["flets"].update(damped=1)),
            "paths.flets.damped: expected true or false, got 1",
        ),
        (
            STATE_TOPIC,
            mutate(state(), lambda d: d["paths"]["flets"].pop("since")),
            "paths.flets.since: missing",
        ),
        (
            STATE_TOPIC,
            mutate(state(), lambda d: d.update(active_path="adsl")),
            "active_path: 'adsl' is not one of the paths (lgwan, flets)",
        ),
        (EVENT_TOPIC, mutate(event(), lambda d: d.update(id="42")), "id: expected a UUID"),
        (EVENT_TOPIC, mutate(event(), lambda d: d.update(event="reboot")), "event: expected one"),
        (
            EVENT_TOPIC,
            mutate(event(), lambda d: d.update(to_path=None)),
            "to_path: a failover event needs a to_path",
        ),
        (
            EVENT_TOPIC,
            mutate(event(), lambda d: d.update(duration_s=-1)),
            "duration_s: expected a finite number >= 0",
        ),
        (EVENT_TOPIC, mutate(event(), lambda d: d.update(details=[1])), "details: expected a JSON"),
        (
            EVENT_TOPIC,
            mutate(event(), lambda d: d.update(to_path="B/C")),
            "to_path: expected an id",
        ),
    ],
)
def test_parse_errors_name_topic_and_key(topic_name: str, payload: bytes, message: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse(topic_name, payload)
    assert str(caught.value).startswith(topic_name + ": ")
    assert message in str(caught.value)
    assert caught.value.topic == topic_name


def test_construction_validates_too() -> None:
    with pytest.raises(MessageError, match="path: a degraded event needs a path"):
        EventMessage(town="tsuno", event=EventType.DEGRADED, reason="loss")
    with pytest.raises(MessageError, match="jitter_s: expected a finite number"):
        PathSummary(state=PathState.UP, jitter_s=float("inf"))
    with pytest.raises(MessageError, match="state: expected a PathState"):
        PathSummary(state="UP")  # type: ignore[arg-type]
    with pytest.raises(MessageError, match=r"paths\.lgwan: expected a PathStatus"):
        StateMessage(
            town="tsuno",
            active_path=None,
            all_down=True,
            route_backend="dry-run",
            paths={"lgwan": PathSummary(state=PathState.DOWN)},  # type: ignore[dict-item]
        )
    with pytest.raises(MessageError, match="probes: not representable as JSON"):
        MetricsMessage(town="tsuno", paths={}, probes={"when": datetime.now(UTC)})  # type: ignore[dict-item]


def test_metrics_summarise_a_full_status() -> None:
    full = state().paths["lgwan"]
    summary = json.loads(MetricsMessage(town="nishiki", paths={"lgwan": full}).to_json())
    assert set(summary["paths"]["lgwan"]) == {
        "state",
        "loss_ratio",
        "rtt_p50_s",
        "rtt_p95_s",
        "jitter_s",
    }


def test_probe_outcomes_round_trip_and_what_is_not_their_shape_is_left_out() -> None:
    counts = {("primary", "icmp", "ok"): 7, ("backup", "http", "timeout"): 1}
    paths = {
        "primary": m.PathSummary(state=PathState.UP),
        "backup": m.PathSummary(state=PathState.UP),
    }
    sent = m.MetricsMessage(
        town="nishiki", paths=paths, probes={"outcomes": m.outcomes_json(counts)}
    )
    got = m.parse(sent.topic, sent.to_json())
    assert isinstance(got, m.MetricsMessage)
    assert got.outcomes() == {k: float(n) for k, n in counts.items()}
    odd: dict[str, m.JSON] = {
        "outcomes": {
            "primary": {"icmp": {"ok": 3, "Bad Label": 1, "late": -1, "lost": True}},
            "elsewhere": {"icmp": {"ok": 9}},  # not a path of the message
            "backup": "many",
        }
    }
    assert m.MetricsMessage(town="nishiki", paths=paths, probes=odd).outcomes() == {
        ("primary", "icmp", "ok"): 3.0
    }
    assert m.MetricsMessage(town="nishiki", paths=paths, probes={"outcomes": 5}).outcomes() == {}
