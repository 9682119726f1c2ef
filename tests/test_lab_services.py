"""The lab's service names and run-directory layout (no namespaces needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netwatch.lab.plan import broker_config, make_plan
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
    plan = make_plan(load(ROOT / "topology.yaml"))
    run = RunDir.of(tmp_path)
    conf = broker_config(plan, run)
    assert f"listener {plan.broker_port} 0.0.0.0" in conf.splitlines()
    assert f"persistence_location {run.mosquitto}/" in conf.splitlines()
    assert f"log_dest file {run.log('mosquitto')}" in conf.splitlines()


def test_create_makes_the_control_socket_folder_owner_only(tmp_path: Path) -> None:
    run = RunDir.of(tmp_path / "run")
    run.create()
    assert (run.links.stat().st_mode & 0o777) == 0o700
    assert run.control_socket("nishiki-primary").parent == run.links
    for folder in (run.ledger.parent, run.mosquitto, run.logs):
        assert folder.is_dir()
