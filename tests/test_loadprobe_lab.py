"""The acceptance test in the lab: Locust inside a town's namespace, the
town's routes pinned to each path, the reference application in nw-dc.

Needs root; run alone with `pytest -m lab`. Think times are shortened (the
workflow is the real one) so that each path's run of 10 terminals takes
about 30 s plus the batch queue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labtools import ROOT, Lab, http_get, needs_root, wait_for

from loadprobe.orchestrate import STREAM_NAME
from loadprobe.samples import TxRecord, read_all

pytestmark = [needs_root, pytest.mark.lab]

TOWN = "nishiki"
PASSWORD = "lab-password"
SHORT = ["--think-time", "300ms,1s", "--no-metrics", "--quiet"]


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("LOADPROBE_")}
    return {**out, "PYTHONPATH": str(ROOT), "LOADPROBE_PASSWORD": PASSWORD}


def loadprobe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadprobe.cli", *args],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def routes(netns: str) -> list[dict[str, Any]]:
    """The town's main-table routes to the data-center prefixes."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "route", "show", "table", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    prefixes = {"10.200.0.0/24", "10.210.0.0/24"}
    return sorted(
        (r for r in json.loads(out) if r.get("dst") in prefixes), key=lambda r: str(r["dst"])
    )


def report_of(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "report.json").read_text())
    return data


@pytest.fixture(scope="module")
def compared(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], list[Any], list[Any]]:
    """`loadprobe compare`: 10 terminals, 30 s on the primary, then 30 s on the backup."""
    netns = lab.plan.nodes[TOWN].netns
    out = tmp_path_factory.mktemp("lp-compare")
    before = routes(netns)
    done = loadprobe(
        "compare", "--town", TOWN, "--terminals", "10", "--duration", "30s",
        "--report-dir", str(out), *SHORT,
    )  # fmt: skip
    after = routes(netns)
    assert (out / "report.json").exists(), done.stdout + done.stderr
    return done, report_of(out), before, after


@pytest.mark.slow
def test_ten_terminals_pass_on_each_path(
    compared: tuple[subprocess.CompletedProcess[str], dict[str, Any], list[Any], list[Any]],
) -> None:
    done, report, _, _ = compared
    for run in report["runs"]:
        own = [
            t["name"]
            for t in report["thresholds"]
            if t["run"] == run["label"]
            and t["status"] == "fail"
            and t["threshold"] != "degradation"
        ]
        assert own == [], (run["label"], own, done.stdout)
        assert run["terminals"] == 10
        assert run["complete"] is True
        for name in ("app_start", "logon", "ledger_inquiry", "certificate", "batch"):
            assert run["transactions"][name]["count"] >= 5, (run["label"], name)
            assert run["transactions"][name]["failed"] == 0, run["transactions"][name]["errors"]


@pytest.mark.slow
def test_the_comparison_verdict_is_the_degradation_checks(
    compared: tuple[subprocess.CompletedProcess[str], dict[str, Any], list[Any], list[Any]],
) -> None:
    """Each path passes on its own (above); what is left to decide the
    comparison is the degradation factor of each transaction against its
    limit. A one-round-trip transaction (logon) sits near the paths' RTT
    ratio (~30 ms / ~13 ms in the lab's link profiles), close to its 3x limit:
    whichever way it falls, exit code, verdict and the printed failures agree."""
    done, report, _, _ = compared
    failed = [t for t in report["thresholds"] if t["status"] == "fail"]
    assert all(t["run"] == "backup" and t["threshold"] == "degradation" for t in failed), failed
    assert done.returncode == (0 if report["verdict"] == "pass" else 1), done.stderr
    for check in failed:
        assert f"FAIL  backup: {check['name']}" in done.stdout


@pytest.mark.slow
def test_the_report_records_the_path_forced(
    compared: tuple[subprocess.CompletedProcess[str], dict[str, Any], list[Any], list[Any]],
) -> None:
    _, report, _, _ = compared
    for run, dev in zip(report["runs"], ("lgwan0", "flets0"), strict=True):
        path = run["path"]
        assert path["requested"] == run["label"]
        assert path["observed"] == run["label"]
        assert path["consistent"] is True
        assert path["pinned"] is True
        assert path["netns"] == f"nw-{TOWN}"
        assert len(path["lookups"]) >= 6  # before, every 5 s, after
        assert {lookup["dev"] for lookup in path["lookups"]} == {dev}
    checks = {(t["run"], t["threshold"]): t["status"] for t in report["thresholds"]}
    assert checks[("primary", "path")] == checks[("backup", "path")] == "pass"


@pytest.mark.slow
def test_the_report_shows_the_backups_extra_delay(
    compared: tuple[subprocess.CompletedProcess[str], dict[str, Any], list[Any], list[Any]],
) -> None:
    _, report, _, _ = compared
    primary, backup = report["runs"]
    # TCP connect: one round trip. Primary ~12 ms (LGWAN), backup ~30 ms (ADSL + Hikari).
    assert backup["connect_rtt_seconds"] > primary["connect_rtt_seconds"] + 0.010
    degradation = report["degradation"]
    for name in ("logon", "ledger_inquiry", "certificate"):
        assert degradation[name]["extra_p50_seconds"] > 0.010, (name, degradation[name])
        assert degradation[name]["factor"] > 1.0
    assert {t["run"] for t in report["thresholds"] if t["threshold"] == "degradation"} == {"backup"}


@pytest.mark.slow
def test_routes_are_put_back_after_the_comparison(
    compared: tuple[subprocess.CompletedProcess[str], dict[str, Any], list[Any], list[Any]],
) -> None:
    _, _, before, after = compared
    assert after == before
    assert {r["dev"] for r in after} == {"lgwan0"}


def test_an_impossible_threshold_fails_and_names_the_transaction(lab: Lab, tmp_path: Path) -> None:
    netns = lab.plan.nodes[TOWN].netns
    before = routes(netns)
    done = loadprobe(
        "run", "--town", TOWN, "--path", "backup", "--terminals", "2", "--duration", "6s",
        "--sla", "certificate.p99=1ms", "--workers", "2", "--report-dir", str(tmp_path), *SHORT,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  backup: certificate p99 <= 1ms" in done.stdout
    assert "failed: certificate" in done.stdout
    report = report_of(tmp_path)
    failed = report["failed_transactions"]
    assert failed[0] == "certificate"
    measured = report["runs"][0]["transactions"]
    assert measured["certificate"]["count"] > 0  # failed by its times, not for want of samples
    # A short run may end before a terminal reaches the last step (batch):
    # such a step fails for having no samples, never by its times.
    assert all(measured[name]["count"] == 0 for name in failed[1:]), failed
    assert report["runs"][0]["path"]["observed"] == "backup"
    assert routes(netns) == before


def test_wrong_credentials_exit_2_and_leave_the_routes(lab: Lab, tmp_path: Path) -> None:
    netns = lab.plan.nodes[TOWN].netns
    before = routes(netns)
    done = subprocess.run(
        [sys.executable, "-m", "loadprobe.cli", "run", "--town", TOWN, "--path", "backup",
         "--report-dir", str(tmp_path / "r"), *SHORT],
        cwd=ROOT,
        env={**env(), "LOADPROBE_PASSWORD": "wrong"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "bad credentials" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert routes(netns) == before


@pytest.fixture
def second_app(lab: Lab, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another reference application in nw-dc (port 8081), ours to stop."""
    host, _ = lab.app()
    log = (tmp_path / "app.log").open("wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.plan.nodes[lab.plan.dc_node].netns, sys.executable, "-m",
         "loadprobe.cli", "target", "--host", host, "--port", "8081",
         "--db", str(tmp_path / "ledger.sqlite3"), "--batch-row-cost-us", "0"],
        cwd=ROOT,
        env={**env(), "LOADPROBE_TARGET_PASSWORD": PASSWORD},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip

    def ready() -> bool:
        try:
            return http_get(lab.plan.nodes[TOWN].netns, host, 8081, "/health")[0] == 200
        except OSError:
            return proc.poll() is not None  # stop waiting; the assertion below says why

    wait_for(ready, timeout=60, step=0.2, what="a second application in nw-dc")
    assert proc.poll() is None, (tmp_path / "app.log").read_text()
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    log.close()


def test_the_application_stopped_mid_run_gives_a_failing_complete_report(
    lab: Lab, second_app: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    host, _ = lab.app()
    out = tmp_path / "report"
    run = subprocess.Popen(
        [sys.executable, "-m", "loadprobe.cli", "run", "--town", TOWN, "--path", "primary",
         "--host", f"http://{host}:8081", "--terminals", "4", "--duration", "10s",
         "--report-dir", str(out), *SHORT],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    stream = out / "primary" / STREAM_NAME
    wait_for(
        lambda: sum(isinstance(r, TxRecord) for r in read_all(stream)) >= 6,
        timeout=40,
        step=0.2,
        what="the first transactions",
    )
    second_app.kill()
    second_app.wait()
    stdout, stderr = run.communicate(timeout=180)
    assert run.returncode == 1, stdout + stderr
    report = report_of(out)
    assert report["verdict"] == "fail"
    only = report["runs"][0]
    assert only["complete"] is True
    assert only["path"]["observed"] == "primary"
    failed = {t["transaction"] for t in report["thresholds"] if t["status"] == "fail"}
    assert failed, report["thresholds"]
    assert (out / "report.html").exists()
    assert (out / "junit.xml").exists()


def test_ctrl_c_puts_the_routes_back_and_still_reports(lab: Lab, tmp_path: Path) -> None:
    netns = lab.plan.nodes[TOWN].netns
    before = routes(netns)
    out = tmp_path / "report"
    # A shell that starts the suite in the background without job control
    # makes it ignore SIGINT, and an ignored signal stays ignored across
    # exec: the Ctrl-C below would never reach loadprobe.  A handler (not
    # SIG_IGN) is reset to the default at exec, so the child gets Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "loadprobe.cli", "run", "--town", TOWN, "--path", "backup",
             "--terminals", "3", "--duration", "60s", "--report-dir", str(out), *SHORT],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    stream = out / "backup" / STREAM_NAME
    wait_for(lambda: read_all(stream), timeout=40, what="samples")
    assert {r["dev"] for r in routes(netns)} == {"flets0"}  # pinned while it runs
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stdout + stderr
    assert routes(netns) == before
    report = report_of(out)
    assert report["runs"][0]["interrupted"] is True
    assert report["verdict"] == "fail"
