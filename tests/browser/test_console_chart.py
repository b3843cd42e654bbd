"""The throughput chart: applied/s and pending per region, drawn from the live region stream."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.console_pages import Console, CustomerFactory

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Customers homed in region_3 (replica region_2), created between two snapshots of the stream.
WRITES = 6
# Snapshots come every region_events_interval_s (5 s), later on a loaded machine.
STREAM_WAIT_MS = 90_000
AT_LEAST_ONE = re.compile(r"^[1-9]")
AT_LEAST_THREE = re.compile(r"^(?:[3-9]|[1-9]\d+)$")
ABOVE_ZERO = re.compile(r"^(?:[1-9]|0\.\d*[1-9])")
# Earlier tests may leave a region switched off, draining or down until the detector sees it.
AVAILABLE_WITHIN_S = 120.0
HOME, REPLICA = "region_3", "region_2"


def applied_totals(api: httpx.Client) -> dict[str, int | None]:
    """Each region's applied total as the API reports it."""
    return {r["name"]: r["applied"] for r in api.get("/v1/regions").json()["regions"]}


def regions_now(api: httpx.Client) -> list[dict[str, Any]]:
    regions: list[dict[str, Any]] = api.get("/v1/regions").json()["regions"]
    return regions


def wait_until(api: httpx.Client, done: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
    """Poll /v1/regions until ``done(regions)``; the regions as last seen on failure."""
    deadline = time.monotonic() + AVAILABLE_WITHIN_S
    while not done(seen := regions_now(api)):
        assert time.monotonic() < deadline, f"{what}: {seen}"
        time.sleep(0.5)


def console_png(request: pytest.FixtureRequest, screenshot_dir: Path) -> Path:
    """docs/console.png with REGIONSTORE_SCREENSHOT=1 (the README's picture), else an artifact."""
    if os.environ.get("REGIONSTORE_SCREENSHOT") == "1":
        return request.config.rootpath / "docs" / "console.png"
    return screenshot_dir / "console.png"


class TestThroughputChart:
    def test_writes_show_as_applied_per_second(
        self,
        console: Console,
        api: httpx.Client,
        customers: CustomerFactory,
        screenshot_dir: Path,
        request: pytest.FixtureRequest,
    ) -> None:
        wait_until(
            api,
            lambda seen: all(r["status"] == "available" for r in seen),
            "regions not all available",
        )
        before = applied_totals(api)
        assert all(isinstance(total, int) for total in before.values()), before
        page = console.open("operator")
        applied = page.get_by_test_id("chart-applied")
        pending = page.get_by_test_id("chart-pending")
        home = applied.locator("[data-testid='chart-series'][data-region='region_3']")
        # One rate drawn: the chart holds a known total for the home region from before the
        # writes, so a later snapshot that counts them shows them as a rate above zero.
        expect(home).to_have_attribute("data-points", AT_LEAST_ONE, timeout=STREAM_WAIT_MS)

        for _ in range(WRITES):
            customers.create(customer_zip_code_prefix=70040, customer_state="DF")
        # Applied in both regions as the API counts them: the chart draws the same totals.
        wait_until(
            api,
            lambda seen: all(
                (r["applied"] or 0) >= (before[r["name"]] or 0) + WRITES
                for r in seen
                if r["name"] in (HOME, REPLICA)
            ),
            f"{WRITES} writes not counted applied in {HOME} and {REPLICA} (before: {before})",
        )

        expect(home).to_have_attribute("data-peak", ABOVE_ZERO, timeout=STREAM_WAIT_MS)
        expect(applied).to_have_attribute("data-samples", AT_LEAST_THREE, timeout=STREAM_WAIT_MS)
        expect(home.locator("path")).to_have_count(1)
        for region in ("region_1", "region_2", "region_3"):
            series = pending.locator(f"[data-testid='chart-series'][data-region='{region}']")
            expect(series).to_have_attribute("data-points", AT_LEAST_ONE)
        legend = page.get_by_test_id("chart-legend-region_3")
        expect(legend).to_contain_text("/s")
        expect(legend).to_contain_text("pending")

        path = console_png(request, screenshot_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=path, full_page=False, animations="disabled")
        assert path.stat().st_size > 0
