"""The drill observer's own cost: CPU of 100 ICMP echoes and 100 TCP
connects a second from inside a namespace.

Makes a scratch namespace (`obsbench`, loopback only, removed after), a
listener in it, and runs `netwatch.drill.observer.Observer` against it for
--seconds; prints the process's CPU over that time as a percentage of one
core, and how many probes were sent and answered.  Needs root.

    .venv/bin/python bench/observer_bench.py [--seconds 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netwatch.drill.observer import KINDS, Observer
from netwatch.emulator.netns import entered

NETNS = "obsbench"


def one_run(seconds: float) -> tuple[float, dict[str, int], dict[str, int]]:
    with entered(NETNS):
        server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(512)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    observer = Observer(NETNS, "127.0.0.1", server.getsockname()[1])
    observer.start()
    time.sleep(seconds)
    observer.stop()
    after = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - started
    server.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sent = {k: len(observer.probes(k)) for k in KINDS}
    answered = {k: sum(p.rtt is not None for p in observer.probes(k)) for k in KINDS}
    return 100 * cpu / wall, sent, answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        shares = []
        for i in range(args.runs):
            share, sent, answered = one_run(args.seconds)
            shares.append(share)
            print(f"run {i + 1}: {share:.1f} % of a core; sent {sent}, answered {answered}")
        print(f"median {statistics.median(shares):.1f} %, max {max(shares):.1f} %")
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
