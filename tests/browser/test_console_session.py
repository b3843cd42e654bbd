"""Signing in: what each role sees and may do, where the key goes, and signing out."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser.console_pages import (
    Console,
    CustomerFactory,
    customer_row,
    filter_customers,
    key_id,
    region_card,
    region_switch,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SetStatus = Callable[[str, str], None]


def api_status(api: httpx.Client, region: str) -> str:
    """A region's status as the API reports it."""
    listed = api.get("/v1/regions").json()["regions"]
    return str(next(r["status"] for r in listed if r["name"] == region))


def stored_anywhere(page: Page, secret: str) -> list[str]:
    """Where in the page's script-readable storage ``secret`` appears."""
    found: list[str] = page.evaluate(
        """(secret) => {
          const places = [];
          const stores = { localStorage, sessionStorage };
          for (const [name, store] of Object.entries(stores)) {
            for (let i = 0; i < store.length; i += 1) {
              const key = store.key(i);
              const value = String(store.getItem(key));
              if (key.includes(secret) || value.includes(secret)) places.push(name);
            }
          }
          if (document.cookie.includes(secret)) places.push("document.cookie");
          for (const input of document.querySelectorAll("input")) {
            if (input.value.includes(secret)) places.push(`input#${input.id}`);
          }
          return places;
        }""",
        secret,
    )
    return found


def is_status_change(request: Request) -> bool:
    return request.method == "PUT" and "/v1/regions/" in request.url


class TestSignIn:
    def test_the_console_asks_for_a_key_and_keeps_it_nowhere(
        self, console: Console, role_keys: dict[str, str]
    ) -> None:
        page = console.open_signed_out()
        expect(page.get_by_test_id("console-main")).to_be_hidden()
        expect(page.get_by_label("API key")).to_have_attribute("type", "password")
        key = role_keys["reader"]

        sign_in(page, key)

        expect(page.get_by_test_id("session-key-id")).to_have_text(key_id(key))
        expect(page.get_by_test_id("session-role")).to_have_text("reader")
        expect(page.get_by_test_id("connection-label")).to_have_text("live")
        secret = key.split("_", 2)[2]
        assert stored_anywhere(page, secret) == []
        cookies = page.context.cookies()
        (session,) = [c for c in cookies if c["name"] == "regionstore_session"]
        assert session["httpOnly"] is True
        assert session["sameSite"] == "Strict"

        # The session, not the page, holds the key: a reload stays signed in.
        page.reload()
        expect(page.get_by_test_id("session-role")).to_have_text("reader")
        expect(page.get_by_test_id("connection-label")).to_have_text("live")

    def test_a_wrong_key_is_refused(self, console: Console) -> None:
        page = console.open_signed_out()
        sign_in(page, "rsk_000000000000_not-a-real-secret")
        expect(page.get_by_test_id("signin-error")).to_have_text("This key was not accepted.")
        expect(page.get_by_test_id("console-main")).to_be_hidden()
        expect(page.get_by_label("API key")).to_have_value("")

    def test_sign_out_brings_back_the_form(self, console: Console) -> None:
        page = console.open("writer")
        with page.expect_request(lambda r: r.method == "DELETE" and "/v1/session" in r.url) as sent:
            page.get_by_role("button", name="Sign out").click()
        assert sent.value.headers.get("x-csrf-token")
        expect(page.get_by_test_id("signin-form")).to_be_visible()
        expect(page.get_by_test_id("console-main")).to_be_hidden()
        expect(page.get_by_test_id("connection-label")).to_have_text("signed out")
        page.reload()
        expect(page.get_by_test_id("signin-form")).to_be_visible()

    def test_a_401_at_any_time_brings_back_the_form(self, console: Console) -> None:
        page = console.open("reader")
        page.context.clear_cookies()

        page.get_by_test_id("filter-form").get_by_role("button", name="Apply").click()

        expect(page.get_by_test_id("signin-form")).to_be_visible()
        expect(page.get_by_test_id("signin-error")).to_contain_text("sign in again")
        expect(page.get_by_test_id("console-main")).to_be_hidden()


class TestRoles:
    def test_a_reader_sees_customers_and_regions_but_no_forms_or_switches(
        self, console: Console, customers: CustomerFactory
    ) -> None:
        made = customers.create(customer_zip_code_prefix=70040, customer_state="DF")
        page = console.open("reader")
        filter_customers(page, city=made["customer_city"])

        row = customer_row(page, made["customer_id"])
        expect(row.get_by_test_id("cell-id")).to_have_text(made["customer_id"])
        expect(page.locator("[data-testid^='region-card-']")).to_have_count(3)
        expect(page.get_by_role("button", name="New customer")).to_be_hidden()
        expect(row.get_by_role("button")).to_have_count(0)
        expect(page.get_by_role("switch")).to_have_count(0)
        expect(page.get_by_test_id("regions-intro")).not_to_contain_text("Switch a region off")
        console.shot(page, "reader")

    def test_a_writer_sees_the_forms_but_no_switches(
        self, console: Console, customers: CustomerFactory
    ) -> None:
        made = customers.create(customer_zip_code_prefix=70040, customer_state="DF")
        page = console.open("writer")
        filter_customers(page, city=made["customer_city"])

        row = customer_row(page, made["customer_id"])
        expect(page.get_by_role("button", name="New customer")).to_be_visible()
        expect(row.get_by_role("button", name=f"Edit {made['customer_id']}")).to_be_visible()
        expect(row.get_by_role("button", name=f"Delete {made['customer_id']}")).to_be_visible()
        expect(page.get_by_role("switch")).to_have_count(0)

    def test_an_operator_flips_a_region_off_and_back(
        self,
        console: Console,
        api: httpx.Client,
        regions: SetStatus,
        role_keys: dict[str, str],
    ) -> None:
        regions("region_3", "available")
        page = console.open("operator")
        switch = region_switch(page, "region_3")
        card = region_card(page, "region_3")
        expect(page.get_by_role("switch")).to_have_count(3)
        expect(switch).to_be_checked()

        with page.expect_request(is_status_change) as sent:
            switch.uncheck()
        assert sent.value.headers.get("x-csrf-token")
        expect(card).to_have_attribute("data-status", "unavailable")
        assert api_status(api, "region_3") == "unavailable"
        latest = card.get_by_test_id("region-change").first
        expect(latest).to_have_attribute("data-status", "unavailable")
        expect(latest.get_by_test_id("region-change-key")).to_have_text(
            key_id(role_keys["operator"])
        )
        # The key's name (tests.keys names them "tests"), and a change that was made.
        expect(latest.get_by_test_id("region-change-name")).to_have_text("tests")
        expect(latest).to_have_attribute("data-outcome", "done")
        expect(latest.get_by_test_id("region-change-outcome")).to_have_count(0)
        expect(latest).to_contain_text("just now")
        console.shot(page, "region_3-off")

        switch.check()
        expect(card).to_have_attribute("data-status", "available")
        expect(switch).to_be_checked()
        assert api_status(api, "region_3") == "available"
        expect(card.get_by_test_id("region-change").first).to_have_attribute(
            "data-status", "available"
        )
