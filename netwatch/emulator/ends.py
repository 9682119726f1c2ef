"""The two ends of the link: TUN devices moved into their namespaces.

Each end is created here (so the fd belongs to this process), moved into
its target namespace with netlink, renamed, addressed and brought up there.
The temporary name avoids clashes with other emulators in our namespace.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netwatch.emulator.netns import netns_exists
from netwatch.emulator.tun import open_tun

IFA_F_NODAD = 0x02
IN6_ADDR_GEN_MODE_NONE = 1
_NO_ADDRGEN = {
    "attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE]]}]]
}
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class SetupError(Exception):
    """The link could not be built; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class EndSpec:
    """``NETNS:IFNAME:ADDR/PREFIX`` (the address may be IPv6, colons and all)."""

    netns: str
    ifname: str
    address: Interface

    @classmethod
    def parse(cls, text: str) -> EndSpec:
        parts = text.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"end {text!r} is not NETNS:IFNAME:ADDR/PREFIX")
        netns, ifname, addr = parts
        if "/" in netns or netns in (".", ".."):
            raise ValueError(f"bad namespace name {netns!r}")
        if not _IFNAME.match(ifname):
            raise ValueError(f"bad interface name {ifname!r} (1-15 of [A-Za-z0-9_.-])")
        if "/" not in addr:
            raise ValueError(f"address {addr!r} needs a /PREFIX")
        try:
            address = ipaddress.ip_interface(addr)
        except ValueError as exc:
            raise ValueError(f"bad address {addr!r}: {exc}") from None
        return cls(netns, ifname, address)

    def __str__(self) -> str:
        return f"{self.netns}:{self.ifname}:{self.address}"


def create_end(spec: EndSpec, *, temp_name: str, mtu: int) -> int:
    """Build one end; return the TUN fd. Raises :class:`SetupError`."""
    if not netns_exists(spec.netns):
        raise SetupError(f"network namespace {spec.netns!r} does not exist")
    try:
        fd = open_tun(temp_name)
    except OSError as exc:
        raise SetupError(f"cannot create TUN device: {exc.strerror or exc}") from None
    try:
        _configure(spec, temp_name, mtu)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, NetlinkError):
            raise SetupError(f"{spec}: netlink: {os.strerror(exc.code)}") from None
        if isinstance(exc, OSError | IndexError):
            raise SetupError(f"{spec}: {exc}") from None
        raise
    return fd


def _configure(spec: EndSpec, temp_name: str, mtu: int) -> None:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=temp_name)[0]
        ipr.link("set", index=index, net_ns_fd=spec.netns)
    # flags=0: never let pyroute2 create a missing namespace (its default).
    with IPRoute(netns=spec.netns, flags=0) as ns:
        index = ns.link_lookup(ifname=temp_name)[0]
        if ns.link_lookup(ifname=spec.ifname):
            raise SetupError(f"{spec}: interface {spec.ifname!r} already exists")
        ns.link("set", index=index, ifname=spec.ifname, mtu=mtu)
        # No IPv6 link-local autoconfiguration: router solicitations and MLD
        # reports would otherwise cross the link and blur its counters.
        ns.link("set", index=index, af_spec=_NO_ADDRGEN)
        extra: dict[str, Any] = {}
        if spec.address.version == 6:
            extra["flags"] = IFA_F_NODAD  # usable at once, no 1-2 s DAD wait
        ns.addr(
            "add",
            index=index,
            address=str(spec.address.ip),
            prefixlen=spec.address.network.prefixlen,
            family=socket.AF_INET6 if spec.address.version == 6 else socket.AF_INET,
            **extra,
        )
        ns.link("set", index=index, state="up")
