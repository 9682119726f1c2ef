"""What the lab builds, computed from the topology without touching anything.

The plan names every namespace, emulated link, address and route; the
builder (`build.py`) only carries it out.  Keeping this pure lets the
addressing and routing be unit-tested, and lets `lab status` show what
the lab *should* look like beside what it does.

Naming: each node lives in namespace ``nw-<node>``.  Inside a town the
uplinks carry the path's interface name (``lgwan0``, ``flets0``); inside
routers and the data center an interface is named after the node at its
other end (``nishiki``, ``dc``, ``lgwan``), so ``ip -n nw-dc route``
reads like a map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any
from urllib.parse import urlsplit

from netwatch.constants import MAIN_TABLE, RTPROT_NETWATCH
from netwatch.mqtt.broker import parse_broker_url
from netwatch.topology import LinkProfile, Topology

NS_PREFIX = "nw-"
RTPROT_STATIC = 4


def namespace(node: str) -> str:
    return f"{NS_PREFIX}{node}"


@dataclass(frozen=True)
class End:
    node: str
    netns: str
    ifname: str
    address: IPv4Interface

    def spec(self) -> str:
        """The emulator's --end-a/--end-b argument."""
        return f"{self.netns}:{self.ifname}:{self.address}"


@dataclass(frozen=True)
class Link:
    id: str
    a: End
    b: End
    a_to_b: LinkProfile
    b_to_a: LinkProfile
    a_to_b_name: str
    b_to_a_name: str
    town: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class Route:
    dst: IPv4Network
    gateway: IPv4Address
    ifname: str
    table: int = MAIN_TABLE
    src: IPv4Address | None = None
    proto: int = RTPROT_STATIC


@dataclass(frozen=True)
class Rule:
    fwmark: int
    table: int
    priority: int


@dataclass(frozen=True)
class LocalAddresses:
    """Service addresses (data center, ops center), held as /32 on `lo`:
    the dummy link type is not in every kernel (it is missing on our CI)."""

    ifname: str
    addresses: tuple[IPv4Interface, ...]


@dataclass
class Node:
    name: str
    netns: str
    role: str  # town, router, datacenter, opscenter
    forwarding: bool = False
    local_addresses: list[LocalAddresses] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)


@dataclass
class Plan:
    nodes: dict[str, Node]
    links: list[Link]
    dc_node: str
    ops_node: str
    app_address: IPv4Address
    app_port: int
    broker_address: IPv4Address
    broker_port: int

    def link_for(self, town: str, path: str) -> Link:
        for link in self.links:
            if link.town == town and link.path == path:
                return link
        raise KeyError(f"no lab link carries {town}/{path}")


def emulator_profile(profile: LinkProfile) -> dict[str, Any]:
    """A topology link profile in the emulator's JSON terms."""
    return {
        "rate_bps": profile.rate or 0,
        "delay_s": profile.delay,
        "jitter_s": profile.jitter,
        "loss": profile.loss,
        "queue_packets": profile.queue,
        "cut": False,
    }


def make_plan(topo: Topology) -> Plan:
    lab = topo.lab
    nodes: dict[str, Node] = {}
    for town in topo.towns:
        nodes[town.id] = Node(town.id, namespace(town.id), "town")
    for name, lab_node in lab.nodes.items():
        nodes[name] = Node(name, namespace(name), lab_node.role, forwarding=True)
    dc_node = next(n for n, v in lab.nodes.items() if v.role == "datacenter")
    ops_node = next(n for n, v in lab.nodes.items() if v.role == "opscenter")
    nodes[ops_node].forwarding = False

    towns = {t.id: t for t in topo.towns}
    links: list[Link] = []
    for spec in lab.links:
        if spec.a in towns:
            assert spec.path is not None  # the validator guarantees it
            path = towns[spec.a].path(spec.path)
            a_addr = path.address
            b_addr = IPv4Interface(f"{path.gateway}/{path.address.network.prefixlen}")
            a_if, town_id, path_name = path.interface, spec.a, spec.path
        else:
            assert spec.subnet is not None
            hosts = list(spec.subnet.hosts()) if spec.subnet.prefixlen < 31 else list(spec.subnet)
            prefix = spec.subnet.prefixlen
            a_addr = IPv4Interface(f"{hosts[0]}/{prefix}")
            b_addr = IPv4Interface(f"{hosts[1]}/{prefix}")
            a_if, town_id, path_name = spec.b, None, None
        links.append(
            Link(
                id=spec.id,
                a=End(spec.a, namespace(spec.a), a_if, a_addr),
                b=End(spec.b, namespace(spec.b), spec.a, b_addr),
                a_to_b=lab.profiles[spec.a_to_b],
                b_to_a=lab.profiles[spec.b_to_a],
                a_to_b_name=spec.a_to_b,
                b_to_a_name=spec.b_to_a,
                town=town_id,
                path=path_name,
            )
        )

    # Service addresses: every target of the data center, on lo in nw-dc.
    dc = topo.datacenter
    app = urlsplit(dc.targets.http)
    service_hosts = {dc.targets.icmp, dc.targets.tcp.host, IPv4Address(app.hostname or "")}
    service = tuple(IPv4Interface(f"{host}/32") for host in sorted(service_hosts))
    nodes[dc_node].local_addresses.append(LocalAddresses("lo", service))
    ops = topo.opscenter
    nodes[ops_node].local_addresses.append(
        LocalAddresses("lo", (IPv4Interface(f"{ops.address}/32"),))
    )

    _add_routes(topo, nodes, links, dc_node, ops_node)
    mqtt = parse_broker_url(ops.mqtt)
    return Plan(
        nodes=nodes,
        links=links,
        dc_node=dc_node,
        ops_node=ops_node,
        app_address=IPv4Address(app.hostname or ""),
        app_port=app.port or 80,
        broker_address=IPv4Address(mqtt[0]),
        broker_port=mqtt[1],
    )


def _add_routes(
    topo: Topology, nodes: dict[str, Node], links: list[Link], dc_node: str, ops_node: str
) -> None:
    routed = topo.routed_prefixes
    by_pair = {(link.a.node, link.b.node): link for link in links if link.town is None}

    for town in topo.towns:
        node = nodes[town.id]
        primary = town.primary
        # Main table: the data center over the primary, as a town box boots,
        # owned by netwatch's route protocol so that an agent adopts them.
        for prefix in routed:
            node.routes.append(
                Route(
                    prefix,
                    primary.gateway,
                    primary.interface,
                    src=primary.address.ip,
                    proto=RTPROT_NETWATCH,
                )
            )
        # One table per path, selected by the path's fwmark, so that a probe
        # (or a pinned load test) can cross a path that does not carry traffic.
        for priority, path in enumerate(town.paths_by_preference, start=1000):
            for prefix in routed:
                node.routes.append(
                    Route(
                        prefix,
                        path.gateway,
                        path.interface,
                        path.table,
                        path.address.ip,
                        RTPROT_NETWATCH,
                    )
                )
            node.rules.append(Rule(path.mark, path.table, priority))

    for name, node in nodes.items():
        if node.role != "router":
            continue
        # A router reaches the data center (and the ops center behind it)
        # over its link to the data center.
        uplink = by_pair.get((name, dc_node))
        if uplink is None:
            continue
        for prefix in routed:
            node.routes.append(Route(prefix, uplink.b.address.ip, uplink.a.ifname))

    dc = nodes[dc_node]
    for link in links:
        if link.town is None:
            continue
        # The data center answers each town path through the router it hangs off.
        router_link = by_pair.get((link.b.node, dc_node))
        if router_link is not None:
            dc.routes.append(
                Route(link.a.address.network, router_link.a.address.ip, router_link.b.ifname)
            )
    ops_link = by_pair.get((dc_node, ops_node))
    if ops_link is not None:
        dc.routes.append(Route(topo.opscenter.prefix, ops_link.b.address.ip, ops_link.a.ifname))
        nodes[ops_node].routes.append(
            Route(IPv4Network("0.0.0.0/0"), ops_link.a.address.ip, ops_link.b.ifname)
        )
