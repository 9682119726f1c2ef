"""One terminal of a town office, as a Locust user (runs under gevent: import
this only in a Locust process, never in an asyncio one).

Each terminal runs the seed's workflow in order, with a think time before
each step, and starts over when it reaches the end or when a step fails:

1. ``app_start``: the start-up bundle. The manifest is revalidated every
   time (If-None-Match → 304); an asset is fetched only when the terminal
   has no fresh copy (its max-age), revalidated when stale, and checked
   against the manifest's size and sha256 when downloaded.
2. ``logon`` as ``<town>-tNN``.
3. ``ledger_inquiry``: a kana search from the topology's resident sample,
   then one of the residents found; both must be the resident searched for.
4. ``certificate`` for that resident: a PDF carrying that resident's name
   and id and the certificate number the server announced.
5. ``batch``: submit a tax recalculation of the town, poll until it is
   done, fetch the result; the result must count the town's population.
   Timed as one transaction from submit to result.
6. ``logoff`` (a request, not a judged transaction).

In Locust's statistics a transaction of several requests is one request of
type ``TX`` named after it, its HTTP requests ``<transaction>: <step>``; a
transaction of one request (logon, certificate) is that request, named
after the transaction. A failed check is a failed request with a reason;
the transaction then fails with the same reason and the terminal starts its
workflow again after a think time. The bookkeeping of transactions is a
`TransactionRecorder` (transactions.py); each HTTP request is judged inside
Locust's ``catch_response`` block, so Locust (and the sample recorder) hear
of it once, with the terminal's verdict.

Importing this module registers nothing with Locust: a locustfile calls
`locust_plugin.install` (see locustfile.py).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from locust import SequentialTaskSet
from locust.contrib.fasthttp import FastHttpUser, FastResponse
from locust.exception import InterruptTaskSet
from locust.runners import WorkerRunner

from loadprobe import scenario as scenario_mod
from loadprobe.checks import Resident, check_batch_result, check_record, check_search
from loadprobe.locust_options import scenario_of
from loadprobe.pdfcheck import check_certificate
from loadprobe.samples import one_line
from loadprobe.scenario import ScenarioError
from loadprobe.transactions import StepFailed, Transaction, TransactionRecorder

log = logging.getLogger("loadprobe.terminal")

_INTERRUPT: Any = InterruptTaskSet  # its __init__ is untyped
_WHOLE: dict[str, Any] = {"whole": True}
_PART: dict[str, Any] = {}
_MAX_AGE = re.compile(r"max-age=(\d+)")
_terminal_numbers = itertools.count()

# The seed's workflow: its five transactions, in order (each a method of TerminalBase).
WORKFLOW = ("app_start", "logon", "ledger_inquiry", "certificate", "batch")


# --- a Locust hook ---------------------------------------------------------------------------


def default_host(environment: Any, **_: Any) -> None:
    """Plain `locust -f` without --host: terminals use the topology's base_url
    (a listener for Locust's ``init`` hook, registered by `locust_plugin.install`)."""
    if environment.host or environment.parsed_options is None:
        return
    from netwatch.topology import TopologyError, load

    try:
        base_url = load(str(environment.parsed_options.topology)).loadtest.base_url
    except TopologyError:
        return
    for user_class in environment.user_classes:
        if issubclass(user_class, TerminalBase) and user_class.host is None:
            user_class.host = base_url.rstrip("/")


# --- the terminal's memory: its cache and session ------------------------------------------


@dataclass
class CachedAsset:
    sha256: str
    etag: str
    fresh_until: float  # monotonic seconds


@dataclass
class TerminalState:
    manifest: dict[str, Any] | None = None
    manifest_etag: str | None = None
    assets: dict[str, CachedAsset] = field(default_factory=dict)
    token: str | None = None
    resident: Resident | None = None
    iterations: int = 0


def json_of(resp: FastResponse) -> Any:
    """The JSON body of an answer. Parsed from the bytes: JSON is UTF-8, and
    FastResponse.json() would first guess the text encoding, which is slow."""
    try:
        return json.loads((resp.content or b"").decode("utf-8"))
    except ValueError as exc:
        raise StepFailed(f"answer is not JSON: {exc}") from None


# --- the workflow -----------------------------------------------------------------------------


def _transaction_task(name: str) -> Callable[[Workflow], None]:
    def run(workflow: Workflow) -> None:
        workflow.user.run_step(name, getattr(workflow.user, name))

    run.__name__ = name  # Locust names a task after its function
    return run


def _logoff(workflow: Workflow) -> None:
    workflow.user.logoff()
    workflow.user.state.iterations += 1


class Workflow(SequentialTaskSet):
    """The seed's five transactions in order, then logoff; a think time before each."""

    user: TerminalBase
    tasks = [*map(_transaction_task, WORKFLOW), _logoff]  # noqa: RUF012 - read by Locust


class TerminalBase(FastHttpUser):
    """A town office terminal without a workflow: its identity, session, cache,
    transactions and checked requests. `Terminal` adds the workflow; a
    benchmark can add a different one and keep every other cost."""

    abstract = True

    def __init__(self, environment: Any) -> None:
        sc = scenario_of(environment)
        # FastHttpUser reads its timeouts when it builds the client (below).
        self.network_timeout = sc.request_timeout
        self.connection_timeout = sc.request_timeout
        super().__init__(environment)
        self.scenario = sc
        self.state = TerminalState()
        self.terminal = self._number()
        self.username = sc.user(self.terminal)
        self.transactions = TransactionRecorder(self.environment.events.request, self.terminal)

    def wait_time(self) -> float:
        return random.uniform(self.scenario.think_min, self.scenario.think_max)

    def _number(self) -> int:
        """1..accounts, distinct across worker processes (see --terminal-stride)."""
        runner = self.environment.runner
        offset = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        stride = max(1, int(getattr(self.environment.parsed_options, "terminal_stride", 1) or 1))
        index = next(_terminal_numbers)
        # Beyond the town's accounts (more terminals than towns[].terminals),
        # terminals share accounts, as two sessions of one clerk would.
        return (index * stride + max(0, offset)) % self.scenario.accounts + 1

    def on_start(self) -> None:
        # Terminals do not all press the same key in the same millisecond.
        gevent.sleep(random.uniform(0, self.scenario.think_max))

    def context(self) -> dict[str, Any]:
        """Locust merges this into every request's context: the current transaction."""
        return self.transactions.context

    # --- transactions and requests ----------------------------------------------------------

    def transaction(self, name: str) -> Transaction:
        """``with self.transaction(name):`` times the body as transaction `name`
        and reports it as one TX request (unless its one request, made with
        ``whole=True``, stands for it)."""
        return self.transactions.transaction(name)

    def run_step(self, name: str, body: Callable[[], None]) -> None:
        """Run one transaction; on failure, start the workflow over (after a think time)."""
        try:
            with self.transaction(name):
                body()
        except StepFailed:
            self.logoff()
            # Back to the user, which thinks, then starts a fresh workflow.
            raise _INTERRUPT(reschedule=False) from None

    def call(
        self,
        method: str,
        path: str,
        step: str | None = None,
        *,
        expect: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        json: Any = None,
        check: Callable[[FastResponse], str | None] | None = None,
        whole: bool = False,
    ) -> FastResponse:
        """One HTTP request of the current transaction; raises StepFailed with the
        reason when it fails or its answer does not pass `check`.

        ``whole=True``: this request is the whole transaction; its sample is
        recorded as the transaction's too, and no separate TX request is made
        (half the bookkeeping for the transactions of one request)."""
        transactions = self.transactions
        all_headers = headers
        if self.state.token:
            all_headers = {**(headers or {}), "Authorization": f"Bearer {self.state.token}"}
        resp = self.client.request(
            method,
            path,
            name=transactions.request_name(step),
            headers=all_headers,
            json=json,
            context=_WHOLE if whole else _PART,
            catch_response=True,
        )
        outcome: Any = resp  # its success() and failure() are untyped
        with resp:  # Locust reports the request when the block ends, with our verdict
            reason = _judge(resp, expect, check)
            if reason is None:
                outcome.success()  # an expected status such as 304 or 401, too
            else:
                reason = f"{step or transactions.current}: {reason}"
                outcome.failure(reason)
        length = int(resp.request_meta.get("response_length") or 0)
        transactions.judged(length=length, whole=whole, reason=reason)
        if reason is not None:
            raise StepFailed(reason)
        return resp

    # --- the five transactions ----------------------------------------------------------------

    def app_start(self) -> None:
        st = self.state
        headers = {"If-None-Match": st.manifest_etag} if st.manifest_etag else {}
        resp = self.call(
            "GET", "/api/v1/app/manifest", "manifest", expect=(200, 304), headers=headers
        )
        if resp.status_code == 304:
            if st.manifest is None:
                raise StepFailed("manifest: 304 Not Modified, but nothing is cached")
        else:
            manifest = json_of(resp)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("assets"), list):
                raise StepFailed("manifest: no asset list")
            st.manifest, st.manifest_etag = manifest, _header(resp, "etag")
        assert st.manifest is not None
        now = time.monotonic()
        for entry in st.manifest["assets"]:
            name, sha = str(entry.get("name")), str(entry.get("sha256"))
            cached = st.assets.get(name)
            if cached and cached.sha256 == sha and now < cached.fresh_until:
                continue  # fresh in the cache: a browser does not even ask
            conditional = cached is not None and cached.sha256 == sha and cached.etag
            resp = self.call(
                "GET",
                f"/api/v1/app/assets/{name}",
                "asset",
                expect=(200, 304) if conditional else (200,),
                headers={"If-None-Match": cached.etag} if conditional and cached else None,
                check=functools.partial(_check_asset, entry=entry),
            )
            max_age = _max_age(resp)
            etag = _header(resp, "etag") or (cached.etag if cached else "")
            st.assets[name] = CachedAsset(sha, etag, time.monotonic() + max_age)

    def logon(self) -> None:
        sc = self.scenario
        try:
            password = scenario_mod.read_password(sc)
        except ScenarioError as exc:
            raise StepFailed(f"logon: {exc}") from None
        self.state.token = None

        def check(resp: FastResponse) -> str | None:
            body = json_of(resp)
            if not isinstance(body, dict) or not body.get("token"):
                return "no token in the answer"
            if body.get("user") != self.username or body.get("town") != sc.town:
                return f"session is for {body.get('user')}@{body.get('town')}"
            return None

        resp = self.call(
            "POST",
            "/api/v1/logon",
            json={"town": sc.town, "user": self.username, "password": password},
            check=check,
            whole=True,
        )
        self.state.token = str(json_of(resp)["token"])

    def ledger_inquiry(self) -> None:
        if not self.state.token:
            raise StepFailed("not logged on")
        sample = self.scenario.resident_kana
        kana = sample[(self.terminal + self.state.iterations) % len(sample)]
        resp = self.call(
            "GET",
            f"/api/v1/residents?kana={_quote(kana)}&limit=20",
            "search",
            check=lambda r: check_search(json_of(r), kana),
        )
        item = random.choice(json_of(resp)["items"])
        wanted = Resident(
            str(item["resident_id"]), str(item["family_name"]), str(item["given_name"])
        )
        self.call(
            "GET",
            f"/api/v1/residents/{wanted.resident_id}",
            "record",
            check=lambda r: check_record(json_of(r), wanted, self.scenario.town),
        )
        self.state.resident = wanted

    def certificate(self) -> None:
        who = self.state.resident
        if who is None:
            raise StepFailed("no resident chosen by the inquiry")

        def check(resp: FastResponse) -> str | None:
            kind = _header(resp, "content-type") or ""
            if not kind.startswith("application/pdf"):
                return f"content type {kind!r}, not a PDF"
            number = _header(resp, "x-certificate-number")
            if not number:
                return "no X-Certificate-Number"
            return check_certificate(
                resp.content or b"",
                resident_id=who.resident_id,
                family_name=who.family_name,
                given_name=who.given_name,
                number=number,
            )

        self.call(
            "POST",
            "/api/v1/certificates",
            json={"resident_id": who.resident_id, "kind": "juminhyo"},
            check=check,
            whole=True,
        )

    def batch(self) -> None:
        sc = self.scenario
        resp = self.call(
            "POST",
            "/api/v1/batch/jobs",
            "submit",
            expect=(202,),
            json={"kind": "tax-recalc", "town": sc.town, "fiscal_year": sc.fiscal_year},
            check=lambda r: None if json_of(r).get("job_id") else "no job_id",
        )
        job = str(json_of(resp)["job_id"])
        deadline = time.monotonic() + sc.batch_timeout
        while True:
            status = json_of(self.call("GET", f"/api/v1/batch/jobs/{job}", "status"))
            state = status.get("status") if isinstance(status, dict) else None
            if state == "done":
                break
            if state == "failed":
                raise StepFailed(f"status: job {job} failed: {status.get('error')}")
            if state not in ("queued", "running"):
                raise StepFailed(f"status: unknown job status {state!r}")
            if time.monotonic() >= deadline:
                raise StepFailed(f"status: job {job} not done after {sc.batch_timeout:g} s")
            gevent.sleep(sc.batch_poll)
        self.call(
            "GET",
            f"/api/v1/batch/jobs/{job}/result",
            "result",
            check=lambda r: check_batch_result(json_of(r), sc.population),
        )

    def logoff(self) -> None:
        """End the session (not a judged transaction; its failure is only logged)."""
        if not self.state.token:
            return
        previous = self.transactions.current
        self.transactions.enter("logoff")
        try:
            self.call("POST", "/api/v1/logoff", expect=(204, 401))
        except StepFailed as exc:
            log.debug("terminal %s: %s", self.terminal, exc)
        finally:
            self.transactions.enter(previous)
            self.state.token = None


class Terminal(TerminalBase):
    """A town office terminal running the acceptance test's workflow."""

    tasks = [Workflow]  # noqa: RUF012 - Locust reads it as a class attribute


# --- helpers ----------------------------------------------------------------------------------


def _header(resp: FastResponse, name: str) -> str | None:
    headers = resp.headers
    if headers is None:
        return None
    value = headers.get(name)
    return None if value is None else str(value)


def _judge(
    resp: FastResponse,
    expect: tuple[int, ...],
    check: Callable[[FastResponse], str | None] | None,
) -> str | None:
    """Why the answer fails (its status, then `check`), or None when it passes."""
    reason = None if resp.status_code in expect else _problem(resp, expect)
    if reason is None and check is not None:
        try:
            reason = check(resp)
        except StepFailed as exc:
            reason = str(exc)
        except Exception as exc:  # a check that trips over a malformed answer
            reason = f"{type(exc).__name__}: {exc}"
    return reason


def _problem(resp: FastResponse, expect: tuple[int, ...]) -> str | None:
    status = resp.status_code
    if status in expect:
        return None
    error = getattr(resp, "error", None)
    if not status and error is not None:
        return one_line(error)
    detail = ""
    try:
        body = json.loads(resp.content or b"")
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            detail = f": {body['detail']}"
    except Exception:  # any body that is not a JSON problem
        pass
    return f"HTTP {status}{detail}"


def _check_asset(resp: FastResponse, entry: dict[str, Any]) -> str | None:
    if resp.status_code == 304:
        return None
    body = resp.content or b""
    if len(body) != entry.get("size"):
        return f"{entry.get('name')}: {len(body)} bytes, manifest says {entry.get('size')}"
    if hashlib.sha256(body).hexdigest() != entry.get("sha256"):
        return f"{entry.get('name')}: sha256 differs from the manifest"
    return None


def _max_age(resp: FastResponse) -> float:
    match = _MAX_AGE.search(_header(resp, "cache-control") or "")
    return float(match.group(1)) if match else 0.0


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
