"""`loadprobe target` and `python -m backoffice` command lines: help, and one-line
errors (exit 2) on user mistakes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice import command
from loadprobe.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_help_explains_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["target", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for expected in (
        "LOADPROBE_TARGET_PASSWORD",
        "lab-password",
        "--db",
        "target.sqlite3",
        "--batch-row-cost-us",
        "--session-ttl",
        "<town>-t01",
    ):
        assert expected in text


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "70000"],
        ["--port", "http"],
        ["--session-ttl", "0"],
        ["--batch-row-cost-us", "-1"],
        ["--batch-workers", "9"],
    ],
)
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["target", *args])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_port_in_use_is_one_line(
    busy_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ledger.sqlite3"
    assert main(["target", "--port", str(busy_port), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{busy_port}" in err
    assert not db.exists()  # failed before the (slow) seeding


def test_unwritable_db_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["target", "--port", "0", "--db", str(blocker / "ledger.sqlite3")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loadprobe target: error: ")
    assert err.count("\n") == 1


def _run_python(*args: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in a real process, importing this checkout."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_traceback_in_a_real_process(busy_port: int, tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite3"
    result = _run_python("-m", "loadprobe.cli", "target", "--port", str(busy_port), "--db", str(db))
    assert result.returncode == 2
    assert result.stderr.startswith("loadprobe target: error: cannot listen on")
    assert "Traceback" not in result.stderr


# --- python -m backoffice: the same options and errors under its own name --------------------


def test_backoffice_help_is_the_same_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["target", "--help"])
    assert exc.value.code == 0
    loadprobe_help = capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        command.main(["--help"])
    assert exc.value.code == 0
    backoffice_help = capsys.readouterr().out
    assert backoffice_help.startswith("usage: backoffice ")
    # Past the usage lines (which name the command), the help is the same text.
    assert backoffice_help.split("\n\n", 1)[1] == loadprobe_help.split("\n\n", 1)[1]


@pytest.mark.parametrize("args", [["--port", "70000"], ["--batch-workers", "9"]])
def test_backoffice_bad_arguments_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        command.main(args)
    assert exc.value.code == 2
    assert "backoffice: error:" in capsys.readouterr().err


def test_backoffice_port_in_use_is_one_line(busy_port: int, tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    result = _run_python("-m", "backoffice", "--port", str(busy_port), "--db", str(db))
    assert result.returncode == 2
    assert result.stderr.startswith(f"backoffice: error: cannot listen on 127.0.0.1:{busy_port}")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert not db.exists()
