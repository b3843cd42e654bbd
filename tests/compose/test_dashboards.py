"""The Grafana dashboard, its provisioning, the Prometheus config, and how compose runs both.

No stack needed: the dashboard and the provisioning files are read as files, the compose file
through `docker compose config` (as in test_compose_file.py), and the Prometheus config as YAML
(promtool is not built here: it takes longer than the compose tools). Whether every metric the
dashboard queries is really exported is proved against the running services in
tests/integration/test_dashboard_metrics.py; here it is checked against the metrics the
services' modules register.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from tests.dashboards import (
    DASHBOARD_FILE,
    DASHBOARDS,
    DATASOURCES_FILE,
    GRAFANA,
    PROMETHEUS_FILE,
    PROVIDERS_FILE,
    SCRAPE_SERIES,
    Panel,
    dashboard_metric_names,
    exported_names,
    load_dashboard,
    metric_names,
    panels,
    unexported,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "deploy" / "compose.yaml"
APP_SERVICES = ("gateway", "writer", "replicator", "recovery")
QUANTILES = ("0.5", "0.95", "0.99")
HISTOGRAMS = (
    "regionstore_http_request_duration_seconds",
    "regionstore_apply_lag_seconds",
    "regionstore_batch_apply_seconds",
)
METRIC_MODULES = (
    "regionstore_shared.metrics",
    "regionstore_gateway.edge.request_metrics",
    "regionstore_gateway.adapters.command_topic",
    "regionstore_recovery.drainer",
)
# What an operator must be able to see, by the metric that shows it.
NEEDED = {
    "regionstore_http_requests_total": "gateway requests by route and status, and 5xx",
    "regionstore_commands_published_total": "commands accepted by Kafka",
    "regionstore_commands_applied_total": "applied per region and role",
    "regionstore_consumer_lag_messages": "consumer lag",
    "regionstore_pending_backlog_messages": "parked, not yet replayed, per region",
    "regionstore_drained_messages_total": "drain rate",
    "regionstore_store_errors_total": "apply failures",
    "regionstore_commands_deadlettered_total": "dead letters",
    "regionstore_kafka_errors_total": "Kafka failures",
}

Service = dict[str, Any]


def read_yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    (only,) = read_yaml(DATASOURCES_FILE)["datasources"]
    found: dict[str, Any] = only
    return found


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return read_yaml(PROMETHEUS_FILE)


@pytest.fixture(scope="module")
def jobs(prometheus_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in prometheus_config["scrape_configs"]}


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail("the docker CLI is needed: run `bash tests/compose/install-tools.sh`")
    # Only what compose needs to find its plugin, as in test_compose_file.py.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "DOCKER_CONFIG") if key in os.environ}
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, Service] = json.loads(result.stdout)["services"]
    return found


def mounts(service: Service) -> dict[str, dict[str, Any]]:
    """Bind mounts by their path in the container."""
    return {volume["target"]: volume for volume in service.get("volumes", [])}


def host_path(service: Service, container_path: str) -> Path:
    """Where a path inside the container comes from on the host, through its bind mounts."""
    wanted = PurePosixPath(container_path)
    for target, volume in mounts(service).items():
        if wanted == PurePosixPath(target) or PurePosixPath(target) in wanted.parents:
            return Path(volume["source"]) / wanted.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted into the container")


def secret_paths(service: Service) -> set[str]:
    """The files compose secrets appear as inside the container."""
    paths = set()
    for secret in service.get("secrets", []):
        target = secret.get("target") or secret["source"]
        paths.add(target if target.startswith("/") else f"/run/secrets/{target}")
    return paths


def overlaps(a: Panel, b: Panel) -> bool:
    ga, gb = a["gridPos"], b["gridPos"]
    return bool(
        ga["x"] < gb["x"] + gb["w"]
        and gb["x"] < ga["x"] + ga["w"]
        and ga["y"] < gb["y"] + gb["h"]
        and gb["y"] < ga["y"] + ga["h"]
    )


class TestMetricNames:
    """The small PromQL reader the dashboard tests rely on."""

    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            pytest.param(
                'sum by (route, status) (rate(a_total{route!~"/x|/y", b="c"}[$__rate_interval]))',
                {"a_total"},
                id="aggregation-with-matchers-and-a-grafana-range",
            ),
            pytest.param(
                "histogram_quantile(0.99, sum by (le, role) (rate(d_seconds_bucket[5m])))",
                {"d_seconds_bucket"},
                id="quantile",
            ),
            pytest.param(
                "max(e_messages) by (region) / ignoring(region) group_left f_total offset 1h",
                {"e_messages", "f_total"},
                id="binary-operation",
            ),
            pytest.param('up{job=~"gateway|writer"} == 1 and on(job) g', {"up", "g"}, id="and"),
            pytest.param("rate(h_total[5m:30s]) * 1e3", {"h_total"}, id="subquery-and-number"),
            pytest.param('{__name__="i_total"}', set(), id="no-bare-name"),
            pytest.param('label_replace(j, "dst", "$1", "src", "(.*)")', {"j"}, id="strings"),
        ],
    )
    def test_finds_the_metrics_of_an_expression(self, expression: str, expected: set[str]) -> None:
        assert metric_names(expression) == expected


class TestDashboard:
    def test_is_a_dashboard_with_a_uid_and_panels(self, dashboard: dict[str, Any]) -> None:
        assert dashboard["uid"] == "regionstore"
        assert dashboard["title"]
        assert list(panels(dashboard))

    def test_every_panel_queries_the_provisioned_datasource(
        self, dashboard: dict[str, Any], datasource: dict[str, Any]
    ) -> None:
        expected = {"type": "prometheus", "uid": datasource["uid"]}

        for panel in panels(dashboard):
            assert panel.get("datasource") == expected, panel["title"]
            for target in panel["targets"]:
                assert target.get("datasource", expected) == expected, panel["title"]

    def test_every_panel_has_a_query(self, dashboard: dict[str, Any]) -> None:
        for panel in panels(dashboard):
            assert panel.get("targets"), panel["title"]
            for target in panel["targets"]:
                assert target.get("expr"), panel["title"]
                assert metric_names(target["expr"]), (panel["title"], target["expr"])

    def test_panel_ids_and_target_refs_are_unique(self, dashboard: dict[str, Any]) -> None:
        ids = [panel["id"] for panel in panels(dashboard)]

        assert len(ids) == len(set(ids))
        for panel in panels(dashboard):
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]

    def test_panels_do_not_overlap(self, dashboard: dict[str, Any]) -> None:
        laid_out = list(panels(dashboard))

        for i, panel in enumerate(laid_out):
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
            for other in laid_out[i + 1 :]:
                assert not overlaps(panel, other), (panel["title"], other["title"])

    @pytest.mark.parametrize("metric", list(NEEDED))
    def test_shows_what_an_operator_needs(self, dashboard: dict[str, Any], metric: str) -> None:
        assert metric in dashboard_metric_names(dashboard), NEEDED[metric]

    def test_shows_gateway_5xx(self, dashboard: dict[str, Any]) -> None:
        exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]

        assert any(
            "regionstore_http_requests_total" in expr and 'status=~"5.."' in expr for expr in exprs
        )

    @pytest.mark.parametrize("histogram", HISTOGRAMS)
    def test_latency_is_p50_p95_p99_of_the_histogram(
        self, dashboard: dict[str, Any], histogram: str
    ) -> None:
        quantile = re.compile(
            r"histogram_quantile\(\s*([\d.]+)\s*,\s*sum by \(([^)]*)\)\s*\(rate\("
            + re.escape(histogram)
            + r"_bucket\b"
        )
        found = {
            match.group(1)
            for panel in panels(dashboard)
            for target in panel["targets"]
            if (match := quantile.search(target["expr"]))
            and "le" in [label.strip() for label in match.group(2).split(",")]
        }

        assert set(QUANTILES) <= found

    def test_every_metric_it_queries_is_registered_by_a_service(
        self, dashboard: dict[str, Any]
    ) -> None:
        # The modules that define the services' metrics, all in this one process's registry.
        for module in METRIC_MODULES:
            importlib.import_module(module)
        exported = exported_names(generate_latest(REGISTRY).decode())

        assert unexported(dashboard_metric_names(dashboard), exported) == set()

    def test_only_the_scrape_series_come_from_prometheus(self, dashboard: dict[str, Any]) -> None:
        # The integration test would let any such name pass: keep the list to what is used.
        used = dashboard_metric_names(dashboard)

        assert {name for name in used if not name.startswith("regionstore_")} <= SCRAPE_SERIES


class TestGrafanaProvisioning:
    def test_the_datasource_is_the_compose_prometheus(
        self, datasource: dict[str, Any], services: dict[str, Service]
    ) -> None:
        assert datasource["type"] == "prometheus"
        assert datasource["access"] == "proxy"
        host, _, port = datasource["url"].removeprefix("http://").partition(":")
        assert host in services
        assert services[host]["image"].startswith("prom/prometheus:")
        assert int(port) == 9090

    def test_the_dashboards_are_mounted_where_the_provider_reads(
        self, services: dict[str, Service]
    ) -> None:
        (provider,) = read_yaml(PROVIDERS_FILE)["providers"]

        source = host_path(services["grafana"], provider["options"]["path"])

        assert source == DASHBOARDS
        assert DASHBOARD_FILE in source.glob("*.json")

    def test_grafana_reads_the_provisioning_files_read_only(
        self, services: dict[str, Service]
    ) -> None:
        grafana = services["grafana"]
        for provisioned in (DATASOURCES_FILE, PROVIDERS_FILE):
            container = "/etc/grafana/provisioning/" + str(
                provisioned.relative_to(GRAFANA / "provisioning")
            )
            assert host_path(grafana, container) == provisioned

        for volume in mounts(grafana).values():
            if volume["type"] == "bind":
                assert volume.get("read_only") is True, volume["target"]


class TestPrometheusConfig:
    def test_compose_mounts_it_read_only(self, services: dict[str, Service]) -> None:
        prometheus = services["prometheus"]

        assert host_path(prometheus, "/etc/prometheus/prometheus.yml") == PROMETHEUS_FILE
        assert mounts(prometheus)["/etc/prometheus/prometheus.yml"].get("read_only") is True

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_scrapes_each_service_at_its_compose_port(
        self, jobs: dict[str, dict[str, Any]], services: dict[str, Service], name: str
    ) -> None:
        port = services[name]["environment"]["REGIONSTORE_HTTP__PORT"]

        (static,) = jobs[name]["static_configs"]

        assert static["targets"] == [f"{name}:{port}"]

    def test_scrapes_the_gateway_with_the_metrics_key_secret(
        self, jobs: dict[str, dict[str, Any]], services: dict[str, Service]
    ) -> None:
        authorization = jobs["gateway"]["authorization"]

        assert authorization.get("type", "Bearer") == "Bearer"
        assert authorization["credentials_file"] in secret_paths(services["prometheus"])
        assert "credentials" not in authorization


class TestComposeServices:
    @pytest.mark.parametrize(
        ("name", "image"),
        [
            ("prometheus", r"prom/prometheus:v\d+\.\d+\.\d+"),
            ("grafana", r"grafana/grafana:\d+\.\d+\.\d+"),
        ],
    )
    def test_runs_a_pinned_official_image(
        self, services: dict[str, Service], name: str, image: str
    ) -> None:
        assert re.fullmatch(image, services[name]["image"]), services[name]["image"]

    @pytest.mark.parametrize("name", ["prometheus", "grafana"])
    def test_is_published_on_loopback_only(self, services: dict[str, Service], name: str) -> None:
        ports = services[name]["ports"]

        assert ports
        for port in ports:
            assert port["host_ip"] == "127.0.0.1", port

    @pytest.mark.parametrize("name", ["prometheus", "grafana"])
    def test_has_a_healthcheck(self, services: dict[str, Service], name: str) -> None:
        test = services[name]["healthcheck"]["test"]

        assert test[0] in {"CMD", "CMD-SHELL"}
        assert len(test) > 1

    def test_grafana_reads_its_admin_password_from_a_secret(
        self, services: dict[str, Service]
    ) -> None:
        env = services["grafana"]["environment"]

        assert "GF_SECURITY_ADMIN_PASSWORD" not in env
        assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] in secret_paths(services["grafana"])

    def test_grafana_starts_once_prometheus_is_healthy(self, services: dict[str, Service]) -> None:
        assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
