"""Fuzzing the operations center's HTTP API: for any values of each
endpoint's query parameters (and any town in the path), the answer is a 2xx,
or a 4xx with a JSON error, never a 5xx or an exception out of the app.

The app is the one `create_app` builds, in process over httpx's ASGI
transport, on a store that holds some events (so that paging, cursors and
time filters have rows to work on).  Inputs: arbitrary text, numbers as text
(huge, negative, NaN, infinities), times with any offset and year, cursors
of the store's shape with odd numbers, repeated and unknown parameters, and
raw query strings with broken percent-encoding.

Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opscenter_data import event, later, metrics, online, state

from netwatch.messages import EventType, Message, format_ts
from netwatch.opscenter.fleet import Fleet
from netwatch.opscenter.metrics import ServiceMetrics
from netwatch.opscenter.store import Store
from netwatch.opscenter.web import Context, Link, create_app
from netwatch.topology import load

ROOT = Path(__file__).resolve().parent.parent
TOWNS = ["nishiki", "takaharu", "tsuno", "kawaminami"]

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None)


class Api:
    """The app in process; one event loop and one client for every request."""

    def __init__(self, ctx: Context) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://oc"
        )

    def get(
        self, url: str | httpx.URL, params: list[tuple[str, str]] | None = None
    ) -> httpx.Response:
        query = None if params is None else tuple(params)
        return self.loop.run_until_complete(self.client.get(url, params=query))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    topo = load(ROOT / "topology.yaml")
    fleet = Fleet(topo, stale_after=20.0)
    store = Store(tmp_path_factory.mktemp("fuzz-web") / "db.sqlite3")
    now = datetime.now(UTC).timestamp()
    ctx = Context(fleet, store, ServiceMetrics.create(fleet), Link(True), lambda: now)
    messages: list[Message] = [
        online(),
        state(),
        event(EventType.FAILBACK, town="tsuno", frm="backup", to="primary"),
    ]
    for i in range(12):
        messages += [event(EventType.FAILOVER, at=later(i)), metrics(at=later(i))]
    for message in messages:
        fleet.apply(message, now)
        store.add(message, now)
    asyncio.run(store.flush())
    client = Api(ctx)
    yield client
    client.close()
    store.close()


def answer_is_sound(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.status_code < 500
        body = response.json()
        assert isinstance(body, dict)
        assert "detail" in body
    else:
        assert 200 <= response.status_code < 300
        if response.headers["content-type"].startswith("application/json"):
            response.json()


# --- values ------------------------------------------------------------------------

numbers = st.sampled_from(
    [
        *["0", "-0", "1", "-1", "6", "48", "48.0000001", "0.0000001", "1e-320", "1e308"],
        *["1e309", "nan", "NaN", "inf", "-inf", "Infinity", "1_000", "0x10", " 5", "5 ", "+5"],
        *["500", "501", str(2**63), str(-(2**63) - 1), "1.5", "true", "", "1" * 5000],
    ]
)
times = st.builds(
    lambda when, offset: when.isoformat() if offset is None else when.isoformat() + offset,
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.sampled_from([None, "Z", "+00:00", "+23:59", "-23:59", "+24:00", "+09:00", "+99"]),
) | st.sampled_from(
    [
        "0",
        "-62135596800",
        "253402300800",
        "1e20",
        "2026-12-01",
        "2026-12-01T05:00:00.123456789Z",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        format_ts(datetime(2026, 12, 1, 5, tzinfo=UTC) + timedelta(seconds=3)),
    ]
)
cursors = st.builds(
    lambda ts, sep, tail: f"{ts}{sep}{tail}",
    numbers | st.floats().map(repr),
    st.sampled_from([":", "", "::"]),
    st.text(max_size=40),
)
text = st.text(max_size=30)
towns = st.sampled_from([*TOWNS, "NISHIKI", "nowhere", ""]) | text
kinds = st.sampled_from([k.value for k in EventType]) | text


def _values(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return strategy | text


# --- properties ------------------------------------------------------------------------


@settings(FUZZ, max_examples=100)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("town"), _values(towns)),
            st.tuples(st.just("kind"), _values(kinds)),
            st.tuples(st.just("since"), _values(times)),
            st.tuples(st.just("until"), _values(times)),
            st.tuples(st.just("limit"), _values(numbers)),
            st.tuples(st.just("cursor"), _values(cursors)),
            st.tuples(text, text),
        ),
        max_size=6,
    )
)
def test_any_events_query_is_answered_without_a_server_error(
    api: Api, params: list[tuple[str, str]]
) -> None:
    answer_is_sound(api.get("/api/v1/events", params))


@FUZZ
@given(towns, st.lists(st.tuples(st.just("hours") | text, _values(numbers)), max_size=3))
def test_any_samples_query_is_answered_without_a_server_error(
    api: Api, town: str, params: list[tuple[str, str]]
) -> None:
    answer_is_sound(api.get(f"/api/v1/towns/{quote(town, safe='')}/samples", params))


@FUZZ
@given(
    st.sampled_from(["/api/v1/towns/{}", "/towns/{}", "/api/v1/fleet", "/", "/metrics"]),
    towns,
    st.lists(st.tuples(text, text), max_size=3),
)
def test_any_town_and_query_of_the_other_pages_is_answered_without_a_server_error(
    api: Api, template: str, town: str, params: list[tuple[str, str]]
) -> None:
    answer_is_sound(api.get(template.format(quote(town, safe="")), params))


@FUZZ
@given(
    st.sampled_from(["/api/v1/events", "/api/v1/towns/nishiki/samples"]),
    st.text(alphabet="%&=+;?abcdefhiklmnorstuyz0123456789-:.FfEe", max_size=60),
)
def test_a_raw_query_string_is_answered_without_a_server_error(
    api: Api, path: str, query: str
) -> None:
    url = httpx.URL(f"http://oc{path}").copy_with(query=query.encode("utf-8"))
    answer_is_sound(api.get(url))
