"""The operations center's SQLite store: once per event, paged, pruned, and
a clear error for a database it cannot use."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from opscenter_data import T0, drill, event, later, metrics, online, state

from netwatch.messages import EventType
from netwatch.opscenter.store import Store, StoreError

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_an_event_delivered_twice_is_stored_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    e = event()
    store.add(e, 0.0)
    store.add(e, 1.0)
    run(store.flush())
    page = run(store.events(town="nishiki"))
    assert [x["id"] for x in page.events] == [e.id]
    store.close()


def test_the_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    for msg in (event(), state(active="backup", at=later(1)), online()):
        store.add(msg, 0.0)
    store.close()  # flushes
    again = Store(path)
    history = again.history()
    assert [type(m).__name__ for m in history] == ["EventMessage", "StateMessage", "OnlineMessage"]
    assert history[1] == state(active="backup", at=later(1))
    again.close()


def test_the_last_drill_survives_a_restart_and_only_the_newest_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    older, newer = drill(started=T0), drill(started=later(86400))
    store.add(older, 0.0)
    store.add(newer, 0.0)
    store.close()
    again = Store(path)
    assert again.history() == [newer]
    again.close()


def test_events_are_newest_first_filtered_and_paged(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    for i in range(7):
        store.add(event(at=later(i)), 0.0)
    store.add(event(EventType.FAILBACK, at=later(3), frm="backup", to="primary"), 0.0)
    store.add(event(town="tsuno", at=later(2)), 0.0)
    run(store.flush())
    first = run(store.events(town="nishiki", kinds=["failover"], limit=3))
    assert [e["ts"] for e in first.events] == [
        "2026-12-01T05:00:06.000Z",
        "2026-12-01T05:00:05.000Z",
        "2026-12-01T05:00:04.000Z",
    ]
    rest = run(store.events(town="nishiki", kinds=["failover"], limit=3, cursor=first.next_cursor))
    last = run(store.events(town="nishiki", kinds=["failover"], limit=3, cursor=rest.next_cursor))
    assert len(rest.events) == 3
    assert len(last.events) == 1
    assert last.next_cursor is None
    window = run(store.events(since=later(2), until=later(4)))
    assert sorted(e["ts"][17:19] for e in window.events) == ["02", "02", "03", "03"]
    with pytest.raises(ValueError, match="bad cursor"):
        run(store.events(cursor="nonsense"))
    store.close()


def test_samples_are_thinned_per_town(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3", sample_every_s=30.0)
    for i in range(10):
        store.add(metrics(at=later(i * 5)), received=float(i * 5))
    run(store.flush())
    rows = run(store.samples("nishiki", since=0.0))
    assert {r["path"] for r in rows} == {"primary", "backup"}
    assert len(rows) == 2 * 2  # t=0 and t=30
    store.close()


def test_prune_drops_what_is_past_retention(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3", retention_s=60.0)
    store.add(event(at=T0), 0.0)
    store.add(event(at=later(100)), 0.0)
    run(store.flush())
    assert run(store.prune(T0.timestamp() + 120)) == 1
    assert len(run(store.events()).events) == 1
    store.close()


def test_a_corrupt_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=f"--db {path}: file is not a database"):
        Store(path)


def test_a_database_path_that_is_a_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=f"--db {tmp_path}"):
        Store(tmp_path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "db.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=7")
    db.close()
    with pytest.raises(StoreError, match="schema version 7"):
        Store(path)
