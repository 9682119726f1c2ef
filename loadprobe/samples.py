"""The raw-sample stream between Locust and `loadprobe run`.

Locust's own statistics round response times into buckets; verdicts need
the exact durations. So every Locust process records each transaction and
each HTTP request as it happens, and the samples reach one stream file (the
master writes its workers' samples; a single process writes its own). Each
sample is a row:

    ("t", start, transaction, duration, ok, error, terminal)   a transaction
    ("r", start, transaction, request, duration, ok, error)    one HTTP request in it
    ("w", start, transaction, request, duration, ok, error, terminal)
                                  a request that is its whole transaction (both at once)
    ("u", time, terminals)                                     active terminals now
    ("e", time)                                                the stream is complete

Times are epoch seconds, durations seconds (from time.perf_counter), ok a
boolean, error a one-line reason or None.

The stream file is written on every request's path, so it is cheap to
write: chunks of rows, each a 4-byte little-endian length and the rows in
Python's `marshal` format (written and read by the same interpreter;
`marshal` is not meant for untrusted files, and this one never leaves the
machine that wrote it). `SampleReader` follows it while it grows, which is
how the live display and the Prometheus endpoint follow a run; afterwards
`loadprobe run` keeps the samples as JSON lines (`samples.jsonl`, one array
per row) beside the report. `python -m loadprobe.samples FILE` prints a
stream file as JSON lines. Neither Locust nor gevent is imported here.
"""

from __future__ import annotations

import json
import marshal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from loadprobe.verdict import Sample

Row = Sequence[object]  # a tuple when made here, a list after msgpack or JSON
ERROR_CHARS = 200  # a sample's error is one line of at most this many characters


def one_line(error: object) -> str:
    """An exception (or any reason) as a sample's error."""
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:ERROR_CHARS]


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
    return ("t", start, transaction, duration, ok, error, terminal)


def request_row(
    start: float, transaction: str, request: str, duration: float, ok: bool, error: str | None
) -> Row:
    return ("r", start, transaction, request, duration, ok, error)


def whole_row(
    start: float,
    transaction: str,
    request: str,
    duration: float,
    ok: bool,
    error: str | None,
    terminal: int,
) -> Row:
    return ("w", start, transaction, request, duration, ok, error, terminal)


def users_row(time: float, terminals: int) -> Row:
    return ("u", time, terminals)


def end_row(time: float) -> Row:
    return ("e", time)


# Recording sits on every request's path, so encoding is done by hand:
# fixed precision for numbers (µs for times, 0.1 µs for durations) and a
# cache of the JSON form of the few names that recur.
_JSON_STRINGS: dict[str, str] = {}


def _string(value: object) -> str:
    if value is None:
        return "null"
    text = str(value)
    cached = _JSON_STRINGS.get(text)
    if cached is None:
        cached = json.dumps(text, ensure_ascii=False)
        if len(_JSON_STRINGS) < 4096:
            _JSON_STRINGS[text] = cached
    return cached


def encode_row(row: Row) -> str:
    kind = row[0]
    if kind == "r":
        _, start, tx, request, duration, ok, error = row
        return (
            f'["r",{start:.6f},{_string(tx)},{_string(request)},{duration:.7f},'
            f"{1 if ok else 0},{_string(error)}]\n"
        )
    if kind == "w":
        _, start, tx, request, duration, ok, error, terminal = row
        return (
            f'["w",{start:.6f},{_string(tx)},{_string(request)},{duration:.7f},'
            f"{1 if ok else 0},{_string(error)},{int(terminal)}]\n"  # type: ignore[call-overload]
        )
    if kind == "t":
        _, start, tx, duration, ok, error, terminal = row
        return (
            f'["t",{start:.6f},{_string(tx)},{duration:.7f},{1 if ok else 0},'
            f"{_string(error)},{int(terminal)}]\n"  # type: ignore[call-overload]
        )
    if kind == "u":
        _, time, terminals = row
        return f'["u",{time:.3f},{terminals}]\n'
    return json.dumps(list(row), ensure_ascii=False, separators=(",", ":")) + "\n"


def encode(rows: Iterable[Row]) -> str:
    return "".join(encode_row(row) for row in rows)


def decode(line: str) -> list[Record]:
    """The records of one line of the stream (none for a line that is not one)."""
    try:
        row = json.loads(line)
    except ValueError:
        return []
    return from_row(row)


def from_row(row: object) -> list[Record]:
    """The records of one parsed row of the stream (none when it is not a record)."""
    if not isinstance(row, list | tuple) or not row:
        return []
    try:
        kind = row[0]
        if kind == "t":
            _, start, tx, duration, ok, error, terminal = row
            sample = Sample(float(start), float(duration), bool(ok), _text(error))
            return [TxRecord(str(tx), None if terminal is None else int(terminal), sample)]
        if kind == "r":
            _, start, tx, request, duration, ok, error = row
            sample = Sample(float(start), float(duration), bool(ok), _text(error))
            return [RequestRecord(str(tx), str(request), sample)]
        if kind == "w":
            _, start, tx, request, duration, ok, error, terminal = row
            sample = Sample(float(start), float(duration), bool(ok), _text(error))
            number = None if terminal is None else int(terminal)
            return [RequestRecord(str(tx), str(request), sample), TxRecord(str(tx), number, sample)]
        if kind == "u":
            _, time, terminals = row
            return [UsersRecord(float(time), int(terminals))]
        if kind == "e":
            _, time = row
            return [EndRecord(float(time))]
    except (TypeError, ValueError):
        return []
    return []


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def write_chunk(handle: IO[bytes], rows: Sequence[Row]) -> None:
    """Append rows to a stream file (one chunk)."""
    data = marshal.dumps(list(rows))
    handle.write(len(data).to_bytes(4, "little") + data)


@dataclass
class SampleReader:
    """Follows one stream file as it grows; `read()` returns the new records
    (and, with ``keep=True``, keeps every row for `rows`)."""

    path: Path
    keep: bool = False
    rows: list[Row] = field(default_factory=list)
    skipped: int = 0
    _offset: int = 0
    _partial: bytes = b""

    def read(self) -> list[Record]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        out: list[Record] = []
        pos = 0
        while len(data) - pos >= 4:
            size = int.from_bytes(data[pos : pos + 4], "little")
            if len(data) - pos - 4 < size:
                break  # the rest of this chunk is still being written
            try:
                rows = marshal.loads(data[pos + 4 : pos + 4 + size])
            except (ValueError, EOFError, TypeError):
                rows = None
            pos += 4 + size
            if not isinstance(rows, list):
                self.skipped += 1
                continue
            for row in rows:
                records = from_row(row)
                if not records:
                    self.skipped += 1
                    continue
                out.extend(records)
                if self.keep:
                    self.rows.append(row)
        self._partial = data[pos:]
        return out


def read_all(path: Path) -> list[Record]:
    """Every record of a stream file."""
    return SampleReader(path).read()


def main(argv: Sequence[str] | None = None) -> int:
    """Print a stream file as JSON lines."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m loadprobe.samples STREAM-FILE", file=sys.stderr)
        return 2
    reader = SampleReader(Path(args[0]), keep=True)
    reader.read()
    sys.stdout.write(encode(reader.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
