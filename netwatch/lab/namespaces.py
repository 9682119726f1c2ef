"""The host's network namespaces, as the lab sees them, and the privilege
creating them needs."""

from __future__ import annotations

import os
import subprocess

from netwatch.errors import LabError
from netwatch.lab.plan import NS_PREFIX

NETNS_DIR = "/run/netns"  # where `ip netns add` pins a namespace
CAP_NET_ADMIN = 12


def require_root() -> None:
    if not _has_cap_net_admin():
        raise LabError(
            "the lab needs root (CAP_NET_ADMIN) to create network namespaces; run it with sudo"
        )


def _has_cap_net_admin() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << CAP_NET_ADMIN))
    except OSError:
        pass
    return os.geteuid() == 0


def existing_namespaces() -> set[str]:
    try:
        return set(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return set()


def lab_namespaces_present() -> list[str]:
    """Every ``nw-*`` namespace, the lab's or not."""
    return sorted(ns for ns in existing_namespaces() if ns.startswith(NS_PREFIX))


def namespace_pids(ns: str) -> list[int]:
    """Processes inside namespace `ns` (not counting this one)."""
    result = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
    )
    return [int(p) for p in result.stdout.split() if p.isdigit() and int(p) != os.getpid()]
