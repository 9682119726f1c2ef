"""Throughput of the reference application, transaction by transaction.

Starts `loadprobe target` in its own process (default settings: one batch
worker, 100 µs per row), then drives it from this process with N concurrent
clients (default 10: the acceptance test's ten terminals) over loopback,
with no think time. For each transaction of the terminal workflow it
reports transactions/s, requests/s and the p50/p95 transaction latency,
each the median of several runs.

    .venv/bin/python bench/target_bench.py [--clients 10] [--runs 3] [--duration 5]

The clients share the machine with the server, so the figures are a lower
bound for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "bench-password"
TOWNS = ("nishiki", "takaharu", "tsuno", "kawaminami")
KANA_PREFIXES = (
    "ヤマ",
    "クロキ",
    "カイ",
    "ヒダカ",
    "タナカ",
    "カワノ",
    "ナガトモ",
    "コダマ",
    "マツ",
)
THINK_TIME_TX_PER_S = 10 / 5.0  # 10 terminals, one transaction every ~5 s each


@dataclass
class Terminal:
    """One simulated terminal: its own connection, session and town."""

    client: httpx.AsyncClient
    town: str
    user: str
    headers: dict[str, str] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    turn: int = 0


@dataclass
class PhaseResult:
    transactions: int
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def tx_per_s(self) -> float:
        return self.transactions / self.seconds

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


Transaction = Callable[[Terminal], Awaitable[int]]  # returns the number of requests made


def _check(response: httpx.Response, *expected: int) -> None:
    if response.status_code not in (expected or (200,)):
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:200]}")


async def app_start(term: Terminal, *, cached: bool) -> int:
    async def get(path: str) -> httpx.Response:
        headers = {"If-None-Match": term.etags[path]} if cached and path in term.etags else {}
        response = await term.client.get(path, headers=headers)
        _check(response, 200, 304)
        term.etags[path] = response.headers["etag"]
        return response

    manifest = await get("/api/v1/app/manifest")
    if manifest.status_code == 200:
        term.etags["names"] = ",".join(a["name"] for a in manifest.json()["assets"])
    names = term.etags["names"].split(",")
    for name in names:
        await get(f"/api/v1/app/assets/{name}")
    return 1 + len(names)


async def logon(term: Terminal) -> int:
    response = await term.client.post(
        "/api/v1/logon", json={"town": term.town, "user": term.user, "password": PASSWORD}
    )
    _check(response)
    term.headers = {"Authorization": f"Bearer {response.json()['token']}"}
    return 1


async def inquiry(term: Terminal) -> int:
    """Search by a reading prefix, then open the first record found (台帳照会)."""
    term.turn += 1
    kana = KANA_PREFIXES[term.turn % len(KANA_PREFIXES)]
    found = await term.client.get(
        "/api/v1/residents", params={"kana": kana, "limit": 20}, headers=term.headers
    )
    _check(found)
    items = found.json()["items"]
    if not items:
        return 1
    record = await term.client.get(
        f"/api/v1/residents/{items[term.turn % len(items)]['resident_id']}", headers=term.headers
    )
    _check(record)
    return 2


async def certificate(term: Terminal) -> int:
    term.turn += 1
    resident_id = f"{term.town}-{1 + (term.turn * 37) % 9000:07d}"
    response = await term.client.post(
        "/api/v1/certificates", json={"resident_id": resident_id}, headers=term.headers
    )
    _check(response)
    if not response.content.startswith(b"%PDF"):
        raise RuntimeError("certificate is not a PDF")
    return 1


async def batch(term: Terminal) -> int:
    """Submit the town's tax recalculation and poll every 100 ms until it is done."""
    submitted = await term.client.post(
        "/api/v1/batch/jobs",
        json={"kind": "tax-recalc", "town": term.town, "fiscal_year": 2012},
        headers=term.headers,
    )
    _check(submitted, 202)
    job_id, requests = submitted.json()["job_id"], 1
    while True:
        await asyncio.sleep(0.1)
        status = await term.client.get(f"/api/v1/batch/jobs/{job_id}", headers=term.headers)
        _check(status)
        requests += 1
        state = status.json()["status"]
        if state == "done":
            break
        if state == "failed":
            raise RuntimeError(f"batch job failed: {status.text}")
    result = await term.client.get(f"/api/v1/batch/jobs/{job_id}/result", headers=term.headers)
    _check(result)
    return requests + 1


async def run_phase(
    terminals: list[Terminal], transaction: Transaction, *, duration: float | None
) -> PhaseResult:
    """Every terminal loops `transaction` back to back for `duration` seconds
    (or runs it once if duration is None)."""
    latencies: list[float] = []
    requests = 0
    start = time.perf_counter()
    deadline = start + (duration or 0)

    async def loop(term: Terminal) -> None:
        nonlocal requests
        while True:
            t0 = time.perf_counter()
            made = await transaction(term)  # not `requests += await ...`: that reads first
            latencies.append(time.perf_counter() - t0)
            requests += made
            if duration is None or time.perf_counter() >= deadline:
                return

    await asyncio.gather(*(loop(term) for term in terminals))
    return PhaseResult(len(latencies), requests, time.perf_counter() - start, latencies)


async def inquiry_during_batch(
    terminals: list[Terminal], background: Terminal, *, duration: float
) -> PhaseResult:
    """The inquiry load while the batch worker is kept busy the whole time."""
    stop = asyncio.Event()

    async def keep_batch_busy() -> None:
        while not stop.is_set():
            await batch(background)

    busy = asyncio.create_task(keep_batch_busy(), name="background batch")
    await asyncio.sleep(0.3)  # let the first job start
    try:
        return await run_phase(terminals, inquiry, duration=duration)
    finally:
        stop.set()
        await busy


PHASES = (
    "app start (no cache)",
    "app start (cached, 304)",
    "logon",
    "inquiry (search + record)",
    "certificate (PDF)",
    "inquiry while a batch runs",
    "batch submit → done",
)


async def one_run(url: str, clients: int, duration: float) -> dict[str, PhaseResult]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as probe:
        _check(await probe.get("/health"))
    terminals = [
        Terminal(
            httpx.AsyncClient(base_url=url, timeout=120),
            TOWNS[i % len(TOWNS)],
            f"{TOWNS[i % len(TOWNS)]}-t{i // len(TOWNS) + 1:02d}",
        )
        for i in range(clients)
    ]
    background = Terminal(
        httpx.AsyncClient(base_url=url, timeout=120), "kawaminami", "kawaminami-t10"
    )
    try:
        await logon(background)
        results = {
            PHASES[0]: await run_phase(
                terminals, lambda t: app_start(t, cached=False), duration=duration
            ),
            PHASES[1]: await run_phase(
                terminals, lambda t: app_start(t, cached=True), duration=duration
            ),
            PHASES[2]: await run_phase(terminals, logon, duration=duration),
            PHASES[3]: await run_phase(terminals, inquiry, duration=duration),
            PHASES[4]: await run_phase(terminals, certificate, duration=duration),
            PHASES[5]: await inquiry_during_batch(terminals, background, duration=duration),
            PHASES[6]: await run_phase(terminals, batch, duration=None),
        }
    finally:
        for term in [*terminals, background]:
            await term.client.aclose()
    return results


def start_server(db: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOADPROBE_TARGET_PASSWORD": PASSWORD}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "loadprobe.cli", "target", "--port", "0", "--db", str(db)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()}")
        if match := re.search(r"serving (http://\S+) ", log.read_text()):
            url = match.group(1)
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server not ready: {log.read_text()}")


def report(runs: list[dict[str, PhaseResult]], clients: int, duration: float) -> str:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    lines = [
        f"loadprobe target, {clients} concurrent clients on loopback, no think time; "
        f"median of {len(runs)} runs ({duration:g} s per phase)",
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}",
        "",
        f"| {'transaction':<28} | {'req/tx':>6} | {'tx/s':>7} | {'req/s':>7} "
        f"| {'p50 ms':>7} | {'p95 ms':>8} |",
        f"|{'-' * 30}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 10}|",
    ]
    for phase in PHASES:
        results = [run[phase] for run in runs]
        per_tx = sum(r.requests for r in results) / sum(r.transactions for r in results)
        lines.append(
            f"| {phase:<28} | {per_tx:>6.1f} | {median([r.tx_per_s for r in results]):>7.1f} "
            f"| {median([r.req_per_s for r in results]):>7.1f} "
            f"| {median([r.percentile(0.5) for r in results]) * 1000:>7.1f} "
            f"| {median([r.percentile(0.95) for r in results]) * 1000:>8.1f} |"
        )
    workflow = [PHASES[i] for i in (1, 2, 3, 4)]
    slowest = min(median([run[p].tx_per_s for run in runs]) for p in workflow)
    lines += [
        "",
        f"10 terminals with ~5 s think time ask about {THINK_TIME_TX_PER_S:g} transactions/s "
        f"in all; the slowest interactive transaction above runs at {slowest:.0f}/s "
        f"({slowest / THINK_TIME_TX_PER_S:.0f}x that).",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients (%(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are shown (%(default)s)")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per timed phase (%(default)s)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="target-bench-") as tmp:
        process, url = start_server(Path(tmp) / "ledger.sqlite3", Path(tmp) / "server.log")
        try:
            runs = []
            for n in range(args.runs):
                print(f"run {n + 1}/{args.runs} ...", file=sys.stderr, flush=True)
                runs.append(asyncio.run(one_run(url, args.clients, args.duration)))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    print(report(runs, args.clients, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
