"""The batch loader against an in-memory gateway (httpx.MockTransport: no sockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from regionstore_tools.dataset.loader import (
    BATCH_PATH,
    GatewayUnavailableError,
    LoadOptions,
    LoadSummary,
    Rejection,
    Row,
    _error_reason,
    load,
    open_client,
    rows,
)
from regionstore_tools.dataset.olist import generate

FAST = LoadOptions(batch_size=10, concurrency=3, retries=2, backoff_s=0.0)
OUTSIDE = "zip prefix {} is outside every region (region_1: 1000-39999)"


class FakeGateway:
    """Answers the batch endpoint like the real one, for zips and nothing else."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.failures: list[httpx.Response | Exception] = []
        """Answers (or errors) to give first, in order, before behaving."""
        self.silent_for = 0
        """How many more attempts at a 'kafka-silent' customer are answered 'unknown'."""
        self.authorization: set[str | None] = set()
        self.keys: list[str | None] = []
        """The Idempotency-Key of every request, in order."""

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == BATCH_PATH
        self.authorization.add(request.headers.get("Authorization"))
        self.keys.append(request.headers.get("Idempotency-Key"))
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        items = json.loads(request.content)["items"]
        self.batches.append(items)
        results = [self._result(index, item) for index, item in enumerate(items)]
        if self.silent_for:
            self.silent_for -= 1
        counts = {
            status: sum(r["status"] == status for r in results)
            for status in ("accepted", "rejected", "unknown", "failed")
        }
        # As the gateway: 202 if any accepted, else 504 if any unknown, 503 if any failed.
        code = 202 if counts["accepted"] else 504 if counts["unknown"] else 503
        if not (counts["accepted"] or counts["unknown"] or counts["failed"]):
            code = 422
        return httpx.Response(code, json={**counts, "results": results})

    def _result(self, index: int, item: dict[str, Any]) -> dict[str, Any]:
        customer = item["customer"]
        zip_prefix = customer["customer_zip_code_prefix"]
        result: dict[str, Any] = {"index": index, "customer_id": customer["customer_id"]}
        if customer["customer_city"] == "kafka-fails":
            error: dict[str, Any] = {"loc": ["kafka"], "msg": "KafkaTimeoutError()"}
            return {**result, "status": "failed", "errors": [error]}
        if customer["customer_city"] == "kafka-silent" and self.silent_for:
            error = {"loc": ["kafka"], "msg": "outcome unknown", "type": "outcome_unknown"}
            return {**result, "status": "unknown", "errors": [error]}
        if not 1000 <= zip_prefix <= 99999:
            loc = ["body", "items", index, "customer", "customer_zip_code_prefix"]
            error = {"loc": loc, "msg": OUTSIDE.format(zip_prefix), "type": "value_error"}
            return {**result, "status": "rejected", "errors": [error]}
        return {**result, "status": "accepted"}


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@asynccontextmanager
async def client_for(
    handler: Callable[[httpx.Request], Any],
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def customer_rows(n: int, **changes: Any) -> list[Row]:
    return [Row(r.number, {**r.customer, **changes}) for r in rows(generate(n, seed=5))]


async def no_sleep(delay: float) -> None:
    await asyncio.sleep(0)


class TestLoad:
    async def test_everything_accepted_in_bounded_batches(self, gateway: FakeGateway) -> None:
        async with client_for(gateway) as client:
            summary = await load(customer_rows(95), client, options=FAST)
        assert (summary.accepted, summary.rejected, summary.failed) == (95, 0, 0)
        assert sorted(len(b) for b in gateway.batches) == [5] + [10] * 9
        assert all(item["op"] == "upsert" for b in gateway.batches for item in b)
        assert 1 < gateway.max_in_flight <= FAST.concurrency
        assert summary.elapsed_s > 0
        assert summary.rate > 0

    async def test_rejections_grouped_with_their_rows(self, gateway: FakeGateway) -> None:
        records = customer_rows(20)
        for number in (4, 9, 15):
            records[number - 1] = Row(
                number, {**records[number - 1].customer, "customer_zip_code_prefix": 500}
            )
        async with client_for(gateway) as client:
            summary = await load(records, client, options=FAST)
        assert (summary.accepted, summary.rejected) == (17, 3)
        reason = f"customer_zip_code_prefix: {OUTSIDE.format(500)}"
        assert summary.rejections == {reason: 3}
        assert [e.number for e in summary.examples] == [4, 9, 15]
        assert summary.examples[0].customer_id == records[3].customer["customer_id"]

    async def test_local_rejections_are_counted_not_sent(self, gateway: FakeGateway) -> None:
        bad = Rejection(3, "customer_zip_code_prefix: 'abc' is not a number", "x")
        records: list[Row | Rejection] = [*customer_rows(2), bad]
        async with client_for(gateway) as client:
            summary = await load(records, client, options=FAST)
        assert (summary.accepted, summary.rejected) == (2, 1)
        assert summary.examples == [bad]
        assert sum(len(b) for b in gateway.batches) == 2

    async def test_a_batch_nobody_accepted_still_reports_per_item(
        self, gateway: FakeGateway
    ) -> None:
        async with client_for(gateway) as client:
            summary = await load(
                customer_rows(3, customer_zip_code_prefix=12), client, options=FAST
            )
        assert (summary.accepted, summary.rejected, summary.failed) == (0, 3, 0)

    async def test_items_kafka_keeps_failing_are_failures(self, gateway: FakeGateway) -> None:
        async with client_for(gateway) as client:
            with pytest.raises(GatewayUnavailableError) as caught:
                await load(
                    customer_rows(4, customer_city="kafka-fails"),
                    client,
                    options=FAST,
                    sleep=no_sleep,
                )
        summary = caught.value.summary
        assert (summary.failed, summary.unknown) == (4, 0)
        assert summary.failures == {"kafka: KafkaTimeoutError()": 4}
        # Sent once and retried twice, each time the same batch with the same key.
        assert len(gateway.batches) == 1 + FAST.retries
        assert len(set(gateway.keys)) == 1
        assert all(batch == gateway.batches[0] for batch in gateway.batches)

    async def test_503_is_retried_with_backoff(self, gateway: FakeGateway) -> None:
        gateway.failures = [
            httpx.Response(503, json={"detail": "kafka is unavailable"}),
            httpx.ConnectError("refused"),
        ]
        delays: list[float] = []

        async def sleep(delay: float) -> None:
            delays.append(delay)

        options = LoadOptions(batch_size=10, concurrency=1, retries=2, backoff_s=1.0)
        async with client_for(gateway) as client:
            summary = await load(customer_rows(5), client, options=options, sleep=sleep)
        assert summary.accepted == 5
        assert len(delays) == 2
        assert 0.5 <= delays[0] <= 1.0
        assert 1.0 <= delays[1] <= 2.0

    async def test_gateway_that_stays_away_stops_the_load(self, gateway: FakeGateway) -> None:
        gateway.failures = [httpx.ConnectError("refused")] * 3
        options = LoadOptions(batch_size=10, concurrency=1, retries=2, backoff_s=0.0)
        async with client_for(gateway) as client:
            with pytest.raises(GatewayUnavailableError) as caught:
                await load(customer_rows(50), client, options=options, sleep=no_sleep)
        assert "cannot reach the gateway at http://gateway" in caught.value.reason
        assert "after 2 retries" in caught.value.reason
        # The first batch certainly was not taken (no connection); the rest was never sent.
        assert caught.value.summary.failed == 10
        assert caught.value.summary.unknown == 0
        assert gateway.batches == []

    async def test_other_errors_fail_the_batch_with_the_detail(self) -> None:
        detail = [{"loc": ["body", "items"], "msg": "at most 10 items per batch", "type": "x"}]

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(422, json={"detail": detail})

        async with client_for(handler) as client:
            summary = await load(customer_rows(12), client, options=FAST)
        assert summary.failed == 12
        assert summary.failures == {
            "the gateway answered HTTP 422: items: at most 10 items per batch": 12
        }

    async def test_every_batch_carries_a_key_of_its_own_and_its_items_none(
        self, gateway: FakeGateway
    ) -> None:
        async with client_for(gateway) as client:
            await load(customer_rows(25), client, options=FAST)
        assert len(gateway.batches) == 3
        assert None not in gateway.keys
        assert len(set(gateway.keys)) == 3
        assert not any("idempotency_key" in item for batch in gateway.batches for item in batch)

    async def test_a_retry_sends_the_whole_batch_and_counts_each_item_once(
        self, gateway: FakeGateway
    ) -> None:
        gateway.silent_for = 1
        batch = [*customer_rows(3), *customer_rows(2, customer_city="kafka-silent")]
        async with client_for(gateway) as client:
            summary = await load(batch, client, options=FAST, sleep=no_sleep)
        assert (summary.accepted, summary.unknown, summary.processed) == (5, 0, 5)
        assert [len(b) for b in gateway.batches] == [5, 5]
        assert gateway.keys[0] == gateway.keys[1]

    async def test_a_busy_gateway_is_waited_out_without_spending_retries(
        self, gateway: FakeGateway
    ) -> None:
        gateway.failures = [httpx.Response(429, headers={"Retry-After": "2"})] * 10
        delays: list[float] = []

        async def sleep(delay: float) -> None:
            delays.append(delay)

        options = LoadOptions(batch_size=10, concurrency=1, retries=1, backoff_s=0.5)
        async with client_for(gateway) as client:
            summary = await load(customer_rows(4), client, options=options, sleep=sleep)
        assert summary.accepted == 4
        assert delays == [2.0] * 10
        assert len(set(gateway.keys)) == 1

    async def test_a_gateway_busy_past_the_patience_stops_the_load(
        self, gateway: FakeGateway
    ) -> None:
        busy = httpx.Response(
            429, json={"detail": "the writer is behind"}, headers={"Retry-After": "5"}
        )
        gateway.failures = [busy] * 100
        options = LoadOptions(
            batch_size=10, concurrency=1, retries=2, backoff_s=0.0, busy_patience_s=20.0
        )
        async with client_for(gateway) as client:
            with pytest.raises(GatewayUnavailableError) as caught:
                await load(customer_rows(4), client, options=options, sleep=no_sleep)
        assert "HTTP 429: the writer is behind" in caught.value.reason
        assert (caught.value.summary.failed, caught.value.summary.unknown) == (4, 0)

    async def test_the_api_key_is_sent_as_a_bearer_token(self, gateway: FakeGateway) -> None:
        transport = httpx.MockTransport(gateway)
        key = "rsk_0123456789ab_s3cret"
        async with open_client("http://gateway", FAST, key, transport=transport) as client:
            await load(customer_rows(3), client, options=FAST)
        assert gateway.authorization == {"Bearer rsk_0123456789ab_s3cret"}

    async def test_unknown_outcomes_are_retried_with_the_same_keys(
        self, gateway: FakeGateway
    ) -> None:
        gateway.silent_for = 2
        async with client_for(gateway) as client:
            summary = await load(
                customer_rows(6, customer_city="kafka-silent"),
                client,
                options=FAST,
                sleep=no_sleep,
            )
        assert (summary.accepted, summary.unknown, summary.failed) == (6, 0, 0)
        assert len(gateway.batches) == 3
        assert len(set(gateway.keys)) == 1

    async def test_an_outcome_that_stays_unknown_is_unknown_not_failed(
        self, gateway: FakeGateway
    ) -> None:
        gateway.silent_for = 100
        async with client_for(gateway) as client:
            with pytest.raises(GatewayUnavailableError) as caught:
                await load(
                    customer_rows(6, customer_city="kafka-silent"),
                    client,
                    options=FAST,
                    sleep=no_sleep,
                )
        summary = caught.value.summary
        assert (summary.accepted, summary.unknown, summary.failed) == (0, 6, 0)
        assert summary.unknowns == {"kafka: outcome unknown": 6}

    async def test_a_timed_out_request_may_have_been_taken(self, gateway: FakeGateway) -> None:
        gateway.failures = [httpx.ReadTimeout("slow"), httpx.ConnectError("refused")] * 2
        options = LoadOptions(batch_size=10, concurrency=1, retries=3, backoff_s=0.0)
        async with client_for(gateway) as client:
            with pytest.raises(GatewayUnavailableError) as caught:
                await load(customer_rows(4), client, options=options, sleep=no_sleep)
        # The last attempt found no gateway, but the first may have reached it.
        assert (caught.value.summary.unknown, caught.value.summary.failed) == (4, 0)

    async def test_a_timeout_then_an_answer_counts_the_answer(self, gateway: FakeGateway) -> None:
        gateway.failures = [httpx.ReadTimeout("slow")]
        async with client_for(gateway) as client:
            summary = await load(customer_rows(4), client, options=FAST, sleep=no_sleep)
        assert (summary.accepted, summary.unknown) == (4, 0)
        assert len(set(gateway.keys)) == 1

    async def test_a_refused_key_stops_the_load_at_once(self, gateway: FakeGateway) -> None:
        gateway.failures = [httpx.Response(401, json={"detail": "missing or invalid API key"})]
        options = LoadOptions(batch_size=10, concurrency=1, retries=3, backoff_s=0.0)
        async with client_for(gateway) as client:
            with pytest.raises(GatewayUnavailableError) as caught:
                await load(customer_rows(30), client, options=options, sleep=no_sleep)
        assert caught.value.reason == (
            "the gateway refused the request (HTTP 401: missing or invalid API key): "
            "it needs a writer key"
        )
        assert caught.value.summary.processed == 0
        assert gateway.batches == []

    async def test_retry_after_is_honoured(self, gateway: FakeGateway) -> None:
        gateway.failures = [httpx.Response(503, headers={"Retry-After": "7"})]
        delays: list[float] = []

        async def sleep(delay: float) -> None:
            delays.append(delay)

        async with client_for(gateway) as client:
            summary = await load(customer_rows(3), client, options=FAST, sleep=sleep)
        assert summary.accepted == 3
        assert delays == [7.0]

    async def test_a_failing_source_raises_its_own_error(self, gateway: FakeGateway) -> None:
        def source() -> Any:
            yield from customer_rows(15)
            raise ValueError("broken file")

        async with client_for(gateway) as client:
            with pytest.raises(ValueError, match="broken file"):
                await load(source(), client, options=FAST)

    async def test_empty_source(self, gateway: FakeGateway) -> None:
        async with client_for(gateway) as client:
            summary = await load([], client, options=FAST)
        assert summary.processed == 0
        assert gateway.batches == []


class TestLoadOptions:
    def test_backoff_is_capped(self) -> None:
        options = LoadOptions(backoff_s=1.0, max_backoff_s=4.0)
        assert all(2.0 <= options.backoff(attempt) <= 4.0 for attempt in range(2, 20))

    @pytest.mark.parametrize("changes", [{"batch_size": 0}, {"concurrency": 0}, {"retries": -1}])
    def test_rejects_nonsense(self, changes: dict[str, int]) -> None:
        with pytest.raises(ValueError, match="must be"):
            LoadOptions(**changes)


class TestLoadSummary:
    def test_one_record_with_two_reasons_counts_once(self) -> None:
        summary = LoadSummary()
        summary.reject(7, ["a: bad", "b: worse"], "id")
        assert summary.rejected == 1
        assert summary.rejections == {"a: bad": 1, "b: worse": 1}
        assert summary.examples == [Rejection(7, "a: bad; b: worse", "id")]


class TestErrorReason:
    @pytest.mark.parametrize(
        ("loc", "msg", "reason"),
        [
            (["body", "items", 3, "customer", "customer_zip_code_prefix"], "zip prefix 500 is"
             " outside every region", "customer_zip_code_prefix: zip prefix 500 is outside every"
             " region"),
            (["body", "items", 0, "upsert", "customer", "customer_state"], "Value error, must be"
             " one of", "customer_state: must be one of"),
            (["body", "items", 2, "delete", "customer_id"], "Field required",
             "customer_id: Field required"),
            (["body", "items"], "at most 1000 items", "items: at most 1000 items"),
            (["kafka"], "KafkaTimeoutError()", "kafka: KafkaTimeoutError()"),
            ([], "odd", "item: odd"),
        ],
    )  # fmt: skip
    def test_names_the_field_inside_the_item(self, loc: list[Any], msg: str, reason: str) -> None:
        assert _error_reason({"loc": loc, "msg": msg, "type": "value_error"}) == reason
