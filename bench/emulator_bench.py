"""Benchmark of the user-space link emulator (netwatch.emulator).

Builds two scratch namespaces joined by one emulator process and measures:

  (a) fidelity: UDP echo probes at 20 ms +- 5 ms one-way, 2 % loss each way:
      RTT median vs 40 ms, loss vs 1 - 0.98**2 = 3.96 %
  (b) rate: bulk TCP (iperf3) through 47 Mbit/s, 10 ms each way
  (c) ceiling: bulk TCP through an unshaped link, emulator CPU per packet
  (d) cut latency: a UDP packet every 0.5 ms; which packets a cut stops

Run as root from the repository root:

    .venv/bin/python -m bench.emulator_bench            # about 3 minutes
    .venv/bin/python -m bench.emulator_bench --only d   # one section

Helper processes (echo server, UDP sender/receiver) are this same file
started with a leading ``_helper`` argument.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netwatch.emulator.harness import ScratchLink, start_scratch_link
from netwatch.emulator.netns import socket_in
from netwatch.emulator.profile import Profile

DEFAULTS = Profile().to_json()
ECHO_PORT = 7100
STREAM_PORT = 7200
IPERF_PORT = 5301
PROBE = struct.Struct("!Qd")  # sequence number, send time (CLOCK_MONOTONIC)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- helper processes (run inside one namespace each) ----------------------


def helper_echo(ns: str, addr: str, port: int) -> None:
    sock = socket_in(ns)
    sock.bind((addr, port))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def helper_recv(ns: str, addr: str, port: int) -> None:
    """Record (seq, arrival time) until 0.5 s without packets; print JSON."""
    sock = socket_in(ns)
    sock.bind((addr, port))
    print("ready", flush=True)
    got: list[tuple[int, float]] = []
    sock.settimeout(10.0)
    try:
        while True:
            data = sock.recv(2048)
            got.append((PROBE.unpack_from(data)[0], time.monotonic()))
            sock.settimeout(0.5)
    except TimeoutError:
        pass
    print(json.dumps(got), flush=True)


def helper_send(ns: str, src: str, dst: str, port: int, count: int, interval: float) -> None:
    """Send ``count`` stamped datagrams ``interval`` apart; print send times."""
    sock = socket_in(ns)
    sock.bind((src, 0))
    sent: list[float] = []
    pad = bytes(64)
    next_at = time.monotonic()
    for seq in range(count):
        while (wait := next_at - time.monotonic()) > 0:
            time.sleep(wait)
        now = time.monotonic()
        sock.sendto(PROBE.pack(seq, now) + pad, (dst, port))
        sent.append(now)
        next_at += interval
    print(json.dumps(sent), flush=True)


def spawn_helper(*args: object) -> subprocess.Popen[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "_helper", *map(str, args)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    return proc


def wait_line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != expected:
        raise RuntimeError(f"helper said {line!r}, expected {expected!r}")


# -- shared measurement tools ----------------------------------------------


@dataclass
class Row:
    section: str
    metric: str
    value: str
    target: str = ""
    ok: bool | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, *args: object, **kwargs: object) -> None:
        row = Row(*args, **kwargs)  # type: ignore[arg-type]
        self.rows.append(row)
        print(f"  {row.metric}: {row.value} {row.target}".rstrip(), flush=True)

    def table(self) -> str:
        head = ("section", "metric", "measured", "target", "")
        body = [
            (
                r.section,
                r.metric,
                r.value,
                r.target,
                "" if r.ok is None else "ok" if r.ok else "MISS",
            )
            for r in self.rows
        ]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]
        lines = [
            "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
            for row in [head, *body]
        ]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


@contextmanager
def iperf_server(link: ScratchLink) -> Iterator[None]:
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            link.ns_b,
            "iperf3",
            "-s",
            "-B",
            link.addr_b,
            "-p",
            str(IPERF_PORT),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # poll until listening, so the client never races it
            out = subprocess.run(
                ["ip", "netns", "exec", link.ns_b, "ss", "-Hltn", f"sport = :{IPERF_PORT}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if out.strip():
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.02)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@dataclass
class Transfer:
    goodput_bps: float
    retransmits: int
    ip_rate_bps: float  # from the emulator's a_to_b counters, steady state
    max_window_bps: float  # highest rate over any ~1 s window of counter samples
    packets: int
    cpu_user_s: float
    cpu_sys_s: float
    wall_s: float


def tcp_transfer(link: ScratchLink, seconds: float) -> Transfer:
    """iperf3 A -> B while sampling the emulator's counters every 0.25 s."""
    samples: list[tuple[float, int, int]] = []

    def sample() -> None:
        state = link.client.get()
        packets = (
            state.a_to_b.counters["packets_received"] + state.b_to_a.counters["packets_received"]
        )
        samples.append((state.uptime_s, state.a_to_b.counters["bytes_passed"], packets))

    cpu0 = cpu_seconds(link.pid)
    wall0 = time.monotonic()
    sample()
    client = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            link.ns_a,
            "iperf3",
            "-J",
            "-c",
            link.addr_b,
            "-p",
            str(IPERF_PORT),
            "-t",
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    while client.poll() is None:
        time.sleep(0.25)
        sample()
    out, _ = client.communicate()
    sample()
    cpu1 = cpu_seconds(link.pid)
    wall = time.monotonic() - wall0
    result = json.loads(out)
    if "error" in result:
        raise RuntimeError(f"iperf3: {result['error']}")
    end = result["end"]
    # Steady state: skip the first second (slow start) and the last sample.
    steady = [s for s in samples[:-1] if s[0] >= samples[0][0] + 1.0]
    ip_rate = (steady[-1][1] - steady[0][1]) * 8 / (steady[-1][0] - steady[0][0])
    windows = [
        (b[1] - a[1]) * 8 / (b[0] - a[0])
        for i, a in enumerate(samples)
        for b in samples[i + 1 :]
        if 0.95 <= b[0] - a[0] <= 1.5
    ]
    return Transfer(
        goodput_bps=end["sum_received"]["bits_per_second"],
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
        ip_rate_bps=ip_rate,
        max_window_bps=max(windows),
        packets=samples[-1][2] - samples[0][2],
        cpu_user_s=cpu1[0] - cpu0[0],
        cpu_sys_s=cpu1[1] - cpu0[1],
        wall_s=wall,
    )


def median_of(runs: list[Transfer], key: Callable[[Transfer], float]) -> float:
    return statistics.median(key(r) for r in runs)


# -- (a) fidelity ------------------------------------------------------------


def bench_fidelity(link: ScratchLink, report: Report, probes: int, interval: float) -> None:
    print(f"(a) fidelity: {probes} probes, one every {interval * 1e3:g} ms", flush=True)
    link.client.set("both", DEFAULTS, delay_s=0.02, jitter_s=0.005, loss=0.02)
    echo = spawn_helper("echo", link.ns_b, link.addr_b, ECHO_PORT)
    sock = socket_in(link.ns_a)
    try:
        wait_line(echo, "ready")
        sock.bind((link.addr_a, 0))
        sock.setblocking(False)
        dst = (link.addr_b, ECHO_PORT)
        rtts: dict[int, float] = {}
        sent = 0
        start = time.monotonic()
        end = start + probes * interval + 1.0  # 1 s for the last replies
        while (now := time.monotonic()) < end:
            if sent < probes and now >= start + sent * interval:
                sock.sendto(PROBE.pack(sent, now), dst)
                sent += 1
                continue
            wake = start + sent * interval if sent < probes else end
            readable, _, _ = select.select([sock], [], [], max(0.0, wake - now))
            while readable:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                arrived = time.monotonic()
                seq, stamp = PROBE.unpack(data)
                rtts[seq] = arrived - stamp
    finally:
        sock.close()
        echo.terminate()
        echo.wait()
    values = sorted(rtts.values())
    median = statistics.median(values)
    loss = 1 - len(values) / probes
    expected_loss = 1 - 0.98**2
    report.add("a fidelity", "probes sent / answered", f"{probes} / {len(values)}")
    report.add(
        "a fidelity",
        "RTT median",
        f"{median * 1e3:.3f} ms",
        "40 ms +- 1 ms",
        abs(median - 0.040) <= 0.001,
    )
    report.add(
        "a fidelity",
        "RTT p1 / p99",
        f"{values[len(values) // 100] * 1e3:.2f} / {values[len(values) * 99 // 100] * 1e3:.2f} ms",
        "30 / 50 ms bounds",
    )
    report.add(
        "a fidelity",
        "round-trip loss",
        f"{loss * 100:.2f} %",
        f"{expected_loss * 100:.2f} % +- 0.5 pp",
        abs(loss - expected_loss) <= 0.005,
    )


# -- (b) rate ----------------------------------------------------------------


def bench_rate(link: ScratchLink, report: Report, runs: int, seconds: float) -> None:
    rate = 47_000_000
    print(f"(b) rate: {runs} x {seconds:g} s of TCP through 47 Mbit/s, 10 ms each way", flush=True)
    link.client.set("both", DEFAULTS, delay_s=0.01)
    state = link.client.set("a_to_b", rate_bps=rate)
    results: list[Transfer] = []
    with iperf_server(link):
        for i in range(runs):
            t = tcp_transfer(link, seconds)
            print(
                f"  run {i + 1}: goodput {t.goodput_bps / 1e6:.2f} Mbit/s, "
                f"IP {t.ip_rate_bps / 1e6:.2f} Mbit/s, max 1 s {t.max_window_bps / 1e6:.2f}, "
                f"retransmits {t.retransmits}",
                flush=True,
            )
            results.append(t)
    goodput = median_of(results, lambda t: t.goodput_bps)
    ip_rate = median_of(results, lambda t: t.ip_rate_bps)
    peak = max(t.max_window_bps for t in results)
    report.add("b rate", "queue limit (auto)", f"{state.a_to_b.queue_limit} packets")
    report.add(
        "b rate",
        "TCP goodput",
        f"{goodput / 1e6:.2f} Mbit/s ({goodput / rate * 100:.1f} %)",
        "90-100 % of 47",
        0.9 * rate <= goodput <= rate,
    )
    report.add(
        "b rate",
        "IP-level rate (counters)",
        f"{ip_rate / 1e6:.2f} Mbit/s ({ip_rate / rate * 100:.1f} %)",
        "<= 47 Mbit/s",
        ip_rate <= rate,
    )
    report.add(
        "b rate",
        "highest 1 s window",
        f"{peak / 1e6:.2f} Mbit/s",
        "<= 47 Mbit/s (+1 packet)",
        peak <= rate * 1.003,
    )
    report.add("b rate", "retransmits / run", f"{median_of(results, lambda t: t.retransmits):.0f}")


# -- (c) ceiling -------------------------------------------------------------


def bench_ceiling(link: ScratchLink, report: Report, runs: int, seconds: float) -> None:
    print(f"(c) ceiling: {runs} x {seconds:g} s of TCP through an unshaped link", flush=True)
    link.client.set("both", DEFAULTS)
    results: list[Transfer] = []
    with iperf_server(link):
        for i in range(runs):
            t = tcp_transfer(link, seconds)
            print(
                f"  run {i + 1}: goodput {t.goodput_bps / 1e6:.0f} Mbit/s, "
                f"{t.packets / t.wall_s:.0f} packets/s, "
                f"CPU {(t.cpu_user_s + t.cpu_sys_s) / t.wall_s * 100:.0f} %",
                flush=True,
            )
            results.append(t)
    goodput = median_of(results, lambda t: t.goodput_bps)
    per_packet = median_of(results, lambda t: (t.cpu_user_s + t.cpu_sys_s) / t.packets)
    user_share = median_of(results, lambda t: t.cpu_user_s / (t.cpu_user_s + t.cpu_sys_s))
    report.add(
        "c ceiling",
        "TCP goodput, unshaped",
        f"{goodput / 1e6:.0f} Mbit/s",
        ">= 200 Mbit/s",
        goodput >= 200e6,
    )
    report.add(
        "c ceiling",
        "packets/s (both ways)",
        f"{median_of(results, lambda t: t.packets / t.wall_s):.0f}",
    )
    report.add(
        "c ceiling",
        "emulator CPU per packet",
        f"{per_packet * 1e6:.2f} us ({user_share * 100:.0f} % user)",
    )
    report.add(
        "c ceiling",
        "emulator CPU load",
        f"{median_of(results, lambda t: (t.cpu_user_s + t.cpu_sys_s) / t.wall_s):.0%} of a core",
    )


# -- (d) cut latency ---------------------------------------------------------


@dataclass
class CutRun:
    reply_s: float  # request sent -> reply received
    first_dropped_s: float  # send time of the first dropped packet - reply received
    last_passed_s: float  # send time of the last delivered packet - reply received
    # Delivered although sent after the reply: must be 0. (Arrival times are
    # not compared: the receiver process may read a packet written before
    # the cut after the reply, which says nothing about the emulator.)
    delivered_after_reply: int
    held_dropped: int


def cut_once(link: ScratchLink, delay: float) -> CutRun:
    interval = 0.0005
    link.client.set("both", DEFAULTS, delay_s=delay)
    receiver = spawn_helper("recv", link.ns_b, link.addr_b, STREAM_PORT)
    wait_line(receiver, "ready")
    sender = spawn_helper("send", link.ns_a, link.addr_a, link.addr_b, STREAM_PORT, 2000, interval)
    before = link.client.get().a_to_b.counters["dropped_cut"]
    time.sleep(0.4)  # part of the schedule: let the stream run before cutting
    asked = time.monotonic()
    state = link.client.cut("a_to_b")
    replied = time.monotonic()
    sent_out, _ = sender.communicate(timeout=30)
    recv_out, _ = receiver.communicate(timeout=30)
    link.client.restore()
    sent: list[float] = json.loads(sent_out)
    got: list[tuple[int, float]] = json.loads(recv_out)
    seqs = sorted(seq for seq, _ in got)
    if seqs != list(range(len(seqs))):
        raise RuntimeError("packets lost before the cut: the stream is not clean")
    last = seqs[-1]
    return CutRun(
        reply_s=replied - asked,
        first_dropped_s=sent[last + 1] - replied,
        last_passed_s=sent[last] - replied,
        delivered_after_reply=sum(1 for seq in seqs if sent[seq] > replied),
        held_dropped=state.a_to_b.counters["dropped_cut"] - before,
    )


def bench_cut(link: ScratchLink, report: Report, runs: int) -> None:
    print(f"(d) cut latency: {runs} runs, one UDP packet every 0.5 ms", flush=True)
    plain = [cut_once(link, 0.0) for _ in range(runs)]
    for r in plain:
        print(
            f"  reply {r.reply_s * 1e3:.3f} ms, first dropped sent at "
            f"{r.first_dropped_s * 1e3:+.3f} ms, last passed at {r.last_passed_s * 1e3:+.3f} ms, "
            f"delivered after reply {r.delivered_after_reply}",
            flush=True,
        )
    held = [cut_once(link, 0.02) for _ in range(max(1, runs // 2))]
    report.add(
        "d cut",
        "control round trip (cut request)",
        f"{statistics.median(r.reply_s for r in plain) * 1e3:.3f} ms",
    )
    first = statistics.median(r.first_dropped_s for r in plain)
    report.add(
        "d cut",
        "first dropped packet, sent at",
        f"{first * 1e3:+.3f} ms from the reply",
        "<= +0.5 ms (one packet)",
        first <= 0.0005,
    )
    late = max(r.delivered_after_reply for r in plain + held)
    report.add(
        "d cut", "packets sent after the reply, delivered", f"{late} (worst run)", "0", late == 0
    )
    report.add(
        "d cut",
        "held packets dropped (20 ms delay)",
        f"{statistics.median(r.held_dropped for r in held):.0f} per cut",
        "~40 (20 ms / 0.5 ms)",
    )


# -- main --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["_helper"]:
        kind, *rest = args_in[1:]
        if kind == "echo":
            helper_echo(rest[0], rest[1], int(rest[2]))
        elif kind == "recv":
            helper_recv(rest[0], rest[1], int(rest[2]))
        else:
            helper_send(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]), float(rest[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="abcd", help="sections to run, e.g. 'bc'")
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=0.01,
        help="probe spacing; >= 2 x jitter keeps release clamping out of the RTT",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of (b) and (c); (d) does 2x")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each TCP run")
    args = parser.parse_args(args_in)
    if os.geteuid() != 0:
        print("emulator_bench: needs root (namespaces, TUN devices)", file=sys.stderr)
        return 2
    report = Report()
    started = time.monotonic()
    with start_scratch_link(prefix="nw-b-", seed=2024) as link:
        if "a" in args.only:
            bench_fidelity(link, report, args.probes, args.probe_interval)
        if "b" in args.only:
            bench_rate(link, report, args.runs, args.seconds)
        if "c" in args.only:
            bench_ceiling(link, report, args.runs, args.seconds)
        if "d" in args.only:
            bench_cut(link, report, 2 * args.runs)
    print()
    print(
        f"Link emulator benchmark, {os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}, {time.monotonic() - started:.0f} s"
    )
    print(report.table())
    return 0 if all(r.ok is not False for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
