"""The status page in a real headless Chromium (Debian's), against the
operations center's app served on loopback: a maintenance hold's badge,
a running drill with its lock, the last result and the next drill."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from mosquitto import free_port
from opscenter_data import drill, hold, online, state

from netwatch.messages import DrillStatus, Message, utc_now
from netwatch.opscenter.drills import NextDrills
from netwatch.opscenter.fleet import Fleet
from netwatch.opscenter.metrics import ServiceMetrics
from netwatch.opscenter.store import Store
from netwatch.opscenter.web import Context, Link, create_app
from netwatch.topology import load

ROOT = Path(__file__).resolve().parent.parent
TOPO = load(ROOT / "topology.yaml")
CHROMIUM = shutil.which("chromium")
JST = ZoneInfo("Asia/Tokyo")
NEXT = datetime(2026, 12, 9, 2, 0, tzinfo=JST)  # a Wednesday

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium (Debian's) is missing: scripts/setup"),
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Fleet]]:
    fleet = Fleet(TOPO, stale_after=3600.0)  # the page is read well within it
    fleet.next_drills = NextDrills(TOPO, compute=lambda _t, town, _a: NEXT)
    store = Store(tmp_path / "db.sqlite3")
    ctx = Context(fleet, store, ServiceMetrics.create(fleet), Link(True))
    port = free_port()
    config = uvicorn.Config(
        create_app(ctx),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="opscenter-page-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    assert httpx.get(url + "/api/v1/fleet").status_code == 200
    yield url, fleet
    server.should_exit = True
    thread.join(10)
    store.close()


def chromium(url: str, out: Path) -> str:
    """The page's DOM after its scripts ran (times in JST, as on duty)."""
    assert CHROMIUM is not None
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={out / f'chromium-{uuid.uuid4().hex[:6]}'}",
        "--window-size=1600,900", "--dump-dom", url,
    ]  # fmt: skip
    env = {**os.environ, "TZ": "Asia/Tokyo"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def row(dom: str, town: str) -> str:
    return dom.split(f'id="town-{town}"', 1)[1].split("</tr>", 1)[0]


def apply(fleet: Fleet, *messages: Message) -> None:
    for message in messages:
        fleet.apply(message, time.time())


def test_the_page_shows_holds_running_drills_and_last_results(
    served: tuple[str, Fleet], tmp_path: Path
) -> None:
    url, fleet = served
    now = utc_now()
    held = hold(at=now, hours=1.0, reason="LGWAN工事 maintenance")
    running = drill(DrillStatus.RUNNING, started=now - timedelta(minutes=2))
    apply(fleet, online(at=now), state(active="backup", at=now, hold=held), running)
    failed = drill(DrillStatus.FAILED, town="tsuno", started=now - timedelta(days=2), outage=6.0)
    apply(fleet, online("tsuno", at=now), state("tsuno", at=now), failed)

    dom = chromium(url + "/", tmp_path)

    nishiki = row(dom, "nishiki")
    until = held.until.astimezone(JST).strftime("%H:%M")
    assert 'data-hold="backup"' in nishiki
    assert f"held on backup until {until} (LGWAN工事 maintenance)" in nishiki
    assert 'data-drill="running"' in nishiki
    assert f"lock: {running.drill_id[:8]}" in nishiki
    assert "next: Wed 02:00" in nishiki
    tsuno = row(dom, "tsuno")
    assert "data-hold" not in tsuno
    assert 'data-drill="failed"' in tsuno
    assert "outage 6000 ms" in tsuno
    assert "outage 6 s &gt; 5 s" in tsuno  # the drill's reason
    assert 'data-drill=""' in row(dom, "kawaminami")
    assert "no drill yet" in row(dom, "kawaminami")

    page = chromium(url + "/towns/tsuno", tmp_path)
    details = page.split('id="drill-details"', 1)[1].split("</dl>", 1)[0]
    assert 'data-drill="failed"' in details
    assert "/var/lib/netwatch/drills/report.html" in details
    assert failed.drill_id in details


def test_a_stale_lock_is_shown_as_such(served: tuple[str, Fleet], tmp_path: Path) -> None:
    url, fleet = served
    now = utc_now()
    apply(fleet, online(at=now), state(at=now))
    apply(fleet, drill(DrillStatus.RUNNING, started=now - timedelta(hours=7)))
    nishiki = row(chromium(url + "/", tmp_path), "nishiki")
    assert 'data-drill="stale_lock"' in nishiki
    assert "stale lock" in nishiki
