"""Link events from the kernel: a path whose interface loses carrier, goes
down or disappears is DOWN at once, without waiting for probes to time out.

    async for ifname, up in watch_links(["lgwan0", "flets0"]):
        ...

The first values are the current state of each interface; then one value
per change.  Only changes of the "usable" state are reported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from pyroute2 import AsyncIPRoute

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000  # carrier


def _usable(msg: Any) -> bool:
    flags = int(msg["flags"])
    return bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)


async def watch_links(ifnames: Sequence[str]) -> AsyncIterator[tuple[str, bool]]:
    wanted = set(ifnames)
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
                yield name, known[name]
        for name in sorted(wanted - set(known)):
            known[name] = False
            yield name, False
        while True:
            async for msg in ipr.get():
                event = msg.get("event")
                if event not in ("RTM_NEWLINK", "RTM_DELLINK"):
                    continue
                name = msg.get_attr("IFLA_IFNAME") or by_index.get(msg["index"])
                if name not in wanted:
                    continue
                by_index[msg["index"]] = name
                up = event == "RTM_NEWLINK" and _usable(msg)
                if known.get(name) != up:
                    known[name] = up
                    yield name, up
    finally:
        ipr.close()
