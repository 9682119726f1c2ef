"""Where each file of a running lab lives, under its run directory::

    lab.json                 the record of what was created (state.py)
    links/<link>.sock        each link emulator's control socket (owner only)
    logs/<name>.log          every process's log
    dc/target.sqlite3        the reference application's ledger
    mosquitto/               the broker's configuration, ACL and persistence
    pki/                     the lab's MQTT CA, the broker's and each
                             identity's certificate and key (lab/mqtt.py)
    opscenter/opscenter.sqlite3   the operations center's database
    prometheus/              the lab's Prometheus: its configuration, rules,
                             scrape targets (loadprobe adds its own) and data
    agents/<town>/spool      each lab agent's MQTT spool
    agents/<town>/control.sock   each lab agent's control socket (holds)

Everything that reads or writes one of these asks `RunDir`, so the layout
is written down once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def of(cls, run_dir: str | Path) -> RunDir:
        return cls(Path(run_dir))

    @property
    def links(self) -> Path:
        return self.root / "links"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def mosquitto(self) -> Path:
        return self.root / "mosquitto"

    @property
    def broker_conf(self) -> Path:
        return self.mosquitto / "mosquitto.conf"

    @property
    def broker_acl(self) -> Path:
        return self.mosquitto / "acl"

    @property
    def pki(self) -> Path:
        """The lab's CA and every identity's certificate and key (lab/mqtt.py)."""
        return self.root / "pki"

    @property
    def ledger(self) -> Path:
        return self.root / "dc" / "target.sqlite3"

    @property
    def opscenter_db(self) -> Path:
        return self.root / "opscenter" / "opscenter.sqlite3"

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"

    def prometheus_target(self, name: str) -> Path:
        """A file_sd target file the lab's Prometheus picks up (targets/<name>.yml)."""
        return self.prometheus / "targets" / f"{name}.yml"

    def control_socket(self, link_id: str) -> Path:
        return self.links / f"{link_id}.sock"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def agent_spool(self, town: str) -> Path:
        return self.root / "agents" / town / "spool"

    def agent_control(self, town: str) -> Path:
        """The lab agent's control socket (`netwatch hold`, drills, loadprobe)."""
        return self.root / "agents" / town / "control.sock"

    def create(self) -> None:
        for folder in (self.links, self.logs, self.ledger.parent, self.mosquitto):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.links, 0o700)  # control sockets: owner only
