"""The resident ledger (住民基本台帳): SQLite schema, first-start seeding, queries.

The database is built once, into a temporary file that is renamed into
place, so an interrupted first start never leaves a half-seeded ledger
behind. Later starts reuse it after checking the schema version row.
WAL mode lets the batch worker process write tax assessments while the
server keeps reading.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backoffice.kana import normalize_kana, normalize_name, prefix_upper_bound
from backoffice.seeding import DEFAULT_SEED, ResidentRow, generate_town
from backoffice.towns import TOWNS

SCHEMA_VERSION = "1"
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE residents (
    resident_id   TEXT PRIMARY KEY,
    town          TEXT NOT NULL,
    household_id  TEXT NOT NULL,
    relationship  TEXT NOT NULL,
    family_name   TEXT NOT NULL,
    given_name    TEXT NOT NULL,
    family_kana   TEXT NOT NULL,
    given_kana    TEXT NOT NULL,
    name_key      TEXT NOT NULL,
    kana_key      TEXT NOT NULL,
    sex           TEXT NOT NULL CHECK (sex IN ('M', 'F')),
    birth_date    TEXT NOT NULL,
    postal_code   TEXT NOT NULL,
    address       TEXT NOT NULL,
    registered_on TEXT NOT NULL,
    income        INTEGER NOT NULL,
    income_kind   TEXT NOT NULL
) WITHOUT ROWID;
-- Searches are always scoped to the caller's town; resident_id in the index
-- makes the ORDER BY of a page free.
CREATE INDEX residents_town_kana ON residents (town, kana_key, resident_id);
CREATE INDEX residents_town_name ON residents (town, name_key, resident_id);
CREATE INDEX residents_household ON residents (household_id);
CREATE TABLE issuance_log (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    town               TEXT NOT NULL,
    town_seq           INTEGER NOT NULL,
    certificate_number TEXT NOT NULL UNIQUE,
    resident_id        TEXT NOT NULL REFERENCES residents (resident_id),
    kind               TEXT NOT NULL,
    issued_by          TEXT NOT NULL,
    issued_at          TEXT NOT NULL,
    UNIQUE (town, town_seq)
);
CREATE TABLE batch_jobs (
    job_id       TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    town         TEXT NOT NULL,
    fiscal_year  INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    rows_total   INTEGER NOT NULL,
    rows_done    INTEGER NOT NULL DEFAULT 0,
    submitted_by TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    error        TEXT,
    result_json  TEXT
);
CREATE INDEX batch_jobs_status ON batch_jobs (status);
CREATE TABLE tax_assessments (
    fiscal_year  INTEGER NOT NULL,
    resident_id  TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    income       INTEGER NOT NULL,
    taxable      INTEGER NOT NULL,
    municipal    INTEGER NOT NULL,
    prefectural  INTEGER NOT NULL,
    PRIMARY KEY (fiscal_year, resident_id)
) WITHOUT ROWID;
"""

_INSERT_RESIDENT = "INSERT INTO residents VALUES (" + ", ".join("?" * 17) + ")"


class LedgerError(Exception):
    """The ledger file cannot be created, opened or trusted (message is user-facing)."""


@dataclass(frozen=True, slots=True)
class LedgerInfo:
    path: Path
    seed: int
    created: bool  # True when this start seeded the database
    residents_by_town: dict[str, int]

    @property
    def residents(self) -> int:
        return sum(self.residents_by_town.values())


def _row_values(row: ResidentRow) -> tuple[object, ...]:
    return (
        row.resident_id,
        row.town,
        row.household_id,
        row.relationship,
        row.family_name,
        row.given_name,
        row.family_kana,
        row.given_kana,
        normalize_name(row.family_name + row.given_name),
        normalize_kana(row.family_kana + row.given_kana),
        row.sex,
        row.birth_date.isoformat(),
        row.postal_code,
        row.address,
        row.registered_on.isoformat(),
        row.income,
        row.income_kind,
    )


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (writers open their own transactions)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def seed_database(path: Path, seed: int = DEFAULT_SEED) -> None:
    """Create a fresh ledger at `path` (which must not exist) with all four towns."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")  # a failed seed is discarded anyway
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema_version", SCHEMA_VERSION), ("seed", str(seed))],
        )
        for town in TOWNS:
            conn.executemany(_INSERT_RESIDENT, map(_row_values, generate_town(town, seed)))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")


def _read_info(path: Path, created: bool) -> LedgerInfo:
    with contextlib.closing(connect(path)) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise LedgerError(
                f"{path}: ledger schema version {meta.get('schema_version')!r}, "
                f"this program needs {SCHEMA_VERSION!r}; delete the file to re-seed it"
            )
        counts = dict(conn.execute("SELECT town, COUNT(*) FROM residents GROUP BY town"))
        # A restart interrupts running jobs: say so instead of leaving them "running".
        conn.execute(
            "UPDATE batch_jobs SET status = 'failed', error = 'interrupted by a server restart',"
            " finished_at = ? WHERE status IN ('queued', 'running')",
            (datetime.now().astimezone().isoformat(),),
        )
    return LedgerInfo(path, int(meta["seed"]), created, counts)


def open_ledger(path: Path, seed: int = DEFAULT_SEED) -> LedgerInfo:
    """Seed the ledger on first start, then check and describe it.

    Raises LedgerError with a one-line reason on any failure.
    """
    path = path.expanduser()
    try:
        created = False
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
            try:
                seed_database(tmp, seed)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            created = True
        return _read_info(path, created)
    except LedgerError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise LedgerError(f"{path}: {exc}") from exc


# --- queries -----------------------------------------------------------------

_SUMMARY_COLUMNS = (
    "resident_id, family_name, given_name, family_kana, given_kana, sex, birth_date, address"
)


@dataclass(frozen=True, slots=True)
class SearchPage:
    total: int
    rows: list[sqlite3.Row]


class Ledger:
    """Query access for the server: one connection per thread, reused.

    FastAPI runs sync endpoints in a pool of long-lived worker threads, and a
    sqlite3 connection must stay on the thread that made it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        return conn

    def ping(self) -> bool:
        try:
            row = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == SCHEMA_VERSION

    def search(
        self, town: str, *, kana: str | None, name: str | None, limit: int, offset: int
    ) -> SearchPage:
        where = ["town = ?"]
        params: list[object] = [town]
        for column, value in (("kana_key", kana), ("name_key", name)):
            if value:
                where.append(f"{column} >= ? AND {column} < ?")
                params += [value, prefix_upper_bound(value)]
        clause = " AND ".join(where)
        total = self.conn.execute(f"SELECT COUNT(*) FROM residents WHERE {clause}", params)
        rows = self.conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM residents WHERE {clause}"
            " ORDER BY kana_key, resident_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        return SearchPage(int(total.fetchone()[0]), rows)

    def get(self, town: str, resident_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(
            "SELECT * FROM residents WHERE resident_id = ? AND town = ?", (resident_id, town)
        ).fetchone()
        return row

    def household(self, household_id: str) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT resident_id, relationship, family_name, given_name, family_kana, given_kana,"
            " birth_date, sex FROM residents WHERE household_id = ? ORDER BY resident_id",
            (household_id,),
        ).fetchall()

    def log_issuance(
        self, *, town: str, resident_id: str, kind: str, user: str, issued_at: datetime
    ) -> str:
        """Record an issuance and return its certificate number (per-town sequence)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")  # serialises the per-town sequence
        try:
            seq = conn.execute(
                "SELECT COALESCE(MAX(town_seq), 0) + 1 FROM issuance_log WHERE town = ?", (town,)
            ).fetchone()[0]
            number = f"{town}-C{seq:07d}"
            conn.execute(
                "INSERT INTO issuance_log (town, town_seq, certificate_number, resident_id, kind,"
                " issued_by, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (town, seq, number, resident_id, kind, user, issued_at.isoformat()),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return number
