"""The three files of a report: report.json, report.html and junit.xml.

The HTML page and the JUnit file are both rendered from the report
document alone, so the JSON is the one record of a test.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadprobe.report import html, junit


def write(report: Mapping[str, Any], directory: Path) -> list[Path]:
    """Write report.json, report.html and junit.xml; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "report.json", directory / "report.html", directory / "junit.xml"]
    paths[0].write_text(
        json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    paths[1].write_text(html.render(report), encoding="utf-8")
    paths[2].write_text(junit.render(report), encoding="utf-8")
    return paths
