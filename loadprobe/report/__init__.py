"""The reports of a load test: report.json, report.html and junit.xml.

- document.py: `build` turns finished runs and their checks into one
  JSON-ready document (report.json's content);
- schema.py: the figures report.json holds per transaction, and reading
  them back strictly for a baseline;
- files.py: `write` puts the document, its HTML page (html.py, svg.py)
  and its JUnit file (junit.py) in a directory.
"""

from loadprobe.report.document import (
    build,
    check_dict,
    degradation_section,
    iso,
    run_section,
    run_stats,
)
from loadprobe.report.files import write
from loadprobe.report.schema import SCHEMA, Baseline, read_baseline, stats_dict, stats_from_dict

__all__ = [
    "SCHEMA",
    "Baseline",
    "build",
    "check_dict",
    "degradation_section",
    "iso",
    "read_baseline",
    "run_section",
    "run_stats",
    "stats_dict",
    "stats_from_dict",
    "write",
]
