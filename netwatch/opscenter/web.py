"""The operations center over HTTP: the status page, the JSON API, the live
stream and the fleet's /metrics, as one ASGI app (FastAPI).

    /                         status page: every town, in cutover order
    /towns/{town}             one town: event timeline, RTT and loss charts
    /static/...               the pages' own script and style (no internet)
    /metrics                  netwatch_fleet_* and netwatch_opscenter_*
    /metrics/counters         the fleet's counters: failovers, route events, probe outcomes
    /api/v1/fleet             every town's row
    /api/v1/towns/{town}      one town's row
    /api/v1/towns/{town}/samples?hours=
    /api/v1/events?town=&kind=&since=&until=&limit=&cursor=   newest first, paged
    /api/v1/stream            server-sent events: a town's row whenever it changes
    /openapi.json, /docs      the API described
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from netwatch.messages import EventType, HoldStatus, format_ts, utc_now
from netwatch.opscenter import drills
from netwatch.opscenter.fleet import Fleet, Status, TownView
from netwatch.opscenter.metrics import ServiceMetrics
from netwatch.opscenter.store import Store

STREAM_CHECK_S = 0.25  # how often a live stream looks for changed rows
STREAM_KEEPALIVE_S = 15.0
MAX_SAMPLE_HOURS = 48.0
PAGES = resources.files("netwatch.opscenter") / "page"


@dataclass
class Link:
    """The service's view of its broker, for the page's banner and the API."""

    connected: bool = False
    since: float | None = None  # when it connected or was lost
    last_error: str | None = None


@dataclass
class Context:
    fleet: Fleet
    store: Store
    metrics: ServiceMetrics
    link: Link
    clock: Callable[[], float] = time.time


def town_row(view: TownView, ctx: Context) -> dict[str, Any]:
    """One town as the page and the API show it.  When the town is unknown or
    offline, `active_path` and `hold` are null and every path's state
    UNKNOWN; what it said last stays under `last_known`.  `drill` is the
    town's last drill (or the one running), `next_drill` when the
    topology's schedule runs the next, `hold` an operator's maintenance
    hold (`remaining_s` until it expires)."""
    now, wall = ctx.clock(), utc_now()
    status = view.status(now, ctx.fleet.stale_after)
    known = status not in (Status.UNKNOWN, Status.OFFLINE)
    paths = {}
    for path in view.town.paths_by_preference:
        p = view.paths.get(path.name)
        paths[path.name] = {
            "role": path.role,
            "state": p.state.wire if p is not None and known else "UNKNOWN",
            "loss_ratio": p.loss_ratio if p is not None and known else None,
            "rtt_p50_s": p.rtt_p50_s if p is not None and known else None,
            "rtt_p95_s": p.rtt_p95_s if p is not None and known else None,
            "jitter_s": p.jitter_s if p is not None and known else None,
            "damped": bool(p and p.damped and known),
            "since": format_ts(p.since) if p is not None and p.since and known else None,
        }
    last = view.last_failover
    age = view.age(now)
    return {
        "id": view.id,
        "name": view.town.name,
        "name_en": view.id.capitalize(),
        "cutover_week": view.town.cutover_week,
        "status": status.value,
        "alarm": status.alarming,
        "online": view.online,
        "stale": view.stale(now, ctx.fleet.stale_after),
        "last_message_age_s": None if age is None else round(age, 3),
        "primary": view.primary,
        "active_path": view.active_path if known else None,
        "all_down": view.all_down if known else None,
        "paths": paths,
        "on_backup_s": view.on_backup_s(wall) if known else None,
        "backup_since": format_ts(view.backup_since) if view.backup_since and known else None,
        "last_failover": None
        if last is None
        else {
            "at": format_ts(last.at),
            "from": last.from_path,
            "to": last.to_path,
            "kind": last.kind,
            "reason": last.reason,
            "outage_s": last.outage_s,
        },
        "failovers_total": sum(view.failovers.values()),
        "hold": _hold(view.hold, wall) if known else None,
        "drill": _drill(view, wall),
        "next_drill": _ts(ctx.fleet.next_drills.of(view.id, wall)),
        "acceptance": view.acceptance.to_dict() if view.acceptance else None,
        "last_known": {
            "at": format_ts(view.state_ts) if view.state_ts else None,
            "active_path": view.active_path,
            "route_backend": view.route_backend,
            "hold": _hold(view.hold, wall),
        },
        "version": view.version,
    }


def _ts(when: datetime | None) -> str | None:
    return None if when is None else format_ts(when)


def _hold(hold: HoldStatus | None, wall: datetime) -> dict[str, Any] | None:
    if hold is None:
        return None
    return {
        "path": hold.path,
        "reason": hold.reason,
        "by": hold.by,
        "since": format_ts(hold.since),
        "until": format_ts(hold.until),
        "remaining_s": max(0.0, round((hold.until - wall).total_seconds(), 3)),
    }


def _drill(view: TownView, wall: datetime) -> dict[str, Any] | None:
    """The drill topic's newest message; `phase` is its status, or
    stale_lock for a running drill too old to believe.  While one runs,
    `previous` is the last that ended."""
    drill, phase = view.drill, view.drill_phase(wall)
    if drill is None or phase is None:
        return None
    out: dict[str, Any] = {
        "drill_id": drill.drill_id,
        "status": drill.status.value,
        "phase": phase.value,
        "started": format_ts(drill.started),
        "ended": _ts(drill.ended),
        "fault": drill.fault,
        "reason": drill.reason,
        "outage_s": drill.outage_s,
        "failback_outage_s": drill.failback_outage_s,
        "detection_s": drill.detection_s,
        "load_passed": drill.load_passed,
        "report": drill.report,
        "ts": format_ts(drill.ts),
    }
    previous = view.finished_drill
    if previous is not None and previous is not drill:
        out["previous"] = {
            "drill_id": previous.drill_id,
            "status": previous.status.value,
            "ended": format_ts(drills.ended_at(previous)),
            "outage_s": previous.outage_s,
        }
    else:
        out["previous"] = None
    return out


def broker_json(ctx: Context) -> dict[str, Any]:
    link = ctx.link
    return {
        "connected": link.connected,
        "last_error": link.last_error,
        "since": None if link.since is None else round(ctx.clock() - link.since, 1),
    }


def fleet_json(ctx: Context) -> dict[str, Any]:
    return {
        "generated_at": format_ts(utc_now()),
        "stale_after_s": ctx.fleet.stale_after,
        "broker": broker_json(ctx),
        "towns": [town_row(view, ctx) for view in ctx.fleet],
    }


def create_app(ctx: Context) -> FastAPI:
    # Every handler that reads the fleet is `async def`: it runs on the event
    # loop, the one thread that applies messages, so it reads a consistent
    # fleet (a sync handler would run in a worker thread and could iterate a
    # town's dicts while a message changes them). A /metrics scrape of
    # 1,741 towns holds the loop for ~0.4 s: shorter than in a worker, where
    # it contends for the GIL with the ingest (BENCHMARKS.md).
    app = FastAPI(
        title="netwatch operations center",
        version="1",
        description="Every town's paths, failovers and drills, as the towns' agents report them.",
    )
    app.mount("/static", StaticFiles(directory=str(PAGES / "static")), name="static")

    def view_of(town: str) -> TownView:
        view = ctx.fleet.towns.get(town)
        if view is None:
            raise HTTPException(404, f"no town {town!r} (towns: {', '.join(ctx.fleet.towns)})")
        return view

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return _page("index.html", fleet_json(ctx))

    @app.get("/towns/{town}", response_class=HTMLResponse, include_in_schema=False)
    async def town_page(town: str) -> HTMLResponse:
        view_of(town)
        return _page("town.html", fleet_json(ctx))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/metrics/counters", include_in_schema=False)
    async def counter_metrics() -> Response:
        body = generate_latest(ctx.metrics.counters_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/fleet", summary="every town, in cutover order")
    async def fleet() -> dict[str, Any]:
        return fleet_json(ctx)

    @app.get("/api/v1/towns/{town}", summary="one town")
    async def town(town: str) -> dict[str, Any]:
        return town_row(view_of(town), ctx)

    @app.get("/api/v1/towns/{town}/samples", summary="a town's loss and RTT over time")
    async def samples(
        town: str, hours: Annotated[float, Query(gt=0, le=MAX_SAMPLE_HOURS)] = 6.0
    ) -> dict[str, Any]:
        view_of(town)
        rows = await ctx.store.samples(town, ctx.clock() - hours * 3600)
        return {"town": town, "hours": hours, "samples": rows}

    @app.get("/api/v1/events", summary="events, newest first, paged")
    async def events(
        town: str | None = None,
        kind: Annotated[list[EventType] | None, Query()] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        if town is not None:
            view_of(town)
        for name, when in (("since", since), ("until", until)):
            if when is not None and when.tzinfo is None:
                raise HTTPException(422, f"{name}: give a time zone (e.g. 2026-12-01T05:00:00Z)")
        try:
            page = await ctx.store.events(
                town=town,
                kinds=[k.value for k in kind or ()],
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"events": page.events, "next_cursor": page.next_cursor}

    @app.get("/api/v1/stream", summary="server-sent events: a town's row when it changes")
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(_stream(request, ctx), media_type="text/event-stream")

    return app


def _page(name: str, initial: dict[str, Any]) -> HTMLResponse:
    """A page with the fleet as it is now inside it: it shows the truth at
    once, before its script connects to the live stream."""
    data = json.dumps(initial, ensure_ascii=False).replace("</", "<\\/")
    html = (PAGES / name).read_text(encoding="utf-8")
    tag = f'<script id="initial" type="application/json">{data}</script>'
    return HTMLResponse(html.replace("<!-- initial -->", tag, 1))


async def _stream(request: Request, ctx: Context) -> AsyncIterator[str]:
    """First every row, then each row whose content changed (a message, or
    time turning it stale), and the broker's state when it changes."""
    sent: dict[str, tuple[int, str]] = {}
    link_sent: tuple[bool, str | None] | None = None
    quiet_since = time.monotonic()
    while not await request.is_disconnected():
        now = ctx.clock()
        for view in ctx.fleet:
            key = (view.version, view.status(now, ctx.fleet.stale_after).value)
            if sent.get(view.id) != key:
                sent[view.id] = key
                yield _sse("town", town_row(view, ctx))
                quiet_since = time.monotonic()
        link = (ctx.link.connected, ctx.link.last_error)
        if link != link_sent:
            link_sent = link
            yield _sse("broker", broker_json(ctx))
        if time.monotonic() - quiet_since > STREAM_KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keepalive\n\n"
        await asyncio.sleep(STREAM_CHECK_S)


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
