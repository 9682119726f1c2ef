"""Content checks of the terminal's workflow: pure functions over decoded
answers, each returning None when the answer is right, else the reason.

They live apart from the Locust user (terminal.py) so that they can be
tested, and reused, without importing Locust and gevent. The certificate's
check is in pdfcheck.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resident:
    """The resident a terminal is working on: from the search, checked in the record."""

    resident_id: str
    family_name: str
    given_name: str


def katakana(text: str) -> str:
    """Hiragana to katakana (the ledger's readings are katakana)."""
    return "".join(chr(ord(c) + 0x60) if "ぁ" <= c <= "ゖ" else c for c in text)


def check_search(body: Any, kana: str) -> str | None:
    """A kana search must find someone, and only residents whose reading starts so."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        return "search answer has no items"
    if not body["items"] or not body.get("total"):
        return f"no resident found for {kana}"
    prefix = katakana(kana)
    for item in body["items"]:
        if not isinstance(item, dict):
            return "search item is not an object"
        reading = katakana(f"{item.get('family_kana', '')}{item.get('given_kana', '')}")
        if not reading.startswith(prefix):
            return f"search for {kana} returned {item.get('family_kana')} {item.get('given_kana')}"
    return None


def check_record(body: Any, wanted: Resident, town: str) -> str | None:
    """The record opened must be the resident chosen, of the terminal's own town."""
    if not isinstance(body, dict):
        return "record is not an object"
    got = (body.get("resident_id"), body.get("family_name"), body.get("given_name"))
    if got != (wanted.resident_id, wanted.family_name, wanted.given_name):
        return f"asked for {wanted.resident_id}, got {got[0]} {got[1]} {got[2]}"
    if body.get("town") != town:
        return f"resident of {body.get('town')}, not {town}"
    return None


def check_batch_result(body: Any, population: int) -> str | None:
    """A tax recalculation must count every resident of the town."""
    if not isinstance(body, dict):
        return "batch result is not an object"
    rows = body.get("rows_processed")
    if rows != population:
        return f"batch counted {rows} rows, the town has {population} residents"
    taxpayers = body.get("taxpayers")
    if not isinstance(taxpayers, int) or not 0 <= taxpayers <= population:
        return f"batch reports {taxpayers} taxpayers of {population} residents"
    return None


def check_health(body: Any) -> str | None:
    if not isinstance(body, dict):
        return f"health answer is not an object: {body!r}"
    if body.get("status") != "ok":
        return f"health is {body.get('status')}"
    return None
