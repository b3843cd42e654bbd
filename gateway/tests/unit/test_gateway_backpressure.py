"""Backpressure: writes refused with 429 while a consumer group is too far behind, reads never.

The decision (Backpressure alone, over a scripted lag and clock) and the routes (the real app
over fake Kafka, Redis and stores): a refused write publishes nothing and claims no key.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping

import httpx
import pytest
from app_fakes import CUSTOMER, Gateway, body
from prometheus_client import REGISTRY

from regionstore_gateway.services.backpressure import Backpressure, ConsumersBehindError
from regionstore_gateway.settings import BackpressureSettings, GatewaySettings

LIMITS = BackpressureSettings(
    max_writer_lag=1000, max_replicator_lag=2000, stale_after_s=10.0, retry_after_s=3
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lag:
    """What Kafka says the lag is: a mapping, or an error."""

    def __init__(self) -> None:
        self.answer: Mapping[str, int | None] | Exception = {}

    async def __call__(self) -> Mapping[str, int | None]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def refusals(group: str) -> float:
    value = REGISTRY.get_sample_value("regionstore_backpressure_refusals_total", {"group": group})
    return value or 0.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lag() -> Lag:
    return Lag()


@pytest.fixture
def backpressure(lag: Lag, clock: FakeClock) -> Backpressure:
    return Backpressure(lag, LIMITS, clock=clock)


class TestCheck:
    async def test_nothing_is_refused_before_the_lag_was_ever_read(
        self, backpressure: Backpressure
    ) -> None:
        backpressure.check()
        assert backpressure.lag == {"writer": None, "replicator": None}

    async def test_a_lag_at_its_threshold_is_taken(
        self, backpressure: Backpressure, lag: Lag
    ) -> None:
        lag.answer = {"writer": 1000, "replicator": 2000}
        await backpressure.refresh()
        backpressure.check()

    @pytest.mark.parametrize(
        ("reading", "group"),
        [
            ({"writer": 1001, "replicator": 0}, "writer"),
            ({"writer": 0, "replicator": 2001}, "replicator"),
        ],
    )
    async def test_a_group_over_its_threshold_refuses_and_is_counted(
        self, backpressure: Backpressure, lag: Lag, reading: dict[str, int], group: str
    ) -> None:
        lag.answer = reading
        await backpressure.refresh()
        before = refusals(group)
        with pytest.raises(ConsumersBehindError) as refused:
            backpressure.check()
        assert refused.value.group == group
        assert refused.value.retry_after_s == 3
        assert f"the {group} is {reading[group]:,} commands behind" in str(refused.value)
        assert refusals(group) == before + 1

    async def test_a_stale_reading_refuses_nothing(
        self, backpressure: Backpressure, lag: Lag, clock: FakeClock
    ) -> None:
        lag.answer = {"writer": 50_000, "replicator": 50_000}
        await backpressure.refresh()
        clock.now += LIMITS.stale_after_s + 1
        backpressure.check()
        assert backpressure.lag == {"writer": None, "replicator": None}

    async def test_a_lag_kafka_could_not_say_keeps_the_last_reading_until_it_is_stale(
        self, backpressure: Backpressure, lag: Lag, clock: FakeClock
    ) -> None:
        lag.answer = {"writer": 50_000, "replicator": 0}
        await backpressure.refresh()
        clock.now += LIMITS.stale_after_s / 2
        lag.answer = {"writer": None, "replicator": 0}
        await backpressure.refresh()
        with pytest.raises(ConsumersBehindError):
            backpressure.check()
        clock.now += LIMITS.stale_after_s / 2 + 1
        await backpressure.refresh()
        backpressure.check()
        assert backpressure.lag == {"writer": None, "replicator": 0}

    async def test_a_failed_reading_keeps_the_last_one_until_it_is_stale(
        self, backpressure: Backpressure, lag: Lag, clock: FakeClock
    ) -> None:
        lag.answer = {"writer": 50_000, "replicator": 0}
        await backpressure.refresh()
        lag.answer = OSError("connection reset")
        await backpressure.refresh()
        with pytest.raises(ConsumersBehindError):
            backpressure.check()
        clock.now += LIMITS.stale_after_s + 1
        await backpressure.refresh()
        backpressure.check()
        assert backpressure.lag == {"writer": None, "replicator": None}

    async def test_a_new_reading_under_the_threshold_takes_writes_again(
        self, backpressure: Backpressure, lag: Lag
    ) -> None:
        lag.answer = {"writer": 50_000, "replicator": 0}
        await backpressure.refresh()
        lag.answer = {"writer": 10, "replicator": 0}
        await backpressure.refresh()
        backpressure.check()

    async def test_a_threshold_of_zero_never_refuses(self, lag: Lag, clock: FakeClock) -> None:
        off = Backpressure(lag, BackpressureSettings(max_writer_lag=0), clock=clock)
        lag.answer = {"writer": 10**9, "replicator": 0}
        await off.refresh()
        off.check()


class CountedLag:
    """A lag of 0, and how many times it was read: ``reads`` grows by one per reading."""

    def __init__(self) -> None:
        self.reads = 0
        self._read = asyncio.Condition()

    async def __call__(self) -> Mapping[str, int | None]:
        async with self._read:
            self.reads += 1
            self._read.notify_all()
        return {"writer": 0, "replicator": 0}

    async def until(self, reads: int) -> None:
        async with asyncio.timeout(5), self._read:
            await self._read.wait_for(lambda: self.reads >= reads)


class TestRefresh:
    """Every refresh_s while writes come; every idle_refresh_s while none does."""

    PACE = BackpressureSettings(refresh_s=0.01, idle_refresh_s=60, stale_after_s=600)

    async def test_writes_keep_the_lag_read_every_refresh(self) -> None:
        lag = CountedLag()
        backpressure = Backpressure(lag, self.PACE)
        backpressure.start()
        try:
            for reads in range(1, 4):
                backpressure.check()
                await lag.until(reads + 1)
        finally:
            await backpressure.stop()

    async def test_an_idle_gateway_reads_it_no_more_and_the_first_write_reads_it_at_once(
        self,
    ) -> None:
        lag = CountedLag()
        backpressure = Backpressure(lag, self.PACE)
        backpressure.start()
        try:
            await lag.until(1)
            # Twenty refresh periods with no write: no reading (each would be three requests
            # to Kafka a second per gateway, whatever the traffic).
            await asyncio.sleep(20 * self.PACE.refresh_s)
            assert lag.reads == 1
            backpressure.check()
            await lag.until(2)
        finally:
            await backpressure.stop()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    for name in list(os.environ):
        if name.upper().startswith("REGIONSTORE_"):
            monkeypatch.delenv(name)
    return GatewaySettings(backpressure=LIMITS)


@pytest.fixture
def gateway(settings: GatewaySettings) -> Gateway:
    return Gateway(settings)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


@pytest.fixture
async def behind(gateway: Gateway) -> Gateway:
    gateway.lag = {"writer": 5000, "replicator": 0}
    await gateway.backpressure.refresh()
    return gateway


WRITES = [
    ("POST", "/v1/customers", body()),
    ("PUT", f"/v1/customers/{CUSTOMER}", body()),
    ("PATCH", f"/v1/customers/{CUSTOMER}", {"customer_city": "sao paulo"}),
    ("DELETE", f"/v1/customers/{CUSTOMER}", None),
    ("POST", "/create-customer", body()),
    ("POST", "/v1/customers:batch", {"items": [{"customer": body(), "idempotency_key": "b1"}]}),
]


class TestRoutes:
    @pytest.mark.parametrize(("method", "path", "payload"), WRITES)
    async def test_a_write_is_refused_before_anything_is_published_or_claimed(
        self,
        behind: Gateway,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        payload: object,
    ) -> None:
        behind.live("region_1", version=5)
        response = await client.request(
            method, path, json=payload, headers={"Idempotency-Key": "k1"}
        )
        assert response.status_code == 429, response.text
        assert response.headers["Retry-After"] == "3"
        assert response.json()["outcome"] == "not_accepted"
        assert "the writer is 5,000 commands behind" in response.json()["detail"]
        assert behind.producer.sent == []
        assert behind.redis.values == {}

    async def test_the_plain_create_is_refused_too(
        self, behind: Gateway, client: httpx.AsyncClient
    ) -> None:
        response = await client.post("/v1/customers", json=body())
        assert response.status_code == 429, response.text
        assert behind.producer.sent == []

    async def test_reads_are_never_refused(
        self, behind: Gateway, client: httpx.AsyncClient
    ) -> None:
        behind.live("region_1", version=5)
        response = await client.get(f"/v1/customers/{CUSTOMER}")
        assert response.status_code == 200, response.text

    async def test_writes_are_taken_again_once_the_group_caught_up(
        self, behind: Gateway, client: httpx.AsyncClient
    ) -> None:
        assert (await client.post("/v1/customers", json=body())).status_code == 429
        behind.lag = {"writer": 900, "replicator": 0}
        await behind.backpressure.refresh()
        response = await client.post("/v1/customers", json=body())
        assert response.status_code == 202, response.text
        assert len(behind.producer.sent) == 1
