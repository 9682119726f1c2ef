"""Terminal accounts and logon sessions.

Each town has ten terminal accounts (`nishiki-t01` .. `nishiki-t10`), the
ten terminals of the degraded-mode acceptance test. They all share one
password taken from LOADPROBE_TARGET_PASSWORD (default "lab-password"):
this is a lab stand-in, not a real authentication system.

Sessions live in memory (a restart logs everyone off, as it would on the
real system) and expire a fixed TTL after logon. The clock is injected so
expiry is tested without sleeping.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from backoffice.towns import TOWNS_BY_ID

PASSWORD_ENV = "LOADPROBE_TARGET_PASSWORD"
DEFAULT_PASSWORD = "lab-password"
TERMINALS_PER_TOWN = 10


def terminal_users(town: str) -> list[str]:
    return [f"{town}-t{n:02d}" for n in range(1, TERMINALS_PER_TOWN + 1)]


def lab_password() -> str:
    return os.environ.get(PASSWORD_ENV, DEFAULT_PASSWORD)


def check_credentials(town: str, user: str, password: str, expected_password: str) -> bool:
    """True if `user` is one of `town`'s terminals and the password matches."""
    valid_user = town in TOWNS_BY_ID and user in terminal_users(town)
    # Compare the password even for an unknown user, so timing does not tell
    # which of the two was wrong.
    valid_password = hmac.compare_digest(password.encode(), expected_password.encode())
    return valid_user and valid_password


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    user: str
    town: str
    created_at: float  # clock seconds
    expires_at: float


class SessionStore:
    """Bearer tokens → sessions, safe to use from several threads."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        if ttl_seconds <= 0:
            raise ValueError("session TTL must be positive")
        self.ttl = ttl_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, town: str) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), user, town, now, now + self.ttl)
        with self._lock:
            self._sessions[session.token] = session
        return session

    def get(self, token: str) -> Session | None:
        """The live session for `token`, or None if unknown or expired."""
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires_at <= self._clock():
                del self._sessions[token]
                return None
            return session

    def revoke(self, token: str) -> bool:
        with self._lock:
            return self._sessions.pop(token, None) is not None

    def active_by_town(self) -> dict[str, int]:
        """Unexpired sessions per town; drops the expired ones on the way."""
        now = self._clock()
        counts = dict.fromkeys(TOWNS_BY_ID, 0)
        with self._lock:
            expired = [t for t, s in self._sessions.items() if s.expires_at <= now]
            for token in expired:
                del self._sessions[token]
            for session in self._sessions.values():
                counts[session.town] += 1
        return counts
