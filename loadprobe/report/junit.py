"""junit.xml: one test case per threshold, for CI systems.

One <testsuite> per run (``loadprobe.<town>.<run>``); each threshold is a
<testcase> named like ``logon p95 <= 1s`` in class
``loadprobe.<town>.<run>.<transaction>``; a failed threshold carries a
<failure> with the measured figure, a skipped one (no baseline) <skipped>.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree as ET


def render(report: Mapping[str, Any]) -> str:
    town = str(report.get("town", {}).get("id", "town"))
    root = ET.Element("testsuites", name=f"loadprobe {town}")
    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for check in report.get("thresholds", []):
        by_run.setdefault(str(check["run"]), []).append(check)
    durations = {
        str(run["label"]): float(run.get("duration_seconds") or 0) for run in report.get("runs", [])
    }
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for run, checks in by_run.items():
        failures = sum(1 for c in checks if c["status"] == "fail")
        skipped = sum(1 for c in checks if c["status"] == "skip")
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"loadprobe.{town}.{run}",
            tests=str(len(checks)),
            failures=str(failures),
            errors="0",
            skipped=str(skipped),
            time=f"{durations.get(run, 0.0):.3f}",
        )
        for check in checks:
            classname = f"loadprobe.{town}.{run}.{check['transaction'] or check['threshold']}"
            case = ET.SubElement(suite, "testcase", classname=classname, name=str(check["name"]))
            if check["status"] == "fail":
                failure = ET.SubElement(
                    case, "failure", message=str(check["reason"]), type=str(check["threshold"])
                )
                failure.text = f"{check['name']}: {check['reason']}"
            elif check["status"] == "skip":
                ET.SubElement(case, "skipped", message=str(check["reason"]))
            else:
                out = ET.SubElement(case, "system-out")
                out.text = str(check["reason"])
        totals["tests"] += len(checks)
        totals["failures"] += failures
        totals["skipped"] += skipped
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
