"""loadprobe's own costs: how hard one core drives, and how true its timings are.

1. **Throughput on one core.** The same requests (GET /health, no think
   time) from two locustfiles, each Locust pinned to CPU 0 with `taskset`:
   a bare Locust `FastHttpUser`, and loadprobe's terminal (`TerminalBase`:
   each request timed as a transaction, its answer judged before Locust
   counts it, and every request and transaction recorded as a raw sample
   written to a file). The terminal checks the body for `"status":"ok"`;
   a third variant parses it as JSON first, as the workflow's checks do.
   The endpoint is a minimal keep-alive HTTP server pinned to CPU 1 that
   answers the reference application's /health body, so that the client,
   not the server, is the bottleneck. Requests/s is the median of --runs.

2. **Timing accuracy** (needs root; builds the lab and removes it after).
   Nishiki's primary link is set to 20 ms one-way delay each way, no
   jitter, and the LGWAN-to-data-center link to no delay, so a request
   from nw-nishiki crosses 40 ms of emulated delay in all. loadprobe's
   terminal measures the p50 of /health of the reference application
   (1) from nw-dc itself over loopback: the server's own time, (2) from
   nw-nishiki with both links at 0 ms: the emulators' own cost, (3) from
   nw-nishiki with the 20 ms link. Target: p50(3) within 2 ms of
   40 ms + p50(1).

    .venv/bin/python bench/loadprobe_bench.py [--runs 3] [--duration 10] [--skip-lab]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "lab-password"
HEALTH_BODY = b'{"status":"ok","residents":49289,"db":"ok","version":"0.1.0"}'

PROBE = """
# Both locustfiles report the CPU time their process spent during the test,
# so that requests per CPU-second can be compared on a busy machine too.
import json as _json
import time as _time

from locust import events as _events

_t0: list[float] = []


@_events.test_start.add_listener
def _bench_start(**_kw: object) -> None:
    _t0[:] = [_time.process_time(), _time.monotonic()]


@_events.test_stop.add_listener
def _bench_stop(**_kw: object) -> None:
    cpu, wall = _time.process_time() - _t0[0], _time.monotonic() - _t0[1]
    print("BENCH " + _json.dumps({"cpu": cpu, "wall": wall}), flush=True)
"""

BARE = """\
from locust import FastHttpUser, constant, task


class Bare(FastHttpUser):
    wait_time = constant(0)

    @task
    def health(self) -> None:
        self.client.get("/health")
"""

TERMINAL = """\
import os

from locust import constant, events, task

from loadprobe.checks import check_health
from loadprobe.locust_plugin import install
from loadprobe.terminal import TerminalBase, json_of

install(events)  # loadprobe's options and raw-sample recorder, as in a run
JSON_CHECK = os.environ.get("BENCH_CHECK") == "json"


def healthy(response) -> str | None:
    if JSON_CHECK:
        return check_health(json_of(response))
    return None if b'"status":"ok"' in (response.content or b"") else "health is not ok"


class HealthTerminal(TerminalBase):
    wait_time = constant(float(os.environ.get("BENCH_WAIT", "0")))

    @task
    def health(self) -> None:
        with self.transaction("health"):
            self.call("GET", "/health", check=healthy, whole=True)
"""

VARIANTS = {  # name: (locustfile, environment)
    "bare": ("bare.py", {}),
    "terminal": ("terminal.py", {"BENCH_CHECK": "bytes"}),
    "terminal-json": ("terminal.py", {"BENCH_CHECK": "json"}),
}


# --- the cheap endpoint ----------------------------------------------------------------------


class _Health(asyncio.Protocol):
    RESPONSE = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(HEALTH_BODY)).encode()
        + b"\r\n\r\n"
        + HEALTH_BODY
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
            self.transport.write(self.RESPONSE * count)


def serve(port: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Health, "127.0.0.1", port, backlog=512)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(host: str, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {host}:{port}")


# --- running Locust ---------------------------------------------------------------------------


def locust(
    locustfile: Path,
    host: str,
    *,
    users: int,
    duration: int,
    extra: list[str],
    prefix: list[str],
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    argv = [
        *prefix,
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
        "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{duration}s",
        "--host", host, "--only-summary", "--json", "--loglevel", "WARNING", *extra,
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=duration + 120,
        check=False,
    )
    bench = next((line for line in done.stdout.splitlines() if line.startswith("BENCH ")), None)
    start = done.stdout.find("\n[")
    if start < 0 or bench is None:
        raise SystemExit(f"locust printed no statistics: {done.stderr[-1500:]}")
    stats: list[dict[str, Any]] = json.loads(done.stdout[start:])
    cpu = json.loads(bench[6:])
    for entry in stats:
        entry["_cpu"], entry["_wall"] = cpu["cpu"], cpu["wall"]
    return stats


def get_rps(stats: list[dict[str, Any]]) -> tuple[float, float, int]:
    """Requests per second of wall time, and per second of the process's CPU time."""
    entry = next(s for s in stats if s["method"] == "GET")
    span = entry["last_request_timestamp"] - entry["start_time"]
    n = entry["num_requests"]
    return n / span, n / entry["_cpu"], entry["num_failures"]


def throughput(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from loadprobe.samples import read_all

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        wait_listening("127.0.0.1", port)
        host = f"http://127.0.0.1:{port}"
        (tmp / "bare.py").write_text(BARE + PROBE)
        (tmp / "terminal.py").write_text(TERMINAL + PROBE)
        pin = ["taskset", "-c", "0"] if (os.cpu_count() or 1) > 1 else []
        terminal_extra = [
            "--town", "nishiki", "--topology", str(REPO / "topology.yaml"),
            "--think-time", "0s", "--samples-file", str(tmp / "samples.stream"),
        ]  # fmt: skip
        figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
        per_cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for run in range(args.runs):
            for name, (locustfile, variant_env) in VARIANTS.items():
                stats = locust(
                    tmp / locustfile,
                    host,
                    users=args.users,
                    duration=args.duration,
                    extra=[] if name == "bare" else terminal_extra,
                    prefix=pin,
                    env={"LOADPROBE_PASSWORD": PASSWORD, **variant_env},
                )
                rps, rps_cpu, failures = get_rps(stats)
                if failures:
                    raise SystemExit(f"{name}: {failures} failed requests")
                figures[name].append(rps)
                per_cpu[name].append(rps_cpu)
                print(
                    f"  run {run + 1} {name:<14} {rps:8.0f} req/s  {rps_cpu:8.0f} req/CPU-s",
                    flush=True,
                )
        samples = len(read_all(tmp / "samples.stream"))
    finally:
        server.terminate()
        server.wait()
    out: dict[str, Any] = {"samples_written_last_run": samples}
    for name in VARIANTS:
        out[name] = statistics.median(figures[name])
        out[f"{name}_cpu"] = statistics.median(per_cpu[name])
    return out


# --- timing through the lab -------------------------------------------------------------------


def netwatch(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netwatch.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"netwatch {' '.join(args)}: {done.stderr.strip() or done.stdout}")


def health_p50(netns: str, url: str, tmp: Path, duration: int, name: str) -> dict[str, float]:
    from loadprobe import verdict
    from loadprobe.samples import RequestRecord, read_all

    samples = tmp / f"timing-{name}.stream"
    locust(
        tmp / "terminal.py",
        url,
        users=1,
        duration=duration,
        extra=[
            "--town",
            "nishiki",
            "--topology",
            str(REPO / "topology.yaml"),
            "--think-time",
            "0s",
            "--samples-file",
            str(samples),
        ],
        prefix=["ip", "netns", "exec", netns],
        env={"BENCH_WAIT": "0.05", "LOADPROBE_PASSWORD": PASSWORD},
    )
    durations = sorted(
        r.sample.duration for r in read_all(samples) if isinstance(r, RequestRecord) and r.sample.ok
    )
    if not durations:
        raise SystemExit(f"{name}: no successful request")
    return {
        "n": len(durations),
        "p50": verdict.percentile(durations, 50) or 0.0,
        "p95": verdict.percentile(durations, 95) or 0.0,
        "min": durations[0],
    }


def timing(args: argparse.Namespace, tmp: Path) -> dict[str, Any] | None:
    from netwatch.emulator.control import EmulatorClient
    from netwatch.lab.namespaces import existing_namespaces
    from netwatch.lab.rundir import RunDir

    if os.geteuid() != 0:
        print("timing accuracy: skipped (needs root for the lab)")
        return None
    if any(ns.startswith("nw-") for ns in existing_namespaces()):
        print("timing accuracy: skipped (a lab is already up; take it down first)")
        return None
    run_dir = str(tmp / "lab")
    (tmp / "terminal.py").write_text(TERMINAL + PROBE)
    netwatch("lab", "up", "--no-rtt", "--run-dir", run_dir)
    try:
        core = EmulatorClient(RunDir.of(run_dir).control_socket("lgwan-dc"))
        core.set("both", delay_s=0.0, jitter_s=0.0)
        url = "http://10.200.0.10:8080"
        results = {"server": health_p50("nw-dc", url, tmp, args.timing_duration, "server")}
        netwatch(
            "lab", "impair", "nishiki", "primary", "--delay", "0ms", "--jitter", "0ms",
            "--run-dir", run_dir,
        )  # fmt: skip
        results["zero"] = health_p50("nw-nishiki", url, tmp, args.timing_duration, "zero")
        netwatch(
            "lab", "impair", "nishiki", "primary", "--delay", "20ms", "--jitter", "0ms",
            "--run-dir", run_dir,
        )  # fmt: skip
        results["link"] = health_p50("nw-nishiki", url, tmp, args.timing_duration, "link")
    finally:
        netwatch("lab", "down", "--run-dir", run_dir)
    expected = 0.040 + results["server"]["p50"]
    return {**results, "expected_p50": expected, "error": results["link"]["p50"] - expected}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=3, help="runs per locustfile (%(default)s)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (%(default)s)")
    parser.add_argument("--users", type=int, default=40, help="Locust users (%(default)s)")
    parser.add_argument(
        "--timing-duration", type=int, default=15, help="seconds per timing run (%(default)s)"
    )
    parser.add_argument("--skip-lab", action="store_true", help="skip the timing part")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="loadprobe-bench-") as name:
        tmp = Path(name)
        print(f"throughput, one core, GET /health, {args.users} users, no think time:")
        tp = throughput(args, tmp)
        labels = {
            "bare": "bare FastHttpUser",
            "terminal": "loadprobe terminal",
            "terminal-json": "  ... JSON check",
        }
        for name, label in labels.items():
            print(
                f"{label:<20} {tp[name]:8.0f} req/s  {tp[name + '_cpu']:8.0f} req/CPU-s  "
                f"ratio {tp[name] / tp['bare']:.2f} / {tp[name + '_cpu'] / tp['bare_cpu']:.2f}"
            )
        print("(ratio: wall / CPU-normalised, to bare; target >= 0.90)")
        if not args.skip_lab:
            print("timing accuracy through the lab (p50 of /health, 1 terminal, 50 ms pacing):")
            result = timing(args, tmp)
            if result is not None:
                for key, label in (
                    ("server", "nw-dc to itself (server's own time)"),
                    ("zero", "nw-nishiki, links at 0 ms"),
                    ("link", "nw-nishiki, 20 ms each way"),
                ):
                    r = result[key]
                    print(
                        f"  {label:<38} p50 {r['p50'] * 1000:7.2f} ms  "
                        f"p95 {r['p95'] * 1000:7.2f} ms  min {r['min'] * 1000:7.2f} ms  "
                        f"n={r['n']:.0f}"
                    )
                print(
                    f"  expected 40 ms + server = {result['expected_p50'] * 1000:.2f} ms; "
                    f"measured {result['link']['p50'] * 1000:.2f} ms; "
                    f"error {result['error'] * 1000:+.2f} ms (target within 2 ms)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
