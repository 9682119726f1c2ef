"""HTTP endpoints. Handlers stay thin: the work is in ledger, certificate, batch.

Handlers that touch SQLite or render PDFs are plain `def`: FastAPI runs them
in its thread pool, so the event loop keeps accepting requests meanwhile.

Town scoping: a session belongs to one town. A resident or batch job of
another town answers 404, exactly as an unknown one would, so a terminal
cannot even learn whether an id exists elsewhere. Asking to *start* a batch
job for another town is a plain permission error: 403.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backoffice import models
from backoffice.auth import check_credentials
from backoffice.batch import Job, QueueFull
from backoffice.bundle import ASSET_CACHE_CONTROL, MANIFEST_CACHE_CONTROL, Asset, etag_matches
from backoffice.certificate import render_juminhyo
from backoffice.deps import SessionDep, StateDep
from backoffice.kana import normalize_kana, normalize_name
from backoffice.towns import TOWNS_BY_ID

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": models.Problem, "description": "No, invalid or expired session"}
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": models.Problem, "description": "Unknown here (or another town's)"}
}

ops = APIRouter(tags=["operations"])
app_start = APIRouter(prefix="/api/v1/app", tags=["application start"])
api = APIRouter(prefix="/api/v1", responses=_UNAUTHORIZED)


# --- operations ------------------------------------------------------------------


@ops.get("/health", response_model=models.Health, responses={503: {"model": models.Health}})
def health(state: StateDep, response: Response) -> models.Health:
    """Liveness and readiness in one cheap call (agents probe it several times a second)."""
    db_ok = state.ledger.ping()
    if not db_ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return models.Health(
        status="ok" if db_ok else "error",
        residents=state.ledger_info.residents,
        db="ok" if db_ok else "error",
        version=state.version,
    )


@ops.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(state: StateDep) -> Response:
    """Prometheus exposition of the application's own `loadprobe_target_*` metrics."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# --- application start (no session: the client fetches these before logon) ------


def _conditional(asset: Asset, if_none_match: str | None, cache_control: str) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": cache_control}
    if etag_matches(if_none_match, asset.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


IfNoneMatch = Annotated[str | None, Header(max_length=1024)]
_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (If-None-Match matched the ETag)"}
}


@app_start.get("/manifest", response_model=models.Manifest, responses=_NOT_MODIFIED)
async def manifest(state: StateDep, if_none_match: IfNoneMatch = None) -> Response:
    """Version and list of start-up assets (name, size, sha256); ETag, always revalidated."""
    return _conditional(state.bundle.manifest, if_none_match, MANIFEST_CACHE_CONTROL)


@app_start.get(
    "/assets/{name}",
    response_class=Response,
    responses={**_NOT_MODIFIED, **_NOT_FOUND, 200: {"content": {"application/octet-stream": {}}}},
)
async def asset(name: str, state: StateDep, if_none_match: IfNoneMatch = None) -> Response:
    """One start-up asset, with a strong ETag; If-None-Match gives 304."""
    found = state.bundle.assets.get(name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no asset named {name!r}")
    return _conditional(found, if_none_match, ASSET_CACHE_CONTROL)


# --- logon ---------------------------------------------------------------------------


@api.post("/logon", response_model=models.LogonResponse, tags=["logon"])
async def logon(body: models.LogonRequest, state: StateDep) -> models.LogonResponse:
    """Open a session for one of the town's terminals (`<town>-t01` .. `<town>-t10`)."""
    if not check_credentials(body.town, body.user, body.password, state.config.password):
        state.metrics.logons.labels(body.town, "rejected").inc()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "wrong user, town or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    state.metrics.logons.labels(body.town, "ok").inc()
    session = state.sessions.create(body.user, body.town)
    return models.LogonResponse(
        token=session.token,
        expires_at=datetime.fromtimestamp(session.expires_at, UTC),
        user=session.user,
        town=body.town,
    )


@api.post("/logoff", status_code=status.HTTP_204_NO_CONTENT, tags=["logon"])
async def logoff(session: SessionDep, state: StateDep) -> Response:
    """End the session; its token is refused from now on."""
    state.sessions.revoke(session.token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- ledger inquiry (台帳照会) -------------------------------------------------------


def _own_resident(state: StateDep, session: SessionDep, resident_id: str) -> dict[str, Any]:
    """A resident of the caller's town; 404 for an unknown one or another town's."""
    row = state.ledger.get(session.town, resident_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no resident {resident_id!r} in this town")
    return dict(row)


def _household(state: StateDep, resident: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(member) for member in state.ledger.household(resident["household_id"])]


@api.get("/residents", response_model=models.ResidentPage, tags=["ledger"])
def search_residents(
    session: SessionDep,
    state: StateDep,
    kana: Annotated[
        str | None,
        Query(max_length=64, description="reading prefix; hiragana, katakana or half-width"),
    ] = None,
    name: Annotated[str | None, Query(max_length=64, description="kanji name prefix")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> models.ResidentPage:
    """Search the caller's town by name reading (kana) or kanji name, family name first."""
    page = state.ledger.search(
        session.town,
        kana=normalize_kana(kana) if kana else None,
        name=normalize_name(name) if name else None,
        limit=limit,
        offset=offset,
    )
    items = [models.ResidentSummary.model_validate(dict(row)) for row in page.rows]
    return models.ResidentPage(total=page.total, limit=limit, offset=offset, items=items)


@api.get(
    "/residents/{resident_id}",
    response_model=models.Resident,
    responses=_NOT_FOUND,
    tags=["ledger"],
)
def get_resident(resident_id: str, session: SessionDep, state: StateDep) -> models.Resident:
    """The full ledger record of one resident of the caller's town, with the household."""
    resident = _own_resident(state, session, resident_id)
    return models.Resident.model_validate({**resident, "household": _household(state, resident)})


# --- certificate issuance (証明書発行) -------------------------------------------------


@api.post(
    "/certificates",
    response_class=Response,
    responses={
        **_NOT_FOUND,
        200: {
            "content": {"application/pdf": {}},
            "description": "The certificate; its number is in X-Certificate-Number",
        },
    },
    tags=["certificates"],
)
def issue_certificate(
    body: models.CertificateRequest, session: SessionDep, state: StateDep
) -> Response:
    """Issue a 住民票の写し of a resident of the caller's town as a one-page PDF."""
    resident = _own_resident(state, session, body.resident_id)
    now = datetime.now().astimezone()
    number = state.ledger.log_issuance(
        town=session.town,
        resident_id=body.resident_id,
        kind=body.kind,
        user=session.user,
        issued_at=now,
    )
    pdf = render_juminhyo(
        resident,
        _household(state, resident),
        town=TOWNS_BY_ID[session.town],
        certificate_number=number,
        issued_on=now.date(),
    )
    state.metrics.certificates.labels(session.town, body.kind).inc()
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "X-Certificate-Number": number,
            "Content-Disposition": f'inline; filename="{number}.pdf"',
        },
    )


# --- batch processing ------------------------------------------------------------------


def _own_job(state: StateDep, session: SessionDep, job_id: str) -> Job:
    job = state.batch.get(job_id)
    if job is None or job.town != session.town:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch job {job_id!r}")
    return job


@api.post(
    "/batch/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=models.BatchJobAccepted,
    responses={403: {"model": models.Problem}, 503: {"model": models.Problem}},
    tags=["batch"],
)
def submit_batch_job(
    body: models.BatchJobRequest, session: SessionDep, state: StateDep, response: Response
) -> models.BatchJobAccepted:
    """Queue a tax recalculation of the caller's town; poll the job until `done`."""
    if body.town != session.town:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a terminal of {session.town} cannot run batch jobs for {body.town}",
        )
    try:
        job = state.batch.submit(
            kind=body.kind,
            town=body.town,
            fiscal_year=body.fiscal_year,
            user=session.user,
            rows_total=state.ledger_info.residents_by_town.get(body.town, 0),
        )
    except QueueFull as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"}
        ) from exc
    state.metrics.batch_submitted.labels(body.town, body.kind).inc()
    response.headers["Location"] = f"/api/v1/batch/jobs/{job.job_id}"
    return models.BatchJobAccepted(job_id=job.job_id, status=job.status)


@api.get(
    "/batch/jobs/{job_id}",
    response_model=models.BatchJobStatus,
    responses=_NOT_FOUND,
    tags=["batch"],
)
def batch_job_status(job_id: str, session: SessionDep, state: StateDep) -> models.BatchJobStatus:
    """Progress of a job: status queued → running → done (or failed), rows done of total."""
    job = _own_job(state, session, job_id)
    return models.BatchJobStatus.model_validate(
        {**dataclasses.asdict(job), "progress": round(job.progress, 4)}
    )


@api.get(
    "/batch/jobs/{job_id}/result",
    response_model=models.BatchJobResult,
    responses={**_NOT_FOUND, 409: {"model": models.Problem, "description": "Not done (yet)"}},
    tags=["batch"],
)
def batch_job_result(job_id: str, session: SessionDep, state: StateDep) -> models.BatchJobResult:
    """Totals of a finished job; 409 while it is queued or running, or if it failed."""
    job = _own_job(state, session, job_id)
    if job.status != "done" or job.result is None:
        detail = f"job is {job.status}" + (f": {job.error}" if job.error else "")
        raise HTTPException(status.HTTP_409_CONFLICT, detail)
    return models.BatchJobResult.model_validate(
        {
            **job.result,
            "job_id": job.job_id,
            "kind": job.kind,
            "town": job.town,
            "fiscal_year": job.fiscal_year,
        }
    )
