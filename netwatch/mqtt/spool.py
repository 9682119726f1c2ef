"""A durable, bounded, ordered on-disk queue: the event spool.

One file per message, named by its zero-padded sequence number
(``0000000000000042.msg``), so the directory listing *is* the queue and a
restart rebuilds it by listing.  Events are rare (a few per failover), so a
file and two fsyncs per message cost nothing that matters, and a torn write
can only ever damage the one message being written.

Durability: `append` writes a temporary file, fsyncs it, renames it into
place and fsyncs the directory, so the message survives a crash or power
loss once `append` returns.  `ack` unlinks without an fsync: a crash right
after may bring an acknowledged message back, which the broker then sees
twice (delivery is at least once; consumers de-duplicate on the event id).

Each file starts with a header line ``NWSPOOL1 <length> <crc32>``; a file
that is empty, truncated or fails its checksum is deleted and counted in
`corrupt`.  Temporary files left by a crash between write and rename are
deleted on open.  ``spool.json`` keeps what the listing cannot tell: the
next sequence number (so numbers keep increasing even after the spool
empties) and the `dropped` and `corrupt` counters.

When full, `append` drops the oldest message: the newest events describe
the current situation best.  A lock file (flock) keeps two publishers off
the same spool.  Not thread-safe: use it from one thread at a time.  Its
fsyncs take as long as the disk likes, so `netwatch.mqtt.Publisher` keeps
it on a writer thread of its own, never on the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Self

from netwatch.mqtt.errors import SpoolError, SpoolLockedError

log = logging.getLogger(__name__)

_MAGIC = b"NWSPOOL1"
_NAME = re.compile(r"(\d{16})\.msg")
_TMP_SUFFIX = ".tmp"
_META = "spool.json"
_LOCK = ".lock"


class SpooledMessage(NamedTuple):
    seq: int
    payload: bytes


class Spool:
    """``Spool(directory, max_messages=10000)``: see the module docstring.

    Raises `SpoolError` if the directory cannot be created or opened and
    `SpoolLockedError` if another `Spool` holds it; `append` raises `OSError`
    when the disk refuses the write (the message is then not stored).

    `sync` makes a file descriptor durable (`os.fsync`); tests give a slow or
    failing one to play a sick disk.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_messages: int = 10_000,
        sync: Callable[[int], None] = os.fsync,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        self.directory = Path(directory)
        self.max_messages = max_messages
        self._sync = sync
        self._seqs: deque[int] = deque()
        self._next_seq = 1
        self._dropped = 0
        self._corrupt = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {self.directory}: {exc}") from None
        try:
            self._lock_fd = self._lock()
            self._load()
        except BaseException:
            self.close()
            raise

    # -- public API -------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Store `payload`; it is on disk when this returns.  Returns its
        sequence number.  If the spool was full, the oldest message is dropped."""
        seq = self._next_seq
        header = b"%s %d %08x\n" % (_MAGIC, len(payload), zlib.crc32(payload))
        self._write_atomic(f"{seq:016d}.msg", header + payload)
        self._next_seq = seq + 1
        self._seqs.append(seq)
        while len(self._seqs) > self.max_messages:
            self._drop_oldest()
        return seq

    def peek(self, n: int = 1) -> list[SpooledMessage]:
        """Up to `n` messages, oldest first, without removing them."""
        found: list[SpooledMessage] = []
        for seq in list(self._seqs):
            if len(found) >= n:
                break
            payload = self._read(seq)
            if payload is None:
                self._discard_corrupt(seq)
            else:
                found.append(SpooledMessage(seq, payload))
        return found

    def ack(self, seq: int) -> bool:
        """Remove message `seq` (delivered).  False if it is not in the spool,
        e.g. because it was dropped while being delivered."""
        try:
            self._seqs.remove(seq)
        except ValueError:
            return False
        if not self._seqs or self._seqs[-1] < seq:
            # The newest file goes: record the sequence number first, or a
            # restart would reuse it.
            self._save_meta()
        self._unlink(seq)
        return True

    def __len__(self) -> int:
        return len(self._seqs)

    @property
    def oldest(self) -> int | None:
        """The sequence number of the oldest message, None when empty."""
        return self._seqs[0] if self._seqs else None

    @property
    def dropped(self) -> int:
        """Messages dropped because the spool was full (since it was created)."""
        return self._dropped

    @property
    def corrupt(self) -> int:
        """Unreadable messages deleted (since the spool was created)."""
        return self._corrupt

    def close(self) -> None:
        """Release the lock; the messages stay on disk for the next `Spool`."""
        for name in ("_lock_fd", "_dir_fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------

    def _lock(self) -> int:
        fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLockedError(
                f"spool {self.directory} is in use by another publisher"
            ) from None
        return fd

    def _load(self) -> None:
        meta = self._load_meta()
        seqs: list[int] = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(_TMP_SUFFIX):
                # A crash between write and rename: the message was never
                # acknowledged to the caller as stored, so it is not ours.
                log.warning("spool %s: removing unfinished write %s", self.directory, entry.name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            elif match := _NAME.fullmatch(entry.name):
                seqs.append(int(match.group(1)))
        seqs.sort()
        self._seqs = deque(seqs)
        self._dropped = meta.get("dropped", 0)
        self._corrupt = meta.get("corrupt", 0)
        self._next_seq = max(meta.get("next_seq", 1), seqs[-1] + 1 if seqs else 1)
        for seq in seqs:
            if self._read(seq) is None:
                self._discard_corrupt(seq)
        while len(self._seqs) > self.max_messages:
            self._drop_oldest()

    def _load_meta(self) -> dict[str, int]:
        try:
            data = json.loads((self.directory / _META).read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("spool %s: ignoring unreadable %s (%s)", self.directory, _META, exc)
            return {}
        if not isinstance(data, dict):
            return {}
        keys = ("next_seq", "dropped", "corrupt")
        return {k: v for k, v in data.items() if k in keys and type(v) is int and v >= 0}

    def _save_meta(self) -> None:
        meta = {"next_seq": self._next_seq, "dropped": self._dropped, "corrupt": self._corrupt}
        self._write_atomic(_META, json.dumps(meta).encode())

    def _write_atomic(self, name: str, data: bytes) -> None:
        tmp = self.directory / (name + _TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._sync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.rename(tmp, self.directory / name)
        self._sync(self._dir_fd)

    def _read(self, seq: int) -> bytes | None:
        try:
            data = (self.directory / f"{seq:016d}.msg").read_bytes()
        except FileNotFoundError:
            return None
        header, newline, payload = data.partition(b"\n")
        parts = header.split(b" ")
        if not newline or len(parts) != 3 or parts[0] != _MAGIC:
            return None
        try:
            length, crc = int(parts[1]), int(parts[2], 16)
        except ValueError:
            return None
        if len(payload) != length or zlib.crc32(payload) != crc:
            return None
        return payload

    def _discard_corrupt(self, seq: int) -> None:
        log.warning("spool %s: deleting unreadable message %016d.msg", self.directory, seq)
        with contextlib.suppress(ValueError):
            self._seqs.remove(seq)
        self._corrupt += 1
        self._save_meta()
        self._unlink(seq)

    def _drop_oldest(self) -> None:
        seq = self._seqs.popleft()
        self._dropped += 1
        if self._dropped == 1 or self._dropped % 100 == 0:
            log.warning(
                "spool %s full (%d messages): dropped the oldest, %d dropped so far",
                self.directory,
                self.max_messages,
                self._dropped,
            )
        self._save_meta()
        self._unlink(seq)

    def _unlink(self, seq: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / f"{seq:016d}.msg")
