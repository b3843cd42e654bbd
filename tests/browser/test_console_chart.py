"""The throughput chart: applied/s and pending per region, drawn from the live region stream."""

from __future__ import annotations

import os
import re
from pathlib import Path

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


def applied_totals(api: httpx.Client) -> dict[str, int | None]:
    """Each region's applied total as the API reports it."""
    return {r["name"]: r["applied"] for r in api.get("/v1/regions").json()["regions"]}


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
        before = applied_totals(api)
        assert all(isinstance(total, int) for total in before.values()), before
        page = console.open("operator")
        applied = page.get_by_test_id("chart-applied")
        pending = page.get_by_test_id("chart-pending")
        expect(applied).to_have_attribute("data-samples", AT_LEAST_ONE)

        for _ in range(WRITES):
            customers.create(customer_zip_code_prefix=70040, customer_state="DF")

        # A rate needs two snapshots; the writes land between the first and a later one.
        home = applied.locator("[data-testid='chart-series'][data-region='region_3']")
        expect(home).to_have_attribute("data-peak", ABOVE_ZERO, timeout=STREAM_WAIT_MS)
        expect(applied).to_have_attribute("data-samples", AT_LEAST_THREE, timeout=STREAM_WAIT_MS)
        expect(home.locator("path")).to_have_count(1)
        for region in ("region_1", "region_2", "region_3"):
            series = pending.locator(f"[data-testid='chart-series'][data-region='{region}']")
            expect(series).to_have_attribute("data-points", AT_LEAST_ONE)
        legend = page.get_by_test_id("chart-legend-region_3")
        expect(legend).to_contain_text("/s")
        expect(legend).to_contain_text("pending")

        after = applied_totals(api)
        for region in ("region_3", "region_2"):  # home and replica
            assert (after[region] or 0) >= (before[region] or 0) + WRITES, (before, after)

        path = console_png(request, screenshot_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=path, full_page=False, animations="disabled")
        assert path.stat().st_size > 0
