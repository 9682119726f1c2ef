"""The reference application over real HTTP: `loadprobe target` in a subprocess.

One server (module scope) serves every test; the ledger is seeded in a
tmp dir on its start (about a second). Every wait polls under a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backoffice.kana import normalize_kana

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "test-password"
POPULATION = {"nishiki": 11_407, "takaharu": 9_847, "tsuno": 11_130, "kawaminami": 16_905}


@dataclass
class TargetServer:
    url: str
    db: Path
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)


def start_target(db: Path, log: Path, *extra: str) -> TargetServer:
    """Start `loadprobe target --port 0` and wait until /health answers."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOADPROBE_TARGET_PASSWORD": PASSWORD}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadprobe.cli",
                "target",
                "--port",
                "0",
                "--db",
                str(db),
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}: {log.read_text()}")
        if url is None and (match := re.search(r"serving (http://\S+) ", log.read_text())):
            url = match.group(1)
        if url is not None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return TargetServer(url, db, process, log)
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError(f"server not ready in time: {log.read_text()}")


def stop_target(server: TargetServer) -> int:
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        raise


@pytest.fixture(scope="module")
def target_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TargetServer]:
    tmp = tmp_path_factory.mktemp("target")
    server = start_target(tmp / "ledger.sqlite3", tmp / "server.log")
    yield server
    stop_target(server)


@pytest.fixture(scope="module")
def ledger_db(target_server: TargetServer) -> Iterator[sqlite3.Connection]:
    """Read-only view of the server's ledger, to know what answers to expect."""
    conn = sqlite3.connect(f"file:{target_server.db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    yield conn
    conn.close()


def logon(client: httpx.Client, town: str = "nishiki", terminal: int = 1) -> dict[str, str]:
    response = client.post(
        "/api/v1/logon",
        json={"town": town, "user": f"{town}-t{terminal:02d}", "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def job(town: str, fiscal_year: int = 2012, kind: str = "tax-recalc") -> dict[str, Any]:
    return {"kind": kind, "town": town, "fiscal_year": fiscal_year}


def resident(ledger_db: sqlite3.Connection, resident_id: str) -> sqlite3.Row:
    row: sqlite3.Row = ledger_db.execute(
        "SELECT * FROM residents WHERE resident_id = ?", (resident_id,)
    ).fetchone()
    return row


# --- operations --------------------------------------------------------------------


def test_health_needs_no_session(target_server: TargetServer) -> None:
    with target_server.client() as client:
        body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["db"] == "ok"
    assert body["residents"] == 49_289
    assert body["version"]


def test_openapi_describes_the_api(target_server: TargetServer) -> None:
    with target_server.client() as client:
        schema = client.get("/openapi.json").json()
    for path in (
        "/api/v1/logon",
        "/api/v1/residents/{resident_id}",
        "/api/v1/certificates",
        "/api/v1/batch/jobs/{job_id}/result",
        "/api/v1/app/manifest",
    ):
        assert path in schema["paths"]
    assert "LogonRequest" in schema["components"]["schemas"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_unknown_path_is_404(target_server: TargetServer) -> None:
    with target_server.client() as client:
        assert client.get("/api/v1/nothing-here").status_code == 404
        assert client.get("/api/v2/residents").status_code == 404


def test_metrics_count_by_route_template(target_server: TargetServer) -> None:
    with target_server.client() as client:
        headers = logon(client)
        client.get("/api/v1/residents/nishiki-0000001", headers=headers)
        client.get("/no/such/path")
        text = client.get("/metrics").text
    assert re.search(
        r'loadprobe_target_http_requests_total\{method="GET",'
        r'route="/api/v1/residents/\{resident_id\}",status="200"\} [1-9]',
        text,
    )
    assert 'route="unmatched",status="404"' in text
    assert "/no/such/path" not in text
    assert (
        'loadprobe_target_http_request_duration_seconds_bucket{le="0.005",method="POST",'
        'route="/api/v1/logon"}' in text
    )
    assert re.search(r'loadprobe_target_active_sessions\{town="nishiki"\} [1-9]', text)
    assert 'loadprobe_target_batch_jobs{state="running"}' in text
    assert 'loadprobe_target_residents{town="kawaminami"} 16905.0' in text


# --- application start ---------------------------------------------------------------


def test_manifest_lists_assets_that_match_their_hashes(target_server: TargetServer) -> None:
    with target_server.client() as client:
        response = client.get("/api/v1/app/manifest")
        manifest = response.json()
        assert response.headers["cache-control"] == "no-cache"
        names = [asset["name"] for asset in manifest["assets"]]
        assert {"forms.json", "code-tables.json", "app.js", "icons.bin"} <= set(names)
        total = 0
        for entry in manifest["assets"]:
            asset = client.get(f"/api/v1/app/assets/{entry['name']}")
            assert asset.status_code == 200
            assert len(asset.content) == entry["size"]
            assert hashlib.sha256(asset.content).hexdigest() == entry["sha256"]
            assert asset.headers["etag"].startswith('"')  # strong
            assert "max-age" in asset.headers["cache-control"]
            total += entry["size"]
        assert 200_000 < total < 1_000_000
        codes = client.get("/api/v1/app/assets/code-tables.json").json()
    assert len(codes["business_systems"]) == 22


def test_if_none_match_gives_304(target_server: TargetServer) -> None:
    with target_server.client() as client:
        for path in ("/api/v1/app/manifest", "/api/v1/app/assets/app.js"):
            etag = client.get(path).headers["etag"]
            cached = client.get(path, headers={"If-None-Match": etag})
            assert cached.status_code == 304
            assert cached.content == b""
            assert cached.headers["etag"] == etag
            assert client.get(path, headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
            assert client.get(path, headers={"If-None-Match": '"stale"'}).status_code == 200


def test_unknown_asset_is_404(target_server: TargetServer) -> None:
    with target_server.client() as client:
        assert client.get("/api/v1/app/assets/nope.js").status_code == 404


# --- logon ------------------------------------------------------------------------------


def test_logon_returns_a_session(target_server: TargetServer) -> None:
    with target_server.client() as client:
        body = client.post(
            "/api/v1/logon",
            json={"town": "tsuno", "user": "tsuno-t10", "password": PASSWORD},
        ).json()
    assert body["user"] == "tsuno-t10"
    assert body["town"] == "tsuno"
    assert body["token_type"] == "Bearer"
    assert len(body["token"]) >= 32
    assert body["expires_at"]


@pytest.mark.parametrize(
    "credentials",
    [
        {"town": "nishiki", "user": "nishiki-t01", "password": "wrong"},
        {"town": "nishiki", "user": "nishiki-t11", "password": PASSWORD},
        {"town": "nishiki", "user": "tsuno-t01", "password": PASSWORD},
    ],
)
def test_wrong_credentials_are_401(target_server: TargetServer, credentials: Any) -> None:
    with target_server.client() as client:
        response = client.post("/api/v1/logon", json=credentials)
    assert response.status_code == 401
    assert "token" not in response.text


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"town": "nishiki", "user": "nishiki-t01"}',
        b'{"town": "atlantis", "user": "nishiki-t01", "password": "x"}',
        b"[]",
        b"",
    ],
)
def test_malformed_logon_is_422(target_server: TargetServer, body: bytes) -> None:
    with target_server.client() as client:
        response = client.post(
            "/api/v1/logon", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422


PROTECTED = [
    ("GET", "/api/v1/residents?kana=ヤ", None),
    ("GET", "/api/v1/residents/nishiki-0000001", None),
    ("POST", "/api/v1/certificates", {"resident_id": "nishiki-0000001"}),
    ("POST", "/api/v1/batch/jobs", job("nishiki")),
    ("GET", "/api/v1/batch/jobs/tax-recalc-0", None),
    ("GET", "/api/v1/batch/jobs/tax-recalc-0/result", None),
    ("POST", "/api/v1/logoff", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz"])
def test_protected_endpoints_need_a_session(
    target_server: TargetServer, method: str, path: str, body: Any, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with target_server.client() as client:
        response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_logoff_ends_the_session(target_server: TargetServer) -> None:
    with target_server.client() as client:
        headers = logon(client, "takaharu", 3)
        assert client.get("/api/v1/residents", headers=headers).status_code == 200
        assert client.post("/api/v1/logoff", headers=headers).status_code == 204
        assert client.get("/api/v1/residents", headers=headers).status_code == 401


# --- ledger inquiry ----------------------------------------------------------------------


def test_search_by_kana_finds_the_resident(
    target_server: TargetServer, ledger_db: sqlite3.Connection
) -> None:
    wanted = ledger_db.execute(
        "SELECT * FROM residents WHERE town = 'nishiki' ORDER BY resident_id LIMIT 1 OFFSET 500"
    ).fetchone()
    reading = wanted["family_kana"] + wanted["given_kana"]
    hiragana = "".join(chr(ord(ch) - 0x60) if "ァ" <= ch <= "ヶ" else ch for ch in reading)
    with target_server.client() as client:
        headers = logon(client)
        for query in (reading, hiragana, f"{wanted['family_kana']}　{wanted['given_kana']}"):
            page = client.get(
                "/api/v1/residents", params={"kana": query, "limit": 100}, headers=headers
            ).json()
            ids = [item["resident_id"] for item in page["items"]]
            assert wanted["resident_id"] in ids, query
            assert all(
                normalize_kana(i["family_kana"] + i["given_kana"]).startswith(reading)
                for i in page["items"]
            )
        by_name = client.get(
            "/api/v1/residents",
            params={"name": wanted["family_name"] + wanted["given_name"], "limit": 100},
            headers=headers,
        ).json()
    assert wanted["resident_id"] in [item["resident_id"] for item in by_name["items"]]


def test_search_pages_through_a_prefix(
    target_server: TargetServer, ledger_db: sqlite3.Connection
) -> None:
    expected = ledger_db.execute(
        "SELECT COUNT(*) FROM residents WHERE town = 'kawaminami' AND family_kana LIKE 'クロ%'"
    ).fetchone()[0]
    assert expected > 100
    with target_server.client() as client:
        headers = logon(client, "kawaminami")
        first = client.get(
            "/api/v1/residents", params={"kana": "くろ", "limit": 50}, headers=headers
        ).json()
        second = client.get(
            "/api/v1/residents",
            params={"kana": "ｸﾛ", "limit": 50, "offset": 50},
            headers=headers,
        ).json()
        too_big = client.get("/api/v1/residents", params={"limit": 101}, headers=headers)
    assert first["total"] == second["total"] == expected
    assert len(first["items"]) == len(second["items"]) == 50
    first_ids = {item["resident_id"] for item in first["items"]}
    assert not first_ids & {item["resident_id"] for item in second["items"]}
    assert all(item["resident_id"].startswith("kawaminami-") for item in first["items"])
    assert too_big.status_code == 422


def test_resident_record_is_complete(
    target_server: TargetServer, ledger_db: sqlite3.Connection
) -> None:
    row = resident(ledger_db, "tsuno-0000042")
    with target_server.client() as client:
        headers = logon(client, "tsuno")
        record = client.get("/api/v1/residents/tsuno-0000042", headers=headers).json()
    for field in (
        "family_name",
        "given_name",
        "family_kana",
        "given_kana",
        "sex",
        "birth_date",
        "address",
        "household_id",
        "registered_on",
        "income",
        "relationship",
    ):
        assert record[field] == row[field], field
    assert "tsuno-0000042" in [member["resident_id"] for member in record["household"]]
    assert record["address"].startswith("宮崎県児湯郡都農町")


def test_unknown_or_foreign_resident_is_404(target_server: TargetServer) -> None:
    with target_server.client() as client:
        headers = logon(client, "nishiki")
        assert client.get("/api/v1/residents/nishiki-9999999", headers=headers).status_code == 404
        # A resident of another town is invisible to this town's terminals.
        assert client.get("/api/v1/residents/tsuno-0000001", headers=headers).status_code == 404


# --- certificate issuance ---------------------------------------------------------------------


def _pdf_literal_strings(data: bytes) -> list[bytes]:
    """The literal (...) strings of a PDF fragment, escapes resolved."""
    out: list[bytes] = []
    i = 0
    while (i := data.find(b"(", i)) != -1:
        depth, buf, i = 1, bytearray(), i + 1
        while depth:
            ch = data[i]
            if ch == 0x5C:  # backslash
                nxt = data[i + 1 : i + 2]
                if nxt.isdigit():
                    octal = re.match(rb"[0-7]{1,3}", data[i + 1 : i + 4])
                    assert octal is not None
                    buf.append(int(octal.group(), 8))
                    i += 1 + len(octal.group())
                    continue
                buf += {b"n": b"\n", b"r": b"\r", b"t": b"\t"}.get(nxt, nxt)
                i += 2
                continue
            depth += {0x28: 1, 0x29: -1}.get(ch, 0)
            if depth:
                buf.append(ch)
            i += 1
        out.append(bytes(buf))
    return out


def _pdf_text(data: bytes) -> str:
    """Metadata strings (UTF-16 with BOM) of a PDF, decoded."""
    texts = []
    for raw in _pdf_literal_strings(data.split(b"stream", 1)[0] + data.rsplit(b"endstream", 1)[1]):
        texts.append(
            raw[2:].decode("utf-16-be") if raw.startswith(b"\xfe\xff") else raw.decode("latin-1")
        )
    return "\n".join(texts)


def _pdf_page_content(data: bytes) -> bytes:
    """The first page content stream: ASCII85 then Flate, as reportlab writes it."""
    match = re.search(
        rb"/ASCII85Decode /FlateDecode \] /Length \d+\s*>>\s*stream\r?\n(.*?)~>", data, re.S
    )
    assert match is not None
    return zlib.decompress(base64.a85decode(match.group(1), adobe=False))


def test_certificate_is_a_real_pdf(
    target_server: TargetServer, ledger_db: sqlite3.Connection
) -> None:
    row = resident(ledger_db, "kawaminami-0000300")
    with target_server.client() as client:
        headers = logon(client, "kawaminami", 2)
        response = client.post(
            "/api/v1/certificates",
            json={"resident_id": row["resident_id"], "kind": "juminhyo"},
            headers=headers,
        )
        again = client.post(
            "/api/v1/certificates", json={"resident_id": row["resident_id"]}, headers=headers
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    pdf = response.content
    assert pdf.startswith(b"%PDF-1.")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type /Page\b(?!s)", pdf)) == 1
    assert b"/Count 1" in pdf
    number = response.headers["x-certificate-number"]
    assert re.fullmatch(r"kawaminami-C\d{7}", number)
    assert int(again.headers["x-certificate-number"][-7:]) == int(number[-7:]) + 1
    meta = _pdf_text(pdf)
    assert f"住民票の写し {row['family_name']} {row['given_name']}" in meta
    assert row["resident_id"] in meta
    assert number in meta
    # The page itself carries the kanji name (UCS-2 codes of the CID font) and the ids.
    content = b"".join(_pdf_literal_strings(_pdf_page_content(pdf)))
    assert row["family_name"].encode("utf-16-be") in content
    assert row["address"].encode("utf-16-be") in content
    assert number.encode() in content
    logged = ledger_db.execute(
        "SELECT resident_id, issued_by FROM issuance_log WHERE certificate_number = ?", (number,)
    ).fetchone()
    assert tuple(logged) == (row["resident_id"], "kawaminami-t02")


def test_certificate_errors(target_server: TargetServer) -> None:
    with target_server.client() as client:
        headers = logon(client)
        unknown = client.post(
            "/api/v1/certificates", json={"resident_id": "nishiki-9999999"}, headers=headers
        )
        foreign = client.post(
            "/api/v1/certificates", json={"resident_id": "tsuno-0000001"}, headers=headers
        )
        bad_kind = client.post(
            "/api/v1/certificates",
            json={"resident_id": "nishiki-0000001", "kind": "koseki"},
            headers=headers,
        )
        broken = client.post(
            "/api/v1/certificates",
            content=b'{"resident_id": ',
            headers={**headers, "Content-Type": "application/json"},
        )
    assert (unknown.status_code, foreign.status_code) == (404, 404)
    assert (bad_kind.status_code, broken.status_code) == (422, 422)


# --- batch processing ------------------------------------------------------------------------


def test_batch_job_processes_every_row_without_starving_requests(
    target_server: TargetServer,
) -> None:
    with target_server.client() as client:
        headers = logon(client, "takaharu")
        submitted = client.post(
            "/api/v1/batch/jobs",
            json=job("takaharu"),
            headers=headers,
        )
        assert submitted.status_code == 202
        job_id = submitted.json()["job_id"]
        assert submitted.headers["location"] == f"/api/v1/batch/jobs/{job_id}"
        early = client.get(f"/api/v1/batch/jobs/{job_id}/result", headers=headers)
        assert early.status_code == 409

        seen_partial, latencies = False, []
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "batch job did not finish in time"
            status = client.get(f"/api/v1/batch/jobs/{job_id}", headers=headers).json()
            if status["status"] == "done":
                break
            assert status["status"] in ("queued", "running"), status
            seen_partial |= 0 < status["rows_done"] < status["rows_total"]
            started = time.perf_counter()
            assert client.get("/api/v1/residents?kana=ヒダカ", headers=headers).status_code == 200
            assert client.get("/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
        result = client.get(f"/api/v1/batch/jobs/{job_id}/result", headers=headers).json()
    assert status["rows_done"] == status["rows_total"] == POPULATION["takaharu"]
    assert status["progress"] == 1.0
    assert seen_partial, "progress was never observed between 0 and all rows"
    assert result["rows_processed"] == POPULATION["takaharu"]
    assert result["taxpayers"] + result["exempt"] == POPULATION["takaharu"]
    assert result["total_tax"] == result["municipal_tax"] + result["prefectural_tax"] > 0
    # The batch runs in another process: a search + a health check stay quick.
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.25, latencies


def test_batch_job_errors(target_server: TargetServer) -> None:
    with target_server.client() as client:
        headers = logon(client, "nishiki")
        foreign = client.post(
            "/api/v1/batch/jobs",
            json=job("tsuno"),
            headers=headers,
        )
        bad_year = client.post(
            "/api/v1/batch/jobs",
            json=job("nishiki", 1900),
            headers=headers,
        )
        bad_kind = client.post(
            "/api/v1/batch/jobs",
            json=job("nishiki", kind="payroll"),
            headers=headers,
        )
        unknown = client.get("/api/v1/batch/jobs/tax-recalc-nope", headers=headers)
        unknown_result = client.get("/api/v1/batch/jobs/tax-recalc-nope/result", headers=headers)
    assert foreign.status_code == 403
    assert (bad_year.status_code, bad_kind.status_code) == (422, 422)
    assert (unknown.status_code, unknown_result.status_code) == (404, 404)


# --- lifecycle -----------------------------------------------------------------------------------


def test_sessions_expire_and_the_ledger_is_reused(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    first = start_target(db, tmp_path / "first.log", "--session-ttl", "0.5")
    try:
        with first.client() as client:
            headers = logon(client, "tsuno")
            assert client.get("/api/v1/residents", headers=headers).status_code == 200
            deadline = time.monotonic() + 10
            while client.get("/api/v1/residents", headers=headers).status_code != 401:
                assert time.monotonic() < deadline, "session never expired"
                time.sleep(0.05)
        # One server per ledger: a second one on the same file refuses to start.
        second = subprocess.run(
            [sys.executable, "-m", "loadprobe.cli", "target", "--port", "0", "--db", str(db)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 2
        assert b"in use by another loadprobe target" in second.stderr
        assert b"Traceback" not in second.stderr
    finally:
        assert stop_target(first) in (0, -signal.SIGTERM)
    assert "seeded 49289 residents" in first.log.read_text()

    again = start_target(db, tmp_path / "again.log")
    try:
        assert "opened 49289 residents" in again.log.read_text()
        with again.client() as client:
            assert client.get("/health").json()["residents"] == 49_289
    finally:
        stop_target(again)
