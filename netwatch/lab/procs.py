"""Starting and stopping the lab's long-running processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from netwatch.lab.state import ProcRecord, cmdline_contains


def spawn(
    name: str, argv: Sequence[str], *, log: str, marker: str, netns: str | None = None
) -> ProcRecord:
    """Start `argv` detached (own session, output to `log`), inside `netns` if given."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    with open(log, "ab", buffering=0) as out:
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives `lab up` exiting; not killed by its Ctrl-C
            close_fds=True,
        )
    _children[proc.pid] = proc
    return ProcRecord(name=name, pid=proc.pid, marker=marker, netns=netns, log=log, argv=list(argv))


# Our own children: until they exec, /proc/PID/cmdline is still ours, so the
# marker test of ProcRecord.alive() would call a starting process dead.
_children: dict[int, subprocess.Popen[bytes]] = {}


def running(pid: int) -> bool:
    """Is a process we started (or any pid) still running?"""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    return _exists(pid)


def stop(pid: int, marker: str | None = None, *, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds.  Never signals a pid that
    no longer carries `marker` (it may belong to someone else by now)."""
    if marker is not None and not cmdline_contains(pid, marker):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _exists(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_until(lambda: not _exists(pid), timeout=2.0)


def _exists(pid: int) -> bool:
    # A zombie still has /proc/PID: reap our own children, and treat a
    # zombie (state Z) as gone.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def wait_until(condition: Callable[[], bool], *, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
