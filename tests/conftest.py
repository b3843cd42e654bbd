"""The running local stack, for every test marked ``integration``.

The ``stack`` fixture reuses a stack that is already up (``make up`` then only waits until it is
ready), or starts one with ``make up`` and stops it with ``make down`` when the session ends,
unless ``REGIONSTORE_KEEP_STACK=1``. With ``REGIONSTORE_STACK=external`` nothing is started:
the endpoints in the environment are used as they are and process control is skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.stack import EXTERNAL, REPO_ROOT, Endpoints, Stack

KEEP_STACK = os.environ.get("REGIONSTORE_KEEP_STACK") == "1"
# Inside pytest-timeout's 300 s per test, so that `make up` reports what is not ready first.
UP_TIMEOUT_S = os.environ.get("UP_TIMEOUT", "240")


def _make(target: str) -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=REPO_ROOT,
        env={**os.environ, "UP_TIMEOUT": UP_TIMEOUT_S},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"make {target} failed:\n{result.stdout}{result.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The local stack, up and ready."""
    running = Stack(Endpoints.from_env())
    if EXTERNAL:
        yield running
        return
    started_here = not running.api_answers()
    try:
        _make("up")
        yield running
    finally:
        if started_here and not KEEP_STACK:
            _make("down")


@pytest.fixture(autouse=True)
def _stack_for_integration_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("integration"):
        request.getfixturevalue("stack")
