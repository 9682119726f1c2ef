"""One load run: Locust in its own processes, followed from the outside.

This module never imports Locust or gevent: it starts Locust headless as
child processes (``python -m locust``, inside the town's namespace with
``ip netns exec`` in the lab), one process alone or a master with N
workers, and follows the raw-sample file the master (or the lone process)
writes. While the run goes it feeds the live metrics and the progress
line, and looks up the route to the target every few seconds; afterwards
it hands back everything the report needs, and keeps the raw samples as
JSON lines (samples.jsonl) in the run's directory.

Ending: Locust stops by its own --run-time; each terminal may finish the
transaction in hand (--stop-timeout). A Locust that outlives its time by
far is stopped with SIGTERM, then SIGKILL. Ctrl-C (or SIGTERM to us) stops
Locust the same way, and the run comes back marked interrupted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from loadprobe import netpath, samples
from loadprobe.live import LiveMetrics, Progress
from loadprobe.samples import EndRecord, RequestRecord, SampleReader, TxRecord, UsersRecord
from loadprobe.scenario import Scenario
from loadprobe.verdict import Sample
from netwatch.emulator.netns import entered
from netwatch.errors import RouteError
from netwatch.topology import Town

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
STREAM_NAME = "samples.stream"  # the raw-sample stream file of a running run (see samples.py)
POLL = 0.25  # seconds between two reads of the sample stream
LOOKUP_EVERY = 5.0  # seconds between two route lookups during the run
KILL_GRACE = 15.0  # seconds between SIGTERM and SIGKILL


class Interrupted(Exception):
    """SIGTERM (or SIGHUP) reached `loadprobe run`: stop as for Ctrl-C."""


@dataclass
class RunPlan:
    label: str  # "primary", "backup" or "run": names the run in reports and its directory
    scenario: Scenario
    town: Town
    netns: str | None  # the town's namespace in the lab, None on this host
    requested_path: str | None
    run_dir: Path
    topology_path: str
    workers: int = 0  # local worker processes; 0 = one Locust process
    remote_workers: int = 0  # workers on other machines the master waits for
    master_bind: str = "127.0.0.1"
    master_port: int | None = None
    locustfile: Path = LOCUSTFILE


@dataclass
class RunResult:
    plan: RunPlan
    started_at: float  # epoch seconds: Locust started
    ended_at: float
    tx: dict[str, list[Sample]] = field(default_factory=lambda: defaultdict(list))
    requests: dict[tuple[str, str], list[Sample]] = field(default_factory=lambda: defaultdict(list))
    terminals: list[tuple[float, int]] = field(default_factory=list)
    lookups: list[netpath.Lookup] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    complete: bool = False  # the sample stream ended with its end record
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    samples_file: Path | None = None
    logs: list[Path] = field(default_factory=list)


def _free_port(netns: str | None) -> int:
    with entered(netns) if netns else nullcontext():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def locust_commands(plan: RunPlan, samples_file: Path) -> dict[str, list[str]]:
    """The Locust command lines of a run, by process name ('locust', 'master', 'worker-1'...)."""
    sc = plan.scenario
    prefix = ["ip", "netns", "exec", plan.netns] if plan.netns else []
    stride = max(1, plan.workers + plan.remote_workers)
    common = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(plan.locustfile),
        "--town",
        sc.town,
        "--topology",
        plan.topology_path,
        "--think-time",
        f"{sc.think_min:g}s,{sc.think_max:g}s",
        "--host",
        sc.base_url,
        "--terminal-stride",
        str(stride),
        "--loglevel",
        "INFO",
    ]
    lead = [
        "--headless",
        "--users",
        str(sc.terminals),
        "--spawn-rate",
        str(sc.terminals),
        "--run-time",
        f"{max(1, round(sc.duration))}s",
        "--stop-timeout",
        f"{sc.stop_grace:g}",
        "--samples-file",
        str(samples_file),
        "--only-summary",
        "--exit-code-on-error",
        "0",
    ]
    if plan.workers == 0 and plan.remote_workers == 0:
        return {"locust": [*prefix, *common, *lead]}
    port = plan.master_port or _free_port(plan.netns)
    commands = {
        "master": [
            *prefix,
            *common,
            *lead,
            "--master",
            "--master-bind-host",
            plan.master_bind,
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(plan.workers + plan.remote_workers),
            "--expect-workers-max-wait",
            "120",
        ]
    }
    master_host = "127.0.0.1" if plan.master_bind in ("0.0.0.0", "*", "") else plan.master_bind
    for index in range(1, plan.workers + 1):
        commands[f"worker-{index}"] = [
            *prefix,
            *common,
            "--worker",
            "--master-host",
            master_host,
            "--master-port",
            str(port),
            "--stop-timeout",
            f"{plan.scenario.stop_grace:g}",
        ]
    return commands


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def execute(
    plan: RunPlan,
    *,
    metrics: LiveMetrics | None,
    progress: Progress | None,
    on_lookup: Callable[[netpath.Lookup], None] | None = None,
) -> RunResult:
    """Run Locust for one run and collect its samples; never raises for a
    target that fails (that is what the samples say), only for Ctrl-C/SIGTERM
    when `interrupted` cannot be reported (it is then re-raised by the caller)."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    stream = plan.run_dir / STREAM_NAME  # written by Locust while it runs
    samples_file = plan.run_dir / "samples.jsonl"  # kept beside the report afterwards
    for old in (stream, samples_file):
        old.unlink(missing_ok=True)
    commands = locust_commands(plan, stream)
    result = RunResult(plan, started_at=time.time(), ended_at=0.0, samples_file=samples_file)
    destination = socket.gethostbyname(plan.scenario.target_host)

    def look() -> None:
        try:
            found = netpath.lookup(destination, plan.town, plan.netns)
        except RouteError as exc:
            result.notes.append(f"route lookup failed: {exc}")
            return
        result.lookups.append(found)
        if on_lookup is not None:
            on_lookup(found)

    look()
    observed = result.lookups[-1].path if result.lookups else None
    if metrics is not None:
        metrics.start_run(plan.requested_path or observed or "unknown")
    if progress is not None:
        progress.start(plan.label)

    reader = SampleReader(stream, keep=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    handles: list[IO[bytes]] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    previous = {
        sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    deadline = time.monotonic() + plan.scenario.duration + plan.scenario.stop_grace + 90
    lead = "locust" if "locust" in commands else "master"

    def consume() -> None:
        records = reader.read()
        for record in records:
            if isinstance(record, TxRecord):
                result.tx[record.transaction].append(record.sample)
            elif isinstance(record, RequestRecord):
                result.requests[(record.transaction, record.request)].append(record.sample)
            elif isinstance(record, UsersRecord):
                result.terminals.append((record.time, record.terminals))
            elif isinstance(record, EndRecord):
                result.complete = True
        if metrics is not None:
            metrics.feed(records)
        if progress is not None:
            progress.feed(records)
            progress.show()

    try:
        result.started_at = time.time()
        for name, argv in commands.items():
            log = plan.run_dir / f"{name}.log"
            handle: IO[bytes] = log.open("wb")
            handles.append(handle)
            result.logs.append(log)
            procs[name] = subprocess.Popen(
                argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us; we stop Locust in order
            )
        next_lookup = time.monotonic() + LOOKUP_EVERY
        while procs[lead].poll() is None:
            time.sleep(POLL)
            consume()
            now = time.monotonic()
            if now >= next_lookup:
                look()
                next_lookup = now + LOOKUP_EVERY
            if now > deadline:
                result.notes.append("Locust overran its run time and stop timeout: stopped")
                _stop(procs.values())
                break
        _wait_all(procs.values(), timeout=30.0)
    except (KeyboardInterrupt, Interrupted) as exc:
        result.interrupted = True
        result.notes.append(f"interrupted ({type(exc).__name__}): the run is incomplete")
        _stop(procs.values())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop(procs.values())
        for handle in handles:
            handle.close()
        result.ended_at = time.time()
        consume()
        samples_file.write_text(samples.encode(reader.rows), encoding="utf-8")
        stream.unlink(missing_ok=True)
        result.exit_codes = {name: proc.returncode for name, proc in procs.items()}
        look()
        if progress is not None:
            progress.end()
    if not result.complete and not result.interrupted:
        tail = _tail(result.logs[0]) if result.logs else ""
        result.notes.append(
            f"Locust ended without completing its sample stream "
            f"(exit codes {result.exit_codes}){': ' + tail if tail else ''}"
        )
    return result


def _wait_all(procs: Sequence[subprocess.Popen[bytes]] | Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    for proc in procs:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, end - time.monotonic()))


def _stop(procs: Any) -> None:
    """SIGTERM whatever still runs, then SIGKILL after KILL_GRACE seconds."""
    alive = [p for p in procs if p.poll() is None]
    for proc in alive:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + KILL_GRACE
    for proc in alive:
        try:
            proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    interesting = [line for line in text if "Error" in line or "error" in line] or text
    return " | ".join(line.strip() for line in interesting[-lines:])[:300]
