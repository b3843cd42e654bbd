"""The alert rules: well formed, loaded by the compose Prometheus, about metrics that exist.

No stack needed: the files are read as YAML (promtool is not built here), and the metric names
are checked against those the gateway's modules register. That a running gateway really exports
them is proved in tests/integration/test_dashboard_metrics.py.
"""

from __future__ import annotations

import importlib
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from tests.dashboards import (
    PROMETHEUS_FILE,
    RULES_DIR,
    alert_rules,
    exported_names,
    metric_names,
    unexported,
)

COMPOSE_FILE = RULES_DIR.parents[1] / "compose.yaml"
GATEWAY_METRIC_MODULES = (
    "regionstore_gateway.adapters.redis_budget",
    "regionstore_gateway.services.backpressure",
)
SEVERITIES = ("warning", "critical")


def rules_files() -> list[Path]:
    """The rules of deploy/prometheus/rules/ (alerts.yml has its own tests, with promtool)."""
    return sorted(RULES_DIR.glob("*.yml"))


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    found = alert_rules(*rules_files())
    assert found, f"no alerting rules in {RULES_DIR}"
    return found


def test_every_rule_says_what_fired_and_how_bad_it_is(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        assert rule["alert"].startswith("Regionstore"), rule["alert"]
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_alert_names_are_unique(rules: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))


def test_the_compose_prometheus_loads_every_rules_file() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    mounted = {
        PurePosixPath(volume.split(":")[1]): volume.split(":")[0]
        for volume in compose["services"]["prometheus"]["volumes"]
        if volume.startswith("./")
    }
    for path in sorted(RULES_DIR.glob("*.yml")):
        inside = [
            target / path.name
            for target, source in mounted.items()
            if (COMPOSE_FILE.parent / source).resolve() == RULES_DIR.resolve()
        ]
        assert inside, f"{RULES_DIR} is not mounted into the prometheus service"
        assert any(fnmatch(str(inside[0]), pattern) for pattern in config["rule_files"]), path


def test_every_metric_a_rule_queries_is_registered_by_the_gateway() -> None:
    for module in GATEWAY_METRIC_MODULES:
        importlib.import_module(module)
    exported = exported_names(generate_latest(REGISTRY).decode())

    used = {name for rule in alert_rules(*rules_files()) for name in metric_names(rule["expr"])}
    assert unexported(used, exported) == set()
