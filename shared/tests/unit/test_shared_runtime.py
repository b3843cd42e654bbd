"""The listener every consumer service serves: health, readiness and metrics."""

from __future__ import annotations

import httpx
from prometheus_client import CONTENT_TYPE_LATEST

from regionstore_shared import metrics
from regionstore_shared.runtime import ServiceState, _health_app


async def test_metrics_answer_at_metrics_and_at_the_old_slash_path_without_a_redirect() -> None:
    metrics.KAFKA_ERRORS.labels(operation="runtime-test").inc()
    app = _health_app(ServiceState())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        for path in ("/metrics", "/metrics/"):
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == CONTENT_TYPE_LATEST
            assert 'regionstore_kafka_errors_total{operation="runtime-test"}' in response.text


async def test_readiness_follows_the_state() -> None:
    state = ServiceState()
    transport = httpx.ASGITransport(app=_health_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        assert (await client.get("/readyz")).status_code == 503
        state.ready = True
        state.details["draining"] = ["region_1"]
        ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "draining": ["region_1"]})
