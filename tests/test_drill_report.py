"""The reports of a drill and of an acceptance campaign (netwatch.drill.report),
from records built by hand: a passed drill, an aborted one, a refused one."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from loadprobe.report.svg import Marker, Series, chart
from netwatch.drill import report_timeline
from netwatch.drill.record import (
    DRILL_STEPS,
    AcceptanceRecord,
    Check,
    DrillRecord,
    LoadSummary,
    Mark,
    ObserverSeries,
    Step,
    TownAcceptance,
)
from netwatch.drill.report import (
    read_acceptance_report,
    write_acceptance_report,
    write_drill_report,
)
from netwatch.errors import UserError
from netwatch.messages import DrillStatus

T0 = 1_780_000_000.0
FAULT, RESTORE = T0 + 30.0, T0 + 80.0
MARKS = [
    Mark("fault", FAULT, "LGWAN cut"),
    Mark("detection", FAULT + 1.2, "failover decided"),
    Mark("route_change", FAULT + 1.5, "routes on flets"),
    Mark("restore", RESTORE, "LGWAN restored"),
    Mark("failback", RESTORE + 31.0, "back on lgwan"),
]


def observer(kind: str, bins: int, silent: range, rtt: float) -> ObserverSeries:
    """`bins` bins of 100 ms, 10 probes each, nothing answered in `silent`."""
    answered = [0 if i in silent else 10 for i in range(bins)]
    return ObserverSeries(
        kind=kind,
        target="10.0.0.10",
        interval_s=0.01,
        bin_s=0.1,
        t0=T0,
        sent=[10] * bins,
        answered=answered,
        rtt_p50_s=[None if i in silent else rtt for i in range(bins)],
        rtt_max_s=[None if i in silent else rtt * 3 for i in range(bins)],
        gap_threshold_s=0.5,
        gaps=[(T0 + silent.start * 0.1, T0 + silent.stop * 0.1)],
    )


def load(label: str, root: Path, *, passed: bool | None = True, path: str = "lgwan") -> LoadSummary:
    return LoadSummary(
        label=label,
        path=path,
        report_dir=str(root / "runs" / label),
        exit_code=None if passed is None else (0 if passed else 1),
        passed=passed,
        transactions=480,
        failures=0 if passed else 7,
        p95_s={"logon": 0.42, "certificate": 1.1},
        degradation={"logon": 1.8, "certificate": 2.4} if label != "baseline" else {},
        failed_checks=[] if passed is not False else ["certificate p95 <= 2s"],
    )


def events() -> list[dict[str, object]]:
    return [
        {
            "schema": 1,
            "town": "nishiki",
            "ts": "2026-05-28T20:27:11.200Z",
            "kind": "event",
            "id": "8f1b7a52-64f1-4c1e-9a52-2d0c8d6e3f10",
            "event": "failover",
            "path": None,
            "from_path": "lgwan",
            "to_path": "flets",
            "reason": "lgwan down: 5 probes lost",
            "duration_s": 1.2,
            "details": None,
        },
        {"ts": "2026-05-28T20:27:11.500Z", "event": "routes_applied", "to_path": "flets",
         "reason": "netlink", "duration_s": 1.5},
    ]  # fmt: skip


def steps(until: str, last: Step | None = None) -> list[Step]:
    out = []
    for i, name in enumerate(DRILL_STEPS[: DRILL_STEPS.index(until)]):
        out.append(Step(name, T0 + 10 * i, T0 + 10 * i + 9, "ok", f"{name} done"))
    return out + ([last] if last else [])


def passed_drill(root: Path) -> DrillRecord:
    return DrillRecord(
        drill_id="5b0f1c2e-9a8d-4c1b-8e7f-0a1b2c3d4e5f",
        town="nishiki",
        town_name="西木町",
        fault="lab",
        started=T0 - 60,
        ended=T0 + 140,
        status=DrillStatus.PASSED,
        settings={"max_outage_s": 30, "load": {"terminals": 10}},
        versions={"netwatch": "0.1.0", "locust": "2.31"},
        steps=[*steps("verdict"), Step("verdict", T0 + 130, T0 + 131, "ok", "4 checks")],
        marks=MARKS,
        # 130 s of 100 ms bins: more than the chart draws, so they are merged.
        observer=[
            observer("icmp", 1300, range(300, 318), 0.012),
            observer("tcp", 1300, range(300, 321), 0.015),
        ],
        measurements={
            "outage_s": 2.1,
            "outage_icmp_s": 1.8,
            "outage_tcp_s": 2.1,
            "detection_s": 1.2,
            "route_change_s": 1.5,
            "failback_s": 31.0,
            "failback_outage_s": 0.3,
            "holddown_s": 30.0,
            "primary_up_to_failback_s": 31.0,
        },
        loads=[load("baseline", root), load("degraded", root, path="flets")],
        checks=[
            Check("outage", "<= 30 s", "2.10 s", True),
            Check("failback_outage", "<= 5 s", "300 ms", True),
            Check("load_test", "SLA", "pass", True),
            Check("holddown", ">= 30 s", "31.0 s", True),
        ],
        events=events(),
    )


def aborted_drill(root: Path) -> DrillRecord:
    return DrillRecord(
        drill_id="6c1f1c2e-9a8d-4c1b-8e7f-0a1b2c3d4e5f",
        town="nishiki",
        town_name="西木町",
        fault="lab",
        started=T0 - 60,
        ended=T0 + 50,
        status=DrillStatus.ABORTED,
        reason="stop condition: backup loss 40% > 20%",
        stopped_at="degraded",
        steps=steps("degraded", Step("degraded", T0 + 40, T0 + 50, "aborted", "backup lossy")),
        marks=[*MARKS[:3], Mark("abort", T0 + 50, "abort")],
        observer=[observer("icmp", 500, range(300, 318), 0.012)],
        measurements={"outage_s": 1.8, "outage_icmp_s": 1.8, "outage_tcp_s": None},
        loads=[load("baseline", root), load("degraded", root, passed=None, path="flets")],
        checks=[
            Check("outage", "<= 30 s", "1.80 s", True),
            Check("load_test", "SLA", None, None, "no verdict: aborted"),
        ],
        events=events(),
    )


def refused_drill() -> DrillRecord:
    return DrillRecord(
        drill_id="7d1f1c2e-9a8d-4c1b-8e7f-0a1b2c3d4e5f",
        town="hanamura",
        town_name="花村",
        fault="lab",
        started=T0,
        ended=T0 + 2,
        status=DrillStatus.REFUSED,
        reason="the backup path flets is down",
        stopped_at="precheck",
        steps=[Step("precheck", T0, T0 + 2, "failed", "flets: down")],
    )


class TagChecker(HTMLParser):
    """Every element closed, in order (a cheap well-formedness check)."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1]}>"
        self.stack.pop()


def check_page(page: str) -> list[ET.Element]:
    """The page is well formed, self-contained; returns its parsed SVGs."""
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    assert "<script" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    return [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", page, re.S)]


def junit_counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    return {k: int(root.get(k, "-1")) for k in ("tests", "failures", "errors", "skipped")}


# --- drills -----------------------------------------------------------------------------------


def test_a_passed_drill_writes_three_files_and_json_round_trips(tmp_path: Path) -> None:
    record = passed_drill(tmp_path)
    paths = write_drill_report(record, tmp_path / "report")
    assert [p.name for p in paths] == ["drill.json", "drill.html", "junit.xml"]
    assert all(p.is_file() for p in paths)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(
        p.name for p in paths
    )  # no temporary file left behind
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    assert data["kind"] == "drill"
    assert (data["status"], data["exit_code"]) == ("passed", 0)
    assert data["town_name"] == "西木町"  # ensure_ascii=False
    assert "西木町" in paths[0].read_text(encoding="utf-8")
    assert data == json.loads(json.dumps(record.to_dict()))


def test_a_passed_drill_page_shows_verdict_timeline_and_every_section(tmp_path: Path) -> None:
    record = passed_drill(tmp_path)
    page = write_drill_report(record, tmp_path / "report")[1].read_text(encoding="utf-8")
    svgs = check_page(page)
    assert page.index("PASSED") < page.index("Timeline") < page.index("Checks")
    assert len(svgs) == 2  # round-trip time and loss, stacked
    assert len(page.encode()) < 250_000  # 1300 bins merged, not drawn one by one
    for mark in MARKS:
        assert mark.label in page
    for name in DRILL_STEPS:
        assert f"<td>{name}</td>" in page
    assert "not run" not in page
    assert "Hold-down honoured" in page
    assert "failover" in page
    assert "lgwan → flets" in page
    assert "max_outage_s" in page
    assert "locust" in page
    # The load runs' reports are linked relative to the drill report's directory.
    assert "href='../runs/baseline/report.html'" in page
    assert "href='../runs/degraded/report.html'" in page
    assert "2.40×" in page  # degradation factor


def test_a_passed_drill_junit_has_a_case_per_check(tmp_path: Path) -> None:
    path = write_drill_report(passed_drill(tmp_path), tmp_path)[2]
    assert junit_counts(path) == {"tests": 4, "failures": 0, "errors": 0, "skipped": 0}
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("name") == "netwatch.drill.nishiki"
    assert suite.get("timestamp")
    assert suite.get("time") == "200.000"


def test_an_aborted_drill_says_where_and_why_it_stopped(tmp_path: Path) -> None:
    record = aborted_drill(tmp_path)
    paths = write_drill_report(record, tmp_path / "report")
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    assert (data["status"], data["exit_code"], data["stopped_at"]) == ("aborted", 3, "degraded")
    page = paths[1].read_text(encoding="utf-8")
    check_page(page)
    assert "ABORTED" in page
    assert "stopped at step degraded: stop condition: backup loss 40% &gt; 20%" in page
    for name in DRILL_STEPS:
        assert f"<td>{name}</td>" in page
    assert page.count("not run") >= 3  # restore, failback, verdict
    assert "<tr class='stop'><td>degraded</td>" in page
    assert "no verdict" in page
    assert "NOT JUDGED" in page
    assert "Hold-down: not measured" in page
    assert "abort" in page
    # one error (the aborted step), one skipped (the check not judged)
    assert junit_counts(paths[2]) == {"tests": 3, "failures": 0, "errors": 1, "skipped": 1}


def test_a_refused_drill_with_only_its_precheck(tmp_path: Path) -> None:
    paths = write_drill_report(refused_drill(), tmp_path / "refused")
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    assert (data["status"], data["exit_code"]) == ("refused", 2)
    page = paths[1].read_text(encoding="utf-8")
    assert check_page(page) == []  # no observer: no chart, and no empty chart either
    assert "REFUSED" in page
    assert "refused at step precheck: the backup path flets is down" in page
    assert "No observer data" in page
    assert "No load test ran" in page
    assert page.count("not run") == len(DRILL_STEPS) - 1
    # Not green in CI: the drill itself is an error case.
    assert junit_counts(paths[2]) == {"tests": 1, "failures": 0, "errors": 1, "skipped": 0}


def test_a_failed_check_is_a_junit_failure(tmp_path: Path) -> None:
    record = passed_drill(tmp_path)
    record.status = DrillStatus.FAILED
    record.reason = "the outage was too long"
    record.checks[0] = Check("outage", "<= 1 s", "2.10 s", False, "ICMP 1.8 s, TCP 2.1 s")
    paths = write_drill_report(record, tmp_path)
    assert "FAILED" in paths[1].read_text(encoding="utf-8")
    assert junit_counts(paths[2]) == {"tests": 4, "failures": 1, "errors": 0, "skipped": 0}
    failure = ET.parse(paths[2]).getroot().find("testsuite/testcase/failure")
    assert failure is not None
    assert "2.10 s" in failure.get("message", "")


def test_writing_again_replaces_the_report(tmp_path: Path) -> None:
    write_drill_report(aborted_drill(tmp_path), tmp_path)
    paths = write_drill_report(passed_drill(tmp_path), tmp_path)
    assert json.loads(paths[0].read_text(encoding="utf-8"))["status"] == "passed"
    assert not list(tmp_path.glob(".*.tmp"))


# --- the timeline -----------------------------------------------------------------------------


def test_merging_bins_keeps_a_single_silent_bin() -> None:
    series = observer("icmp", 6000, range(4321, 4322), 0.01)
    buckets = report_timeline.buckets(series, T0)
    assert len(buckets) <= report_timeline.MAX_POINTS
    silent = [b for b in buckets if b.loss == 1.0]
    assert len(silent) == 1
    assert silent[0].start <= 432.1 < silent[0].end
    assert silent[0].rtt_max_s == pytest.approx(0.03)  # the other bins answered
    assert buckets[-1].end == pytest.approx(600.0)


def test_a_bucket_where_nothing_answered_has_no_rtt() -> None:
    buckets = report_timeline.buckets(observer("tcp", 10, range(0, 10), 0.01), T0)
    assert all(math.isnan(b.rtt_p50_s) for b in buckets)
    assert all(b.loss == 1.0 for b in buckets)


def test_a_nan_breaks_a_line_and_markers_are_labelled() -> None:
    points = [(0.0, 1.0), (1.0, 2.0), (2.0, math.nan), (3.0, 1.0), (4.0, 2.0)]
    svg = chart(
        title="t",
        series=[Series("a", points)],
        markers=[Marker(1.0, "fault"), Marker(1.1, "detection")],
    )
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 2
    labels = {t.text: t.get("y") for t in root.findall(f"{ns}text")}
    assert labels["fault"] != labels["detection"]  # close together: stacked, not overlapping


# --- acceptance -------------------------------------------------------------------------------


def campaign(root: Path) -> AcceptanceRecord:
    return AcceptanceRecord(
        campaign_id="c0ffee00-9a8d-4c1b-8e7f-0a1b2c3d4e5f",
        started=T0,
        ended=T0 + 3600,
        status=DrillStatus.FAILED,
        reason="hanamura: backup load test failed",
        towns=[
            TownAcceptance(
                "nishiki",
                "西木町",
                DrillStatus.PASSED,
                "",
                T0,
                T0 + 900,
                [load("primary", root / "n"), load("backup", root / "n", path="flets")],
                skipped=True,
            ),
            TownAcceptance(
                "hanamura",
                "花村",
                DrillStatus.FAILED,
                "backup: certificate p95",
                T0 + 900,
                T0 + 1800,
                [load("primary", root / "h"), load("backup", root / "h", passed=False)],
            ),
            TownAcceptance(
                "kawabe", "川辺村", DrillStatus.ABORTED, "primary: no route", T0 + 1800, T0 + 1810
            ),
        ],
        settings={"terminals": 10},
        versions={"netwatch": "0.1.0"},
        resumed_from=str(root / "earlier" / "acceptance.json"),
    )


def test_acceptance_report_round_trips(tmp_path: Path) -> None:
    record = campaign(tmp_path)
    paths = write_acceptance_report(record, tmp_path / "acc")
    assert [p.name for p in paths] == ["acceptance.json", "acceptance.html", "junit.xml"]
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    assert (data["kind"], data["status"], data["exit_code"]) == ("acceptance", "failed", 1)
    assert read_acceptance_report(tmp_path / "acc") == record
    assert read_acceptance_report(paths[0]) == record


def test_acceptance_page_and_junit(tmp_path: Path) -> None:
    paths = write_acceptance_report(campaign(tmp_path), tmp_path / "acc")
    page = paths[1].read_text(encoding="utf-8")
    svgs = check_page(page)
    assert len(svgs) == 1  # degradation per town and transaction
    assert "FAILED" in page
    assert "1 of 3 towns passed" in page
    assert page.index("西木町") < page.index("花村") < page.index("川辺村")
    assert "(earlier run)" in page
    assert "primary: no route" in page
    assert "href='../h/runs/backup/report.html'" in page
    root = ET.parse(paths[2]).getroot()
    suites = [s.get("name") for s in root.findall("testsuite")]
    assert suites == [f"netwatch.acceptance.{t}" for t in ("nishiki", "hanamura", "kawabe")]
    # nishiki: 2 skipped (resumed); hanamura: 1 pass, 1 failure; kawabe: 1 error (no load ran)
    assert junit_counts(paths[2]) == {"tests": 5, "failures": 1, "errors": 1, "skipped": 2}


def test_reading_a_missing_report_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"acceptance\.json: no such file"):
        read_acceptance_report(tmp_path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not JSON"),
        ('{"schema": 1, "kind": "drill"}', "kind: expected 'acceptance', got 'drill'"),
        ("[]", "expected an object, got list"),
    ],
)
def test_reading_a_bad_report_names_the_file_and_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "acceptance.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        read_acceptance_report(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert problem in message
    assert "\n" not in message


def test_reading_a_wrong_value_names_its_key_path(tmp_path: Path) -> None:
    paths = write_acceptance_report(campaign(tmp_path), tmp_path)
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    data["towns"][1]["loads"][0]["passed"] = "yes"
    data["towns"][2]["status"] = "maybe"
    paths[0].write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match=r"towns\[1\]\.loads\[0\]\.passed: expected a boolean"):
        read_acceptance_report(paths[0])
    data["towns"][1]["loads"][0]["passed"] = True
    paths[0].write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match=r"towns\[2\]\.status: expected one of"):
        read_acceptance_report(paths[0])
    data["towns"][2]["status"] = "aborted"
    data["towns"][2]["colour"] = "red"
    paths[0].write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match=r"towns\[2\]: unknown key 'colour'"):
        read_acceptance_report(paths[0])
