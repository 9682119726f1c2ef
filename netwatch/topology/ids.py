"""The id rule: towns, paths, networks and nodes are named by ids of 1-12
lowercase ASCII letters, digits or '-', starting with a letter.  They become
MQTT topic levels, Prometheus label values and namespace names
(``nw-<node>``, 15 characters at most), so topology.yaml and the MQTT
contract check them by this one rule."""

from __future__ import annotations

import re

MAX_ID_LEN = 12
ID_RE = re.compile(rf"[a-z][a-z0-9-]{{0,{MAX_ID_LEN - 1}}}")


def is_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def id_problem(value: object) -> str | None:
    """Why `value` is not an id (None when it is one)."""
    if is_id(value):
        return None
    if isinstance(value, str) and is_id(value.lower()):
        return f"expected a lowercase id (letters, digits, '-'), got {value!r}"
    return f"expected an id of 1-{MAX_ID_LEN} lowercase letters, digits or '-', got {value!r}"
