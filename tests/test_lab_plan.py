"""The lab plan is pure: addresses, interfaces and routes from the topology."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from netwatch.lab.plan import Plan, Route, emulator_profile, make_plan
from netwatch.topology import load

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan(load(ROOT / "topology.yaml"))


def test_one_namespace_per_node(plan: Plan) -> None:
    assert sorted(n.netns for n in plan.nodes.values()) == sorted(
        [
            "nw-nishiki",
            "nw-takaharu",
            "nw-tsuno",
            "nw-kawaminami",
            "nw-lgwan",
            "nw-flets",
            "nw-dc",
            "nw-ops",
        ]
    )
    assert plan.nodes["lgwan"].forwarding
    assert plan.nodes["dc"].forwarding
    assert not plan.nodes["nishiki"].forwarding


def test_town_links_take_the_paths_addresses(plan: Plan) -> None:
    link = plan.link_for("nishiki", "backup")
    assert link.a.spec() == "nw-nishiki:flets0:172.20.1.2/30"
    assert link.b.spec() == "nw-flets:nishiki:172.20.1.1/30"
    assert link.a_to_b.rate == 5_000_000
    assert link.b_to_a.rate == 47_000_000


def test_router_links_take_the_first_two_hosts(plan: Plan) -> None:
    link = next(x for x in plan.links if x.id == "lgwan-dc")
    assert link.a.address == IPv4Interface("10.255.0.1/30")
    assert link.b.address == IPv4Interface("10.255.0.2/30")
    assert (link.a.ifname, link.b.ifname) == ("dc", "lgwan")


def test_town_routes_default_to_primary_with_a_table_per_path(plan: Plan) -> None:
    town = plan.nodes["tsuno"]
    main = [r for r in town.routes if r.table == 254]
    assert {r.dst for r in main} == {IPv4Network("10.200.0.0/24"), IPv4Network("10.210.0.0/24")}
    assert all(r.gateway == IPv4Address("10.10.3.1") and r.ifname == "lgwan0" for r in main)
    assert all(r.proto == 91 for r in town.routes)
    backup_table = [r for r in town.routes if r.table == 112]
    assert all(r.ifname == "flets0" and r.src == IPv4Address("172.20.3.2") for r in backup_table)
    assert {(rule.fwmark, rule.table) for rule in town.rules} == {(0x11, 111), (0x12, 112)}


def test_data_center_answers_each_path_through_its_router(plan: Plan) -> None:
    dc = plan.nodes["dc"]
    assert all(r.proto == 4 for r in dc.routes)  # static: netwatch owns only town routes
    assert Route(IPv4Network("10.10.2.0/30"), IPv4Address("10.255.0.1"), "lgwan") in dc.routes
    assert Route(IPv4Network("172.20.2.0/30"), IPv4Address("10.255.0.5"), "flets") in dc.routes
    assert Route(IPv4Network("10.210.0.0/24"), IPv4Address("10.255.0.10"), "ops") in dc.routes
    (default,) = plan.nodes["ops"].routes
    assert default.dst == IPv4Network("0.0.0.0/0")


def test_service_addresses_live_on_loopback(plan: Plan) -> None:
    (svc,) = plan.nodes["dc"].local_addresses
    assert svc.ifname == "lo"
    assert svc.addresses == (IPv4Interface("10.200.0.10/32"),)
    assert (plan.app_address, plan.app_port) == (IPv4Address("10.200.0.10"), 8080)
    assert (plan.broker_address, plan.broker_port) == (IPv4Address("10.210.0.10"), 8883)


def test_emulator_profile_is_in_base_units(plan: Plan) -> None:
    profile = emulator_profile(plan.link_for("nishiki", "primary").a_to_b)
    assert profile == {
        "rate_bps": 100_000_000,
        "delay_s": 0.004,
        "jitter_s": 0.0005,
        "loss": 0.0,
        "queue_packets": 300,
        "cut": False,
    }
