"""What a drill touches: the fault injectors, loadprobe runs, and MQTT.

Each fault is one object with `inject` and `restore`; `restore` is safe to
call when nothing was injected and when it was already restored (the
rollback runs it whatever happened).  A failure is a `DrillError` with one
line for people.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from netwatch.drill.record import LoadSummary
from netwatch.emulator.netns import entered
from netwatch.errors import UserError
from netwatch.mqtt.broker import Broker

COMMAND_TIMEOUT_S = 120.0  # an operator's fault or restore command
LOAD_STOP_S = 15.0  # a load test asked to stop gets this long before it is killed
PUBLISH_TIMEOUT_S = 5.0


class DrillError(UserError):
    """A step could not be carried out (one line, for the journal)."""


class Fault(Protocol):
    kind: str  # lab | command | manual

    def describe(self) -> str: ...

    def inject(self) -> None: ...

    def restore(self) -> None: ...


@dataclass
class LabFault:
    """Cut the town's primary link in the lab's emulator, both directions."""

    topo: Any  # Topology (kept loose: the lab imports stay lazy)
    run_dir: str
    town: str
    path: str = "primary"
    kind: str = "lab"
    injected: bool = False

    def describe(self) -> str:
        return f"the lab cuts {self.town}/{self.path} (both directions)"

    def check(self) -> None:
        """The lab is up and the link answers (a precheck)."""
        from netwatch.lab import links

        try:
            links.find_link(self.topo, self.town, self.path)
            links.restore(self.topo, self.run_dir, self.town, self.path, "both")
        except Exception as exc:
            raise DrillError(f"--lab: {exc}") from None

    def inject(self) -> None:
        from netwatch.lab import links

        self.injected = True
        try:
            links.cut(self.topo, self.run_dir, self.town, self.path, "both")
        except Exception as exc:
            raise DrillError(f"cutting {self.town}/{self.path}: {exc}") from None

    def restore(self) -> None:
        if not self.injected:
            return
        from netwatch.lab import links

        try:
            links.restore(self.topo, self.run_dir, self.town, self.path, "both")
        except Exception as exc:
            raise DrillError(f"restoring {self.town}/{self.path}: {exc}") from None
        self.injected = False


@dataclass
class CommandFault:
    """The operator's own injector (e.g. shut the edge router's LGWAN port)."""

    command: Sequence[str]
    restore_command: Sequence[str]
    kind: str = "command"
    injected: bool = False

    def describe(self) -> str:
        return f"runs {' '.join(self.command)}; restores with {' '.join(self.restore_command)}"

    def inject(self) -> None:
        self.injected = True  # a command that failed half-way still gets its restore
        _run(self.command, "the fault command")

    def restore(self) -> None:
        if not self.injected:
            return
        _run(self.restore_command, "the restore command")
        self.injected = False


def _run(argv: Sequence[str], what: str) -> None:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise DrillError(f"{what} {argv[0]!r}: not found") from None
    except subprocess.TimeoutExpired:
        raise DrillError(f"{what} did not end within {COMMAND_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise DrillError(f"{what} {argv[0]!r}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise DrillError(f"{what} exited {done.returncode}" + (f": {said[-1]}" if said else ""))


@dataclass
class ManualFault:
    """A person pulls the cable and presses Enter; and puts it back."""

    town: str
    ask: Callable[[str], str] = input
    kind: str = "manual"
    injected: bool = False

    def describe(self) -> str:
        return f"a person pulls {self.town}'s LGWAN cable when asked"

    def inject(self) -> None:
        self.injected = True
        self.ask(f"Pull {self.town}'s LGWAN (primary) cable now, then press Enter: ")

    def restore(self) -> None:
        if not self.injected:
            return
        self.ask(f"Put {self.town}'s LGWAN cable back, then press Enter: ")
        self.injected = False


# --- load tests ---------------------------------------------------------------------------


@dataclass
class LoadRun:
    """One `loadprobe run` in its own process (Locust never shares ours)."""

    label: str
    argv: list[str]
    report_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    stopped_by_us: bool = False
    _out: Any = field(default=None, repr=False)

    def start(self) -> None:
        self.report_dir.parent.mkdir(parents=True, exist_ok=True)
        self._out = self.log.open("wb")
        self.started = time.time()
        # Its own session: a Ctrl-C at the terminal reaches the drill, which
        # stops the load itself, in order.
        self.proc = subprocess.Popen(
            self.argv, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        """Ask it to stop (SIGINT, as Ctrl-C), then kill it if it lingers."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self._close()
            return
        self.stopped_by_us = True
        for sig, wait in ((signal.SIGINT, LOAD_STOP_S), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._close()

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def summary(self) -> LoadSummary:
        """What its report says (a partial summary when there is none)."""
        code = self.poll()
        self._close()
        summary = LoadSummary(
            label=self.label, path=None, report_dir=str(self.report_dir), exit_code=code
        )
        try:
            report = json.loads((self.report_dir / "report.json").read_text())
        except (OSError, ValueError):
            return summary
        run = (report.get("runs") or [{}])[0]
        summary.path = (run.get("path") or {}).get("observed")
        summary.passed = report.get("verdict") == "pass" if code in (0, 1) else None
        txs = run.get("transactions") or {}
        summary.transactions = sum(int(t.get("count") or 0) for t in txs.values())
        summary.failures = sum(int(t.get("failed") or 0) for t in txs.values())
        summary.p95_s = {name: t.get("p95_seconds") for name, t in txs.items()}
        summary.degradation = {
            name: d.get("factor") for name, d in (report.get("degradation") or {}).items()
        }
        summary.failed_checks = [
            str(c.get("name")) for c in report.get("thresholds") or [] if c.get("status") == "fail"
        ]
        return summary

    def tail(self, lines: int = 3) -> str:
        """The last lines of its output, for an error message."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " / ".join(text[-lines:])


def loadprobe_argv(
    *,
    town: str,
    topology: str,
    seconds: float,
    terminals: int,
    report_dir: Path,
    baseline: Path | None = None,
    path: str | None = None,
    lab_run_dir: str | None = None,
) -> list[str]:
    argv = [
        sys.executable, "-m", "loadprobe.cli", "run",
        "--town", town, "--topology", topology,
        "--duration", f"{seconds:g}s", "--terminals", str(terminals),
        "--report-dir", str(report_dir), "--quiet", "--metrics-port", "0",
    ]  # fmt: skip
    if baseline is not None:
        argv += ["--baseline", str(baseline)]
    if path is not None:
        argv += ["--path", path]
    if lab_run_dir is not None:
        argv += ["--lab-run-dir", lab_run_dir]
    return argv


# --- MQTT -------------------------------------------------------------------------------


def publish(
    broker: Broker, items: Sequence[tuple[str, bytes, bool]], *, netns: str | None = None
) -> str | None:
    """Publish (topic, payload, retain) at QoS 1; None when done, else why
    not (a drill's report never depends on the broker)."""
    result: list[str | None] = []

    def work() -> None:
        with entered(netns) if netns else nullcontext():
            try:
                asyncio.run(_publish(broker, items))
            except Exception as exc:
                result.append(f"{type(exc).__name__}: {exc}")
                return
        result.append(None)

    thread = threading.Thread(target=work, name="drill-publish", daemon=True)
    thread.start()
    thread.join(PUBLISH_TIMEOUT_S + 2.0)
    return result[0] if result else f"no answer from {broker} within {PUBLISH_TIMEOUT_S:g} s"


async def _publish(broker: Broker, items: Sequence[tuple[str, bytes, bool]]) -> None:
    import aiomqtt

    async with asyncio.timeout(PUBLISH_TIMEOUT_S):
        async with aiomqtt.Client(
            **broker.client_options(), identifier=f"netwatch-drill-{os.getpid()}"
        ) as client:
            for topic, payload, retain in items:
                await client.publish(topic, payload, qos=1, retain=retain)
