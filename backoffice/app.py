"""Application factory: wires ledger, sessions, batch pool, bundle and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from backoffice import __version__, endpoints
from backoffice.auth import SessionStore
from backoffice.batch import BatchRunner
from backoffice.bundle import build_bundle
from backoffice.config import TargetConfig
from backoffice.deps import AppState
from backoffice.ledger import Ledger, LedgerInfo
from backoffice.metrics import MetricsMiddleware, StateCollector, TargetMetrics

DESCRIPTION = """\
A stand-in for the shared municipal back-office of 錦町, 高原町, 都農町 and 川南町,
for load tests, the lab and demos. Synthetic data only.

Workflow of one terminal: application start (manifest + assets, no session),
logon, ledger inquiry, certificate issuance, batch processing.
Every other `/api/v1` call needs `Authorization: Bearer <token>` from logon;
a session sees only its own town (others' residents and jobs answer 404).
"""


def create_app(config: TargetConfig, ledger_info: LedgerInfo) -> FastAPI:
    """Build the ASGI app over an already opened (seeded) ledger."""
    ledger = Ledger(ledger_info.path)
    sessions = SessionStore(config.session_ttl)
    batch = BatchRunner(ledger, workers=config.batch_workers, row_cost_us=config.batch_row_cost_us)
    metrics = TargetMetrics()
    metrics.registry.register(
        StateCollector(
            version=__version__,
            sessions=sessions.active_by_town,
            batch_jobs=batch.counts,
            residents=ledger_info.residents_by_town,
        )
    )
    state = AppState(
        config=config,
        ledger_info=ledger_info,
        ledger=ledger,
        sessions=sessions,
        batch=batch,
        bundle=build_bundle(),
        metrics=metrics,
        version=__version__,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batch.warm_up()
        try:
            yield
        finally:
            # Lets a running job stop at its next chunk; waits for the pool.
            await anyio.to_thread.run_sync(batch.shutdown)

    app = FastAPI(
        title="loadprobe reference data-center application",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.target = state
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(endpoints.ops)
    app.include_router(endpoints.app_start)
    app.include_router(endpoints.api)
    return app
