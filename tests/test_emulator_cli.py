"""Command line: end parsing and the one-line, exit-2 error contract."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

import netwatch
from netwatch.emulator.ends import EndSpec

REPO = str(Path(next(iter(netwatch.__path__))).parent)


def test_parse_ipv4_end() -> None:
    end = EndSpec.parse("nw-dc:wan0:10.0.0.1/30")
    assert (end.netns, end.ifname) == ("nw-dc", "wan0")
    assert end.address == ipaddress.ip_interface("10.0.0.1/30")
    assert str(end) == "nw-dc:wan0:10.0.0.1/30"


def test_parse_ipv6_end_keeps_colons() -> None:
    end = EndSpec.parse("nw-a:lnk0:fd00::1/64")
    assert end.address == ipaddress.ip_interface("fd00::1/64")


@pytest.mark.parametrize(
    "text",
    [
        "nw-a:lnk0",
        "nw-a::10.0.0.1/30",
        "nw-a:lnk0:10.0.0.1",
        "nw-a:lnk0:10.0.0.300/30",
        "nw-a:an-interface-name-too-long:10.0.0.1/30",
        "../etc:lnk0:10.0.0.1/30",
    ],
)
def test_bad_ends_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        EndSpec.parse(text)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(
        [sys.executable, "-m", "netwatch.emulator", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--a-to-b", '{"loss": 3}'], "loss must be in 0..1"),
        (["--a-to-b", "{"], "--a-to-b"),
        (["--mtu", "20"], "--mtu"),
        ([], "namespace 'nw-t-missing0' does not exist"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path: Path, extra: list[str], needle: str) -> None:
    result = run_cli(
        "run",
        "--link",
        "x",
        "--end-a",
        "nw-t-missing0:lnk0:10.0.0.1/30",
        "--end-b",
        "nw-t-missing1:lnk0:10.0.0.2/30",
        "--control",
        str(tmp_path / "x.sock"),
        *extra,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    if os.geteuid() == 0 or "namespace" not in needle:
        assert needle in lines[0]
    else:
        assert "must run as root" in lines[0]
    assert not (tmp_path / "x.sock").exists()


def test_missing_argument_is_one_line_exit_2() -> None:
    result = run_cli("run", "--link", "x")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
