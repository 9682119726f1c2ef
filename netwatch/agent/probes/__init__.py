"""Probes: one kind per module behind one signature (as blackbox_exporter's
prober/), each run under a deadline.

    result = await prober.probe(binding, deadline_s)

A probe answers one question: did the data center answer over *this*
path, and how fast?  The binding carries the path's fwmark, so the
kernel's per-path routing table sends the probe over that path even when
the town's traffic uses the other one.  `ok` means the path carried a
round trip; `outcome` says more ("ok", "timeout", "refused", ...) for the
probe counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Protocol


@dataclass(frozen=True)
class PathBinding:
    """How a probe is tied to one path."""

    path: str
    mark: int
    source: IPv4Address


@dataclass(frozen=True)
class ProbeResult:
    kind: str
    ok: bool
    rtt_s: float | None
    outcome: str
    detail: str = ""


class Prober(Protocol):
    kind: str

    async def probe(self, binding: PathBinding, deadline_s: float) -> ProbeResult: ...

    async def aclose(self) -> None: ...
