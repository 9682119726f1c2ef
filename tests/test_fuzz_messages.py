"""Fuzzing the MQTT contract's readers: `netwatch.messages.parse` and the
operations center's `ingest.check`.  Any topic and any payload bytes give a
message or a refusal (`MessageError`; a `Rejected` with its reason), never
another exception; and what is accepted is a message the operations center
can keep: it encodes back to JSON and reads back, from the UTF-8 text the
store keeps, as the same message.

Inputs: arbitrary bytes and text, arbitrary JSON, deeply nested or huge
numbers, and the valid messages of tests/opscenter_data.py with fields
deleted, added or replaced by random JSON values.

Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opscenter_data import drill, event, hold, metrics, online, state

from netwatch import messages
from netwatch.messages import JSON, Message, MessageError
from netwatch.opscenter.ingest import Reason, Rejected, check

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None)

TOWNS = frozenset({"nishiki", "tsuno"})
LEAVES = ["state", "events", "metrics", "online", "drill"]
VALID: list[Message] = [
    state(),
    state(hold=hold(), active=None, all_down=True),
    event(),
    metrics(probes={"outcomes": {"primary": {"icmp": {"ok": 3, "timeout": 1}}}}),
    online(),
    online(up=False),
    drill(),
    drill(messages.DrillStatus.RUNNING),
]

topics = (
    st.builds(
        lambda root, town, leaf: f"{root}/{town}/{leaf}",
        st.sampled_from(["netwatch/v1", "netwatch/v2", "", "netwatch/v1/x"]),
        st.sampled_from(sorted(TOWNS | {"nowhere", "NISHIKI", ""})) | st.text(max_size=14),
        st.sampled_from(LEAVES) | st.text(max_size=8),
    )
    | st.sampled_from([m.topic for m in VALID])
    | st.text()
)
json_values: st.SearchStrategy[JSON] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: Python's json reads and writes them
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


class Blob(bytes):
    """Bytes that show as their start and size: a failing example's report
    stays short (and under Hypothesis' large-repr warning)."""

    def __repr__(self) -> str:
        return f"Blob({bytes(self[:24])!r}... {len(self)} bytes)"


huge = st.sampled_from(
    [
        b"[" * 60_000,  # deeper than any parser's stack (and under the size limit)
        b"[" * 5_000 + b"]" * 5_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b"1" * 5_000,  # more digits than Python turns into an int
        b'{"schema": ' + b"1" * 5_000 + b"}",
        b"-" + b"9" * 4_400,
        b"1e999",
        b"NaN",
        b'"\\ud800"',
    ]
).map(Blob)
payloads = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | huge
)


def _encodings(text: str) -> st.SearchStrategy[bytes]:
    """`text` as a sender might encode it: UTF-8, with a BOM, or UTF-16/32
    (which Python's json.loads would read from bytes)."""
    return st.sampled_from(
        [
            text.encode("utf-8"),
            text.encode("utf-8-sig"),
            text.encode("utf-16"),
            text.encode("utf-16-le"),
            text.encode("utf-32"),
        ]
    )


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid message's JSON with one to three fields deleted, added or
    replaced (at any depth) by random JSON, on its own topic."""
    message = draw(st.sampled_from(VALID))
    data: Any = copy.deepcopy(message.to_dict())
    for _ in range(draw(st.integers(1, 3))):
        parent: Any = data
        while isinstance(parent, dict) and parent and draw(st.booleans()):
            child = parent[draw(st.sampled_from(sorted(parent)))]
            if not isinstance(child, dict) or not child:
                break
            parent = child
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not parent:
            parent[draw(st.text(max_size=10))] = draw(json_values)
        elif action == "delete":
            del parent[draw(st.sampled_from(sorted(parent)))]
        else:
            parent[draw(st.sampled_from(sorted(parent)))] = draw(json_values)
    text = json.dumps(data, ensure_ascii=draw(st.booleans()))
    return message.topic, draw(_encodings(text))


def accepted(topic: str, payload: bytes) -> Message | Rejected:
    """`ingest.check`, with the properties checked."""
    out = check(topic, payload, TOWNS)
    if isinstance(out, Rejected):
        assert isinstance(out.reason, Reason)
        assert isinstance(out.detail, str)
        assert out.town is None or isinstance(out.town, str)
        return out
    assert out.town in TOWNS
    assert out.topic == topic
    _keepable(out, payload)
    return out


def _keepable(message: Message, payload: bytes) -> None:
    """What the operations center does with an accepted message: the store
    keeps its payload as UTF-8 text and reads it back with `parse`; the API
    and the service encode it again."""
    assert messages.parse(message.topic, payload.decode("utf-8")) == message
    assert messages.parse(message.topic, message.to_json()) == message
    json.dumps(message.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")


def parsed(topic: str, payload: bytes) -> Message | MessageError:
    """`messages.parse`, with its property checked."""
    try:
        message = messages.parse(topic, payload)
    except MessageError as exc:
        error = exc
    else:
        assert message.topic == topic
        return message
    assert error.topic == topic  # every problem names the topic it came on
    assert error.problem
    return error


# --- properties ----------------------------------------------------------------


def test_the_valid_messages_are_accepted() -> None:
    for message in VALID:
        assert accepted(message.topic, message.to_json()) == message


@FUZZ
@given(topics, payloads)
def test_any_topic_and_payload_give_a_message_or_a_rejection(topic: str, payload: bytes) -> None:
    accepted(topic, payload)
    parsed(topic, payload)


@settings(FUZZ, max_examples=200)
@given(mutated())
def test_a_mutated_message_gives_a_message_or_a_rejection(sent: tuple[str, bytes]) -> None:
    topic, payload = sent
    out, message = accepted(topic, payload), parsed(topic, payload)
    # The operations center accepts what the contract's reader accepts.
    assert out == message if isinstance(message, Message) else isinstance(out, Rejected)


@FUZZ
@given(st.sampled_from(VALID), json_values)
def test_any_json_on_a_valid_topic_gives_a_message_or_a_rejection(
    message: Message, value: JSON
) -> None:
    payload = json.dumps(value).encode()
    accepted(message.topic, payload)
    parsed(message.topic, payload)


# --- regressions found by the properties above ---------------------------------

TOPIC = "netwatch/v1/nishiki/state"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 60_000, Reason.MALFORMED_JSON),  # was RecursionError
        (b"1" * 5_000, Reason.MALFORMED_JSON),  # was ValueError (int digits limit)
        (b'{"schema": ' + b"1" * 5_000 + b"}", Reason.MALFORMED_JSON),  # was ValueError
        (state().to_json().decode().encode("utf-16"), Reason.MALFORMED_JSON),  # was accepted
        (state().to_json().decode().encode("utf-8-sig"), Reason.MALFORMED_JSON),  # was accepted
    ],
)
def test_payloads_json_cannot_read_are_malformed(payload: bytes, reason: Reason) -> None:
    out = check(TOPIC, payload, TOWNS)
    assert isinstance(out, Rejected)
    assert out.reason is reason
    with pytest.raises(MessageError, match="payload is not JSON"):
        messages.parse(TOPIC, payload)


@pytest.mark.parametrize(
    "field",
    ["reason", "details"],
)
def test_a_lone_surrogate_is_refused_as_invalid(field: str) -> None:
    # "\ud800" is valid JSON, but no UTF-8 can carry it: accepted, it made
    # every later encoding of the message (the API's answers) fail.
    data: dict[str, Any] = event().to_dict()
    data[field] = "\ud800 down" if field == "reason" else {"kind": "\ud800"}
    payload = json.dumps(data).encode()
    out = check(event().topic, payload, TOWNS)
    assert isinstance(out, Rejected)
    assert out.reason is Reason.INVALID
    assert field in out.detail
