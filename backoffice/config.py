"""Settings of one reference-application instance."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backoffice.auth import DEFAULT_PASSWORD
from backoffice.batch import DEFAULT_ROW_COST_US
from backoffice.seeding import DEFAULT_SEED

DEFAULT_SESSION_TTL = 1800.0  # seconds: a half-day shift logs on more than once anyway
DEFAULT_PORT = 8080


def default_db_path() -> Path:
    """$XDG_STATE_HOME/loadprobe/target.sqlite3 (~/.local/state/... if unset):
    state that survives restarts but is not user data to back up."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "loadprobe" / "target.sqlite3"


@dataclass(frozen=True, slots=True)
class TargetConfig:
    db_path: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    session_ttl: float = DEFAULT_SESSION_TTL
    password: str = DEFAULT_PASSWORD
    batch_row_cost_us: float = DEFAULT_ROW_COST_US
    batch_workers: int = 1
    seed: int = DEFAULT_SEED
    access_log: bool = False
