"""The parts of report.json that loadprobe reads back, defined once.

`TxFigures` is one transaction's figures: the report writes them from a
`TxStats` (`stats_dict`) and a baseline reads them back (`stats_from_dict`,
`read_baseline`), strictly: a missing field or a value of the wrong type is
an error naming the file and the field, never a figure taken as zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loadprobe.verdict import PERCENTILES, TxStats

SCHEMA = 1

# Strict: a count is an int, not 3.0 or "3"; a figure is a finite number
# (Python's json reads NaN and Infinity: a baseline p95 of Infinity made every
# degradation factor 0); unknown keys (the timeline, the distribution, ...)
# are what the report adds for people, not for us.
_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True, allow_inf_nan=False)


class TxFigures(BaseModel):
    """One transaction's figures in report.json (``runs[].transactions.<name>``)."""

    model_config = _STRICT

    count: int = Field(ge=0)
    ok: int = Field(ge=0)
    failed: int = Field(ge=0)
    error_ratio: float | None = Field(ge=0, le=1)
    min_seconds: float | None
    mean_seconds: float | None
    max_seconds: float | None
    # One field per verdict.PERCENTILES (read and written through _percentile_field).
    p50_seconds: float | None
    p90_seconds: float | None
    p95_seconds: float | None
    p99_seconds: float | None
    errors: dict[str, int]

    @classmethod
    def of(cls, stats: TxStats) -> TxFigures:
        values: dict[str, Any] = {
            "count": stats.count,
            "ok": stats.ok,
            "failed": stats.failed,
            "error_ratio": stats.error_ratio,
            "min_seconds": stats.min,
            "mean_seconds": stats.mean,
            "max_seconds": stats.max,
            **{_percentile_field(q): stats.percentiles.get(q) for q in PERCENTILES},
            "errors": dict(stats.errors),
        }
        return cls.model_construct(**values)  # figures of our own: nothing to validate

    def stats(self) -> TxStats:
        return TxStats(
            count=self.count,
            ok=self.ok,
            failed=self.failed,
            error_ratio=self.error_ratio,
            min=self.min_seconds,
            mean=self.mean_seconds,
            max=self.max_seconds,
            percentiles={q: getattr(self, _percentile_field(q)) for q in PERCENTILES},
            errors=dict(self.errors),
        )


def _percentile_field(q: int) -> str:
    return f"p{q}_seconds"


class _Run(BaseModel):
    model_config = _STRICT

    label: str
    started_at: str
    transactions: dict[str, TxFigures]


class _Report(BaseModel):
    model_config = _STRICT

    schema_version: Literal[1] = Field(alias="schema")
    runs: list[_Run] = Field(min_length=1)


def stats_dict(stats: TxStats) -> dict[str, Any]:
    """A transaction's figures as report.json holds them."""
    return TxFigures.of(stats).model_dump()


def stats_from_dict(data: object) -> TxStats:
    """Back from report.json's figures of one transaction; ValueError (one line,
    naming the field) when they are not such figures."""
    try:
        return TxFigures.model_validate(data).stats()
    except ValidationError as exc:
        raise ValueError(_first_problem(exc)) from None


@dataclass(frozen=True)
class Baseline:
    """The figures a run is measured against, and where they come from."""

    stats: dict[str, TxStats]
    source: str  # for the report: the file, the run's label and start


def read_baseline(text: str) -> Baseline:
    """The primary run (or the only run) of a report.json, or of the report
    directory `text`; ValueError with a one-line reason naming the file."""
    path = Path(text)
    if path.is_dir():
        path = path / "report.json"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: not a loadprobe report.json ({exc.strerror or exc})") from None
    try:
        report = _Report.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: not a loadprobe report.json: {_first_problem(exc)}") from None
    run = next((r for r in report.runs if r.label == "primary"), report.runs[0])
    return Baseline(
        {name: figures.stats() for name, figures in run.transactions.items()},
        f"{path} (run {run.label}, {run.started_at})",
    )


def _first_problem(exc: ValidationError) -> str:
    """'runs.0.transactions.logon.count: Input should be a valid integer (and 2 more)'."""
    first = exc.errors()[0]
    parts = [str(part) for part in first["loc"]]
    where = ".".join(p if p.isprintable() else repr(p) for p in parts)  # a key "a\nb": one line
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}"
