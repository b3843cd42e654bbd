"""deploy/compose.local-images.yaml: the override that runs deploy/compose.yaml with images built
here, and compose.ci-ports.env, which moves its published ports (make test-docker uses both)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.compose.test_compose_file import (
    COMPOSE_FILE,
    DEPLOY,
    compose,  # noqa: F401 (the fixture)
    compose_env,
)

OVERRIDE = DEPLOY / "compose.local-images.yaml"
CI_PORTS = DEPLOY / "compose.ci-ports.env"
LOCAL_IMAGES = {
    "regionstore:dev",
    "regionstore-kafka:local",
    "regionstore-redis:local",
    "regionstore-store:local",
}
# The ports of the local stack and of other helpers' stacks stay clear of these.
CI_PORT_RANGE = range(30000, 31001)


@pytest.fixture(scope="module")
def services(compose: list[str]) -> dict[str, dict[str, Any]]:  # noqa: F811
    result = subprocess.run(
        [
            *compose,
            *("--env-file", str(CI_PORTS), "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE)),
            *("config", "--format", "json"),
        ],
        capture_output=True,
        text=True,
        env=compose_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, dict[str, Any]] = json.loads(result.stdout)["services"]
    return found


def test_every_image_is_one_built_here_and_never_pulled(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        assert service["image"] in LOCAL_IMAGES, name
        assert service.get("pull_policy") == "never", name


def test_each_region_is_one_store_in_its_first_members_place(
    services: dict[str, dict[str, Any]],
) -> None:
    stores = sorted(n for n, s in services.items() if s["image"] == "regionstore-store:local")

    # The three stores and the three one-shots the services still wait for.
    assert stores == sorted(
        [f"mongo-r{n}a" for n in (1, 2, 3)] + [f"mongo-r{n}-init" for n in (1, 2, 3)]
    )
    for n in (1, 2, 3):
        store = services[f"mongo-r{n}a"]
        assert [m["type"] for m in store["volumes"] if m["target"] == "/data/db"] == ["volume"]
        assert store["healthcheck"]["test"][0] == "CMD"
        assert {s["source"] for s in store["secrets"]} == {"mongo_root_password", "store_password"}
        init = services[f"mongo-r{n}-init"]["depends_on"]
        assert {k: v["condition"] for k, v in init.items()} == {f"mongo-r{n}a": "service_healthy"}
        for app in ("gateway", "writer", "replicator", "recovery"):
            uri = services[app]["environment"][f"REGIONSTORE_STORES__REGION_{n}"]
            assert uri == f"mongodb://mongo-r{n}a:27017/?directConnection=true", app


def test_replica_set_members_and_the_unbuilt_monitoring_do_not_run(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("mongo-r1b", "mongo-r2c", "prometheus", "grafana", "metrics-key"):
        assert name not in services


def test_the_ci_ports_move_every_published_port_into_their_range(
    services: dict[str, dict[str, Any]],
) -> None:
    published = [int(port["published"]) for s in services.values() for port in s.get("ports", [])]

    assert len(published) == 12  # 4 services, 3 brokers, 2 Redis, 3 stores
    assert len(set(published)) == len(published)
    assert all(port in CI_PORT_RANGE for port in published), published
