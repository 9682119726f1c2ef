"""loadprobe's options on Locust's command line, and the scenario they select.

`add_options` is a listener for Locust's ``init_command_line_parser`` hook
(registered by `locust_plugin.install`, never on import); every option can
also come from an environment variable. `scenario_of` reads a Locust
environment's options and topology.yaml into the `Scenario` its terminals
run (once per process).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

from loadprobe import scenario as scenario_mod
from loadprobe.scenario import Scenario, ScenarioError


def listen(hook: object, listener: Callable[..., None]) -> None:
    """Add a listener to a Locust event hook (its add_listener is untyped)."""
    cast(Any, hook).add_listener(listener)


def add_options(parser: Any, **_: Any) -> None:
    group = parser.add_argument_group("loadprobe", "the town office terminals (loadprobe)")
    group.add_argument(
        "--town",
        env_var="LOADPROBE_TOWN",
        default="",
        help="town id of the terminals (topology towns[].id)",
    )
    group.add_argument(
        "--topology",
        env_var="LOADPROBE_TOPOLOGY",
        default="topology.yaml",
        help="topology file with the scenario (loadtest section)",
    )
    group.add_argument(
        "--think-time",
        env_var="LOADPROBE_THINK_TIME",
        default="",
        help="think time between transactions, MIN,MAX (e.g. 2s,5s); default from topology",
    )
    group.add_argument(
        "--samples-file",
        env_var="LOADPROBE_SAMPLES",
        default="",
        help="write every raw sample here (JSON lines; master or single process)",
    )
    group.add_argument(
        "--terminal-stride",
        env_var="LOADPROBE_TERMINAL_STRIDE",
        type=int,
        default=1,
        help="number of worker processes, so terminal numbers do not collide",
    )


@lru_cache(maxsize=8)
def _scenario(topology: str, town: str, host: str, think: str) -> Scenario:
    from netwatch.topology import TopologyError, load

    if not os.path.exists(topology):
        # A worker on another machine gets the master's path, which may not
        # exist here: use this machine's own topology file instead.
        topology = os.environ.get("LOADPROBE_TOPOLOGY") or "topology.yaml"
    try:
        topo = load(topology)
    except TopologyError as exc:
        raise ScenarioError(f"{topology}: {exc.problems[0]}") from None
    if not town:
        raise ScenarioError("no town: pass --town or set LOADPROBE_TOWN")
    think_time = scenario_mod.parse_think_time(think) if think else None
    return scenario_mod.from_topology(
        topo, town, topology_path=topology, base_url=host or None, think_time=think_time
    )


def scenario_of(environment: Any) -> Scenario:
    """The scenario this Locust process runs, from its options and topology.yaml."""
    options = environment.parsed_options
    return _scenario(
        str(getattr(options, "topology", "topology.yaml")),
        str(getattr(options, "town", "")),
        str(environment.host or ""),
        str(getattr(options, "think_time", "")),
    )
