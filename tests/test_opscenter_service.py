"""`netwatch opscenter` as a process, against a real Mosquitto on loopback:
ingest, rejections, a persistent session across a restart, a broker that
is not there, and the errors that stop it at start."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mosquitto import Broker, broker_fixture, free_port  # noqa: F401
from opscenter_data import event, online, state

from netwatch.health.state import PathState
from netwatch.messages import EventType, utc_now

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


class Opscenter:
    def __init__(self, broker_url: str, db: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [
            sys.executable, "-m", "netwatch.cli", "opscenter",
            "--topology", str(ROOT / "topology.yaml"),
            "--mqtt", broker_url,
            "--listen", f"127.0.0.1:{self.port}",
            "--db", str(db),
            "--stale-after", "3s",
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_for(
            lambda: self.get("/api/v1/fleet") is not None, "the operations center to serve", self
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(10) == 0, self.log.read_text()
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait(10)  # reaped here, not in a later test's garbage collection
                self.proc = None

    def get(self, path: str, **params: Any) -> Any:
        try:
            answer = httpx.get(self.url + path, params=params, timeout=2)
        except httpx.TransportError:
            return None
        return answer.json() if path.startswith("/api") else answer.text

    def town(self, town: str = "nishiki") -> dict[str, Any]:
        body = self.get(f"/api/v1/towns/{town}")
        assert body is not None
        return dict(body)

    def metric(self, name: str, **labels: str) -> float | None:
        text = self.get("/metrics") or ""
        for line in text.splitlines():
            named = line.startswith((name + "{", name + " "))
            if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None


def wait_for(
    condition: Callable[[], object], what: str, oc: Opscenter | None = None, within: float = 15.0
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            tail = oc.log.read_text(errors="replace")[-2000:] if oc and oc.log.exists() else ""
            raise AssertionError(f"no {what} within {within}s\n{tail}")
        time.sleep(0.05)


@pytest.fixture
def opscenter(broker: Broker, tmp_path: Path) -> Iterator[Opscenter]:
    oc = Opscenter(broker.url, tmp_path / "db.sqlite3", tmp_path / "opscenter.log")
    oc.start()
    try:
        yield oc
    finally:
        oc.stop()


def publish(
    broker: Broker, topic: str, payload: bytes, *, retain: bool = False, lines: bool = False
) -> None:
    """One message (`payload`), or with `lines` one message per line of it."""
    argv = [
        "mosquitto_pub",
        "-h",
        broker.host,
        "-p",
        str(broker.port),
        "-q",
        "1",
        "-t",
        topic,
        "-l" if lines else "-s",
    ]
    subprocess.run([*argv, *(["-r"] if retain else [])], input=payload, check=True, timeout=30)


def send(broker: Broker, *msgs: Any, retain: bool = False) -> None:
    for msg in msgs:
        publish(broker, msg.topic, msg.to_json(), retain=retain)


def test_a_stop_right_after_the_start_ends_the_service(opscenter: Opscenter) -> None:
    """SIGTERM as soon as the page answers, often before the broker link is
    up: the service ends every time (a cancel lost inside aiomqtt once left
    it waiting on the broker for ever)."""
    for _ in range(5):
        opscenter.stop()  # asserts exit 0 within 10 s
        opscenter.start()


def test_a_failover_shows_on_the_api_and_the_fleet_metrics(
    broker: Broker, opscenter: Opscenter
) -> None:
    now = utc_now()
    send(broker, online(at=now), state(at=now), retain=True)
    wait_for(lambda: opscenter.town()["status"] == "ok", "nishiki ok", opscenter)
    send(broker, event(at=now), event(EventType.ROUTES_APPLIED, at=now, duration=0.14))
    send(broker, state(active="backup", at=now, primary=PathState.DOWN), retain=True)
    wait_for(lambda: opscenter.town()["status"] == "backup", "nishiki on backup", opscenter)
    assert opscenter.metric("netwatch_fleet_active_path", town="nishiki", path="backup") == 1.0
    assert opscenter.metric("netwatch_fleet_last_failover_duration_seconds", town="nishiki") == 0.14
    page = opscenter.get("/")
    assert "運用管理センター" in page


def test_bad_messages_are_rejected_counted_and_the_service_keeps_serving(
    broker: Broker, tmp_path: Path
) -> None:
    # A retained garbage state is waiting before the operations center starts.
    publish(broker, "netwatch/v1/tsuno/state", b"\x00garbage", retain=True)
    oc = Opscenter(broker.url, tmp_path / "db.sqlite3", tmp_path / "opscenter.log")
    oc.start()
    try:
        wait_for(
            lambda: (
                oc.metric("netwatch_opscenter_messages_rejected_total", reason="malformed_json")
                == 1.0
            ),
            "the retained garbage to be rejected",
            oc,
        )
        good = state()
        cases = {
            "town_mismatch": ("netwatch/v1/tsuno/state", good.to_json()),
            "schema": (
                "netwatch/v1/nishiki/state",
                good.to_json().replace(b'"schema":1', b'"schema":9'),
            ),
            "too_large": ("netwatch/v1/nishiki/events", b"{" + b" " * 70_000 + b"}"),
            "unknown_town": ("netwatch/v1/atlantis/state", good.to_json()),
        }
        for topic, payload in cases.values():
            publish(broker, topic, payload)
        for reason in cases:
            wait_for(
                lambda r=reason: (
                    oc.metric("netwatch_opscenter_messages_rejected_total", reason=r)  # type: ignore[misc]
                    == 1.0
                ),
                f"a {reason} rejection",
                oc,
            )
        send(broker, state(at=utc_now()))
        wait_for(lambda: oc.town()["status"] == "ok", "a good state after the bad ones", oc)
        log = oc.log.read_text()
        assert log.count("(town_mismatch)") == 1  # said once, not per message
    finally:
        oc.stop()


def test_events_sent_while_it_was_down_arrive_after_a_restart_once_each(
    broker: Broker, opscenter: Opscenter
) -> None:
    first = event(at=utc_now())
    send(broker, first)
    wait_for(lambda: opscenter.get("/api/v1/events", town="nishiki")["events"], "the first event")
    opscenter.stop()
    missed = [event(EventType.FAILBACK, frm="backup", to="primary", details_kind="failback")]
    missed.append(event())
    send(broker, *missed, first)  # the first one again: a redelivery
    opscenter.start()

    def events() -> list[dict[str, Any]]:
        return list(opscenter.get("/api/v1/events", town="nishiki")["events"])

    wait_for(lambda: len(events()) == 3, "the three events", opscenter)
    stored = {e["id"]: e["ts"] for e in events()}
    assert stored == {m.id: m.to_dict()["ts"] for m in [first, *missed]}
    assert opscenter.town()["failovers_total"] == 3  # counts survive the restart, once each


def test_states_sent_while_it_was_down_do_not_crowd_out_the_events(
    broker: Broker, opscenter: Opscenter
) -> None:
    """A broker keeps a bounded queue for an absent persistent session
    (the test broker's max_queued_messages: 1,000, Mosquitto's default). A fleet republishes its
    states every few seconds; were they queued too, a short absence would
    fill the queue and the events behind them would be dropped. States are
    retained (the newest comes at each subscription) and taken at QoS 0."""
    opscenter.stop()
    now = utc_now()
    states = b"".join(state(at=now).to_json() + b"\n" for _ in range(1_200))
    publish(broker, "netwatch/v1/nishiki/state", states, retain=True, lines=True)
    missed = event(at=now)
    send(broker, missed)
    opscenter.start()
    wait_for(
        lambda: (
            [e["id"] for e in opscenter.get("/api/v1/events", town="nishiki")["events"]]
            == [missed.id]
        ),
        "the event sent after 1,200 states",
        opscenter,
    )
    assert opscenter.town()["status"] == "ok"  # the retained state came too


def test_a_town_that_goes_silent_turns_unknown(broker: Broker, opscenter: Opscenter) -> None:
    send(broker, state(at=utc_now()))
    wait_for(lambda: opscenter.town()["status"] == "ok", "nishiki ok", opscenter)
    wait_for(lambda: opscenter.town()["status"] == "unknown", "nishiki unknown", opscenter)
    assert opscenter.town()["paths"]["primary"]["state"] == "UNKNOWN"


def test_no_broker_at_start_then_one(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto")
    oc = Opscenter(broker.url, tmp_path / "db.sqlite3", tmp_path / "opscenter.log")
    oc.start()
    try:
        wait_for(lambda: oc.get("/api/v1/fleet")["broker"]["last_error"], "a broker error", oc)
        assert oc.metric("netwatch_opscenter_mqtt_connected") == 0.0
        broker.start()
        wait_for(lambda: oc.get("/api/v1/fleet")["broker"]["connected"], "the connection", oc, 45)
        send(broker, state(at=utc_now()))
        wait_for(lambda: oc.town()["status"] == "ok", "nishiki ok", oc)
        broker.kill()
        wait_for(lambda: not oc.get("/api/v1/fleet")["broker"]["connected"], "the loss", oc, 45)
        assert oc.get("/api/v1/fleet")["towns"][0]["last_known"]["active_path"] == "primary"
    finally:
        oc.stop()
        broker.stop()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netwatch.cli", "opscenter",
         "--topology", str(ROOT / "topology.yaml"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_corrupt_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    db.write_bytes(os.urandom(8192))
    done = run_cli("--db", str(db), "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"--db {db}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with contextlib.closing(__import__("socket").create_server(("127.0.0.1", 0))) as sock:
        port = sock.getsockname()[1]
        done = run_cli("--db", str(tmp_path / "db.sqlite3"), "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert f"--listen 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mqtt", "http://x"], "--mqtt"),
        (["--listen", "nowhere"], "--listen"),
        (["--stale-after", "soon"], "--stale-after"),
    ],
)
def test_bad_options_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    done = run_cli("--db", str(tmp_path / "db.sqlite3"), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
