"""Probes: one kind per module behind one signature (as blackbox_exporter's
prober/), each run under a deadline.

    prober = make_prober("icmp", topo.datacenter.targets)
    result = await prober.probe(binding, deadline_s)
    ...
    await prober.aclose()

A probe answers one question: did the data center answer over *this*
path, and how fast?  The binding carries the path's fwmark, so the
kernel's per-path routing table sends the probe over that path even when
the town's traffic uses the other one.  `ok` means the path carried a
round trip; `outcome` says more for the probe counters:

    ok          the path carried a round trip (for tcp, a RST counts: "refused")
    timeout     no answer within the deadline
    unreachable the kernel refused to send (no route, host unreachable)
    bad_status  http: an answer, but not the expected status
    no_source   the path's source address is not on this host (misconfigured)
    error       anything else at socket setup or in the exchange

probe() never raises for network conditions and never logs: it runs many
times a second, and the caller rate-limits what it reports.

The registry: each probe module registers its factory with `@register(kind)`
when it is imported; `make_prober` imports the module of a kind on first
use, so a process pays only for the kinds it probes (the ICMP module's
scapy, the HTTP module's httpx).  An unknown kind is an error
(`UnknownProbeKind`), never a silent default.
"""

from __future__ import annotations

import errno
import importlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from netwatch.constants import SO_MARK

if TYPE_CHECKING:
    from netwatch.topology.model import Targets

__all__ = [
    "LateHook",
    "PathBinding",
    "ProbeResult",
    "Prober",
    "ProberFactory",
    "ReportsLate",
    "UnknownProbeKind",
    "bind_to_path",
    "known_kinds",
    "make_prober",
    "no_source",
    "register",
    "setup_failed",
    "source_is_local",
]


@dataclass(frozen=True)
class PathBinding:
    """How a probe is tied to one path (mark 0: unmarked, the main table)."""

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


LateHook = Callable[[str, str, float], None]  # (path, kind, rtt_s)


@runtime_checkable
class ReportsLate(Protocol):
    """A prober that can tell an answer which came after its deadline (the
    ICMP prober: the reply still arrives).  The agent sets `on_late`, and
    counts such a probe as slow rather than lost."""

    on_late: LateHook | None


ProberFactory = Callable[["Targets"], Prober]
F = TypeVar("F", bound=ProberFactory)

# The module of each kind; the module registers the factory when imported.
_MODULES = {
    "icmp": "netwatch.agent.probes.icmp",
    "tcp": "netwatch.agent.probes.tcp",
    "http": "netwatch.agent.probes.http",
}
_FACTORIES: dict[str, ProberFactory] = {}


class UnknownProbeKind(ValueError):
    """A probe kind no module provides."""

    def __init__(self, kind: str, known: tuple[str, ...]) -> None:
        self.kind = kind
        self.known = known
        super().__init__(f"unknown probe kind {kind!r}; known kinds: {', '.join(known)}")


def register(kind: str) -> Callable[[F], F]:
    """Decorator of a factory: `factory(targets)` makes the prober of `kind`."""

    def decorator(factory: F) -> F:
        other = _FACTORIES.get(kind)
        if other is not None and other.__module__ != factory.__module__:
            raise ValueError(f"probe kind {kind!r} registered twice ({other.__module__})")
        _FACTORIES[kind] = factory
        return factory

    return decorator


def known_kinds() -> tuple[str, ...]:
    return tuple(sorted(_MODULES.keys() | _FACTORIES.keys()))


def make_prober(kind: str, targets: Targets) -> Prober:
    """The prober of `kind` for the data center's `targets`.

    Raises UnknownProbeKind (a ValueError) for a kind no module provides.
    """
    factory = _FACTORIES.get(kind)
    if factory is None:
        module = _MODULES.get(kind)
        if module is None:
            raise UnknownProbeKind(kind, known_kinds())
        importlib.import_module(module)
        factory = _FACTORIES[kind]  # KeyError: the module forgot to register
    return factory(targets)


def bind_to_path(sock: socket.socket, binding: PathBinding) -> None:
    """Give `sock` the path's fwmark and bind it to the path's source address.

    The mark is set before anything is sent, so the first packet already
    follows the path's routing table; mark 0 means unmarked and is not set
    (setting SO_MARK needs CAP_NET_ADMIN, even to 0).  Raises OSError;
    `setup_failed` turns it into a result.
    """
    if binding.mark:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, binding.mark)
    sock.bind((str(binding.source), 0))


def source_is_local(binding: PathBinding) -> bool:
    """Whether the path's source address is (still) on this host: a socket
    bound to an address that went away fails later with ENETUNREACH, which
    alone does not say why."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((str(binding.source), 0))
        except OSError as exc:
            return exc.errno != errno.EADDRNOTAVAIL
    return True


def setup_failed(kind: str, binding: PathBinding, exc: OSError) -> ProbeResult:
    """The result of a probe whose socket could not be set up."""
    if exc.errno == errno.EADDRNOTAVAIL:
        return no_source(kind, binding)
    return ProbeResult(kind, False, None, "error", f"socket setup: {exc.strerror or exc}")


def no_source(kind: str, binding: PathBinding) -> ProbeResult:
    """The result of a probe whose path's source address is not on this host."""
    detail = f"source address {binding.source} is not on this host"
    return ProbeResult(kind, False, None, "no_source", detail)
