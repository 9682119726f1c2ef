"""A terminal's transaction bookkeeping (no Locust in this process), and that
importing loadprobe's Locust modules registers nothing with Locust."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadprobe.transactions import StepFailed, TransactionFailed, TransactionRecorder

ROOT = Path(__file__).resolve().parents[1]


class FakeEvent:
    def __init__(self) -> None:
        self.fired: list[dict[str, Any]] = []

    def fire(self, **kwargs: Any) -> None:
        self.fired.append(kwargs)


def test_a_transaction_of_several_requests_fires_one_tx() -> None:
    event = FakeEvent()
    tx = TransactionRecorder(event, terminal=3)
    with tx.transaction("batch"):
        assert tx.request_name("submit") == "batch: submit"
        assert tx.context == {"transaction": "batch", "terminal": 3}
        tx.judged(length=10, whole=False, reason=None)
        tx.judged(length=5, whole=False, reason=None)
    [sample] = event.fired
    assert sample["request_type"] == "TX"
    assert sample["name"] == "batch"
    assert sample["response_length"] == 15
    assert sample["exception"] is None
    assert sample["context"] == {"transaction": "batch", "terminal": 3}
    assert tx.current == ""


def test_a_whole_request_stands_for_its_transaction() -> None:
    event = FakeEvent()
    tx = TransactionRecorder(event, terminal=1)
    with tx.transaction("logon"):
        tx.judged(length=1, whole=True, reason=None)
    assert event.fired == []

    def failed_logon() -> None:
        with tx.transaction("logon"):
            tx.judged(length=1, whole=True, reason="logon: HTTP 401")
            raise StepFailed("logon: HTTP 401")

    with pytest.raises(StepFailed):
        failed_logon()
    assert event.fired == []  # its failed request already says so


def test_an_unexpected_error_fails_the_transaction_as_a_step() -> None:
    event = FakeEvent()
    tx = TransactionRecorder(event, terminal=1)
    with pytest.raises(StepFailed, match="KeyError"), tx.transaction("ledger_inquiry"):
        raise KeyError("items")
    [sample] = event.fired
    assert isinstance(sample["exception"], TransactionFailed)
    assert "KeyError" in str(sample["exception"])


def test_importing_the_locust_modules_registers_nothing() -> None:
    code = (
        "import loadprobe.terminal, loadprobe.recorder, loadprobe.locust_plugin\n"
        "from locust import events\n"
        "from locust.argument_parser import get_parser\n"
        "known, _ = get_parser().parse_known_args(['--town', 'nishiki'])\n"
        "assert not hasattr(known, 'town'), 'options registered on import'\n"
        "loadprobe.locust_plugin.install(events)\n"
        "known, _ = get_parser().parse_known_args(['--town', 'nishiki'])\n"
        "assert known.town == 'nishiki'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
