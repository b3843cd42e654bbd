"""The container-kill round reads each container's State as the chaos round reads a process of
the local stack (tests/docker/containers.py): running, and ready once its healthcheck passes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.docker.containers import as_process


def state(status: str, *, health: str | None, running: bool = True) -> dict[str, Any]:
    found: dict[str, Any] = {
        "Status": status,
        "Running": running,
        "Restarting": status == "restarting",
        "Pid": 4242 if running else 0,
    }
    if health is not None:
        found["Health"] = {"Status": health, "FailingStreak": 0}
    return found


def test_a_healthy_running_container_is_a_ready_running_process() -> None:
    process = as_process(state("running", health="healthy"))

    assert process == {
        "status": "Running",
        "pid": 4242,
        "has_ready_probe": True,
        "is_ready": "Ready",
    }


@pytest.mark.parametrize("health", ["starting", "unhealthy"])
def test_a_container_whose_healthcheck_has_not_passed_is_not_ready(health: str) -> None:
    process = as_process(state("running", health=health))

    assert process["status"] == "Running"
    assert process["is_ready"] == "Not Ready"


@pytest.mark.parametrize(
    ("status", "running"), [("exited", False), ("restarting", True), ("created", False)]
)
def test_a_container_that_is_not_up_is_not_running(status: str, running: bool) -> None:
    assert as_process(state(status, health="healthy", running=running))["status"] != "Running"


def test_a_container_without_a_healthcheck_has_no_ready_probe() -> None:
    assert as_process(state("running", health=None))["has_ready_probe"] is False
