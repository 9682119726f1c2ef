"""The lab's services: the reference application in the data center, the
MQTT broker in the operations center and, with ``--agents``, one agent per
town, the operations center service itself and a Prometheus beside it.

A service is named on the command line as ``target``, ``broker``,
``opscenter``, ``prometheus`` or ``agent-<town>`` (`Service.parse`) and
recorded in lab.json under its process name (`Service.process`); both
spellings are written here only.
Every service runs in its node's namespace and counts as started once it
accepts TCP connections on its port.
"""

from __future__ import annotations

import enum
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from netwatch import pki
from netwatch.emulator.netns import entered
from netwatch.errors import LabError
from netwatch.lab import mqtt as lab_mqtt
from netwatch.lab import privilege
from netwatch.lab.namespaces import require_root
from netwatch.lab.plan import Plan, make_plan
from netwatch.lab.procs import running, spawn, stop, wait_until
from netwatch.lab.rundir import RunDir
from netwatch.lab.state import LabState, ProcRecord
from netwatch.monitoring.files import Scrape, prometheus_files
from netwatch.mqtt.mosquitto import ACL
from netwatch.pki import OPSCENTER_CN
from netwatch.topology import Topology, load

READY_TIMEOUT = 20.0
APP_READY_TIMEOUT = 120.0  # the first start seeds the ledger (49,289 residents)
AGENT_METRICS_PORT = 9470  # each lab agent's /metrics, on loopback in its town
OPSCENTER_PORT = 9471  # the operations center's page, API and fleet /metrics


class Kind(enum.StrEnum):
    TARGET = "target"  # the reference data-center application
    BROKER = "broker"
    OPSCENTER = "opscenter"
    PROMETHEUS = "prometheus"
    AGENT = "agent"


_PROCESS = {
    Kind.TARGET: "target",
    Kind.BROKER: "mosquitto",
    Kind.OPSCENTER: "opscenter",
    Kind.PROMETHEUS: "prometheus",
}
PROMETHEUS_SCRAPE_S = 1.0  # the lab's: alerts and dashboards follow a drill within seconds


@dataclass(frozen=True)
class Service:
    kind: Kind
    town: str | None = None  # for an agent

    @classmethod
    def agent(cls, town: str) -> Service:
        return cls(Kind.AGENT, town)

    @classmethod
    def parse(cls, text: str) -> Service:
        """``target``, ``broker``, ``opscenter``, ``prometheus`` or
        ``agent-<town>``; raises ValueError."""
        kind, _, town = text.partition("-")
        if kind == Kind.AGENT and town:
            return cls.agent(town)
        if not town and kind in _PROCESS:  # every kind but the agents
            return cls(Kind(kind))
        raise ValueError(text)

    @classmethod
    def of_process(cls, name: str) -> Service | None:
        """The service a lab.json process record belongs to (None: an emulator)."""
        for kind, process in _PROCESS.items():
            if name == process:
                return cls(kind)
        word, _, town = name.partition(" ")
        return cls.agent(town) if word == Kind.AGENT and town else None

    @property
    def process(self) -> str:
        """Its name in the lab's record."""
        return f"agent {self.town}" if self.kind is Kind.AGENT else _PROCESS[self.kind]

    def __str__(self) -> str:
        return f"agent-{self.town}" if self.kind is Kind.AGENT else self.kind.value


def start_target(plan: Plan, state: LabState, run: RunDir) -> None:
    db = str(run.ledger)
    argv = [sys.executable, "-m", "backoffice",
            "--host", "0.0.0.0", "--port", str(plan.app_port), "--db", db]  # fmt: skip
    netns = plan.nodes[plan.dc_node].netns
    record = _start(Service(Kind.TARGET), argv, state, run, marker=f"--db {db}", netns=netns)
    wait_listening(record, str(plan.app_address), plan.app_port, APP_READY_TIMEOUT)


def start_broker(topo: Topology, plan: Plan, state: LabState, run: RunDir) -> None:
    """Mosquitto in nw-ops: TLS with the lab's PKI (made here) and the
    fleet's ACL, as the unprivileged user `mosquitto` (lab/mqtt.py)."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(mosquitto):
        raise LabError("mosquitto is not installed (apt-get install mosquitto)")
    tls = topo.opscenter.mqtt.startswith("mqtts:")
    if tls:
        lab_mqtt.make_pki(topo, plan, run)
    run.broker_acl.write_text(ACL, encoding="utf-8")
    run.broker_conf.write_text(lab_mqtt.broker_config(plan, run, tls=tls), encoding="utf-8")
    conf = str(run.broker_conf)
    netns = plan.nodes[plan.ops_node].netns
    service = Service(Kind.BROKER)
    argv = _broker_argv([mosquitto, "-c", conf], run)
    record = _start(service, argv, state, run, marker=conf, netns=netns,
                    log=run.log("mosquitto.stdout"))  # fmt: skip
    wait_listening(record, str(plan.broker_address), plan.broker_port, READY_TIMEOUT)


BROKER_USER = "mosquitto"  # Debian's package makes it


def _broker_argv(argv: list[str], run: RunDir) -> list[str]:
    """Mosquitto as its own unprivileged user, with no capability (8883 is
    not a privileged port): it reads its configuration, ACL and certificate
    and writes its log and persistence, so those are that user's."""
    owner = privilege.user_ids(BROKER_USER)
    if owner is None:
        raise LabError(f"no user {BROKER_USER!r} (apt-get install mosquitto makes it)")
    log = run.log("mosquitto")
    log.touch()
    privilege.grant(run.mosquitto, *owner)
    for path in (log, pki.Pki(run.pki).key(pki.BROKER)):
        if path.exists():
            os.chown(path, *owner)
    expose = [run.mosquitto, log, run.pki]
    return privilege.confined_argv(argv, user=BROKER_USER, caps=(), expose=expose)


def opscenter_url(plan: Plan) -> str:
    return f"http://{plan.broker_address}:{OPSCENTER_PORT}/"


def start_opscenter(plan: Plan, state: LabState) -> bool:
    """The operations center in nw-ops, beside the broker; False if it runs."""
    service = Service(Kind.OPSCENTER)
    if _running(state, service):
        return False
    run = RunDir.of(os.path.abspath(state.run_dir))
    db = run.opscenter_db
    db.parent.mkdir(parents=True, exist_ok=True)
    topo = load(state.topology)
    argv = [
        sys.executable, "-m", "netwatch.cli", "opscenter",
        "--topology", state.topology,
        "--listen", f"{plan.broker_address}:{OPSCENTER_PORT}",
        "--db", str(db),
        *lab_mqtt.client(topo, run, OPSCENTER_CN).arguments(),
    ]  # fmt: skip
    # As its systemd unit runs it: unprivileged, without any capability.
    argv = _unprivileged(argv, topo, run, OPSCENTER_CN, Path(state.topology),
                         writes=db.parent, caps=())  # fmt: skip
    netns = plan.nodes[plan.ops_node].netns
    record = _start(service, argv, state, run, marker=f"--db {db}", netns=netns)
    wait_listening(record, str(plan.broker_address), OPSCENTER_PORT, READY_TIMEOUT)
    return True


def prometheus_url(topo: Topology) -> str:
    return topo.opscenter.prometheus.rstrip("/") + "/"


def _prometheus_listen(topo: Topology) -> tuple[str, int]:
    url = urlsplit(topo.opscenter.prometheus)
    return url.hostname or "127.0.0.1", url.port or 9090


def start_prometheus(topo: Topology, plan: Plan, state: LabState) -> bool:
    """Prometheus in nw-ops with the lab's configuration and rules
    (deploy/prometheus/'s, with the lab's addresses, a one-second scrape and
    `lab.alerts`); False if it runs. Its data lives as long as the lab."""
    service = Service(Kind.PROMETHEUS)
    if _running(state, service):
        return False
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.path.exists(binary):
        raise LabError("prometheus is not installed (apt-get install prometheus)")
    run = RunDir.of(state.run_dir)
    scrape = Scrape(
        interval_s=PROMETHEUS_SCRAPE_S,
        opscenter=f"{plan.broker_address}:{OPSCENTER_PORT}",
        counters_interval_s=2 * PROMETHEUS_SCRAPE_S,
    )
    for name, text in prometheus_files(topo, scrape, lab=True).items():
        path = run.prometheus / Path(name)
        if path.parent.name == "targets" and path.exists():
            continue  # a loadprobe run may have put itself there already
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    host, port = _prometheus_listen(topo)
    config = run.prometheus / "prometheus.yml"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={run.prometheus / 'data'}",
        f"--web.listen-address={host}:{port}",
        "--storage.tsdb.retention.time=2d",
    ]
    netns = plan.nodes[plan.ops_node].netns
    record = _start(service, argv, state, run, marker=f"--config.file={config}", netns=netns)
    wait_listening(record, host, port, READY_TIMEOUT)
    return True


def start_agents(topo: Topology, plan: Plan, state: LabState, policy: str | None) -> int:
    """One agent per town inside its namespace, pointed at the lab's broker.
    Agents already running are left alone; returns how many were started."""
    run = RunDir.of(os.path.abspath(state.run_dir))
    started = []
    for town in topo.towns:
        service = Service.agent(town.id)
        if _running(state, service):
            continue
        spool = run.agent_spool(town.id)
        spool.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "netwatch.cli", "agent",
            "--town", town.id,
            "--topology", state.topology,
            "--mqtt", topo.opscenter.mqtt,
            "--spool", str(spool),
            "--metrics-listen", f"127.0.0.1:{AGENT_METRICS_PORT}",
            "--control-socket", str(run.agent_control(town.id)),
            *lab_mqtt.client(topo, run, town.id).arguments(),
        ]  # fmt: skip
        if policy is not None:
            argv += ["--policy", policy]
        started.append(
            _start(
                service,
                _agent_argv(argv, topo, run, town.id, Path(state.topology)),
                state,
                run,
                marker=f"--spool {spool}",
                netns=plan.nodes[town.id].netns,
            )
        )
    for record in started:
        wait_listening(record, "127.0.0.1", AGENT_METRICS_PORT, READY_TIMEOUT)
    return len(started)


def _agent_argv(
    argv: list[str], topo: Topology, run: RunDir, town: str, topology: Path
) -> list[str]:
    """The agent as its systemd unit runs it: the dedicated user `netwatch`
    with only CAP_NET_RAW and CAP_NET_ADMIN; it writes only its own
    directory (spool, control socket)."""
    return _unprivileged(argv, topo, run, town, topology, writes=run.agent_spool(town).parent,
                         caps=privilege.AGENT_CAPS)  # fmt: skip


def _unprivileged(
    argv: list[str],
    topo: Topology,
    run: RunDir,
    identity: str,
    topology: Path,
    *,
    writes: Path,
    caps: tuple[str, ...],
) -> list[str]:
    """`argv` as the user `netwatch` with only `caps` (lab/privilege.py):
    it writes only `writes` and reads its MQTT identity's files, the
    topology and the code, wherever the checkout lives."""
    uid, gid = privilege.ensure_user(privilege.AGENT_USER)
    privilege.grant(writes, uid, gid)
    broker = lab_mqtt.client(topo, run, identity)
    if broker.key is not None:
        os.chown(broker.key, uid, gid)
    files = [p for p in (broker.ca, broker.cert, broker.key) if p is not None]
    expose = [*privilege.runtime_paths(), topology.resolve(), writes, *files]
    return privilege.confined_argv(argv, caps=caps, expose=expose)


def stop_service(run_dir: str, service: str) -> bool:
    """Stop one of the lab's services on purpose; False if it was not running."""
    require_root()
    state, record = _find(run_dir, service)
    was_running = record.alive()
    if was_running:
        stop(record.pid, record.marker)
    record.stopped = True
    state.save()
    return was_running


def start_service(run_dir: str, service: str) -> bool:
    """Start a stopped (or crashed) service again, as it was; False if it ran."""
    require_root()
    state, record = _find(run_dir, service)
    if record.alive():
        return False
    if not record.argv:
        raise LabError(f"{service}: no command recorded (a lab from an older version); rebuild it")
    fresh = spawn(
        record.name, record.argv, log=record.log, marker=record.marker, netns=record.netns
    )
    state.processes[state.processes.index(record)] = fresh
    state.save()
    topo = load(state.topology)
    host, port, timeout = _listens_on(Service.parse(service), topo, make_plan(topo))
    wait_listening(fresh, host, port, timeout)  # back when it serves, as at `lab up`
    return True


def _listens_on(service: Service, topo: Topology, plan: Plan) -> tuple[str, int, float]:
    if service.kind is Kind.TARGET:
        return str(plan.app_address), plan.app_port, APP_READY_TIMEOUT
    if service.kind is Kind.BROKER:
        return str(plan.broker_address), plan.broker_port, READY_TIMEOUT
    if service.kind is Kind.OPSCENTER:
        return str(plan.broker_address), OPSCENTER_PORT, READY_TIMEOUT
    if service.kind is Kind.PROMETHEUS:
        return (*_prometheus_listen(topo), READY_TIMEOUT)
    return "127.0.0.1", AGENT_METRICS_PORT, READY_TIMEOUT


def wait_listening(record: ProcRecord, host: str, port: int, timeout: float) -> None:
    netns = record.netns
    assert netns is not None, "every lab service runs in a namespace"

    def ready() -> bool:
        if not running(record.pid):
            raise LabError(f"{record.name} exited while starting: {tail(record.log)}")
        with entered(netns):
            sock = socket.socket()
        with sock:
            sock.settimeout(0.5)
            return sock.connect_ex((host, port)) == 0

    if not wait_until(ready, timeout=timeout, step=0.1):
        raise LabError(
            f"{record.name} is not listening on {host}:{port} after {timeout:g} s: "
            f"{tail(record.log)}"
        )


def tail(log: str, lines: int = 3) -> str:
    """The end of a log, for an error message: `down` removes the run directory."""
    try:
        text = Path(log).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "(no log)"
    return " | ".join(text.splitlines()[-lines:]) or "(empty log)"


def _start(
    service: Service,
    argv: list[str],
    state: LabState,
    run: RunDir,
    *,
    marker: str,
    netns: str,
    log: Path | None = None,
) -> ProcRecord:
    # Recorded before the next process starts, so `down` finds it after a crash.
    record = spawn(
        service.process, argv, log=str(log or run.log(str(service))), marker=marker, netns=netns
    )
    state.processes.append(record)
    state.save()
    return record


def _running(state: LabState, service: Service) -> bool:
    """True if the service runs; otherwise its dead record is dropped."""
    record = _record(state, service)
    if record is not None and record.alive():
        return True
    if record is not None:
        state.processes.remove(record)
    return False


def _record(state: LabState, service: Service) -> ProcRecord | None:
    return next((p for p in state.processes if p.name == service.process), None)


def _find(run_dir: str, text: str) -> tuple[LabState, ProcRecord]:
    state = LabState.load(run_dir)
    if state is None or not state.complete:
        raise LabError("the lab is not up")
    try:
        record = _record(state, Service.parse(text))
    except ValueError:
        record = None
    if record is None:
        known = [Service(Kind.TARGET), Service(Kind.BROKER)]
        if _record(state, Service(Kind.OPSCENTER)) is not None:
            known.append(Service(Kind.OPSCENTER))
        known += _agents(state)
        raise LabError(f"no lab service {text!r} (services: {', '.join(map(str, known))})")
    return state, record


def _agents(state: LabState) -> list[Service]:
    return [
        s
        for p in state.processes
        if (s := Service.of_process(p.name)) is not None and s.kind is Kind.AGENT
    ]
