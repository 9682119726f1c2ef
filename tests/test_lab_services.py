"""The lab's service names and run-directory layout (no namespaces needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netwatch.lab.mqtt import broker_config
from netwatch.lab.plan import make_plan
from netwatch.lab.rundir import RunDir
from netwatch.lab.services import Kind, Service
from netwatch.topology import load

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "process"),
    [("target", "target"), ("broker", "mosquitto"), ("agent-nishiki", "agent nishiki")],
)
def test_a_service_is_named_once_on_the_command_line_and_in_the_record(
    text: str, process: str
) -> None:
    service = Service.parse(text)
    assert str(service) == text
    assert service.process == process
    assert Service.of_process(process) == service


@pytest.mark.parametrize("text", [" ", "agent", "agent-", "targets", "broker-x", "mosquitto"])
def test_anything_else_is_no_service(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):
        Service.parse(text)


def test_an_emulator_is_not_a_service() -> None:
    assert Service.of_process("emulator nishiki-primary") is None
    assert Service.parse("agent-tsuno").kind is Kind.AGENT


def test_the_broker_config_lives_in_the_run_directory(tmp_path: Path) -> None:
    """TLS with client certificates and the fleet's ACL, on the operations
    center's address only, no anonymous client."""
    plan = make_plan(load(ROOT / "topology.yaml"))
    run = RunDir.of(tmp_path)
    conf = broker_config(plan, run, tls=True).splitlines()
    assert plan.broker_port == 8883
    assert f"listener {plan.broker_port} {plan.broker_address}" in conf
    for line in ("require_certificate true", "use_identity_as_username true",
                 "allow_anonymous false", "tls_version tlsv1.2", f"acl_file {run.broker_acl}",
                 f"cafile {run.pki / 'ca.crt'}", f"keyfile {run.pki / 'broker.key'}"):  # fmt: skip
        assert line in conf
    assert not [line for line in conf if line.startswith("listener") and "0.0.0.0" in line]
    assert f"persistence_location {run.mosquitto}/" in conf
    assert f"log_dest file {run.log('mosquitto')}" in conf


def test_create_makes_the_control_socket_folder_owner_only(tmp_path: Path) -> None:
    run = RunDir.of(tmp_path / "run")
    run.create()
    assert (run.links.stat().st_mode & 0o777) == 0o700
    assert run.control_socket("nishiki-primary").parent == run.links
    for folder in (run.ledger.parent, run.mosquitto, run.logs):
        assert folder.is_dir()
