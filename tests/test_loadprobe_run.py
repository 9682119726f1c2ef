"""`loadprobe run` for real against the reference application on this host
(no lab): verdicts, exit codes, reports, live metrics, workers, a target
that dies mid-run, and the locustfile on its own.

The target runs with a zero row cost so that a batch takes milliseconds;
runs are a few seconds with short think times. Every run passes --no-lab,
so a lab that happens to be up is not used.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_backoffice_api import PASSWORD, TargetServer, start_target, stop_target

from loadprobe.orchestrate import STREAM_NAME
from loadprobe.samples import TxRecord, read_all

REPO = Path(__file__).resolve().parents[1]
FAST = ["--think-time", "30ms,120ms", "--no-lab", "--quiet"]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env(password: str | None = PASSWORD) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("LOADPROBE_")}
    out["PYTHONPATH"] = str(REPO)
    if password is not None:
        out["LOADPROBE_PASSWORD"] = password
    return out


def loadprobe(
    *args: str, password: str | None = PASSWORD, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadprobe.cli", *args],
        cwd=REPO,
        env=env(password),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def report_of(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "report.json").read_text())
    return data


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetServer]:
    tmp = tmp_path_factory.mktemp("lp-target")
    server = start_target(tmp / "ledger.sqlite3", tmp / "server.log", "--batch-row-cost-us", "0")
    yield server
    stop_target(server)


@pytest.fixture(scope="module")
def first_run(
    target: TargetServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str], list[str]]:
    """A 10-terminal run whose live metrics are scraped while it runs."""
    out = tmp_path_factory.mktemp("lp-first") / "report"
    port = free_port()
    argv = [
        sys.executable, "-m", "loadprobe.cli", "run", "--town", "nishiki", "--host", target.url,
        "--duration", "8s", "--report-dir", str(out), "--metrics-port", str(port),
        "--metrics-host", "127.0.0.1", "--metrics-hold", "2", *FAST,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    scrapes: list[str] = []
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            if "loadprobe_transactions_total{" in text:
                scrapes.append(text)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stdout, stderr = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    return out, done, scrapes


def test_a_short_run_passes_with_all_three_reports(
    first_run: tuple[Path, subprocess.CompletedProcess[str], list[str]],
) -> None:
    out, done, _ = first_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: PASS" in done.stdout
    report = report_of(out)
    assert report["verdict"] == "pass"
    assert report["kind"] == "run"
    run = report["runs"][0]
    assert run["complete"] is True
    assert run["terminals"] == 10
    for name in ("app_start", "logon", "ledger_inquiry", "certificate", "batch"):
        tx = run["transactions"][name]
        assert tx["count"] > 0, name
        assert tx["failed"] == 0, (name, tx["errors"])
        assert tx["p50_seconds"] <= tx["p95_seconds"] <= tx["p99_seconds"] <= tx["max_seconds"]
    assert run["path"]["lookups"], "the route was looked up"
    assert run["path"]["lookups"][0]["dev"] == "lo"
    assert report["environment"]["password_from"] == "environment variable LOADPROBE_PASSWORD"
    assert (out / "report.html").read_text().count("<svg") == 10
    assert "<testcase" in (out / "junit.xml").read_text()


def test_every_terminal_logs_on_as_itself(
    first_run: tuple[Path, subprocess.CompletedProcess[str], list[str]],
) -> None:
    out, _, _ = first_run
    terminals = set()
    for line in (out / "run" / "samples.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row[0] in ("t", "w"):
            terminals.add(row[-1])
    assert terminals == set(range(1, 11))


def test_the_password_is_in_no_report_or_log(
    first_run: tuple[Path, subprocess.CompletedProcess[str], list[str]],
) -> None:
    out, done, _ = first_run
    for path in out.rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(errors="replace"), path
    assert PASSWORD not in done.stdout + done.stderr


def test_live_metrics_while_running(
    first_run: tuple[Path, subprocess.CompletedProcess[str], list[str]],
) -> None:
    _, _, scrapes = first_run
    assert scrapes, "the endpoint answered with loadprobe metrics during the run"
    labels = 'path="unknown",town="nishiki"'
    # While the terminals run (the last scrapes may come after the verdict).
    running = [s for s in scrapes if f"loadprobe_run_running{{{labels}}} 1.0" in s]
    assert running
    assert any(
        re.search(rf"loadprobe_active_terminals\{{{labels}\}} (10|[1-9])\.0", s) for s in running
    )
    last = scrapes[-1]
    assert re.search(
        rf'loadprobe_transaction_duration_seconds_bucket\{{le="0.5",{labels},'
        rf'transaction="logon"\}} [1-9]',
        last,
    )
    assert f'loadprobe_requests_total{{{labels},transaction="ledger_inquiry"}}' in last
    assert f'loadprobe_transactions_total{{{labels},transaction="batch"}}' in last
    # Held up for a last scrape after the verdict (--metrics-hold).
    assert f"loadprobe_verdict_pass{{{labels}}} 1.0" in last
    assert re.search(
        r'loadprobe_threshold_pass\{[^}]*threshold="p95"[^}]*transaction="logon"[^}]*\} 1.0', last
    )
    assert f"loadprobe_run_running{{{labels}}} 0.0" in last


def test_an_impossible_threshold_fails_with_exit_1_and_names_it(
    target: TargetServer,
    first_run: tuple[Path, subprocess.CompletedProcess[str], list[str]],
    tmp_path: Path,
) -> None:
    baseline, _, _ = first_run
    done = loadprobe(
        "run", "--town", "nishiki", "--host", target.url, "--terminals", "3", "--duration", "3s",
        "--sla", "ledger_inquiry.p95=1us", "--baseline", str(baseline), "--no-metrics",
        "--report-dir", str(tmp_path), *FAST,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  run: ledger_inquiry p95 <= 0.001ms" in done.stdout
    assert "verdict: FAIL (failed: ledger_inquiry" in done.stdout
    report = report_of(tmp_path)
    assert report["failed_transactions"][0] == "ledger_inquiry"
    degradation = [t for t in report["thresholds"] if t["threshold"] == "degradation"]
    assert len(degradation) == 5
    assert all(t["status"] in ("pass", "fail") for t in degradation)
    assert set(report["degradation"]) == {
        "app_start", "logon", "ledger_inquiry", "certificate", "batch",
    }  # fmt: skip
    assert "<failure" in (tmp_path / "junit.xml").read_text()


def test_workers_share_the_terminals(target: TargetServer, tmp_path: Path) -> None:
    done = loadprobe(
        "run", "--town", "tsuno", "--host", target.url, "--terminals", "4", "--duration", "4s",
        "--workers", "2", "--no-metrics", "--report-dir", str(tmp_path), *FAST,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = report_of(tmp_path)
    assert report["runs"][0]["workers"] == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "master.log", "samples.jsonl", "worker-1.log", "worker-2.log",
    ]  # fmt: skip
    terminals = {
        row[-1]
        for row in map(json.loads, (tmp_path / "run" / "samples.jsonl").read_text().splitlines())
        if row[0] in ("t", "w")
    }
    assert terminals == {1, 2, 3, 4}


def test_a_remote_worker_gets_its_orders_from_the_master(
    target: TargetServer, tmp_path: Path
) -> None:
    """A worker started by hand, as on another machine: no options but
    --worker, another directory (no topology.yaml there), its own password."""
    port = free_port()
    argv = [
        sys.executable, "-m", "loadprobe.cli", "run", "--town", "tsuno", "--host", target.url,
        "--terminals", "4", "--duration", "4s", "--workers", "1", "--remote-workers", "1",
        "--master-port", str(port), "--no-metrics", "--report-dir", str(tmp_path / "r"), *FAST,
    ]  # fmt: skip
    run = subprocess.Popen(argv, cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(REPO / "loadprobe" / "locustfile.py"),
         "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
        cwd=elsewhere,
        env={**env(), "LOADPROBE_TOPOLOGY": str(REPO / "topology.yaml")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        stdout, _ = run.communicate(timeout=120)
        assert worker.wait(timeout=30) == 0
    finally:
        for proc in (run, worker):
            if proc.poll() is None:
                proc.kill()
    assert run.returncode == 0, stdout
    rows = [
        json.loads(line)
        for line in (tmp_path / "r" / "run" / "samples.jsonl").read_text().splitlines()
    ]
    assert {row[-1] for row in rows if row[0] in ("t", "w")} == {1, 2, 3, 4}


def test_wrong_credentials_exit_2_in_one_line(target: TargetServer, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = loadprobe(
        "run", "--town", "nishiki", "--host", target.url, "--no-metrics",
        "--report-dir", str(out), *FAST, password="not-the-password",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "bad credentials" in done.stderr
    assert "nishiki-t01" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--town", "tokyo"], "unknown town"),
        (["--town", "nishiki", "--path", "sideways"], "no path 'sideways'"),
        (["--town", "nishiki", "--think-time", "5s,1s"], "above the maximum"),
        (["--town", "nishiki", "--duration", "0s"], "above zero"),
        (["--town", "nishiki", "--sla", "logon.p95"], "TRANSACTION.KEY=VALUE"),
        (["--town", "nishiki", "--host", "http://127.0.0.1:1"], "unreachable"),
        (["--town", "nishiki", "--baseline", "/nonexistent"], "not a loadprobe report"),
        (
            ["--town", "nishiki", "--path", "backup", "--host", "http://127.0.0.1:1"],
            "goes over no town path (dev lo), not backup",
        ),
    ],
)
def test_bad_input_exits_2_in_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    done = loadprobe("run", *args, "--no-metrics", "--no-lab", "--report-dir", str(tmp_path / "r"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 or "usage:" in done.stderr


def test_no_password_exits_2() -> None:
    done = loadprobe("run", "--town", "nishiki", "--no-metrics", "--no-lab", password=None)
    assert done.returncode == 2
    assert "LOADPROBE_PASSWORD" in done.stderr


def test_compare_needs_the_lab() -> None:
    done = loadprobe("compare", "--town", "nishiki", "--no-metrics", "--no-lab")
    assert done.returncode == 2
    assert "lab" in done.stderr


def test_a_target_stopped_mid_run_fails_with_a_complete_report(tmp_path: Path) -> None:
    server = start_target(
        tmp_path / "ledger.sqlite3", tmp_path / "server.log", "--batch-row-cost-us", "0"
    )
    out = tmp_path / "report"
    argv = [
        sys.executable, "-m", "loadprobe.cli", "run", "--town", "kawaminami", "--host",
        server.url, "--terminals", "4", "--duration", "8s", "--no-metrics",
        "--report-dir", str(out), *FAST,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        stream = out / "run" / STREAM_NAME
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(isinstance(r, TxRecord) for r in read_all(stream)) >= 8:
                break
            time.sleep(0.2)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if server.process.poll() is None:
            stop_target(server)
    assert proc.returncode == 1, stdout
    report = report_of(out)
    assert report["verdict"] == "fail"
    run = report["runs"][0]
    assert run["complete"] is True  # the run went to its end: the report is whole
    error_checks = [
        t for t in report["thresholds"] if t["threshold"] == "error_ratio" and t["status"] == "fail"
    ]
    assert error_checks
    reasons = " ".join(reason for tx in run["transactions"].values() for reason in tx["errors"])
    assert "refused" in reasons.lower() or "connect" in reasons.lower(), reasons
    assert "FAIL" in (out / "report.html").read_text()


def test_the_locustfile_works_with_plain_locust(target: TargetServer, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(REPO / "loadprobe" / "locustfile.py"),
            "--headless",
            "--users",
            "3",
            "--spawn-rate",
            "3",
            "--run-time",
            "3s",
            "--host",
            target.url,
            "--town",
            "takaharu",
            "--think-time",
            "30ms,60ms",
            "--only-summary",
        ],
        cwd=tmp_path,  # no topology.yaml here: found through LOADPROBE_TOPOLOGY
        env={**env(), "LOADPROBE_TOPOLOGY": str(REPO / "topology.yaml")},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "loadprobe SLA verdict" in done.stdout
    assert "verdict: PASS" in done.stdout
    assert re.search(r"TX\s+ledger_inquiry", done.stderr + done.stdout)
