"""The drill runner without root: a fake agent on a real unix socket (it
answers show and events like the agent's control socket), a fake fault
that moves the fake agent's traffic, a fake loadprobe (a tiny script that
writes a report.json), and a fake observer with a scripted outage.  What a
drill does with them: steps in order, the figures, the verdict, the exit
code, and the rollback on every stop condition."""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from netwatch import messages
from netwatch.drill import measure
from netwatch.drill.observer import Probe
from netwatch.drill.record import DRILL_STEPS
from netwatch.drill.runner import Drill, DrillSetup
from netwatch.messages import DrillStatus
from netwatch.topology import DrillSettings, DrillThresholds, load

ROOT = Path(__file__).resolve().parent.parent
TOPO = load(ROOT / "topology.yaml")
TOWN = TOPO.town("nishiki")
HOLDDOWN = 0.4


def _ts(t: float) -> str:
    return messages.format_ts(datetime.fromtimestamp(t, UTC))


@dataclass
class FakeAgent:
    """The agent's side of the control socket, with a scripted town."""

    applied: str = "primary"
    all_down: bool = False
    backup_state: str = "UP"
    hold: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def show(self) -> dict[str, Any]:
        with self.lock:
            return {
                "ok": True,
                "town": "nishiki",
                "active": self.applied,
                "applied": self.applied,
                "all_down": self.all_down,
                "routes_in_sync": True,
                "paths": {
                    "primary": {"state": "UP", "damped": False, "since": _ts(time.time())},
                    "backup": {
                        "state": self.backup_state,
                        "damped": False,
                        "since": _ts(time.time()),
                    },
                },
                "hold": self.hold,
                "primary": "primary",
                "holddown_s": HOLDDOWN,
                "route_backend": "fake",
                "ts": _ts(time.time()),
            }

    def event(self, kind: str, **fields: Any) -> None:
        with self.lock:
            self.events.append({"event": kind, "ts": _ts(time.time()), **fields})

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") == "show":
            return self.show()
        if request.get("cmd") == "events":
            with self.lock:
                return {"ok": True, "events": list(self.events)}
        return {"ok": False, "error": "unknown"}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[FakeAgent, Path]]:
    fake = FakeAgent()
    path = tmp_path / "agent.sock"

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = json.loads(self.rfile.readline())
            self.wfile.write(json.dumps(fake.answer(request)).encode() + b"\n")

    server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, path
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class FakeFault:
    """Cuts the primary: the fake agent fails over after 0.15 s; the
    restore brings the primary back and, after the hold-down, the failback."""

    agent: FakeAgent
    kind: str = "fake"
    injected: bool = False
    restored: int = 0
    also: list[str] = field(default_factory=list)  # "cut-backup": the backup dies too

    def describe(self) -> str:
        return "a fake cut"

    def inject(self) -> None:
        self.injected = True

        def failover() -> None:
            time.sleep(0.15)
            self.agent.event("failover", from_path="primary", to_path="backup", duration_s=0.1)
            with self.agent.lock:
                self.agent.applied = "backup"
            self.agent.event("routes_applied", from_path="primary", to_path="backup")

        threading.Thread(target=failover, daemon=True).start()

    def restore(self) -> None:
        if not self.injected:
            return
        self.injected = False
        self.restored += 1

        def failback() -> None:
            time.sleep(0.05)
            self.agent.event("path_up", path="primary")
            time.sleep(HOLDDOWN)
            self.agent.event("failback", from_path="backup", to_path="primary")
            with self.agent.lock:
                self.agent.applied = "primary"

        threading.Thread(target=failback, daemon=True).start()


class FakeObserver:
    """Every 10 ms a probe; nothing answers in the 0.2 s after the fault."""

    outage_from: float | None = None

    def __init__(self, netns: str | None, host: str, port: int, *, interval: float) -> None:
        self.error: BaseException | None = None
        self.started = 0.0
        self.stopped = False

    def start(self) -> None:
        self.started = time.time()

    def stop(self) -> None:
        self.stopped = True

    def probes(self, kind: str) -> list[Probe]:
        out, t = [], self.started
        end = time.time()
        while t < end:
            cut = FakeObserver.outage_from
            silent = cut is not None and cut <= t < cut + 0.2
            out.append(Probe(t, None if silent else 0.004))
            t += 0.01
        return out


# A fake loadprobe: writes a report.json for the path the fake agent is on.
LOADPROBE = """
import json, sys, time, pathlib
report_dir, path, verdict, code, seconds = sys.argv[1:6]
time.sleep(float(seconds))
d = pathlib.Path(report_dir); d.mkdir(parents=True, exist_ok=True)
run = {"path": {"observed": path}, "transactions": {"logon": {"count": 20, "failed": 0,
       "p95_seconds": 0.05}}}
(d / "report.json").write_text(json.dumps({"verdict": verdict, "runs": [run],
       "thresholds": [], "degradation": {"logon": {"factor": 1.5}}}))
sys.exit(int(code))
"""


def _setup(
    tmp_path: Path, agent: tuple[FakeAgent, Path], fault: FakeFault, **kw: Any
) -> DrillSetup:
    fake, sock = agent
    kw.setdefault("verdict", "pass")
    kw.setdefault("code", 0)
    kw.setdefault("seconds", 0.3)

    def argv(**a: Any) -> list[str]:
        path = fake.applied
        if kw.get("unreachable") and a["report_dir"].name == "degraded":
            return [sys.executable, "-c", "import sys; sys.exit(2)"]
        return [sys.executable, "-c", LOADPROBE, str(a["report_dir"]), path,
                kw["verdict"], str(kw["code"]), str(kw["seconds"])]  # fmt: skip

    FakeObserver.outage_from = None
    settings = DrillSettings(
        baseline=0.3,
        degraded=0.3,
        terminals=2,
        settle=0.1,
        failback_timeout=5.0,
        thresholds=DrillThresholds(
            max_outage=1.0, max_failback_outage=1.0, load_test_must_pass=True
        ),
    )
    setup = DrillSetup(
        topo=TOPO,
        topology_path=str(ROOT / "topology.yaml"),
        town=TOWN,
        settings=settings,
        fault=fault,
        report_dir=tmp_path / "report",
        socket_path=sock,
        netns=None,
        lock_path=tmp_path / "locks" / "drill-nishiki.lock",
        progress=lambda _: None,
        make_observer=FakeObserver,
        load_argv=argv,
        target=_SERVICE[0].getsockname(),
    )
    return setup


_SERVICE: list[socket.socket] = []


@pytest.fixture(autouse=True)
def service() -> Iterator[None]:
    """The system under test: a listener the precheck connects to."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    _SERVICE[:] = [listener]
    try:
        yield
    finally:
        listener.close()


class RecordingFault(FakeFault):
    def inject(self) -> None:
        FakeObserver.outage_from = time.time()
        super().inject()


def test_a_drill_that_passes_runs_every_step_and_measures_the_outage(
    tmp_path: Path, agent: tuple[FakeAgent, Path]
) -> None:
    fault = RecordingFault(agent[0])
    record = Drill(_setup(tmp_path, agent, fault)).run()
    assert record.status is DrillStatus.PASSED, record.reason
    assert record.exit_code == 0
    assert [s.name for s in record.steps] == list(DRILL_STEPS)
    assert all(s.status == "ok" for s in record.steps)
    m = record.measurements
    assert m["outage_s"] == pytest.approx(0.21, abs=0.03)  # the scripted 0.2 s silence
    assert m["detection_s"] == pytest.approx(0.15, abs=0.1)
    assert m["primary_up_to_failback_s"] is not None
    assert m["primary_up_to_failback_s"] >= HOLDDOWN - 0.05
    assert [c.name for c in record.checks] == ["outage", "failback_outage", "holddown", "load_test"]
    assert all(c.passed for c in record.checks)
    assert {mark.name for mark in record.marks} >= {"fault", "restore", "failback", "detection"}
    assert [load.path for load in record.loads] == ["primary", "backup"]
    assert fault.restored == 1
    saved = json.loads((tmp_path / "report" / "drill.json").read_text())
    assert saved["status"] == "passed"
    assert (tmp_path / "report" / "drill.html").exists()


def test_all_paths_down_mid_drill_aborts_and_rolls_back(
    tmp_path: Path, agent: tuple[FakeAgent, Path]
) -> None:
    fake, _ = agent
    fault = RecordingFault(fake)
    setup = _setup(tmp_path, agent, fault, seconds=3.0)

    def backup_dies() -> None:
        deadline = time.time() + 10
        while fake.applied != "backup" and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # inside the degraded load
        with fake.lock:
            fake.all_down = True

    threading.Thread(target=backup_dies, daemon=True).start()
    started = time.monotonic()
    record = Drill(setup).run()
    assert record.status is DrillStatus.ABORTED
    assert record.exit_code == 3
    assert record.stopped_at == "degraded"
    assert "every path of nishiki is down" in record.reason
    assert fault.restored == 1  # the fault was put back
    assert time.monotonic() - started < 8  # at once, not after the 3 s load ran out
    degraded = record.step("degraded")
    assert degraded is not None
    assert degraded.status == "aborted"
    assert record.step("restore") is None  # never reached: the rollback did it
    assert json.loads((tmp_path / "report" / "drill.json").read_text())["exit_code"] == 3


def test_sigterm_mid_load_aborts_restores_and_reports(
    tmp_path: Path, agent: tuple[FakeAgent, Path]
) -> None:
    fault = RecordingFault(agent[0])
    setup = _setup(tmp_path, agent, fault, seconds=5.0)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        record = Drill(setup).run()
    finally:
        timer.cancel()
    assert record.status is DrillStatus.ABORTED
    assert record.reason == "interrupted (SIGTERM)"
    assert record.stopped_at == "baseline"
    assert fault.restored == 0  # nothing was injected yet: nothing to restore
    assert not fault.injected
    assert (tmp_path / "report" / "junit.xml").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # handler put back


def test_a_load_test_that_cannot_reach_the_system_aborts(
    tmp_path: Path, agent: tuple[FakeAgent, Path]
) -> None:
    fault = RecordingFault(agent[0])
    record = Drill(_setup(tmp_path, agent, fault, unreachable=True)).run()
    assert record.status is DrillStatus.ABORTED
    assert record.stopped_at == "degraded"
    assert "could not run (exit 2)" in record.reason
    assert fault.restored == 1


def test_a_failed_degraded_verdict_fails_the_drill(
    tmp_path: Path, agent: tuple[FakeAgent, Path]
) -> None:
    fault = RecordingFault(agent[0])
    record = Drill(_setup(tmp_path, agent, fault, verdict="fail", code=1)).run()
    assert record.status is DrillStatus.FAILED
    assert record.exit_code == 1
    assert record.reason == "failed: load_test"


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"applied": "backup"}, "traffic is on backup, not primary"),
        ({"backup_state": "DOWN"}, "backup is DOWN, not UP"),
        ({"hold": {"path": "backup", "by": "alice"}}, "a hold is in force (backup by alice)"),
    ],
)
def test_the_precheck_refuses_and_touches_nothing(
    tmp_path: Path, agent: tuple[FakeAgent, Path], change: dict[str, Any], refusal: str
) -> None:
    fake, _ = agent
    for key, value in change.items():
        setattr(fake, key, value)
    fault = RecordingFault(fake)
    record = Drill(_setup(tmp_path, agent, fault)).run()
    assert record.status is DrillStatus.REFUSED
    assert record.exit_code == 2
    assert refusal in record.reason
    assert not fault.injected
    assert fault.restored == 0
    assert [s.name for s in record.steps] == ["precheck"]


def test_a_second_drill_on_the_town_is_refused(
    tmp_path: Path, agent: tuple[FakeAgent, Path]
) -> None:
    import fcntl

    setup = _setup(tmp_path, agent, RecordingFault(agent[0]))
    setup.lock_path.parent.mkdir(parents=True)
    with setup.lock_path.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242, drill x\n")
        held.flush()
        record = Drill(setup).run()
    assert record.status is DrillStatus.REFUSED
    assert "a drill already runs on nishiki (pid 4242, drill x)" in record.reason


def test_an_agent_that_does_not_answer_is_a_refusal(tmp_path: Path) -> None:
    fake = FakeAgent()
    setup = _setup(tmp_path, (fake, tmp_path / "none.sock"), RecordingFault(fake))
    record = Drill(setup).run()
    assert record.status is DrillStatus.REFUSED
    assert "is the agent running" in record.reason


# --- the pure figures ---------------------------------------------------------------------


def _probes(times: list[float], silent: tuple[float, float] | None = None) -> list[Probe]:
    return [Probe(t, None if silent and silent[0] <= t < silent[1] else 0.01) for t in times]


def test_outage_is_the_longest_gap_counted_from_the_last_answer_before() -> None:
    times = [i * 0.01 for i in range(300)]
    found = measure.outage(_probes(times, (1.0, 1.5)), start=1.2, end=3.0)
    assert found is not None
    assert found.seconds == pytest.approx(0.51)
    assert found.began == pytest.approx(0.99)


def test_an_outage_still_open_at_the_end_lasts_to_the_end() -> None:
    times = [i * 0.01 for i in range(300)]
    found = measure.outage(_probes(times, (1.0, 9.0)), start=1.0, end=2.5)
    assert found is not None
    assert found.ended is None
    assert found.seconds == pytest.approx(1.51)


def test_no_answer_at_all_is_no_evidence() -> None:
    assert measure.outage(_probes([0.0, 0.5], (0.0, 9.0)), start=0.0, end=1.0) is None


def test_series_bins_keep_a_gap_visible() -> None:
    times = [i * 0.01 for i in range(200)]
    s = measure.series("icmp", "x", _probes(times, (0.5, 0.8)), t0=0.0, t1=2.0, interval_s=0.01)
    assert len(s.sent) == 20
    assert s.answered[5:8] == [0, 0, 0]
    assert s.rtt_p50_s[6] is None
    assert len(s.gaps) == 1
    assert s.gaps[0] == pytest.approx((0.49, 0.8))


def test_unjudged_checks_fail_the_drill() -> None:
    th = DrillThresholds(max_outage=1.0, max_failback_outage=1.0, load_test_must_pass=False)
    checks = measure.judge({"outage_s": 0.5}, None, th, 30.0)
    assert [c.passed for c in checks] == [True, None, None]
    assert not measure.passed(checks)


# --- the commands' bad input: one line, exit 2, nothing touched ----------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drill", "--town", "atlantis", "--lab"], "unknown town 'atlantis'"),
        (["drill", "--town", "nishiki"], "how is the primary cut?"),
        (["drill", "--town", "nishiki", "--fault-command", "true"], "needs --restore-command"),
        (["drill", "--town", "nishiki", "--restore-command", "true"], "goes with --fault-command"),
        (
            [
                "drill",
                "--town",
                "nishiki",
                "--fault-command",
                "'unclosed",
                "--restore-command",
                "x",
            ],
            "cannot split",
        ),
        (
            [
                "drill",
                "--town",
                "nishiki",
                "--fault-command",
                "true",
                "--restore-command",
                "true",
                "--degraded",
                "soon",
            ],
            "--degraded",
        ),
        (["acceptance", "--towns", "nishiki,atlantis"], "--towns: unknown town 'atlantis'"),
        (["acceptance", "--duration", "0s"], "--duration: must be positive"),
        (["hold", "--town", "nishiki", "--path", "moon"], "nishiki has no path 'moon'"),
        (["hold", "--town", "nishiki", "--path", "backup", "--for", "ever"], "--for"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "netwatch.cli", *args, "--topology", str(ROOT / "topology.yaml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # no report, no log written


def test_hold_without_an_agent_says_so(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "netwatch.cli", "hold", "--town", "nishiki",
         "--socket", str(tmp_path / "none.sock"), "--topology", str(ROOT / "topology.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "is the agent running?" in done.stderr
