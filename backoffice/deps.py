"""Shared state of a running application and the FastAPI dependencies over it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backoffice.auth import Session, SessionStore
from backoffice.batch import BatchRunner
from backoffice.bundle import Bundle
from backoffice.config import TargetConfig
from backoffice.ledger import Ledger, LedgerInfo
from backoffice.metrics import TargetMetrics


@dataclass(frozen=True, slots=True)
class AppState:
    config: TargetConfig
    ledger_info: LedgerInfo
    ledger: Ledger
    sessions: SessionStore
    batch: BatchRunner
    bundle: Bundle
    metrics: TargetMetrics
    version: str


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.target
    return state


# auto_error=False: a missing header must give 401 with WWW-Authenticate, our way.
_bearer = HTTPBearer(
    auto_error=False,
    description="Token from POST /api/v1/logon, sent as `Authorization: Bearer <token>`.",
)


def require_session(
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Session:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: log on first",
            headers={"WWW-Authenticate": "Bearer"},
        )
    session = state.sessions.get(credentials.credentials)
    if session is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid or expired session: log on again",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return session


StateDep = Annotated[AppState, Depends(get_state)]
SessionDep = Annotated[Session, Depends(require_session)]
