"""The operations center's memory: SQLite in WAL mode, one writer thread.

    events   every event once (its uuid is the key: delivery is at least once)
    latest   each town's last `state`, `online` and `drill` payload, for a
             restart while the broker is unreachable (the drill's outcome
             stays shown, as the broker's retained copy would show it)
    samples  each path's loss and RTT, one row per town per `sample_every_s`,
             for the status page's charts

Writes are queued by the event loop and written in one transaction per
flush (`FLUSH_S`), so 1,741 towns publishing every second cost a few
transactions a second, not thousands; each town's last state is written
at most every `LATEST_FLUSH_S` (only the newest of those seconds).  Events
and samples older than their retention are deleted by `prune`.  Reads use
their own connection (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from netwatch import messages
from netwatch.errors import UserError
from netwatch.messages import (
    DrillMessage,
    EventMessage,
    Message,
    MetricsMessage,
    OnlineMessage,
    StateMessage,
)

SCHEMA_VERSION = 1
FLUSH_S = 0.5
LATEST_FLUSH_S = 5.0  # last states: the broker keeps them too; every few seconds is enough
DEFAULT_RETENTION_S = 90 * 86400.0
DEFAULT_SAMPLE_RETENTION_S = 6 * 3600.0
DEFAULT_SAMPLE_EVERY_S = 30.0
MAX_PAGE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    town TEXT NOT NULL,
    ts REAL NOT NULL,          -- when it happened (the agent's clock), epoch seconds
    event TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_town_ts ON events (town, ts);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS latest (
    town TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (town, kind)
);
CREATE TABLE IF NOT EXISTS samples (
    town TEXT NOT NULL,
    path TEXT NOT NULL,
    ts REAL NOT NULL,
    loss_ratio REAL,
    rtt_p50_s REAL,
    rtt_p95_s REAL,
    jitter_s REAL
);
CREATE INDEX IF NOT EXISTS samples_town_ts ON samples (town, ts);
"""


class StoreError(UserError):
    """The database cannot be opened, read or written as configured."""


@dataclass
class _Pending:
    events: list[tuple[str, str, float, str, str]] = field(default_factory=list)
    latest: dict[tuple[str, str], str] = field(default_factory=dict)
    samples: list[tuple[str, str, float, Any, Any, Any, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]
    next_cursor: str | None


class Store:
    def __init__(
        self,
        path: str | Path,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        sample_retention_s: float = DEFAULT_SAMPLE_RETENTION_S,
        sample_every_s: float = DEFAULT_SAMPLE_EVERY_S,
    ) -> None:
        self.path = Path(path)
        self.retention_s = retention_s
        self.sample_retention_s = sample_retention_s
        self.sample_every_s = sample_every_s
        self.rows_written = 0  # for netwatch_opscenter_db_rows_written_total
        self.transactions = 0
        self._pending = _Pending()
        self._last_sample: dict[str, float] = {}
        self._latest_at = 0.0  # monotonic time of the last write of `latest`
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="opscenter-db-write")
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="opscenter-db-read")
        self._local = threading.local()
        self._write = self._open()  # at once: a bad database is an error at start

    # -- opening -------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(
                    f"--db {self.path}: schema version {version}, this version reads "
                    f"{SCHEMA_VERSION}"
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("BEGIN IMMEDIATE")  # proves it is writable now, not at the first event
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"--db {self.path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"--db {self.path}: {exc.strerror or exc}") from None
        return db

    def close(self) -> None:
        self._flush_now(everything=True)
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)
        self._write.close()

    # -- writing -------------------------------------------------------------

    def add(self, message: Message, received: float, payload: bytes | None = None) -> None:
        """Queue what is worth keeping of one accepted message (`payload`: its
        JSON as received, which saves encoding it again)."""
        pending = self._pending

        def text() -> str:
            return (payload or message.to_json()).decode()

        if isinstance(message, EventMessage):
            pending.events.append(
                (
                    message.id,
                    message.town,
                    message.ts.timestamp(),
                    message.event.value,
                    text(),
                )
            )
        elif isinstance(message, StateMessage | OnlineMessage | DrillMessage):
            pending.latest[(message.town, message.KIND.value)] = text()
        elif isinstance(message, MetricsMessage):
            last = self._last_sample.get(message.town)
            if last is not None and received - last < self.sample_every_s:
                return
            self._last_sample[message.town] = received
            ts = message.ts.timestamp()
            for name, p in message.paths.items():
                pending.samples.append(
                    (message.town, name, ts, p.loss_ratio, p.rtt_p50_s, p.rtt_p95_s, p.jitter_s)
                )

    async def flush(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._writer_pool, self._flush_now)

    def _flush_now(self, *, everything: bool = False) -> None:
        pending, self._pending = self._pending, _Pending()
        now = time.monotonic()
        if not everything and now - self._latest_at < LATEST_FLUSH_S:
            self._pending.latest, pending.latest = pending.latest, {}  # not yet
        if not (pending.events or pending.latest or pending.samples):
            return
        db = self._write
        try:
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR IGNORE INTO events (id, town, ts, event, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                pending.events,
            )
            db.executemany(
                "INSERT OR REPLACE INTO latest (town, kind, payload) VALUES (?, ?, ?)",
                [(town, kind, payload) for (town, kind), payload in pending.latest.items()],
            )
            db.executemany(
                "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)",
                pending.samples,
            )
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            # Kept for the next flush: nothing accepted is lost to a busy disk.
            self._requeue(pending)
            raise
        self.transactions += 1
        if pending.latest:
            self._latest_at = now
        self.rows_written += len(pending.events) + len(pending.latest) + len(pending.samples)

    def _requeue(self, pending: _Pending) -> None:
        newer = self._pending
        self._pending = pending
        pending.events.extend(newer.events)
        pending.latest.update(newer.latest)
        pending.samples.extend(newer.samples)

    async def prune(self, now: float) -> int:
        def run() -> int:
            db = self._write
            with _transaction(db):
                gone = db.execute("DELETE FROM events WHERE ts < ?", (now - self.retention_s,))
                old = db.execute(
                    "DELETE FROM samples WHERE ts < ?", (now - self.sample_retention_s,)
                )
            return gone.rowcount + old.rowcount

        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, run)

    # -- reading -------------------------------------------------------------

    def history(self) -> list[Message]:
        """What the fleet is rebuilt from at start: events oldest first, then
        each town's last state, online and drill message."""
        db = self._write
        try:
            rows = list(db.execute("SELECT town, 'event', payload FROM events ORDER BY ts, id"))
            rows += db.execute("SELECT town, kind, payload FROM latest ORDER BY kind DESC")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"--db {self.path}: {exc}") from None
        out: list[Message] = []
        for town, kind, payload in rows:
            try:
                out.append(messages.parse(messages.topic(town, messages.Kind(kind)), payload))
            except (messages.MessageError, ValueError):
                continue  # written by another version: the broker will tell us again
        return out

    async def events(
        self,
        *,
        town: str | None = None,
        kinds: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> EventPage:
        """Newest first; `cursor` (from the previous page) continues after it."""
        where: list[str] = []
        args: list[object] = []
        if town is not None:
            where.append("town = ?")
            args.append(town)
        if kinds:
            where.append(f"event IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        if since is not None:
            where.append("ts >= ?")
            args.append(since.timestamp())
        if until is not None:
            where.append("ts < ?")
            args.append(until.timestamp())
        if cursor is not None:
            ts, event_id = _decode_cursor(cursor)
            where.append("(ts < ? OR (ts = ? AND id < ?))")
            args.extend([ts, ts, event_id])
        limit = max(1, min(limit, MAX_PAGE))
        sql = (
            "SELECT id, ts, payload FROM events"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY ts DESC, id DESC LIMIT ?"
        )
        args.append(limit + 1)
        rows = await self._read(sql, args)
        more = len(rows) > limit
        rows = rows[:limit]
        page = [EventMessage.from_json(payload).to_dict() for _, _, payload in rows]
        next_cursor = f"{rows[-1][1]!r}:{rows[-1][0]}" if more and rows else None
        return EventPage(page, next_cursor)

    async def samples(self, town: str, since: float) -> list[dict[str, Any]]:
        rows = await self._read(
            "SELECT path, ts, loss_ratio, rtt_p50_s, rtt_p95_s, jitter_s FROM samples "
            "WHERE town = ? AND ts >= ? ORDER BY ts",
            [town, since],
        )
        keys = ("path", "ts", "loss_ratio", "rtt_p50_s", "rtt_p95_s", "jitter_s")
        out = [dict(zip(keys, row, strict=True)) for row in rows]
        for row in out:
            row["ts"] = messages.format_ts(datetime.fromtimestamp(row["ts"], UTC))
        return out

    async def _read(self, sql: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            db = getattr(self._local, "db", None)
            if db is None:
                db = self._local.db = sqlite3.connect(self.path)
            return list(db.execute(sql, args))

        return await asyncio.get_running_loop().run_in_executor(self._reader_pool, run)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    ts, sep, event_id = cursor.partition(":")
    try:
        if not sep:
            raise ValueError(cursor)
        return float(ts), event_id
    except ValueError:
        raise ValueError(f"bad cursor {cursor!r}") from None
