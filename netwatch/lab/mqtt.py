"""The lab's broker as the fleet's would run: TLS with client certificates
from a PKI made in the run directory at every `lab up`, the fleet's ACL,
listening on the operations center's address only, as Mosquitto's own
unprivileged user.

The lab's identities are every town's and the operations center's
(`netwatch.pki`): ``RUN/pki/<id>.crt|.key``.  Lab clients (the agents, the
operations center, drills, tests) get theirs from `client`.
"""

from __future__ import annotations

from netwatch import pki
from netwatch.lab.plan import Plan
from netwatch.lab.rundir import RunDir
from netwatch.mqtt.broker import Broker, parse_broker
from netwatch.mqtt.mosquitto import tls_listener
from netwatch.topology import Topology


def identities(topo: Topology) -> list[str]:
    return [*(t.id for t in topo.towns), pki.OPSCENTER_CN]


def make_pki(topo: Topology, plan: Plan, run: RunDir) -> None:
    """A new CA, the broker's certificate and every identity's (EC keys:
    a few milliseconds in all)."""
    store = pki.Pki(run.pki)
    pki.init(store, [str(plan.broker_address)], force=True)
    for name in identities(topo):
        pki.issue(store, name, force=True)


def client(topo: Topology, run: RunDir, identity: str) -> Broker:
    """How `identity` (a town id or "opscenter") reaches the lab's broker."""
    url = topo.opscenter.mqtt
    if not url.startswith("mqtts:"):
        return parse_broker(url)
    store = pki.Pki(run.pki)
    return parse_broker(url, ca=store.ca_cert, cert=store.cert(identity), key=store.key(identity))


def broker_config(plan: Plan, run: RunDir, *, tls: bool) -> str:
    """mosquitto.conf of the lab's broker in the operations center."""
    lines = [
        "# written by `netwatch lab up`; the lab's broker in the operations center",
        "persistence true",
        f"persistence_location {run.mosquitto}/",
        f"log_dest file {run.log('mosquitto')}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    address = str(plan.broker_address)
    if not tls:  # the topology asked for plain mqtt://: no identities to check
        return "\n".join([*lines, f"listener {plan.broker_port} {address}",
                          "allow_anonymous true", ""])  # fmt: skip
    store = pki.Pki(run.pki)
    listener = tls_listener(
        address,
        plan.broker_port,
        ca=str(store.ca_cert),
        cert=str(store.cert(pki.BROKER)),
        key=str(store.key(pki.BROKER)),
        acl=str(run.broker_acl),
    )
    return "\n".join([*lines, listener])
