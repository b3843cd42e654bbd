"""Who may call what, on the running gateway: every operation of its OpenAPI document (and
/metrics) against no key, a key nobody issued, and a key of each role.

The table below gives each operation its role and a minimal valid request; an operation of the
document without an entry fails the suite, so a new route cannot ship without a rule. Status
changes set a region to the status it already has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from regionstore_gateway.auth.apikeys import new_key
from tests.keys import headers, revoke
from tests.keys import new_key as issue
from tests.regionstore_env import customer, new_id
from tests.stack import Stack

pytestmark = pytest.mark.integration

CHALLENGE = 'Bearer realm="regionstore"'
IDENTITIES = ("no key", "wrong key", "reader", "writer", "operator")
#: What each identity gets, by the role an operation requires.
EXPECTED = {
    "open": {"no key": 200, "wrong key": 200, "reader": 200, "writer": 200, "operator": 200},
    # Signing in: the key is the body's, not a header's.
    "sign-in": {"no key": 401, "wrong key": 401, "reader": 200, "writer": 200, "operator": 200},
    "reader": {"no key": 401, "wrong key": 401, "reader": 200, "writer": 200, "operator": 200},
    "writer": {"no key": 401, "wrong key": 401, "reader": 403, "writer": 200, "operator": 200},
    "operator": {"no key": 401, "wrong key": 401, "reader": 403, "writer": 403, "operator": 200},
}


@dataclass
class Caller:
    """A gateway client as one identity, and what the requests need to be valid."""

    http: httpx.AsyncClient
    identity: str
    key: str | None
    existing: str

    def headers(self) -> dict[str, str]:
        return headers(self.key) if self.key is not None else {}

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.request(method, path, headers=self.headers(), **kwargs)

    async def status_of(self, region: str) -> str:
        # Read with the operator key: every identity must put back exactly what is there.
        answer = await self.http.get("/node-statuses", headers=headers())
        assert answer.status_code == 200, answer.text
        status: str = answer.json()[region]
        return status


Request = Callable[[Caller], Awaitable[httpx.Response]]


def _describe(response: httpx.Response) -> str:
    try:
        return f"{response.status_code} {response.text[:500]}"
    except httpx.ResponseNotRead:  # the event stream: its status line is what counts
        return str(response.status_code)


def _fields() -> dict[str, Any]:
    body = customer()
    del body["customer_id"]
    return body


async def _events(caller: Caller) -> httpx.Response:
    # The stream never ends: its status and headers are the answer.
    async with caller.http.stream("GET", "/v1/regions/events", headers=caller.headers()) as r:
        return r


async def _put_status(caller: Caller) -> httpx.Response:
    status = await caller.status_of("region_2")
    return await caller.send("PUT", "/v1/regions/region_2/status", json={"status": status})


async def _node_status(caller: Caller) -> httpx.Response:
    status = await caller.status_of("region_3")
    return await caller.send("POST", "/node-status", json={"node_id": "region_3", "status": status})


async def _sign_in(caller: Caller) -> httpx.Response:
    return await caller.http.post("/v1/session", json={"key": caller.key or "none"})


NO_MATCH = {"city": "no such city in any region"}

#: (method, path) -> (role, a minimal valid request).
OPERATIONS: dict[tuple[str, str], tuple[str, Request]] = {
    ("GET", "/healthz"): ("open", lambda c: c.send("GET", "/healthz")),
    ("GET", "/readyz"): ("open", lambda c: c.send("GET", "/readyz")),
    ("GET", "/metrics"): ("reader", lambda c: c.send("GET", "/metrics")),
    ("POST", "/v1/customers"): (
        "writer",
        lambda c: c.send("POST", "/v1/customers", json=customer()),
    ),
    ("GET", "/v1/customers"): ("reader", lambda c: c.send("GET", "/v1/customers?limit=1")),
    ("PUT", "/v1/customers/{customer_id}"): (
        "writer",
        lambda c: c.send("PUT", f"/v1/customers/{new_id()}", json=_fields()),
    ),
    ("PATCH", "/v1/customers/{customer_id}"): (
        "writer",
        lambda c: c.send("PATCH", f"/v1/customers/{c.existing}", json={"customer_city": "franca"}),
    ),
    ("DELETE", "/v1/customers/{customer_id}"): (
        "writer",
        lambda c: c.send("DELETE", f"/v1/customers/{new_id()}"),
    ),
    ("GET", "/v1/customers/{customer_id}"): (
        "reader",
        lambda c: c.send("GET", f"/v1/customers/{c.existing}"),
    ),
    ("GET", "/v1/customers/{customer_id}/export"): (
        "operator",
        lambda c: c.send("GET", f"/v1/customers/{c.existing}/export"),
    ),
    ("GET", "/v1/customers:export"): (
        "operator",
        lambda c: c.send("GET", "/v1/customers:export?customer_unique_id=" + "0" * 32),
    ),
    ("POST", "/v1/customers:batch"): (
        "writer",
        lambda c: c.send("POST", "/v1/customers:batch", json={"items": [{"customer": customer()}]}),
    ),
    ("GET", "/v1/regions"): ("reader", lambda c: c.send("GET", "/v1/regions")),
    ("PUT", "/v1/regions/{region}/status"): ("operator", _put_status),
    ("GET", "/v1/regions/events"): ("reader", _events),
    ("POST", "/create-customer"): (
        "writer",
        lambda c: c.send("POST", "/create-customer", json=customer()),
    ),
    ("POST", "/node-status"): ("operator", _node_status),
    ("GET", "/node-statuses"): ("reader", lambda c: c.send("GET", "/node-statuses")),
    ("POST", "/filter-records"): (
        "reader",
        lambda c: c.send("POST", "/filter-records", json=NO_MATCH),
    ),
    ("GET", "/filter-records"): (
        "reader",
        lambda c: c.send("GET", "/filter-records", params=NO_MATCH),
    ),
    ("GET", "/v1/session"): ("reader", lambda c: c.send("GET", "/v1/session")),
    ("POST", "/v1/session"): ("sign-in", _sign_in),
    ("DELETE", "/v1/session"): ("open", lambda c: c.send("DELETE", "/v1/session")),
}
#: Operations served but kept out of the OpenAPI document.
UNDOCUMENTED = {("GET", "/metrics")}


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def keys(stack: Stack) -> dict[str, str | None]:
    """A key per identity: none, one nobody issued, and a new key of each role."""
    return {
        "no key": None,
        "wrong key": new_key()[0],
        **{
            role: await issue(role, name="auth matrix") for role in ("reader", "writer", "operator")
        },
    }


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def existing(http: httpx.AsyncClient) -> str:
    """A customer that exists (and is applied) before the matrix reads and patches it."""
    body = customer()
    answer = await http.post("/v1/customers?wait=applied", json=body, headers=headers())
    assert answer.status_code == 202, answer.text
    assert answer.json()["applied"] is True, answer.text
    customer_id: str = body["customer_id"]
    return customer_id


async def test_every_documented_operation_has_a_rule(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert documented - set(OPERATIONS) == set(), "operations without a rule in OPERATIONS"
    assert set(OPERATIONS) - documented == UNDOCUMENTED, "rules for operations not served"


@pytest.mark.parametrize("identity", IDENTITIES)
@pytest.mark.parametrize(("method", "path"), list(OPERATIONS))
async def test_each_identity_gets_what_its_role_allows(
    http: httpx.AsyncClient,
    keys: dict[str, str | None],
    existing: str,
    method: str,
    path: str,
    identity: str,
) -> None:
    role, request = OPERATIONS[(method, path)]
    response = await request(Caller(http, identity, keys[identity], existing))
    expected = EXPECTED[role][identity]
    if expected == 200:
        assert 200 <= response.status_code < 300, _describe(response)
    else:
        assert response.status_code == expected, _describe(response)
    if expected == 401:
        assert response.headers["WWW-Authenticate"] == CHALLENGE


async def test_a_refusal_does_not_tell_whether_a_customer_exists(
    http: httpx.AsyncClient, keys: dict[str, str | None], existing: str
) -> None:
    missing = new_id()
    for key in (None, keys["wrong key"], keys["reader"]):
        sent = headers(key) if key is not None else {}
        answers = [
            await http.request(
                method,
                f"/v1/customers/{customer_id}",
                headers=sent,
                json={"customer_city": "x"} if method == "PATCH" else None,
            )
            for customer_id in (existing, missing)
            for method in ("PATCH", "DELETE")
        ]
        if key != keys["reader"]:
            answers += [
                await http.get(f"/v1/customers/{c}", headers=sent) for c in (existing, missing)
            ]
        assert len({(a.status_code, a.text) for a in answers}) == 1, [a.text for a in answers]
        assert answers[0].status_code == (403 if key == keys["reader"] else 401)


async def test_over_its_rate_a_key_gets_429_with_retry_after(http: httpx.AsyncClient) -> None:
    key = await issue("reader", rate=5, burst=5, name="rate limit test")
    answers = [await http.get("/v1/session", headers=headers(key)) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429], [a.text for a in answers]
    assert int(answers[-1].headers["Retry-After"]) >= 1


async def test_a_revoked_key_stops_working(http: httpx.AsyncClient) -> None:
    key = await issue("reader", name="revocation test")
    assert (await http.get("/v1/session", headers=headers(key))).status_code == 200
    await revoke(key[4:16])
    # The gateway trusts a verified key for up to cache_refresh_s; a new one it never saw is
    # read from Redis at once.
    fresh = await issue("reader", name="revocation test")
    await revoke(fresh[4:16])
    answer = await http.get("/v1/session", headers=headers(fresh))
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == CHALLENGE


async def test_the_console_session_cookie_and_its_csrf_token(stack: Stack) -> None:
    key = await issue("writer", name="session test")
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as browser:
        signed_in = await browser.post("/v1/session", json={"key": key})
        assert signed_in.status_code == 200, signed_in.text
        session = signed_in.json()
        assert (session["key_id"], session["role"]) == (key[4:16], "writer")
        assert (await browser.get("/v1/session")).json() == session
        assert (await browser.get("/v1/regions")).status_code == 200
        body = customer()
        refused = await browser.post("/v1/customers", json=body)
        assert refused.status_code == 403, refused.text
        accepted = await browser.post(
            "/v1/customers", json=body, headers={"X-CSRF-Token": session["csrf_token"]}
        )
        assert accepted.status_code == 202, accepted.text
        assert (await browser.delete("/v1/session")).status_code == 204
        assert (await browser.get("/v1/session")).status_code == 401
