"""Link and route events from the kernel, on one netlink socket.

A path whose interface loses carrier, goes down or disappears is DOWN at
once, without waiting for probes to time out; a route added, changed or
deleted on one of the agent's prefixes in the main table (by anyone: the
agent itself, an operator, the kernel flushing a downed link's routes)
makes the agent compare the table with its decision at once.

    async for event in watch_kernel(["lgwan0", "flets0"], ["10.200.0.0/24"]):
        match event:
            case LinkEvent(ifname, up): ...
            case RouteEvent(prefix, removed): ...

The first link events are the current state of each interface; then one
per change of the "usable" state.  Route events carry no state: the
receiver reads the table itself (events can be lost under load; the
agent's periodic check covers that).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute

from netwatch.constants import MAIN_TABLE

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000  # carrier


@dataclass(frozen=True)
class LinkEvent:
    ifname: str
    up: bool


@dataclass(frozen=True)
class RouteEvent:
    prefix: str
    removed: bool


KernelEvent = LinkEvent | RouteEvent


def _usable(msg: Any) -> bool:
    flags = int(msg["flags"])
    return bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)


def _route_prefix(msg: Any) -> str | None:
    table = msg.get_attr("RTA_TABLE") or msg.get("table")
    if table != MAIN_TABLE:
        return None
    dst = msg.get_attr("RTA_DST")
    return f"{dst}/{msg['dst_len']}" if dst is not None else None


async def watch_kernel(
    ifnames: Sequence[str], prefixes: Sequence[str] = ()
) -> AsyncIterator[KernelEvent]:
    wanted = set(ifnames)
    routes = set(prefixes)
    known: dict[str, bool] = {}
    by_index: dict[int, str] = {}
    ipr = AsyncIPRoute()
    await ipr.setup_endpoint()
    try:
        await ipr.bind()  # subscribe before the dump: no change can slip between them
        async for msg in await ipr.get_links():
            name = msg.get_attr("IFLA_IFNAME")
            if name in wanted:
                by_index[msg["index"]] = name
                known[name] = _usable(msg)
                yield LinkEvent(name, known[name])
        for name in sorted(wanted - set(known)):
            known[name] = False
            yield LinkEvent(name, False)
        while True:
            async for msg in ipr.get():
                event = msg.get("event")
                if event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
                    prefix = _route_prefix(msg)
                    if prefix in routes:
                        yield RouteEvent(prefix, event == "RTM_DELROUTE")
                    continue
                if event not in ("RTM_NEWLINK", "RTM_DELLINK"):
                    continue
                name = msg.get_attr("IFLA_IFNAME") or by_index.get(msg["index"])
                if name not in wanted:
                    continue
                by_index[msg["index"]] = name
                up = event == "RTM_NEWLINK" and _usable(msg)
                if known.get(name) != up:
                    known[name] = up
                    yield LinkEvent(name, up)
    finally:
        ipr.close()
