"""Route backends that need no root: `command` (a real program run with the
decision) and `dry-run`; and the agent's metrics, checked by promtool."""

from __future__ import annotations

import asyncio
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from netwatch.agent.metrics import AgentMetrics, AgentSnapshot, MqttStatus
from netwatch.agent.routes import CommandBackend, DryRunBackend, RouteChange
from netwatch.errors import RouteError, UserError
from netwatch.health import PathHealth, Sample
from netwatch.topology import load

ROOT = Path(__file__).resolve().parent.parent
CHANGE = RouteChange("nishiki", "primary", "backup", "primary is down: 3 failed rounds")


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "hook.sh"
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_command_gets_the_decision_in_arguments_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    hook = _script(
        tmp_path,
        f'printf "%s|" "$@" > {out}\n'
        f'echo "$NETWATCH_TOWN $NETWATCH_FROM $NETWATCH_TO $NETWATCH_REASON" >> {out}\n',
    )
    backend = CommandBackend([str(hook), "--router", "edge-1"])
    asyncio.run(backend.apply(CHANGE))
    args, env = out.read_text(encoding="utf-8").rsplit("|", 1)
    assert args.split("|") == [
        "--router", "edge-1", "nishiki", "primary", "backup", "primary is down: 3 failed rounds",
    ]  # fmt: skip
    assert env.strip() == "nishiki primary backup primary is down: 3 failed rounds"
    assert asyncio.run(backend.current()) == "backup"


def test_command_failures_are_retried_then_reported(tmp_path: Path) -> None:
    count = tmp_path / "count"
    hook = _script(tmp_path, f'echo x >> {count}\necho "router said no" >&2\nexit 3\n')
    backend = CommandBackend([str(hook)], attempts=3)
    with pytest.raises(RouteError, match="failed 3 times: exit 3: router said no"):
        asyncio.run(backend.apply(CHANGE))
    assert count.read_text().count("x") == 3
    assert asyncio.run(backend.current()) is None


def test_command_that_succeeds_on_a_retry_is_applied(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    hook = _script(tmp_path, f"if [ -e {flag} ]; then exit 0; fi\ntouch {flag}\nexit 1\n")
    backend = CommandBackend([str(hook)], attempts=3)
    asyncio.run(backend.apply(CHANGE))
    assert asyncio.run(backend.current()) == "backup"


def test_command_that_hangs_times_out(tmp_path: Path) -> None:
    hook = _script(tmp_path, "sleep 30\n")
    backend = CommandBackend([str(hook)], timeout=0.2, attempts=1)
    with pytest.raises(RouteError, match="timed out"):
        asyncio.run(backend.apply(CHANGE))


def test_command_missing_is_a_clear_error(tmp_path: Path) -> None:
    backend = CommandBackend([str(tmp_path / "nope")])
    with pytest.raises(RouteError, match="cannot run"):
        asyncio.run(backend.apply(CHANGE))
    with pytest.raises(UserError, match="--route-command"):
        CommandBackend([])


def test_dry_run_changes_nothing_but_remembers() -> None:
    backend = DryRunBackend()
    asyncio.run(backend.apply(CHANGE))
    assert asyncio.run(backend.current()) == "backup"


def _snapshot() -> AgentSnapshot:
    policy = load(ROOT / "topology.yaml").policy.profile()
    paths = {}
    for name in ("primary", "backup"):
        health = PathHealth(name, policy)
        for i in range(20):
            t = i * 0.05
            health.round(t, {k: Sample(t, True, 0.012) for k in policy.probes})
        paths[name] = health.snapshot(1.0)
    return AgentSnapshot("nishiki", "primary", False, paths, MqttStatus(True, True, 2, 0, 7),
                         {"late": 1, "foreign": 0},
                         probe_results={("primary", "icmp", "ok"): 1})  # fmt: skip


def test_metrics_are_named_and_labelled_as_designed() -> None:
    snapshot = _snapshot()
    metrics = AgentMetrics("nishiki", lambda: snapshot)
    metrics.probe_rtt.labels("nishiki", "primary", "10.200.0.10", "icmp").observe(0.012)
    metrics.failovers.labels("nishiki", "primary", "backup", "failover").inc()
    metrics.last_failover.labels("nishiki").set(0.2)
    text = generate_latest(metrics.registry).decode()
    for line in (
        'netwatch_path_active{path="primary",town="nishiki"} 1.0',
        'netwatch_path_up{path="backup",town="nishiki"} 1.0',
        'netwatch_path_state{path="primary",state="up",town="nishiki"} 1.0',
        'netwatch_failovers_total{from="primary",reason="failover",to="backup",town="nishiki"} 1.0',
        'netwatch_mqtt_spooled_messages{town="nishiki"} 2.0',
        'netwatch_icmp_replies_ignored_total{reason="late",town="nishiki"} 1.0',
        'netwatch_last_failover_duration_seconds{town="nishiki"} 0.2',
    ):
        assert line in text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert all(n.startswith("netwatch_") for n in names)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
def test_metrics_pass_promtool() -> None:
    snapshot = _snapshot()
    metrics = AgentMetrics("nishiki", lambda: snapshot)
    metrics.probe_rtt.labels("nishiki", "primary", "10.200.0.10", "icmp").observe(0.012)
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=generate_latest(metrics.registry),
        capture_output=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"", result
    assert result.stderr.strip() == b"", result
