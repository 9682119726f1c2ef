"""Throw-away namespaces joined by one emulator process (tests, benchmarks).

    with start_scratch_link(a_to_b={"delay_s": 0.02}) as link:
        sock = socket_in(link.ns_a)
        ...

Everything is removed on exit, including after a failure half-way through
the set-up: the process is stopped (SIGTERM, then SIGKILL), the namespaces
deleted and the work directory removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from netwatch.emulator.control import EmulatorClient, EmulatorUnavailable

ADDR_A = "10.200.0.1"
ADDR_B = "10.200.0.2"
PREFIX = 30
IFNAME = "lnk0"
_REPO = str(Path(__file__).resolve().parents[2])


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class ScratchLink:
    """Two fresh namespaces ``ns_a`` / ``ns_b`` and the emulator between them."""

    def __init__(self, prefix: str) -> None:
        tag = secrets.token_hex(3)
        self.ns_a = f"{prefix}{tag}a"
        self.ns_b = f"{prefix}{tag}b"
        self.addr_a = ADDR_A
        self.addr_b = ADDR_B
        self.workdir = tempfile.mkdtemp(prefix="nw-emu-")
        self.control = os.path.join(self.workdir, "link.sock")
        self.log_path = os.path.join(self.workdir, "emulator.log")
        self.client = EmulatorClient(self.control, timeout=5.0)
        self.proc: subprocess.Popen[bytes] | None = None
        self._namespaces: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path) as fh:
            return fh.read()
        return ""

    def _start(
        self,
        a_to_b: Mapping[str, object] | None,
        b_to_a: Mapping[str, object] | None,
        seed: int | None,
        mtu: int,
        ready_timeout: float,
    ) -> None:
        for ns in (self.ns_a, self.ns_b):
            _ip("netns", "add", ns)
            self._namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        argv = [
            sys.executable,
            "-m",
            "netwatch.emulator",
            "run",
            "--link",
            f"scratch-{self.ns_a[:-1]}",
            "--end-a",
            f"{self.ns_a}:{IFNAME}:{self.addr_a}/{PREFIX}",
            "--end-b",
            f"{self.ns_b}:{IFNAME}:{self.addr_b}/{PREFIX}",
            "--control",
            self.control,
            "--a-to-b",
            json.dumps(dict(a_to_b or {})),
            "--b-to-a",
            json.dumps(dict(b_to_a or {})),
            "--mtu",
            str(mtu),
        ]
        if seed is not None:
            argv += ["--seed", str(seed)]
        env = {**os.environ, "PYTHONPATH": _REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        proc = self.proc
        try:
            self.client.wait_ready(ready_timeout, alive=lambda: proc.poll() is None)
        except EmulatorUnavailable as exc:
            output = self.log().strip()
            raise RuntimeError(f"emulator did not start: {exc}; log: {output}") from None

    def close(self) -> None:
        """Stop the emulator and delete everything; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        while self._namespaces:
            with contextlib.suppress(subprocess.SubprocessError):
                _ip("netns", "del", self._namespaces.pop())
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ScratchLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_scratch_link(
    *,
    prefix: str = "nw-t-",
    a_to_b: Mapping[str, object] | None = None,
    b_to_a: Mapping[str, object] | None = None,
    seed: int | None = None,
    mtu: int = 1500,
    ready_timeout: float = 15.0,
) -> ScratchLink:
    """Create namespaces, start the emulator, wait until it answers."""
    link = ScratchLink(prefix)
    try:
        link._start(a_to_b, b_to_a, seed, mtu, ready_timeout)
    except BaseException:
        link.close()
        raise
    return link
