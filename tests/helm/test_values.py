"""Values the chart refuses at render time, each with a message that names the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helm.chart import template, values

REQUIRED = [
    ("regions", "regions is required"),
    ("secrets.kafka.name", "secrets.kafka.name is required"),
    ("secrets.redis.name", "secrets.redis.name is required"),
    ("secrets.idempotencyRedis.name", "secrets.idempotencyRedis.name is required"),
    ("secrets.store.name", "secrets.store.name is required"),
    ("secrets.auth.name", "secrets.auth.name is required"),
]


def without(chart_values: dict[str, Any], dotted: str) -> dict[str, Any]:
    *parents, last = dotted.split(".")
    node = chart_values
    for key in parents:
        node = node[key]
    del node[last]
    return chart_values


@pytest.mark.parametrize(("missing", "message"), REQUIRED, ids=[name for name, _ in REQUIRED])
def test_a_missing_required_value_fails_naming_it(
    tmp_path: Path, missing: str, message: str
) -> None:
    result = template(without(values(), missing), tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_an_empty_region_map_is_missing_too(tmp_path: Path) -> None:
    result = template(values() | {"regions": []}, tmp_path)
    assert result.returncode != 0
    assert "regions is required" in result.stderr


CONTRADICTIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "more gateways than clock ids",
        {"gateway": {"autoscaling": {"maxReplicas": 64}, "maxSurge": 1}},
        "gateway.autoscaling.maxReplicas + gateway.maxSurge is 65",
    ),
    (
        "more writers than partitions",
        {"writer": {"autoscaling": {"maxReplicas": 7}}},
        "writer.autoscaling.maxReplicas is 7, above kafka.partitions (6)",
    ),
    (
        "fewer partitions than consumers at least",
        {"kafka": {"partitions": 1}},
        "writer.autoscaling.minReplicas is above its maxReplicas",
    ),
    (
        "a replica that is no region",
        {"regions": [{"name": "north", "zip_min": 0, "zip_max": 10, "replicas": ["south"]}]},
        "regions: north replicates to south, which is not a region",
    ),
    (
        "overlapping zip ranges",
        {
            "regions": [
                {"name": "north", "zip_min": 0, "zip_max": 50, "replicas": ["south"]},
                {"name": "south", "zip_min": 40, "zip_max": 99, "replicas": ["north"]},
            ]
        },
        "the zip ranges of north and south overlap",
    ),
    (
        "a region named twice",
        {
            "regions": [
                {"name": "north", "zip_min": 0, "zip_max": 5, "replicas": []},
                {"name": "north", "zip_min": 6, "zip_max": 9, "replicas": []},
            ]
        },
        "regions: north is listed twice",
    ),
    (
        "a region name the services refuse",
        {"regions": [{"name": "North-1", "zip_min": 0, "zip_max": 5, "replicas": []}]},
        "/regions/0/name",
    ),
    (
        "a secret among the settings",
        {"settings": {"REGIONSTORE_REDIS__PASSWORD": "hunter2"}},
        "settings.REGIONSTORE_REDIS__PASSWORD is a secret",
    ),
    (
        "a setting the chart owns",
        {"settings": {"REGIONSTORE_KAFKA__PARTITIONS": "12"}},
        "settings.REGIONSTORE_KAFKA__PARTITIONS is set by the chart",
    ),
    (
        "a Secret named as a Kafka user",
        {"secrets": {"kafka": {"name": "regionstore"}}},
        "secrets.kafka.name: regionstore is the name of a Kafka user",
    ),
    (
        "more topic replicas than brokers",
        {"kafka": {"replicas": 1}},
        "kafka.replicationFactor is 3, above kafka.replicas (1)",
    ),
    ("a misspelt value", {"gateway": {"autoscalling": {}}}, "autoscalling"),
]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [case[1:] for case in CONTRADICTIONS],
    ids=[case[0] for case in CONTRADICTIONS],
)
def test_contradictory_values_fail_naming_the_value(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    result = template(values(**overrides), tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
