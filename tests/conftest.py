"""Shared fixtures.  `lab`: the whole four-town lab, built once per test
module that asks for it (network namespaces, emulated links, the reference
application, Mosquitto) and removed afterwards, also when a test fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labtools import Lab, build_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from build_lab(tmp_path_factory)
