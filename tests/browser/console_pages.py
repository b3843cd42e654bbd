"""Page helpers for the console's browser tests: signing in, finding things, filtering."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    ViewportSize,
    expect,
)

# Pages are laid out for a laptop screen.
LAPTOP: ViewportSize = {"width": 1366, "height": 768}
READABLE_WITHIN_S = 90.0

# Runs before any script of the page: every Content-Security-Policy violation is reported on the
# console, where the test collects it (Chromium also logs most of them there by itself).
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}`
    + ` at ${event.sourceFile}:${event.lineNumber}`);
});
"""


def is_csp_report(message: ConsoleMessage) -> bool:
    """Whether a console message reports a Content-Security-Policy violation."""
    text = message.text
    return text.startswith("CSP violation") or "Content Security Policy" in text


def key_id(key: str) -> str:
    """The public id of a key ``rsk_<id>_<secret>``."""
    return key.split("_")[1]


@dataclass
class Console:
    """Opens console pages, each in a fresh browser context, and photographs them."""

    browser: Browser
    url: str
    screenshot_dir: Path
    test_name: str
    keys: Mapping[str, str]
    errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    _contexts: list[BrowserContext] = field(default_factory=list)

    def open(self, role: str = "operator") -> Page:
        """A new page signed in with a key of ``role``: the console, its region stream live."""
        page = self.open_signed_out()
        sign_in(page, self.keys[role])
        expect(page.get_by_test_id("session-role")).to_have_text(role)
        expect(page.get_by_test_id("connection-label")).to_have_text("live")
        expect(page.locator("[data-testid^='region-card-']").first).to_be_visible()
        expect(page.get_by_test_id("customers-table")).to_have_attribute("aria-busy", "false")
        return page

    def open_signed_out(self) -> Page:
        """A new page in a fresh browser context (no session cookie), showing the sign-in form."""
        context = self.browser.new_context(viewport=LAPTOP, base_url=self.url)
        context.add_init_script(CSP_LISTENER)
        self._contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{error}"))
        page.on("console", self._console)
        page.goto("/")
        expect(page.get_by_test_id("signin-form")).to_be_visible()
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if is_csp_report(message):
            self.csp_violations.append(message.text)

    def shot(self, page: Page, name: str) -> Path:
        """Save a full-page screenshot as <test>-<name>.png."""
        path = self.screenshot_dir / f"{self.test_name}-{name}.png"
        page.screenshot(path=path, full_page=True, animations="disabled")
        return path

    def close(self) -> None:
        """Close every context this console opened."""
        for context in reversed(self._contexts):
            context.close()


class CustomerFactory:
    """Creates customers through the API and remembers ids to delete, including UI-made ones."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api
        self.made: list[str] = []

    def body(self, **fields: Any) -> dict[str, Any]:
        """A valid body with fresh ids; the id is registered for cleanup."""
        data = {
            "customer_id": uuid.uuid4().hex,
            "customer_unique_id": uuid.uuid4().hex,
            "customer_zip_code_prefix": 13560,
            "customer_city": f"Teste {uuid.uuid4().hex[:8]}",
            "customer_state": "SP",
            **fields,
        }
        self.made.append(data["customer_id"])
        return data

    def create(self, **fields: Any) -> dict[str, Any]:
        """Create a customer and wait until it can be read."""
        data = self.body(**fields)
        response = self.api.post("/v1/customers", params={"wait": "applied"}, json=data)
        assert response.status_code == 202, response.text
        if not response.json()["applied"]:
            # The gateway's wait is bounded; a slow or parked home region catches up later.
            self.wait_readable(data["customer_id"])
        return data

    def wait_readable(self, customer_id: str, within_s: float = READABLE_WITHIN_S) -> None:
        """Poll the API until a customer can be read."""
        deadline = time.monotonic() + within_s
        while self.api.get(f"/v1/customers/{customer_id}").status_code != 200:
            assert time.monotonic() < deadline, f"{customer_id} not readable after {within_s}s"
            time.sleep(0.25)


def sign_in(page: Page, key: str) -> None:
    """Type a key into the sign-in form and send it."""
    form = page.get_by_test_id("signin-form")
    form.get_by_label("API key").fill(key)
    form.get_by_role("button", name="Sign in").click()


def region_card(page: Page, region: str) -> Locator:
    """The card of one region."""
    return page.get_by_test_id(f"region-card-{region}")


def region_switch(page: Page, region: str) -> Locator:
    """A region's switch, found the way a screen reader user would: by role and label."""
    return page.get_by_role("switch", name=f"{region} Available")


def filter_customers(page: Page, **filters: str) -> None:
    """Fill the filter form (zip_min, zip_max, city, state, region, limit) and apply it."""
    form = page.get_by_test_id("filter-form")
    form.get_by_role("button", name="Reset").click()
    for name, value in filters.items():
        control = page.get_by_test_id(f"filter-{name}")
        if name in {"state", "region", "limit"}:
            control.select_option(value)
        else:
            control.fill(value)
    form.get_by_role("button", name="Apply").click()
    expect(page.get_by_test_id("customers-table")).to_have_attribute("aria-busy", "false")


def customer_row(page: Page, customer_id: str) -> Locator:
    """The table row of one customer."""
    return page.locator(f"tr[data-customer-id='{customer_id}']")


def customer_dialog(page: Page) -> Locator:
    """The create/edit dialog."""
    return page.get_by_test_id("customer-dialog")


def open_new_customer(page: Page) -> Locator:
    """Open the empty create form and return its dialog."""
    page.get_by_role("button", name="New customer").click()
    dialog = customer_dialog(page)
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", name="New customer")).to_be_visible()
    return dialog


def fill_customer_form(dialog: Locator, data: dict[str, Any]) -> None:
    """Type a customer into the form, field by field, by label."""
    dialog.get_by_label("Customer id").fill(str(data["customer_id"]))
    dialog.get_by_label("Unique id").fill(str(data["customer_unique_id"]))
    dialog.get_by_label("Zip prefix").fill(str(data["customer_zip_code_prefix"]))
    dialog.get_by_label("City").fill(str(data["customer_city"]))
    dialog.get_by_label("State").select_option(str(data["customer_state"]))


def api_field_error(api: httpx.Client, body: dict[str, Any], field_name: str) -> str:
    """What the API itself says about one field of an invalid body, as the console shows it."""
    response = api.post("/v1/customers", json=body)
    assert response.status_code == 422, response.text
    messages = [
        error["msg"].removeprefix("Value error, ")
        for error in response.json()["detail"]
        if error["loc"][-1] == field_name
    ]
    assert messages, response.text
    return " ".join(messages)
