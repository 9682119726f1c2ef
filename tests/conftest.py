"""Shared fixtures.  `lab`: the whole four-town lab, built once per test
module that asks for it (network namespaces, emulated links, the reference
application, Mosquitto) and removed afterwards, also when a test fails.
`lab_keeper`: the one lab with agents that the monitoring and operations
center modules share (see `labtools.LabKeeper`).

Lab tests share the nw-* namespaces and time the network: they run in one
process, one at a time.  Under pytest-xdist with more than one worker
(`-n`), each fails at once instead of racing another worker for the lab;
`./scripts/test` runs the unit tests in parallel and the lab tests after
them, in one process."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from labtools import KEEPER, Lab, LabKeeper, build_lab


def pytest_runtest_setup(item: pytest.Item) -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and item.get_closest_marker("lab") is not None:
        pytest.fail(
            f"lab tests run in one process, not over {workers} xdist workers "
            "(they share the lab's namespaces): run them with `-m lab` and no -n",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def lab_keeper() -> Iterator[LabKeeper]:
    try:
        yield KEEPER
    finally:
        KEEPER.release()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from build_lab(tmp_path_factory)
