"""One failover drill, end to end, with a rollback that always runs.

    precheck -> baseline -> fault -> measure -> degraded -> restore -> failback -> verdict

The shape chaos-engineering tools use: a steady-state check first
(`precheck`: nothing is touched when it says no), the method, a rollback
in `finally` (stop the load, restore the fault, stop the observer, write
the report, publish, unlock) and a journal (`DrillRecord`).  Stop
conditions are checked every `GUARD_S` while anything waits or loads:
every path of the town down, the observer dead, the load test unable to
reach the system, any error, Ctrl-C or SIGTERM.  Each aborts at once.

The agent is asked (control socket) what it sees and said; the outage is
measured by the drill's own observer on the data plane.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import resource
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from loadprobe import __version__  # one distribution, one version
from netwatch import messages
from netwatch.agent import control
from netwatch.drill import measure
from netwatch.drill.edges import DrillError, Fault, LoadRun, loadprobe_argv, publish
from netwatch.drill.observer import KINDS, Observer, Probe
from netwatch.drill.record import DrillRecord, LoadSummary, Mark, Step
from netwatch.drill.report import write_drill_report
from netwatch.messages import DrillStatus
from netwatch.mqtt.broker import Broker
from netwatch.topology import DrillSettings, Topology, Town

GUARD_S = 0.25  # how often stop conditions are checked
FRESH_S = 15.0  # the agent's state must be this recent at the precheck
FAILOVER_WAIT_S = 15.0  # fault -> the agent's routes on the backup, at most
TAIL_S = 1.0  # the observer keeps watching this long after the failback
OBSERVER_INTERVAL_S = 0.01


class Refused(Exception):
    """The precheck said no: nothing was touched."""


class Aborted(Exception):
    """A stop condition: roll back at once."""


class Interrupted(BaseException):
    """SIGTERM (Ctrl-C arrives as KeyboardInterrupt)."""


@dataclass
class DrillSetup:
    topo: Topology
    topology_path: str
    town: Town
    settings: DrillSettings
    fault: Fault
    report_dir: Path
    socket_path: Path
    netns: str | None  # where the observer runs: the town's side
    lock_path: Path
    mqtt: Broker | None = None
    mqtt_netns: str | None = None
    lab_run_dir: str | None = None
    progress: Callable[[str], None] = print
    # The seams a unit test replaces (a fake observer, a fake loadprobe).
    make_observer: Callable[..., ObserverLike] = Observer
    load_argv: Callable[..., list[str]] = loadprobe_argv
    target: tuple[str, int] | None = None  # default: the data center's TCP target

    @property
    def service(self) -> tuple[str, int]:
        """The system under test's address, as the observer probes it."""
        if self.target is not None:
            return self.target
        tcp = self.topo.datacenter.targets.tcp
        return str(tcp.host), tcp.port


class ObserverLike(Protocol):
    @property
    def error(self) -> BaseException | None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def probes(self, kind: str) -> list[Probe]: ...


class Drill:
    def __init__(self, setup: DrillSetup) -> None:
        self.setup = setup
        s, town = setup.settings, setup.town
        self.record = DrillRecord(
            drill_id=str(uuid.uuid4()),
            town=town.id,
            town_name=town.name,
            fault=setup.fault.kind,
            started=time.time(),
            settings={
                **asdict(s),
                "fault": setup.fault.describe(),
                "observer_interval_s": OBSERVER_INTERVAL_S,
                "topology": setup.topology_path,
            },
            versions={
                "netwatch": __version__,
                "python": platform.python_version(),
                "kernel": platform.release(),
                "host": platform.node(),
            },
            report_dir=str(setup.report_dir),
        )
        self.observer: ObserverLike | None = None
        self.load: LoadRun | None = None
        self.baseline: LoadSummary | None = None
        self.degraded: LoadSummary | None = None
        self.show: dict[str, Any] = {}
        self._shown_at = 0.0
        self._lock: int | None = None
        self._at: dict[str, float] = {}  # moments: fault, failed_over, degraded, restore, failback
        self._load_wall = 0.0  # seconds spent in load tests: the rest is the drill's own

    # --- the drill -------------------------------------------------------------------

    def run(self) -> DrillRecord:
        record = self.record
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            self._steps()
        except Refused as exc:
            record.status, record.reason = DrillStatus.REFUSED, str(exc)
        except (Aborted, DrillError, control.ControlError) as exc:
            self._abort(str(exc))
        except KeyboardInterrupt:
            self._abort("interrupted (Ctrl-C)")
        except Interrupted:
            self._abort("interrupted (SIGTERM)")
        except Exception as exc:  # a bug must still roll back and say where
            self._abort(f"{type(exc).__name__}: {exc}")
        finally:
            # A second signal must not cut the rollback short.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                self._rollback()
            finally:
                signal.signal(signal.SIGTERM, old_term)
                signal.signal(signal.SIGINT, previous_int)
        return record

    def _steps(self) -> None:
        s = self.setup.settings
        with self._step("precheck") as step:
            self._precheck(step)
        self._publish_start()
        host, port = self.setup.service
        self.observer = self.setup.make_observer(
            self.setup.netns, host, port, interval=OBSERVER_INTERVAL_S
        )
        self.observer.start()
        with self._step("baseline") as step:
            self._wait_for(s.settle, None, "the observer to settle")
            self.baseline = self._run_load("baseline", s.baseline, None)
            # Its figures are the degraded run's yardstick; its verdict is not the drill's.
            step.detail = _load_line(self.baseline) + " (the yardstick, not judged)"
            if self.baseline.path not in (None, self.setup.town.primary.name):
                raise Aborted(f"the baseline ran on {self.baseline.path}, not the primary")
        with self._step("fault") as step:
            self._at["fault"] = time.time()
            self._mark("fault", "fault injected")
            self.setup.fault.inject()
            step.detail = self.setup.fault.describe()
        with self._step("measure") as step:
            backup = self._backup_name()
            self._wait_for(
                FAILOVER_WAIT_S,
                lambda: self._agent().get("applied") == backup,
                f"the agent to move {self.setup.town.id} onto {backup}",
                fail=True,
            )
            self._at["failed_over"] = time.time()
            step.detail = (
                f"traffic on {backup} after {self._at['failed_over'] - self._at['fault']:.3f} s"
            )
        with self._step("degraded") as step:
            self._at["degraded"] = time.time()
            base = Path(self.baseline.report_dir) / "report.json" if self.baseline else None
            self.degraded = self._run_load("degraded", s.degraded, base)
            step.detail = _load_line(self.degraded)
        with self._step("restore") as step:
            self._at["restore"] = time.time()
            self._mark("restore", "fault restored")
            self.setup.fault.restore()
            step.detail = "the primary is back; the agent's hold-down runs"
        with self._step("failback") as step:
            primary = self.setup.town.primary.name
            holddown = float(self._agent(fresh=True).get("holddown_s") or 0.0)
            self._wait_for(
                holddown + s.failback_timeout,
                lambda: self._agent().get("applied") == primary,
                f"traffic back on {primary} (hold-down {holddown:g} s)",
                fail=True,
            )
            self._at["failback"] = time.time()
            self._mark("failback", "traffic back on the primary")
            self._wait_for(TAIL_S, None, "the observer's tail")
            took = self._at["failback"] - self._at["restore"]
            step.detail = f"back on {primary} {took:.3f} s after the restore"
        with self._step("verdict") as step:
            self._measure()
            record = self.record
            ok = measure.passed(record.checks)
            record.status = DrillStatus.PASSED if ok else DrillStatus.FAILED
            failed = [c.name for c in record.checks if c.passed is not True]
            record.reason = "" if ok else "failed: " + ", ".join(failed)
            step.detail = "pass" if ok else record.reason

    def _precheck(self, step: Step) -> None:
        town = self.setup.town
        try:
            show = self._agent(fresh=True)
        except control.ControlError as exc:
            raise Refused(f"the {town.id} agent: {exc}") from None
        age = time.time() - messages.parse_ts(str(show["ts"])).timestamp()
        primary, backup = town.primary.name, self._backup_name()
        paths = show.get("paths") or {}
        problems = []
        if age > FRESH_S:
            problems.append(f"the agent's state is {age:.0f} s old")
        if show.get("active") != primary or show.get("applied") != primary:
            problems.append(f"traffic is on {show.get('applied') or 'no path'}, not {primary}")
        primary_state = paths.get(primary) or {}
        if primary_state.get("state") != "UP":
            problems.append(f"{primary} is {primary_state.get('state')}, not UP")
        if primary_state.get("damped"):
            # It would not take the traffic back after the restore.
            problems.append(f"{primary} is damped (it flapped recently)")
        backup_state = paths.get(backup) or {}
        if backup_state.get("state") != "UP":
            problems.append(f"{backup} is {backup_state.get('state')}, not UP")
        if backup_state.get("damped"):
            problems.append(f"{backup} is damped (it flapped recently)")
        if show.get("hold"):
            hold = show["hold"]
            problems.append(f"a hold is in force ({hold['path']} by {hold['by']})")
        if show.get("routes_in_sync") is False:
            problems.append("the kernel's routes do not follow the agent's decision")
        if problems:
            raise Refused("; ".join(problems))
        self._take_lock()
        check = getattr(self.setup.fault, "check", None)
        if callable(check):
            try:
                check()
            except DrillError as exc:
                raise Refused(str(exc)) from None
        answer = _service_answers(self.setup)
        if answer is not None:
            raise Refused(f"the system under test does not answer: {answer}")
        step.detail = (
            f"agent fresh ({age:.1f} s), {primary} active and UP, {backup} UP and not damped, "
            "no other drill, the service answers"
        )
        step.data = {"agent": show}

    # --- waiting, loads and stop conditions ----------------------------------------------

    def _guard(self) -> None:
        """The stop conditions, checked while anything waits."""
        observer = self.observer
        if observer is not None and observer.error is not None:
            raise Aborted(f"the observer stopped: {observer.error!r}")
        try:
            show = self._agent()
        except control.ControlError as exc:
            raise Aborted(f"lost the agent: {exc}") from None
        if show.get("all_down"):
            raise Aborted(f"every path of {self.setup.town.id} is down (the backup failed too)")

    def _agent(self, *, fresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if fresh or now - self._shown_at >= GUARD_S:
            self.show = control.request(self.setup.socket_path, {"cmd": "show"}, timeout=3.0)
            self._shown_at = now
        return self.show

    def _wait_for(
        self,
        seconds: float,
        condition: Callable[[], bool] | None,
        what: str,
        *,
        fail: bool = False,
    ) -> None:
        end = time.monotonic() + seconds
        while True:
            self._guard()
            if condition is not None and condition():
                return
            if time.monotonic() >= end:
                if fail:
                    raise Aborted(f"timed out after {seconds:g} s waiting for {what}")
                return
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def _run_load(self, label: str, seconds: float, baseline: Path | None) -> LoadSummary:
        s = self.setup
        directory = s.report_dir / label
        self.load = run = LoadRun(
            label,
            s.load_argv(
                town=s.town.id,
                topology=s.topology_path,
                seconds=seconds,
                terminals=s.settings.terminals,
                report_dir=directory,
                baseline=baseline,
                lab_run_dir=s.lab_run_dir,
            ),
            directory,
            s.report_dir / f"{label}.log",
        )
        s.progress(f"{label}: {s.settings.terminals} terminals for {seconds:g} s")
        run.start()
        try:
            while run.poll() is None:
                self._guard()
                time.sleep(GUARD_S)
        finally:
            self._load_wall += time.time() - run.started
        summary = run.summary()
        self.record.loads.append(summary)
        self.load = None
        if summary.exit_code not in (0, 1):
            raise Aborted(
                f"the {label} load test could not run (exit {summary.exit_code}): {run.tail(2)}"
            )
        return summary

    # --- rollback, figures, report -------------------------------------------------------

    def _abort(self, reason: str) -> None:
        record = self.record
        record.status, record.reason = DrillStatus.ABORTED, reason
        current = next((s for s in reversed(record.steps) if s.status is None), None)
        record.stopped_at = (
            current.name if current else (record.steps[-1].name if record.steps else None)
        )
        if current is not None:
            current.status, current.ended, current.detail = "aborted", time.time(), reason
        self._mark("abort", f"aborted: {reason}")
        self.setup.progress(f"ABORTED at {record.stopped_at}: {reason}")

    def _rollback(self) -> None:
        record = self.record
        if self.load is not None:
            self.load.stop()
            record.loads.append(self.load.summary())
            self.load = None
        try:
            self.setup.fault.restore()
        except DrillError as exc:
            record.reason += f"; ROLLBACK FAILED: {exc}"
            self.setup.progress(f"ROLLBACK FAILED: {exc} -- restore it by hand")
        if self.observer is not None:
            self.observer.stop()
        if record.status is DrillStatus.ABORTED or not record.measurements:
            with contextlib.suppress(Exception):
                self._measure()
        record.ended = time.time()
        # The drill's own cost: its CPU (threads included, children not) and
        # its wall time beyond the load tests (settling, waiting for the
        # agent, the hold-down).
        usage = resource.getrusage(resource.RUSAGE_SELF)
        record.measurements["drill_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
        record.measurements["load_wall_s"] = round(self._load_wall, 3)
        record.measurements["overhead_wall_s"] = round(
            record.ended - record.started - self._load_wall, 3
        )
        if record.status is DrillStatus.REFUSED:
            record.stopped_at = "precheck"
        paths = write_drill_report(record, self.setup.report_dir)
        self._publish_end()
        self._release_lock()
        html = next((p for p in paths if p.suffix == ".html"), None)
        why = f" ({record.reason})" if record.reason else ""
        self.setup.progress(
            f"{record.status.value.upper()}{why}: report {html or self.setup.report_dir}"
        )

    def _measure(self) -> None:
        record, at = self.record, self._at
        events = self._events()
        record.events = events
        fault, restore = at.get("fault"), at.get("restore")
        primary = self.setup.town.primary.name
        m: dict[str, float | None] = {}
        if fault is not None:
            m.update(
                measure.agent_account(events, fault_at=fault, restore_at=restore, primary=primary)
            )
        if self.observer is not None:
            t_end = at.get("failback", time.time()) + TAIL_S
            self._series(t_end)
            if fault is not None:
                window_end = at.get("degraded") or at.get("failed_over") or time.time()
                m.update(self._outages("outage", fault, window_end))
            if restore is not None and at.get("failback") is not None:
                m.update(self._outages("failback_outage", restore, at["failback"] + TAIL_S))
        if restore is not None and at.get("failback") is not None:
            m["failback_s"] = at["failback"] - restore
        m["holddown_s"] = float(self.show.get("holddown_s") or 0.0) if self.show else None
        agent_back = m.pop("agent_failback_at", None)
        if agent_back is not None:
            self._mark("agent_failback", "the agent decided the failback", at=agent_back)
        detection, change = m.get("detection_s"), m.get("route_change_s")
        if detection is not None and fault is not None:
            self._mark("detection", "the agent decided the failover", at=fault + detection)
        if change is not None and fault is not None:
            self._mark("route_change", "routes on the backup", at=fault + change)
        record.measurements = m
        record.checks = measure.judge(
            m, self.degraded, self.setup.settings.thresholds, m.get("holddown_s") or 0.0
        )

    def _outages(self, name: str, start: float, end: float) -> dict[str, float | None]:
        """`name`_icmp_s, `name`_tcp_s and `name`_s (the larger) over [start, end]."""
        assert self.observer is not None
        figures: dict[str, float | None] = {}
        for kind in KINDS:
            found = measure.outage(self.observer.probes(kind), start, end)
            figures[f"{name}_{kind}_s"] = found.seconds if found else None
        values = [v for v in figures.values() if v is not None]
        figures[f"{name}_s"] = max(values) if values else None
        return figures

    def _series(self, t_end: float) -> None:
        observer = self.observer
        assert observer is not None
        probes = {kind: observer.probes(kind) for kind in KINDS}
        starts = [p[0].sent for p in probes.values() if p]
        if not starts:
            return
        t0 = min(starts)
        host, port = self.setup.service
        target = {"icmp": host, "tcp": f"{host}:{port}"}
        self.record.observer = [
            measure.series(
                kind, target[kind], probes[kind], t0=t0, t1=t_end, interval_s=OBSERVER_INTERVAL_S
            )
            for kind in KINDS
        ]

    def _events(self) -> list[dict[str, Any]]:
        since = messages.format_ts(datetime.fromtimestamp(self.record.started, UTC))
        try:
            reply = control.request(self.setup.socket_path, {"cmd": "events", "since": since})
        except control.ControlError:
            return self.record.events
        events = reply.get("events")
        return list(events) if isinstance(events, list) else []

    def _mark(self, name: str, label: str, *, at: float | None = None) -> None:
        self.record.marks = [m for m in self.record.marks if m.name != name]
        self.record.marks.append(Mark(name, time.time() if at is None else at, label))
        self.record.marks.sort(key=lambda m: m.at)

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[Step]:
        step = Step(name, time.time())
        self.record.steps.append(step)
        self.setup.progress(f"{name} ...")
        try:
            yield step
        except Refused as exc:
            step.status, step.ended, step.detail = "failed", time.time(), str(exc)
            raise
        except (DrillError, control.ControlError) as exc:
            step.status, step.ended, step.detail = "error", time.time(), str(exc)
            raise
        step.status, step.ended = "ok", time.time()
        if step.detail:
            self.setup.progress(f"{name}: {step.detail}")

    def _backup_name(self) -> str:
        return next(p.name for p in self.setup.town.paths_by_preference[1:])

    # --- the lock and the operations center -------------------------------------------------

    def _take_lock(self) -> None:
        path = self.setup.lock_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise Refused(f"a drill already runs on {self.setup.town.id} ({holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, drill {self.record.drill_id}\n".encode())
        self._lock = fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock, 0)
            os.close(self._lock)
            self._lock = None

    def message(self) -> messages.DrillMessage:
        r = self.record
        m = r.measurements
        return messages.DrillMessage(
            town=r.town,
            ts=messages.utc_now(),
            drill_id=r.drill_id,
            status=r.status,
            started=datetime.fromtimestamp(r.started, UTC),
            ended=None if r.ended is None else datetime.fromtimestamp(r.ended, UTC),
            fault=r.fault,
            reason=r.reason,
            outage_s=_finite(m.get("outage_s")),
            failback_outage_s=_finite(m.get("failback_outage_s")),
            detection_s=_finite(m.get("detection_s")),
            load_passed=self.degraded.passed if self.degraded else None,
            report=str(self.setup.report_dir / "drill.html"),
        )

    def _publish_start(self) -> None:
        started = messages.EventMessage(
            town=self.record.town,
            ts=messages.utc_now(),
            event=messages.EventType.DRILL_STARTED,
            reason=f"drill {self.record.drill_id}: {self.setup.fault.describe()}",
            details={"drill_id": self.record.drill_id, "fault": self.record.fault},
        )
        self._send([(started, False), (self.message(), True)])

    def _publish_end(self) -> None:
        r = self.record
        result = messages.EventMessage(
            town=r.town,
            ts=messages.utc_now(),
            event=messages.EventType.DRILL_RESULT,
            reason=r.reason or "passed",
            duration_s=_finite(r.measurements.get("outage_s")),
            details={"drill_id": r.drill_id, "status": r.status.value, "kind": "drill"},
        )
        items: list[tuple[messages.EventMessage | messages.DrillMessage, bool]] = [(result, False)]
        if r.status is not DrillStatus.REFUSED:  # a refusal must not replace a running drill's lock
            items.append((self.message(), True))
        self._send(items)

    def _send(self, items: list[tuple[Any, bool]]) -> None:
        broker = self.setup.mqtt
        if broker is None:
            return
        problem = publish(
            broker,
            [(m.topic, m.to_json(), retain) for m, retain in items],
            netns=self.setup.mqtt_netns,
        )
        if problem is not None:
            self.setup.progress(f"WARNING: not published to {broker}: {problem}")
            self.record.versions["published"] = f"no: {problem}"


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def _finite(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _load_line(summary: LoadSummary) -> str:
    verdict = {True: "pass", False: "fail", None: "no verdict"}[summary.passed]
    return (
        f"{verdict} on {summary.path or 'an unknown path'}: {summary.transactions} transactions, "
        f"{summary.failures} failed"
    )


def _service_answers(setup: DrillSetup) -> str | None:
    """None when the system under test accepts a connection from the town's side."""
    import socket

    from netwatch.emulator.netns import entered

    host, port = setup.service
    try:
        with entered(setup.netns) if setup.netns else contextlib.nullcontext():
            sock = socket.socket()
        with sock:
            sock.settimeout(3.0)
            sock.connect((host, port))
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
    return None
