"""Which path the traffic takes, and pinning it for a run (`ip` at the edge).

`lookup` asks the kernel (``ip -j route get``) where a packet to the data
center would go right now, in the town's namespace (the lab) or on this
host, and names the town path whose interface that is. A report records
such lookups before, during and after a run, so it can never claim
"backup" for traffic that went over the primary.

`PinnedRoutes` replaces the town's routes to the data-center prefixes so
that they go over one path (``ip route replace PREFIX via GW dev IFACE proto
91 src ADDR``, protocol 91 being netwatch's own), and puts the routes that
were there back when it exits, on failure and Ctrl-C too, but only where
the pin is still in place: a route something else changed during the run
is newer than what was saved, and stays.  (With an agent in the town,
loadprobe holds the path through the agent instead and pins nothing.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Network
from typing import Any

from netwatch.constants import RTPROT_NETWATCH
from netwatch.errors import RouteError
from netwatch.topology import Town, TownPath

IP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Lookup:
    """One answer of `ip route get`: where traffic to `destination` goes."""

    at: float  # epoch seconds
    destination: str
    dev: str | None
    gateway: str | None
    source: str | None
    path: str | None  # the town path whose interface is `dev`, or None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ip() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def run_ip(args: Sequence[str], netns: str | None = None) -> str:
    argv = [_ip(), *(["-n", netns] if netns else []), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RouteError(f"{' '.join(argv)}: {exc}") from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise RouteError(f"{' '.join(argv)}: {reason}")
    return done.stdout


def path_of(town: Town, dev: str | None, gateway: str | None) -> str | None:
    """The town path carried by interface `dev` (or, failing that, via `gateway`)."""
    for path in town.paths:
        if dev is not None and path.interface == dev:
            return path.name
    for path in town.paths:
        if gateway is not None and str(path.gateway) == gateway:
            return path.name
    return None


def route_get(destination: str, netns: str | None = None) -> dict[str, Any]:
    """`ip -j route get DESTINATION` (inside `netns`): the kernel's answer."""
    out = run_ip(["-j", "route", "get", destination], netns)
    try:
        entries = json.loads(out)
        return dict(entries[0]) if entries else {}
    except (ValueError, IndexError, KeyError, TypeError):
        raise RouteError(f"ip route get {destination}: unreadable answer {out!r}") from None


def route_dev(destination: str, netns: str | None = None) -> str | None:
    """The interface traffic to `destination` leaves by right now, or None."""
    try:
        dev = route_get(destination, netns).get("dev")
    except RouteError:
        return None
    return str(dev) if dev is not None else None


def lookup(destination: str, town: Town, netns: str | None = None) -> Lookup:
    entry = route_get(destination, netns)
    dev, gateway = entry.get("dev"), entry.get("gateway")
    return Lookup(
        at=time.time(),
        destination=destination,
        dev=dev,
        gateway=gateway,
        source=entry.get("prefsrc"),
        path=path_of(town, dev, gateway),
    )


def _route_args(route: dict[str, Any]) -> list[str]:
    """`ip route` arguments that recreate a route as `ip -j route show` printed it."""
    args = [str(route["dst"])]
    if route.get("gateway"):
        args += ["via", str(route["gateway"])]
    if route.get("dev"):
        args += ["dev", str(route["dev"])]
    if route.get("protocol"):
        args += ["proto", str(route["protocol"])]
    if route.get("scope") and route.get("scope") != "global":
        args += ["scope", str(route["scope"])]
    if route.get("prefsrc"):
        args += ["src", str(route["prefsrc"])]
    if route.get("metric") is not None:
        args += ["metric", str(route["metric"])]
    return args


class PinnedRoutes:
    """Within the block, the town's routes to `prefixes` go over `path`.

    ``with PinnedRoutes("nw-nishiki", prefixes, town.path("backup")): ...``
    """

    def __init__(self, netns: str | None, prefixes: Sequence[IPv4Network], path: TownPath) -> None:
        self.netns = netns
        self.prefixes = [str(p) for p in prefixes]
        self.path = path
        self.saved: list[dict[str, Any]] = []
        self.pinned = False
        self.problems: list[str] = []  # what restore() could not put back

    def routes(self) -> list[dict[str, Any]]:
        """The main table's routes to our prefixes (any metric)."""
        out = run_ip(["-j", "route", "show", "table", "main"], self.netns)
        try:
            table = json.loads(out) if out.strip() else []
        except ValueError:
            raise RouteError(f"ip route show: unreadable answer {out[:200]!r}") from None
        return [r for r in table if isinstance(r, dict) and r.get("dst") in self.prefixes]

    def pin(self) -> None:
        self.saved = self.routes()
        self.pinned = True  # from here on, restore() has something to undo
        for prefix in self.prefixes:
            src = ["src", str(self.path.address.ip)]
            run_ip(["route", "replace", *self._ours(prefix), *src], self.netns)

    def _ours(self, prefix: str) -> list[str]:
        """The pinned route of `prefix`, as `ip route` arguments."""
        path = self.path
        return [prefix, "via", str(path.gateway), "dev", path.interface,
                "proto", str(RTPROT_NETWATCH)]  # fmt: skip

    def restore(self) -> list[str]:
        """Put the saved routes back; returns the problems (empty when all went well)."""
        if not self.pinned:
            return []
        problems: list[str] = []
        try:
            now = self.routes()
        except RouteError as exc:
            now = []
            problems.append(str(exc))
        mine = {r["dst"] for r in now if self._is_pin(r)}
        for prefix in sorted(set(self.prefixes) - mine):
            problems.append(
                f"{prefix}: the route changed during the run (not by loadprobe): left as it is"
            )
        for route in self.saved:
            if route.get("dst") not in mine:
                continue
            try:
                run_ip(["route", "replace", *_route_args(route)], self.netns)
            except RouteError as exc:
                problems.append(str(exc))
        # Our metric-0 route is gone by replacement where a metric-0 route was
        # saved; where none was, remove ours.
        had_metric0 = {r["dst"] for r in self.saved if not r.get("metric")}
        for prefix in self.prefixes:
            if prefix in had_metric0 or prefix not in mine:
                continue
            try:
                run_ip(["route", "del", *self._ours(prefix)], self.netns)
            except RouteError as exc:
                problems.append(str(exc))
        self.pinned = False
        self.problems = problems
        return problems

    def _is_pin(self, route: dict[str, Any]) -> bool:
        """Whether `route` is the one `pin` put there (metric 0, our gateway)."""
        proto = str(route.get("protocol", ""))
        return (
            not route.get("metric")
            and route.get("dev") == self.path.interface
            and route.get("gateway") == str(self.path.gateway)
            and proto in (str(RTPROT_NETWATCH), "netwatch")
        )

    def __enter__(self) -> PinnedRoutes:
        try:
            self.pin()
        except BaseException:
            self.restore()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()
