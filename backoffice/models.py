"""Request and response bodies of the reference application's HTTP API.

These pydantic models are the contract that /openapi.json publishes and
the Locust suite is written against.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

TownId = Literal["nishiki", "takaharu", "tsuno", "kawaminami"]
Sex = Literal["M", "F"]
JobStatusName = Literal["queued", "running", "done", "failed"]


class Problem(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok", "error"]
    residents: int
    db: Literal["ok", "error"]
    version: str


class AssetInfo(BaseModel):
    name: str
    size: int = Field(description="bytes")
    sha256: str
    content_type: str


class Manifest(BaseModel):
    version: str = Field(description="changes whenever any asset changes")
    assets: list[AssetInfo]


class LogonRequest(BaseModel):
    town: TownId
    user: str = Field(min_length=1, max_length=64, examples=["nishiki-t01"])
    password: str = Field(max_length=256)


class LogonResponse(BaseModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: datetime
    user: str
    town: TownId


class _Person(BaseModel):
    """Who a resident is: the fields every listing of residents shows."""

    resident_id: str = Field(examples=["nishiki-0000123"])
    family_name: str
    given_name: str
    family_kana: str
    given_kana: str
    sex: Sex
    birth_date: date


class ResidentSummary(_Person):
    address: str


class ResidentPage(BaseModel):
    total: int = Field(description="matches in the caller's town, before paging")
    limit: int
    offset: int
    items: list[ResidentSummary]


class HouseholdMember(_Person):
    relationship: str


class Resident(ResidentSummary):
    town: TownId
    household_id: str
    relationship: str = Field(description="続柄 to the head of household")
    postal_code: str
    registered_on: date = Field(description="住民となった年月日")
    income: int = Field(description="previous year's gross income, yen")
    income_kind: Literal["salary", "pension", "none"]
    household: list[HouseholdMember]


class CertificateRequest(BaseModel):
    resident_id: str = Field(min_length=1, max_length=64)
    kind: Literal["juminhyo"] = "juminhyo"


class BatchJobRequest(BaseModel):
    kind: Literal["tax-recalc"]
    town: TownId
    fiscal_year: int = Field(ge=2012, le=2100)


class BatchJobAccepted(BaseModel):
    job_id: str
    status: JobStatusName


class BatchJobStatus(BaseModel):
    job_id: str
    kind: str
    town: TownId
    fiscal_year: int
    status: JobStatusName
    rows_total: int
    rows_done: int
    progress: float = Field(ge=0, le=1)
    submitted_by: str
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class BatchJobResult(BaseModel):
    job_id: str
    kind: str
    town: TownId
    fiscal_year: int
    rows_processed: int
    taxpayers: int
    exempt: int
    total_tax: int = Field(description="municipal + prefectural resident tax, yen")
    municipal_tax: int
    prefectural_tax: int
    income_levy_total: int = Field(description="所得割")
    per_capita_levy_total: int = Field(description="均等割")
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
