"""The scenario of one load test, as data: topology.yaml plus overrides.

Both sides use it: `loadprobe run` (which checks it before anything
starts) and the locustfile (which rebuilds it in every Locust process from
the same topology and options). It imports neither Locust nor gevent.

The password is never part of the scenario: only where to find it (an
environment variable or a file), read by `read_password` at the moment of
use, so no report, log or command line can carry it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from loadprobe.verdict import Limits
from netwatch.errors import UserError
from netwatch.topology import TRANSACTIONS, Topology
from netwatch.topology.units import parse_duration, parse_percentage


class ScenarioError(UserError):
    """A scenario that cannot run: unknown town, bad override, no password."""


@dataclass(frozen=True)
class Scenario:
    town: str
    population: int  # residents of the town: the rows a tax batch must count
    base_url: str
    terminals: int  # simulated terminals
    accounts: int  # the town's terminal accounts (towns[].terminals): logons wrap around them
    duration: float  # seconds
    think_min: float  # seconds between two transactions of one terminal
    think_max: float
    user_template: str  # "{town}-t{terminal:02d}"
    password_env: str
    password_file: str | None  # absolute, or None
    resident_kana: tuple[str, ...]
    batch_poll: float
    batch_timeout: float
    request_timeout: float
    fiscal_year: int
    sla: Mapping[str, Limits] = field(default_factory=dict)

    def user(self, terminal: int) -> str:
        return self.user_template.format(town=self.town, terminal=terminal)

    @property
    def target_host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def target_port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def password_source(self) -> str:
        """Where the password comes from, for reports (never the password)."""
        if self.password_file:
            return f"file {self.password_file}"
        return f"environment variable {self.password_env}"

    @property
    def stop_grace(self) -> float:
        """How long terminals may take to finish the transaction in hand when the
        run ends: a batch may wait for its whole timeout."""
        return self.batch_timeout + self.request_timeout


def from_topology(
    topo: Topology,
    town_id: str,
    *,
    topology_path: str | Path = "topology.yaml",
    base_url: str | None = None,
    terminals: int | None = None,
    duration: float | None = None,
    think_time: tuple[float, float] | None = None,
    sla_overrides: Sequence[str] = (),
) -> Scenario:
    """The scenario of `town_id`, with command-line overrides applied."""
    try:
        town = topo.town(town_id)
    except KeyError as exc:
        raise ScenarioError(str(exc.args[0])) from None
    lt = topo.loadtest
    password_file = None
    if lt.credentials.password_file:
        password_file = str(Path(topology_path).resolve().parent / lt.credentials.password_file)
    think = think_time or (lt.think_time.min, lt.think_time.max)
    scenario = Scenario(
        town=town.id,
        population=town.population,
        base_url=(base_url or lt.base_url).rstrip("/"),
        terminals=terminals or lt.terminals,
        accounts=town.terminals,
        duration=duration or lt.duration,
        think_min=think[0],
        think_max=think[1],
        user_template=lt.credentials.user,
        password_env=lt.credentials.password_env,
        password_file=password_file,
        resident_kana=tuple(lt.resident_kana),
        batch_poll=lt.batch_poll,
        batch_timeout=lt.batch_timeout,
        request_timeout=lt.request_timeout,
        fiscal_year=lt.fiscal_year,
        sla={
            name: Limits(s.p95, s.p99, s.max_error_ratio, s.max_degradation)
            for name, s in lt.sla.items()
        },
    )
    check_url(scenario.base_url)
    if scenario.think_min > scenario.think_max:
        raise ScenarioError("think time: the minimum is above the maximum")
    return apply_sla_overrides(scenario, sla_overrides)


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScenarioError(f"expected a URL like http://HOST:PORT, got {url!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ScenarioError(f"the port in {url!r} is not a number 0-65535") from None


_SLA_KEYS: dict[str, Callable[[str], float]] = {
    "p95": parse_duration,
    "p99": parse_duration,
    "max_error_ratio": parse_percentage,
    "max_degradation": float,
}


def apply_sla_overrides(scenario: Scenario, overrides: Sequence[str]) -> Scenario:
    """Apply `TRANSACTION.KEY=VALUE` overrides, e.g. `logon.p95=500ms`,
    `batch.max_error_ratio=5%`, `certificate.max_degradation=2.5`."""
    sla = dict(scenario.sla)
    for text in overrides:
        target, sep, value = text.partition("=")
        name, dot, key = target.strip().partition(".")
        if not sep or not dot:
            raise ScenarioError(f"--sla {text!r}: expected TRANSACTION.KEY=VALUE")
        if name not in TRANSACTIONS:
            raise ScenarioError(
                f"--sla {text!r}: unknown transaction {name!r} (known: {', '.join(TRANSACTIONS)})"
            )
        if key not in _SLA_KEYS:
            raise ScenarioError(
                f"--sla {text!r}: unknown key {key!r} (known: {', '.join(_SLA_KEYS)})"
            )
        try:
            number = float(_SLA_KEYS[key](value.strip()))
        except ValueError as exc:
            raise ScenarioError(f"--sla {text!r}: {exc}") from None
        if number < 0 or (key == "max_degradation" and number < 1):
            raise ScenarioError(f"--sla {text!r}: out of range")
        current = sla.get(name) or Limits(float("inf"), float("inf"), 1.0, float("inf"))
        sla[name] = replace(current, **{key: number})
    return replace(scenario, sla=sla)


def read_password(scenario: Scenario, environ: Mapping[str, str] | None = None) -> str:
    """The terminals' password, from the scenario's file or environment variable."""
    env = os.environ if environ is None else environ
    if scenario.password_file:
        try:
            text = Path(scenario.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(
                f"cannot read the password file {scenario.password_file}: {exc.strerror}"
            ) from None
        password = text.strip("\r\n")
        if not password:
            raise ScenarioError(f"the password file {scenario.password_file} is empty")
        return password
    password = env.get(scenario.password_env, "")
    if not password:
        raise ScenarioError(
            f"no password: set the environment variable {scenario.password_env} "
            "(loadtest.credentials in topology.yaml)"
        )
    return password


def parse_think_time(text: str) -> tuple[float, float]:
    """'2s,5s' -> (2.0, 5.0); '500ms' -> (0.5, 0.5)."""
    low, _, high = text.partition(",")
    try:
        pair = (parse_duration(low.strip()), parse_duration((high or low).strip()))
    except ValueError as exc:
        raise ScenarioError(f"think time {text!r}: {exc}") from None
    if pair[0] > pair[1]:
        raise ScenarioError(f"think time {text!r}: the minimum is above the maximum")
    return pair
