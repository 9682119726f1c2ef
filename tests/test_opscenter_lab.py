"""The operations center in the lab, with the real Mosquitto and the four
towns' agents (`netwatch lab up --agents`), read over the lab's network from
inside nw-ops, and its status page in a real headless Chromium."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from labtools import (
    Lab,
    LabKeeper,
    MqttTap,
    http_get,
    needs_root,
    netwatch,
    retained,
    route_dev,
    wait_for,
)

from netwatch.lab.services import OPSCENTER_PORT
from netwatch.lab.state import LabState
from netwatch.messages import OnlineMessage, parse_ts
from netwatch.pki import OPSCENTER_CN

pytestmark = [pytest.mark.lab, needs_root, pytest.mark.slow]

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def lab(lab_keeper: LabKeeper, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The lab with agents, shared with the other module that needs one
    (test_monitoring_lab, test_opscenter_lab): `up --agents` starts them on a
    new lab and changes nothing on a kept one, saying the same either way."""
    lab = lab_keeper.shared(tmp_path_factory)
    up = netwatch("lab", "up", "--agents", "--no-rtt", "--run-dir", lab.run_dir)
    assert up.returncode == 0, up.stderr
    assert "operations center: http://" in up.stdout
    return lab


def ops(lab: Lab) -> str:
    return lab.plan.nodes[lab.plan.ops_node].netns


def api(lab: Lab, path: str) -> Any:
    status, body = http_get(ops(lab), str(lab.plan.broker_address), OPSCENTER_PORT, path)
    assert status == 200, body[:300]
    return json.loads(body) if path.startswith("/api") else body.decode()


def town(lab: Lab, name: str) -> dict[str, Any]:
    return dict(api(lab, f"/api/v1/towns/{name}"))


def metric(lab: Lab, name: str, **labels: str) -> float | None:
    for line in api(lab, "/metrics").splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def lab_cmd(lab: Lab, *args: str) -> None:
    done = netwatch("lab", *args, "--run-dir", lab.run_dir)
    assert done.returncode == 0, done.stderr


def publish(
    lab: Lab, topic: str, payload: bytes, *, retain: bool = False, identity: str | None = None
) -> None:
    """mosquitto_pub as the topic's town (the only identity the broker lets
    write there), or as `identity`."""
    who = identity or topic.split("/")[2]
    argv = ["ip", "netns", "exec", ops(lab), "mosquitto_pub", *lab.mosquitto_args(who)]
    argv += ["-q", "1", "-t", topic, "-s" if payload else "-n", *(["-r"] if retain else [])]
    subprocess.run(argv, input=payload, check=True, timeout=10, capture_output=True)


def all_ok(lab: Lab) -> bool:
    return all(t["status"] == "ok" for t in api(lab, "/api/v1/fleet")["towns"])


def wait_all_ok(lab: Lab) -> None:
    wait_for(lambda: all_ok(lab), timeout=90, step=0.5, what="every town ok on the API")


def test_the_lab_status_shows_the_operations_center(lab: Lab) -> None:
    done = netwatch("lab", "status", "--run-dir", lab.run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"operations center: http://{lab.plan.broker_address}:{OPSCENTER_PORT}/" in done.stdout
    assert any(line.strip().startswith("opscenter ") for line in done.stdout.splitlines())
    wait_all_ok(lab)


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_agents_run_unprivileged_with_two_capabilities_and_fail_over(lab: Lab) -> None:
    """Every lab agent runs as the user `netwatch`, not root, with only
    CAP_NET_RAW and CAP_NET_ADMIN (effective, permitted, bounding, ambient)
    and no_new_privs, the broker as `mosquitto` and the operations center
    as `netwatch` with none; and such an agent
    probes both paths and fails over on a cut."""
    wait_all_ok(lab)
    state = LabState.load(lab.run_dir)
    assert state is not None
    agent_uid = pwd.getpwnam("netwatch").pw_uid
    agents = [p for p in state.processes if p.name.startswith("agent ")]
    assert len(agents) == len(lab.topo.towns)
    for record in agents:
        status = _status(record.pid)
        assert status["Uid"].split() == [str(agent_uid)] * 4, record.name
        for caps in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0x3000, (record.name, caps, status[caps])
        assert status["NoNewPrivs"] == "1"
    broker = next(p for p in state.processes if p.name == "mosquitto")
    status = _status(broker.pid)
    assert status["Uid"].split()[0] == str(pwd.getpwnam("mosquitto").pw_uid)
    assert int(status["CapEff"], 16) == 0
    opscenter = next(p for p in state.processes if p.name == "opscenter")
    status = _status(opscenter.pid)
    assert status["Uid"].split()[0] == str(agent_uid)
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    # Both paths probed (the standby is UP too), and the cut moves the routes.
    wait_for(
        lambda: metric(lab, "netwatch_fleet_path_state", town="tsuno", path="backup", state="up")
        == 1.0,
        timeout=15, what="tsuno's standby path probed and UP",
    )  # fmt: skip
    netns = lab.plan.nodes["tsuno"].netns
    try:
        lab_cmd(lab, "cut", "tsuno", "primary")
        wait_for(lambda: route_dev(netns) == "flets0", timeout=10, what="tsuno on its backup")
    finally:
        lab_cmd(lab, "restore", "tsuno", "primary")


def test_a_cut_shows_on_the_api_the_metrics_and_the_page_within_2s(
    lab: Lab, tmp_path: Path
) -> None:
    wait_all_ok(lab)
    tap = MqttTap(lab, "netwatch/v1/nishiki/events", f"oc-cut-{uuid.uuid4().hex[:6]}")
    try:
        lab_cmd(lab, "cut", "nishiki", "primary")
        wait_for(lambda: tap.events("failover"), timeout=10, what="the agent's failover event")
        decided = parse_ts(tap.events("failover")[0]["ts"]).timestamp()

        def on_backup() -> bool:
            return (
                town(lab, "nishiki")["status"] == "backup"
                and metric(lab, "netwatch_fleet_active_path", town="nishiki", path="backup") == 1.0
            )

        wait_for(on_backup, timeout=10, step=0.05, what="nishiki on its backup")
        seen = time.time()
        assert seen - decided <= 2.0, f"the fleet showed it {seen - decided:.2f} s after the event"
        assert town(lab, "nishiki")["active_path"] == "backup"
        # The page, as a person on duty sees it.
        dom = chromium(lab, tmp_path, "/")
        assert 'id="town-nishiki"' in dom
        row = dom.split('id="town-nishiki"', 1)[1].split("</tr>", 1)[0]
        assert 'data-status="backup"' in row
        assert 'data-active="backup"' in row
        page = chromium(lab, tmp_path, "/towns/nishiki")
        assert 'data-status="backup"' in page
        for shot in ("screenshot_.png", "screenshot_towns_nishiki.png"):
            assert (tmp_path / shot).stat().st_size > 10_000
    finally:
        tap.close()
        lab_cmd(lab, "restore", "nishiki", "primary")


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium (Debian's) is missing; scripts/setup installs it"
)
def test_the_page_is_checked_in_a_real_browser(lab: Lab, tmp_path: Path) -> None:
    dom = chromium(lab, tmp_path, "/")
    for name in ("錦町", "高原町", "都農町", "川南町"):
        assert name in dom
    assert dom.index("錦町") < dom.index("高原町") < dom.index("都農町") < dom.index("川南町")


def chromium(lab: Lab, out: Path, path: str) -> str:
    """The page's DOM after its scripts ran, from inside nw-ops, and a
    screenshot beside the test's other output."""
    assert CHROMIUM is not None, "chromium (Debian's) is missing: scripts/setup installs it"
    url = f"http://{lab.plan.broker_address}:{OPSCENTER_PORT}{path}"
    profile = out / f"chromium-{uuid.uuid4().hex[:6]}"
    base = [
        "ip", "netns", "exec", ops(lab), str(CHROMIUM),
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={profile}", "--window-size=1400,900",
    ]  # fmt: skip
    name = path.replace("/", "_")
    shot = subprocess.run(
        [*base, f"--screenshot={out / f'screenshot{name}.png'}", url],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    dom = subprocess.run(
        [*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    (out / f"dom{name}.html").write_text(dom.stdout, encoding="utf-8")
    return dom.stdout


def test_a_killed_agent_shows_offline_then_unknown(lab: Lab) -> None:
    wait_for(lambda: town(lab, "takaharu")["status"] == "ok", timeout=90, what="takaharu ok")
    state = LabState.load(lab.run_dir)
    assert state is not None
    record = next(p for p in state.processes if p.name == "agent takaharu")
    os.kill(record.pid, signal.SIGKILL)
    try:
        wait_for(
            lambda: town(lab, "takaharu")["status"] == "offline",
            timeout=30, step=0.2, what="takaharu offline (the Last Will)",
        )  # fmt: skip
        assert metric(lab, "netwatch_fleet_town_online", town="takaharu") == 0.0
        wait_for(
            lambda: town(lab, "takaharu")["status"] == "unknown",
            timeout=40, step=0.5, what="takaharu unknown (silent)",
        )  # fmt: skip
        assert town(lab, "takaharu")["active_path"] is None
    finally:
        lab_cmd(lab, "start", "agent-takaharu")


def test_events_sent_while_it_was_stopped_arrive_once_with_their_timestamps(lab: Lab) -> None:
    wait_for(lambda: town(lab, "tsuno")["status"] == "ok", timeout=90, what="tsuno ok")
    tap = MqttTap(lab, "netwatch/v1/tsuno/events", f"oc-restart-{uuid.uuid4().hex[:6]}")
    try:
        lab_cmd(lab, "stop", "opscenter")
        lab_cmd(lab, "cut", "tsuno", "primary")
        wait_for(lambda: tap.events("routes_applied"), timeout=15, what="tsuno's failover")
        missed = [e for e in tap.events() if e["event"] in ("failover", "routes_applied")]
        # One of them again, as a broker redelivers after a lost acknowledgement.
        publish(lab, "netwatch/v1/tsuno/events", json.dumps(missed[0]).encode())
        lab_cmd(lab, "start", "opscenter")

        def stored() -> dict[str, str]:
            events = api(lab, "/api/v1/events?town=tsuno&limit=500")["events"]
            return {e["id"]: e["ts"] for e in events}

        wait_for(
            lambda: {e["id"] for e in missed} <= set(stored()),
            timeout=20, what="the events sent while it was stopped",
        )  # fmt: skip
        events = api(lab, "/api/v1/events?town=tsuno&limit=500")["events"]
        ids = [e["id"] for e in events]
        assert len(ids) == len(set(ids)), "an event was stored twice"
        assert {e["id"]: e["ts"] for e in missed} == {
            i: stored()[i] for i in (e["id"] for e in missed)
        }
        wait_for(lambda: town(lab, "tsuno")["status"] == "backup", timeout=10, what="tsuno backup")
    finally:
        tap.close()
        lab_cmd(lab, "restore", "tsuno", "primary")
        lab_cmd(lab, "start", "opscenter")


def test_bad_messages_are_rejected_and_counted_while_it_serves(lab: Lab) -> None:
    good = retained(lab, "netwatch/v1/nishiki/state")
    assert good is not None
    before = {r: metric(lab, "netwatch_opscenter_messages_rejected_total", reason=r) or 0.0
              for r in ("malformed_json", "town_mismatch", "schema", "too_large")}  # fmt: skip
    publish(lab, "netwatch/v1/kawaminami/state", b"{not json")
    publish(lab, "netwatch/v1/tsuno/state", json.dumps(good).encode())  # nishiki's, on tsuno
    publish(lab, "netwatch/v1/nishiki/state", json.dumps({**good, "schema": 99}).encode())
    publish(lab, "netwatch/v1/nishiki/events", b"[" + b"0," * 40_000 + b"0]")
    for reason, was in before.items():
        wait_for(
            lambda r=reason, w=was: (  # type: ignore[misc]
                metric(lab, "netwatch_opscenter_messages_rejected_total", reason=r) or 0.0
            ) > w,
            timeout=10, what=f"a {reason} rejection",
        )  # fmt: skip
    # A retained garbage message, met again by every (re)start.
    publish(lab, "netwatch/v1/kawaminami/metrics", b"\x00\x01garbage", retain=True)
    try:
        lab_cmd(lab, "stop", "opscenter")
        lab_cmd(lab, "start", "opscenter")
        wait_for(
            lambda: (metric(lab, "netwatch_opscenter_messages_rejected_total",
                            reason="malformed_json") or 0.0) >= 1.0,
            timeout=15, what="the retained garbage rejected after a restart",
        )  # fmt: skip
        # Retained messages arrive while it is still subscribing; it counts
        # itself connected once every subscription is acknowledged.
        wait_for(
            lambda: api(lab, "/api/v1/fleet")["broker"]["connected"] is True,
            timeout=10, what="the operations center subscribed again",
        )  # fmt: skip
    finally:
        publish(lab, "netwatch/v1/kawaminami/metrics", b"", retain=True)  # clears it


def test_a_town_cannot_speak_for_another_nor_a_stranger_connect(lab: Lab) -> None:
    """With the lab's certificates: Takaharu's identity publishing Nishiki's
    retained `online` as false is refused by the broker ("Not authorized"),
    the message reaches nobody and the operations center still shows
    Nishiki online; a client without a certificate cannot connect at all."""
    wait_all_ok(lab)
    forged = OnlineMessage(town="nishiki", online=False).to_json()
    for intruder in ("takaharu", OPSCENTER_CN):
        # MQTT 5: the broker's PUBACK says why (3.1.1 would drop it silently).
        refused = subprocess.run(
            ["ip", "netns", "exec", ops(lab), "mosquitto_pub", "-V", "mqttv5",
             *lab.mosquitto_args(intruder), "-q", "1", "-r", "-t", "netwatch/v1/nishiki/online",
             "-m", forged.decode()],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert "Not authorized" in refused.stderr, (intruder, refused)
    still = retained(lab, "netwatch/v1/nishiki/online")
    assert still is not None
    assert still["online"] is True
    assert metric(lab, "netwatch_fleet_town_online", town="nishiki") == 1.0
    assert town(lab, "nishiki")["status"] == "ok"

    broker = lab.mqtt_client(OPSCENTER_CN)
    host, port = lab.broker()
    stranger = subprocess.run(
        ["ip", "netns", "exec", ops(lab), "mosquitto_pub", "-h", host, "-p", str(port),
         "--cafile", str(broker.ca), "-q", "1", "-t", "netwatch/v1/nishiki/online",
         "-m", forged.decode()],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert stranger.returncode != 0, stranger
    plain = subprocess.run(
        ["ip", "netns", "exec", ops(lab), "mosquitto_pub", "-h", host, "-p", str(port),
         "-q", "1", "-t", "netwatch/v1/nishiki/online", "-m", forged.decode()],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert plain.returncode != 0, plain
    still = retained(lab, "netwatch/v1/nishiki/online")
    assert still is not None
    assert still["online"] is True
