"""The operations center's Prometheus files, checked by promtool: the
configuration, the generated alert rules, and the rules' unit tests
(deploy/prometheus/tests/netwatch.rules.test.yml, hand-written); and, in
Python, that those unit tests cover every alert both ways and that every
alert follows the conventions of netwatch/monitoring/alerts.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules" / "netwatch.rules.yml"
RULE_TESTS = PROMETHEUS / "tests" / "netwatch.rules.test.yml"

SEVERITIES = {"critical", "warning", "info"}
ANNOTATIONS = ("summary", "description", "dashboard_url")
ALERT_NAME = re.compile(r"Netwatch(?:[A-Z][a-z0-9]+)+")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool (Debian prometheus) missing: apt-get install prometheus",
)


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _alerts() -> Iterator[dict[str, Any]]:
    """Every alerting rule of the rules file."""
    for group in _load(RULES)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                yield rule


@needs_promtool
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("check", "config", CONFIG), id="check-config"),
        pytest.param(("check", "rules", RULES), id="check-rules"),
        pytest.param(("test", "rules", RULE_TESTS), id="test-rules"),
    ],
)
def test_promtool_accepts(args: tuple[str, str, Path]) -> None:
    # Absolute paths, and a working directory of our own choosing: promtool
    # resolves the files each one names relative to that file, not to the cwd.
    done = subprocess.run(
        ["promtool", *map(str, args)],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"


def test_the_rule_tests_read_the_committed_rules() -> None:
    files = _load(RULE_TESTS)["rule_files"]
    assert [(RULE_TESTS.parent / f).resolve() for f in files] == [RULES.resolve()]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    names = {rule["alert"] for rule in _alerts()}
    assert names, f"no alerting rule in {RULES}"
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in _load(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test") or []:
            name = case["alertname"]
            assert name in names, f"{RULE_TESTS.name} tests {name}, which {RULES.name} lacks"
            if case.get("exp_alerts"):
                firing.add(name)
            elif "exp_alerts" in case and case["exp_alerts"] == []:
                quiet.add(name)
    assert sorted(names - firing) == [], "alerts without a firing case (non-empty exp_alerts)"
    assert sorted(names - quiet) == [], "alerts without a not-firing case (exp_alerts: [])"


def test_every_alert_follows_the_conventions() -> None:
    problems: list[str] = []
    for rule in _alerts():
        name = rule["alert"]
        if not ALERT_NAME.fullmatch(name):
            problems.append(f"{name}: not a CamelCase name starting with Netwatch")
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity {severity!r} not in {sorted(SEVERITIES)}")
        annotations = rule.get("annotations") or {}
        for key in ANNOTATIONS:
            value = annotations.get(key)
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{name}: no {key} annotation")
    assert problems == []
