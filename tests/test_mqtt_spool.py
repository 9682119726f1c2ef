"""The event spool: ordered, bounded, durable across restarts and crashes."""

from __future__ import annotations

import errno
import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from netwatch.mqtt import Spool, SpooledMessage, SpoolError, SpoolLockedError


def test_fifo_peek_ack(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        seqs = [spool.append(f"m{i}".encode()) for i in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert len(spool) == 5
        assert spool.peek(2) == [SpooledMessage(1, b"m0"), SpooledMessage(2, b"m1")]
        assert spool.peek(2) == spool.peek(2)  # peeking does not consume
        assert spool.ack(1)
        assert not spool.ack(1)
        assert spool.ack(3)  # acking out of order is allowed
        assert [m.payload for m in spool.peek(10)] == [b"m1", b"m3", b"m4"]
        assert len(spool) == 3
        assert spool.peek(0) == []


def test_survives_restart_and_numbers_keep_increasing(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for i in range(3):
            spool.append(b"x%d" % i)
        spool.ack(1)
    with Spool(tmp_path) as spool:
        assert [(m.seq, m.payload) for m in spool.peek(10)] == [(2, b"x1"), (3, b"x2")]
        assert spool.append(b"x3") == 4
        for seq in (2, 3, 4):
            spool.ack(seq)
        assert len(spool) == 0
    # Empty directory listing, yet the numbering goes on.
    with Spool(tmp_path) as spool:
        assert spool.append(b"x4") == 5


def test_full_drops_oldest_and_counts_across_restarts(tmp_path: Path) -> None:
    with Spool(tmp_path, max_messages=3) as spool:
        for i in range(5):
            spool.append(b"%d" % i)
        assert len(spool) == 3
        assert spool.dropped == 2
        assert [m.payload for m in spool.peek(10)] == [b"2", b"3", b"4"]
        assert not spool.ack(1)  # dropped while "in flight": nothing to ack
    with Spool(tmp_path, max_messages=2) as spool:  # a smaller limit applies on open
        assert spool.dropped == 3
        assert [m.payload for m in spool.peek(10)] == [b"3", b"4"]


def test_crash_between_write_and_rename_leaves_a_temp_file_that_is_removed(
    tmp_path: Path,
) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b"kept")
    (tmp_path / "0000000000000002.msg.tmp").write_bytes(b"NWSPOOL1 10 0000")  # torn
    with Spool(tmp_path) as spool:
        assert [m.payload for m in spool.peek(10)] == [b"kept"]
        assert spool.corrupt == 0
        assert spool.append(b"next") == 2
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: data[:-3], id="truncated"),
        pytest.param(lambda data: data[:-1] + b"?", id="bit-rot"),
        pytest.param(lambda data: b"garbage\n" + data, id="bad-header"),
    ],
)
def test_corrupt_files_are_skipped_and_counted(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    with Spool(tmp_path) as spool:
        for payload in (b"first", b"second", b"third"):
            spool.append(payload)
    victim = tmp_path / "0000000000000002.msg"
    victim.write_bytes(damage(victim.read_bytes()))
    with Spool(tmp_path) as spool:
        assert [m.payload for m in spool.peek(10)] == [b"first", b"third"]
        assert spool.corrupt == 1
    assert not victim.exists()
    with Spool(tmp_path) as spool:  # the counter is kept
        assert spool.corrupt == 1


def test_corruption_found_at_peek_time(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b"a")
        spool.append(b"b")
        (tmp_path / "0000000000000001.msg").write_bytes(b"")
        assert spool.peek(1) == [SpooledMessage(2, b"b")]
        assert spool.corrupt == 1
        assert len(spool) == 1


def test_unreadable_meta_is_ignored(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b"a")
    (tmp_path / "spool.json").write_text("{")
    with Spool(tmp_path) as spool:
        assert spool.append(b"b") == 2
        spool.ack(1)
        spool.ack(2)
    assert json.loads((tmp_path / "spool.json").read_text()) == {
        "next_seq": 3,
        "dropped": 0,
        "corrupt": 0,
    }


def test_one_spool_per_directory(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(SpoolLockedError, match="in use"):
        Spool(tmp_path)
    with Spool(tmp_path):  # released on close
        pass


def test_unusable_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match="cannot use spool directory"):
        Spool(tmp_path / "file" / "spool")
    with pytest.raises(ValueError, match="at least 1"):
        Spool(tmp_path, max_messages=0)


def test_files_are_what_the_docstring_says(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(b'{"a": 1}')
    names = sorted(os.listdir(tmp_path))
    assert names == [".lock", "0000000000000001.msg"]
    crc = zlib.crc32(b'{"a": 1}')
    assert (tmp_path / names[1]).read_bytes() == b'NWSPOOL1 8 %08x\n{"a": 1}' % crc


def test_a_failed_sync_stores_nothing(tmp_path: Path) -> None:
    synced: list[int] = []
    failing = [True]

    def sync(fd: int) -> None:
        synced.append(fd)
        if failing[0]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fsync(fd)

    with Spool(tmp_path, sync=sync) as spool:
        with pytest.raises(OSError, match="Input/output error"):
            spool.append(b"lost")
        assert len(spool) == 0
        assert sorted(os.listdir(tmp_path)) == [".lock"]  # no message, no temp file
        failing[0] = False
        assert spool.append(b"kept") == 1  # the number was not used up
        assert len(synced) == 1 + 2  # the file, then the directory
    with Spool(tmp_path) as spool:
        assert spool.peek(10) == [SpooledMessage(1, b"kept")]
