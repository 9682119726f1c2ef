"""CPU cost of one ICMP probe, and the memory its module costs.

Runs N echo probes one after another to 127.0.0.1 from 127.0.0.1 (mark 0,
so no CAP_NET_ADMIN is needed, but raw sockets need root) in one asyncio
loop and reports the process CPU time (user + system) per probe: building
and sending the request, receiving the reply, parsing and matching it, and
the event loop's own work around them.  Then it starts fresh interpreters
to measure VmRSS (from /proc/self/status) after `import` of the prober's
module and after constructing one prober.

    sudo .venv/bin/python bench/probe_cost_bench.py [--count 5000] [--profile]

`--prober MODULE:CLASS` measures another implementation with the same
constructor and probe() signature, e.g. an older copy of icmp.py put on
PYTHONPATH, so a change can be compared on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from ipaddress import IPv4Address
from typing import Any

from netwatch.agent.probes import PathBinding

DEFAULT_PROBER = "netwatch.agent.probes.icmp:IcmpProber"
LOOPBACK = IPv4Address("127.0.0.1")
WARMUP = 200

_RSS_SCRIPT = """
import importlib, sys
from ipaddress import IPv4Address
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
base = rss()
module, _, name = sys.argv[1].partition(":")
cls = getattr(importlib.import_module(module), name)
imported = rss()
cls(IPv4Address("127.0.0.1"))
print(base, imported, rss())
"""


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


async def _run(spec: str, count: int, profile: bool) -> None:
    prober = _load(spec)(LOOPBACK)
    binding = PathBinding("bench", 0, LOOPBACK)
    outcomes: Counter[str] = Counter()
    rtts: list[float] = []
    try:
        for _ in range(WARMUP):
            await prober.probe(binding, 1.0)
        profiler = cProfile.Profile() if profile else None
        t0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for _ in range(count):
            result = await prober.probe(binding, 1.0)
            outcomes[result.outcome] += 1
            if result.rtt_s is not None:
                rtts.append(result.rtt_s)
        if profiler is not None:
            profiler.disable()
        t1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    finally:
        await prober.aclose()
    user = (t1.ru_utime - t0.ru_utime) / count * 1e6
    system = (t1.ru_stime - t0.ru_stime) / count * 1e6
    print(f"prober:            {spec}")
    print(f"probes:            {count} (after {WARMUP} warm-up), outcomes {dict(outcomes)}")
    print(f"CPU per probe:     {user + system:.1f} µs (user {user:.1f}, system {system:.1f})")
    print(f"wall per probe:    {(wall1 - wall0) / count * 1e6:.1f} µs")
    if rtts:
        print(f"RTT median:        {statistics.median(rtts) * 1e6:.1f} µs (as reported)")
    print(f"ignored counters:  {getattr(prober, 'counters', {})}")
    if profiler is not None:
        print("\nprofile (sorted by own time):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def _rss(spec: str) -> None:
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, spec],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        runs.append([int(x) for x in out])
    base, imported, built = (statistics.median(col) for col in zip(*runs, strict=True))
    print(f"VmRSS interpreter: {base / 1024:.1f} MiB (python -c, nothing imported)")
    print(f"VmRSS import:      {imported / 1024:.1f} MiB (+{(imported - base) / 1024:.1f})")
    print(f"VmRSS + prober:    {built / 1024:.1f} MiB (+{(built - base) / 1024:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="timed probes (default 5000)")
    parser.add_argument("--prober", default=DEFAULT_PROBER, help="MODULE:CLASS to measure")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the loop")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("probe_cost_bench: raw ICMP sockets need root")
    print(f"machine:           {os.cpu_count()} cores, {platform.machine()}, ", end="")
    print(f"Linux {platform.release()}, Python {platform.python_version()}")
    asyncio.run(_run(args.prober, args.count, args.profile))
    _rss(args.prober)


if __name__ == "__main__":
    main()
