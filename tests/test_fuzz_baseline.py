"""Fuzzing loadprobe's reader of a previous report.json (`--baseline`,
`loadprobe.run.load_baseline` over `report.schema.read_baseline`): any bytes
in the file give a baseline or the one-line `UserError` naming the file,
never another exception; and a baseline's figures are numbers a degradation
factor can be computed from (finite: an infinite p95 made every factor 0).

Inputs: arbitrary bytes, arbitrary JSON, deeply nested or huge numbers, and a
valid report.json with fields deleted, added or replaced by random JSON
values (NaN and the infinities included, as Python's json writes them).

Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadprobe.report.schema import Baseline, stats_dict
from loadprobe.run import load_baseline
from loadprobe.verdict import PERCENTILES, TxStats, degradation_factor
from netwatch.errors import UserError
from netwatch.topology import TRANSACTIONS

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None)

STATS = TxStats(
    count=40,
    ok=39,
    failed=1,
    error_ratio=0.025,
    min=0.01,
    mean=0.03,
    max=0.09,
    percentiles={q: 0.01 * (1 + i) for i, q in enumerate(PERCENTILES)},
    errors={"status: 503": 1},
)
GOOD: dict[str, Any] = {
    "schema": 1,
    "kind": "compare",
    "verdict": "pass",
    "runs": [
        {
            "label": label,
            "started_at": "2026-12-01T05:00:00Z",
            "path": {"requested": label, "observed": label},
            "transactions": {name: stats_dict(STATS) for name in TRANSACTIONS},
        }
        for label in ("primary", "backup")
    ],
}

keys = st.text(max_size=10) | st.sampled_from(["a\nb", "\r", "\u2028", "", "logon"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
figures_values = json_values | st.sampled_from(
    [math.nan, math.inf, -math.inf, -1, -0.0, 0, 1e308, 2**63, 2**64, True, "1", 1.0, {"x": 1}]
)


class Blob(bytes):
    """Bytes that show as their start and size: a failing example's report
    stays short (and under Hypothesis' large-repr warning)."""

    def __repr__(self) -> str:
        return f"Blob({bytes(self[:24])!r}... {len(self)} bytes)"


huge = st.sampled_from(
    [
        b"[" * 100_000,
        b'{"schema": 1, "runs": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"schema": ' + b"1" * 5_000 + b"}",
        b"\xef\xbb\xbf{}",  # a BOM
        json.dumps(GOOD).encode("utf-16"),
        b'{"schema": 1, "runs": [{"label": "\\ud800"}]}',
    ]
).map(Blob)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The valid report with one to three fields deleted, added or replaced."""
    data: Any = copy.deepcopy(GOOD)
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):  # a transaction's figures: the fields read back
            runs = data.get("runs") if isinstance(data, dict) else None
            run = runs[draw(st.integers(0, 1))] if isinstance(runs, list) and len(runs) == 2 else {}
            by_name = run.get("transactions") if isinstance(run, dict) else None
            figures = (
                by_name.get(draw(st.sampled_from(TRANSACTIONS)))
                if isinstance(by_name, dict)
                else None
            )
            if isinstance(by_name, dict) and draw(st.booleans()):
                by_name[draw(keys)] = draw(figures_values)  # a transaction of any name
            elif isinstance(figures, dict) and figures:
                figures[draw(st.sampled_from(sorted(figures)))] = draw(figures_values)
            continue
        parent: Any = data
        while draw(st.booleans()):
            if isinstance(parent, dict) and parent:
                child = parent[draw(st.sampled_from(sorted(parent)))]
            elif isinstance(parent, list) and parent:
                child = parent[draw(st.integers(0, len(parent) - 1))]
            else:
                break
            if not isinstance(child, dict | list) or not child:
                break
            parent = child
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if isinstance(parent, list):
            if parent and action != "add":
                i = draw(st.integers(0, len(parent) - 1))
                if action == "delete":
                    del parent[i]
                else:
                    parent[i] = draw(json_values)
            else:
                parent.append(draw(json_values))
        elif action == "add" or not parent:
            parent[draw(keys)] = draw(json_values)
        elif action == "delete":
            del parent[draw(st.sampled_from(sorted(parent)))]
        else:
            parent[draw(st.sampled_from(sorted(parent)))] = draw(json_values)
    return json.dumps(data).encode()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-baseline") / "report.json"


def read(file: Path, content: bytes) -> Baseline | UserError:
    """`load_baseline` on a file holding `content`, with the property checked."""
    file.write_bytes(content)
    try:
        baseline = load_baseline(str(file))
    except UserError as exc:
        message = str(exc)
        assert message.startswith(f"--baseline {file}: ")
        assert len(message.splitlines()) == 1
        return exc
    assert baseline.source.startswith(str(file))
    for stats in baseline.stats.values():
        figures = [stats.error_ratio, stats.min, stats.mean, stats.max, *stats.percentiles.values()]
        assert all(math.isfinite(f) for f in figures if f is not None), stats
        degradation_factor(STATS, stats)
    return baseline


# --- properties ------------------------------------------------------------------------


def test_a_valid_report_is_a_baseline_of_its_primary_run(scratch: Path) -> None:
    baseline = read(scratch, json.dumps(GOOD).encode())
    assert isinstance(baseline, Baseline)
    assert baseline.stats == {name: STATS for name in TRANSACTIONS}
    assert "(run primary, " in baseline.source


@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()) | huge)
def test_any_file_gives_a_baseline_or_a_one_line_user_error(scratch: Path, content: bytes) -> None:
    read(scratch, content)


@settings(FUZZ, max_examples=150)
@given(mutated())
def test_a_mutated_report_gives_a_baseline_or_a_one_line_user_error(
    scratch: Path, content: bytes
) -> None:
    read(scratch, content)


def test_a_directory_without_a_report_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"not a loadprobe report\.json"):
        load_baseline(str(tmp_path))


# --- regressions found by the properties above ------------------------------------------


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("field", ["p95_seconds", "mean_seconds", "min_seconds"])
def test_a_figure_that_is_not_a_finite_number_is_refused(
    tmp_path: Path, field: str, value: float
) -> None:
    # Python's json writes (and read) Infinity and NaN; a baseline p95 of
    # Infinity made the degradation factor 0 and the check pass.
    report = copy.deepcopy(GOOD)
    report["runs"][0]["transactions"]["logon"][field] = value
    file = tmp_path / "report.json"
    file.write_text(json.dumps(report))
    with pytest.raises(UserError, match=rf"runs\.0\.transactions\.logon\.{field}: .*finite"):
        load_baseline(str(file))


def test_a_key_that_is_not_printable_is_shown_quoted_on_one_line(tmp_path: Path) -> None:
    report = copy.deepcopy(GOOD)
    report["runs"][0]["transactions"]["a\nb"] = 1
    file = tmp_path / "report.json"
    file.write_text(json.dumps(report))
    with pytest.raises(UserError) as caught:
        load_baseline(str(file))
    assert str(caught.value).endswith(": runs.0.transactions.'a\\nb': Input should be an object")
    assert "\n" not in str(caught.value)  # was 2 lines: the key's newline as it is
