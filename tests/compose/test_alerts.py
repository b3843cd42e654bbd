"""The alert rules (deploy/prometheus/alerts.yml), checked and unit-tested by Prometheus's own
promtool, which tests/compose/install-tools.sh builds from its Go module (``make test-tools``).

promtool runs every test of alerts.test.yml; the tests here also hold the rules to what the
project promises: every alert is tested firing and quiet, links to its runbook section, only
queries metrics the code exports, and is loaded by compose's Prometheus. A missing promtool
fails the tests: a checker that is not there checks nothing.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from tests.dashboards import ALERTS_FILE as RULES_FILE
from tests.dashboards import alert_metric_names, alert_rules, exported_names, unexported

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
TESTS_FILE = PROMETHEUS_DIR / "alerts.test.yml"
PROMETHEUS_FILE = PROMETHEUS_DIR / "prometheus.yml"
COMPOSE_FILE = REPO_ROOT / "deploy" / "compose.yaml"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
TOOLS_DIR = Path(
    os.environ.get("REGIONSTORE_TOOLS_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "regionstore" / "tools"
)
INSTALL_HINT = "run `make test-tools` (tests/compose/install-tools.sh builds promtool with Go)"


@pytest.fixture(scope="session")
def promtool() -> Path:
    path = TOOLS_DIR / "promtool"
    if not path.is_file():
        pytest.fail(f"promtool is not installed in {TOOLS_DIR}: {INSTALL_HINT}")
    return path


def run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, check=False, timeout=120
    )


class TestPromtool:
    def test_the_rules_are_valid(self, promtool: Path) -> None:
        checked = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES_FILE))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"SUCCESS: {len(alert_rules(RULES_FILE))} rules found" in checked.stdout

    def test_every_unit_test_of_the_rules_passes(self, promtool: Path) -> None:
        tested = run(promtool, "test", "rules", str(TESTS_FILE))
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "SUCCESS" in tested.stdout

    def test_a_wrong_expectation_fails(self, promtool: Path, tmp_path: Path) -> None:
        # The tests above are worth what promtool's failures are: one wrong summary fails.
        tests = TESTS_FILE.read_text().replace("for 2 min", "for 3 min")
        broken = tmp_path / "alerts.test.yml"
        broken.write_text(tests.replace("  - alerts.yml", f"  - {RULES_FILE}"))
        tested = run(promtool, "test", "rules", str(broken))
        assert tested.returncode != 0
        assert "RegionstoreTargetDown" in tested.stdout + tested.stderr


class TestCoverage:
    def test_every_alert_is_tested_firing_and_quiet(self) -> None:
        loaded: dict[str, Any] = yaml.safe_load(TESTS_FILE.read_text())
        firing: set[str] = set()
        quiet: set[str] = set()
        for test in loaded["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
        alerts = {rule["alert"] for rule in alert_rules(RULES_FILE)}
        assert alerts - firing == set(), "alerts no test fires"
        assert alerts - quiet == set(), "alerts no test shows quiet"
        assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"

    def test_every_alert_links_to_its_runbook_section(self) -> None:
        headings = re.findall(r"^## (\S+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
        anchors = {heading.lower() for heading in headings}
        for rule in alert_rules(RULES_FILE):
            url = rule["annotations"]["runbook_url"]
            assert url == f"docs/runbooks.md#{rule['alert'].lower()}", rule["alert"]
            assert rule["alert"].lower() in anchors, f"no section {rule['alert']} in runbooks.md"
        assert sorted(headings) == sorted(rule["alert"] for rule in alert_rules(RULES_FILE))

    def test_every_alert_has_a_severity_and_a_summary(self) -> None:
        for rule in alert_rules(RULES_FILE):
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]

    def test_the_rules_query_only_metrics_the_services_export(self) -> None:
        # Importing the services registers every metric they define.
        for module in ("regionstore_gateway.main", "regionstore_recovery.main"):
            importlib.import_module(module)
        exported = exported_names(generate_latest(REGISTRY).decode())
        used = alert_metric_names()
        assert "regionstore_pending_oldest_age_seconds" in used
        assert unexported(used, exported) == set()


class TestLoaded:
    def test_compose_s_prometheus_loads_the_rules(self) -> None:
        config: dict[str, Any] = yaml.safe_load(PROMETHEUS_FILE.read_text())
        compose: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
        mounts = compose["services"]["prometheus"]["volumes"]
        rules_path = f"/etc/prometheus/{RULES_FILE.name}"
        assert rules_path in config["rule_files"]
        assert f"./prometheus/{RULES_FILE.name}:{rules_path}:ro" in mounts
