"""Raw samples out of Locust, exactly: the `Recorder` of one Locust process.

Its methods are listeners for Locust's event hooks; `locust_plugin.install`
registers them (importing this module registers nothing).

Every process records each request event (transactions are requests of
type ``TX``) as a raw sample. Where the samples go depends on the process:

- a single process (no --master/--worker) appends them to ``--samples-file``
  (loadprobe's stream format, see samples.py) once a second;
- a worker ships them to its master once a second with a custom message
  (``loadprobe_samples``), so workers on other machines need no shared disk;
- the master writes what its workers ship, plus the number of active
  terminals once a second.

The end of a distributed run needs care: Locust's master gives its
workers half a second to report when it quits, less than a terminal needs
to finish the transaction in hand. So when the master starts stopping it
asks every worker to drain (``loadprobe_drain``): the worker stops its
terminals the graceful way (each finishes its transaction, up to
--stop-timeout), ships its last samples and answers (``loadprobe_drained``);
the master waits for every answer before it lets Locust go on quitting.

At the very end the master (or single process) writes an end record, and
prints the SLA verdict over the exact samples; with plain `locust -f`, that
verdict also sets the process exit code (0 pass, 1 fail).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import gevent
from locust.env import Environment
from locust.runners import STATE_STOPPED, MasterRunner, WorkerRunner

from loadprobe import samples, verdict
from loadprobe.locust_options import scenario_of
from loadprobe.samples import Row
from loadprobe.scenario import ScenarioError

log = logging.getLogger("loadprobe.recorder")

FLUSH_INTERVAL = 1.0  # seconds between two writes (or shipments) of samples
DRAIN_EXTRA = 15.0  # seconds a master waits for drained workers beyond --stop-timeout


_NO_CONTEXT: dict[str, Any] = {}


class Recorder:
    """One per Locust process; see the module docstring."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.tx_samples: dict[str, list[verdict.Sample]] = defaultdict(list)
        self.file: IO[bytes] | None = None
        self.environment: Environment | None = None
        self.pending_drain: set[str] = set()
        self.flusher: gevent.Greenlet | None = None
        self.closed = False

    # --- every process: collect ----------------------------------------------------------

    def on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        exception: object = None,
        context: dict[str, Any] | None = None,
        start_time: float | None = None,
        **_: Any,
    ) -> None:
        ctx = context or _NO_CONTEXT
        duration = response_time / 1000.0
        start = start_time if start_time is not None else time.time() - duration
        error = None if exception is None else samples.one_line(exception)
        if request_type == "TX":
            terminal = int(ctx.get("terminal") or 0)
            self.rows.append(samples.tx_row(start, name, duration, error is None, error, terminal))
        elif ctx.get("whole"):  # this request is its whole transaction (see TerminalBase.call)
            terminal = int(ctx.get("terminal") or 0)
            tx = str(ctx.get("transaction") or "")
            self.rows.append(
                samples.whole_row(start, tx, name, duration, error is None, error, terminal)
            )
        else:
            tx = str(ctx.get("transaction") or "")
            self.rows.append(samples.request_row(start, tx, name, duration, error is None, error))

    def take(self) -> list[Row]:
        rows, self.rows = self.rows, []
        return rows

    # --- roles ---------------------------------------------------------------------------

    def on_init(self, environment: Environment, **_: Any) -> None:
        self.environment = environment
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            runner.register_message("loadprobe_drain", self._on_drain, concurrent=True)
            self.flusher = gevent.spawn(self._ship_forever)
            return
        path = getattr(environment.parsed_options, "samples_file", "") or ""
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "wb")  # noqa: SIM115 - closed at quitting
        if isinstance(runner, MasterRunner):
            runner.register_message("loadprobe_samples", self._on_samples)
            runner.register_message("loadprobe_drained", self._on_drained)
        self.flusher = gevent.spawn(self._write_forever)

    # single process and master: write

    def _write(self, rows: list[Row]) -> None:
        if self.file is None:
            # No file (plain `locust -f`): keep the transactions for the verdict.
            for row in rows:
                if row[0] in ("t", "w"):
                    for record in samples.from_row(row):
                        if isinstance(record, samples.TxRecord):
                            self.tx_samples[record.transaction].append(record.sample)
        elif rows:
            samples.write_chunk(self.file, rows)
            self.file.flush()

    def _write_forever(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL)
            self._flush()

    def _flush(self) -> None:
        if self.closed or self.environment is None or self.environment.runner is None:
            return
        runner = self.environment.runner
        self._write([*self.take(), samples.users_row(time.time(), runner.user_count)])

    def _on_samples(self, environment: Environment, msg: Any, **_: Any) -> None:
        data = msg.data or {}
        self._write(list(data.get("rows") or []))
        if data.get("final"):
            self.pending_drain.discard(msg.node_id)

    def _on_drained(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.pending_drain.discard(msg.node_id)

    def on_test_stopping(self, environment: Environment, **_: Any) -> None:
        runner = environment.runner
        if not isinstance(runner, MasterRunner):
            return
        self.pending_drain = {client.id for client in runner.clients.all}
        for client_id in list(self.pending_drain):
            runner.send_message(
                "loadprobe_drain", {"stop_timeout": environment.stop_timeout}, client_id
            )
        deadline = time.monotonic() + float(environment.stop_timeout or 0) + DRAIN_EXTRA
        while self.pending_drain and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if self.pending_drain:
            log.warning("workers that did not drain in time: %s", sorted(self.pending_drain))

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        if not isinstance(environment.runner, WorkerRunner):
            self._flush()

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        runner = environment.runner
        if isinstance(runner, WorkerRunner) or self.closed:
            return
        if runner is not None and runner.state != STATE_STOPPED:
            runner.stop()  # e.g. SIGTERM: stop the terminals (and drain workers) first
        self._flush()
        self.closed = True
        if self.file is not None:
            samples.write_chunk(self.file, [samples.end_row(time.time())])
            self.file.close()
            self.file = None
            path = Path(getattr(environment.parsed_options, "samples_file", ""))
            for record in samples.read_all(path):
                if isinstance(record, samples.TxRecord):
                    self.tx_samples[record.transaction].append(record.sample)
        code = self._print_verdict(environment)
        if code is not None and not getattr(environment.parsed_options, "samples_file", ""):
            environment.process_exit_code = code  # plain `locust -f`: the SLA decides

    # worker: ship

    def _ship_forever(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL)
            self._ship(final=False)

    def _ship(self, *, final: bool) -> None:
        env = self.environment
        if env is None or env.runner is None:
            return
        rows = self.take()
        if rows or final:
            env.runner.send_message("loadprobe_samples", {"rows": rows, "final": final})

    def _on_drain(self, environment: Environment, msg: Any, **_: Any) -> None:
        data = msg.data or {}
        if "stop_timeout" in data and data["stop_timeout"] is not None:
            environment.stop_timeout = float(data["stop_timeout"])
        runner = environment.runner
        if runner is not None:
            runner.stop()  # graceful: each terminal finishes the transaction in hand
        self._ship(final=True)

    # --- the verdict for plain `locust -f` ---------------------------------------------------

    def _print_verdict(self, environment: Environment) -> int | None:
        try:
            sc = scenario_of(environment)
        except ScenarioError as exc:
            log.warning("no SLA verdict: %s", exc)
            return None
        stats = verdict.summarize_all(self.tx_samples, sc.sla)
        checks = verdict.evaluate("run", stats, sc.sla)
        lines = ["", "loadprobe SLA verdict (exact percentiles over the raw samples):"]
        for check in checks:
            if check.status != "skip":
                lines.append(f"  {check.status.upper():4}  {check.name}: {check.reason}")
        ok = verdict.passed(checks)
        lines.append(f"verdict: {'PASS' if ok else 'FAIL'}")
        print("\n".join(lines), flush=True)
        return 0 if ok else 1
