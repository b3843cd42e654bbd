"""Headless Chromium against the console the gateway serves at ``/``, on the running stack.

Playwright's sync API marks its own event loop as running between calls for as long as it is
started, which would stop pytest-asyncio from running any async test meanwhile. So Playwright
and the browser live for one test module, never for the whole session, and the keys the pages
sign in with are made before it starts.

Every page runs under the gateway's Content-Security-Policy; a violation fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.browser.console_pages import Console, CustomerFactory
from tests.keys import headers, new_key
from tests.stack import Stack

CHROMIUM = "/usr/bin/chromium"
ROLES = ("reader", "writer", "operator")
# No first-run UI, no background traffic: the machine has no internet for browsers.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Writes wait for the home region (?wait=applied), region flips travel through Redis and SSE:
# a few seconds is normal on a busy machine, so be generous before calling something broken.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
def gateway_url(stack: Stack) -> str:
    """Where the stack's gateway answers (REGIONSTORE_GATEWAY_URL, by default :8000)."""
    return stack.gateway_url.rstrip("/")


@pytest.fixture(scope="session")
def screenshot_dir(request: pytest.FixtureRequest) -> Path:
    """test-artifacts/screenshots under the repository root (git-ignored)."""
    path = request.config.rootpath / "test-artifacts" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
async def role_keys(stack: Stack) -> dict[str, str]:
    """A fresh key of every role, for the pages to sign in with."""
    return {role: await new_key(role) for role in ROLES}


@pytest.fixture(scope="module")
def api(gateway_url: str) -> Iterator[httpx.Client]:
    """A plain HTTP client, with the operator key, for setting up and checking what the UI did."""
    with httpx.Client(base_url=gateway_url, headers=headers(), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def browser(gateway_url: str, role_keys: Mapping[str, str]) -> Iterator[Browser]:
    """Debian's Chromium, driven by Playwright (never `playwright install`)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def console(
    browser: Browser,
    gateway_url: str,
    screenshot_dir: Path,
    role_keys: Mapping[str, str],
    request: pytest.FixtureRequest,
) -> Iterator[Console]:
    """Console pages for one test; fails the test on any uncaught script error or CSP violation."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    opened = Console(browser, gateway_url, screenshot_dir, name, role_keys)
    try:
        yield opened
    finally:
        opened.close()
    assert not opened.errors, f"uncaught errors in the page: {opened.errors}"
    assert not opened.csp_violations, f"Content-Security-Policy violations: {opened.csp_violations}"


@pytest.fixture
def regions(api: httpx.Client, customers: CustomerFactory) -> Iterator[Callable[[str, str], None]]:
    """Set a region's status through the API; every status is put back after the test.

    Depends on ``customers`` so that regions are back before test customers are deleted.
    """
    before = {r["name"]: r["status"] for r in api.get("/v1/regions").json()["regions"]}

    def set_status(region: str, status: str) -> None:
        response = api.put(f"/v1/regions/{region}/status", json={"status": status})
        assert response.status_code == 200, response.text

    try:
        yield set_status
    finally:
        for region, status in before.items():
            if status != "down":  # the detector's word: left to it
                set_status(region, status)


@pytest.fixture
def customers(api: httpx.Client) -> Iterator[CustomerFactory]:
    """Customers made for one test, deleted after it."""
    factory = CustomerFactory(api)
    try:
        yield factory
    finally:
        for customer_id in reversed(factory.made):
            api.delete(f"/v1/customers/{customer_id}", params={"wait": "applied"})
