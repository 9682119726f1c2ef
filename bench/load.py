"""Load beside the lab, for the failover benchmark's run "under load".

    with UnderLoad(burners=2, frr=True) as load:
        ...bring the lab up, cut links...
    load.summary()

- `CpuBurners`: N busy-looping Python processes (`while True: pass`), not
  pinned to any CPU; the scheduler shares the cores between them, the
  agents, the emulators and everything else.
- `FrrChurn`: over and over, until stopped: two namespaces `bfdload-a` and
  `bfdload-b` (never the lab's `nw-*`), a veth pair between them with
  link-local addresses from 169.254.77.0/30 (never routed, and only inside
  those two namespaces), FRR's `zebra` and `bfdd` in each (Debian's `frr`
  package, /usr/lib/frr), a BFD session between the two at 50 ms x 3; it
  waits until the session is up (or a few seconds), then kills the
  daemons, deletes the namespaces, and starts again.  The point is the
  churn: namespaces, links and daemons coming and going beside the lab, as
  on a box where another routing stack is being (re)started.

Every file of FRR's goes under a temporary directory of our own (config,
pid, zserv socket, vty sockets, logs); the daemons run in the foreground
(no `-d`), as children of this process, and are killed by pid.
Everything is undone in `finally` blocks, on errors and Ctrl-C too, and a
leftover `bfdload-*` namespace from a run that was killed is removed
before the first round.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRR_LIBDIR = Path("/usr/lib/frr")
FRR_INSTALL_HINT = "apt-get install frr"
NAMESPACES = ("bfdload-a", "bfdload-b")
VETHS = ("bfdl-a", "bfdl-b")
ADDRESSES = ("169.254.77.1", "169.254.77.2")  # link-local, in 169.254.77.0/30
PREFIXLEN = 30
BFD_TIMER_MS = 50
BFD_MULTIPLIER = 3
IP_TIMEOUT = 10.0
ERRORS_KEPT = 8

for _ns in NAMESPACES:  # the lab's namespaces are nw-*: never touch one of them
    assert _ns.startswith("bfdload-")
    assert not _ns.startswith("nw-")

Log = Callable[[str], None]


def _ip() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def _give_to_frr(root: Path | None, here: Path) -> None:
    """The daemons drop to user frr: they must reach and write their files."""
    if root is None:
        return
    path = here
    while True:
        shutil.chown(path, "frr", "frr")
        if path == root or path.parent == path:
            break
        path = path.parent
    for item in here.iterdir():
        shutil.chown(item, "frr", "frr")


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = IP_TIMEOUT) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        if check:
            raise RuntimeError(f"{' '.join(argv)}: {exc}") from None
        return ""
    if check and done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or ["failed"]
        raise RuntimeError(f"{' '.join(argv)}: {reason[0]}")
    return done.stdout


def _stop_process(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaps the child."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)


def _stop_processes(procs: Sequence[subprocess.Popen[bytes]], grace: float = 2.0) -> None:
    """SIGTERM to all, then SIGKILL to those still running after `grace` seconds."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        _stop_process(proc, grace=0.0)


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- CPU burners -----------------------------------------------------------------------------


class CpuBurners:
    """`count` CPU-bound processes, killed by pid on stop()."""

    SCRIPT = "while True: pass"

    def __init__(self, count: int = 2) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self._started_at: float | None = None
        self._cpu_at_stop: float | None = None
        self._wall_at_stop: float | None = None

    def start(self) -> None:
        self._started_at = time.monotonic()
        for _ in range(self.count):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", self.SCRIPT],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    close_fds=True,
                )
            )

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(p.pid) or 0.0 for p in self.procs if p.poll() is None)

    def stop(self) -> None:
        if self.procs and self._cpu_at_stop is None:
            self._cpu_at_stop = self.cpu_seconds()
            if self._started_at is not None:
                self._wall_at_stop = time.monotonic() - self._started_at
        _stop_processes(self.procs, grace=1.0)

    def summary(self) -> dict[str, Any]:
        cores = None
        if self._cpu_at_stop is not None and self._wall_at_stop:
            cores = self._cpu_at_stop / self._wall_at_stop
        return {
            "processes": self.count,
            "pids": [p.pid for p in self.procs],
            "cpu_seconds": self._cpu_at_stop,
            "wall_seconds": self._wall_at_stop,
            "cores_used": cores,
        }


# --- FRR churn -------------------------------------------------------------------------------


def frr_status() -> tuple[bool, str]:
    """(installed, a version line or why not and how to install it)."""
    missing = [
        str(FRR_LIBDIR / name)
        for name in ("zebra", "bfdd")
        if not os.access(FRR_LIBDIR / name, os.X_OK)
    ]
    if missing:
        return False, (
            f"FRR is not installed ({', '.join(missing)} missing); "
            f"install it with `{FRR_INSTALL_HINT}`"
        )
    out = _run([str(FRR_LIBDIR / "zebra"), "--version"], check=False, timeout=5.0)
    first = out.strip().splitlines()[:1]
    return True, first[0] if first else "FRR (version unknown)"


def _help_text(binary: Path) -> str:
    try:
        done = subprocess.run(
            [str(binary), "--help"], capture_output=True, text=True, timeout=5.0, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


class _Stopped(Exception):
    """The churn was asked to stop in the middle of a round."""


@dataclass
class ChurnStats:
    rounds: int = 0  # rounds started
    daemons_started: int = 0  # rounds in which all four daemons ran
    bfd_up: int = 0  # rounds in which the BFD session came up
    up_seconds: list[float] = field(default_factory=list)  # bfdd started -> session up
    round_seconds: list[float] = field(default_factory=list)  # a whole round, teardown included
    errors: list[str] = field(default_factory=list)  # the first few, for the report
    error_count: int = 0

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < ERRORS_KEPT and text not in self.errors:
            self.errors.append(text)


@dataclass
class _Daemon:
    name: str
    side: int
    proc: subprocess.Popen[bytes]
    log: Path


class FrrChurn:
    """Bring up two namespaces with FRR's zebra and bfdd, tear them down, repeat."""

    def __init__(
        self,
        *,
        bfd_wait: float = 5.0,
        pause: float = 0.5,
        log: Log | None = None,
    ) -> None:
        self.bfd_wait = bfd_wait
        self.pause = pause
        self.stats = ChurnStats()
        self._log = log or (lambda _text: None)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one teardown at a time
        self._daemons: list[_Daemon] = []
        self._thread: threading.Thread | None = None
        self._root: Path | None = None
        self._bfdctl = False  # old bfdd (FRR < 8.x): a control socket of its own, --bfdctl
        self._vtysh = shutil.which("vtysh")
        self.version = ""

    # -- the caller's side

    def __enter__(self) -> FrrChurn:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        installed, text = frr_status()
        if not installed:
            raise RuntimeError(text)
        self.version = text
        self._bfdctl = "bfdctl" in _help_text(FRR_LIBDIR / "bfdd")
        self._root = Path(tempfile.mkdtemp(prefix="bfdload-"))
        self._teardown()  # a run that was killed may have left its namespaces
        self._thread = threading.Thread(target=self._loop, name="frr-churn", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
        self._teardown()  # whatever the thread could not finish
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def summary(self) -> dict[str, Any]:
        s = self.stats
        ups = sorted(s.up_seconds)
        return {
            "frr": self.version,
            "rounds": s.rounds,
            "rounds_with_daemons": s.daemons_started,
            "rounds_bfd_up": s.bfd_up,
            "bfd_up_p50_s": ups[len(ups) // 2] if ups else None,
            "round_mean_s": (sum(s.round_seconds) / len(s.round_seconds))
            if s.round_seconds
            else None,
            "error_count": s.error_count,
            "errors": list(s.errors),
            "bfd_timers_ms": BFD_TIMER_MS,
            "bfd_multiplier": BFD_MULTIPLIER,
        }

    # -- the churn thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ups = self.stats.bfd_up
            try:
                self._round()
            except _Stopped:
                pass
            except Exception as exc:  # keep churning: the load matters more than one round
                self.stats.error(str(exc))
                if self.stats.error_count == 1:
                    self._log(f"  FRR churn, round {self.stats.rounds}: {exc}")
            finally:
                self._teardown()
            self.stats.round_seconds.append(time.monotonic() - started)
            if ups == 0 and self.stats.bfd_up == 1:
                self._log(
                    f"  FRR churn: BFD up {self.stats.up_seconds[0]:.1f} s after bfdd started "
                    f"(round {self.stats.rounds}); churning on"
                )
            self._stop.wait(self.pause)

    def _check(self) -> None:
        if self._stop.is_set():
            raise _Stopped

    def _round(self) -> None:
        assert self._root is not None
        self.stats.rounds += 1
        directory = self._root / f"r{self.stats.rounds}"
        self._check()
        for ns in NAMESPACES:
            _run([_ip(), "netns", "add", ns])
        self._check()
        a, b = NAMESPACES
        _run([_ip(), "-n", a, "link", "add", VETHS[0], "type", "veth",
              "peer", "name", VETHS[1], "netns", b])  # fmt: skip
        for side, ns in enumerate(NAMESPACES):
            _run([_ip(), "-n", ns, "addr", "add", f"{ADDRESSES[side]}/{PREFIXLEN}",
                  "dev", VETHS[side]])  # fmt: skip
            _run([_ip(), "-n", ns, "link", "set", "lo", "up"])
            _run([_ip(), "-n", ns, "link", "set", VETHS[side], "up"])
        for side in (0, 1):
            self._check()
            self._write_configs(directory, side)
            self._spawn(directory, side, "zebra")
        for side in (0, 1):
            zserv = directory / f"s{side}" / "zserv.api"
            if not self._wait(zserv.exists, 5.0):
                raise RuntimeError(
                    f"zebra in {NAMESPACES[side]} did not open {zserv}" + self._tail()
                )
        bfdd_at = time.monotonic()
        for side in (0, 1):
            self._check()
            self._spawn(directory, side, "bfdd")
        time.sleep(0.2)
        self._check()
        if any(d.proc.poll() is not None for d in self._daemons):
            raise RuntimeError("an FRR daemon exited at start" + self._tail())
        self.stats.daemons_started += 1
        if self._wait(lambda: self._bfd_up(directory), self.bfd_wait, step=0.1):
            self.stats.bfd_up += 1
            self.stats.up_seconds.append(time.monotonic() - bfdd_at)

    def _wait(self, condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._check()
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(step)

    def _write_configs(self, directory: Path, side: int) -> None:
        here = directory / f"s{side}"
        (here / "vty").mkdir(parents=True, exist_ok=True)
        ns, peer = NAMESPACES[side], ADDRESSES[1 - side]
        (here / "zebra.conf").write_text(
            f"hostname {ns}\nlog file {here / 'zebra.log'}\n!\n", encoding="ascii"
        )
        (here / "bfdd.conf").write_text(
            "\n".join(
                [
                    f"hostname {ns}",
                    f"log file {here / 'bfdd.log'} debugging",
                    "debug bfd peer",
                    "!",
                    "bfd",
                    f" peer {peer} local-address {ADDRESSES[side]} interface {VETHS[side]}",
                    f"  receive-interval {BFD_TIMER_MS}",
                    f"  transmit-interval {BFD_TIMER_MS}",
                    f"  detect-multiplier {BFD_MULTIPLIER}",
                    "  no shutdown",
                    " !",
                    "!",
                    "",
                ]
            ),
            encoding="ascii",
        )

    def _spawn(self, directory: Path, side: int, daemon: str) -> None:
        here = directory / f"s{side}"
        ns = NAMESPACES[side]
        _give_to_frr(self._root, here)
        argv = [
            _ip(), "netns", "exec", ns, str(FRR_LIBDIR / daemon),
            "-N", ns,                      # every default path of its own
            "-u", "frr", "-g", "frr",      # its vty needs the frrvty group, which frr is in
            "-f", str(here / f"{daemon}.conf"),
            "-i", str(here / f"{daemon}.pid"),
            "-z", str(here / "zserv.api"),
            "--vty_socket", str(here / "vty"),
            "-P", "0",                     # no TCP vty (zebra's -A is not --vty_addr)
        ]  # fmt: skip
        if daemon == "bfdd" and self._bfdctl:
            argv += ["--bfdctl", str(here / "bfdd.sock")]
        log = here / f"{daemon}.out"
        with open(log, "ab", buffering=0) as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, close_fds=True
            )
        with self._lock:
            self._daemons.append(_Daemon(daemon, side, proc, log))

    def _bfd_up(self, directory: Path) -> bool:
        """Is the session up, as side a's bfdd sees it (vtysh, else its debug log)?"""
        here = directory / "s0"
        if self._vtysh:
            out = _run(
                [self._vtysh, "--vty_socket", str(here / "vty"), "-d", "bfdd",
                 "-c", "show bfd peers json"],
                check=False, timeout=3.0,
            )  # fmt: skip
            if _peers_up(out):
                return True
        try:
            text = (here / "bfdd.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return "-> up" in text

    def _tail(self) -> str:
        parts = []
        for d in self._daemons:
            try:
                lines = d.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            except OSError:
                continue
            if lines:
                parts.append(f"{d.name}@{NAMESPACES[d.side]}: {lines[-1][:160]}")
        return (": " + " | ".join(parts)) if parts else ""

    def _teardown(self) -> None:
        """Kill our daemons, anything else left in our namespaces, delete them."""
        with self._lock:
            daemons, self._daemons = self._daemons, []
            _stop_processes([d.proc for d in daemons])
            present = _namespaces()
            for ns in NAMESPACES:
                if ns not in present:
                    continue
                for pid in _netns_pids(ns):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                _run([_ip(), "netns", "del", ns], check=False)
            for ns in NAMESPACES:  # FRR's own directories made for the pathspace, if empty
                for base in ("/run/frr", "/var/run/frr", "/var/lib/frr"):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(base, ns))


def _peers_up(text: str) -> bool:
    """`show bfd peers json`: is any peer's status "up"?"""
    try:
        data = json.loads(text)
    except ValueError:
        return '"status":"up"' in text.replace(" ", "")
    peers = data if isinstance(data, list) else [data]
    return any(isinstance(p, dict) and p.get("status") == "up" for p in peers)


def _namespaces() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _netns_pids(ns: str) -> list[int]:
    out = _run([_ip(), "netns", "pids", ns], check=False)
    return [int(p) for p in out.split() if p.isdigit() and int(p) != os.getpid()]


# --- both together ---------------------------------------------------------------------------


class UnderLoad:
    """CPU burners and (if FRR is installed and wanted) the FRR churn."""

    def __init__(self, *, burners: int = 2, frr: bool = True, log: Log | None = None) -> None:
        self.burners = CpuBurners(burners)
        self.want_frr = frr
        self.churn: FrrChurn | None = None
        self.frr_note = ""  # why the run has no FRR, for the report
        self._log = log or (lambda _text: None)
        self._started_at = 0.0
        self.seconds = 0.0

    @property
    def label(self) -> str:
        parts = [f"{self.burners.count} CPU burners"]
        parts.append("FRR zebra+bfdd churn" if self.churn is not None else "no FRR")
        return " + ".join(parts)

    def __enter__(self) -> UnderLoad:
        self._started_at = time.monotonic()
        try:
            self.burners.start()
            if not self.want_frr:
                self.frr_note = "FRR churn left out (--no-frr)"
            else:
                installed, text = frr_status()
                if not installed:
                    self.frr_note = f"{text}; this run has the CPU burners only"
                else:
                    churn = FrrChurn(log=self._log)
                    self.churn = churn
                    churn.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.monotonic() - self._started_at
        try:
            if self.churn is not None:
                self.churn.stop()
        finally:
            self.burners.stop()

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "seconds": self.seconds,
            "burners": self.burners.summary(),
            "frr": self.churn.summary() if self.churn is not None else None,
            "frr_note": self.frr_note,
        }
