"""The dashboards and alert rules against the real Prometheus of the lab
(`netwatch lab up --agents`: agents, the operations center, Prometheus in
nw-ops scraping it every second, rules with `lab.alerts`), and loadprobe
runs that register their endpoints with it.

Grafana is not installable here, so the dashboards are proven through
their queries: every query of every panel, for every town, returns at
least one series from Prometheus's HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from labtools import ROOT, Lab, LabKeeper, http_get, needs_root, netwatch, wait_for

from netwatch.lab.rundir import RunDir
from netwatch.lab.services import OPSCENTER_PORT
from netwatch.messages import DrillMessage, DrillStatus

pytestmark = [pytest.mark.lab, needs_root, pytest.mark.slow]

PROMETHEUS_PORT = 9090
PASSWORD = "lab-password"  # the reference application's lab default (backoffice.auth)
HOLD_S = 60  # loadprobe keeps its endpoint up this long after its verdict
# What Grafana would put in the queries of a dashboard over the last minutes
# (`$__rate_interval` is at least four scrape intervals: 4 s in the lab).
VARIABLES = {"$__rate_interval": "30s", "$__range": "15m", "$__interval": "5s"}


@pytest.fixture(scope="module")
def lab(lab_keeper: LabKeeper, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The lab with agents, shared with the other module that needs one
    (test_monitoring_lab, test_opscenter_lab): `up --agents` starts them on a
    new lab and changes nothing on a kept one, saying the same either way."""
    lab = lab_keeper.shared(tmp_path_factory)
    up = netwatch("lab", "up", "--agents", "--no-rtt", "--run-dir", lab.run_dir)
    assert up.returncode == 0, up.stderr
    assert f"prometheus:        http://{lab.plan.broker_address}:{PROMETHEUS_PORT}/" in up.stdout
    return lab


def ops(lab: Lab) -> str:
    return lab.plan.nodes[lab.plan.ops_node].netns


def prom(lab: Lab, path: str, **params: str) -> Any:
    query = f"{path}?{urllib.parse.urlencode(params)}" if params else path
    status, body = http_get(ops(lab), str(lab.plan.broker_address), PROMETHEUS_PORT, query)
    assert status == 200, body[:300]
    data = json.loads(body)
    assert data["status"] == "success", data
    return data["data"]


def series(lab: Lab, expr: str) -> list[dict[str, Any]]:
    return list(prom(lab, "/api/v1/query", query=expr)["result"])


def alerts(lab: Lab, name: str, **labels: str) -> list[str]:
    """The states (pending, firing) of the alerts of that name and labels."""
    return [
        a["state"]
        for a in prom(lab, "/api/v1/alerts")["alerts"]
        if a["labels"].get("alertname") == name
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def fleet_ok(lab: Lab) -> bool:
    status, body = http_get(ops(lab), str(lab.plan.broker_address), OPSCENTER_PORT, "/api/v1/fleet")
    return status == 200 and all(t["status"] == "ok" for t in json.loads(body)["towns"])


def loadprobe(lab: Lab, town: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "loadprobe.cli", "run", "--town", town, "--path", "primary",
        "--terminals", "2", "--duration", "6s", "--think-time", "100ms,300ms",
        "--report-dir", str(out), "--lab-run-dir", lab.run_dir, "--quiet", *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADPROBE_")}
    env |= {"PYTHONPATH": str(ROOT), "LOADPROBE_PASSWORD": PASSWORD}
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(procs: list[subprocess.Popen[str]], timeout: float = 240) -> None:
    """Each run ended with a verdict (pass or fail: a 6 s run is judged on
    few samples), not an error."""
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode in (0, 1), out + err
        assert "verdict: " in out, out + err


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every target, rows' panels included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def substitute(expr: str, town: str) -> str:
    expr = re.sub(r"\$\{town(:[a-z]+)?\}|\$town\b", town, expr)
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_the_lab_runs_prometheus_and_it_scrapes_the_fleet(lab: Lab) -> None:
    done = netwatch("lab", "status", "--run-dir", lab.run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"prometheus:        http://{lab.plan.broker_address}:{PROMETHEUS_PORT}/" in done.stdout
    assert any(line.strip().startswith("prometheus ") for line in done.stdout.splitlines())

    def opscenter_up() -> bool:
        targets = prom(lab, "/api/v1/targets")["activeTargets"]
        return any(
            t["labels"]["job"] == "netwatch-opscenter" and t["health"] == "up" for t in targets
        )

    wait_for(opscenter_up, timeout=30, step=0.5, what="the fleet endpoint scraped")
    rules = [r["name"] for g in prom(lab, "/api/v1/rules")["groups"] for r in g["rules"]]
    assert "NetwatchTownOnBackup" in rules
    assert "NetwatchPathDown" in rules
    assert all(
        r["health"] == "ok" for g in prom(lab, "/api/v1/rules")["groups"] for r in g["rules"]
    )


def publish_drill_result(lab: Lab, town: str) -> None:
    """A finished drill's retained result, as `netwatch drill` publishes it
    (the drills themselves are test_drill_lab's): the drill panels read it."""
    now = datetime.now(UTC)
    message = DrillMessage(
        town=town,
        ts=now,
        drill_id=str(uuid.uuid4()),
        status=DrillStatus.PASSED,
        started=now - timedelta(minutes=2),
        ended=now,
        outage_s=0.21,
        failback_outage_s=0.02,
        detection_s=0.15,
        load_passed=True,
    )
    done = subprocess.run(
        ["ip", "netns", "exec", ops(lab), "mosquitto_pub", *lab.mosquitto_args(town),
         "-q", "1", "-r", "-t", message.topic, "-m", message.to_json().decode()],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_every_panel_query_returns_a_series_for_every_town(lab: Lab, tmp_path: Path) -> None:
    wait_for(lambda: fleet_ok(lab), timeout=90, step=0.5, what="every town ok")
    towns = [t.id for t in lab.topo.towns]
    for town in towns:
        publish_drill_result(lab, town)
    # A baseline run on each town's primary, then a run against it whose
    # endpoint stays up (the degradation factors need the baseline).
    finished([loadprobe(lab, t, tmp_path / f"{t}-baseline", "--no-metrics") for t in towns])
    runs = [
        loadprobe(
            lab,
            t,
            tmp_path / t,
            "--baseline",
            str(tmp_path / f"{t}-baseline"),
            "--metrics-port",
            "0",
            "--metrics-hold",
            str(HOLD_S),
        )
        for t in towns
    ]
    try:
        for town in towns:

            def verdict_scraped(town: str = town) -> bool:
                return bool(series(lab, f'loadprobe_verdict_pass{{town="{town}"}}'))

            wait_for(verdict_scraped, timeout=180, step=1, what=f"{town}'s verdict scraped")

            def drill_scraped(town: str = town) -> bool:
                return bool(series(lab, f'netwatch_fleet_drill_last_status{{town="{town}"}}'))

            wait_for(drill_scraped, timeout=30, step=0.5, what=f"{town}'s drill scraped")
        # Each measured run registered its endpoint with the lab's Prometheus.
        registered = RunDir.of(lab.run_dir).prometheus.glob("targets/loadprobe-*.yml")
        assert len(list(registered)) == len(towns)
        dashboards = sorted((ROOT / "dashboards").glob("*.json"))
        assert len(dashboards) == 3
        empty: list[str] = []
        checked = 0
        for file in dashboards:
            dashboard = json.loads(file.read_text(encoding="utf-8"))
            for title, expr in panel_queries(dashboard):
                for town in towns:
                    checked += 1
                    if not series(lab, substitute(expr, town)):
                        empty.append(f"{file.name}: {title!r} for {town}: {expr}")
        assert not empty, "queries without a series:\n" + "\n".join(empty)
        assert checked >= 3 * 4 * 8
    finally:
        for proc in runs:
            proc.kill()
            proc.communicate()


def test_a_cut_of_nishikis_primary_fires_on_backup_and_path_down_and_both_resolve(
    lab: Lab,
) -> None:
    wait_for(lambda: fleet_ok(lab), timeout=90, step=0.5, what="every town ok")
    assert alerts(lab, "NetwatchTownOnBackup", town="nishiki") == []
    cut = netwatch("lab", "cut", "nishiki", "primary", "--run-dir", lab.run_dir)
    assert cut.returncode == 0, cut.stderr
    try:

        def firing() -> bool:
            return alerts(lab, "NetwatchTownOnBackup", town="nishiki") == ["firing"] and alerts(
                lab, "NetwatchPathDown", town="nishiki", path="primary"
            ) == ["firing"]

        started = time.monotonic()
        wait_for(firing, timeout=60, step=0.5, what="on-backup and path-down firing")
        print(f"both alerts firing {time.monotonic() - started:.1f} s after the cut")
        assert alerts(lab, "NetwatchAllPathsDown", town="nishiki") == []
        assert alerts(lab, "NetwatchTownOnBackup", town="takaharu") == []
    finally:
        restore = netwatch("lab", "restore", "nishiki", "primary", "--run-dir", lab.run_dir)
        assert restore.returncode == 0, restore.stderr

    def resolved() -> bool:
        return (
            alerts(lab, "NetwatchTownOnBackup", town="nishiki") == []
            and alerts(lab, "NetwatchPathDown", town="nishiki") == []
        )

    # The failback waits for the hold-down (30 s in `fast`) after the primary is UP.
    wait_for(resolved, timeout=120, step=0.5, what="both alerts resolved after the restore")
