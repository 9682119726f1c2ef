"""Route backends: how a decision reaches the town's routing.

    backend = make_backend("netlink", town, prefixes)
    await backend.setup()              # per-path tables and rules (probe binding)
    await backend.current()            # the path our routes point at now, or None
    await backend.apply(change)        # raises RouteError
    await backend.withdraw()           # remove the routes we own

`netlink` replaces the town's routes to the data-center prefixes in the
main table, one atomic `route replace` per prefix, tagged with netwatch's
route protocol number (so `ip route show proto netwatch` lists exactly
what it owns); routes of other protocols are never replaced.  `command`
hands the decision to an external router's tooling; `dry-run` only says
what it would do.
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
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netwatch.errors import UserError
from netwatch.topology import Path, Town

log = logging.getLogger("netwatch.routes")

# Registered for `ip route` by /etc/iproute2/rt_protos.d/netwatch.conf: "91 netwatch".
RTPROT_NETWATCH = 91
MAIN_TABLE = 254
RULE_PRIORITY_BASE = 1000


class RouteError(Exception):
    """A decision could not be applied; the agent counts it and retries."""


class RouteConflict(UserError):
    """A route of another protocol sits where netwatch would write."""


@dataclass(frozen=True)
class RouteChange:
    town: str
    old: str | None
    new: str
    reason: str


class RouteBackend(Protocol):
    name: str

    async def setup(self) -> None: ...

    async def current(self) -> str | None: ...

    async def apply(self, change: RouteChange) -> None: ...

    async def withdraw(self) -> None: ...

    async def aclose(self) -> None: ...


class NetlinkBackend:
    name = "netlink"

    def __init__(self, town: Town, prefixes: Sequence[IPv4Network]) -> None:
        self.town = town
        self.prefixes = [str(p) for p in prefixes]
        self._ipr: AsyncIPRoute | None = None

    async def _nl(self) -> AsyncIPRoute:
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

    async def _replace(self, path: Path, table: int) -> None:
        ipr = await self._nl()
        oif = await self._index(path.interface)
        for prefix in self.prefixes:
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
        """Per-path tables and fwmark rules, so each probe can cross its path."""
        ipr = await self._nl()
        await self._check_conflicts()
        rules = {
            (r.get_attr("FRA_FWMARK"), r.get_attr("FRA_TABLE"))
            async for r in await ipr.get_rules(family=socket.AF_INET)
        }
        for priority, path in enumerate(self.town.paths_by_preference, start=RULE_PRIORITY_BASE):
            try:
                await self._replace(path, path.table)
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

    async def _check_conflicts(self) -> None:
        for route in await self._main_routes():
            if route["proto"] != RTPROT_NETWATCH and (route.get_attr("RTA_PRIORITY") or 0) == 0:
                raise RouteConflict(
                    f"route {_dst(route)} in the main table belongs to protocol "
                    f"{route['proto']}, not netwatch ({RTPROT_NETWATCH}); netwatch never "
                    "replaces other protocols' routes: remove it first"
                )

    async def current(self) -> str | None:
        """The path our routes point at, if they agree; None otherwise."""
        owned = [r for r in await self._main_routes() if r["proto"] == RTPROT_NETWATCH]
        if len(owned) != len(self.prefixes):
            return None
        gateways = {r.get_attr("RTA_GATEWAY") for r in owned}
        for path in self.town.paths:
            if gateways == {str(path.gateway)}:
                return path.name
        return None

    async def apply(self, change: RouteChange) -> None:
        try:
            await self._replace(self.town.path(change.new), MAIN_TABLE)
        except NetlinkError as exc:
            raise RouteError(f"route replace via {change.new}: {os.strerror(exc.code)}") from None

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

    async def apply(self, change: RouteChange) -> None:
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

    async def apply(self, change: RouteChange) -> None:
        log.info("dry-run: would route %s via %s (%s)", change.town, change.new, change.reason)
        self.last = change.new
