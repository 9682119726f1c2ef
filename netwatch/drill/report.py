"""The reports of a drill and of an acceptance campaign, and reading a
campaign's back for ``netwatch acceptance --resume``.

A drill's directory holds ``drill.json`` (the record: the one source),
``drill.html`` (report_html.py, with the timeline of report_timeline.py)
and ``junit.xml`` (report_junit.py); a campaign's, ``acceptance.json``,
``acceptance.html`` (report_acceptance.py) and ``junit.xml``.  Each file is written to a temporary
file beside it and renamed over the old one, so a crash leaves the previous
file or the new one, never half of one.  The JSON is written first: if
rendering a page fails, the record is on disk all the same.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from netwatch.drill import report_acceptance, report_html, report_junit
from netwatch.drill.record import AcceptanceRecord, DrillRecord, LoadSummary, TownAcceptance
from netwatch.errors import UserError
from netwatch.messages import DrillStatus

__all__ = ["read_acceptance_report", "write_acceptance_report", "write_drill_report"]

ACCEPTANCE_JSON = "acceptance.json"


def write_drill_report(record: DrillRecord, directory: Path) -> list[Path]:
    """Write drill.json, drill.html and junit.xml into `directory` (created
    if need be); returns their paths.  A partial record (an aborted or
    refused drill) makes a report too, saying where and why it stopped."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        _write(directory / "drill.json", lambda: _json(record.to_dict())),
        _write(directory / "drill.html", lambda: report_html.drill_page(record, directory)),
        _write(directory / "junit.xml", lambda: report_junit.drill(record)),
    ]


def write_acceptance_report(record: AcceptanceRecord, directory: Path) -> list[Path]:
    """Write acceptance.json, acceptance.html and junit.xml into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        _write(directory / ACCEPTANCE_JSON, lambda: _json(record.to_dict())),
        _write(directory / "acceptance.html", lambda: report_acceptance.render(record, directory)),
        _write(directory / "junit.xml", lambda: report_junit.acceptance(record)),
    ]


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def _write(path: Path, render: Callable[[], str]) -> Path:
    """Write what `render` returns to `path` atomically: a temporary file in
    the same directory (so the rename stays on one file system), flushed to
    disk, then renamed over `path`."""
    text = render()
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide the report from the web server
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


# --- reading acceptance.json back -------------------------------------------------------------


class _Bad(Exception):
    """A problem at a key path inside the document; becomes one UserError."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)


T = TypeVar("T")


def read_acceptance_report(path: Path) -> AcceptanceRecord:
    """Read an acceptance.json (or the directory holding one) back.

    Strict: a missing or unreadable file, text that is not JSON, another kind
    of report, a wrong type or an unknown key is a UserError naming the file
    and the key path of the problem."""
    file = path / ACCEPTANCE_JSON if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{file}: no such file (expected a campaign's {ACCEPTANCE_JSON})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot read it ({exc})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # also too deep, or too long a number
        reason = "too deeply nested" if isinstance(exc, RecursionError) else str(exc)
        raise UserError(f"{file}: not JSON ({reason})") from None
    try:
        return _campaign(data)
    except _Bad as exc:
        raise UserError(f"{file}: {exc}") from None


def _object(data: Any, where: str, known: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _Bad(where, f"expected an object, got {_kind(data)}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise _Bad(where, f"unknown key {unknown[0]!r}")
    return data


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _get(
    data: dict[str, Any],
    key: str,
    where: str,
    check: Callable[[Any], bool],
    what: str,
    default: Any = ...,
) -> Any:
    at = f"{where}.{key}" if where else key
    if key not in data:
        if default is ...:
            raise _Bad(at, "missing")
        return default
    value = data[key]
    if not check(value):
        raise _Bad(at, f"expected {what}, got {value!r}")
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_text(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_object(v: Any) -> bool:
    return isinstance(v, dict)


def _is_texts(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _status(value: Any, where: str) -> DrillStatus:
    try:
        return DrillStatus(value)
    except ValueError:
        choices = ", ".join(s.value for s in DrillStatus)
        raise _Bad(where, f"expected one of {choices}, got {value!r}") from None


def _list(data: dict[str, Any], key: str, where: str, item: Callable[[Any, str], T]) -> list[T]:
    at = f"{where}.{key}" if where else key
    values = _get(data, key, where, lambda v: isinstance(v, list), "a list", [])
    return [item(v, f"{at}[{i}]") for i, v in enumerate(values)]


def _mapping(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and all(check(x) for x in v.values())


_CAMPAIGN_KEYS = {
    "schema", "kind", "exit_code", "campaign_id", "started", "ended", "status", "reason",
    "towns", "settings", "versions", "resumed_from", "report_dir",
}  # fmt: skip
_TOWN_KEYS = {"town", "town_name", "status", "reason", "started", "ended", "loads", "skipped"}
_LOAD_KEYS = {
    "label", "path", "report_dir", "exit_code", "passed", "transactions", "failures", "p95_s",
    "degradation", "failed_checks",
}  # fmt: skip


def _campaign(data: Any) -> AcceptanceRecord:
    if isinstance(data, dict) and data.get("kind") != "acceptance":
        raise _Bad("kind", f"expected 'acceptance', got {data.get('kind')!r} (not a campaign)")
    d = _object(data, "", _CAMPAIGN_KEYS)
    if d.get("schema") != 1:
        raise _Bad("schema", f"expected 1, got {d.get('schema')!r}")
    return AcceptanceRecord(
        campaign_id=_get(d, "campaign_id", "", _is_text, "a string"),
        started=float(_get(d, "started", "", _is_number, "a number")),
        ended=_get(d, "ended", "", _opt(_is_number), "a number or null", None),
        status=_status(_get(d, "status", "", _is_text, "a string"), "status"),
        reason=_get(d, "reason", "", _is_text, "a string", ""),
        towns=_list(d, "towns", "", _town),
        settings=_get(d, "settings", "", _is_object, "an object", {}),
        versions=_get(d, "versions", "", _mapping(_is_text), "an object of strings", {}),
        resumed_from=_get(d, "resumed_from", "", _opt(_is_text), "a string or null", None),
        report_dir=_get(d, "report_dir", "", _opt(_is_text), "a string or null", None),
    )


def _town(data: Any, where: str) -> TownAcceptance:
    d = _object(data, where, _TOWN_KEYS)
    return TownAcceptance(
        town=_get(d, "town", where, _is_text, "a string"),
        town_name=_get(d, "town_name", where, _is_text, "a string"),
        status=_status(_get(d, "status", where, _is_text, "a string"), f"{where}.status"),
        reason=_get(d, "reason", where, _is_text, "a string", ""),
        started=_get(d, "started", where, _opt(_is_number), "a number or null", None),
        ended=_get(d, "ended", where, _opt(_is_number), "a number or null", None),
        loads=_list(d, "loads", where, _load),
        skipped=_get(d, "skipped", where, _is_bool, "true or false", False),
    )


def _load(data: Any, where: str) -> LoadSummary:
    d = _object(data, where, _LOAD_KEYS)
    return LoadSummary(
        label=_get(d, "label", where, _is_text, "a string"),
        path=_get(d, "path", where, _opt(_is_text), "a string or null"),
        report_dir=_get(d, "report_dir", where, _is_text, "a string"),
        exit_code=_get(d, "exit_code", where, _opt(_is_count), "an exit code or null", None),
        passed=_get(d, "passed", where, _opt(_is_bool), "a boolean or null", None),
        transactions=_get(d, "transactions", where, _is_count, "a count", 0),
        failures=_get(d, "failures", where, _is_count, "a count", 0),
        p95_s=_get(d, "p95_s", where, _mapping(_opt(_is_number)), "seconds by name", {}),
        degradation=_get(d, "degradation", where, _mapping(_opt(_is_number)), "factors", {}),
        failed_checks=_get(d, "failed_checks", where, _is_texts, "a list of strings", []),
    )
