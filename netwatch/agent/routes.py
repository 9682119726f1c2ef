"""Route backends: how a decision reaches the town's routing.

    backend = make_backend("netlink", town, prefixes)
    await backend.setup()              # per-path tables and rules (probe binding)
    await backend.current()            # the path our routes point at now, or None
    await backend.inspect()            # each prefix's route in the kernel, or None
    await backend.apply(change)        # raises RouteError
    await backend.withdraw()           # remove the routes we own

`netlink` replaces the town's routes to the data-center prefixes in the
main table, one atomic `route replace` per prefix, tagged with netwatch's
route protocol number (so `ip route show proto netwatch` lists exactly
what it owns).  Ownership rules:

- a prefix whose main-table route (metric 0) belongs to another protocol
  is never written, at start or later: `inspect` reports it as foreign and
  the agent raises an alarm, leaving it as it is;
- a change of several prefixes that fails part-way is rolled back to the
  old path (or, with none, the new routes are withdrawn), so the town's
  routes are never left split; if even that fails, `RouteError.split` says
  so and `current()` tells what the kernel has;
- `inspect` lets the agent compare the kernel with its decision at any
  moment (after every change, on route events and at a fixed cadence).

`command` hands the decision to an external router's tooling; `dry-run`
only says what it would do.  Neither can be inspected (`inspect` is None).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any, Literal, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netwatch.constants import MAIN_TABLE, RTPROT_NETWATCH
from netwatch.errors import RouteError, UserError
from netwatch.topology import Town, TownPath

log = logging.getLogger("netwatch.routes")

RULE_PRIORITY_BASE = 1000


@dataclass(frozen=True)
class RouteChange:
    town: str
    old: str | None
    new: str
    reason: str


Owner = Literal["netwatch", "foreign", "none"]


@dataclass(frozen=True)
class PrefixRoute:
    """What the kernel's main table holds for one prefix."""

    prefix: str
    owner: Owner  # netwatch's route, another protocol's, or no route
    path: str | None = None  # for netwatch's: the path its gateway belongs to
    proto: int | None = None


class RouteBackend(Protocol):
    name: str

    async def setup(self) -> None: ...

    async def current(self) -> str | None: ...

    async def inspect(self) -> list[PrefixRoute] | None: ...

    async def apply(self, change: RouteChange, prefixes: Sequence[str] | None = None) -> None: ...

    async def withdraw(self) -> None: ...

    async def aclose(self) -> None: ...


class NetlinkBackend:
    name = "netlink"

    def __init__(self, town: Town, prefixes: Sequence[IPv4Network], *, netlink: Any = None) -> None:
        """`netlink`: an AsyncIPRoute-like object to use (tests pass a fake);
        by default one is opened on first use."""
        self.town = town
        self.prefixes = [str(p) for p in prefixes]
        self._ipr: Any = netlink

    async def _nl(self) -> Any:
        if self._ipr is None:
            ipr = AsyncIPRoute()
            await ipr.setup_endpoint()
            self._ipr = ipr
        return self._ipr

    async def _index(self, ifname: str) -> int:
        ipr = await self._nl()
        found = await ipr.link_lookup(ifname=ifname)
        if not found:
            raise RouteError(f"interface {ifname} does not exist")
        return int(found[0])

    async def _replace(self, path: TownPath, table: int, prefixes: Sequence[str]) -> None:
        ipr = await self._nl()
        oif = await self._index(path.interface)
        for prefix in prefixes:
            await ipr.route(
                "replace",
                dst=prefix,
                gateway=str(path.gateway),
                oif=oif,
                table=table,
                proto=RTPROT_NETWATCH,
                prefsrc=str(path.address.ip),
            )

    async def setup(self) -> None:
        """Per-path tables and fwmark rules, so each probe can cross its path
        (those tables are netwatch's own: no other protocol writes there)."""
        ipr = await self._nl()
        rules = {
            (r.get_attr("FRA_FWMARK"), r.get_attr("FRA_TABLE"))
            async for r in await ipr.get_rules(family=socket.AF_INET)
        }
        for priority, path in enumerate(self.town.paths_by_preference, start=RULE_PRIORITY_BASE):
            try:
                await self._replace(path, path.table, self.prefixes)
                if (path.mark, path.table) not in rules:
                    await ipr.rule("add", fwmark=path.mark, table=path.table, priority=priority)
            except NetlinkError as exc:
                raise RouteError(
                    f"setting up table {path.table} for {path.name}: {os.strerror(exc.code)}"
                ) from None

    async def _main_routes(self) -> list[Any]:
        ipr = await self._nl()
        return [
            r
            async for r in await ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE)
            if _dst(r) in self.prefixes
        ]

    async def inspect(self) -> list[PrefixRoute] | None:
        by_gateway = {str(p.gateway): p.name for p in self.town.paths}
        found: dict[str, PrefixRoute] = {}
        try:
            routes = await self._main_routes()
        except NetlinkError as exc:
            raise RouteError(f"reading the main table: {os.strerror(exc.code)}") from None
        for route in routes:
            if (route.get_attr("RTA_PRIORITY") or 0) != 0:
                continue  # a route of another metric coexists with ours
            prefix, proto = _dst(route), int(route["proto"])
            if proto == RTPROT_NETWATCH:
                gateway = route.get_attr("RTA_GATEWAY")
                found[prefix] = PrefixRoute(prefix, "netwatch", by_gateway.get(gateway), proto)
            else:
                found[prefix] = PrefixRoute(prefix, "foreign", None, proto)
        return [found.get(p, PrefixRoute(p, "none")) for p in self.prefixes]

    async def current(self) -> str | None:
        """The path our routes point at, if they all agree; None otherwise."""
        routes = await self.inspect() or []
        paths = {r.path for r in routes if r.owner == "netwatch"}
        owned = sum(1 for r in routes if r.owner == "netwatch")
        foreign = sum(1 for r in routes if r.owner == "foreign")
        if len(paths) == 1 and owned + foreign == len(self.prefixes) and owned:
            return next(iter(paths))
        return None

    async def apply(self, change: RouteChange, prefixes: Sequence[str] | None = None) -> None:
        """Point `prefixes` (default: all of them) at `change.new`, skipping
        any held by another protocol; all or nothing."""
        wanted = list(self.prefixes if prefixes is None else prefixes)
        state = {r.prefix: r for r in await self.inspect() or []}
        writable = [p for p in wanted if state.get(p, PrefixRoute(p, "none")).owner != "foreign"]
        path = self.town.path(change.new)
        done: list[str] = []
        try:
            for prefix in writable:
                await self._replace(path, MAIN_TABLE, [prefix])
                done.append(prefix)
        except (NetlinkError, RouteError) as exc:
            why = os.strerror(exc.code) if isinstance(exc, NetlinkError) else str(exc)
            if not done:
                raise RouteError(f"route replace via {change.new}: {why}") from None
            split = not await self._roll_back(change, done, state)
            raise RouteError(
                f"route replace via {change.new} failed after {len(done)} of "
                f"{len(writable)} prefixes: {why}; "
                + ("could not roll back: routes are split" if split else "rolled back"),
                split=split,
            ) from None

    async def _roll_back(
        self, change: RouteChange, done: list[str], before: dict[str, PrefixRoute]
    ) -> bool:
        """Put `done` back as they were; True if that worked."""
        ipr = await self._nl()
        try:
            for prefix in done:
                old = before.get(prefix)
                if old is not None and old.owner == "netwatch" and old.path is not None:
                    await self._replace(self.town.path(old.path), MAIN_TABLE, [prefix])
                else:
                    await ipr.route("del", dst=prefix, table=MAIN_TABLE, proto=RTPROT_NETWATCH)
        except (NetlinkError, RouteError) as exc:
            log.error("rolling back %s -> %s failed: %s", change.old, change.new, exc)
            return False
        return True

    async def withdraw(self) -> None:
        ipr = await self._nl()
        for route in await self._main_routes():
            if route["proto"] == RTPROT_NETWATCH:
                await ipr.route("del", dst=_dst(route), table=MAIN_TABLE, proto=RTPROT_NETWATCH)

    async def aclose(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


def _dst(route: Any) -> str:
    return f"{route.get_attr('RTA_DST')}/{route['dst_len']}"


class _Elsewhere:
    """A backend whose routes live elsewhere (or nowhere): nothing to set up
    here, and the current path is the last one it applied."""

    name = "elsewhere"

    def __init__(self) -> None:
        self.last: str | None = None

    async def setup(self) -> None:
        return None

    async def current(self) -> str | None:
        return self.last

    async def inspect(self) -> list[PrefixRoute] | None:
        return None  # the routes are not in this host's kernel

    async def withdraw(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class CommandBackend(_Elsewhere):
    """Runs ARGV... TOWN FROM TO REASON (no shell), also passed in the
    environment as NETWATCH_TOWN, NETWATCH_FROM, NETWATCH_TO, NETWATCH_REASON.
    A failure is retried with backoff, then reported."""

    name = "command"

    def __init__(self, argv: Sequence[str], *, timeout: float = 10.0, attempts: int = 3) -> None:
        super().__init__()
        if not argv:
            raise UserError("the command route backend needs --route-command")
        self.argv = list(argv)
        self.timeout = timeout
        self.attempts = attempts

    async def apply(self, change: RouteChange, prefixes: Sequence[str] | None = None) -> None:
        args = [*self.argv, change.town, change.old or "", change.new, change.reason]
        env = {
            **os.environ,
            "NETWATCH_TOWN": change.town,
            "NETWATCH_FROM": change.old or "",
            "NETWATCH_TO": change.new,
            "NETWATCH_REASON": change.reason,
        }
        delay = 0.2
        failure = ""
        for attempt in range(1, self.attempts + 1):
            try:
                proc = await asyncio.create_subprocess_exec(
                    *args,
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # a timeout kills its children too
                )
            except OSError as exc:
                raise RouteError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
            try:
                async with asyncio.timeout(self.timeout):
                    output, _ = await proc.communicate()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.communicate()
                failure = f"timed out after {self.timeout:g} s"
            else:
                if proc.returncode == 0:
                    self.last = change.new
                    return
                tail = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
                failure = f"exit {proc.returncode}: {tail[0]}"
            log.warning("route command attempt %d/%d failed: %s", attempt, self.attempts, failure)
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        raise RouteError(f"route command failed {self.attempts} times: {failure}")


class DryRunBackend(_Elsewhere):
    name = "dry-run"

    async def apply(self, change: RouteChange, prefixes: Sequence[str] | None = None) -> None:
        log.info("dry-run: would route %s via %s (%s)", change.town, change.new, change.reason)
        self.last = change.new
