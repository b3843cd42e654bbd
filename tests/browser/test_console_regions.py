"""The region panel: switches, live updates between browsers, and what outages do to reads."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect
from prometheus_client.parser import text_string_to_metric_families

from regionstore_recovery.settings import DetectorSettings
from regionstore_shared.ports import local_service_urls
from tests.browser.console_pages import (
    Console,
    CustomerFactory,
    customer_row,
    filter_customers,
    region_card,
    region_switch,
)
from tests.stack import EXTERNAL, PROCESS_COMPOSE_URL

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SetStatus = Callable[[str, str], None]
# Readiness bounds, not speed: the detector acts in seconds with its default thresholds.
DETECTED_MS = 60_000
BACK_MS = 90_000


def api_status(api: httpx.Client, region: str) -> str:
    """A region's status as the API reports it."""
    listed = api.get("/v1/regions").json()["regions"]
    return str(next(r["status"] for r in listed if r["name"] == region))


def show_until_present(page: Page, customer_id: str, **filters: str) -> None:
    """Apply filters until a customer's row is there.

    A write made with ?wait=applied is in its home region when acknowledged, but its replica
    copy arrives on its own schedule: a read served from the replica may need asking again.
    """
    row = customer_row(page, customer_id)
    for _ in range(30):
        filter_customers(page, **filters)
        try:
            expect(row).to_be_visible(timeout=1_000)
        except AssertionError:
            continue
        return
    filter_customers(page, **filters)
    expect(row).to_be_visible()


class TestRegionCards:
    def test_cards_show_the_region_map(self, console: Console, api: httpx.Client) -> None:
        page = console.open()
        listed = api.get("/v1/regions").json()
        # Lag moves while other tests' writes settle; its wording and both consumers are stable.
        lag = page.get_by_test_id("consumer-lag")
        expect(lag).to_contain_text("Accepted, not yet applied:")
        expect(lag).to_contain_text("by the writer (home regions)")
        expect(lag).to_contain_text("by the replicator (replicas)")
        assert set(listed["lag"]) == {"writer", "replicator"}
        for region in listed["regions"]:
            card = region_card(page, region["name"])
            zip_range = f"{region['zip_min']:05d} \N{EN DASH} {region['zip_max']:05d}"
            expect(card.get_by_test_id("region-zip")).to_have_text(zip_range)
            expect(card.get_by_test_id("region-replicas")).to_have_text(
                ", ".join(region["replicas"])
            )
            expect(card).to_have_attribute("data-status", region["status"])
            expect(card.get_by_test_id("region-pending")).to_contain_text(
                "unknown" if region["pending"] is None else "parked"
            )
        console.shot(page, "regions")


class TestRegionSwitch:
    def test_flip_shows_in_another_browser_without_reload(
        self, console: Console, api: httpx.Client, regions: SetStatus
    ) -> None:
        regions("region_3", "available")
        page_a = console.open()
        page_b = console.open()
        page_b.evaluate("window.__sameDocument = true")
        switch_b = region_switch(page_b, "region_3")
        card_b = region_card(page_b, "region_3")
        expect(switch_b).to_be_checked()

        region_switch(page_a, "region_3").uncheck()

        expect(card_b).to_have_attribute("data-status", "unavailable")
        expect(switch_b).not_to_be_checked()
        expect(card_b.get_by_test_id("region-status")).to_have_text("unavailable")
        expect(card_b.get_by_test_id("region-note")).to_contain_text("Reads served by region_2")
        assert api_status(api, "region_3") == "unavailable"
        console.shot(page_b, "page-b-region_3-off")

        region_switch(page_a, "region_3").check()

        expect(card_b).to_have_attribute("data-status", "available")
        expect(switch_b).to_be_checked()
        expect(card_b.get_by_test_id("region-note")).not_to_contain_text("Reads served by")
        assert api_status(api, "region_3") == "available"
        assert page_b.evaluate("window.__sameDocument") is True, "page B was reloaded"
        console.shot(page_b, "page-b-region_3-on")

    def test_flip_by_another_client_shows_live(self, console: Console, regions: SetStatus) -> None:
        regions("region_1", "available")
        page = console.open()
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")

        regions("region_1", "unavailable")

        expect(region_switch(page, "region_1")).not_to_be_checked()
        expect(region_card(page, "region_1")).to_have_attribute("data-status", "unavailable")


class TestOutageBanners:
    def test_degraded_banner_and_replica_rows(
        self, console: Console, customers: CustomerFactory, regions: SetStatus
    ) -> None:
        regions("region_1", "available")
        regions("region_2", "available")
        city = f"Teste Degradado {uuid.uuid4().hex[:8]}"
        made = customers.create(
            customer_zip_code_prefix=40010, customer_state="BA", customer_city=city
        )
        page = console.open()
        banner = page.get_by_test_id("banner-degraded")
        filter_customers(page, zip_min="40000", zip_max="40999", city=city)
        expect(banner).to_be_hidden()

        region_switch(page, "region_2").uncheck()
        expect(region_card(page, "region_2")).to_have_attribute("data-status", "unavailable")
        show_until_present(page, made["customer_id"], zip_min="40000", zip_max="40999", city=city)

        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Served from replicas: region_2")
        row = customer_row(page, made["customer_id"])
        expect(row.get_by_test_id("cell-region")).to_have_text("region_2")
        served = row.get_by_test_id("served-by")
        expect(served).to_have_attribute("data-fallback", "true")
        expect(served).to_contain_text("region_1")
        console.shot(page, "degraded")

        # Coming back refreshes the page of results by itself.
        region_switch(page, "region_2").check()
        expect(banner).to_be_hidden()
        expect(served).to_have_attribute("data-fallback", "false")
        expect(served).to_have_text("region_2")

    def test_incomplete_banner_when_a_region_and_its_replica_are_down(
        self, console: Console, regions: SetStatus
    ) -> None:
        page = console.open()
        filter_customers(page, zip_min="40000", zip_max="40999")
        incomplete = page.get_by_test_id("banner-incomplete")
        expect(incomplete).to_be_hidden()

        regions("region_2", "unavailable")
        regions("region_1", "unavailable")  # region_2's replica

        expect(incomplete).to_be_visible()
        expect(incomplete).to_contain_text("Some data could not be reached")
        expect(incomplete).to_contain_text("region_2 and its replica are down")
        console.shot(page, "incomplete")

        regions("region_1", "available")
        expect(incomplete).to_be_hidden()


@pytest.fixture
def stopped_store() -> Iterator[Callable[[], None]]:
    """Stops region_3's FerretDB on demand (process-compose); always started again after."""
    if EXTERNAL:
        pytest.skip("needs the local process-compose stack")
    stopped: list[bool] = []

    def stop() -> None:
        httpx.patch(f"{PROCESS_COMPOSE_URL}/process/stop/region_3", timeout=30).raise_for_status()
        stopped.append(True)

    try:
        yield stop
    finally:
        if stopped:
            httpx.post(f"{PROCESS_COMPOSE_URL}/process/start/region_3", timeout=30)


def probe_failures() -> float:
    """How many probes of region_3's store the detector saw fail (recovery's metrics)."""
    recovery = local_service_urls()["recovery"]
    scraped = httpx.get(f"{recovery}/metrics", follow_redirects=True).text
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            if (
                sample.name == "regionstore_detector_probe_failures_total"
                and sample.labels.get("region") == "region_3"
            ):
                return sample.value
    return 0.0


def start_store() -> None:
    httpx.post(f"{PROCESS_COMPOSE_URL}/process/start/region_3", timeout=30).raise_for_status()


@pytest.mark.faults
class TestDetectedOutage:
    """The detector's word and the operator's, told apart on the card."""

    def test_a_store_that_stops_is_shown_detected_down_then_back(
        self, console: Console, api: httpx.Client, stopped_store: Callable[[], None]
    ) -> None:
        page = console.open()
        card = region_card(page, "region_3")
        expect(card).to_have_attribute("data-status", "available")

        stopped_store()

        expect(card).to_have_attribute("data-status", "down", timeout=DETECTED_MS)
        expect(card).to_have_attribute("data-set-by", "detector")
        expect(card.get_by_test_id("region-status")).to_have_text("down (detected)")
        source = card.get_by_test_id("region-source")
        expect(source).to_contain_text("Detected down by the failure detector")
        expect(source).to_contain_text("failures within")
        expect(card.get_by_test_id("region-note")).to_contain_text("Reads served by region_2")
        expect(card.get_by_test_id("region-hold")).to_be_visible()
        expect(region_switch(page, "region_3")).not_to_be_checked()
        assert api_status(api, "region_3") == "down"
        console.shot(page, "region_3-detected-down")

        start_store()

        expect(card).to_have_attribute("data-status", "available", timeout=BACK_MS)
        expect(source).to_contain_text("Detected healthy again by the failure detector")
        expect(card.get_by_test_id("region-hold")).to_be_hidden()
        latest = card.get_by_test_id("region-change").first
        expect(latest).to_contain_text("Detected back by the detector", timeout=BACK_MS)
        expect(latest).to_have_attribute("data-by", "detector")

    def test_an_operator_overrides_a_detected_down_and_it_holds(
        self,
        console: Console,
        api: httpx.Client,
        regions: SetStatus,
        stopped_store: Callable[[], None],
    ) -> None:
        page = console.open()
        card = region_card(page, "region_3")
        stopped_store()
        expect(card).to_have_attribute("data-status", "down", timeout=DETECTED_MS)

        region_switch(page, "region_3").check()

        expect(card).to_have_attribute("data-status", "available")
        expect(card).to_have_attribute("data-set-by", "operator")
        expect(card.get_by_test_id("region-source")).to_contain_text("Put back by operator")
        expect(card.get_by_test_id("region-change").first).to_contain_text("Switched on by")
        console.shot(page, "region_3-override")
        # The store still fails, and the operator's word holds: however many failed probes
        # the detector sees, it does not flip the region down again.
        seen = probe_failures()
        for _ in range(300):
            if probe_failures() >= seen + 2 * DetectorSettings().failures:
                break
            page.wait_for_timeout(200)
        assert probe_failures() >= seen + 2 * DetectorSettings().failures
        assert api_status(api, "region_3") == "available"

        region_switch(page, "region_3").uncheck()  # maintenance
        expect(card).to_have_attribute("data-status", "unavailable")
        start_store()
        regions("region_3", "available")
        expect(card).to_have_attribute("data-status", "available")
