"""Faults on a running lab: cut, restore and impair a town's path.

A town's path is one emulated link; `up` is the town-to-data-center
direction (the emulator's a_to_b), `down` the way back.  Every change is
applied by the emulator before it answers, so a cut is in force when the
command returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from netwatch.emulator.control import DirectionName, EmulatorClient, EmulatorError, LinkState
from netwatch.errors import LabError
from netwatch.lab.build import control_socket
from netwatch.lab.plan import Link, emulator_profile, make_plan
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


def find_link(topo: Topology, town: str, path: str) -> Link:
    try:
        topo.town(town).path(path)
    except KeyError as exc:
        raise LabError(str(exc.args[0])) from None
    return make_plan(topo).link_for(town, path)


def _client(run_dir: str, link: Link) -> EmulatorClient:
    return EmulatorClient(control_socket(run_dir, link.id), timeout=2.0)


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
