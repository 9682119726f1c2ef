"""topology.yaml: the one source of truth for every netwatch and loadprobe command."""

from netwatch.topology.loader import DEFAULT_PATH, TopologyError, load, load_for_command, loads
from netwatch.topology.model import (
    TRANSACTIONS,
    Alerts,
    Datacenter,
    HostPort,
    Lab,
    LabLink,
    LabNode,
    LinkProfile,
    LoadTest,
    Opscenter,
    Policy,
    PolicyProfile,
    Sla,
    Topology,
    Town,
    TownPath,
)
from netwatch.topology.source import Problem

__all__ = [
    "DEFAULT_PATH",
    "TRANSACTIONS",
    "Alerts",
    "Datacenter",
    "HostPort",
    "Lab",
    "LabLink",
    "LabNode",
    "LinkProfile",
    "LoadTest",
    "Opscenter",
    "Policy",
    "PolicyProfile",
    "Problem",
    "Sla",
    "Topology",
    "TopologyError",
    "Town",
    "TownPath",
    "load",
    "load_for_command",
    "loads",
]
