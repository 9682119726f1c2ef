"""The lab, built for real: namespaces, emulated links, the reference
application and Mosquitto.  Needs root; run alone with `pytest -m lab`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from labtools import (
    ROOT,
    Lab,
    connect_time,
    http_get,
    mqtt_connack,
    needs_root,
    netwatch,
    tcp_socket_in,
    wait_for,
)

from netwatch.lab.namespaces import existing_namespaces

pytestmark = [needs_root, pytest.mark.lab]


def test_every_town_reaches_the_application_over_its_primary(lab: Lab) -> None:
    host, port = lab.app()
    for town in lab.topo.towns:
        before = lab.counters(f"{town.id}-primary")["packets_passed"]
        backup_before = lab.counters(f"{town.id}-backup")["packets_passed"]
        status, body = http_get(lab.plan.nodes[town.id].netns, host, port, "/health")
        assert status == 200
        assert json.loads(body)["status"] == "ok"
        assert lab.counters(f"{town.id}-primary")["packets_passed"] >= before + 3
        assert lab.counters(f"{town.id}-backup")["packets_passed"] == backup_before


def test_routes_moved_by_hand_reach_the_application_over_the_backup(lab: Lab) -> None:
    town = lab.topo.town("tsuno")
    netns = lab.plan.nodes[town.id].netns
    backup, primary = town.backups[0], town.primary
    prefix = str(lab.topo.datacenter.prefixes[0])
    subprocess.run(
        [
            "ip",
            "-n",
            netns,
            "route",
            "replace",
            prefix,
            "via",
            str(backup.gateway),
            "dev",
            backup.interface,
        ],
        check=True,
    )
    try:
        before_backup = lab.counters("tsuno-backup")["packets_passed"]
        before_primary = lab.counters("tsuno-primary")["packets_passed"]
        status, _ = http_get(netns, *lab.app(), "/health")
        assert status == 200
        assert lab.counters("tsuno-backup")["packets_passed"] >= before_backup + 3
        assert lab.counters("tsuno-primary")["packets_passed"] == before_primary
    finally:
        subprocess.run(
            [
                "ip",
                "-n",
                netns,
                "route",
                "replace",
                prefix,
                "via",
                str(primary.gateway),
                "dev",
                primary.interface,
            ],
            check=True,
        )


def test_a_cut_stops_traffic_at_once_and_restore_brings_it_back(lab: Lab) -> None:
    netns = lab.plan.nodes["nishiki"].netns
    host, port = lab.app()
    assert connect_time(netns, host, port) is not None
    result = netwatch("lab", "cut", "nishiki", "primary", "--run-dir", lab.run_dir)
    assert result.returncode == 0, result.stderr
    try:
        dropped = lab.counters("nishiki-primary")["dropped_cut"]
        # The very next packet after the command returned is dropped.
        with tcp_socket_in(netns, kind=socket.SOCK_DGRAM) as udp:
            udp.sendto(b"probe", (host, port))
        wait_for(
            lambda: lab.counters("nishiki-primary")["dropped_cut"] > dropped,
            timeout=1.0,
            what="the cut to drop a packet",
        )
        assert connect_time(netns, host, port, timeout=0.5) is None
        # The backup is untouched by a cut of the primary.
        assert connect_time(netns, host, port, mark=lab.topo.town("nishiki").backups[0].mark)
    finally:
        result = netwatch("lab", "restore", "nishiki", "primary", "--run-dir", lab.run_dir)
    assert result.returncode == 0, result.stderr
    assert connect_time(netns, host, port) is not None


def test_a_one_way_cut_stops_the_round_trip(lab: Lab) -> None:
    netns = lab.plan.nodes["takaharu"].netns
    host, port = lab.app()
    netwatch("lab", "cut", "takaharu", "primary", "--direction", "down", "--run-dir", lab.run_dir)
    try:
        assert connect_time(netns, host, port, timeout=0.5) is None
        assert lab.counters("takaharu-primary", "b_to_a")["dropped_cut"] > 0
        assert lab.counters("takaharu-primary", "a_to_b")["dropped_cut"] == 0
    finally:
        netwatch("lab", "restore", "takaharu", "primary", "--run-dir", lab.run_dir)
    assert connect_time(netns, host, port) is not None


def test_an_impaired_link_shows_the_new_delay_and_loss(lab: Lab) -> None:
    town = lab.topo.town("kawaminami")
    netns = lab.plan.nodes[town.id].netns
    mark = town.backups[0].mark
    host, port = lab.app()
    base = statistics.median(
        t for t in (connect_time(netns, host, port, mark=mark) for _ in range(5)) if t
    )
    result = netwatch(
        "lab",
        "impair",
        "kawaminami",
        "backup",
        "--delay",
        "60ms",
        "--jitter",
        "0ms",
        "--run-dir",
        lab.run_dir,
    )
    assert result.returncode == 0, result.stderr
    try:
        slow = statistics.median(
            t for t in (connect_time(netns, host, port, mark=mark) for _ in range(5)) if t
        )
        # Two directions, each 60 ms instead of 12 ms: +96 ms round trip.
        assert 0.085 < slow - base < 0.110, (base, slow)
        result = netwatch(
            "lab",
            "impair",
            "kawaminami",
            "backup",
            "--loss",
            "30%",
            "--direction",
            "up",
            "--run-dir",
            lab.run_dir,
        )
        assert result.returncode == 0, result.stderr
        before = lab.counters("kawaminami-backup")
        with tcp_socket_in(netns, mark=mark, kind=socket.SOCK_DGRAM) as udp:
            for _ in range(400):
                udp.sendto(b"x" * 64, (host, port))
                time.sleep(0.001)  # pacing, so the 5 Mbit/s uplink queue never overflows

        def seen(c: dict[str, int]) -> int:
            return sum(c[k] for k in ("packets_passed", "dropped_loss", "dropped_queue"))

        def all_counted() -> dict[str, int] | None:
            now = lab.counters("kawaminami-backup")
            return now if seen(now) - seen(before) >= 400 else None

        after = wait_for(all_counted, timeout=5.0, what="400 packets through the emulator")
        assert after["dropped_queue"] == before["dropped_queue"]
        lost = after["dropped_loss"] - before["dropped_loss"]
        assert 60 <= lost <= 180, lost  # 30 % of 400 = 120; binomial sd ~9
        status = json.loads(netwatch("lab", "status", "--json", "--run-dir", lab.run_dir).stdout)
        link = next(x for x in status["links"] if x["link"] == "kawaminami-backup")
        assert link["a_to_b"]["profile"]["loss"] == pytest.approx(0.3)
        assert link["b_to_a"]["profile"]["delay_s"] == pytest.approx(0.06)
    finally:
        result = netwatch(
            "lab", "impair", "kawaminami", "backup", "--reset", "--run-dir", lab.run_dir
        )
    assert result.returncode == 0, result.stderr
    status = json.loads(netwatch("lab", "status", "--json", "--run-dir", lab.run_dir).stdout)
    link = next(x for x in status["links"] if x["link"] == "kawaminami-backup")
    assert link["a_to_b"]["profile"]["loss"] == pytest.approx(0.001)
    assert link["a_to_b"]["profile"]["delay_s"] == pytest.approx(0.012)


def test_mosquitto_answers_every_town_over_either_path(lab: Lab) -> None:
    for town in lab.topo.towns:
        for path in town.paths:
            reply = mqtt_connack(
                lab.plan.nodes[town.id].netns,
                *lab.broker(),
                mark=path.mark,
                client_id=f"test-{town.id}-{path.name}",
                tls=lab.mqtt_client(town.id).tls_context,
            )
            assert reply == b"\x20\x02\x00\x00", (town.id, path.name, reply)


def test_up_again_changes_nothing(lab: Lab) -> None:
    before = json.loads(netwatch("lab", "status", "--json", "--run-dir", lab.run_dir).stdout)
    result = netwatch("lab", "up", "--no-rtt", "--run-dir", lab.run_dir)
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stdout
    after = json.loads(netwatch("lab", "status", "--json", "--run-dir", lab.run_dir).stdout)
    assert [p["pid"] for p in after["processes"]] == [p["pid"] for p in before["processes"]]
    assert after["up"] is True


def test_status_reports_nodes_links_and_processes(lab: Lab) -> None:
    result = netwatch("lab", "status", "--json", "--run-dir", lab.run_dir)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {n["netns"] for n in status["nodes"]} == {n.netns for n in lab.plan.nodes.values()}
    assert all(n["exists"] for n in status["nodes"])
    dc = next(n for n in status["nodes"] if n["node"] == "dc")
    assert any("10.200.0.10/32" in a for a in dc["addresses"])
    assert len(status["links"]) == len(lab.topo.lab.links)
    for link in status["links"]:
        for direction in ("a_to_b", "b_to_a"):
            assert set(link[direction]["counters"]) >= {
                "packets_passed",
                "bytes_passed",
                "dropped_loss",
                "dropped_cut",
                "dropped_queue",
                "queued_now",
            }
    names = {p["name"] for p in status["processes"]}
    assert {"target", "mosquitto"} <= names
    assert all(p["alive"] for p in status["processes"])


def test_zz_down_after_a_crash_leaves_nothing_behind(lab: Lab) -> None:
    # Crash some of the lab's own processes first: down must still clean up.
    status = json.loads(netwatch("lab", "status", "--json", "--run-dir", lab.run_dir).stdout)
    pids = [p["pid"] for p in status["processes"]]
    for proc in status["processes"][:3] + [p for p in status["processes"] if p["name"] == "target"]:
        os.kill(proc["pid"], 9)
    result = netwatch("lab", "down", "--run-dir", lab.run_dir)
    assert result.returncode == 0, result.stderr
    lab_ns = {n.netns for n in lab.plan.nodes.values()}
    assert not lab_ns & existing_namespaces()
    assert not [ns for ns in existing_namespaces() if ns.startswith("nw-") and ns in lab_ns]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes()
    assert not Path(lab.run_dir).exists()


def test_lab_refuses_without_root_in_one_line(tmp_path: Path) -> None:
    """Without CAP_NET_ADMIN the lab says so in one line.  The process stays
    uid 0 and loses only that capability (from its bounding set, so exec
    cannot give it back): it can still read the checkout and the interpreter
    wherever they live (an unprivileged uid cannot, under root's home)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    result = subprocess.run(
        [
            setpriv,
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
            sys.executable,
            "-m",
            "netwatch.cli",
            "lab",
            "up",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 2, result.stderr  # an error (netwatch.errors' exit-code table)
    assert "needs root (CAP_NET_ADMIN)" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "needs root" in result.stderr
