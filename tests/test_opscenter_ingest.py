"""Every message is checked before it touches the fleet: one reason each."""

from __future__ import annotations

import json

import pytest
from opscenter_data import event, state

from netwatch.messages import StateMessage
from netwatch.opscenter.ingest import Reason, Rejected, check

TOWNS = {"nishiki", "tsuno"}
TOPIC = "netwatch/v1/nishiki/state"


def reason(topic: str, payload: bytes, **kw: int) -> Reason | None:
    out = check(topic, payload, TOWNS, **kw)
    return out.reason if isinstance(out, Rejected) else None


def test_a_good_state_is_accepted() -> None:
    msg = state()
    assert check(TOPIC, msg.to_json(), TOWNS) == msg


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        (TOPIC, b"{not json", Reason.MALFORMED_JSON),
        (TOPIC, b"\xff\xfe", Reason.MALFORMED_JSON),
        (TOPIC, b"", Reason.EMPTY),
        (TOPIC, b"[1, 2]", Reason.SCHEMA),
        (TOPIC, json.dumps({**state().to_dict(), "schema": 2}).encode(), Reason.SCHEMA),
        (TOPIC, json.dumps({**state().to_dict(), "schema": True}).encode(), Reason.SCHEMA),
        ("netwatch/v1/tsuno/state", state().to_json(), Reason.TOWN_MISMATCH),
        ("netwatch/v1/nowhere/state", state(town="nowhere").to_json(), Reason.UNKNOWN_TOWN),
        ("netwatch/v1/nishiki/gossip", state().to_json(), Reason.BAD_TOPIC),
        ("netwatch/v2/nishiki/state", state().to_json(), Reason.BAD_TOPIC),
        (TOPIC, event().to_json(), Reason.INVALID),  # an event on the state topic
        (TOPIC, json.dumps({**state().to_dict(), "extra": 1}).encode(), Reason.INVALID),
    ],
)
def test_each_bad_message_has_its_reason(topic: str, payload: bytes, expected: Reason) -> None:
    assert reason(topic, payload) is expected


def test_an_oversized_payload_is_refused_before_it_is_decoded() -> None:
    payload = b"{" + b" " * 2000 + b"}"
    assert reason(TOPIC, payload, max_bytes=1000) is Reason.TOO_LARGE
    out = check(TOPIC, payload, TOWNS, max_bytes=1000)
    assert isinstance(out, Rejected)
    assert out.town == "nishiki"


def test_a_rejection_names_the_topics_town_only_when_it_is_an_id() -> None:
    out = check("netwatch/v1/NOT A TOWN/state", b"{}", TOWNS)
    assert isinstance(out, Rejected)
    assert out.town is None


def test_accepted_messages_are_typed() -> None:
    out = check(TOPIC, state(active="backup").to_json(), TOWNS)
    assert isinstance(out, StateMessage)
    assert out.active_path == "backup"
