"""API keys: format and digest, the cache of verified keys, rate limits, the middleware's
answers, sessions and CSRF, and the production secret check. Fakes only, no I/O."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from asgi_lifespan import LifespanManager
from auth_fakes import HASHER, SECRET, MemoryKeys
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from regionstore_gateway.auth import (
    Authenticator,
    AuthUnavailableError,
    Limits,
    Principal,
    Role,
    check_routes,
)
from regionstore_gateway.auth.apikeys import KeyHasher, KeyRecord, new_key, parse_key
from regionstore_gateway.auth.ratelimit import RateLimiter, retry_after
from regionstore_gateway.main import create_app
from regionstore_gateway.settings import AuthSettings, GatewaySettings
from regionstore_gateway.state import State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestKeys:
    def test_a_new_key_has_the_documented_shape_and_parses_back(self) -> None:
        key, parsed = new_key()
        assert key == f"rsk_{parsed.key_id}_{parsed.secret}"
        assert len(parsed.key_id) == 12
        assert int(parsed.key_id, 16) >= 0
        assert parse_key(key) == parsed

    def test_keys_are_random(self) -> None:
        assert len({new_key()[0] for _ in range(50)}) == 50

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "rsk_",
            "rsk_0123456789ab",
            "rsk_0123456789AB_" + "a" * 43,
            "rsk_0123456789ab_" + "a" * 42,
            "rsk_0123456789ab_" + "a" * 43 + "=",
            "xyz_0123456789ab_" + "a" * 43,
            " rsk_0123456789ab_" + "a" * 43,
        ],
    )
    def test_malformed_keys_do_not_parse(self, text: str) -> None:
        assert parse_key(text) is None

    def test_the_secret_is_kept_out_of_the_repr(self) -> None:
        _, parsed = new_key()
        assert parsed.secret not in repr(parsed)
        record = KeyRecord(parsed.key_id, Role.READER, HASHER.digest(parsed.secret))
        assert record.digest not in repr(record)

    def test_the_digest_is_an_hmac_of_the_secret_under_the_server_secret(self) -> None:
        _, parsed = new_key()
        digest = HASHER.digest(parsed.secret)
        assert len(digest) == 64
        assert parsed.secret not in digest
        assert HASHER.matches(parsed.secret, digest)
        assert not KeyHasher("another-server-secret").matches(parsed.secret, digest)
        assert not HASHER.matches(parsed.secret[:-1] + "x", digest)

    def test_a_record_survives_redis(self) -> None:
        _, parsed = new_key()
        record = KeyRecord(
            parsed.key_id, Role.WRITER, "ab" * 32, "bench", "2026-11-28T00:00:00+00:00", 5.0, 7
        )
        fields = record.to_fields()
        assert set(fields.values()) >= {"writer", "bench", "5.0", "7"}
        assert KeyRecord.from_fields(parsed.key_id, fields) == record

    def test_a_hash_that_is_not_a_key_record_is_none(self) -> None:
        assert KeyRecord.from_fields("0123456789ab", {"role": "admin", "digest": "x"}) is None
        assert KeyRecord.from_fields("0123456789ab", {"name": "x"}) is None

    def test_roles_include_the_ones_below(self) -> None:
        assert Role.OPERATOR.allows(Role.WRITER)
        assert Role.OPERATOR.allows(Role.READER)
        assert Role.WRITER.allows(Role.READER)
        assert not Role.WRITER.allows(Role.OPERATOR)
        assert not Role.READER.allows(Role.WRITER)


class TestCsrf:
    def test_the_token_is_bound_to_the_key_and_the_server_secret(self) -> None:
        token = HASHER.csrf_token("0123456789ab")
        assert HASHER.csrf_ok("0123456789ab", token)
        assert not HASHER.csrf_ok("0123456789ac", token)
        assert not KeyHasher("another-server-secret").csrf_ok("0123456789ab", token)
        assert not HASHER.csrf_ok("0123456789ab", "")


def _authenticator(keys: MemoryKeys, clock: Clock, rate: float = 1000, burst: int = 2000) -> Any:
    return Authenticator(
        keys, HASHER, defaults=Limits(rate, burst), refresh_s=30, retry_every_s=1, clock=clock
    )


class TestAuthenticator:
    async def test_a_valid_key_is_its_principal(self) -> None:
        keys = MemoryKeys()
        key = keys.issue(Role.WRITER)
        principal = await _authenticator(keys, Clock()).authenticate(key)
        assert principal == Principal(parse_key(key).key_id, Role.WRITER)  # type: ignore[union-attr]

    async def test_unknown_malformed_and_forged_keys_are_refused(self) -> None:
        keys = MemoryKeys()
        key = keys.issue(Role.READER)
        auth = _authenticator(keys, Clock())
        forged = key[:17] + ("A" if key[17] != "A" else "B") + key[18:]
        assert await auth.authenticate(forged) is None
        assert await auth.authenticate(new_key()[0]) is None
        assert await auth.authenticate("not a key") is None

    async def test_a_verified_key_costs_no_read_until_the_refresh(self) -> None:
        keys, clock = MemoryKeys(), Clock()
        key = keys.issue(Role.READER)
        auth = _authenticator(keys, clock)
        for _ in range(5):
            assert await auth.authenticate(key) is not None
        assert keys.reads == 1
        clock.now += 30
        assert await auth.authenticate(key) is not None
        assert keys.reads == 2

    async def test_a_wrong_secret_for_a_cached_id_is_refused_from_the_cache(self) -> None:
        keys = MemoryKeys()
        key = keys.issue(Role.READER)
        auth = _authenticator(keys, Clock())
        await auth.authenticate(key)
        forged = key[:17] + ("A" if key[17] != "A" else "B") + key[18:]
        assert await auth.authenticate(forged) is None
        assert keys.reads == 1

    async def test_a_wrong_secret_is_logged_by_key_id_once_per_window(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        keys, clock = MemoryKeys(), Clock()
        key = keys.issue(Role.READER)
        forged = key[:17] + ("A" if key[17] != "A" else "B") + key[18:]
        auth = _authenticator(keys, clock)
        with caplog.at_level("INFO", logger="regionstore_gateway.auth"):
            for _ in range(3):
                assert await auth.authenticate(forged) is None
            clock.now += 30
            assert await auth.authenticate(forged) is None
        lines = [r for r in caplog.records if r.getMessage() == "api key refused"]
        assert [getattr(r, "key_id", None) for r in lines] == [key[4:16]] * 2
        assert all(key[17:] not in r.getMessage() + str(r.__dict__) for r in lines)

    async def test_a_revocation_takes_effect_at_the_next_refresh(self) -> None:
        keys, clock = MemoryKeys(), Clock()
        key = keys.issue(Role.OPERATOR)
        key_id = parse_key(key).key_id  # type: ignore[union-attr]
        auth = _authenticator(keys, clock)
        assert await auth.authenticate(key) is not None
        keys.records[key_id] = KeyRecord(
            key_id, Role.OPERATOR, keys.records[key_id].digest, revoked_at="now"
        )
        clock.now += 29
        assert await auth.authenticate(key) is not None
        clock.now += 1
        assert await auth.authenticate(key) is None

    async def test_with_redis_down_a_known_key_keeps_working(self) -> None:
        keys, clock = MemoryKeys(), Clock()
        key = keys.issue(Role.WRITER)
        auth = _authenticator(keys, clock)
        assert await auth.authenticate(key) is not None
        keys.error = RedisConnectionError("Connection refused")
        clock.now += 60
        assert await auth.authenticate(key) == Principal(key[4:16], Role.WRITER)
        # Redis is tried again at most once a second, not on every request.
        reads = keys.reads
        assert await auth.authenticate(key) is not None
        assert keys.reads == reads
        forged = key[:17] + ("A" if key[17] != "A" else "B") + key[18:]
        assert await auth.authenticate(forged) is None

    async def test_with_redis_down_an_unknown_key_cannot_be_checked(self) -> None:
        keys = MemoryKeys()
        key = keys.issue(Role.WRITER)
        keys.error = RedisConnectionError("Connection refused")
        with pytest.raises(AuthUnavailableError):
            await _authenticator(keys, Clock()).authenticate(key)

    async def test_a_key_carries_its_own_limits_or_the_defaults(self) -> None:
        keys = MemoryKeys()
        own = keys.issue(Role.READER, rate=5, burst=3)
        default = keys.issue(Role.READER)
        auth = _authenticator(keys, Clock(), rate=100, burst=200)
        await auth.authenticate(own)
        await auth.authenticate(default)
        assert auth.limits(own[4:16]) == Limits(5, 3)
        assert auth.limits(default[4:16]) == Limits(100, 200)


class TestRateLimiter:
    def test_a_burst_then_the_rate(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock)
        assert [limiter.admit("k", rate=5, burst=5) for _ in range(5)] == [0.0] * 5
        wait = limiter.admit("k", rate=5, burst=5)
        assert wait == pytest.approx(0.2)
        clock.now += 0.2
        assert limiter.admit("k", rate=5, burst=5) == 0.0
        assert limiter.admit("k", rate=5, burst=5) > 0

    def test_refusals_cost_nothing_and_keys_are_separate(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock)
        assert limiter.admit("a", rate=1, burst=1) == 0.0
        for _ in range(10):
            assert limiter.admit("a", rate=1, burst=1) > 0
        assert limiter.admit("b", rate=1, burst=1) == 0.0
        clock.now += 1
        assert limiter.admit("a", rate=1, burst=1) == 0.0

    def test_an_idle_key_gets_its_whole_burst_back(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock)
        for _ in range(3):
            limiter.admit("k", rate=10, burst=3)
        clock.now += 100
        assert [limiter.admit("k", rate=10, burst=3) for _ in range(3)] == [0.0] * 3

    @pytest.mark.parametrize(("wait", "header"), [(0.001, 1), (0.2, 1), (1.0, 1), (1.01, 2)])
    def test_retry_after_is_whole_seconds_at_least_one(self, wait: float, header: int) -> None:
        assert retry_after(wait) == header


class TestProductionSecret:
    @pytest.fixture(autouse=True)
    def _clean_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in list(os.environ):
            if name.upper().startswith("REGIONSTORE_"):
                monkeypatch.delenv(name)

    @staticmethod
    def _production(**auth: Any) -> GatewaySettings:
        # Everything else production asks for, so only the auth secret can be at fault.
        stores = {
            r: f"mongodb://u:pw-{r}@127.0.0.1:27017/" for r in ("region_1", "region_2", "region_3")
        }
        return GatewaySettings.model_validate(
            {
                "environment": "production",
                "redis": {"url": "redis://:a-long-redis-password@127.0.0.1:6379/0"},
                "idempotency_redis": {"url": "redis://:another-redis-password@127.0.0.1:6380/0"},
                "kafka": {
                    "security_protocol": "SASL_PLAINTEXT",
                    "sasl_username": "gateway",
                    "sasl_password": "a-long-kafka-password",
                },
                "stores": stores,
                **({"auth": auth} if auth else {}),
            }
        )

    @pytest.mark.parametrize("secret", [None, "", "changethis", "x" * 31])
    def test_production_refuses_a_missing_placeholder_or_short_secret(
        self, secret: str | None
    ) -> None:
        with pytest.raises(ValidationError, match="REGIONSTORE_AUTH__SECRET") as raised:
            self._production(**({} if secret is None else {"secret": secret}))
        if secret:
            assert secret not in str(raised.value)

    def test_production_takes_a_long_random_secret(self) -> None:
        settings = self._production(secret=SECRET)
        assert settings.auth.secret.get_secret_value() == SECRET
        assert SECRET not in repr(settings)

    def test_development_starts_without_a_secret(self) -> None:
        assert GatewaySettings().auth.secret == SecretStr("")

    def test_the_secret_comes_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGIONSTORE_AUTH__SECRET", SECRET)
        assert GatewaySettings().auth == AuthSettings(secret=SecretStr(SECRET))


class Api:
    """The real app over fake state: the key store is the only one the tested answers need.

    The clock stands still, so rate limits do not depend on how fast the machine is.
    """

    def __init__(self, keys: MemoryKeys) -> None:
        self.keys = keys
        self.auth = Authenticator(keys, HASHER, defaults=Limits(1000, 2000), clock=Clock())

    @contextlib.asynccontextmanager
    async def client(self, base_url: str = "http://gateway") -> AsyncIterator[httpx.AsyncClient]:
        settings = GatewaySettings()
        # The other clients are never reached: every answer tested comes before them.
        unused = dict.fromkeys(State.__annotations__, cast(Any, None))
        state = cast(State, {**unused, "auth": self.auth, "settings": settings})

        @contextlib.asynccontextmanager
        async def open_state(_: FastAPI) -> AsyncIterator[State]:
            yield state

        async with LifespanManager(create_app(settings, open_state=open_state)) as app:
            transport = httpx.ASGITransport(app=app.app)
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
                yield client


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> MemoryKeys:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return MemoryKeys()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CHALLENGE = 'Bearer realm="regionstore"'


class TestSignInRefusals:
    """Signing in refuses a key as every other request does: the same status, detail and
    headers (auth/refusal.py), raised by the route instead of answered by the middleware."""

    async def test_a_wrong_key_is_the_same_401_with_the_challenge(self, keys: MemoryKeys) -> None:
        async with Api(keys).client() as client:
            signing = await client.post("/v1/session", json={"key": new_key()[0]})
            bearing = await client.get("/v1/session", headers=bearer(new_key()[0]))
        assert signing.status_code == bearing.status_code == 401
        assert signing.json()["detail"] == bearing.json()["detail"]
        assert signing.headers["WWW-Authenticate"] == CHALLENGE

    async def test_over_the_rate_is_a_429_with_retry_after(self, keys: MemoryKeys) -> None:
        key = keys.issue(Role.READER, rate=5, burst=5)
        async with Api(keys).client() as client:
            codes = [(await client.post("/v1/session", json={"key": key})) for _ in range(6)]
        assert [r.status_code for r in codes] == [200] * 5 + [429]
        assert int(codes[-1].headers["Retry-After"]) >= 1

    async def test_a_key_that_cannot_be_checked_is_a_503(self, keys: MemoryKeys) -> None:
        key = keys.issue(Role.READER)
        keys.error = RedisConnectionError("Connection refused")
        async with Api(keys).client() as client:
            response = await client.post("/v1/session", json={"key": key})
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1


class TestMiddleware:
    async def test_no_key_is_a_401_with_the_challenge_before_the_body_is_read(
        self, keys: MemoryKeys
    ) -> None:
        async with Api(keys).client() as client:
            for response in (
                await client.post("/v1/customers", content=b"{not json"),
                await client.get("/v1/customers/x?limit=-5"),
                await client.put("/v1/regions/nowhere/status", json={}),
                await client.get("/metrics"),
                await client.get("/no-such-route"),
            ):
                assert response.status_code == 401, response.text
                assert response.headers["WWW-Authenticate"] == CHALLENGE

    @pytest.mark.parametrize(
        "authorization",
        ["Bearer", "Bearer rsk_nonsense", "Basic dXNlcjpwdw==", f"Bearer {new_key()[0]}"],
    )
    async def test_a_bad_key_is_a_401(self, keys: MemoryKeys, authorization: str) -> None:
        async with Api(keys).client() as client:
            response = await client.get("/v1/session", headers={"Authorization": authorization})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == CHALLENGE

    async def test_a_wrong_role_is_a_403(self, keys: MemoryKeys) -> None:
        reader = keys.issue(Role.READER)
        async with Api(keys).client() as client:
            response = await client.post(
                "/v1/customers", content=b"{not json", headers=bearer(reader)
            )
        assert response.status_code == 403
        assert "writer" in response.json()["detail"]

    async def test_open_paths_need_no_key(self, keys: MemoryKeys) -> None:
        async with Api(keys).client() as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/openapi.json")).status_code == 200
            assert (await client.get("/docs")).status_code == 200
            assert (await client.get("/")).status_code == 200
            assert (await client.delete("/v1/session")).status_code == 204

    async def test_over_the_rate_is_a_429_with_retry_after(self, keys: MemoryKeys) -> None:
        key = keys.issue(Role.READER, rate=5, burst=5)
        async with Api(keys).client() as client:
            codes = [(await client.get("/v1/session", headers=bearer(key))) for _ in range(6)]
        assert [r.status_code for r in codes] == [200] * 5 + [429]
        assert int(codes[-1].headers["Retry-After"]) >= 1

    async def test_an_unknown_key_with_redis_down_is_a_503(self, keys: MemoryKeys) -> None:
        known, unknown = keys.issue(Role.READER), keys.issue(Role.READER)
        async with Api(keys).client() as client:
            assert (await client.get("/v1/session", headers=bearer(known))).status_code == 200
            keys.error = RedisConnectionError("Connection refused")
            assert (await client.get("/v1/session", headers=bearer(known))).status_code == 200
            response = await client.get("/v1/session", headers=bearer(unknown))
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1

    async def test_every_operation_declares_both_ways_in(self, keys: MemoryKeys) -> None:
        async with Api(keys).client() as client:
            document = (await client.get("/openapi.json")).json()
        schemes = document["components"]["securitySchemes"]
        assert schemes["apiKey"]["scheme"] == "bearer"
        assert schemes["session"] == {
            "type": "apiKey",
            "in": "cookie",
            "name": "regionstore_session",
            "description": schemes["session"]["description"],
        }
        open_operations = {("post", "/v1/session"), ("delete", "/v1/session")}
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                if path in ("/healthz", "/readyz") or (method, path) in open_operations:
                    continue
                assert operation.get("security") == [{"apiKey": []}, {"session": []}], (
                    method,
                    path,
                )


class TestSession:
    async def test_signing_in_sets_an_http_only_strict_cookie(self, keys: MemoryKeys) -> None:
        key = keys.issue(Role.WRITER)
        async with Api(keys).client() as client:
            response = await client.post("/v1/session", json={"key": key})
        assert response.status_code == 200
        body = response.json()
        assert body == {
            "key_id": key[4:16],
            "role": "writer",
            "csrf_token": HASHER.csrf_token(key[4:16]),
        }
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"regionstore_session={key};")
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute in cookie
        assert "Secure" not in cookie

    async def test_over_https_the_cookie_is_secure(self, keys: MemoryKeys) -> None:
        key = keys.issue(Role.READER)
        async with Api(keys).client("https://gateway") as client:
            response = await client.post("/v1/session", json={"key": key})
        assert "Secure" in response.headers["set-cookie"]

    @pytest.mark.parametrize("body", [{"key": "rsk_nope"}, {"key": new_key()[0]}])
    async def test_a_bad_key_does_not_sign_in(self, keys: MemoryKeys, body: Any) -> None:
        async with Api(keys).client() as client:
            response = await client.post("/v1/session", json=body)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == CHALLENGE
        assert "set-cookie" not in response.headers

    async def test_the_cookie_signs_requests_in_and_out(self, keys: MemoryKeys) -> None:
        key = keys.issue(Role.OPERATOR)
        async with Api(keys).client() as client:
            assert (await client.get("/v1/session")).status_code == 401
            await client.post("/v1/session", json={"key": key})
            current = await client.get("/v1/session")
            assert current.status_code == 200
            assert current.json()["key_id"] == key[4:16]
            signed_out = await client.delete("/v1/session")
            assert signed_out.status_code == 204
            assert 'regionstore_session=""' in signed_out.headers["set-cookie"]
            assert (await client.get("/v1/session")).status_code == 401

    async def test_a_cookie_state_change_needs_the_csrf_token(self, keys: MemoryKeys) -> None:
        key = keys.issue(Role.OPERATOR)
        async with Api(keys).client() as client:
            token = (await client.post("/v1/session", json={"key": key})).json()["csrf_token"]
            bad = {"X-CSRF-Token": HASHER.csrf_token("0123456789ab")}
            for headers in ({}, bad):
                response = await client.post("/v1/customers", content=b"{}", headers=headers)
                assert response.status_code == 403, response.text
                assert "X-CSRF-Token" in response.json()["detail"]
            # With the token the request goes on to the route (which finds the body invalid).
            response = await client.post(
                "/v1/customers", content=b"{}", headers={"X-CSRF-Token": token}
            )
            assert response.status_code == 422
            # A Bearer request never needs it, whatever cookie comes along.
            response = await client.post("/v1/customers", content=b"{}", headers=bearer(key))
            assert response.status_code == 422


class TestRouteCheck:
    def test_an_api_route_without_a_role_is_refused(self) -> None:
        app = FastAPI()

        @app.get("/v1/unguarded")
        async def unguarded() -> None:
            return None

        with pytest.raises(RuntimeError, match="GET /v1/unguarded"):
            check_routes(app.routes, open_paths={"/healthz"})

    def test_the_gateway_routes_all_declare_one(self) -> None:
        check_routes(create_app(GatewaySettings()).routes, open_paths={"/healthz", "/readyz"})
