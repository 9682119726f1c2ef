"""The lab's emulated links: their emulator processes, and faults on a
running lab (cut, restore and impair a town's path).

A town's path is one emulated link; `up` is the town-to-data-center
direction (the emulator's a_to_b), `down` the way back.  Every change is
applied by the emulator before it answers, so a cut is in force when the
command returns.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from typing import Any, Literal

from netwatch.emulator.control import (
    DirectionName,
    EmulatorClient,
    EmulatorError,
    EmulatorUnavailable,
    LinkState,
)
from netwatch.errors import LabError
from netwatch.lab.plan import Link, Plan, emulator_profile, make_plan
from netwatch.lab.procs import running, spawn
from netwatch.lab.rundir import RunDir
from netwatch.lab.services import READY_TIMEOUT, tail
from netwatch.lab.state import LabState
from netwatch.topology import Topology

Direction = Literal["up", "down", "both"]
_EMULATOR_DIRECTION: dict[Direction, DirectionName] = {
    "up": "a_to_b",
    "down": "b_to_a",
    "both": "both",
}


@dataclass(frozen=True)
class Impairment:
    """Fields left None keep their current value."""

    delay: float | None = None
    jitter: float | None = None
    loss: float | None = None
    rate: int | None = None
    queue: int | None = None

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.delay is not None:
            out["delay_s"] = self.delay
        if self.jitter is not None:
            out["jitter_s"] = self.jitter
        if self.loss is not None:
            out["loss"] = self.loss
        if self.rate is not None:
            out["rate_bps"] = self.rate
        if self.queue is not None:
            out["queue_packets"] = self.queue
        return out


def start_emulators(plan: Plan, state: LabState, run: RunDir) -> None:
    """One emulator process per link (each builds its two TUN ends); returns
    once every one answers on its control socket."""
    records = {}
    for link in plan.links:
        sock = str(run.control_socket(link.id))
        argv = [
            sys.executable, "-m", "netwatch.emulator", "run",
            "--link", link.id,
            "--end-a", link.a.spec(),
            "--end-b", link.b.spec(),
            "--control", sock,
            "--a-to-b", json.dumps(emulator_profile(link.a_to_b)),
            "--b-to-a", json.dumps(emulator_profile(link.b_to_a)),
        ]  # fmt: skip
        log = str(run.log(f"emulator-{link.id}"))
        records[link.id] = record = spawn(
            f"emulator {link.id}", argv, log=log, marker=f"--control {sock}"
        )
        state.processes.append(record)
        state.save()
    for link in plan.links:
        record = records[link.id]
        client = EmulatorClient(run.control_socket(link.id))
        try:
            client.wait_ready(READY_TIMEOUT, alive=functools.partial(running, record.pid))
        except EmulatorUnavailable as exc:
            raise LabError(f"link {link.id} did not come up: {exc}: {tail(record.log)}") from None


def emulator_pids_marker(run: RunDir) -> str:
    """What every emulator of this run directory has in its command line."""
    return f"--control {run.links}/"


def find_link(topo: Topology, town: str, path: str) -> Link:
    try:
        topo.town(town).path(path)
    except KeyError as exc:
        raise LabError(str(exc.args[0])) from None
    return make_plan(topo).link_for(town, path)


def _client(run_dir: str, link: Link) -> EmulatorClient:
    return EmulatorClient(RunDir.of(run_dir).control_socket(link.id), timeout=2.0)


def _apply(run_dir: str, link: Link, direction: Direction, fields: dict[str, Any]) -> LinkState:
    try:
        return _client(run_dir, link).set(_EMULATOR_DIRECTION[direction], fields)
    except EmulatorError as exc:
        raise LabError(f"link {link.id}: {exc} (is the lab up? `netwatch lab status`)") from None


def cut(topo: Topology, run_dir: str, town: str, path: str, direction: Direction) -> LinkState:
    return _apply(run_dir, find_link(topo, town, path), direction, {"cut": True})


def restore(topo: Topology, run_dir: str, town: str, path: str, direction: Direction) -> LinkState:
    return _apply(run_dir, find_link(topo, town, path), direction, {"cut": False})


def impair(
    topo: Topology, run_dir: str, town: str, path: str, direction: Direction, change: Impairment
) -> LinkState:
    fields = change.fields()
    if not fields:
        raise LabError("nothing to change: give --delay, --jitter, --loss, --rate or --queue")
    return _apply(run_dir, find_link(topo, town, path), direction, fields)


def reset(topo: Topology, run_dir: str, town: str, path: str) -> LinkState:
    """Back to topology.yaml's profile in both directions (a cut stays as it is)."""
    link = find_link(topo, town, path)
    _apply(run_dir, link, "up", _without_cut(emulator_profile(link.a_to_b)))
    return _apply(run_dir, link, "down", _without_cut(emulator_profile(link.b_to_a)))


def _without_cut(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "cut"}
