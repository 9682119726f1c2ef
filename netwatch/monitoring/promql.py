"""PromQL shared by the dashboards and the alert rules: the fleet endpoint's
metric names and the numeric codes that turn its one-series-per-state
metrics into something a state timeline can draw.

The fleet exports a state as one series labelled with it (value 1, see
`netwatch.opscenter.metrics`); a timeline wants one series per path whose
value is the state. `coded` builds that: each state's series times its
code, unioned, the largest per group (there is one).
"""

from __future__ import annotations

from collections.abc import Mapping

from netwatch.health.state import PathState
from netwatch.messages import DrillStatus
from netwatch.opscenter.fleet import Status
from netwatch.topology import Topology

# Colours are Grafana's named palette; unknown is a neutral grey, not the
# theme's text colour (white on a dark theme).
GREY = "#8e8e8e"
PATH_STATE_CODES: Mapping[PathState, tuple[int, str]] = {
    PathState.UNKNOWN: (0, GREY),
    PathState.UP: (1, "green"),
    PathState.DEGRADED: (2, "yellow"),
    PathState.DOWN: (3, "red"),
}
STATUS_CODES: Mapping[Status, tuple[int, str]] = {
    Status.OK: (1, "green"),
    Status.DEGRADED: (2, "yellow"),
    Status.BACKUP: (3, "orange"),
    Status.ALL_DOWN: (4, "red"),
    Status.UNKNOWN: (5, GREY),
    Status.OFFLINE: (6, "purple"),
}
# A finished drill's status (`netwatch_fleet_drill_last_status`; running is
# `netwatch_fleet_drill_running`, never a last status).
DRILL_STATUS_CODES: Mapping[DrillStatus, tuple[int, str]] = {
    DrillStatus.PASSED: (1, "green"),
    DrillStatus.FAILED: (2, "red"),
    DrillStatus.ABORTED: (3, "orange"),
    DrillStatus.REFUSED: (4, "yellow"),
}
PATH_COLOURS = ("green", "orange", "red", "purple")  # by preference: primary first


def selector(metric: str, **labels: str) -> str:
    """`metric{k="v",...}`; a value starting with `=~` is a regex match."""
    parts = []
    for key, value in labels.items():
        op, v = ("=~", value[2:]) if value.startswith("=~") else ("=", value)
        parts.append(f'{key}{op}"{v}"')
    return f"{metric}{{{','.join(parts)}}}"


def coded(metric: str, label: str, codes: Mapping[str, int], by: str, **labels: str) -> str:
    """One series per `by` group whose value is the code of the `label`
    value its one-hot series carries."""
    terms = [
        f"({selector(metric, **labels, **{label: value})} == 1) * {code}"
        for value, code in codes.items()
    ]
    return f"max by ({by}) ({' or '.join(terms)})"


def path_names(topo: Topology) -> list[str]:
    """Every path name of the fleet, in the towns' order of preference."""
    names: list[str] = []
    for town in topo.towns:
        for path in town.paths_by_preference:
            if path.name not in names:
                names.append(path.name)
    return names


def path_codes(topo: Topology) -> dict[str, int]:
    """A path's code in an "active path" timeline: 1 for the most preferred."""
    return {name: i + 1 for i, name in enumerate(path_names(topo))}


def path_state(by: str, **labels: str) -> str:
    codes = {s.value: code for s, (code, _) in PATH_STATE_CODES.items()}
    return coded("netwatch_fleet_path_state", "state", codes, by, **labels)


def town_status(by: str, **labels: str) -> str:
    codes = {s.value: code for s, (code, _) in STATUS_CODES.items()}
    return coded("netwatch_fleet_town_status", "status", codes, by, **labels)


def drill_status(by: str, **labels: str) -> str:
    codes = {s.value: code for s, (code, _) in DRILL_STATUS_CODES.items()}
    return coded("netwatch_fleet_drill_last_status", "status", codes, by, **labels)


def active_path(topo: Topology, by: str, **labels: str) -> str:
    return coded("netwatch_fleet_active_path", "path", path_codes(topo), by, **labels)
