"""Fuzzing the acceptance campaign's reader (`netwatch acceptance --resume
REPORT`, `netwatch.drill.report.read_acceptance_report`): any bytes in the
file, or a valid acceptance.json with fields deleted, added or replaced,
give a record or the one-line `UserError` naming the file, never another
exception.  Deterministic: derandomized, no example database."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netwatch.drill.record import AcceptanceRecord, TownAcceptance
from netwatch.drill.report import read_acceptance_report, write_acceptance_report
from netwatch.errors import UserError
from netwatch.messages import DrillStatus

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None)
T0 = 1_796_000_000.0


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    record = AcceptanceRecord(
        campaign_id="c0ffee00-9a8d-4c1b-8e7f-0a1b2c3d4e5f",
        started=T0,
        ended=T0 + 900,
        status=DrillStatus.PASSED,
        reason="",
        towns=[TownAcceptance("nishiki", "錦町", DrillStatus.PASSED, "", T0, T0 + 900)],
        settings={"terminals": 10},
        versions={"netwatch": "0.1.0"},
    )
    directory = tmp_path_factory.mktemp("acceptance")
    paths = write_acceptance_report(record, directory)
    data: dict[str, Any] = json.loads(paths[0].read_text(encoding="utf-8"))
    return data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


def _read(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    said = ""
    try:
        record = read_acceptance_report(path)
    except UserError as exc:
        said = str(exc)
    else:
        assert isinstance(record, AcceptanceRecord)
        return
    assert str(path) in said
    assert "\n" not in said


@FUZZ
@given(
    content=st.binary(max_size=200)
    | st.sampled_from([b"[" * 60_000, b"1" * 5000, b'{"schema": 1' + b"0" * 5000 + b"}"])
)
def test_any_bytes_give_a_record_or_one_line(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    _read(tmp_path_factory.mktemp("any") / "acceptance.json", content)


@FUZZ
@given(data=st.data())
def test_a_mutated_report_gives_a_record_or_one_line(
    tmp_path_factory: pytest.TempPathFactory, good: dict[str, Any], data: st.DataObject
) -> None:
    report = copy.deepcopy(good)
    node: Any = report
    while isinstance(node, dict | list) and node and data.draw(st.booleans()):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        if isinstance(node[key], dict | list) and node[key]:
            node = node[key]
            continue
        if isinstance(node, dict) and data.draw(st.booleans()):
            del node[key]
        else:
            node[key] = data.draw(json_values)
        break
    else:
        if isinstance(node, dict):
            node[data.draw(st.text(max_size=6))] = data.draw(json_values)
    content = json.dumps(report).encode()
    _read(tmp_path_factory.mktemp("mutated") / "acceptance.json", content)
