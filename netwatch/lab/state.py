"""The lab's record of what it created, kept in its run directory.

`down` must clean up even after the lab's own processes crashed, so the
record is written before each process starts and every process is
identified by pid *and* a marker in its command line (a pid alone may
have been reused by an unrelated process).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "lab.json"


@dataclass
class ProcRecord:
    name: str  # e.g. "emulator nishiki-primary", "target", "mosquitto"
    pid: int
    marker: str  # a string its /proc cmdline contains
    netns: str | None
    log: str
    argv: list[str] = field(default_factory=list)  # to start it again
    stopped: bool = False  # stopped on purpose (`lab stop`), not crashed

    def alive(self) -> bool:
        return cmdline_contains(self.pid, self.marker)


@dataclass
class LabState:
    topology: str
    run_dir: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcRecord] = field(default_factory=list)
    complete: bool = False

    @classmethod
    def new(cls, topology_path: str, run_dir: str) -> LabState:
        """A fresh record, saved at once: `down` can rely on it from here on."""
        state = cls(topology=os.path.abspath(topology_path), run_dir=run_dir)
        state.save()
        return state

    def save(self) -> None:
        path = Path(self.run_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a crash leaves the old or the new record

    @classmethod
    def load(cls, run_dir: str | Path) -> LabState | None:
        path = Path(run_dir) / STATE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        procs = [ProcRecord(**p) for p in raw.pop("processes", [])]
        return cls(processes=procs, **raw)


def cmdline_contains(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def pids_with_marker(marker: str) -> list[int]:
    """Every process whose command line contains `marker`."""
    return [
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and int(entry) != os.getpid() and cmdline_contains(int(entry), marker)
    ]
