"""Drill benchmark: ten lab drills in a row on one town.

Brings the lab up with agents (unless one is up: then it is used as it is,
and left up), runs `netwatch drill --town TOWN --lab` --drills times in a
row, and reads each drill.json.  Prints, over the drills that passed:

- the outage at the failover and at the failback, as the drill's observer
  saw them (ICMP and TCP every 10 ms from the town's side): p50, p95, max;
- beside them, the agent's own account: fault -> failover decided
  (detection), fault -> routes applied, the agent's suspicion -> decision;
- the drill's own cost: its CPU time (the drill process, threads included,
  not loadprobe's) and its wall time beyond the load tests (settling,
  waiting for the agent, the hold-down), beside the whole drill's.

Between two drills it waits until the primary's flap-damping penalty has
decayed enough that the next cut cannot damp it (the agent counts every
cut as a flap, as it should).

Needs root.  Percentiles are nearest-rank over the runs.

    .venv/bin/python bench/drill_bench.py [--drills 10] [--town nishiki]
        [--baseline 10s] [--degraded 15s] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "lab-password"
AGENT_METRICS_PORT = 9470  # netwatch.lab.services: each lab agent, on its town's loopback
DAMPING_ROOM = 900.0  # + one cut's 1000 stays under the fast profile's suppress line (2000)

FIGURES = (
    ("outage_s", "outage at the failover (observer)"),
    ("outage_icmp_s", "  of which ICMP"),
    ("outage_tcp_s", "  of which TCP"),
    ("detection_s", "agent: fault -> failover decided"),
    ("route_change_s", "agent: fault -> routes applied"),
    ("agent_suspect_to_decision_s", "agent: suspicion -> decision"),
    ("failback_outage_s", "outage at the failback (observer)"),
    ("failback_s", "restore -> traffic on the primary"),
    ("primary_up_to_failback_s", "primary up -> failback (hold-down)"),
    ("drill_cpu_s", "the drill's own CPU (s)"),
    ("overhead_wall_s", "wall time beyond the load tests"),
    ("wall_s", "the whole drill's wall time"),
)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def netwatch(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOADPROBE_PASSWORD": PASSWORD}
    return subprocess.run(
        [sys.executable, "-m", "netwatch.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, check=check, timeout=900,
    )  # fmt: skip


def lab_is_up(town: str) -> bool:
    return Path(f"/run/netns/nw-{town}").exists()


def run_drills(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    reports = []
    for i in range(1, args.drills + 1):
        target = out / f"drill-{i:02d}"
        started = time.monotonic()
        done = netwatch(
            "drill", "--town", args.town, "--lab", "--report-dir", str(target),
            "--baseline", args.baseline, "--degraded", args.degraded, check=False,
        )  # fmt: skip
        wall = time.monotonic() - started
        try:
            report = json.loads((target / "drill.json").read_text())
        except (OSError, ValueError):
            print(f"drill {i}: no report (exit {done.returncode}): {done.stdout[-300:]}")
            continue
        report["measurements"]["wall_s"] = wall
        reports.append(report)
        m = report["measurements"]
        print(
            f"drill {i:2}: {report['status']:8} outage {m.get('outage_s') or 0:.3f} s, "
            f"failback outage {m.get('failback_outage_s') or 0:.3f} s, "
            f"detection {m.get('detection_s') or 0:.3f} s, wall {wall:.1f} s",
            flush=True,
        )
        if i < args.drills:
            waited = wait_undamped(args.town)
            print(f"          waited {waited:.0f} s for the primary's flap damping to decay")
    return reports


def damping_penalty(town: str, path: str = "primary") -> float:
    """The agent's flap-damping penalty of `path` (its metrics, in the town)."""
    import http.client

    from netwatch.emulator.netns import entered

    with entered(f"nw-{town}"):
        conn = http.client.HTTPConnection("127.0.0.1", AGENT_METRICS_PORT, timeout=5)
        conn.connect()
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith("netwatch_path_damping_penalty{") and f'path="{path}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_undamped(town: str) -> float:
    """Each drill's cut is a flap (penalty 1000, half-life 60 s, suppressed
    at 2000): ten in a row would damp the primary, and a damped primary
    takes no traffic back.  Wait until the next cut cannot damp it."""
    started = time.monotonic()
    while damping_penalty(town) > DAMPING_ROOM and time.monotonic() - started < 600:
        time.sleep(2.0)
    return time.monotonic() - started


def summarize(reports: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    # Every drill that got to its verdict: a failed load test (short loads
    # judge few samples) does not change what the outage was.
    passed = [r for r in reports if r["status"] in ("passed", "failed")]
    table: dict[str, dict[str, float]] = {}
    for key, _ in FIGURES:
        values = [
            float(r["measurements"][key]) for r in passed if r["measurements"].get(key) is not None
        ]
        if values:
            table[key] = {
                "n": len(values),
                "p50": nearest_rank(values, 0.5),
                "p95": nearest_rank(values, 0.95),
                "max": max(values),
            }
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drills", type=int, default=10)
    parser.add_argument("--town", default="nishiki")
    parser.add_argument("--baseline", default="10s")
    parser.add_argument("--degraded", default="15s")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--from-json", type=Path, help="summarize an earlier run's --json file, run nothing"
    )
    args = parser.parse_args()
    if args.from_json:
        reports = json.loads(args.from_json.read_text())["reports"]
        print_summary(args, reports)
        return 0
    if os.geteuid() != 0:
        print("drill_bench needs root (the lab)", file=sys.stderr)
        return 2
    ours = not lab_is_up(args.town)
    if ours:
        print("bringing the lab up with agents ...", flush=True)
        netwatch("lab", "up", "--agents", "--no-rtt")
    try:
        with tempfile.TemporaryDirectory(prefix="drill-bench-") as tmp:
            reports = run_drills(args, Path(tmp))
    finally:
        if ours:
            netwatch("lab", "down", check=False)
    print_summary(args, reports)
    if args.json:
        args.json.write_text(json.dumps({"reports": reports, "summary": summarize(reports)}))
    statuses = [r["status"] for r in reports]
    return 0 if reports and all(s in ("passed", "failed") for s in statuses) else 1


def print_summary(args: argparse.Namespace, reports: list[dict[str, Any]]) -> None:
    table = summarize(reports)
    statuses = [r["status"] for r in reports]
    print(f"\n{len(reports)} drills on {args.town}: "
          + ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses))))  # fmt: skip
    print(f"{'figure (seconds)':<40} {'n':>3} {'p50':>8} {'p95':>8} {'max':>8}")
    for key, label in FIGURES:
        row = table.get(key)
        if row:
            print(
                f"{label:<40} {row['n']:>3.0f} "
                f"{row['p50']:>8.3f} {row['p95']:>8.3f} {row['max']:>8.3f}"
            )
    loads = [r["checks"][-1]["passed"] for r in reports if r.get("checks")]
    print(f"degraded load test verdicts: {loads.count(True)} pass, {loads.count(False)} fail")


if __name__ == "__main__":
    sys.exit(main())
