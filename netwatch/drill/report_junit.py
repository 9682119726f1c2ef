"""junit.xml of a drill or a campaign, for CI systems.

A drill is one <testsuite name="netwatch.drill.<town>">: a <testcase> per
check (<failure> when it failed, <skipped> when it was not judged) and one
per step that errored or aborted (<error>).  A drill that did not pass but
has no such case (refused at its precheck, say) gets one <error> or
<failure> case for the drill itself, so that CI never shows green for a
drill whose exit code is not 0.

A campaign is a <testsuite name="netwatch.acceptance.<town>"> per town with
a <testcase> per load run: <failure> for a failed verdict, <error> for a
run without one, <skipped> for a town passed in the report given to
--resume; a town with no load run gets one case for the town itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from netwatch.drill.record import AcceptanceRecord, DrillRecord, LoadSummary, TownAcceptance
from netwatch.messages import DrillStatus


def _iso(epoch: float | None) -> str:
    when = datetime.fromtimestamp(epoch or 0.0, UTC)
    return when.replace(tzinfo=None).isoformat(timespec="seconds")  # JUnit: no zone


def _span(start: float | None, end: float | None) -> str:
    return f"{max(0.0, end - start):.3f}" if start is not None and end is not None else "0.000"


def _case(suite: ET.Element, classname: str, name: str, time: str = "0.000") -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=name, time=time)


def _outcome(case: ET.Element, tag: str, message: str, kind: str) -> None:
    child = ET.SubElement(case, tag, message=message)
    if tag != "skipped":
        child.set("type", kind)
        child.text = message


def _finish(root: ET.Element) -> str:
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in root.iter("testsuite"):
        counts = {
            "tests": len(suite.findall("testcase")),
            "failures": len(suite.findall("testcase/failure")),
            "errors": len(suite.findall("testcase/error")),
            "skipped": len(suite.findall("testcase/skipped")),
        }
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def drill(record: DrillRecord) -> str:
    name = f"netwatch.drill.{record.town}"
    root = ET.Element("testsuites", name=f"netwatch drill {record.town}")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=name,
        timestamp=_iso(record.started),
        time=_span(record.started, record.ended),
        hostname="netwatch",
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("drill_id", record.drill_id),
        ("status", record.status.value),
        ("exit_code", str(record.exit_code)),
        ("stopped_at", record.stopped_at or ""),
        ("fault", record.fault),
    ):
        ET.SubElement(properties, "property", name=key, value=value)
    for check in record.checks:
        case = _case(suite, f"{name}.check", f"{check.name} {check.limit}".strip())
        measured = "not measured" if check.value is None else check.value
        message = f"{check.name}: {measured} (limit {check.limit})"
        if check.detail:
            message += f": {check.detail}"
        if check.passed is False:
            _outcome(case, "failure", message, check.name)
        elif check.passed is None:
            _outcome(case, "skipped", message, check.name)
        else:
            ET.SubElement(case, "system-out").text = message
    for step in record.steps:
        if step.status in ("error", "aborted"):
            case = _case(
                suite, f"{name}.step", f"step {step.name}", _span(step.started, step.ended)
            )
            _outcome(case, "error", f"{step.status}: {step.detail or record.reason}", step.status)
    red = any(suite.find(f"testcase/{tag}") is not None for tag in ("failure", "error"))
    if record.status is not DrillStatus.PASSED and not red:
        case = _case(suite, name, "drill", _span(record.started, record.ended))
        where = f" at step {record.stopped_at}" if record.stopped_at else ""
        message = f"{record.status.value}{where}: {record.reason or 'no reason recorded'}"
        tag = "failure" if record.status is DrillStatus.FAILED else "error"
        _outcome(case, tag, message, record.status.value)
    return _finish(root)


def acceptance(record: AcceptanceRecord) -> str:
    root = ET.Element("testsuites", name=f"netwatch acceptance {record.campaign_id}")
    for town in record.towns:
        _town_suite(root, town, record.started)
    return _finish(root)


def _town_suite(root: ET.Element, town: TownAcceptance, campaign_started: float) -> None:
    name = f"netwatch.acceptance.{town.town}"
    suite = ET.SubElement(
        root,
        "testsuite",
        name=name,
        timestamp=_iso(town.started if town.started is not None else campaign_started),
        time=_span(town.started, town.ended),
    )
    for load in town.loads:
        case = _case(suite, name, f"load {load.label}")
        if town.skipped:
            _outcome(case, "skipped", "passed in the report given to --resume", "skipped")
        else:
            _load_outcome(case, load, town.reason)
    if not town.loads:
        case = _case(suite, name, "town", _span(town.started, town.ended))
        reason = town.reason or "no reason recorded"
        if town.skipped:
            _outcome(case, "skipped", "passed in the report given to --resume", "skipped")
        elif town.status is DrillStatus.RUNNING:
            _outcome(case, "skipped", f"not run: {reason}", "not run")
        elif town.status is DrillStatus.FAILED:
            _outcome(case, "failure", reason, town.status.value)
        elif town.status is not DrillStatus.PASSED:
            _outcome(case, "error", f"{town.status.value}: {reason}", town.status.value)


def _load_outcome(case: ET.Element, load: LoadSummary, reason: str) -> None:
    summary = f"{load.transactions} transactions, {load.failures} failed, path {load.path or '?'}"
    if load.passed is None:
        _outcome(case, "error", f"no verdict (exit code {load.exit_code}): {reason}", "no verdict")
    elif not load.passed:
        failed = ", ".join(load.failed_checks) or "a threshold"
        _outcome(case, "failure", f"failed: {failed}; {summary}", "load_test")
    else:
        ET.SubElement(case, "system-out").text = summary
