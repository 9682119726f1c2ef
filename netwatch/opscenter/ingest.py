"""Every message from the broker is checked here before it touches the
fleet: pure, one function, one reason per rejection.

The checks, in order (the first that fails names the reason):

    too_large       payload over the size limit (not even decoded)
    empty           a zero-length payload (a retained message being cleared)
    bad_topic       not netwatch/v1/<town>/<state|events|metrics|online|drill>
    unknown_town    the topic's town is not in the topology
    malformed_json  not UTF-8 JSON
    schema          no `schema`, or a version this service does not speak
    town_mismatch   the payload's town is not the topic's
    invalid         anything else the contract (netwatch.messages) refuses
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass

from netwatch import messages
from netwatch.messages import Message, MessageError
from netwatch.topology.ids import is_id

MAX_PAYLOAD_BYTES = 64 * 1024  # a state of a town with a few paths is ~1 KiB


class Reason(enum.StrEnum):
    TOO_LARGE = "too_large"
    EMPTY = "empty"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_TOWN = "unknown_town"
    MALFORMED_JSON = "malformed_json"
    SCHEMA = "schema"
    TOWN_MISMATCH = "town_mismatch"
    INVALID = "invalid"


@dataclass(frozen=True)
class Rejected:
    reason: Reason
    town: str | None  # the topic's town, when the topic has one
    detail: str


def check(
    topic: str,
    payload: bytes,
    towns: Collection[str],
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> Message | Rejected:
    """The message, or why it is refused."""
    town = _topic_town(topic)
    if len(payload) > max_bytes:
        return Rejected(Reason.TOO_LARGE, town, f"{len(payload)} bytes > {max_bytes}")
    if not payload:
        return Rejected(Reason.EMPTY, town, "empty payload")
    try:
        town, _ = messages.split_topic(topic)
    except MessageError as exc:
        return Rejected(Reason.BAD_TOPIC, None, str(exc))
    if town not in towns:
        return Rejected(Reason.UNKNOWN_TOWN, town, f"{town!r} is not a town of the topology")
    try:
        data = messages.load_json(payload)
    except MessageError as exc:
        return Rejected(Reason.MALFORMED_JSON, town, str(exc))
    schema = data.get("schema") if isinstance(data, dict) else None
    if type(schema) is not int or schema != messages.SCHEMA:  # type(): true is not 1
        got = schema if isinstance(data, dict) else type(data).__name__
        return Rejected(Reason.SCHEMA, town, f"schema {got!r}, expected {messages.SCHEMA}")
    if data.get("town") != town:
        return Rejected(Reason.TOWN_MISMATCH, town, f"payload town {data.get('town')!r}")
    try:
        return messages.decode(topic, data)
    except MessageError as exc:
        return Rejected(Reason.INVALID, town, str(exc))


def _topic_town(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[2] if len(parts) == 4 and is_id(parts[2]) else None
