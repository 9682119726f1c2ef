"""The operations center's HTTP side, in process: API, metrics, pages, stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from opscenter_data import drill, event, hold, later, metrics, online, state
from prometheus_client.parser import text_string_to_metric_families

from netwatch.health.state import PathState
from netwatch.messages import DrillStatus, EventType, outcomes_json, utc_now
from netwatch.opscenter.drills import NextDrills
from netwatch.opscenter.fleet import Fleet
from netwatch.opscenter.metrics import ServiceMetrics
from netwatch.opscenter.store import Store
from netwatch.opscenter.web import Context, Link, _stream, create_app
from netwatch.topology import load

ROOT = Path(__file__).resolve().parent.parent
TOPO = load(ROOT / "topology.yaml")


class Client:
    """The app in process, over httpx's ASGI transport."""

    def __init__(self, ctx: Context) -> None:
        self.app = create_app(ctx)

    def get(self, path: str, params: dict[str, object] | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://oc") as client:
                return await client.get(path, params=params)  # type: ignore[arg-type]

        return asyncio.run(go())


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


NEXT = datetime.fromisoformat("2026-12-08T17:00:00+00:00")  # a Wednesday, 02:00 JST


def scheduled(topo: object, town: str, after: datetime) -> datetime | None:
    return NEXT if town == "nishiki" else None


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    fleet = Fleet(TOPO, stale_after=20.0)
    fleet.next_drills = NextDrills(TOPO, compute=scheduled)
    clock = Clock()
    store = Store(tmp_path / "db.sqlite3")
    c = Context(fleet, store, ServiceMetrics.create(fleet, clock=clock), Link(True), clock)
    yield c
    store.close()


def feed(ctx: Context, *msgs: object, town: str | None = None) -> None:
    for msg in msgs:
        if town is not None:
            msg = dataclasses.replace(msg, town=town)  # type: ignore[type-var]
        assert ctx.fleet.apply(msg, ctx.clock())  # type: ignore[arg-type]
        ctx.store.add(msg, ctx.clock())  # type: ignore[arg-type]
    asyncio.run(ctx.store.flush())


def on_backup(ctx: Context) -> None:
    now = utc_now()
    feed(
        ctx,
        online(at=now),
        event(at=now),
        event(EventType.ROUTES_APPLIED, at=now, duration=0.131),
        state(active="backup", at=now, primary=PathState.DOWN),
    )


def test_the_fleet_lists_every_town_in_cutover_order(ctx: Context) -> None:
    body = Client(ctx).get("/api/v1/fleet").json()
    assert [t["id"] for t in body["towns"]] == ["nishiki", "takaharu", "tsuno", "kawaminami"]
    assert [t["name"] for t in body["towns"]] == ["錦町", "高原町", "都農町", "川南町"]
    assert all(t["status"] == "unknown" for t in body["towns"])
    assert body["broker"]["connected"] is True


def test_a_town_on_its_backup(ctx: Context) -> None:
    on_backup(ctx)
    town = Client(ctx).get("/api/v1/towns/nishiki").json()
    assert town["status"] == "backup"
    assert town["active_path"] == "backup"
    assert town["paths"]["primary"]["state"] == "DOWN"
    assert town["last_failover"]["outage_s"] == 0.131
    assert town["failovers_total"] == 1


def test_a_stale_town_shows_unknown_and_keeps_what_it_said_last(ctx: Context) -> None:
    on_backup(ctx)
    ctx.clock.now += 21  # type: ignore[attr-defined]
    town = Client(ctx).get("/api/v1/towns/nishiki").json()
    assert town["status"] == "unknown"
    assert town["active_path"] is None
    assert {p["state"] for p in town["paths"].values()} == {"UNKNOWN"}
    assert town["last_known"]["active_path"] == "backup"


def test_a_town_row_shows_its_hold_its_last_drill_and_the_next(ctx: Context) -> None:
    now = utc_now()
    held = hold(at=now - timedelta(minutes=10), hours=1.0)
    last = drill(started=now - timedelta(days=1))
    feed(ctx, online(at=now), state(active="backup", at=now, hold=held), last)
    town = Client(ctx).get("/api/v1/towns/nishiki").json()
    assert town["hold"]["path"] == "backup"
    assert town["hold"]["reason"] == "LGWAN works"
    assert 3000 - 5 < town["hold"]["remaining_s"] <= 3000
    assert town["drill"] == {
        "drill_id": last.drill_id,
        "status": "passed",
        "phase": "passed",
        "started": last.to_dict()["started"],
        "ended": last.to_dict()["ended"],
        "fault": "lab",
        "reason": "",
        "outage_s": 0.4,
        "failback_outage_s": 0.2,
        "detection_s": 0.15,
        "load_passed": True,
        "report": "/var/lib/netwatch/drills/report.html",
        "ts": last.to_dict()["ts"],
        "previous": None,
    }
    assert town["next_drill"] == "2026-12-08T17:00:00.000Z"
    other = Client(ctx).get("/api/v1/towns/tsuno").json()
    assert (other["hold"], other["drill"], other["next_drill"]) == (None, None, None)


def test_a_running_drill_shows_the_lock_and_the_last_result_until_the_lock_is_stale(
    ctx: Context,
) -> None:
    now = utc_now()
    last = drill(DrillStatus.FAILED, started=now - timedelta(days=7))
    feed(ctx, last, drill(DrillStatus.RUNNING, started=now - timedelta(minutes=3)))
    row = Client(ctx).get("/api/v1/towns/nishiki").json()["drill"]
    assert (row["status"], row["phase"], row["ended"]) == ("running", "running", None)
    assert row["previous"]["status"] == "failed"
    feed(ctx, drill(DrillStatus.RUNNING, started=now - timedelta(hours=7)), town="tsuno")
    stale = Client(ctx).get("/api/v1/towns/tsuno").json()["drill"]
    assert (stale["status"], stale["phase"]) == ("running", "stale_lock")


def test_an_unknown_town_is_a_404_naming_the_towns(ctx: Context) -> None:
    answer = Client(ctx).get("/api/v1/towns/atlantis")
    assert answer.status_code == 404
    assert "nishiki" in answer.json()["detail"]


def test_events_are_filtered_by_town_and_kind_and_paged(ctx: Context) -> None:
    feed(ctx, *(event(at=later(i)) for i in range(5)), event(town="tsuno"))
    client = Client(ctx)
    page = client.get("/api/v1/events", params={"town": "nishiki", "kind": "failover", "limit": 2})
    body = page.json()
    assert [e["ts"][17:19] for e in body["events"]] == ["04", "03"]
    rest = client.get(
        "/api/v1/events", params={"town": "nishiki", "limit": 10, "cursor": body["next_cursor"]}
    ).json()
    assert [e["ts"][17:19] for e in rest["events"]] == ["02", "01", "00"]
    assert client.get("/api/v1/events", params={"kind": "gossip"}).status_code == 422
    naive = client.get("/api/v1/events", params={"since": "2026-12-01T05:00:00"})
    assert naive.status_code == 422
    assert "time zone" in naive.json()["detail"]
    aware = client.get("/api/v1/events", params={"since": "2026-12-01T05:00:03Z"}).json()
    assert len(aware["events"]) == 2


def test_the_api_is_described(ctx: Context) -> None:
    spec = Client(ctx).get("/openapi.json").json()
    assert {"/api/v1/fleet", "/api/v1/towns/{town}", "/api/v1/events"} <= set(spec["paths"])


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_fleet_metrics_say_a_town_is_on_its_backup(ctx: Context) -> None:
    on_backup(ctx)
    text = Client(ctx).get("/metrics").text
    m = families(text)
    active = {
        s[0]["path"]: s[1] for s in m["netwatch_fleet_active_path"] if s[0]["town"] == "nishiki"
    }
    assert active == {"backup": 1.0}  # one series, as the status and the path state
    status = [s[0]["status"] for s in m["netwatch_fleet_town_status"] if s[1] == 1.0]
    assert status == ["backup", "unknown", "unknown", "unknown"]
    counters = families(Client(ctx).get("/metrics/counters").text)
    moves = {
        (s[0]["from"], s[0]["to"], s[0]["reason"]): s[1]
        for s in counters["netwatch_fleet_failovers_total"]
        if s[0]["town"] == "nishiki"
    }
    assert moves == {("primary", "backup", "failover"): 1.0, ("backup", "primary", "failback"): 0.0}
    assert ({"town": "nishiki"}, 0.131) in m["netwatch_fleet_last_failover_duration_seconds"]
    assert all(n.startswith(("netwatch_fleet_", "netwatch_opscenter_")) for n in m)


def test_fleet_metrics_carry_probe_outcomes_and_route_events(ctx: Context) -> None:
    now = utc_now()
    counts = {("primary", "icmp", "ok"): 40, ("backup", "tcp", "timeout"): 1}
    feed(
        ctx,
        online(at=now),
        state(at=now),
        metrics(at=now, probes={"outcomes": outcomes_json(counts)}),
        event(EventType.ROUTE_REINSTALLED, at=now, to="primary"),
        event(EventType.ROUTE_CONFLICT, at=now, to="primary"),
    )
    m = families(Client(ctx).get("/metrics").text)
    assert "netwatch_fleet_probe_results_total" not in m  # apart, scraped less often
    p = families(Client(ctx).get("/metrics/counters").text)
    probes = {
        (s[0]["path"], s[0]["kind"], s[0]["outcome"]): s[1]
        for s in p["netwatch_fleet_probe_results_total"]
    }
    assert probes == {k: float(n) for k, n in counts.items()}
    assert set(p) == {
        "netwatch_fleet_probe_results_total",
        "netwatch_fleet_failovers_total",
        "netwatch_fleet_route_events_total",
    }
    events = {
        s[0]["event"]: s[1]
        for s in p["netwatch_fleet_route_events_total"]
        if s[0]["town"] == "nishiki"
    }
    assert events == {"route_reinstalled": 1.0, "route_conflict": 1.0, "route_error": 0.0}
    ctx.clock.now += 60  # type: ignore[attr-defined]
    stale = families(Client(ctx).get("/metrics/counters").text)
    assert not stale.get("netwatch_fleet_probe_results_total")  # unknown: no figures
    assert m["netwatch_fleet_route_conflict"] == [({"town": "nishiki"}, 1.0)]


def test_fleet_metrics_carry_drills_and_holds(ctx: Context) -> None:
    now = utc_now()
    held = hold(at=now, hours=1.0)
    passed = drill(started=now - timedelta(days=30), outage=0.41, failback=None)
    failed = drill(DrillStatus.FAILED, started=now - timedelta(days=1), outage=6.0)
    feed(ctx, online(at=now), state(active="backup", at=now, hold=held), passed, failed)
    feed(ctx, drill(DrillStatus.RUNNING, started=now - timedelta(minutes=1)))
    m = families(Client(ctx).get("/metrics").text)

    def of(name: str) -> dict[str, float]:
        return {labels["town"]: value for labels, value in m.get(name, [])}

    assert of("netwatch_fleet_held") == {"nishiki": 1.0}  # the others are unknown
    assert of("netwatch_fleet_hold_expiry_timestamp_seconds") == {"nishiki": held.until.timestamp()}
    # Towns that never drilled add no series.
    assert of("netwatch_fleet_drill_running") == {"nishiki": 1.0}
    # While one runs, the last finished drill's figures stay.
    assert m["netwatch_fleet_drill_last_status"] == [({"town": "nishiki", "status": "failed"}, 1.0)]
    assert of("netwatch_fleet_drill_last_timestamp_seconds") == {
        "nishiki": failed.ended.timestamp()  # type: ignore[union-attr]
    }
    assert of("netwatch_fleet_drill_outage_seconds") == {"nishiki": 6.0}
    assert of("netwatch_fleet_drill_failback_outage_seconds") == {"nishiki": 0.2}
    assert of("netwatch_fleet_drill_last_success_timestamp_seconds") == {
        "nishiki": passed.ended.timestamp()  # type: ignore[union-attr]
    }
    assert of("netwatch_fleet_drill_next_timestamp_seconds") == {"nishiki": NEXT.timestamp()}


def test_a_stale_town_exports_no_figures_and_no_active_path(ctx: Context) -> None:
    on_backup(ctx)
    ctx.clock.now += 60  # type: ignore[attr-defined]
    m = families(Client(ctx).get("/metrics").text)
    assert not [s for s in m.get("netwatch_fleet_path_loss_ratio", []) if s[0]["town"] == "nishiki"]
    assert not m.get("netwatch_fleet_active_path")


@pytest.mark.skipif(
    subprocess.run(["which", "promtool"], capture_output=True).returncode != 0,
    reason="promtool (Debian prometheus) missing",
)
def test_fleet_metrics_pass_promtool(ctx: Context) -> None:
    on_backup(ctx)
    counts = {("primary", "icmp", "ok"): 40}
    feed(ctx, metrics(at=utc_now(), probes={"outcomes": outcomes_json(counts)}))
    feed(ctx, event(EventType.ROUTE_CONFLICT, at=utc_now(), to="primary"))
    feed(ctx, state(active="backup", at=utc_now(), hold=hold(at=utc_now())), drill())
    for path in ("/metrics", "/metrics/counters"):
        text = Client(ctx).get(path).text
        done = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, path + ": " + done.stdout + done.stderr


def test_pages_and_their_assets_are_served_by_the_service(ctx: Context) -> None:
    client = Client(ctx)
    index = client.get("/")
    assert index.status_code == 200
    assert "運用管理センター" in index.text
    assert client.get("/towns/nishiki").status_code == 200
    assert client.get("/towns/atlantis").status_code == 404
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http://" not in index.text.replace("http://www.w3.org", "")


class FakeRequest:
    def __init__(self, polls: int) -> None:
        self.polls = polls

    async def is_disconnected(self) -> bool:
        self.polls -= 1
        return self.polls < 0


def test_the_stream_sends_every_row_then_only_changes(ctx: Context) -> None:
    async def collect(polls: int) -> list[tuple[str, dict[str, object]]]:
        out = []
        async for chunk in _stream(FakeRequest(polls), ctx):  # type: ignore[arg-type]
            if chunk.startswith("event: "):
                head, data = chunk.strip().split("\n", 1)
                out.append((head[7:], json.loads(data[6:])))
        return out

    first = asyncio.run(collect(1))
    assert [e for e, _ in first] == ["town"] * 4 + ["broker"]
    on_backup(ctx)
    assert len(asyncio.run(collect(1))) == 5  # a new stream starts with every row again
