"""Batch jobs: the individual resident tax recalculation of one town.

A job really walks every resident row of its town, computes the tax and
writes an assessment per row, with a configurable CPU cost per row standing
in for the rest of a real assessment (so one town takes seconds, as batch
work does). It runs in a small process pool: CPU-bound Python in a thread
would hold the GIL and slow every request the server is answering.

Job state lives in the ledger's batch_jobs table, which the worker updates
as it goes, so the server (and a restarted server) reads progress from the
database and no state has to cross the process boundary. Cancelling goes
the same way: the server marks the job failed, and the worker, which checks
its job's status before committing each chunk, stops there.

Only this module and the modules it imports are loaded in the worker
process: it must not import FastAPI or reportlab.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sqlite3
import time
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from backoffice.ledger import Ledger, connect
from backoffice.tax import resident_tax

JobStatus = Literal["queued", "running", "done", "failed"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed")
DEFAULT_ROW_COST_US = 100  # the largest town (16,905 rows) then takes about 2 s
CHUNK_ROWS = 250  # rows per progress commit: a few commits per second per job


class QueueFull(Exception):
    """Too many jobs already wait for a worker."""


class JobCancelled(Exception):
    """The server marked the job as no longer running (e.g. at shutdown)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _spin(seconds: float) -> None:
    """Burn CPU for `seconds`: the rest of a real row's work (rules, history, rounding)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def _warm_up() -> None:
    """Runs once at startup, so the first job does not pay the process spawn."""


def run_tax_recalc(db_path: str, job_id: str, town: str, fiscal_year: int, row_cost: float) -> None:
    """Worker entry point: recalculate `town`'s resident tax for `fiscal_year`."""
    with contextlib.closing(connect(Path(db_path))) as conn:
        try:
            _recalc(conn, job_id, town, fiscal_year, row_cost)
        except JobCancelled:
            conn.execute("ROLLBACK")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute(
                "UPDATE batch_jobs SET status = 'failed', error = ?, finished_at = ?"
                " WHERE job_id = ?",
                (f"{type(exc).__name__}: {exc}", _now(), job_id),
            )


def _recalc(
    conn: sqlite3.Connection, job_id: str, town: str, fiscal_year: int, row_cost: float
) -> None:
    started, t0 = _now(), time.monotonic()
    claimed = conn.execute(
        "UPDATE batch_jobs SET status = 'running', started_at = ?"
        " WHERE job_id = ? AND status = 'queued'",
        (started, job_id),
    )
    if claimed.rowcount != 1:
        return  # cancelled while it waited in the queue
    rows = conn.execute(
        "SELECT resident_id, income, income_kind FROM residents WHERE town = ?"
        " ORDER BY resident_id",
        (town,),
    ).fetchall()
    totals = {"municipal": 0, "prefectural": 0, "income_levy": 0, "per_capita": 0, "payers": 0}
    for start in range(0, len(rows), CHUNK_ROWS):
        assessments = []
        for row in rows[start : start + CHUNK_ROWS]:
            tax = resident_tax(row["income"], row["income_kind"], fiscal_year)
            _spin(row_cost)
            totals["municipal"] += tax.municipal
            totals["prefectural"] += tax.prefectural
            totals["income_levy"] += tax.income_levy
            totals["per_capita"] += tax.per_capita_levy
            totals["payers"] += tax.total > 0
            assessments.append(
                (
                    fiscal_year,
                    row["resident_id"],
                    job_id,
                    tax.income,
                    tax.taxable,
                    tax.municipal,
                    tax.prefectural,
                )
            )
        conn.execute("BEGIN IMMEDIATE")
        status = conn.execute("SELECT status FROM batch_jobs WHERE job_id = ?", (job_id,))
        if status.fetchone()[0] != "running":
            raise JobCancelled(job_id)
        conn.executemany(
            "INSERT OR REPLACE INTO tax_assessments VALUES (?, ?, ?, ?, ?, ?, ?)", assessments
        )
        conn.execute(
            "UPDATE batch_jobs SET rows_done = ? WHERE job_id = ?",
            (start + len(assessments), job_id),
        )
        conn.execute("COMMIT")
    finished = _now()
    result = {
        "rows_processed": len(rows),
        "taxpayers": totals["payers"],
        "exempt": len(rows) - totals["payers"],
        "total_tax": totals["municipal"] + totals["prefectural"],
        "municipal_tax": totals["municipal"],
        "prefectural_tax": totals["prefectural"],
        "income_levy_total": totals["income_levy"],
        "per_capita_levy_total": totals["per_capita"],
        "started_at": started,
        "finished_at": finished,
        "duration_seconds": round(time.monotonic() - t0, 3),
    }
    conn.execute(
        "UPDATE batch_jobs SET status = 'done', rows_done = ?, finished_at = ?, result_json = ?"
        " WHERE job_id = ?",
        (len(rows), finished, json.dumps(result), job_id),
    )


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    kind: str
    town: str
    fiscal_year: int
    status: JobStatus
    rows_total: int
    rows_done: int
    submitted_by: str
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    result: dict[str, Any] | None

    @property
    def progress(self) -> float:
        return self.rows_done / self.rows_total if self.rows_total else 1.0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        fields = dict(row)
        raw = fields.pop("result_json")
        return cls(**fields, result=json.loads(raw) if raw else None)


class BatchRunner:
    """Submits jobs to the worker pool and reads their state from the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        workers: int = 1,
        row_cost_us: float = DEFAULT_ROW_COST_US,
        max_queued: int = 50,
    ) -> None:
        self._ledger = ledger
        self._row_cost = row_cost_us / 1_000_000
        self._max_queued = max_queued
        # spawn, not fork: the server process has threads (fork would copy
        # their locks in whatever state they are in).
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def warm_up(self) -> Future[None]:
        return self._executor.submit(_warm_up)

    def submit(self, *, kind: str, town: str, fiscal_year: int, user: str, rows_total: int) -> Job:
        conn = self._ledger.conn
        queued = conn.execute("SELECT COUNT(*) FROM batch_jobs WHERE status = 'queued'")
        if queued.fetchone()[0] >= self._max_queued:
            raise QueueFull(f"{self._max_queued} jobs are already queued")
        job_id = f"{kind}-{uuid.uuid4().hex[:16]}"
        conn.execute(
            "INSERT INTO batch_jobs (job_id, kind, town, fiscal_year, status, rows_total,"
            " submitted_by, submitted_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
            (job_id, kind, town, fiscal_year, rows_total, user, _now()),
        )
        future = self._executor.submit(
            run_tax_recalc, str(self._ledger.path), job_id, town, fiscal_year, self._row_cost
        )
        future.add_done_callback(lambda f: self._on_done(job_id, f))
        job = self.get(job_id)
        assert job is not None
        return job

    def _on_done(self, job_id: str, future: Future[None]) -> None:
        """A worker that died (or a cancelled job) must not leave the job 'queued' forever."""
        if future.cancelled():
            reason = "cancelled: server shutting down"
        elif (exc := future.exception()) is not None:
            reason = f"worker failed: {type(exc).__name__}: {exc}"
        else:
            return
        with contextlib.closing(connect(self._ledger.path)) as conn:
            conn.execute(
                "UPDATE batch_jobs SET status = 'failed', error = ?, finished_at = ?"
                " WHERE job_id = ? AND status IN ('queued', 'running')",
                (reason, _now(), job_id),
            )

    def get(self, job_id: str) -> Job | None:
        row = self._ledger.conn.execute(
            "SELECT * FROM batch_jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return Job.from_row(row) if row is not None else None

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(JOB_STATUSES, 0)
        counts.update(
            self._ledger.conn.execute("SELECT status, COUNT(*) FROM batch_jobs GROUP BY status")
        )
        return counts

    def shutdown(self) -> None:
        """Cancel unfinished jobs (a running one stops at its next chunk), stop the pool."""
        self._ledger.conn.execute(
            "UPDATE batch_jobs SET status = 'failed', error = 'cancelled: server shut down',"
            " finished_at = ? WHERE status IN ('queued', 'running')",
            (_now(),),
        )
        self._executor.shutdown(wait=True, cancel_futures=True)
