"""The dashboard and the alert rules against the real services: every metric they query is
exported, and writes show.

Each service is scraped the way deploy/prometheus/prometheus.yml scrapes it (its job's
``metrics_path``; the gateway's with a key of the reader role, as the metrics_key secret holds),
without following redirects, so a path Prometheus could not use fails here too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from regionstore_shared.settings import CommonSettings
from regionstore_testing.consumed import wait_consumed
from tests.dashboards import (
    PROMETHEUS_FILE,
    alert_metric_names,
    dashboard_metric_names,
    exported_names,
    load_dashboard,
    unexported,
)
from tests.keys import headers, new_key
from tests.regionstore_env import customer
from tests.stack import Stack

pytestmark = pytest.mark.integration

SERVICES = ("gateway", "writer", "replicator", "recovery")
WRITES = 5
APPLIED_WITHIN_S = 60.0
POLL_S = 0.2


class Scraper:
    """Scrapes a service the way its Prometheus job is configured."""

    def __init__(self, stack: Stack, reader_key: str) -> None:
        config: dict[str, Any] = yaml.safe_load(PROMETHEUS_FILE.read_text())
        self.jobs: dict[str, dict[str, Any]] = {
            job["job_name"]: job for job in config["scrape_configs"]
        }
        self.stack = stack
        self.reader_key = reader_key

    async def __call__(self, service: str) -> str:
        job = self.jobs[service]
        url = self.stack.endpoints.services[service] + job.get("metrics_path", "/metrics")
        auth = headers(self.reader_key) if "authorization" in job else {}
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as http:
            response = await http.get(url, headers=auth)
        assert response.status_code == 200, (
            f"{service}: {response.status_code} {response.text[:300]}"
        )
        return response.text

    async def wait_for(self, service: str, name: str, at_least: float, **labels: str) -> float:
        """A metric's value once it reaches ``at_least``, or as it is when time is up."""
        deadline = time.monotonic() + APPLIED_WITHIN_S
        while True:
            value = sample(await self(service), name, **labels)
            if value >= at_least or time.monotonic() > deadline:
                return value
            await asyncio.sleep(POLL_S)


@pytest_asyncio.fixture(loop_scope="session")
async def scrape(stack: Stack) -> Scraper:
    return Scraper(stack, await new_key("reader"))


def sample(exposition: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels`` (0 when there are none)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


async def write_customers(stack: Stack, count: int) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        for _ in range(count):
            response = await http.post("/v1/customers", json=customer(), headers=headers())
            assert response.status_code == 202, response.text


class TestDashboardMetrics:
    async def test_every_metric_the_dashboard_queries_is_exported(
        self, stack: Stack, scrape: Scraper
    ) -> None:
        await write_customers(stack, WRITES)
        exported: set[str] = set()
        for service in SERVICES:
            exported |= exported_names(await scrape(service))

        assert unexported(dashboard_metric_names(load_dashboard()), exported) == set()

    async def test_every_metric_an_alert_rule_queries_is_exported(self, scrape: Scraper) -> None:
        exported: set[str] = set()
        for service in SERVICES:
            exported |= exported_names(await scrape(service))

        assert unexported(alert_metric_names(), exported) == set()

    async def test_each_service_exports_regionstore_metrics(self, scrape: Scraper) -> None:
        for service in SERVICES:
            names = exported_names(await scrape(service))
            assert any(name.startswith("regionstore_") for name in names), service

    async def test_writes_show_as_published_then_applied_home_and_replica(
        self, stack: Stack, scrape: Scraper
    ) -> None:
        published = "regionstore_commands_published_total"
        requests = "regionstore_http_requests_total"
        applied = "regionstore_commands_applied_total"
        # Earlier tests may leave the consumers behind (restarted, or catching up a load): the
        # counts below are read once both have applied what Kafka holds.
        kafka = CommonSettings().kafka
        groups = (kafka.writer_group, kafka.replicator_group)
        await wait_consumed(kafka, kafka.command_topic, groups, within_s=APPLIED_WITHIN_S)
        gateway = await scrape("gateway")
        accepted = sample(gateway, published, outcome="accepted")
        created = sample(gateway, requests, route="/v1/customers", status="202")
        home = sample(await scrape("writer"), applied, role="home")
        replica = sample(await scrape("replicator"), applied, role="replica")

        await write_customers(stack, WRITES)

        gateway = await scrape("gateway")
        assert sample(gateway, published, outcome="accepted") >= accepted + WRITES
        assert sample(gateway, requests, route="/v1/customers", status="202") >= created + WRITES
        # A new customer is the home copy (the writer) and the replica copy (the replicator):
        # it lived nowhere before, so no region gets a tombstone.
        home_now = await scrape.wait_for("writer", applied, home + WRITES, role="home")
        assert home_now >= home + WRITES
        replica_now = await scrape.wait_for("replicator", applied, replica + WRITES, role="replica")
        assert replica_now >= replica + WRITES
