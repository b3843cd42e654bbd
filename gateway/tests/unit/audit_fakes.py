"""The audit trail for the gateway's unit tests: a trail whose every event is acknowledged."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from regionstore_gateway.adapters.audit_trail import AuditTrail
from regionstore_gateway.adapters.status_history import RecentChanges
from regionstore_gateway.settings import GatewaySettings


class AckingProducer:
    """Acknowledges every send at once and keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(
        self,
        topic: str,
        *,
        value: bytes,
        key: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.set_result("record metadata")
        return future

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(value) for _, _, value in self.sent]


def audit_trail(settings: GatewaySettings, producer: AckingProducer | None = None) -> AuditTrail:
    """A trail that records every event (into ``producer`` when given)."""
    return AuditTrail(
        cast(Any, producer or AckingProducer()), settings.kafka.audit_topic, timeout_s=1.0
    )


def recent_changes() -> RecentChanges:
    """An empty view of the trail, as at start-up."""
    return RecentChanges(keep=5)
