"""The raw-sample stream between Locust and `loadprobe run`.

Locust's own statistics round response times into buckets; verdicts need
the exact durations. So every Locust process records each transaction and
each HTTP request as it happens, and the samples reach one file, one JSON
array per line (the master writes its workers' samples; a single process
writes its own):

    ["t", start, transaction, duration, ok, error, terminal]   a transaction
    ["r", start, transaction, request, duration, ok, error]    one HTTP request in it
    ["u", time, terminals]                                     active terminals now
    ["e", time]                                                the stream is complete

Times are epoch seconds, durations seconds (from time.perf_counter), ok is
1 or 0, error a one-line reason or null. `SampleReader` reads a file while
it grows (only whole lines), which is how the live display and the
Prometheus endpoint follow a run. Neither Locust nor gevent is imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loadprobe.verdict import Sample

Row = list[object]


@dataclass(frozen=True, slots=True)
class TxRecord:
    transaction: str
    terminal: int | None
    sample: Sample


@dataclass(frozen=True, slots=True)
class RequestRecord:
    transaction: str
    request: str
    sample: Sample


@dataclass(frozen=True, slots=True)
class UsersRecord:
    time: float
    terminals: int


@dataclass(frozen=True, slots=True)
class EndRecord:
    time: float


Record = TxRecord | RequestRecord | UsersRecord | EndRecord


def tx_row(
    start: float, transaction: str, duration: float, ok: bool, error: str | None, terminal: int
) -> Row:
    return ["t", round(start, 6), transaction, round(duration, 7), int(ok), error, terminal]


def request_row(
    start: float, transaction: str, request: str, duration: float, ok: bool, error: str | None
) -> Row:
    return ["r", round(start, 6), transaction, request, round(duration, 7), int(ok), error]


def users_row(time: float, terminals: int) -> Row:
    return ["u", round(time, 3), terminals]


def end_row(time: float) -> Row:
    return ["e", round(time, 3)]


def encode(rows: Iterable[Row]) -> str:
    return "".join(
        json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows
    )


def decode(line: str) -> Record | None:
    """One line of the stream; None for a line that is not a record (skipped)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return from_row(row)


def from_row(row: object) -> Record | None:
    """One parsed row of the stream; None when it is not a record."""
    if not isinstance(row, list) or not row:
        return None
    try:
        kind = row[0]
        if kind == "t":
            _, start, tx, duration, ok, error, terminal = row
            sample = Sample(float(start), float(duration), bool(ok), _text(error))
            return TxRecord(str(tx), None if terminal is None else int(terminal), sample)
        if kind == "r":
            _, start, tx, request, duration, ok, error = row
            return RequestRecord(
                str(tx), str(request), Sample(float(start), float(duration), bool(ok), _text(error))
            )
        if kind == "u":
            _, time, terminals = row
            return UsersRecord(float(time), int(terminals))
        if kind == "e":
            _, time = row
            return EndRecord(float(time))
    except (TypeError, ValueError):
        return None
    return None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass
class SampleReader:
    """Follows one sample file as it grows; `read()` returns the new records."""

    path: Path
    _offset: int = 0
    _partial: bytes = b""
    skipped: int = field(default=0)

    def read(self) -> list[Record]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out: list[Record] = []
        for raw in lines:
            if not raw.strip():
                continue
            record = decode(raw.decode("utf-8", errors="replace"))
            if record is None:
                self.skipped += 1
            else:
                out.append(record)
        return out


def read_all(path: Path) -> Iterator[Record]:
    yield from SampleReader(path).read()
